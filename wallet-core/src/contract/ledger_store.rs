//! Scenarios of [`LedgerStore`] and [`LedgerReads`], and of the ledger
//! store's [`Outbox`], which carries the ledger's outcome events.
//!
//! The ledger store has no scenario of per-transfer order in its outbox:
//! it writes exactly one record per transfer and never dead-letters, so its
//! write operations cannot put two records of one transfer in its outbox.

use std::cmp::Reverse;
use std::sync::Arc;

use tokio::sync::Barrier;

use crate::contract::Fixture;
use crate::contract::data::{
    TestData, assert_page_after, at, balance, facts, outbox_items, outbox_of, retrying,
};
use crate::contract::outbox::{self, LedgerFeed};
use crate::event::{Envelope, Event, EventStamp, Inbound, LedgerFailure, Outgoing, producer};
use crate::ids::{IdGenerator, TransferId, WalletId};
use crate::ledger::{AccountBalance, BalanceAsOf, Direction, Entry, PostingRequest};
use crate::money::{Balance, Currency};
use crate::outcome::{FailureReason, LedgerOutcome};
use crate::ports::{EntryCursor, LedgerReads, LedgerStore, Outbox};
use crate::time::Timestamp;
use crate::wallet::ReserveRequest;

crate::__contract_scenarios!(ledger_store => __contract_names());

async fn post<S: LedgerStore>(store: &S, batch: &[(Inbound<PostingRequest>, EventStamp)]) -> usize {
    store
        .post(batch)
        .await
        .unwrap_or_else(|e| panic!("post failed: {e}"))
}

/// Posts `request` as a new `WalletReserved` event; returns the event and
/// the stamp of the ledger's answer.
async fn post_one<S: LedgerStore>(
    store: &S,
    data: &TestData,
    request: &ReserveRequest,
) -> (Inbound<PostingRequest>, EventStamp) {
    let event = data.wallet_reserved(request);
    let decided = post(store, std::slice::from_ref(&event)).await;
    assert_eq!(decided, 1, "a new transfer's event should be decided");
    event
}

/// The outcome event the ledger must write for `cause`, built field by
/// field.
fn expected_outcome(
    cause: &Inbound<PostingRequest>,
    request: &ReserveRequest,
    outcome: LedgerOutcome,
    stamp: EventStamp,
) -> Outgoing {
    let event = match outcome {
        LedgerOutcome::Succeeded => Event::LedgerSucceeded(facts(request)),
        LedgerOutcome::Failed(reason) => Event::LedgerFailed(LedgerFailure { reason }),
    };
    Outgoing::Event(
        Envelope::new(
            stamp.event_id,
            event,
            request.transfer_id,
            request.correlation_id,
            Some(cause.event_id()),
            stamp.at,
            producer::LEDGER,
        )
        .traced(stamp.trace),
    )
}

async fn entries_of<S: LedgerReads>(store: &S, account: WalletId) -> Vec<Entry> {
    store
        .entries(account, None, 1_000)
        .await
        .unwrap_or_else(|e| panic!("entries({account}) failed: {e}"))
}

/// Every entry, read page by page.
async fn all_postings<S: LedgerReads>(store: &S, limit: usize) -> Vec<Vec<Entry>> {
    let mut pages: Vec<Vec<Entry>> = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .postings_page(after, limit)
            .await
            .unwrap_or_else(|e| panic!("postings_page failed: {e}"));
        assert!(page.len() <= limit, "a page must not exceed its limit");
        assert_page_after(
            "postings_page",
            after.map(|c: EntryCursor| (c.transfer_id, c.seq)),
            page.iter().map(|e| (e.transfer_id, e.seq)),
        );
        let Some(last) = page.last() else {
            return pages;
        };
        after = Some(EntryCursor {
            transfer_id: last.transfer_id,
            seq: last.seq,
        });
        pages.push(page);
    }
}

async fn entries_of_transfer<S: LedgerReads>(store: &S, transfer: TransferId) -> Vec<Entry> {
    all_postings(store, 100)
        .await
        .concat()
        .into_iter()
        .filter(|e| e.transfer_id == transfer)
        .collect()
}

