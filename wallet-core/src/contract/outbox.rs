//! The [`Outbox`] scenarios, generic over how records get into the outbox:
//! each store kind writes them with its own write operations (a [`Feed`]),
//! since the ports have no way to write an outbox record directly. Each
//! kind's module exposes them as its `outbox_*` scenarios.
//!
//! The ledger store has no [`FeedPairs`]: it writes exactly one record per
//! transfer (its outcome event, once, whatever arrives again) and never
//! dead-letters, so no sequence of its operations puts two records of one
//! transfer in its outbox, and the per-transfer order cannot be observed
//! there.

use crate::contract::Fixture;
use crate::contract::data::{TestData, at, deposit, open_wallet};
use crate::ids::{IdGenerator, TransferId, WalletId, WorkerId};
use crate::money::Currency;
use crate::outcome::{LedgerOutcome, ReserveOutcome};
use crate::ports::{Claim, LedgerStore, Outbox, OutboxRecord, TransferStore, WalletStore};
use crate::wallet::ReserveRequest;

/// Writes outbox records through a store's own write operations.
pub(crate) trait Feed<S> {
    /// Writes one record for each of `count` new transfers, one after the
    /// other, and returns the transfers in the order written.
    async fn one_each(&self, store: &S, data: &TestData, count: usize) -> Vec<TransferId>;
}

/// Writes two records of one transfer.
pub(crate) trait FeedPairs<S>: Feed<S> {
    /// Writes two records of one new transfer, one after the other, and
    /// returns the transfer.
    async fn two_of_one(&self, store: &S, data: &TestData) -> TransferId;
}

/// The transfer store writes dead letters: one per ledger outcome for a
/// transfer it does not know.
pub(crate) struct TransferFeed;

impl<S: TransferStore> Feed<S> for TransferFeed {
    async fn one_each(&self, store: &S, data: &TestData, count: usize) -> Vec<TransferId> {
        let mut written = Vec::new();
        for _ in 0..count {
            let (stranger, _) = data.transfer(data.now());
            let event =
                data.ledger_outcome(&ReserveRequest::of(&stranger), LedgerOutcome::Succeeded);
            let applied = store
                .apply_ledger_outcomes(&[event], data.now())
                .await
                .unwrap_or_else(|e| panic!("feeding the outbox: apply_ledger_outcomes: {e}"));
            assert_eq!(
                applied.refused.len(),
                1,
                "feeding the outbox: an outcome for an unknown transfer should be refused"
            );
            written.push(stranger.id);
        }
        written
    }
}

impl<S: TransferStore> FeedPairs<S> for TransferFeed {
    async fn two_of_one(&self, store: &S, data: &TestData) -> TransferId {
        let (stranger, _) = data.transfer(data.now());
        for _ in 0..2 {
            let event =
                data.ledger_outcome(&ReserveRequest::of(&stranger), LedgerOutcome::Succeeded);
            let applied = store
                .apply_ledger_outcomes(&[event], data.now())
                .await
                .unwrap_or_else(|e| panic!("feeding the outbox: apply_ledger_outcomes: {e}"));
            assert_eq!(
                applied.refused.len(),
                1,
                "feeding the outbox: each outcome for an unknown transfer should be refused"
            );
        }
        stranger.id
    }
}

/// The wallet store writes `WalletReserved` for each reservation, and a
/// dead letter for an outcome that contradicts one.
pub(crate) struct WalletFeed;

impl<S: WalletStore> Feed<S> for WalletFeed {
    async fn one_each(&self, store: &S, data: &TestData, count: usize) -> Vec<TransferId> {
        let wallet = open_wallet(store, data, Currency::USD).await;
        let mut written = Vec::new();
        for _ in 0..count {
            let request = data.reserve_request(
                WalletId::system(Currency::USD),
                wallet.id,
                "1.00",
                Currency::USD,
            );
            let outcome = store
                .reserve(&request, data.stamp())
                .await
                .unwrap_or_else(|e| panic!("feeding the outbox: reserve: {e}"));
            assert_eq!(
                outcome,
                ReserveOutcome::Reserved,
                "feeding the outbox: a deposit should be reserved"
            );
            written.push(request.transfer_id);
        }
        written
    }
}

impl<S: WalletStore> FeedPairs<S> for WalletFeed {
    async fn two_of_one(&self, store: &S, data: &TestData) -> TransferId {
        // WalletReserved, then a capture (which writes nothing), then a
        // LedgerFailed that contradicts the capture: a dead letter.
        let wallet = open_wallet(store, data, Currency::USD).await;
        let request = deposit(store, data, &wallet, "5.00").await;
        let contradiction = data.ledger_outcome(
            &request,
            LedgerOutcome::Failed(crate::outcome::FailureReason::InsufficientFunds),
        );
        let refused = store
            .finalize(&[contradiction], data.now())
            .await
            .unwrap_or_else(|e| panic!("feeding the outbox: finalize: {e}"));
        assert_eq!(
            refused.len(),
            1,
            "feeding the outbox: LedgerFailed after a capture should be refused"
        );
        request.transfer_id
    }
}

