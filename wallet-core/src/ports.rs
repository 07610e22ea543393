//! Ports: every effect the core needs, one small trait per capability.
//!
//! Each store operation is one atomic unit that includes its inbox and outbox
//! writes; an adapter calls the core's `decide_*` functions inside that unit,
//! so every business rule lives in the core and every adapter behaves alike.
//! The consumer-facing operations take a batch, so an adapter can apply many
//! events in one database transaction.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::Timestamp;
use crate::event::Envelope;
use crate::idempotency::{Fingerprint, IdempotencyRecord};
use crate::ids::{CorrelationId, EventId, TransferId, WalletId};
use crate::ledger::{AccountBalance, Entry, LedgerOutcome, PostingRequest};
use crate::money::Currency;
use crate::transfer::Transfer;
use crate::wallet::{FinalizeError, ReserveOutcome, ReserveRequest, Wallet};

/// A storage failure. Business refusals are never errors: they are outcomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Transient: connection lost, serialization failure, deadlock, pool
    /// exhausted. Nothing was written. Retry; HTTP 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store refused data that the core considers valid (a constraint the
    /// core does not know of). A bug: do not retry; HTTP 500.
    #[error("storage integrity error: {0}")]
    Integrity(String),
}

/// Tells the time. Injected so tests and the simulator control it.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// Makes ids. Injected so the simulator's runs are reproducible.
pub trait IdGenerator: Send + Sync + 'static {
    /// A fresh, unique uuid.
    fn next_uuid(&self) -> Uuid;

    /// A fresh wallet id.
    fn wallet_id(&self) -> WalletId {
        WalletId::from_uuid(self.next_uuid())
    }
    /// A fresh transfer id.
    fn transfer_id(&self) -> TransferId {
        TransferId::from_uuid(self.next_uuid())
    }
    /// A fresh event id.
    fn event_id(&self) -> EventId {
        EventId::from_uuid(self.next_uuid())
    }
    /// A fresh correlation id.
    fn correlation_id(&self) -> CorrelationId {
        CorrelationId::from_uuid(self.next_uuid())
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}

/// Time-ordered random uuids (version 7): index-friendly, unique across
/// processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn next_uuid(&self) -> Uuid {
        Uuid::now_v7()
    }
}

/// An event as a store operation receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound<T> {
    /// Dedupe key: an event already in the store's inbox is skipped.
    pub event_id: EventId,
    /// The transfer it concerns.
    pub transfer_id: TransferId,
    /// Copied into any event this one causes.
    pub correlation_id: CorrelationId,
    /// What it says.
    pub body: T,
}

impl<T> Inbound<T> {
    /// Takes the metadata from an envelope.
    pub fn from_envelope(envelope: &Envelope, body: T) -> Inbound<T> {
        Inbound {
            event_id: envelope.event_id,
            transfer_id: envelope.transfer_id,
            correlation_id: envelope.correlation_id,
            body,
        }
    }
}

/// The id and time of an event a store operation may write to its outbox.
/// Made by the caller, so stores never generate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStamp {
    /// The new event's id.
    pub event_id: EventId,
    /// When it happens.
    pub at: Timestamp,
}

/// The outcome of storing a new transfer under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The transfer and its key record were stored.
    Created,
    /// The key was used before; nothing was written.
    Existing {
        /// The key's record.
        record: Box<IdempotencyRecord>,
        /// The transfer it points to, as stored now.
        current: Box<Transfer>,
    },
}

/// What the synchronous reserve call told the transaction service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveAttempt {
    /// A definite answer.
    Definite(ReserveOutcome),
    /// Timeout, connection error or 5xx: the reservation may or may not exist. The
    /// transfer stays INITIATED for the retrier.
    Ambiguous,
}

/// The transaction service's database: transfers, idempotency records, inbox.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TransferStore: Send + Sync + 'static {
    /// Stores `transfer` (INITIATED) and a key record with `fingerprint`, or,
    /// when the key exists, returns its record and writes nothing.
    async fn begin(
        &self,
        transfer: &Transfer,
        fingerprint: &Fingerprint,
    ) -> Result<Begin, StoreError>;

    /// A transfer by id.
    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError>;

    /// Records a reserve attempt: a definite outcome moves the transfer
    /// ([`Transfer::handle`]); either way the key's first response is set to
    /// the transfer as it then is, unless it was set before. Returns the
    /// transfer.
    async fn record_reserve(
        &self,
        id: TransferId,
        attempt: ReserveAttempt,
        now: Timestamp,
    ) -> Result<Transfer, StoreError>;

    /// Applies ledger outcomes, skipping events already in the inbox. Returns
    /// the transfers that changed.
    async fn apply_ledger_outcomes(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<TransferId>, StoreError>;

    /// INITIATED transfers created before `created_before`, oldest first.
    async fn pending_reserves(
        &self,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError>;
}

/// An event written to a store's outbox, waiting for the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Position in the outbox; the relay publishes in this order.
    pub seq: u64,
    /// The event.
    pub envelope: Envelope,
}