async fn all_balances<S: LedgerReads>(store: &S) -> Vec<AccountBalance> {
    store
        .balances_page(None, 1_000)
        .await
        .unwrap_or_else(|e| panic!("balances_page failed: {e}"))
}

async fn balance_of<S: LedgerReads>(store: &S, account: WalletId) -> Option<Balance> {
    all_balances(store)
        .await
        .into_iter()
        .find(|b| b.account == account)
        .map(|b| b.balance)
}

async fn outcome_of<S: LedgerReads>(store: &S, transfer: TransferId) -> Option<LedgerOutcome> {
    store
        .outcome(transfer)
        .await
        .unwrap_or_else(|e| panic!("outcome({transfer}) failed: {e}"))
}

/// Asserts that `request`'s transfer was refused for `reason`: the outcome
/// recorded, one `LedgerFailed` in the outbox, no entries.
async fn assert_rejected<S: LedgerStore + LedgerReads + Outbox>(
    store: &S,
    event: &(Inbound<PostingRequest>, EventStamp),
    request: &ReserveRequest,
    reason: FailureReason,
    context: &str,
) {
    let failed = LedgerOutcome::Failed(reason);
    assert_eq!(
        outcome_of(store, request.transfer_id).await,
        Some(failed),
        "{context}: the ledger's outcome should be Failed({reason:?})"
    );
    assert_eq!(
        outbox_of(store, request.transfer_id).await,
        vec![expected_outcome(&event.0, request, failed, event.1)],
        "{context}: one LedgerFailed, stamped with the event's stamp, should be in the outbox"
    );
    assert!(
        entries_of_transfer(store, request.transfer_id)
            .await
            .is_empty(),
        "{context}: a refused transfer must have no entries"
    );
}

/// An outcome goes to the outbox with the trace context of its stamp, and
/// comes back from a claim with it.
pub async fn an_outcome_keeps_the_trace_context_of_its_stamp<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let request = data.reserve_request(
        WalletId::system(Currency::USD),
        data.wallet_id(),
        "5.00",
        Currency::USD,
    );
    let (event, stamp) = data.wallet_reserved(&request);
    let stamp = EventStamp {
        trace: Some(TRACE.parse().expect("a valid traceparent")),
        ..stamp
    };
    post(&store, &[(event.clone(), stamp)]).await;
    let written = outbox_of(&store, request.transfer_id).await;
    assert_eq!(
        written,
        vec![expected_outcome(
            &event,
            &request,
            LedgerOutcome::Succeeded,
            stamp
        )],
        "the outcome should be written with its stamp's trace context"
    );
    assert_eq!(
        written[0].trace().map(|t| t.to_string()).as_deref(),
        Some(TRACE),
        "the outbox should give the trace context back as written"
    );
}

