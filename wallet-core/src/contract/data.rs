//! Test data for the scenarios, public so an adapter's own tests can build
//! the same: ids from counters, fixed times, amounts, events in their
//! envelopes, seeding through the ports, and a look into an outbox.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use uuid::Uuid;

use crate::event::{
    Envelope, Event, EventStamp, Inbound, LedgerFailure, Outgoing, PostingFacts, producer,
};
use crate::idempotency::Fingerprint;
use crate::ids::{IdGenerator, IdempotencyKey, TransferId, WalletId, WorkerId};
use crate::ledger::PostingRequest;
use crate::money::{Amount, Balance, Currency, parse_decimal};
use crate::outcome::{LedgerOutcome, ReserveOutcome};
use crate::ports::{Claim, Outbox, StoreError, WalletReads, WalletStore};
use crate::time::Timestamp;
use crate::transfer::{Transfer, TransferKind, TransferStatus};
use crate::wallet::{ReserveRequest, Wallet};

/// The Unix time (2026-01-01T00:00:00Z) every scenario's time counts from.
pub const EPOCH_SECONDS: i64 = 1_767_225_600;

/// [`EPOCH_SECONDS`] plus `seconds`. Whole seconds, so a store that keeps
/// timestamps at microsecond precision gives back exactly what it got.
pub fn at(seconds: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(EPOCH_SECONDS + seconds, 0)
        .expect("scenario times are within chrono's range")
}

/// An amount from text, checked against `currency`; panics on text that is
/// not a valid amount, since scenarios only write valid ones.
pub fn amount(text: &str, currency: Currency) -> Amount {
    Amount::parse(text, currency).unwrap_or_else(|e| panic!("bad amount {text:?}: {e}"))
}

/// A USD amount from text.
pub fn usd(text: &str) -> Amount {
    amount(text, Currency::USD)
}

/// A balance from text, for expectations. Balances compare by value, so
/// `"5"` equals `"5.00"`.
pub fn balance(text: &str) -> Balance {
    Balance::from_decimal(parse_decimal(text).unwrap_or_else(|e| panic!("bad balance: {e}")))
}

/// The worker [`outbox_items`] claims as. Its claims end at the moment they
/// are made, so they never keep a record from another worker.
pub fn inspector() -> WorkerId {
    WorkerId::from_uuid(Uuid::from_u128(u128::MAX))
}

/// Ids and times for one scenario, from counters, so every run makes the
/// same data and ids sort in the order they were made. Shareable between
/// tasks.
#[derive(Debug)]
pub struct TestData {
    next_id: AtomicU64,
    next_second: AtomicI64,
}

impl Default for TestData {
    fn default() -> Self {
        TestData::new()
    }
}

impl IdGenerator for TestData {
    /// `c0de0000-0000-0000-....`: the prefix keeps every id far from the
    /// system accounts' ids, and the counter makes later ids sort after
    /// earlier ones, in Rust as in a database comparing uuids bytewise.
    fn next_uuid(&self) -> Uuid {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        Uuid::from_u128((0xC0DE_u128 << 112) | u128::from(n))
    }
}

impl TestData {
    /// Counters at their start: the first id ends in 1, the first
    /// [`TestData::now`] is [`at`]`(1000)`.
    pub fn new() -> TestData {
        TestData {
            next_id: AtomicU64::new(1),
            next_second: AtomicI64::new(1_000),
        }
    }

    /// A time one second after the previous one. Scenarios that depend on
    /// particular times use [`at`] with values below 1000 instead.
    pub fn now(&self) -> Timestamp {
        at(self.next_second.fetch_add(1, Ordering::Relaxed))
    }

    /// A stamp for an event a store writes: a fresh id at [`TestData::now`].
    pub fn stamp(&self) -> EventStamp {
        EventStamp {
            event_id: self.event_id(),
            at: self.now(),
            trace: None,
        }
    }

    /// A fresh idempotency key.
    pub fn key(&self) -> IdempotencyKey {
        IdempotencyKey::new(format!("contract-{}", self.next_uuid().simple()))
            .expect("a uuid is a valid key")
    }

    /// A unique name with `prefix`, for topics and consumer groups.
    pub fn name(&self, prefix: &str) -> String {
        format!("contract.{prefix}.{}", Uuid::new_v4().simple())
    }

    /// A new, empty wallet with a fresh id.
    pub fn wallet(&self, currency: Currency) -> Wallet {
        Wallet::open(self.wallet_id(), currency, self.now())
    }

    /// A reserve request of `amount` (text in `currency`) with a fresh
    /// transfer id and correlation id.
    pub fn reserve_request(
        &self,
        sender: WalletId,
        receiver: WalletId,
        amount_text: &str,
        currency: Currency,
    ) -> ReserveRequest {
        ReserveRequest {
            tags: Default::default(),
            transfer_id: self.transfer_id(),
            correlation_id: self.correlation_id(),
            kind: TransferKind::between(sender, receiver),
            sender_wallet_id: sender,
            receiver_wallet_id: receiver,
            amount: amount(amount_text, currency),
            currency,
            expires_at: None,
            hold_id: None,
        }
    }

