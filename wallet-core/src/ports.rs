//! Ports: every effect the core needs, one small trait per capability.
//!
//! Store operations are split in two. The write operations (`TransferStore`,
//! `WalletStore`, `LedgerStore`, `Outbox`) are each one atomic unit that
//! includes its inbox and outbox writes; an adapter calls the core's
//! `decide_*` functions inside that unit, so every business rule lives in the
//! core and every adapter behaves alike. The consumer-facing operations take
//! a batch, so an adapter can apply many events in one database transaction.
//! The read queries (`TransferReads`, `WalletReads`, `LedgerReads`) change
//! nothing, and every query that can return many rows takes a page.
//!
//! The `contract` module (feature `contract`) holds the scenarios every
//! adapter of these ports must pass.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::event::{
    DecodeError, Envelope, EventStamp, Inbound, Outgoing, SCHEMA_VERSION, StampedReserve,
};
use crate::history::{HistoryPage, HistoryQuery};
use crate::idempotency::{Fingerprint, IdempotencyRecord};
use crate::ids::{EventId, TransferId, WalletId, WorkerId};
use crate::ledger::{AccountBalance, BalanceAsOf, Entry, PostingRequest};
use crate::money::Currency;
use crate::outcome::{LedgerOutcome, ReserveOutcome};
use crate::time::Timestamp;
use crate::trace::TraceParent;
use crate::transfer::{HoldEnd, RefundRejection, Transfer, Unfinished};
use crate::wallet::{HoldRelease, HoldState, Reservation, ReserveRequest, Wallet};

pub use crate::ids::{IdGenerator, RandomIds};
pub use crate::time::{Clock, SystemClock};

/// A storage failure. Business rejections are never errors: they are
/// outcomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Transient: connection lost, serialization failure, deadlock, pool
    /// exhausted. Nothing was written. Retry with backoff; HTTP 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store refused data that the core considers valid (a constraint the
    /// core does not know of), or holds data the core never writes. A bug:
    /// do not retry and do not skip; HTTP 500. A consumer stops on it until
    /// an operator acts.
    #[error("storage integrity error: {0}")]
    Integrity(String),
}

/// A worker's lease on the records it claims: nobody else takes them before
/// `until`, unless the worker acknowledges them first. A lease holds while
/// `now < until`; at `until` it has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Who claims.
    pub worker: WorkerId,
    /// The time of the claim; leases that ended before it are free.
    pub now: Timestamp,
    /// When this lease ends.
    pub until: Timestamp,
}

impl Claim {
    /// A claim by `worker` at `now` for `lease`.
    pub fn new(worker: WorkerId, now: Timestamp, lease: Duration) -> Claim {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        Claim {
            worker,
            now,
            until: now.checked_add_signed(lease).unwrap_or(now),
        }
    }
}

/// A record of a store's outbox, waiting for the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    /// Position in the outbox: the order of writing.
    pub seq: u64,
    /// An event for the service's topic, or a dead letter.
    pub item: Outgoing,
}

/// A store's transactional outbox, drained by relays that claim records
/// under a lease, so several relay instances can share one outbox.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Claims up to `limit` unacknowledged records, oldest first: records no
    /// live lease holds, and records `claim.worker` holds already (so a
    /// relay retries its own batch at once). Every returned record is then
    /// held until `claim.until`. A record is not returned while an older
    /// unacknowledged record of the same transfer is held by another
    /// worker, so one transfer's records are published in order.
    async fn claim(&self, claim: &Claim, limit: usize) -> Result<Vec<OutboxRecord>, StoreError>;

    /// Marks records published: they are never claimed again. Unknown or
    /// already acknowledged seqs are ignored.
    async fn acknowledge(&self, seqs: &[u64]) -> Result<(), StoreError>;
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
    /// The key is new but the transfer's reference is taken in its wallet
    /// ([`Transfer::reference_wallet`]) by this transfer; nothing was
    /// written, so the key stays free.
    ReferenceTaken(TransferId),
}

