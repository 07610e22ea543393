//! Hot wallets on real connections: 1,000 transfers among 4 wallets, in both
//! directions, 32 at a time, each reserved by the wallet store, posted by
//! the ledger store and finalized by the wallet store. No deadlock or other
//! error reaches the caller; transient failures are retried as a service
//! would retry them, and counted; money is conserved.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ledger_store, wallet_store};
use tokio::sync::Semaphore;
use wallet_core::contract::data::{TestData, retrying, wallet_now};
use wallet_core::ids::WalletId;
use wallet_core::ledger::AccountBalance;
use wallet_core::money::{Balance, Currency};
use wallet_core::outcome::ReserveOutcome;
use wallet_core::ports::{LedgerReads, LedgerStore, StoreError, WalletReads, WalletStore};
use wallet_core::wallet::ReserveRequest;
use wallet_core_postgres::{PgLedgerStore, PgWalletStore};

const TRANSFERS: u64 = 1_000;
const CONCURRENCY: usize = 32;
const WALLETS: usize = 4;

/// Transient failures that were retried, by operation.
#[derive(Default)]
struct Retries {
    count: AtomicU64,
}

impl Retries {
    /// Runs `op` until it does not fail transiently; counts the retries. A
    /// deadlock would arrive here as `Unavailable` too: the assertion below
    /// that there were none of those is separate.
    async fn run<T, Fut>(&self, mut op: impl FnMut() -> Fut) -> T
    where
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        loop {
            match op().await {
                Ok(value) => return value,
                Err(StoreError::Unavailable(why)) => {
                    assert!(
                        !why.contains("40P01"),
                        "a deadlock reached the caller: {why}"
                    );
                    self.count.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(error) => panic!("a transfer failed: {error}"),
            }
        }
    }
}

/// Reserve, post, finalize: the saga of one transfer through the two stores.
async fn transfer(
    wallets: &PgWalletStore,
    ledger: &PgLedgerStore,
    data: &TestData,
    request: &ReserveRequest,
    retries: &Retries,
) -> ReserveOutcome {
    let outcome = retries.run(|| wallets.reserve(request, data.stamp())).await;
    if outcome != ReserveOutcome::Reserved {
        return outcome;
    }
    let event = [data.wallet_reserved(request)];
    retries.run(|| ledger.post(&event)).await;
    let decided = retries
        .run(|| ledger.outcome(request.transfer_id))
        .await
        .expect("the ledger decided the transfer");
    let outcome_event = [data.ledger_outcome(request, decided)];
    let refused = retries
        .run(|| wallets.finalize(&outcome_event, data.now()))
        .await;
    assert!(refused.is_empty(), "finalize refused: {refused:?}");
    outcome
}

/// A small deterministic generator, so every run makes the same transfers.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_transfers_among_four_hot_wallets() {
    let wallets = Arc::new(wallet_store().await);
    let ledger = Arc::new(ledger_store().await);
    let data = Arc::new(TestData::new());
    let retries = Arc::new(Retries::default());
    let system = WalletId::system(Currency::USD);
    let mut ids = Vec::new();
    for _ in 0..WALLETS {
        let wallet = data.wallet(Currency::USD);
        wallets.open_wallet(&wallet).await.unwrap();
        let request = data.reserve_request(system, wallet.id, "100.00", Currency::USD);
        let outcome = transfer(&wallets, &ledger, &data, &request, &retries).await;
        assert_eq!(outcome, ReserveOutcome::Reserved);
        ids.push(wallet.id);
    }
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let (reserved, rejected) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut random = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..TRANSFERS {
        let from = (next(&mut random) % WALLETS as u64) as usize;
        let to = (from + 1 + (next(&mut random) % (WALLETS as u64 - 1)) as usize) % WALLETS;
        let cents = 100 + next(&mut random) % 2_900;
        let amount = format!("{}.{:02}", cents / 100, cents % 100);
        let request = data.reserve_request(ids[from], ids[to], &amount, Currency::USD);
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (wallets, ledger, data, retries) = (
            wallets.clone(),
            ledger.clone(),
            data.clone(),
            retries.clone(),
        );
        let (reserved, rejected) = (reserved.clone(), rejected.clone());
        tasks.push(tokio::spawn(async move {
            let outcome = transfer(&wallets, &ledger, &data, &request, &retries).await;
            match outcome {
                ReserveOutcome::Reserved => reserved.fetch_add(1, Ordering::Relaxed),
                ReserveOutcome::Rejected(_) => rejected.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("a transfer task panicked");
    }
    let elapsed = started.elapsed();
    let (reserved, rejected) = (
        reserved.load(Ordering::Relaxed),
        rejected.load(Ordering::Relaxed),
    );
    println!(
        "{{\"attempted\": {TRANSFERS}, \"reserved\": {reserved}, \"rejected\": {rejected}, \
         \"retried_unavailable\": {}, \"wall_ms\": {}, \"concurrency\": {CONCURRENCY}, \
         \"wallets\": {WALLETS}}}",
        retries.count.load(Ordering::Relaxed),
        elapsed.as_millis()
    );
    assert_eq!(reserved + rejected, TRANSFERS);
    assert!(
        reserved > TRANSFERS / 2,
        "most transfers should find funds: {reserved}"
    );

    // Conservation: the ledger sums to zero, the system account is minus the
    // deposits, and every wallet equals its ledger balance with nothing held.
    let balances: HashMap<WalletId, AccountBalance> = retrying(|| ledger.balances_page(None, 100))
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.account, b))
        .collect();
    let total: Balance = balances.values().map(|b| b.balance).sum();
    assert_eq!(
        total.value(),
        rust_decimal::Decimal::ZERO,
        "the ledger is unbalanced"
    );
    assert_eq!(balances[&system].balance.value().to_string(), "-400.00");
    let mut wallet_total = rust_decimal::Decimal::ZERO;
    for id in &ids {
        let wallet = wallet_now(&*wallets, *id).await;
        assert_eq!(
            wallet.reserved.value(),
            rust_decimal::Decimal::ZERO,
            "{id}: funds still held"
        );
        assert_eq!(
            wallet.available, balances[id].balance,
            "{id}: wallet and ledger disagree"
        );
        wallet_total += wallet.available.value();
    }
    assert_eq!(wallet_total.to_string(), "400.00");
    let holds = wallets.reservations_page(None, 2_000).await.unwrap();
    assert_eq!(holds.len() as u64, TRANSFERS + WALLETS as u64);
}