/// A trace context, as a process that traces stamps events with.
const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A posting appends exactly one balanced pair of entries (a debit of the
/// sender, a credit of the receiver, same amount and currency), records
/// the outcome, and writes one `LedgerSucceeded` stamped with the event's
/// stamp, caused by the `WalletReserved` event.
pub async fn post_appends_one_balanced_posting<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let (alice, bob) = (data.wallet_id(), data.wallet_id());
    let funding = data.reserve_request(
        WalletId::system(Currency::USD),
        alice,
        "50.00",
        Currency::USD,
    );
    post_one(&store, &data, &funding).await;
    let request = data.reserve_request(alice, bob, "10.00", Currency::USD);
    let event = post_one(&store, &data, &request).await;

    let posting = entries_of_transfer(&store, request.transfer_id).await;
    assert_eq!(
        posting.len(),
        2,
        "postings_page should show two entries for the transfer: {posting:?}"
    );
    let debit = posting.iter().find(|e| e.direction == Direction::Debit);
    let credit = posting.iter().find(|e| e.direction == Direction::Credit);
    let (Some(debit), Some(credit)) = (debit, credit) else {
        panic!("a posting is one debit and one credit: {posting:?}");
    };
    assert_eq!(
        (debit.account, credit.account),
        (alice, bob),
        "the sender is debited and the receiver credited"
    );
    for entry in [debit, credit] {
        assert_eq!(
            (entry.amount, entry.currency),
            (request.amount, Currency::USD),
            "both entries carry the transfer's amount and currency"
        );
    }
    assert_ne!(debit.seq, credit.seq, "each entry has its own seq");

    let alice_entries = entries_of(&store, alice).await;
    assert_eq!(
        alice_entries
            .iter()
            .map(|e| (e.transfer_id, e.direction))
            .collect::<Vec<_>>(),
        vec![
            (request.transfer_id, Direction::Debit),
            (funding.transfer_id, Direction::Credit)
        ],
        "the sender's entries, newest first: the debit, then the deposit's credit"
    );
    let bob_entries = entries_of(&store, bob).await;
    assert_eq!(
        bob_entries,
        vec![credit.clone()],
        "the receiver's only entry is the credit"
    );
    assert_eq!(
        outcome_of(&store, request.transfer_id).await,
        Some(LedgerOutcome::Succeeded),
        "the outcome should be recorded as Succeeded"
    );
    assert_eq!(
        outbox_of(&store, request.transfer_id).await,
        vec![expected_outcome(
            &event.0,
            &request,
            LedgerOutcome::Succeeded,
            event.1
        )],
        "one LedgerSucceeded with the transfer's facts, stamped with the event's stamp"
    );
    assert_eq!(
        (
            balance_of(&store, alice).await,
            balance_of(&store, bob).await
        ),
        (Some(balance("40.00")), Some(balance("10.00"))),
        "balances are credits minus debits"
    );
}

/// The ledger decides a transfer once: the same transfer arriving again
/// under a new event id (alone, or in the same batch) appends nothing and
/// emits nothing, whether it was posted or refused.
pub async fn post_decides_each_transfer_once<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let system = WalletId::system(Currency::USD);
    let (alice, bob) = (data.wallet_id(), data.wallet_id());

    let posted = data.reserve_request(system, alice, "10.00", Currency::USD);
    let first = post_one(&store, &data, &posted).await;
    post(&store, &[data.wallet_reserved(&posted)]).await;
    let refused = data.reserve_request(bob, bob, "10.00", Currency::USD);
    let refused_first = post_one(&store, &data, &refused).await;
    post(&store, &[data.wallet_reserved(&refused)]).await;
    let batched = data.reserve_request(system, bob, "7.00", Currency::USD);
    let batch = [
        data.wallet_reserved(&batched),
        data.wallet_reserved(&batched),
    ];
    post(&store, &batch).await;

    assert_eq!(
        entries_of_transfer(&store, posted.transfer_id).await.len(),
        2,
        "a transfer arriving again must not be posted again"
    );
    assert_eq!(
        outbox_of(&store, posted.transfer_id).await,
        vec![expected_outcome(
            &first.0,
            &posted,
            LedgerOutcome::Succeeded,
            first.1
        )],
        "exactly one LedgerSucceeded per transfer, the first event's"
    );
    assert_eq!(
        outbox_of(&store, refused.transfer_id).await,
        vec![expected_outcome(
            &refused_first.0,
            &refused,
            LedgerOutcome::Failed(FailureReason::SameWallet),
            refused_first.1
        )],
        "exactly one LedgerFailed per refused transfer, the first event's"
    );
    assert_eq!(
        entries_of_transfer(&store, batched.transfer_id).await.len(),
        2,
        "a transfer twice in one batch is posted once"
    );
    assert_eq!(
        outbox_of(&store, batched.transfer_id).await,
        vec![expected_outcome(
            &batch[0].0,
            &batched,
            LedgerOutcome::Succeeded,
            batch[0].1
        )],
        "a transfer twice in one batch gets one LedgerSucceeded, the first event's"
    );
    assert_eq!(
        balance_of(&store, alice).await,
        Some(balance("10.00")),
        "credited once"
    );
}