/// What the synchronous reserve call told the transaction service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveAttempt {
    /// A definite answer.
    Definite(ReserveOutcome),
    /// Timeout, connection error or 5xx: the reservation may or may not
    /// exist. The transfer stays INITIATED for the retrier.
    Ambiguous,
}

/// An event a store refused to apply: it was written to the store's outbox
/// as a dead letter in the same unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The event.
    pub event_id: EventId,
    /// Why.
    pub reason: String,
}

/// The transaction service's database, written: transfers, idempotency
/// records and inbox. Its [`Outbox`] carries dead letters.
#[async_trait]
pub trait TransferStore: Send + Sync + 'static {
    /// One unit for the batch: for each transfer in order, stores it
    /// (INITIATED) with a key record of its fingerprint, or, when its key
    /// exists (stored before, or earlier in the batch), writes nothing for
    /// it and returns the key's record and the transfer it points to. A
    /// transfer with a new key whose reference another transfer has in its
    /// wallet (stored before, or earlier in the batch) is not stored either:
    /// [`Begin::ReferenceTaken`]. Two units storing one reference at once
    /// store it once. One answer per transfer, in order.
    async fn begin_batch(
        &self,
        batch: &[(Transfer, Fingerprint)],
    ) -> Result<Vec<Begin>, StoreError>;

    /// [`TransferStore::begin_batch`] of one transfer.
    async fn begin(
        &self,
        transfer: &Transfer,
        fingerprint: &Fingerprint,
    ) -> Result<Begin, StoreError> {
        let mut begun = self
            .begin_batch(&[(transfer.clone(), fingerprint.clone())])
            .await?;
        begun.pop().ok_or_else(|| {
            StoreError::Integrity(format!(
                "no answer to the begin of transfer {}",
                transfer.id
            ))
        })
    }

    /// One unit for the batch: records each reserve attempt. A definite
    /// outcome moves its transfer ([`Transfer::handle`]); either way the
    /// key's first response is set to the transfer as it then is, unless
    /// it was set before. Returns the transfers, in order.
    async fn record_reserves(
        &self,
        attempts: &[(TransferId, ReserveAttempt)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError>;

    /// [`TransferStore::record_reserves`] of one attempt.
    async fn record_reserve(
        &self,
        id: TransferId,
        attempt: ReserveAttempt,
        now: Timestamp,
    ) -> Result<Transfer, StoreError> {
        let mut recorded = self.record_reserves(&[(id, attempt)], now).await?;
        recorded
            .pop()
            .ok_or_else(|| StoreError::Integrity(format!("no answer for transfer {id}")))
    }

    /// One unit for the batch: for each event not in the inbox, record it in
    /// the inbox and apply the ledger's outcome to its transfer. An outcome
    /// for a transfer this store does not know is refused: a dead letter is
    /// written to the outbox. Returns the transfers that changed and the
    /// refusals.
    async fn apply_ledger_outcomes(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Applied, StoreError>;

    /// Claims up to `limit` INITIATED transfers created before
    /// `created_before`, oldest first, that no other worker's live lease
    /// holds, for the retrier. A claimed transfer is not returned to another
    /// worker until the lease ends; once its reserve is answered it is no
    /// longer INITIATED.
    async fn claim_initiated(
        &self,
        claim: &Claim,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError>;

    /// One unit: stores the INITIATED `refund` of `refund.refund_of` with
    /// a key record of its fingerprint, unless its key exists or its
    /// reference is taken (then as [`TransferStore::begin`]) or
    /// [`crate::transfer::decide_refund`],
    /// with the original locked and its refunds read, refuses it (then
    /// nothing is written). An original that is no transfer is an
    /// integrity error.
    async fn begin_refund(
        &self,
        refund: &Transfer,
        fingerprint: &Fingerprint,
    ) -> Result<Result<Begin, RefundRejection>, StoreError>;

    /// One unit for the batch: moves each HELD hold to the end the wallet
    /// service decided ([`crate::transfer::TransferCommand::EndHold`]); a
    /// hold that is no longer HELD stays as it is. Returns the holds as
    /// they then are, in order; an id that is no transfer is an integrity
    /// error.
    async fn record_hold_ends(
        &self,
        ends: &[(TransferId, HoldEnd)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError>;

    /// Claims up to `limit` HELD holds whose expiry is at or before `now`,
    /// soonest expiry first, that no other worker's live lease holds, for
    /// the sweeper; as [`TransferStore::claim_initiated`] does for the
    /// retrier. Once ended, a hold is no longer HELD.
    async fn claim_expired_holds(
        &self,
        claim: &Claim,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError>;
}

/// What a batch of ledger outcomes did to the transfers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Transfers whose status changed, in no particular order.
    pub changed: Vec<TransferId>,
    /// Events refused and dead-lettered through the outbox.
    pub refused: Vec<Refusal>,
}

/// The transaction service's database, read.
#[async_trait]
pub trait TransferReads: Send + Sync + 'static {
    /// A transfer by id.
    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError>;

    /// Up to `limit` transfers with ids above `after`, by id.
    async fn transfers_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError>;

    /// The refunds of a transfer, oldest first. This default reads every
    /// transfer in pages; a store of many transfers answers from an index.
    async fn refunds_of(&self, original: TransferId) -> Result<Vec<Transfer>, StoreError> {
        let mut refunds = Vec::new();
        every_transfer(self, |t| {
            if t.refund_of == Some(original) {
                refunds.push(t.clone());
            }
        })
        .await?;
        refunds.sort_by_key(|t| (t.created_at, t.id));
        Ok(refunds)
    }

    /// One page of history ([`crate::history`]): the transfers `query`
    /// matches, newest first. This default reads every transfer in pages;
    /// a store of many transfers answers from indexes of the order.
    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let mut matching = Vec::new();
        every_transfer(self, |t| {
            if query.matches(t) {
                matching.push(t.clone());
            }
        })
        .await?;
        Ok(query.page(&matching))
    }

    /// The transfers not terminal at `now`, by status and age since their
    /// creation. This default reads every transfer in pages; a store of
    /// many transfers answers from an index of the unfinished ones instead.
    async fn unfinished(&self, now: Timestamp) -> Result<Unfinished, StoreError> {
        let mut unfinished = Unfinished::default();
        every_transfer(self, |t| unfinished.add(t, now)).await?;
        Ok(unfinished)
    }
}

/// Hands `each` every transfer `reads` holds, a page of 1,000 at a time:
/// what the read ports' defaults do without an index.
async fn every_transfer<R: TransferReads + ?Sized>(
    reads: &R,
    mut each: impl FnMut(&Transfer) + Send,
) -> Result<(), StoreError> {
    let mut after = None;
    loop {
        let page = reads.transfers_page(after, 1_000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        page.iter().for_each(&mut each);
    }
    Ok(())
}

/// The wallet service's database, written: wallets, reservations,
/// inbox; its [`Outbox`] carries `WalletReserved` and dead letters. System accounts are not stored: their truth is the ledger.
#[async_trait]
pub trait WalletStore: Send + Sync + 'static {
    /// Stores a new wallet. An id that exists is an integrity error.
    async fn open_wallet(&self, wallet: &Wallet) -> Result<(), StoreError>;

    /// One unit for the batch: lock its senders in id order (receivers are
    /// only read), [`crate::wallet::decide_reserves`], store the
    /// reservations (and rejections) and the senders, and write each
    /// reservation's `WalletReserved`, stamped with its request's stamp,
    /// to the outbox. One answer per request, in order. A repeat of a
    /// transfer id, in the batch or from before, returns its first outcome
    /// and writes nothing.
    async fn reserve_batch(
        &self,
        batch: &[StampedReserve],
    ) -> Result<Vec<ReserveOutcome>, StoreError>;

    /// [`WalletStore::reserve_batch`] of one request.
    async fn reserve(
        &self,
        request: &ReserveRequest,
        stamp: EventStamp,
    ) -> Result<ReserveOutcome, StoreError> {
        let batch = [StampedReserve {
            request: request.clone(),
            stamp,
        }];
        let mut outcomes = self.reserve_batch(&batch).await?;
        outcomes.pop().ok_or_else(|| {
            StoreError::Integrity(format!(
                "no answer to the reserve of transfer {}",
                request.transfer_id
            ))
        })
    }

    /// One unit for the batch: for each event not in the inbox,
    /// [`crate::wallet::decide_finalize`] and apply it (capture or release),
    /// locking wallets in id order. An event whose outcome contradicts the
    /// reservations is recorded in the inbox, written to the outbox as a
    /// dead letter, and returned.
    async fn finalize(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<Refusal>, StoreError>;

    /// One unit for the batch: for each hold in order, lock it and its
    /// wallet, [`crate::wallet::decide_release`], and write the hold and
    /// the wallet when it moved. One answer per request, in order: where
    /// the hold stands after it, `None` for an id that is no hold.
    async fn release_holds(
        &self,
        batch: &[(TransferId, HoldRelease)],
        now: Timestamp,
    ) -> Result<Vec<Option<HoldState>>, StoreError>;
}

/// The wallet service's database, read.
#[async_trait]
pub trait WalletReads: Send + Sync + 'static {
    /// A wallet by id.
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError>;

    /// Up to `limit` wallets with ids above `after`, by id.
    async fn wallets_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<Wallet>, StoreError>;

    /// Up to `limit` reservations with transfer ids above `after`, by
    /// transfer id.
    async fn reservations_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Reservation>, StoreError>;
}

/// The ledger service's database, written: entries, outcomes, accounts,
/// inbox; its [`Outbox`] carries the outcome events.
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// One unit for the batch: for each event not in the inbox,
    /// [`crate::ledger::decide_posting`], append the posting or record the
    /// rejection, and write `LedgerSucceeded` / `LedgerFailed` stamped with
    /// the event's stamp to the outbox. No row that every posting of a
    /// currency touches (the system account's) is locked or updated. Returns
    /// how many events were decided: a new posting or rejection each; events
    /// already in the inbox and transfers decided before do not count.
    async fn post(
        &self,
        batch: &[(Inbound<PostingRequest>, EventStamp)],
    ) -> Result<usize, StoreError>;
}

/// Where a page of [`LedgerReads::postings_page`] starts: after this entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryCursor {
    /// The last entry's transfer.
    pub transfer_id: TransferId,
    /// The last entry's seq.
    pub seq: u64,
}

/// The ledger service's database, read.
#[async_trait]
pub trait LedgerReads: Send + Sync + 'static {
    /// An account's entries, newest first, with `seq` below `before`.
    async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Up to `limit` entries after `after`, ordered by transfer id then seq,
    /// so one posting's entries are adjacent.
    async fn postings_page(
        &self,
        after: Option<EntryCursor>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// The ledger's outcome on a transfer, if it has one.
    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError>;

    /// Up to `limit` outcomes with transfer ids above `after`, by transfer
    /// id.
    async fn outcomes_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<(TransferId, LedgerOutcome)>, StoreError>;

    /// Up to `limit` account balances with account ids above `after`, by
    /// account id. System accounts included: their balance is the sum of
    /// their entries.
    async fn balances_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<AccountBalance>, StoreError>;

    /// An account's balance from its entries posted at or before `as_of`
    /// (from all of them when `None`), with the highest `seq` counted;
    /// `None` when the account has no entries at all, whenever posted.
    /// This default reads every entry of the account in pages; a store of
    /// many entries answers from an index by account and time.
    async fn balance_as_of(
        &self,
        account: WalletId,
        as_of: Option<Timestamp>,
    ) -> Result<Option<BalanceAsOf>, StoreError> {
        let mut entries = Vec::new();
        let mut before = None;
        loop {
            let page = self.entries(account, before, 1_000).await?;
            let Some(last) = page.last() else { break };
            before = Some(last.seq);
            entries.extend(page);
        }
        Ok(BalanceAsOf::of(&entries, as_of))
    }
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
    /// Reserves funds for a batch of transfers in one call, which the
    /// wallet service applies as one unit, deciding the requests in order;
    /// idempotent by transfer id. One outcome per request, in order. An
    /// error leaves every request of the batch ambiguous.
    async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, GatewayError>;
    /// A wallet as the wallet service holds it now (its balances and when
    /// they last changed), `None` if it does not exist.
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, GatewayError>;

    /// A wallet's currency, `None` if it does not exist. Currencies never
    /// change, so callers may cache the answer.
    async fn wallet_currency(&self, id: WalletId) -> Result<Option<Currency>, GatewayError> {
        Ok(self.wallet(id).await?.map(|w| w.currency))
    }

    /// Voids or expires holds in one call, which the wallet service applies
    /// as one unit ([`WalletStore::release_holds`]); idempotent (a hold
    /// that ended answers how it ended). One answer per request, in order.
    /// An error leaves every hold of the batch as it was or released: ask
    /// again.
    async fn release_holds(
        &self,
        requests: &[(TransferId, HoldRelease)],
    ) -> Result<Vec<Option<HoldState>>, GatewayError>;
}

/// What a message carries: bytes, or an event this process made. A broker
/// client sends the event's JSON ([`Payload::to_bytes`]); an in-process bus
/// hands the event over as it is, so nothing is encoded and decoded again
/// inside one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Bytes, as they travel.
    Bytes(Vec<u8>),
    /// An event, encoded only when it leaves the process.
    Event(Arc<Envelope>),
}