    /// A hold of `amount_text` USD of `wallet`'s funds, naming no receiver,
    /// expiring at `expires_at`, with a fresh id.
    pub fn hold_request(
        &self,
        wallet: WalletId,
        amount_text: &str,
        expires_at: Timestamp,
    ) -> ReserveRequest {
        ReserveRequest {
            kind: TransferKind::Hold,
            expires_at: Some(expires_at),
            ..self.reserve_request(wallet, wallet, amount_text, Currency::USD)
        }
    }

    /// A capture of `amount_text` USD of `hold` to `receiver`, with a fresh
    /// transfer id.
    pub fn capture_request(
        &self,
        hold: &ReserveRequest,
        receiver: WalletId,
        amount_text: &str,
    ) -> ReserveRequest {
        ReserveRequest {
            correlation_id: hold.correlation_id,
            hold_id: Some(hold.transfer_id),
            ..self.reserve_request(hold.sender_wallet_id, receiver, amount_text, Currency::USD)
        }
    }

    /// A new INITIATED hold of 10.00 USD of a fresh wallet id, created at
    /// `created_at` and expiring at `expires_at`, under a fresh key.
    pub fn hold(&self, created_at: Timestamp, expires_at: Timestamp) -> (Transfer, Fingerprint) {
        let (transfer, _) = self.transfer(created_at);
        let hold = Transfer {
            kind: TransferKind::Hold,
            receiver_wallet_id: transfer.sender_wallet_id,
            expires_at: Some(expires_at),
            ..transfer
        };
        let fingerprint =
            Fingerprint::of_hold(hold.sender_wallet_id, None, hold.amount, Currency::USD, 60);
        (hold, fingerprint)
    }

    /// A new INITIATED capture of `hold`'s whole amount to a fresh wallet
    /// id, created at `created_at`, under a fresh key.
    pub fn capture(&self, hold: &Transfer, created_at: Timestamp) -> (Transfer, Fingerprint) {
        let (transfer, _) = self.transfer(created_at);
        let capture = Transfer {
            sender_wallet_id: hold.sender_wallet_id,
            amount: hold.amount,
            hold_id: Some(hold.id),
            ..transfer
        };
        let fingerprint = Fingerprint::of_capture(
            hold.id,
            capture.receiver_wallet_id,
            capture.amount,
            Currency::USD,
        );
        (capture, fingerprint)
    }

    /// A new INITIATED transfer of 10.00 USD between two fresh wallet ids,
    /// created at `created_at` under a fresh key, with its fingerprint.
    pub fn transfer(&self, created_at: Timestamp) -> (Transfer, Fingerprint) {
        let (sender, receiver, amount) = (self.wallet_id(), self.wallet_id(), usd("10.00"));
        let transfer = Transfer {
            tags: Default::default(),
            id: self.transfer_id(),
            kind: TransferKind::Transfer,
            status: TransferStatus::Initiated,
            failure_reason: None,
            sender_wallet_id: sender,
            receiver_wallet_id: receiver,
            amount,
            currency: Currency::USD,
            correlation_id: self.correlation_id(),
            idempotency_key: self.key(),
            created_at,
            updated_at: created_at,
            expires_at: None,
            hold_id: None,
            captured_by: None,
            refund_of: None,
        };
        let fingerprint = Fingerprint::of_transfer(
            TransferKind::Transfer,
            sender,
            receiver,
            amount,
            Currency::USD,
        );
        (transfer, fingerprint)
    }

    /// The `LedgerSucceeded` or `LedgerFailed` event on `request`'s
    /// transfer, with a fresh event id, as the wallet and transaction
    /// services receive it.
    pub fn ledger_outcome(
        &self,
        request: &ReserveRequest,
        outcome: LedgerOutcome,
    ) -> Inbound<LedgerOutcome> {
        let event = match outcome {
            LedgerOutcome::Succeeded => Event::LedgerSucceeded(facts(request)),
            LedgerOutcome::Failed(reason) => Event::LedgerFailed(LedgerFailure { reason }),
        };
        let envelope = Envelope::new(
            self.event_id(),
            event,
            request.transfer_id,
            request.correlation_id,
            Some(self.event_id()),
            self.now(),
            producer::LEDGER,
        );
        Inbound {
            envelope,
            body: outcome,
        }
    }

    /// The `WalletReserved` event of `request`, with a fresh event id, as
    /// the ledger receives it, and the stamp for the ledger's answer.
    pub fn wallet_reserved(
        &self,
        request: &ReserveRequest,
    ) -> (Inbound<PostingRequest>, EventStamp) {
        let envelope = Envelope::new(
            self.event_id(),
            Event::WalletReserved(facts(request)),
            request.transfer_id,
            request.correlation_id,
            None,
            self.now(),
            producer::WALLET,
        );
        let body = envelope
            .posting_request()
            .expect("a WalletReserved event carries a posting request");
        (Inbound { envelope, body }, self.stamp())
    }
}