/// The inbox keeps each event id once: a redelivered event, in a later
/// call or twice in one batch, is not decided again and changes nothing.
pub async fn post_ignores_a_duplicate_event_id<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let alice = data.wallet_id();
    let request = data.reserve_request(
        WalletId::system(Currency::USD),
        alice,
        "10.00",
        Currency::USD,
    );
    let event = data.wallet_reserved(&request);
    assert_eq!(
        post(&store, &[event.clone(), event.clone()]).await,
        1,
        "an event twice in one batch is decided once"
    );
    assert_eq!(
        post(&store, std::slice::from_ref(&event)).await,
        0,
        "a redelivered event is not decided again"
    );
    assert_eq!(
        entries_of_transfer(&store, request.transfer_id).await.len(),
        2,
        "one posting, however often its event arrives"
    );
    // A redelivery is also caught by the ledger deciding each transfer
    // once, so the inbox shows only when an event id comes back carrying
    // another transfer: an event whose id is in the inbox is skipped
    // whatever it holds.
    let other = data.reserve_request(
        WalletId::system(Currency::USD),
        alice,
        "3.00",
        Currency::USD,
    );
    let (mut reused, stamp) = data.wallet_reserved(&other);
    reused.envelope.event_id = event.0.event_id();
    assert_eq!(
        post(&store, &[(reused, stamp)]).await,
        0,
        "an event whose id is in the inbox is not decided, whatever it carries"
    );
    assert_eq!(
        outcome_of(&store, other.transfer_id).await,
        None,
        "an event whose id is in the inbox must not be applied"
    );
    assert_eq!(
        outbox_items(&store).await,
        vec![expected_outcome(
            &event.0,
            &request,
            LedgerOutcome::Succeeded,
            event.1
        )],
        "one outcome event, however often the event arrives"
    );
}

/// A posting in another currency than an account's (an account keeps the
/// currency of its first entry; a system account's is in its id) is
/// refused with `CurrencyMismatch`: outcome recorded, `LedgerFailed`
/// written, nothing appended.
pub async fn post_rejects_a_currency_mismatch<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let (euros, dollars) = (data.wallet_id(), data.wallet_id());
    let funding = data.reserve_request(
        WalletId::system(Currency::EUR),
        euros,
        "10.00",
        Currency::EUR,
    );
    post_one(&store, &data, &funding).await;

    let cases = [
        (
            data.reserve_request(
                WalletId::system(Currency::USD),
                euros,
                "5.00",
                Currency::USD,
            ),
            "USD credited to an account whose first entry was EUR",
        ),
        (
            data.reserve_request(euros, dollars, "5.00", Currency::USD),
            "USD debited from an account whose first entry was EUR",
        ),
        (
            data.reserve_request(
                WalletId::system(Currency::EUR),
                dollars,
                "5.00",
                Currency::USD,
            ),
            "USD from the EUR system account",
        ),
    ];
    for (request, context) in &cases {
        let event = post_one(&store, &data, request).await;
        assert_rejected(
            &store,
            &event,
            request,
            FailureReason::CurrencyMismatch,
            context,
        )
        .await;
    }
    assert_eq!(
        entries_of(&store, euros).await.len(),
        1,
        "the EUR account keeps only its first entry"
    );
    assert!(
        entries_of(&store, dollars).await.is_empty(),
        "refused postings leave no entry"
    );
}

/// A posting from an account to itself is refused with `SameWallet`.
pub async fn post_rejects_the_same_wallet<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let alice = data.wallet_id();
    let request = data.reserve_request(alice, alice, "5.00", Currency::USD);
    let event = post_one(&store, &data, &request).await;
    assert_rejected(
        &store,
        &event,
        &request,
        FailureReason::SameWallet,
        "same wallet",
    )
    .await;
    assert!(
        entries_of(&store, alice).await.is_empty(),
        "a refused posting leaves no entry"
    );
}

