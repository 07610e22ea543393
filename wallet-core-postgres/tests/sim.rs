//! The simulator on the PostgreSQL stores: a handful of seeds, each on three
//! fresh databases, with faults, checked as on the in-memory stores.
//!
//! The simulator runs every step on its own thread and polls each future
//! with a no-op waker a few times: it expects the ports to answer without
//! waiting (the in-memory ones do). A database call waits on I/O, so here
//! each port call blocks the simulator's thread on a tokio runtime until the
//! database has answered, and then answers at once. Every unit of work
//! still runs for real, in its own transaction; the simulator's faults (lost
//! answers, failed units, crashes at await points, slow calls) are injected
//! by its own wrappers around these stores, as on the in-memory ones. What
//! this cannot show is a process dying inside a database transaction: the
//! database rolls that back, which no simulator step can observe anyway.

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::runtime::Runtime;
use wallet_core::event::{EventStamp, Inbound, StampedReserve};
use wallet_core::idempotency::Fingerprint;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::ledger::{AccountBalance, Entry, PostingRequest};
use wallet_core::memory::{MemoryBus, MemorySubscription};
use wallet_core::outcome::{LedgerOutcome, ReserveOutcome};
use wallet_core::ports::{
    Applied, Begin, Claim, EntryCursor, LedgerReads, LedgerStore, Outbox, OutboxRecord, Refusal,
    ReserveAttempt, StoreError, TransferReads, TransferStore, WalletReads, WalletStore,
};
use wallet_core::time::Timestamp;
use wallet_core::transfer::{HoldEnd, RefundRejection, Transfer};
use wallet_core::wallet::{HoldRelease, HoldState, Reservation, Wallet};
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{PgLedgerStore, PgSettings, PgTransferStore, PgWalletStore};
use wallet_sim::{Adapters, MemoryAdapters, RequestKind, SimConfig, Transition};

/// A store whose every call has finished when it is first polled.
#[derive(Clone)]
struct Blocking<S> {
    store: S,
    runtime: Arc<Runtime>,
}

impl<S> Blocking<S> {
    fn wait<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(call)
    }
}

#[async_trait]
impl<S: Outbox> Outbox for Blocking<S> {
    async fn claim(&self, claim: &Claim, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.wait(self.store.claim(claim, limit))
    }
    async fn acknowledge(&self, seqs: &[u64]) -> Result<(), StoreError> {
        self.wait(self.store.acknowledge(seqs))
    }
}