/// The ledger store writes one outcome event per transfer.
pub(crate) struct LedgerFeed;

impl<S: LedgerStore> Feed<S> for LedgerFeed {
    async fn one_each(&self, store: &S, data: &TestData, count: usize) -> Vec<TransferId> {
        let mut written = Vec::new();
        for _ in 0..count {
            let request = data.reserve_request(
                WalletId::system(Currency::USD),
                data.wallet_id(),
                "1.00",
                Currency::USD,
            );
            let decided = store
                .post(&[data.wallet_reserved(&request)])
                .await
                .unwrap_or_else(|e| panic!("feeding the outbox: post: {e}"));
            assert_eq!(
                decided, 1,
                "feeding the outbox: a deposit should be decided"
            );
            written.push(request.transfer_id);
        }
        written
    }
}

fn claim(worker: WorkerId, now: i64, until: i64) -> Claim {
    Claim {
        worker,
        now: at(now),
        until: at(until),
    }
}

async fn claimed<S: Outbox>(store: &S, claim: Claim, limit: usize) -> Vec<OutboxRecord> {
    store
        .claim(&claim, limit)
        .await
        .unwrap_or_else(|e| panic!("outbox claim failed: {e}"))
}

async fn acknowledge<S: Outbox>(store: &S, records: &[OutboxRecord]) {
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    store
        .acknowledge(&seqs)
        .await
        .unwrap_or_else(|e| panic!("outbox acknowledge failed: {e}"));
}

fn transfers(records: &[OutboxRecord]) -> Vec<TransferId> {
    records.iter().map(|r| r.item.transfer_id()).collect()
}

fn seqs(records: &[OutboxRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn assert_oldest_first(records: &[OutboxRecord], context: &str) {
    assert!(
        records.windows(2).all(|w| w[0].seq < w[1].seq),
        "{context}: records should come oldest first (seqs ascending), got seqs {:?}",
        seqs(records)
    );
}

pub(crate) async fn claims_oldest_first_up_to_limit<F, W>(fixture: &F, feed: &W)
where
    F: Fixture,
    F::Store: Outbox,
    W: Feed<F::Store>,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let written = feed.one_each(&store, &data, 5).await;
    let first = claimed(&store, claim(data.worker_id(), 10, 100), 3).await;
    assert_eq!(
        transfers(&first),
        written[..3],
        "a claim of limit 3 should return the three oldest records, oldest first"
    );
    assert_oldest_first(&first, "a claim");
    let rest = claimed(&store, claim(data.worker_id(), 20, 100), 10).await;
    assert_eq!(
        transfers(&rest),
        written[3..],
        "a claim with room to spare should return every free record, oldest first"
    );
    assert_oldest_first(&rest, "a second claim");
    assert!(
        first.last().map(|r| r.seq) < rest.first().map(|r| r.seq),
        "later records should have larger seqs"
    );
}

pub(crate) async fn leases_keep_records_from_other_workers<F, W>(fixture: &F, feed: &W)
where
    F: Fixture,
    F::Store: Outbox,
    W: Feed<F::Store>,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let written = feed.one_each(&store, &data, 5).await;
    let (one, two, three) = (data.worker_id(), data.worker_id(), data.worker_id());
    let first = claimed(&store, claim(one, 10, 100), 3).await;
    assert_eq!(
        transfers(&first),
        written[..3],
        "the first worker gets the three oldest"
    );
    let second = claimed(&store, claim(two, 20, 120), 10).await;
    assert_eq!(
        transfers(&second),
        written[3..],
        "a second worker must get only records the first does not hold"
    );
    let third = claimed(&store, claim(three, 30, 130), 10).await;
    assert!(
        third.is_empty(),
        "a third worker must get nothing while both leases live, got seqs {:?}",
        seqs(&third)
    );
}

pub(crate) async fn acknowledged_records_never_return<F, W>(fixture: &F, feed: &W)
where
    F: Fixture,
    F::Store: Outbox,
    W: Feed<F::Store>,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let written = feed.one_each(&store, &data, 3).await;
    let (one, two) = (data.worker_id(), data.worker_id());
    let first = claimed(&store, claim(one, 10, 100), 10).await;
    assert_eq!(transfers(&first), written, "the worker gets every record");

    acknowledge(&store, &first[..2]).await;
    let own = claimed(&store, claim(one, 20, 120), 10).await;
    assert_eq!(
        seqs(&own),
        seqs(&first[2..]),
        "after acknowledging two records their worker should get only the third again"
    );
    let after_lease = claimed(&store, claim(two, 200, 300), 10).await;
    assert_eq!(
        seqs(&after_lease),
        seqs(&first[2..]),
        "after the lease ended another worker should get only the unacknowledged record"
    );

    acknowledge(&store, &after_lease).await;
    // Acknowledging again, or a seq that was never written, is ignored.
    acknowledge(&store, &first).await;
    store
        .acknowledge(&[first[2].seq + 1_000_000])
        .await
        .unwrap_or_else(|e| panic!("acknowledging an unknown seq should be ignored, got {e}"));
    for (worker, now) in [(one, 400), (two, 410), (data.worker_id(), 420)] {
        let again = claimed(&store, claim(worker, now, now + 100), 10).await;
        assert!(
            again.is_empty(),
            "acknowledged records must never be claimed again, got seqs {:?}",
            seqs(&again)
        );
    }
}