/// Many deposits from a currency's system account all post, and the system
/// account's balance goes negative by their sum; every currency's accounts
/// balance to zero.
pub async fn system_accounts_go_negative<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let usd_system = WalletId::system(Currency::USD);
    let jpy_system = WalletId::system(Currency::JPY);
    let wallets: Vec<WalletId> = (0..5).map(|_| data.wallet_id()).collect();
    for wallet in wallets.iter().chain([&wallets[0], &wallets[0]]) {
        let request = data.reserve_request(usd_system, *wallet, "10.00", Currency::USD);
        post_one(&store, &data, &request).await;
        assert_eq!(
            outcome_of(&store, request.transfer_id).await,
            Some(LedgerOutcome::Succeeded),
            "a deposit from the system account should post"
        );
    }
    let yen = data.wallet_id();
    post_one(
        &store,
        &data,
        &data.reserve_request(jpy_system, yen, "500", Currency::JPY),
    )
    .await;

    let balances = all_balances(&store).await;
    let of = |account: WalletId| {
        balances
            .iter()
            .find(|b| b.account == account)
            .unwrap_or_else(|| panic!("balances_page should list account {account}: {balances:?}"))
    };
    assert_eq!(
        (of(usd_system).balance, of(usd_system).currency),
        (balance("-70.00"), Currency::USD),
        "the USD system account is minus the sum of its deposits"
    );
    assert_eq!(
        (of(jpy_system).balance, of(jpy_system).currency),
        (balance("-500"), Currency::JPY),
        "the JPY system account is minus its deposit"
    );
    assert_eq!(
        of(wallets[0]).balance,
        balance("30.00"),
        "three deposits of 10.00"
    );
    for currency in [Currency::USD, Currency::JPY] {
        let sum: Balance = balances
            .iter()
            .filter(|b| b.currency == currency)
            .map(|b| b.balance)
            .sum();
        assert_eq!(sum, balance("0"), "{currency} accounts should sum to zero");
    }
}

/// 50 deposits from one system account, posted by 50 tasks at once, all
/// post; the system account ends at minus their sum.
pub async fn concurrent_deposits_all_post<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    const TASKS: usize = 50;
    let store = Arc::new(fixture.fresh().await);
    let data = TestData::new();
    let system = WalletId::system(Currency::USD);
    let start = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let request = data.reserve_request(system, data.wallet_id(), "1.00", Currency::USD);
        let event = [data.wallet_reserved(&request)];
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            retrying(|| store.post(&event))
                .await
                .unwrap_or_else(|e| panic!("concurrent post failed: {e}"))
        }));
    }
    let mut decided = 0;
    for task in tasks {
        decided += match task.await {
            Ok(n) => n,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("a scenario task was cancelled: {error}"),
        };
    }
    assert_eq!(decided, TASKS, "every deposit should be decided");
    assert_eq!(
        balance_of(&*store, system).await,
        Some(balance("-50.00")),
        "the system account is minus the sum of the deposits"
    );
    let succeeded = outbox_items(&*store)
        .await
        .into_iter()
        .filter(|item| matches!(item, Outgoing::Event(e) if matches!(e.event, Event::LedgerSucceeded(_))))
        .count();
    assert_eq!(succeeded, TASKS, "one LedgerSucceeded per deposit");
}

/// `entries` returns an account's entries (and no other account's) newest
/// first, up to `limit`, with seqs below `before`.
pub async fn entries_are_newest_first_and_cut_by_before<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let system = WalletId::system(Currency::USD);
    let (alice, bob) = (data.wallet_id(), data.wallet_id());
    let mut alice_transfers = Vec::new();
    for amount in ["1.00", "2.00", "3.00", "4.00", "5.00"] {
        let request = data.reserve_request(system, alice, amount, Currency::USD);
        post_one(&store, &data, &request).await;
        alice_transfers.push(request.transfer_id);
        // Another account's posting in between.
        post_one(
            &store,
            &data,
            &data.reserve_request(system, bob, "1.00", Currency::USD),
        )
        .await;
    }
    alice_transfers.reverse();

    let mut seen: Vec<Entry> = Vec::new();
    let mut before = None;
    let mut sizes = Vec::new();
    loop {
        let page = store
            .entries(alice, before, 2)
            .await
            .unwrap_or_else(|e| panic!("entries failed: {e}"));
        assert!(page.len() <= 2, "a page must not exceed its limit");
        assert_page_after(
            "entries (newest first)",
            before.map(Reverse),
            page.iter().map(|e| Reverse(e.seq)),
        );
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        sizes.push(page.len());
        seen.extend(page);
    }
    assert_eq!(sizes, vec![2, 2, 1], "five entries in pages of two");
    assert!(
        seen.iter().all(|e| e.account == alice),
        "entries(account) must hold that account's entries only"
    );
    assert!(
        seen.windows(2).all(|w| w[0].seq > w[1].seq),
        "entries should be newest first (seqs descending): {:?}",
        seen.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    assert_eq!(
        seen.iter().map(|e| e.transfer_id).collect::<Vec<_>>(),
        alice_transfers,
        "entries should be the account's postings, newest first"
    );
    let system_entries = entries_of(&store, system).await;
    assert_eq!(
        system_entries.len(),
        10,
        "the system account has an entry per deposit"
    );
    assert!(
        system_entries
            .iter()
            .all(|e| e.direction == Direction::Debit),
        "deposits debit the system account"
    );
}