#[async_trait]
impl<S: TransferStore> TransferStore for Blocking<S> {
    async fn begin_batch(
        &self,
        batch: &[(Transfer, Fingerprint)],
    ) -> Result<Vec<Begin>, StoreError> {
        self.wait(self.store.begin_batch(batch))
    }
    async fn record_reserves(
        &self,
        attempts: &[(TransferId, ReserveAttempt)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError> {
        self.wait(self.store.record_reserves(attempts, now))
    }
    async fn apply_ledger_outcomes(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Applied, StoreError> {
        self.wait(self.store.apply_ledger_outcomes(batch, now))
    }
    async fn claim_initiated(
        &self,
        claim: &Claim,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        self.wait(self.store.claim_initiated(claim, created_before, limit))
    }
    async fn begin_refund(
        &self,
        refund: &Transfer,
        fingerprint: &Fingerprint,
    ) -> Result<Result<Begin, RefundRejection>, StoreError> {
        self.wait(self.store.begin_refund(refund, fingerprint))
    }
    async fn record_hold_ends(
        &self,
        ends: &[(TransferId, HoldEnd)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError> {
        self.wait(self.store.record_hold_ends(ends, now))
    }
    async fn claim_expired_holds(
        &self,
        claim: &Claim,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        self.wait(self.store.claim_expired_holds(claim, limit))
    }
}

#[async_trait]
impl<S: TransferReads> TransferReads for Blocking<S> {
    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        self.wait(self.store.transfer(id))
    }
    async fn transfers_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        self.wait(self.store.transfers_page(after, limit))
    }
}

#[async_trait]
impl<S: WalletStore> WalletStore for Blocking<S> {
    async fn open_wallet(&self, wallet: &Wallet) -> Result<(), StoreError> {
        self.wait(self.store.open_wallet(wallet))
    }
    async fn reserve_batch(
        &self,
        batch: &[StampedReserve],
    ) -> Result<Vec<ReserveOutcome>, StoreError> {
        self.wait(self.store.reserve_batch(batch))
    }
    async fn finalize(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<Refusal>, StoreError> {
        self.wait(self.store.finalize(batch, now))
    }
    async fn release_holds(
        &self,
        batch: &[(TransferId, HoldRelease)],
        now: Timestamp,
    ) -> Result<Vec<Option<HoldState>>, StoreError> {
        self.wait(self.store.release_holds(batch, now))
    }
}

#[async_trait]
impl<S: WalletReads> WalletReads for Blocking<S> {
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError> {
        self.wait(self.store.wallet(id))
    }
    async fn wallets_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<Wallet>, StoreError> {
        self.wait(self.store.wallets_page(after, limit))
    }
    async fn reservations_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Reservation>, StoreError> {
        self.wait(self.store.reservations_page(after, limit))
    }
}

#[async_trait]
impl<S: LedgerStore> LedgerStore for Blocking<S> {
    async fn post(
        &self,
        batch: &[(Inbound<PostingRequest>, EventStamp)],
    ) -> Result<usize, StoreError> {
        self.wait(self.store.post(batch))
    }
}

#[async_trait]
impl<S: LedgerReads> LedgerReads for Blocking<S> {
    async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.wait(self.store.entries(account, before, limit))
    }
    async fn postings_page(
        &self,
        after: Option<EntryCursor>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.wait(self.store.postings_page(after, limit))
    }
    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError> {
        self.wait(self.store.outcome(transfer))
    }
    async fn outcomes_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<(TransferId, LedgerOutcome)>, StoreError> {
        self.wait(self.store.outcomes_page(after, limit))
    }
    async fn balances_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        self.wait(self.store.balances_page(after, limit))
    }
}

/// The three PostgreSQL stores, each on a fresh database, and the in-memory
/// bus.
struct PgAdapters {
    runtime: Arc<Runtime>,
    /// The databases made, to drop once a run is over.
    databases: Arc<Mutex<Vec<TestDatabase>>>,
}

impl PgAdapters {
    fn new() -> PgAdapters {
        PgAdapters {
            runtime: Arc::new(Runtime::new().expect("a tokio runtime")),
            databases: Arc::default(),
        }
    }

    /// Drops the databases the run made: a long range of seeds would
    /// otherwise leave three per seed behind.
    fn drop_databases(
        runtime: &Runtime,
        databases: &Mutex<Vec<TestDatabase>>,
    ) -> Result<(), sqlx::Error> {
        let made = std::mem::take(&mut *databases.lock().expect("databases lock"));
        for db in made {
            runtime.block_on(db.drop_now())?;
        }
        Ok(())
    }

    fn settings() -> PgSettings {
        // The simulator steps one call at a time; nothing here needs a
        // wake, since its relays are stepped, not woken.
        PgSettings {
            max_connections: 2,
            announce_outbox: false,
            announce_transfers: false,
            ..PgSettings::default()
        }
    }

    fn blocking<S>(&self, store: S) -> Blocking<S> {
        Blocking {
            store,
            runtime: self.runtime.clone(),
        }
    }

    fn pool(&self, kind: common::Schema) -> sqlx::PgPool {
        let (db, pool) = self.runtime.block_on(common::pool_of(kind));
        self.databases.lock().expect("databases lock").push(db);
        pool
    }
}

impl Adapters for PgAdapters {
    type Transfers = Blocking<PgTransferStore>;
    type Wallets = Blocking<PgWalletStore>;
    type Ledger = Blocking<PgLedgerStore>;
    type Bus = MemoryBus;
    type Subscription = MemorySubscription;

    fn transfer_store(&self) -> Self::Transfers {
        let pool = self.pool(common::Schema::Transaction);
        self.blocking(PgTransferStore::new(pool, &Self::settings()))
    }

    fn wallet_store(&self) -> Self::Wallets {
        let pool = self.pool(common::Schema::Wallet);
        self.blocking(PgWalletStore::new(pool, &Self::settings()))
    }

    fn ledger_store(&self) -> Self::Ledger {
        let pool = self.pool(common::Schema::Ledger);
        self.blocking(PgLedgerStore::new(pool, &Self::settings()))
    }

    fn bus(&self, partitions: u32) -> MemoryBus {
        MemoryAdapters.bus(partitions)
    }

    fn subscribe(&self, bus: &MemoryBus, group: &str, topic: &str) -> MemorySubscription {
        MemoryAdapters.subscribe(bus, group, topic)
    }
}

/// Seeds 1 to 6, with faults, each clean, run side by side (each on its
/// own databases). Each run takes the same steps as on the in-memory stores:
/// the adapters answer alike, call for call.
#[test]
fn the_simulator_runs_clean_on_postgres() {
    std::thread::scope(|scope| {
        let runs: Vec<_> = (1..=6)
            .map(|seed| {
                scope.spawn(move || {
                    // Enough requests that captures, expiries and refunds
                    // happen among six seeds, whatever the random stream.
                    let config = SimConfig {
                        transfers: 100,
                        ..SimConfig::new(seed)
                    };
                    let started = std::time::Instant::now();
                    let report = wallet_sim::run_on(PgAdapters::new(), &config);
                    println!(
                        "seed {seed}: {} steps in {:?}",
                        report.steps,
                        started.elapsed()
                    );
                    (seed, report, wallet_sim::run(&config))
                })
            })
            .collect();
        let mut kinds = std::collections::BTreeSet::new();
        let mut reached = std::collections::BTreeSet::new();
        for run in runs {
            let (seed, report, memory) = run.join().expect("a simulation thread panicked");
            assert!(report.result().is_ok(), "seed {seed}: {:?}", report.failure);
            assert_eq!(
                report, memory,
                "seed {seed}: PostgreSQL and memory runs differ"
            );
            kinds.extend(report.requests.keys().map(|(kind, _)| *kind));
            reached.extend(report.coverage.keys().copied());
        }
        // The holds and refunds API ran on the PostgreSQL stores too.
        for kind in [
            RequestKind::Hold,
            RequestKind::Capture,
            RequestKind::Void,
            RequestKind::Refund,
            RequestKind::RefundInvalid,
        ] {
            assert!(kinds.contains(&kind), "no {kind} request was sent");
        }
        for transition in [
            Transition::HoldHeld,
            Transition::HoldCaptured,
            Transition::HoldExpired,
            Transition::ReservationConverted,
            Transition::RefundSucceeded,
        ] {
            assert!(reached.contains(&transition), "never reached {transition}");
        }
    });
}

/// The seeds `WALLET_SIM_PG_SEEDS` names (`FROM..TO`, default `0..100`).
fn seed_range() -> std::ops::Range<u64> {
    let text = std::env::var("WALLET_SIM_PG_SEEDS").unwrap_or_else(|_| "0..100".to_owned());
    let (from, to) = text
        .split_once("..")
        .unwrap_or_else(|| panic!("WALLET_SIM_PG_SEEDS={text} is not FROM..TO"));
    let bound = |s: &str| {
        s.trim()
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("WALLET_SIM_PG_SEEDS={text}: {e}"))
    };
    bound(from)..bound(to)
}

/// A long range of seeds on PostgreSQL (`WALLET_SIM_PG_SEEDS`, default
/// `0..100`; `WALLET_SIM_PG_JOBS` runs at once, default 2), each on three
/// fresh databases dropped after it, each clean and step for step the run
/// of the in-memory stores. Off by default: run it with `--ignored`.
#[test]
#[ignore = "long: run with --ignored, seeds from WALLET_SIM_PG_SEEDS"]
fn a_range_of_seeds_runs_clean_on_postgres() {
    let seeds = seed_range();
    let jobs: u64 = std::env::var("WALLET_SIM_PG_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .unwrap_or(2)
        .max(1);
    let started = std::time::Instant::now();
    let results: Vec<(u64, u64, Option<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|job| {
                let seeds = seeds.clone().filter(move |seed| seed % jobs == job);
                scope.spawn(move || {
                    seeds
                        .map(|seed| {
                            let config = SimConfig {
                                transfers: 60,
                                ..SimConfig::new(seed)
                            };
                            let adapters = PgAdapters::new();
                            let (runtime, databases) =
                                (adapters.runtime.clone(), adapters.databases.clone());
                            let report = wallet_sim::run_on(adapters, &config);
                            PgAdapters::drop_databases(&runtime, &databases)
                                .expect("dropping a run's databases");
                            let memory = wallet_sim::run(&config);
                            println!(
                                "seed {seed}: {} steps, {}",
                                report.steps,
                                if report.failure.is_some() {
                                    "failed"
                                } else {
                                    "passed"
                                }
                            );
                            let problem = match (&report.failure, report == memory) {
                                (Some(failure), _) => Some(failure.to_string()),
                                (None, false) => {
                                    Some("PostgreSQL and memory runs differ".to_owned())
                                }
                                (None, true) => None,
                            };
                            (seed, report.steps, problem)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a simulation thread panicked"))
            .collect()
    });
    let steps: u64 = results.iter().map(|(_, steps, _)| steps).sum();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(seed, _, problem)| problem.as_ref().map(|p| format!("seed {seed}: {p}")))
        .collect();
    println!(
        "seeds {seeds:?} on PostgreSQL: {} runs, {} passed, {steps} steps, {:?}",
        results.len(),
        results.len() - failed.len(),
        started.elapsed()
    );
    assert_eq!(results.len() as u64, seeds.end.saturating_sub(seeds.start));
    assert!(failed.is_empty(), "{failed:#?}");
}