/// A store's transactional outbox.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` unsent events, oldest first.
    async fn unsent(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;
    /// Marks events as published; they are not returned again.
    async fn mark_sent(&self, seqs: &[u64]) -> Result<(), StoreError>;
}

/// Why a ledger outcome was not applied by the wallet store: the consumer
/// dead-letters that event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The event.
    pub event_id: EventId,
    /// Why.
    pub reason: String,
}

/// The wallet service's database: wallets, reservations, inbox, outbox.
#[async_trait]
pub trait WalletStore: Outbox {
    /// Stores a new wallet.
    async fn open_wallet(&self, wallet: &Wallet) -> Result<(), StoreError>;

    /// A wallet by id.
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError>;

    /// One unit: lock the wallets, [`crate::wallet::decide_reserve`], store
    /// the reservation (or refusal) and the sender, and on success write
    /// `WalletReserved` stamped `stamp` to the outbox. A repeat of a transfer
    /// id returns its first outcome.
    async fn reserve(
        &self,
        request: &ReserveRequest,
        stamp: EventStamp,
    ) -> Result<ReserveOutcome, StoreError>;

    /// One unit for the whole batch: for each event not in the inbox,
    /// [`crate::wallet::decide_finalize`] and apply it, locking wallets in id
    /// order. Events whose outcome contradicts the reservations are recorded in the
    /// inbox and returned as refusals.
    async fn finalize(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<Refusal>, StoreError>;
}

/// Maps a [`FinalizeError`] to a refusal.
impl Refusal {
    /// A refusal of `event_id` because of `error`.
    pub fn finalize(event_id: EventId, error: &FinalizeError) -> Refusal {
        Refusal {
            event_id,
            reason: error.to_string(),
        }
    }
}

/// The ledger service's database: entries, outcomes, accounts, inbox, outbox.
#[async_trait]
pub trait LedgerStore: Outbox {
    /// One unit for the whole batch: for each event not in the inbox,
    /// [`crate::ledger::decide_posting`], append the posting or record the
    /// refusal, and write `LedgerSucceeded` / `LedgerFailed` stamped with the
    /// matching entry of `stamps` to the outbox. Returns how many were decided.
    async fn post(
        &self,
        batch: &[Inbound<PostingRequest>],
        stamps: &[EventStamp],
    ) -> Result<usize, StoreError>;

    /// An account's entries, newest first, with `seq` below `before`.
    async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Every account's balance.
    async fn balances(&self) -> Result<Vec<AccountBalance>, StoreError>;

    /// The ledger's outcome on a transfer, if it has one.
    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError>;
}

/// An ambiguous failure of a call to the wallet service: the reserve may or
/// may not have happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// No answer in time.
    #[error("wallet service timed out")]
    Timeout,
    /// Connection refused or reset, or a 5xx.
    #[error("wallet service unavailable: {0}")]
    Unavailable(String),
}

/// The transaction service's synchronous line to the wallet service.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait WalletGateway: Send + Sync + 'static {
    /// Reserves funds for a transfer; idempotent by transfer id.
    async fn reserve(&self, request: &ReserveRequest) -> Result<ReserveOutcome, GatewayError>;
    /// A wallet's currency, `None` if it does not exist. Currencies never
    /// change, so callers may cache the answer.
    async fn wallet_currency(&self, id: WalletId) -> Result<Option<Currency>, GatewayError>;
}

/// A message for a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Partitioning key (the transfer id).
    pub key: Vec<u8>,
    /// Bytes.
    pub payload: Vec<u8>,
}

/// A message read from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset in the partition.
    pub offset: u64,
    /// Partitioning key.
    pub key: Vec<u8>,
    /// Bytes.
    pub payload: Vec<u8>,
}

/// A broker failure. Transient: the relay and the consumer retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker error: {0}")]
pub struct BusError(pub String);

/// Writes messages to topics.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes all of `messages`, keeping their order per key; returns once
    /// the broker has them all.
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError>;
}

/// One consumer group's reading position on a topic.
#[async_trait]
pub trait Subscription: Send + 'static {
    /// Up to `max` messages after the last ones returned, waiting up to
    /// `wait` when there are none.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError>;
    /// Stores the group's offsets past these deliveries.
    async fn commit(&mut self, deliveries: &[Delivery]) -> Result<(), BusError>;
    /// Goes back to the stored offsets, so what was polled but not committed
    /// is delivered again.
    async fn rewind(&mut self) -> Result<(), BusError>;
}