pub(crate) async fn records_return_when_the_lease_ends<F, W>(fixture: &F, feed: &W)
where
    F: Fixture,
    F::Store: Outbox,
    W: Feed<F::Store>,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let written = feed.one_each(&store, &data, 3).await;
    let (one, two) = (data.worker_id(), data.worker_id());
    let first = claimed(&store, claim(one, 10, 100), 10).await;
    assert_eq!(
        transfers(&first),
        written,
        "the first worker gets every record"
    );
    let during = claimed(&store, claim(two, 50, 150), 10).await;
    assert!(
        during.is_empty(),
        "another worker gets nothing before the lease ends, got seqs {:?}",
        seqs(&during)
    );
    // Well after `until`, to stay clear of the moment the lease ends.
    let after = claimed(&store, claim(two, 150, 250), 10).await;
    assert_eq!(
        seqs(&after),
        seqs(&first),
        "after the lease ended (unacknowledged) another worker gets the same records, oldest first"
    );
    let back = claimed(&store, claim(one, 160, 260), 10).await;
    assert!(
        back.is_empty(),
        "the first worker's lease ended and the records are the second's now, got seqs {:?}",
        seqs(&back)
    );
}

pub(crate) async fn a_worker_reclaims_its_own_records<F, W>(fixture: &F, feed: &W)
where
    F: Fixture,
    F::Store: Outbox,
    W: Feed<F::Store>,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let written = feed.one_each(&store, &data, 3).await;
    let (one, two) = (data.worker_id(), data.worker_id());
    let first = claimed(&store, claim(one, 10, 100), 2).await;
    assert_eq!(
        transfers(&first),
        written[..2],
        "the worker gets the two oldest"
    );
    let again = claimed(&store, claim(one, 20, 200), 10).await;
    assert_eq!(
        transfers(&again),
        written,
        "a worker claiming again should get its own unacknowledged records again, with the free one, oldest first"
    );
    assert_eq!(
        seqs(&again[..2]),
        seqs(&first),
        "its own records come back under the same seqs"
    );
    let other = claimed(&store, claim(two, 150, 250), 10).await;
    assert!(
        other.is_empty(),
        "claiming again renews the lease to the new until, so another worker gets nothing, got seqs {:?}",
        seqs(&other)
    );
}

pub(crate) async fn keeps_each_transfers_records_in_order<F, W>(fixture: &F, feed: &W)
where
    F: Fixture,
    F::Store: Outbox,
    W: FeedPairs<F::Store>,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let (one, two, three) = (data.worker_id(), data.worker_id(), data.worker_id());

    // The older record acknowledged: the newer one is free.
    let pair = feed.two_of_one(&store, &data).await;
    let single = feed.one_each(&store, &data, 1).await[0];
    let older = claimed(&store, claim(one, 10, 100), 1).await;
    assert_eq!(
        transfers(&older),
        vec![pair],
        "the oldest record is the pair's first"
    );
    let others = claimed(&store, claim(two, 20, 120), 10).await;
    assert_eq!(
        transfers(&others),
        vec![single],
        "while one worker holds a transfer's older record, another must not get its newer record"
    );
    acknowledge(&store, &older).await;
    let rest = claimed(&store, claim(two, 30, 130), 10).await;
    assert_eq!(
        transfers(&rest),
        vec![pair, single],
        "once the older record is acknowledged, the newer one is claimable, oldest first"
    );
    assert!(
        rest[0].seq > older[0].seq,
        "the transfer's second record should be newer than its first"
    );
    acknowledge(&store, &rest).await;

    // The older record's lease ends: both come back, in order.
    let pair = feed.two_of_one(&store, &data).await;
    let older = claimed(&store, claim(one, 200, 300), 1).await;
    assert_eq!(
        transfers(&older),
        vec![pair],
        "the oldest record is the new pair's first"
    );
    let blocked = claimed(&store, claim(two, 210, 310), 10).await;
    assert!(
        blocked.is_empty(),
        "the newer record must wait while another worker holds the older one, got seqs {:?}",
        seqs(&blocked)
    );
    let both = claimed(&store, claim(three, 350, 450), 10).await;
    assert_eq!(
        transfers(&both),
        vec![pair, pair],
        "after the lease on the older record ended, both records are claimable"
    );
    assert_eq!(both[0].seq, older[0].seq, "the older record comes first");
}