/// `postings_page` returns entries by transfer id then seq, so a posting's
/// two entries are adjacent, and an `EntryCursor` continues after the
/// entry it names, even in the middle of a posting.
pub async fn postings_are_paged_by_transfer_then_seq<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let system = WalletId::system(Currency::USD);
    let requests: Vec<ReserveRequest> = (0..4)
        .map(|_| data.reserve_request(system, data.wallet_id(), "3.00", Currency::USD))
        .collect();
    // Posted in an order unlike their ids' order, so the page order is by
    // transfer id, not by seq alone.
    for index in [2, 0, 3, 1] {
        post_one(&store, &data, &requests[index]).await;
    }
    let pages = all_postings(&store, 3).await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 2],
        "eight entries in pages of three"
    );
    let entries = pages.concat();
    let mut order: Vec<(TransferId, u64)> =
        entries.iter().map(|e| (e.transfer_id, e.seq)).collect();
    let as_read = order.clone();
    order.sort();
    order.dedup();
    assert_eq!(
        as_read, order,
        "entries should be ordered by transfer id then seq, each once"
    );
    let mut transfer_ids: Vec<TransferId> = requests.iter().map(|r| r.transfer_id).collect();
    transfer_ids.sort();
    for (pair, transfer) in entries.chunks(2).zip(&transfer_ids) {
        assert!(
            pair.iter().all(|e| e.transfer_id == *transfer),
            "a posting's two entries should be adjacent: {pair:?}"
        );
        let directions: Vec<Direction> = pair.iter().map(|e| e.direction).collect();
        assert!(
            directions.contains(&Direction::Debit) && directions.contains(&Direction::Credit),
            "a posting is a debit and a credit: {pair:?}"
        );
    }
}

/// `outcome` reads the ledger's outcome on a transfer (`None` before it
/// decided), and `outcomes_page` returns outcomes, refusals included, by
/// transfer id, after `after`, up to `limit`.
pub async fn outcomes_are_read_by_transfer_and_paged<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let system = WalletId::system(Currency::USD);
    let alice = data.wallet_id();
    let requests = [
        data.reserve_request(system, alice, "1.00", Currency::USD),
        data.reserve_request(alice, alice, "1.00", Currency::USD),
        data.reserve_request(system, data.wallet_id(), "1.00", Currency::USD),
        data.reserve_request(system, data.wallet_id(), "1.00", Currency::EUR),
        data.reserve_request(system, data.wallet_id(), "1.00", Currency::USD),
    ];
    let expected_of = [
        LedgerOutcome::Succeeded,
        LedgerOutcome::Failed(FailureReason::SameWallet),
        LedgerOutcome::Succeeded,
        LedgerOutcome::Failed(FailureReason::CurrencyMismatch),
        LedgerOutcome::Succeeded,
    ];
    for index in [4, 1, 3, 0, 2] {
        post_one(&store, &data, &requests[index]).await;
    }
    let mut expected: Vec<(TransferId, LedgerOutcome)> = requests
        .iter()
        .zip(expected_of)
        .map(|(r, o)| (r.transfer_id, o))
        .collect();
    for (transfer, outcome) in &expected {
        assert_eq!(
            outcome_of(&store, *transfer).await,
            Some(*outcome),
            "outcome(transfer) should be the ledger's decision"
        );
    }
    assert_eq!(
        outcome_of(&store, data.transfer_id()).await,
        None,
        "outcome of a transfer never seen should be None"
    );
    expected.sort_by_key(|(id, _)| *id);

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .outcomes_page(after, 2)
            .await
            .unwrap_or_else(|e| panic!("outcomes_page failed: {e}"));
        assert!(page.len() <= 2, "a page must not exceed its limit");
        assert_page_after("outcomes_page", after, page.iter().map(|(t, _)| *t));
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        pages.push(page);
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1],
        "five outcomes in pages of two"
    );
    assert_eq!(
        pages.concat(),
        expected,
        "pages should hold every outcome once, by transfer id"
    );
}

