//! The transaction service against a mocked wallet gateway: ambiguous
//! reserves, the retrier, ledger outcomes and idempotency keys.
//!
//! The gateway mock forwards to a real in-memory `WalletService` where the
//! test needs to see what reached the wallet side, so "exactly one
//! reservation" is checked on the wallet's balances, not on call counts
//! alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mockall::Sequence;
use rust_decimal::Decimal;
use tokio::sync::Notify;

use crate::event::Inbound;
use crate::event::{Envelope, Event, LedgerFailure, PostingFacts, producer};
use crate::idempotency::{Fingerprint, IdempotencyRecord};
use crate::ids::TransferId;
use crate::ids::{IdempotencyKey, WalletId};
use crate::memory::{MemoryTransferStore, MemoryWalletStore};
use crate::money::{Amount, Currency, MoneyError};
use crate::outcome::LedgerOutcome;
use crate::outcome::{FailureReason, ReserveOutcome};
use crate::ports::{
    Applied, Begin, Claim, Clock, GatewayError, IdGenerator, MockWalletGateway, Outbox,
    ReserveAttempt, StoreError, TransferReads, TransferStore, WalletGateway, WalletReads,
    WalletStore,
};
use crate::runtime::EventHandler;
use crate::service::{
    CreateError, Parties, RetryReport, TransactionConfig, TransactionService, TransferRequest,
    WalletService,
};
use crate::time::Timestamp;
use crate::transfer::{Transfer, TransferKind, TransferStatus};
use crate::wallet::Wallet;

use super::fixtures::{CountingIds, FakeClock, bal, dec, now_or_never, t0, user_wallet, wid};

type Wallets = Arc<WalletService<MemoryWalletStore>>;

mockall::mock! {
    /// A transfer store whose every call the test scripts.
    TransferStore {}

    #[async_trait::async_trait]
    impl TransferStore for TransferStore {
        async fn begin_batch(&self, batch: &[(Transfer, Fingerprint)]) -> Result<Vec<Begin>, StoreError>;
        async fn record_reserves(&self, attempts: &[(TransferId, ReserveAttempt)], now: Timestamp) -> Result<Vec<Transfer>, StoreError>;
        async fn apply_ledger_outcomes(&self, batch: &[Inbound<LedgerOutcome>], now: Timestamp) -> Result<Applied, StoreError>;
        async fn claim_initiated(&self, claim: &Claim, created_before: Timestamp, limit: usize) -> Result<Vec<Transfer>, StoreError>;
        async fn begin_refund(&self, refund: &Transfer, fingerprint: &Fingerprint) -> Result<Result<Begin, crate::transfer::RefundRejection>, StoreError>;
        async fn record_hold_ends(&self, ends: &[(TransferId, crate::transfer::HoldEnd)], now: Timestamp) -> Result<Vec<Transfer>, StoreError>;
        async fn claim_expired_holds(&self, claim: &Claim, limit: usize) -> Result<Vec<Transfer>, StoreError>;
    }

    #[async_trait::async_trait]
    impl TransferReads for TransferStore {
        async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError>;
        async fn transfers_page(&self, after: Option<TransferId>, limit: usize) -> Result<Vec<Transfer>, StoreError>;
    }
}

/// Every transfer a store holds.
async fn all_transfers(store: &impl TransferReads) -> Vec<Transfer> {
    store.transfers_page(None, 1_000).await.unwrap()
}

const MIN_AGE: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(30);

/// A wallet service on memory with alice (100 USD), bob (0 USD) and carol
/// (50 EUR), and the clock and ids the transaction service shares with it.
struct Rig {
    wallets: Wallets,
    clock: Arc<FakeClock>,
    ids: Arc<CountingIds>,
}

const ALICE: u64 = 1;
const BOB: u64 = 2;
const CAROL: u64 = 3;
const NOBODY: u64 = 9;

fn rig() -> Rig {
    let clock = Arc::new(FakeClock::at(t0()));
    let ids = Arc::new(CountingIds::default());
    let store = MemoryWalletStore::new();
    for wallet in [
        user_wallet(wid(ALICE), Currency::USD, "100"),
        user_wallet(wid(BOB), Currency::USD, "0"),
        user_wallet(wid(CAROL), Currency::EUR, "50"),
    ] {
        now_or_never(store.open_wallet(&wallet)).unwrap();
    }
    let wallets = Arc::new(WalletService::new(
        store,
        clock.clone(),
        ids.clone(),
        Arc::new(Notify::new()),
    ));
    Rig {
        wallets,
        clock,
        ids,
    }
}

impl Rig {
    fn service<S: TransferStore + TransferReads>(
        &self,
        store: S,
        gateway: MockWalletGateway,
    ) -> TransactionService<S, MockWalletGateway> {
        let config = TransactionConfig {
            retry_min_age: MIN_AGE,
            idempotency_lease: LEASE,
            ..TransactionConfig::default()
        };
        TransactionService::new(store, gateway, self.clock.clone(), self.ids.clone(), config)
    }

    fn wallet(&self, n: u64) -> Wallet {
        now_or_never(self.wallets.wallet(wid(n))).unwrap().unwrap()
    }

    /// Makes the pending transfers old enough for the retrier.
    fn age(&self) {
        self.clock.advance(MIN_AGE + Duration::from_millis(1));
    }