impl Payload {
    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Cow<'_, [u8]> {
        match self {
            Payload::Bytes(bytes) => Cow::Borrowed(bytes),
            Payload::Event(envelope) => Cow::Owned(envelope.encode()),
        }
    }

    /// The event it carries: decoded from bytes (refusing what
    /// [`Envelope::decode`] refuses), or as made.
    pub fn envelope(&self) -> Result<Envelope, DecodeError> {
        self.envelope_up_to(SCHEMA_VERSION)
    }

    /// [`Payload::envelope`] for a reader of schema versions up to `newest`
    /// ([`Envelope::decode_up_to`]); an event made in process is held to
    /// the same limit.
    pub fn envelope_up_to(&self, newest: u16) -> Result<Envelope, DecodeError> {
        match self {
            Payload::Bytes(bytes) => Envelope::decode_up_to(bytes, newest),
            Payload::Event(envelope) if envelope.schema_version > newest => {
                Err(DecodeError::NewerVersion(envelope.schema_version))
            }
            Payload::Event(envelope) => Ok(Envelope::clone(envelope)),
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload::Bytes(bytes)
    }
}

/// A message for a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Partitioning key (the transfer id).
    pub key: Vec<u8>,
    /// What it carries.
    pub payload: Payload,
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
    /// What it carries.
    pub payload: Payload,
    /// The trace context it travelled with (the `traceparent` record
    /// header), for bytes; an event handed over in process carries its own.
    pub trace: Option<TraceParent>,
}