/// `balances_page` returns every account with entries, system accounts
/// included, by account id, after `after`, up to `limit`.
pub async fn balances_are_paged_in_account_order<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let system = WalletId::system(Currency::USD);
    let wallets: Vec<WalletId> = (0..4).map(|_| data.wallet_id()).collect();
    for index in [2, 0, 3, 1] {
        let request = data.reserve_request(system, wallets[index], "2.50", Currency::USD);
        post_one(&store, &data, &request).await;
    }
    let mut expected: Vec<AccountBalance> = wallets
        .iter()
        .map(|w| AccountBalance {
            account: *w,
            currency: Currency::USD,
            balance: balance("2.50"),
        })
        .chain([AccountBalance {
            account: system,
            currency: Currency::USD,
            balance: balance("-10.00"),
        }])
        .collect();
    expected.sort_by_key(|b| b.account);

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .balances_page(after, 2)
            .await
            .unwrap_or_else(|e| panic!("balances_page failed: {e}"));
        assert!(page.len() <= 2, "a page must not exceed its limit");
        assert_page_after("balances_page", after, page.iter().map(|b| b.account));
        let Some(last) = page.last() else { break };
        after = Some(last.account);
        pages.push(page);
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1],
        "five accounts in pages of two"
    );
    assert_eq!(
        pages.concat(),
        expected,
        "pages should hold every account once, by account id, with its balance"
    );
}

/// Posts `request` as a new `WalletReserved` event whose posting is
/// appended at `posted_at`.
async fn post_at<S: LedgerStore>(
    store: &S,
    data: &TestData,
    request: &ReserveRequest,
    posted_at: Timestamp,
) {
    let (event, stamp) = data.wallet_reserved(request);
    let stamp = EventStamp {
        at: posted_at,
        ..stamp
    };
    assert_eq!(post(store, &[(event, stamp)]).await, 1, "a new transfer");
}

async fn balance_as_of<S: LedgerReads>(
    store: &S,
    account: WalletId,
    as_of: Option<Timestamp>,
) -> Option<BalanceAsOf> {
    store
        .balance_as_of(account, as_of)
        .await
        .unwrap_or_else(|e| panic!("balance_as_of({account}, {as_of:?}) failed: {e}"))
}