    fn ledger_decided(&self, t: &Transfer, event: Event) -> Envelope {
        Envelope::new(
            self.ids.event_id(),
            event,
            t.id,
            t.correlation_id,
            Some(self.ids.event_id()),
            self.clock.now(),
            producer::LEDGER,
        )
    }

    fn ledger_succeeded(&self, t: &Transfer) -> Envelope {
        let facts = PostingFacts {
            tags: Default::default(),
            sender_wallet_id: t.sender_wallet_id,
            receiver_wallet_id: t.receiver_wallet_id,
            amount: t.amount,
            currency: t.currency,
        };
        self.ledger_decided(t, Event::LedgerSucceeded(facts))
    }
}

/// Answers currency look-ups from the real wallet service.
fn look_up_currencies(gateway: &mut MockWalletGateway, wallets: &Wallets) {
    let wallets = wallets.clone();
    gateway.expect_wallet_currency().returning(move |id| {
        Ok(now_or_never(wallets.wallet(id))
            .unwrap()
            .map(|w| w.currency))
    });
}

/// Forwards `times` reserve calls to the real wallet service, counting
/// the reserves in `reached`, and answers `answer(real outcome)` for each
/// (one error fails the call).
fn forward_reserves(
    gateway: &mut MockWalletGateway,
    wallets: &Wallets,
    reached: &Arc<AtomicUsize>,
    times: usize,
    sequence: &mut Sequence,
    answer: fn(ReserveOutcome) -> Result<ReserveOutcome, GatewayError>,
) {
    let (wallets, reached) = (wallets.clone(), reached.clone());
    gateway
        .expect_reserve_batch()
        .times(times)
        .in_sequence(sequence)
        .returning(move |requests| {
            reached.fetch_add(requests.len(), Ordering::SeqCst);
            let outcomes = now_or_never(wallets.reserve_batch(requests)).unwrap();
            outcomes.into_iter().map(answer).collect()
        });
}

fn request(key: &str, parties: Parties, amount: &str) -> TransferRequest {
    TransferRequest {
        tags: Default::default(),
        key: IdempotencyKey::new(key).unwrap(),
        parties,
        amount: dec(amount),
        currency: None,
    }
}

fn pay(key: &str, sender: u64, receiver: u64, amount: &str) -> TransferRequest {
    let parties = Parties::Transfer {
        sender: wid(sender),
        receiver: wid(receiver),
    };
    request(key, parties, amount)
}

async fn status_of<S: TransferStore + TransferReads>(
    service: &TransactionService<S, MockWalletGateway>,
    t: &Transfer,
) -> (TransferStatus, Option<FailureReason>) {
    let t = service.transfer(t.id).await.unwrap().unwrap();
    (t.status, t.failure_reason)
}