/// The facts `WalletReserved` and `LedgerSucceeded` carry for `request`.
pub fn facts(request: &ReserveRequest) -> PostingFacts {
    PostingFacts {
        tags: Default::default(),
        sender_wallet_id: request.sender_wallet_id,
        receiver_wallet_id: request.receiver_wallet_id,
        amount: request.amount,
        currency: request.currency,
    }
}

/// Opens a new wallet in `store` and returns it.
pub async fn open_wallet<S: WalletStore>(store: &S, data: &TestData, currency: Currency) -> Wallet {
    let wallet = data.wallet(currency);
    store
        .open_wallet(&wallet)
        .await
        .unwrap_or_else(|e| panic!("seeding: open_wallet of a new id failed: {e}"));
    wallet
}

/// Deposits `amount_text` into `wallet` through the ports, as the saga
/// does: a reserve from the currency's system account, then its capture by
/// a `LedgerSucceeded` event. Returns the deposit's request.
pub async fn deposit<S: WalletStore>(
    store: &S,
    data: &TestData,
    wallet: &Wallet,
    amount_text: &str,
) -> ReserveRequest {
    let system = WalletId::system(wallet.currency);
    let request = data.reserve_request(system, wallet.id, amount_text, wallet.currency);
    let outcome = store
        .reserve(&request, data.stamp())
        .await
        .unwrap_or_else(|e| panic!("seeding: deposit reserve failed: {e}"));
    assert_eq!(
        outcome,
        ReserveOutcome::Reserved,
        "seeding: a deposit from the system account was not reserved"
    );
    let refused = store
        .finalize(
            &[data.ledger_outcome(&request, LedgerOutcome::Succeeded)],
            data.now(),
        )
        .await
        .unwrap_or_else(|e| panic!("seeding: deposit finalize failed: {e}"));
    assert!(
        refused.is_empty(),
        "seeding: capturing a deposit was refused: {refused:?}"
    );
    request
}

/// A wallet that must exist, read through [`WalletReads::wallet`].
pub async fn wallet_now<S: WalletReads>(store: &S, id: WalletId) -> Wallet {
    store
        .wallet(id)
        .await
        .unwrap_or_else(|e| panic!("wallet({id}) failed: {e}"))
        .unwrap_or_else(|| panic!("wallet {id} is missing"))
}

/// Asserts a wallet's available and reserved funds; `context` says which
/// step of the scenario expected them.
pub async fn assert_funds<S: WalletReads>(
    store: &S,
    id: WalletId,
    available: &str,
    reserved: &str,
    context: &str,
) {
    let wallet = wallet_now(store, id).await;
    assert_eq!(
        (wallet.available, wallet.reserved),
        (balance(available), balance(reserved)),
        "{context}: wallet {id} should hold (available, reserved) = ({available}, {reserved})"
    );
}

/// Every unacknowledged record of `store`'s outbox that no other worker
/// holds, oldest first. Claims as [`inspector`] with a lease that ends as
/// it starts, at [`at`]`(0)`, so it holds nothing from anyone; only for
/// scenarios where no other worker claims.
pub async fn outbox_items<S: Outbox>(store: &S) -> Vec<Outgoing> {
    let look = Claim {
        worker: inspector(),
        now: at(0),
        until: at(0),
    };
    store
        .claim(&look, 1_000)
        .await
        .unwrap_or_else(|e| panic!("outbox claim failed: {e}"))
        .into_iter()
        .map(|record| record.item)
        .collect()
}

/// The records of [`outbox_items`] that concern `transfer`.
pub async fn outbox_of<S: Outbox>(store: &S, transfer: TransferId) -> Vec<Outgoing> {
    outbox_items(store)
        .await
        .into_iter()
        .filter(|item| item.transfer_id() == transfer)
        .collect()
}

/// Asserts that a page's keys, in the order read, each come strictly after
/// the one before, starting after the cursor `after`, so a paging loop
/// always advances and ends. `what` names the read. For a read that goes
/// backwards (newest first), pass keys wrapped in [`std::cmp::Reverse`].
pub fn assert_page_after<K: Ord + std::fmt::Debug>(
    what: &str,
    after: Option<K>,
    keys: impl IntoIterator<Item = K>,
) {
    let mut previous = after;
    for key in keys {
        if let Some(previous) = &previous {
            assert!(
                key > *previous,
                "{what}: a page should hold only keys after its cursor, in order; {key:?} came after {previous:?}"
            );
        }
        previous = Some(key);
    }
}

/// Runs `op` until it does not fail with [`StoreError::Unavailable`], up
/// to 50 times with a growing pause. The ports let a store fail transiently
/// under contention (a serialization failure, a deadlock) and write
/// nothing, and make retrying the caller's duty, so scenarios that contend
/// on purpose retry as a service would.
pub async fn retrying<T, Fut>(mut op: impl FnMut() -> Fut) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut attempt = 0_u32;
    loop {
        match op().await {
            Err(StoreError::Unavailable(_)) if attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 5)).await;
            }
            other => return other,
        }
    }
}