/// `balance_as_of` sums an account's entries posted at or before the time
/// (the time itself included), names the highest seq it counted, keeps
/// accounts and currencies apart, and knows an account's currency even
/// when none of its entries is that old; an account without entries has
/// no balance there.
pub async fn balance_as_of_counts_the_entries_posted_by_then<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let (usd, eur) = (
        WalletId::system(Currency::USD),
        WalletId::system(Currency::EUR),
    );
    let (alice, bob, carol) = (data.wallet_id(), data.wallet_id(), data.wallet_id());
    let usd_request = |from, to, amount| data.reserve_request(from, to, amount, Currency::USD);
    post_at(&store, &data, &usd_request(usd, alice, "1.00"), at(100)).await;
    let eur_deposit = data.reserve_request(eur, carol, "7.00", Currency::EUR);
    post_at(&store, &data, &eur_deposit, at(150)).await;
    post_at(&store, &data, &usd_request(usd, alice, "2.00"), at(200)).await;
    post_at(&store, &data, &usd_request(alice, bob, "0.50"), at(300)).await;

    // The highest seq of `account`'s entries posted at or before `t`.
    let alice_entries = entries_of(&store, alice).await;
    let last_by = |entries: &[Entry], t: Timestamp| {
        entries
            .iter()
            .filter(|e| e.posted_at <= t)
            .map(|e| e.seq)
            .max()
    };
    let expect = |account, currency, amount: &str, position| {
        Some(BalanceAsOf {
            account,
            currency,
            balance: balance(amount),
            position,
        })
    };
    let cases = [
        (at(99), "0.00", None),
        (at(100), "1.00", last_by(&alice_entries, at(100))),
        (at(199), "1.00", last_by(&alice_entries, at(199))),
        (at(250), "3.00", last_by(&alice_entries, at(250))),
        (at(300), "2.50", last_by(&alice_entries, at(300))),
        (at(10_000), "2.50", last_by(&alice_entries, at(300))),
    ];
    for (t, amount, position) in cases {
        assert_eq!(
            balance_as_of(&store, alice, Some(t)).await,
            expect(alice, Currency::USD, amount, position),
            "alice's balance as of {t}"
        );
    }
    assert!(
        last_by(&alice_entries, at(100)) < last_by(&alice_entries, at(250))
            && last_by(&alice_entries, at(250)) < last_by(&alice_entries, at(300)),
        "each later time counts a later entry: {alice_entries:?}"
    );
    assert_eq!(
        balance_as_of(&store, alice, None).await,
        expect(
            alice,
            Currency::USD,
            "2.50",
            last_by(&alice_entries, at(300))
        ),
        "without a time, every entry counts"
    );

    let bob_entries = entries_of(&store, bob).await;
    assert_eq!(
        balance_as_of(&store, bob, Some(at(299))).await,
        expect(bob, Currency::USD, "0.00", None),
        "bob's only entry is later: no balance yet, his currency known"
    );
    assert_eq!(
        balance_as_of(&store, bob, Some(at(300))).await,
        expect(bob, Currency::USD, "0.50", last_by(&bob_entries, at(300))),
    );
    let carol_entries = entries_of(&store, carol).await;
    assert_eq!(
        balance_as_of(&store, carol, Some(at(300))).await,
        expect(
            carol,
            Currency::EUR,
            "7.00",
            last_by(&carol_entries, at(300))
        ),
        "another currency's account holds its own entries only"
    );
    let usd_entries = entries_of(&store, usd).await;
    assert_eq!(
        balance_as_of(&store, usd, Some(at(250))).await,
        expect(usd, Currency::USD, "-3.00", last_by(&usd_entries, at(250))),
        "the USD system account went negative by the USD deposits only"
    );
    let eur_entries = entries_of(&store, eur).await;
    assert_eq!(
        balance_as_of(&store, eur, None).await,
        expect(eur, Currency::EUR, "-7.00", last_by(&eur_entries, at(150))),
    );
    assert_eq!(
        balance_as_of(&store, data.wallet_id(), Some(at(300))).await,
        None,
        "an account without entries has no balance in the ledger"
    );
    assert_eq!(balance_as_of(&store, data.wallet_id(), None).await, None);
}

/// The outbox's claims return the oldest records first, up to the limit;
/// here the records are `LedgerSucceeded` events of deposits.
pub async fn outbox_claims_oldest_first_up_to_limit<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    outbox::claims_oldest_first_up_to_limit(fixture, &LedgerFeed).await;
}

/// Records under another worker's live lease are not claimed.
pub async fn outbox_leases_keep_records_from_other_workers<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    outbox::leases_keep_records_from_other_workers(fixture, &LedgerFeed).await;
}

/// Acknowledged records are never claimed again; acknowledging twice, or
/// an unknown seq, is ignored.
pub async fn outbox_acknowledged_records_never_return<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    outbox::acknowledged_records_never_return(fixture, &LedgerFeed).await;
}

/// Unacknowledged records whose lease ended go to the next worker.
pub async fn outbox_records_return_when_the_lease_ends<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    outbox::records_return_when_the_lease_ends(fixture, &LedgerFeed).await;
}

/// A worker claiming again gets its own unacknowledged records again, and
/// its lease moves to the new claim's end.
pub async fn outbox_a_worker_reclaims_its_own_records<F>(fixture: &F)
where
    F: Fixture,
    F::Store: LedgerStore + LedgerReads + Outbox,
{
    outbox::a_worker_reclaims_its_own_records(fixture, &LedgerFeed).await;
}