#[tokio::test]
async fn a_reserve_that_timed_out_but_committed_is_reserved_once_by_the_retrier() {
    let rig = rig();
    let mut gateway = MockWalletGateway::new();
    look_up_currencies(&mut gateway, &rig.wallets);
    let reached = Arc::new(AtomicUsize::new(0));
    let mut seq = Sequence::new();
    // The wallet service holds the funds, but the answer is lost.
    forward_reserves(&mut gateway, &rig.wallets, &reached, 1, &mut seq, |_| {
        Err(GatewayError::Timeout)
    });
    forward_reserves(&mut gateway, &rig.wallets, &reached, 1, &mut seq, Ok);
    let service = rig.service(MemoryTransferStore::new(), gateway);

    let created = service.create(pay("k1", ALICE, BOB, "30")).await.unwrap();
    let t = created.transfer.clone();
    assert!(!created.replayed);
    assert_eq!(
        (t.status, t.failure_reason),
        (TransferStatus::Initiated, None)
    );
    let alice = rig.wallet(ALICE);
    assert_eq!((alice.available, alice.reserved), (bal("70"), bal("30")));

    // Too young: the retrier leaves it to the request that made it.
    rig.clock.advance(MIN_AGE / 2);
    let report = service.retry_pending().await.unwrap();
    assert_eq!(report, RetryReport::default());
    assert_eq!(reached.load(Ordering::SeqCst), 1);

    rig.age();
    let report = service.retry_pending().await.unwrap();
    assert_eq!(
        report,
        RetryReport {
            attempted: 1,
            answered: 1
        }
    );
    assert_eq!(reached.load(Ordering::SeqCst), 2);
    assert_eq!(
        status_of(&service, &t).await,
        (TransferStatus::Reserved, None)
    );
    // Two calls reached the wallet service, one reservation exists.
    let alice = rig.wallet(ALICE);
    assert_eq!((alice.available, alice.reserved), (bal("70"), bal("30")));
    let store = rig.wallets.store();
    assert_eq!(store.reservations_page(None, 10).await.unwrap().len(), 1);
    let anyone = Claim::new(rig.ids.worker_id(), rig.clock.now(), LEASE);
    let outbox = store.claim(&anyone, 10).await.unwrap();
    assert_eq!(outbox.len(), 1, "one WalletReserved: {outbox:?}");
    assert_eq!(outbox[0].item.transfer_id(), t.id);

    let handled = service.handle(&[rig.ledger_succeeded(&t)]).await.unwrap();
    assert!(handled.refused.is_empty(), "{handled:?}");
    assert_eq!(
        status_of(&service, &t).await,
        (TransferStatus::Succeeded, None)
    );

    rig.age();
    assert_eq!(
        service.retry_pending().await.unwrap(),
        RetryReport::default()
    );
    // A repeat of the key answers as the first response did.
    let again = service
        .create(pay("k1", ALICE, BOB, "30.00"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.transfer, created.transfer);
}

#[tokio::test]
async fn a_reserve_refused_for_insufficient_funds_fails_the_transfer_for_good() {
    let rig = rig();
    let mut gateway = MockWalletGateway::new();
    look_up_currencies(&mut gateway, &rig.wallets);
    let reached = Arc::new(AtomicUsize::new(0));
    forward_reserves(
        &mut gateway,
        &rig.wallets,
        &reached,
        1,
        &mut Sequence::new(),
        Ok,
    );
    let service = rig.service(MemoryTransferStore::new(), gateway);

    let created = service
        .create(pay("k1", ALICE, BOB, "100.01"))
        .await
        .unwrap();
    let t = created.transfer;
    assert_eq!(
        (t.status, t.failure_reason),
        (
            TransferStatus::Failed,
            Some(FailureReason::InsufficientFunds)
        )
    );
    rig.age();
    assert_eq!(
        service.retry_pending().await.unwrap(),
        RetryReport::default()
    );
    assert_eq!(
        status_of(&service, &t).await,
        (
            TransferStatus::Failed,
            Some(FailureReason::InsufficientFunds)
        )
    );
    assert_eq!(reached.load(Ordering::SeqCst), 1);
    let alice = rig.wallet(ALICE);
    assert_eq!((alice.available, alice.reserved), (bal("100"), bal("0")));
}

#[tokio::test]
async fn an_ambiguous_reserve_is_never_failed_and_the_ledger_can_still_finish_it() {
    const RETRIES: usize = 5;
    let rig = rig();
    let mut gateway = MockWalletGateway::new();
    look_up_currencies(&mut gateway, &rig.wallets);
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    gateway
        .expect_reserve_batch()
        .times(1 + RETRIES)
        .returning(move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            if n.is_multiple_of(2) {
                Err(GatewayError::Timeout)
            } else {
                Err(GatewayError::Unavailable(
                    "503 from the wallet service".into(),
                ))
            }
        });
    let service = rig.service(MemoryTransferStore::new(), gateway);

    let t = service
        .create(pay("k1", ALICE, BOB, "30"))
        .await
        .unwrap()
        .transfer;
    assert_eq!(t.status, TransferStatus::Initiated);
    for _ in 0..RETRIES {
        rig.age();
        let report = service.retry_pending().await.unwrap();
        assert_eq!(
            report,
            RetryReport {
                attempted: 1,
                answered: 0
            }
        );
        assert_eq!(
            status_of(&service, &t).await,
            (TransferStatus::Initiated, None)
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1 + RETRIES);

    // The reservation did commit somewhere behind those errors: the ledger posted it.
    service.handle(&[rig.ledger_succeeded(&t)]).await.unwrap();
    assert_eq!(
        status_of(&service, &t).await,
        (TransferStatus::Succeeded, None)
    );
    rig.age();
    assert_eq!(
        service.retry_pending().await.unwrap(),
        RetryReport::default()
    );
}

/// An INITIATED transfer of 10 USD from alice to bob, stored as a request
/// whose reserve got no answer leaves it.
async fn stored_initiated(store: &MemoryTransferStore, n: u64) -> Transfer {
    let t = Transfer {
        id: super::fixtures::tid(n),
        sender_wallet_id: wid(ALICE),
        receiver_wallet_id: wid(BOB),
        idempotency_key: IdempotencyKey::new(format!("key-{n}")).unwrap(),
        ..super::fixtures::transfer(TransferStatus::Initiated)
    };
    let fingerprint = Fingerprint::of_transfer(
        t.kind,
        t.sender_wallet_id,
        t.receiver_wallet_id,
        t.amount,
        t.currency,
    );
    assert!(matches!(
        store.begin(&t, &fingerprint).await.unwrap(),
        Begin::Created
    ));
    t
}

#[tokio::test]
async fn a_retrier_pass_reserves_everything_it_claimed_in_one_call_within_its_lease() {
    const SLOW: Duration = Duration::from_millis(800);
    let rig = rig();
    let store = MemoryTransferStore::new();
    let mut transfers = Vec::new();
    for n in 1..=5 {
        transfers.push(stored_initiated(&store, n).await);
    }
    // The call times out after SLOW of the clock's time: every transfer
    // stays INITIATED, and claimed.
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut slow = MockWalletGateway::new();
    let (clock, log) = (rig.clock.clone(), calls.clone());
    slow.expect_reserve_batch().returning(move |requests| {
        let started = clock.now();
        clock.advance(SLOW);
        let ids: Vec<TransferId> = requests.iter().map(|r| r.transfer_id).collect();
        log.lock().unwrap().push((ids, started, clock.now()));
        Err(GatewayError::Timeout)
    });
    let service = rig.service(store.clone(), slow);
    let lease = TransactionConfig::default().retry_lease;

    rig.age();
    let lease_ends = rig.clock.now() + chrono::Duration::from_std(lease).unwrap();
    let report = service.retry_pending().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        report,
        RetryReport {
            attempted: 5,
            answered: 0
        }
    );
    let claimed: Vec<TransferId> = transfers.iter().map(|t| t.id).collect();
    assert_eq!(calls.len(), 1, "one call for the pass: {calls:?}");
    let (reached, _, ended) = &calls[0];
    assert_eq!(reached, &claimed, "every claimed transfer, oldest first");
    assert!(
        *ended <= lease_ends,
        "the call ended within the claim's lease"
    );

    // The transfers stay claimed until the lease ends: another instance
    // finds nothing before, and all five after, in one call.
    let mut fast = MockWalletGateway::new();
    let reached = Arc::new(AtomicUsize::new(0));
    forward_reserves(
        &mut fast,
        &rig.wallets,
        &reached,
        1,
        &mut Sequence::new(),
        Ok,
    );
    let other = rig.service(store, fast);
    assert_eq!(other.retry_pending().await.unwrap(), RetryReport::default());
    rig.clock.advance(lease);
    assert_eq!(
        other.retry_pending().await.unwrap(),
        RetryReport {
            attempted: 5,
            answered: 5
        }
    );
    assert_eq!(reached.load(Ordering::SeqCst), 5);
    for t in &transfers {
        assert_eq!(status_of(&other, t).await, (TransferStatus::Reserved, None));
    }
    let alice = rig.wallet(ALICE);
    assert_eq!((alice.available, alice.reserved), (bal("50"), bal("50")));
}