/// A broker failure. Transient: the relay and the consumer retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker error: {0}")]
pub struct BusError(pub String);

/// Writes messages to topics.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes all of `messages`, keeping their order per key; returns once
    /// the broker has them all. On an error some may have been published.
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError>;
}

/// How far a consumer group member is behind, as the broker tells it: what
/// the runner's stall watch reads when the member has delivered nothing
/// for a while.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Partitions the member owns now.
    pub owned: usize,
    /// Messages after the group's committed offsets on those partitions.
    pub owned_lag: u64,
    /// Messages after the group's committed offsets on every partition.
    pub group_lag: u64,
    /// The group's committed offsets summed over every partition: it grows
    /// while any member of the group makes progress.
    pub committed: u64,
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
    /// is delivered again. On an error the position is unknown (some
    /// partitions may have moved back, others not): the caller must
    /// [`Subscription::rejoin`] before it polls again.
    async fn rewind(&mut self) -> Result<(), BusError>;
    /// Starts reading afresh, as a new member of the group would: from the
    /// group's committed offset of every partition, forgetting whatever was
    /// polled since. The way back from any failed [`Subscription::rewind`]
    /// or [`Subscription::commit`], and from a reading that makes no
    /// progress. Until it succeeds, the caller must not poll.
    async fn rejoin(&mut self) -> Result<(), BusError>;
    /// How far the member and its group are behind (asks the broker).
    async fn backlog(&mut self) -> Result<Backlog, BusError>;
}
