//! Two batches applied at once whose rows share keys, one batch in the
//! reverse order of the other: each store inserts a batch's inbox rows, and
//! the ledger its outcomes and first-seen accounts, in key order. One unit
//! then waits for the other instead of both waiting for each other, so no
//! round ends in a deadlock (SQLSTATE 40P01).
//!
//! Each scenario runs [`ROUNDS`] rounds of two batches of [`BATCH`] rows,
//! started together. With the rows inserted in batch order, 5 to 13 of the
//! 20 rounds of each scenario ended in a deadlock on a 2-core machine.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use common::{ledger_store, transfer_store, wallet_store};
use tokio::sync::Barrier;
use wallet_core::contract::data::TestData;
use wallet_core::event::{EventStamp, Inbound};
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::ledger::PostingRequest;
use wallet_core::money::Currency;
use wallet_core::outcome::LedgerOutcome;
use wallet_core::ports::{LedgerStore, StoreError, TransferStore, WalletStore};
use wallet_core::wallet::ReserveRequest;
use wallet_core_postgres::PgLedgerStore;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Rounds per scenario.
const ROUNDS: usize = 20;
/// Rows per batch.
const BATCH: usize = 1000;

/// Applies two batches at the same moment, each in its own task.
async fn at_once<T, F, Fut>(first: Vec<T>, second: Vec<T>, apply: F) -> Vec<Result<(), StoreError>>
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(2));
    let tasks: Vec<_> = [first, second]
        .into_iter()
        .map(|batch| {
            let (apply, barrier) = (apply.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                apply(batch).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("a batch task panicked"));
    }
    results
}

/// Runs [`ROUNDS`] rounds of two batches at once, each round's pair from
/// `batches`; returns how many units failed with a deadlock. Other
/// transient failures (a unit finding that the other decided first) are
/// expected; an integrity failure is a bug.
async fn deadlocks<T, F, Fut>(mut batches: impl FnMut() -> (Vec<T>, Vec<T>), apply: F) -> usize
where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let mut deadlocked = 0;
    for _ in 0..ROUNDS {
        let (first, second) = batches();
        for result in at_once(first, second, apply.clone()).await {
            match result {
                Ok(()) => {}
                Err(StoreError::Unavailable(why)) if why.contains("40P01") => deadlocked += 1,
                Err(StoreError::Unavailable(_)) => {}
                Err(error) => panic!("a batch failed: {error}"),
            }
        }
    }
    deadlocked
}

/// `batch` and the same items in reverse.
fn both_ways<T: Clone>(batch: Vec<T>) -> (Vec<T>, Vec<T>) {
    let reversed = batch.iter().rev().cloned().collect();
    (batch, reversed)
}

/// Deposits of 1.00 USD into fresh wallets, one each.
fn deposits(data: &TestData, count: usize) -> Vec<ReserveRequest> {
    (0..count)
        .map(|_| {
            let wallet = data.wallet_id();
            data.reserve_request(
                WalletId::system(Currency::USD),
                wallet,
                "1.00",
                Currency::USD,
            )
        })
        .collect()
}

/// `LedgerSucceeded` events for transfers the store does not know: each
/// refused, and dead-lettered in the unit that records it in the inbox.
fn unknown_outcomes(data: &TestData) -> Vec<Inbound<LedgerOutcome>> {
    deposits(data, BATCH)
        .iter()
        .map(|request| data.ledger_outcome(request, LedgerOutcome::Succeeded))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transfer_store_inserts_inbox_rows_in_event_order() {
    let store = transfer_store().await;
    let data = TestData::new();
    let now = data.now();
    let apply = move |batch: Vec<Inbound<LedgerOutcome>>| {
        let store = store.clone();
        async move { store.apply_ledger_outcomes(&batch, now).await.map(drop) }
    };
    let deadlocked = deadlocks(|| both_ways(unknown_outcomes(&data)), apply).await;
    assert_eq!(deadlocked, 0, "units that deadlocked in {ROUNDS} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_store_inserts_inbox_rows_in_event_order() {
    let store = wallet_store().await;
    let data = TestData::new();
    let now = data.now();
    let apply = move |batch: Vec<Inbound<LedgerOutcome>>| {
        let store = store.clone();
        async move { store.finalize(&batch, now).await.map(drop) }
    };
    let deadlocked = deadlocks(|| both_ways(unknown_outcomes(&data)), apply).await;
    assert_eq!(deadlocked, 0, "units that deadlocked in {ROUNDS} rounds");
}

type Posting = (Inbound<PostingRequest>, EventStamp);

/// Posts a batch on `store`, as the ledger's consumer does.
fn post_on(
    store: PgLedgerStore,
) -> impl Fn(Vec<Posting>) -> BoxFuture<Result<(), StoreError>> + Clone + Send + 'static {
    move |batch| {
        let store = store.clone();
        Box::pin(async move { store.post(&batch).await.map(drop) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_inserts_inbox_rows_in_event_order() {
    let store = ledger_store().await;
    let data = TestData::new();
    // The same events in both batches, as two consumers would get them
    // after a rebalance.
    let batches = || {
        let events = deposits(&data, BATCH)
            .iter()
            .map(|request| data.wallet_reserved(request))
            .collect();
        both_ways(events)
    };
    let deadlocked = deadlocks(batches, post_on(store)).await;
    assert_eq!(deadlocked, 0, "units that deadlocked in {ROUNDS} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_inserts_new_accounts_in_account_order() {
    let store = ledger_store().await;
    let data = TestData::new();
    // Other events and other transfers, into the same new accounts.
    let batches = || {
        let first = deposits(&data, BATCH);
        let second: Vec<ReserveRequest> = first
            .iter()
            .rev()
            .map(|deposit| {
                let (system, wallet) = (deposit.sender_wallet_id, deposit.receiver_wallet_id);
                data.reserve_request(system, wallet, "1.00", Currency::USD)
            })
            .collect();
        let events = |requests: Vec<ReserveRequest>| {
            requests
                .iter()
                .map(|request| data.wallet_reserved(request))
                .collect::<Vec<_>>()
        };
        (events(first), events(second))
    };
    let deadlocked = deadlocks(batches, post_on(store)).await;
    assert_eq!(deadlocked, 0, "units that deadlocked in {ROUNDS} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_inserts_outcomes_in_transfer_order() {
    let store = ledger_store().await;
    let data = TestData::new();
    // The same transfers under other event ids, into one account that
    // exists already, so the outcomes are the keys both batches share.
    let wallet = data.wallet_id();
    let opening = data.reserve_request(
        WalletId::system(Currency::USD),
        wallet,
        "1.00",
        Currency::USD,
    );
    store.post(&[data.wallet_reserved(&opening)]).await.unwrap();
    let batches = || {
        let requests: Vec<ReserveRequest> = (0..BATCH)
            .map(|_| {
                data.reserve_request(
                    WalletId::system(Currency::USD),
                    wallet,
                    "1.00",
                    Currency::USD,
                )
            })
            .collect();
        let first = requests.iter().map(|r| data.wallet_reserved(r)).collect();
        let second = requests
            .iter()
            .rev()
            .map(|r| data.wallet_reserved(r))
            .collect();
        (first, second)
    };
    let deadlocked = deadlocks(batches, post_on(store)).await;
    assert_eq!(deadlocked, 0, "units that deadlocked in {ROUNDS} rounds");
}