#[tokio::test]
async fn a_ledger_failure_while_initiated_fails_the_transfer_with_the_ledgers_reason() {
    let rig = rig();
    let mut gateway = MockWalletGateway::new();
    look_up_currencies(&mut gateway, &rig.wallets);
    gateway
        .expect_reserve_batch()
        .times(1)
        .returning(|_| Err(GatewayError::Timeout));
    let service = rig.service(MemoryTransferStore::new(), gateway);
    let t = service
        .create(pay("k1", ALICE, BOB, "30"))
        .await
        .unwrap()
        .transfer;
    let failed = Event::LedgerFailed(LedgerFailure {
        reason: FailureReason::CurrencyMismatch,
    });
    let outcome = rig.ledger_decided(&t, failed);
    // Delivered twice: the second is a no-op.
    service
        .handle(std::slice::from_ref(&outcome))
        .await
        .unwrap();
    service.handle(&[outcome]).await.unwrap();
    assert_eq!(
        status_of(&service, &t).await,
        (
            TransferStatus::Failed,
            Some(FailureReason::CurrencyMismatch)
        )
    );
    // A late success never moves a terminal transfer.
    service.handle(&[rig.ledger_succeeded(&t)]).await.unwrap();
    assert_eq!(
        status_of(&service, &t).await,
        (
            TransferStatus::Failed,
            Some(FailureReason::CurrencyMismatch)
        )
    );
}

#[tokio::test]
async fn events_that_are_not_ledger_verdicts_are_refused_by_the_handler() {
    let rig = rig();
    let service = rig.service(MemoryTransferStore::new(), MockWalletGateway::new());
    let t = Transfer {
        id: crate::ids::TransferId::from_uuid(rig.ids.next_uuid()),
        ..super::fixtures::transfer(TransferStatus::Initiated)
    };
    let facts = PostingFacts {
        tags: Default::default(),
        sender_wallet_id: wid(ALICE),
        receiver_wallet_id: wid(BOB),
        amount: t.amount,
        currency: t.currency,
    };
    let reserved = rig.ledger_decided(&t, Event::WalletReserved(facts));
    let handled = service
        .handle(std::slice::from_ref(&reserved))
        .await
        .unwrap();
    assert_eq!(handled.refused.len(), 1);
    assert_eq!(handled.refused[0].event_id, reserved.event_id);
    assert_eq!(handled.refused[0].reason, "not a ledger outcome");
}

#[tokio::test]
async fn the_same_key_and_request_replays_the_first_transfer() {
    let rig = rig();
    let mut gateway = MockWalletGateway::new();
    look_up_currencies(&mut gateway, &rig.wallets);
    let reached = Arc::new(AtomicUsize::new(0));
    forward_reserves(
        &mut gateway,
        &rig.wallets,
        &reached,
        1,
        &mut Sequence::new(),
        Ok,
    );
    let service = rig.service(MemoryTransferStore::new(), gateway);

    let first = service.create(pay("k1", ALICE, BOB, "10.5")).await.unwrap();
    assert!(!first.replayed);
    assert_eq!(first.transfer.status, TransferStatus::Reserved);
    rig.clock.advance(Duration::from_secs(3600));
    let again = service
        .create(pay("k1", ALICE, BOB, "10.50"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.transfer, first.transfer);
    assert_eq!(reached.load(Ordering::SeqCst), 1);
    let alice = rig.wallet(ALICE);
    assert_eq!(
        (alice.available, alice.reserved),
        (bal("89.50"), bal("10.50"))
    );
    assert_eq!(all_transfers(service.store()).await.len(), 1);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_as_reused() {
    let rig = rig();
    let mut gateway = MockWalletGateway::new();
    look_up_currencies(&mut gateway, &rig.wallets);
    let reached = Arc::new(AtomicUsize::new(0));
    forward_reserves(
        &mut gateway,
        &rig.wallets,
        &reached,
        1,
        &mut Sequence::new(),
        Ok,
    );
    let service = rig.service(MemoryTransferStore::new(), gateway);

    let first = service.create(pay("k1", ALICE, BOB, "10")).await.unwrap();
    for other in [
        pay("k1", ALICE, BOB, "10.01"),
        pay("k1", BOB, ALICE, "10"),
        request("k1", Parties::Deposit(wid(BOB)), "10"),
        request("k1", Parties::Withdrawal(wid(ALICE)), "10"),
    ] {
        assert_eq!(service.create(other).await, Err(CreateError::KeyReused));
    }
    assert_eq!(reached.load(Ordering::SeqCst), 1);
    assert_eq!(all_transfers(service.store()).await, vec![first.transfer]);
}

/// A store that answers `begin` with an existing, unanswered key record
/// made `age` ago for the request alice -> bob 10 USD.
fn store_with_unanswered_key(rig: &Rig, age: Duration) -> (MockTransferStore, Transfer) {
    let amount = Amount::parse("10", Currency::USD).unwrap();
    let created_at = rig.clock.now() - chrono::Duration::from_std(age).unwrap();
    let current = Transfer {
        created_at,
        ..super::fixtures::transfer(TransferStatus::Reserved)
    };
    let record = IdempotencyRecord {
        key: current.idempotency_key.clone(),
        fingerprint: Fingerprint::of_transfer(
            TransferKind::Transfer,
            wid(ALICE),
            wid(BOB),
            amount,
            Currency::USD,
        ),
        transfer_id: current.id,
        created_at,
        response: None,
    };
    let mut store = MockTransferStore::new();
    let existing = Begin::Existing {
        record: Box::new(record),
        current: Box::new(current.clone()),
    };
    store
        .expect_begin_batch()
        .times(1)
        .returning(move |batch| Ok(vec![existing.clone(); batch.len()]));
    store.expect_record_reserves().times(0);
    (store, current)
}

fn gateway_without_reserves(rig: &Rig) -> MockWalletGateway {
    let mut gateway = MockWalletGateway::new();
    look_up_currencies(&mut gateway, &rig.wallets);
    gateway.expect_reserve_batch().times(0);
    gateway
}

#[tokio::test]
async fn the_same_request_while_the_first_is_unanswered_is_in_flight() {
    let rig = rig();
    let (store, _) = store_with_unanswered_key(&rig, LEASE - Duration::from_secs(1));
    let service = rig.service(store, gateway_without_reserves(&rig));
    assert_eq!(
        service.create(pay("key-1", ALICE, BOB, "10")).await,
        Err(CreateError::InFlight)
    );
}

#[tokio::test]
async fn after_the_lease_an_unanswered_key_replays_the_transfer_as_it_is_now() {
    let rig = rig();
    let (store, current) = store_with_unanswered_key(&rig, LEASE + Duration::from_secs(1));
    let service = rig.service(store, gateway_without_reserves(&rig));
    let created = service
        .create(pay("key-1", ALICE, BOB, "10"))
        .await
        .unwrap();
    assert!(created.replayed);
    assert_eq!(created.transfer, current);
}

fn store_that_must_stay_empty() -> MockTransferStore {
    let mut store = MockTransferStore::new();
    store.expect_begin_batch().times(0);
    store.expect_record_reserves().times(0);
    store
}

#[tokio::test]
async fn requests_refused_by_validation_store_nothing_and_reserve_nothing() {
    let rig = rig();
    let system = WalletId::system(Currency::USD);
    let usd_for_eur = TransferRequest {
        currency: Some(Currency::EUR),
        ..pay("k", ALICE, BOB, "1")
    };
    let cases: Vec<(TransferRequest, CreateError)> = vec![
        (
            pay("k", ALICE, NOBODY, "1"),
            CreateError::WalletNotFound(wid(NOBODY)),
        ),
        (
            pay("k", NOBODY, BOB, "1"),
            CreateError::WalletNotFound(wid(NOBODY)),
        ),
        (
            request("k", Parties::Deposit(wid(NOBODY)), "1"),
            CreateError::WalletNotFound(wid(NOBODY)),
        ),
        (
            request("k", Parties::Withdrawal(wid(NOBODY)), "1"),
            CreateError::WalletNotFound(wid(NOBODY)),
        ),
        (
            request("k", Parties::Deposit(system), "1"),
            CreateError::WalletNotFound(system),
        ),
        (pay("k", ALICE, ALICE, "1"), CreateError::SameWallet),
        (
            pay("k", ALICE, CAROL, "1"),
            CreateError::CurrencyMismatch("sender holds USD, receiver holds EUR".into()),
        ),
        (
            usd_for_eur,
            CreateError::CurrencyMismatch("request says EUR, wallets hold USD".into()),
        ),
        (
            pay("k", ALICE, BOB, "10.001"),
            CreateError::InvalidAmount(MoneyError::TooManyDecimals {
                currency: Currency::USD,
                scale: 2,
            }),
        ),
        (
            pay("k", ALICE, BOB, "0"),
            CreateError::InvalidAmount(MoneyError::NotPositive),
        ),
        (
            pay("k", ALICE, BOB, "-1"),
            CreateError::InvalidAmount(MoneyError::NotPositive),
        ),
        (
            request("k", Parties::Deposit(wid(CAROL)), "1000000000000.01"),
            CreateError::InvalidAmount(MoneyError::TooLarge),
        ),
    ];
    for (request, expected) in cases {
        let service = rig.service(store_that_must_stay_empty(), gateway_without_reserves(&rig));
        let described = format!("{request:?}");
        assert_eq!(service.create(request).await, Err(expected), "{described}");
    }
    let alice = rig.wallet(ALICE);
    assert_eq!((alice.available, alice.reserved), (bal("100"), bal("0")));
}

#[tokio::test]
async fn a_wallet_service_that_cannot_be_asked_stores_nothing() {
    let rig = rig();
    let mut gateway = MockWalletGateway::new();
    gateway
        .expect_wallet_currency()
        .returning(|_| Err(GatewayError::Unavailable("connection refused".into())));
    gateway.expect_reserve_batch().times(0);
    let service = rig.service(store_that_must_stay_empty(), gateway);
    assert_eq!(
        service.create(pay("k", ALICE, BOB, "1")).await,
        Err(CreateError::Gateway(GatewayError::Unavailable(
            "connection refused".into()
        )))
    );
}

#[tokio::test]
async fn deposits_and_withdrawals_go_through_the_currencys_system_account() {
    let rig = rig();
    let mut gateway = MockWalletGateway::new();
    look_up_currencies(&mut gateway, &rig.wallets);
    let reached = Arc::new(AtomicUsize::new(0));
    forward_reserves(
        &mut gateway,
        &rig.wallets,
        &reached,
        2,
        &mut Sequence::new(),
        Ok,
    );
    let service = rig.service(MemoryTransferStore::new(), gateway);
    let system = WalletId::system(Currency::EUR);

    let deposit = service
        .create(request("d", Parties::Deposit(wid(CAROL)), "5"))
        .await
        .unwrap()
        .transfer;
    assert_eq!(deposit.kind, TransferKind::Deposit);
    assert_eq!(
        (deposit.sender_wallet_id, deposit.receiver_wallet_id),
        (system, wid(CAROL))
    );
    assert_eq!(deposit.status, TransferStatus::Reserved);
    assert_eq!(deposit.amount.value(), Decimal::new(500, 2));

    let withdrawal = service
        .create(request("w", Parties::Withdrawal(wid(CAROL)), "20"))
        .await
        .unwrap()
        .transfer;
    assert_eq!(withdrawal.kind, TransferKind::Withdrawal);
    assert_eq!(
        (withdrawal.sender_wallet_id, withdrawal.receiver_wallet_id),
        (wid(CAROL), system)
    );
    let carol = rig.wallet(CAROL);
    assert_eq!((carol.available, carol.reserved), (bal("30"), bal("20")));
    // The system account was neither checked nor written: it has no wallet.
    assert_eq!(now_or_never(rig.wallets.wallet(system)).unwrap(), None);
}

impl Rig {
    /// One instance of several on the store `real` (as processes on one
    /// database), counting its reads of single transfers in `reads`, with
    /// `config` and a wallet service that reserves everything.
    fn counting_instance(
        &self,
        real: &MemoryTransferStore,
        reads: &Arc<AtomicUsize>,
        config: TransactionConfig,
    ) -> TransactionService<MockTransferStore, MockWalletGateway> {
        let mut gateway = MockWalletGateway::new();
        look_up_currencies(&mut gateway, &self.wallets);
        gateway
            .expect_reserve_batch()
            .returning(|requests| Ok(vec![ReserveOutcome::Reserved; requests.len()]));
        let store = counting_store(real, reads);
        TransactionService::new(store, gateway, self.clock.clone(), self.ids.clone(), config)
    }
}

/// A mock store that forwards to `real` and counts the reads of single
/// transfers in `reads`.
fn counting_store(real: &MemoryTransferStore, reads: &Arc<AtomicUsize>) -> MockTransferStore {
    let mut store = MockTransferStore::new();
    let r = real.clone();
    store
        .expect_begin_batch()
        .returning(move |batch| now_or_never(r.begin_batch(batch)));
    let r = real.clone();
    store
        .expect_record_reserves()
        .returning(move |attempts, now| now_or_never(r.record_reserves(attempts, now)));
    let r = real.clone();
    store
        .expect_apply_ledger_outcomes()
        .returning(move |batch, now| now_or_never(r.apply_ledger_outcomes(batch, now)));
    let (r, reads) = (real.clone(), reads.clone());
    store.expect_transfer().returning(move |id| {
        reads.fetch_add(1, Ordering::SeqCst);
        now_or_never(r.transfer(id))
    });
    store
}

/// Waits read their transfer again only when woken (or every
/// `wait_poll`, here an hour): by a change of that transfer in this
/// process, or by one announced from elsewhere.
#[tokio::test]
async fn a_wait_is_woken_by_its_own_transfer_and_by_changes_announced_from_elsewhere() {
    const HOUR: Duration = Duration::from_secs(3600);
    let rig = rig();
    let real = MemoryTransferStore::new();
    let service = |reads: &Arc<AtomicUsize>| {
        let config = TransactionConfig {
            wait_poll: HOUR,
            max_wait: HOUR,
            ..TransactionConfig::default()
        };
        rig.counting_instance(&real, reads, config)
    };
    // Two instances on one store, as two processes on one database.
    let (reads_here, reads_elsewhere) = (Arc::default(), Arc::default());
    let (here, elsewhere) = (service(&reads_here), service(&reads_elsewhere));
    let mut transfers = Vec::new();
    for key in ["k1", "k2", "k3"] {
        let created = here.create(pay(key, ALICE, BOB, "1")).await.unwrap();
        transfers.push(created.transfer);
    }
    let (t, u, v) = (&transfers[0], &transfers[1], &transfers[2]);
    let reads = |counter: &Arc<AtomicUsize>| counter.load(Ordering::SeqCst);

    // Another transfer's change does not wake the wait; its own does.
    let wait = here.wait_for(t.id, HOUR);
    tokio::pin!(wait);
    let short = Duration::from_millis(100);
    assert!(tokio::time::timeout(short, &mut wait).await.is_err());
    assert_eq!(reads(&reads_here), 1, "read once, then asleep");
    here.handle(&[rig.ledger_succeeded(u)]).await.unwrap();
    assert!(tokio::time::timeout(short, &mut wait).await.is_err());
    assert_eq!(reads(&reads_here), 1, "not woken by another transfer");
    here.handle(&[rig.ledger_succeeded(t)]).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(30), &mut wait).await;
    let done = done.expect("woken by its transfer").unwrap().unwrap();
    assert_eq!(done.status, TransferStatus::Succeeded);
    assert_eq!(reads(&reads_here), 2);

    // A change made by the other instance is seen once announced.
    let wait = elsewhere.wait_for(v.id, HOUR);
    tokio::pin!(wait);
    assert!(tokio::time::timeout(short, &mut wait).await.is_err());
    here.handle(&[rig.ledger_succeeded(v)]).await.unwrap();
    assert!(tokio::time::timeout(short, &mut wait).await.is_err());
    assert_eq!(
        reads(&reads_elsewhere),
        1,
        "the other instance's waits know nothing yet"
    );
    elsewhere.transfers_changed([u.id, v.id]);
    let done = tokio::time::timeout(Duration::from_secs(30), &mut wait).await;
    let done = done.expect("woken by the announcement").unwrap().unwrap();
    assert_eq!(done.status, TransferStatus::Succeeded);
    assert_eq!(reads(&reads_elsewhere), 2);
}

/// With the default `wait_poll`, a safety net of seconds, a wait reads its
/// transfer exactly twice when a change made elsewhere is announced: as it
/// starts, and when woken. Woken all at once (announcements may have been
/// missed), every wait reads once more; with no announcement at all, a wait
/// sees the change at its next poll.
#[tokio::test(start_paused = true)]
async fn a_wait_woken_by_an_announcement_reads_its_transfer_twice() {
    let poll = TransactionConfig::default().wait_poll;
    assert!(poll >= Duration::from_secs(1), "a safety net, not a poll");
    let rig = rig();
    let real = MemoryTransferStore::new();
    let service = |reads: &Arc<AtomicUsize>| {
        rig.counting_instance(&real, reads, TransactionConfig::default())
    };
    // Two instances on one store: `here` applies the outcomes, `elsewhere`
    // answers the long polls.
    let (reads_here, reads) = (Arc::default(), Arc::default());
    let (here, elsewhere) = (service(&reads_here), service(&reads));
    let mut transfers = Vec::new();
    for key in ["k1", "k2", "k3", "k4"] {
        let created = here.create(pay(key, ALICE, BOB, "1")).await.unwrap();
        transfers.push(created.transfer);
    }
    let (t, u, v, w) = (&transfers[0], &transfers[1], &transfers[2], &transfers[3]);
    let read = || reads.load(Ordering::SeqCst);
    let long = Duration::from_secs(30);
    let short = Duration::from_millis(100);

    // Announced: one read as the wait starts, one when woken.
    let wait = elsewhere.wait_for(t.id, long);
    tokio::pin!(wait);
    assert!(tokio::time::timeout(poll - short, &mut wait).await.is_err());
    assert_eq!(read(), 1, "read once, then asleep until woken");
    here.handle(&[rig.ledger_succeeded(t)]).await.unwrap();
    elsewhere.transfers_changed([t.id]);
    let done = tokio::time::timeout(short, &mut wait).await;
    let done = done.expect("woken by the announcement").unwrap().unwrap();
    assert_eq!(done.status, TransferStatus::Succeeded);
    assert_eq!(read(), 2, "once as it started, once when woken");

    // Every wait woken at once: each reads once more, and finds its change.
    let (wait_u, wait_v) = (
        elsewhere.wait_for(u.id, long),
        elsewhere.wait_for(v.id, long),
    );
    tokio::pin!(wait_u, wait_v);
    assert!(tokio::time::timeout(short, &mut wait_u).await.is_err());
    assert!(tokio::time::timeout(short, &mut wait_v).await.is_err());
    assert_eq!(read(), 4);
    here.handle(&[rig.ledger_succeeded(u), rig.ledger_succeeded(v)])
        .await
        .unwrap();
    elsewhere.any_transfer_changed();
    for wait in [&mut wait_u, &mut wait_v] {
        let done = tokio::time::timeout(short, wait).await;
        let done = done.expect("woken").unwrap().unwrap();
        assert_eq!(done.status, TransferStatus::Succeeded);
    }
    assert_eq!(read(), 6, "two reads per wait");

    // Nothing announced: the change is seen at the next poll, not before.
    let wait = elsewhere.wait_for(w.id, long);
    tokio::pin!(wait);
    assert!(tokio::time::timeout(short, &mut wait).await.is_err());
    here.handle(&[rig.ledger_succeeded(w)]).await.unwrap();
    assert!(
        tokio::time::timeout(poll - short * 2, &mut wait)
            .await
            .is_err()
    );
    assert_eq!(read(), 7, "no read between polls");
    let done = tokio::time::timeout(short * 2, &mut wait).await;
    let done = done.expect("seen at the poll").unwrap().unwrap();
    assert_eq!(done.status, TransferStatus::Succeeded);
    assert_eq!(read(), 8);
}

/// A wallet gateway that forwards to the real wallet service, records the
/// size of every call, and holds the first call until released.
struct HeldFirst {
    wallets: Wallets,
    calls: std::sync::Mutex<Vec<usize>>,
    entered: Notify,
    release: Notify,
}

#[async_trait::async_trait]
impl WalletGateway for Arc<HeldFirst> {
    async fn reserve_batch(
        &self,
        requests: &[crate::wallet::ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, GatewayError> {
        let first = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(requests.len());
            calls.len() == 1
        };
        if first {
            self.entered.notify_one();
            self.release.notified().await;
        }
        self.wallets
            .reserve_batch(requests)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))
    }

    async fn wallet(&self, id: WalletId) -> Result<Option<crate::wallet::Wallet>, GatewayError> {
        Ok(self.wallets.wallet(id).await.unwrap())
    }

    async fn release_holds(
        &self,
        requests: &[(TransferId, crate::wallet::HoldRelease)],
    ) -> Result<Vec<Option<crate::wallet::HoldState>>, GatewayError> {
        self.wallets.release_holds(requests).await
    }
}

type Held = TransactionService<MemoryTransferStore, Arc<HeldFirst>>;

/// A service whose first reserve call waits, with `in_flight` batches at
/// once and room for `queue` waiting requests.
fn held_service(rig: &Rig, in_flight: usize, queue: usize) -> (Arc<Held>, Arc<HeldFirst>) {
    let gateway = Arc::new(HeldFirst {
        wallets: rig.wallets.clone(),
        calls: std::sync::Mutex::new(Vec::new()),
        entered: Notify::new(),
        release: Notify::new(),
    });
    let config = TransactionConfig {
        batches_in_flight: in_flight,
        batch_queue: queue,
        ..TransactionConfig::default()
    };
    let service = TransactionService::new(
        MemoryTransferStore::new(),
        gateway.clone(),
        rig.clock.clone(),
        rig.ids.clone(),
        config,
    );
    (Arc::new(service), gateway)
}

/// Lets spawned requests run up to their wait for a batch.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn requests_that_arrive_while_a_batch_is_in_flight_go_together_in_the_next() {
    let rig = rig();
    let (service, gateway) = held_service(&rig, 1, 100);
    let spawn = |request: TransferRequest| {
        let service = service.clone();
        tokio::spawn(async move { service.create(request).await })
    };
    // A lone request goes at once, as a batch of one.
    let first = spawn(pay("first", ALICE, BOB, "10"));
    gateway.entered.notified().await;
    // While it is in flight, the next ones gather: the same key twice,
    // a sender short of funds in the middle of a hot sender's requests.
    let next: Vec<_> = [
        pay("a", ALICE, BOB, "50"),
        pay("twice", ALICE, BOB, "20"),
        pay("short", ALICE, BOB, "30"),
        pay("twice", ALICE, BOB, "20"),
        pay("b", ALICE, BOB, "20"),
    ]
    .into_iter()
    .map(spawn)
    .collect();
    settle().await;
    assert_eq!(*gateway.calls.lock().unwrap(), [1], "the others wait");
    gateway.release.notify_one();
    let first = first.await.unwrap().unwrap();
    let mut answers = Vec::new();
    for handle in next {
        answers.push(handle.await.unwrap());
    }
    assert_eq!(
        *gateway.calls.lock().unwrap(),
        [1, 4],
        "one call for the next batch, each new transfer once"
    );
    assert_eq!(first.transfer.status, TransferStatus::Reserved);
    let status = |i: usize| {
        answers[i]
            .as_ref()
            .map(|c| (c.transfer.status, c.transfer.failure_reason))
    };
    assert_eq!(status(0), Ok((TransferStatus::Reserved, None)));
    assert_eq!(status(1), Ok((TransferStatus::Reserved, None)));
    // In arrival order: 10 + 50 + 20 of 100 are held, so 30 does not fit
    // and the 20 after it does.
    assert_eq!(
        status(2),
        Ok((
            TransferStatus::Failed,
            Some(FailureReason::InsufficientFunds)
        ))
    );
    assert_eq!(
        answers[3],
        Err(CreateError::InFlight),
        "the key's first request is still being answered"
    );
    assert_eq!(status(4), Ok((TransferStatus::Reserved, None)));
    let alice = rig.wallet(ALICE);
    assert_eq!((alice.available, alice.reserved), (bal("0"), bal("100")));
}

#[tokio::test]
async fn a_full_batch_queue_refuses_at_once_and_stores_nothing() {
    let rig = rig();
    let (service, gateway) = held_service(&rig, 1, 1);
    let spawn = |request: TransferRequest| {
        let service = service.clone();
        tokio::spawn(async move { service.create(request).await })
    };
    let first = spawn(pay("first", ALICE, BOB, "1"));
    gateway.entered.notified().await;
    let queued = spawn(pay("queued", ALICE, BOB, "1"));
    settle().await;
    assert_eq!(
        service.create(pay("refused", ALICE, BOB, "1")).await,
        Err(CreateError::Busy)
    );
    gateway.release.notify_one();
    assert!(first.await.unwrap().is_ok());
    assert!(queued.await.unwrap().is_ok());
    let keys: Vec<String> = all_transfers(service.store())
        .await
        .iter()
        .map(|t| t.idempotency_key.as_str().to_owned())
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(!keys.contains(&"refused".to_owned()), "{keys:?}");
}
