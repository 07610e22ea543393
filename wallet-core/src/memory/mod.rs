//! In-memory adapters of every port, and the whole system assembled on them.
//!
//! These are real implementations, not test doubles: the embedded mode
//! (`walletctl dev`), the examples and the simulator run on them. They keep
//! nothing across restarts of the process.

mod bus;
mod stores;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use bus::{DEFAULT_PARTITIONS, MemoryBus, MemorySubscription};
pub use stores::{MemoryLedgerStore, MemoryTransferStore, MemoryWalletStore};

use crate::audit::{Audit, AuditReport, Scope};
use crate::event::{LEDGER_EVENTS, WALLET_EVENTS};
use crate::ids::{IdGenerator, RandomIds};
use crate::ports::Outbox;
use crate::runtime::{ConsumerConfig, ConsumerRunner, Relay, RelayConfig, Route};
use crate::service::{LedgerService, TransactionConfig, TransactionService, WalletService};
use crate::time::{Clock, SystemClock};

pub use crate::event::groups;

/// The wallet service on memory.
pub type MemoryWalletService = WalletService<MemoryWalletStore>;
/// The ledger service on memory.
pub type MemoryLedgerService = LedgerService<MemoryLedgerStore>;
/// The transaction service on memory, calling the wallet service in-process.
pub type MemoryTransactionService =
    TransactionService<MemoryTransferStore, Arc<MemoryWalletService>>;

type Consumer<H> = ConsumerRunner<MemorySubscription, Arc<H>, MemoryBus>;

/// Settings of the embedded system.
#[derive(Clone)]
pub struct EmbeddedConfig {
    /// The clock every service reads.
    pub clock: Arc<dyn Clock>,
    /// Where ids come from.
    pub ids: Arc<dyn IdGenerator>,
    /// The transaction service's limits.
    pub transaction: TransactionConfig,
    /// The relays' limits.
    pub relay: RelayConfig,
    /// The consumers' limits.
    pub consumer: ConsumerConfig,
    /// How often the retrier and the sweeper of expired holds run when
    /// spawned. Default 500 ms.
    pub retry_every: Duration,
    /// Partitions per topic.
    pub partitions: u32,
    /// Keep every event on the bus after all groups consumed it, for tests
    /// that inspect or re-publish them. Default `false`: consumed events are
    /// dropped, so a long-running process stays bounded.
    pub keep_consumed_events: bool,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds),
            transaction: TransactionConfig::default(),
            relay: RelayConfig::default(),
            consumer: ConsumerConfig::default(),
            retry_every: Duration::from_millis(500),
            partitions: DEFAULT_PARTITIONS,
            keep_consumed_events: false,
        }
    }
}

/// The three services with their relays and consumers, on the in-memory
/// adapters, in one process.
///
/// Drive it step by step with [`Embedded::pump`] and [`Embedded::drain`]
/// (tests, examples, benchmarks), or hand its loops to tokio with
/// [`Embedded::spawn`] (the dev server).
pub struct Embedded {
    /// The transaction service.
    pub transactions: Arc<MemoryTransactionService>,
    /// The wallet service.
    pub wallets: Arc<MemoryWalletService>,
    /// The ledger service.
    pub ledger: Arc<MemoryLedgerService>,
    /// The bus between them.
    pub bus: MemoryBus,
    wallet_relay: Relay<MemoryWalletStore, MemoryBus>,
    ledger_relay: Relay<MemoryLedgerStore, MemoryBus>,
    transaction_relay: Relay<MemoryTransferStore, MemoryBus>,
    ledger_consumer: Consumer<MemoryLedgerService>,
    wallet_consumer: Consumer<MemoryWalletService>,
    transaction_consumer: Consumer<MemoryTransactionService>,
    retry_every: Duration,
}

impl Embedded {
    /// Builds the system, empty.
    pub fn new(config: EmbeddedConfig) -> Embedded {
        let bus = match config.keep_consumed_events {
            true => MemoryBus::new(config.partitions),
            false => MemoryBus::new(config.partitions).dropping_consumed(),
        };
        let (clock, ids) = (config.clock.clone(), config.ids.clone());
        let wallet_woken = Arc::new(Notify::new());
        let ledger_woken = Arc::new(Notify::new());
        let wallets = Arc::new(WalletService::new(
            MemoryWalletStore::new(),
            clock.clone(),
            ids.clone(),
            wallet_woken.clone(),
        ));
        let ledger = Arc::new(LedgerService::new(
            MemoryLedgerStore::new(),
            clock.clone(),
            ids.clone(),
            ledger_woken.clone(),
        ));
        let transactions = Arc::new(TransactionService::new(
            MemoryTransferStore::new(),
            wallets.clone(),
            clock,
            ids,
            config.transaction.clone(),
        ));
        let consumer = |group: &str, topic: &str| bus.subscribe(group, topic);
        let wallet_relay = relay(
            &config,
            &bus,
            wallets.store().clone(),
            Route::new(Some(WALLET_EVENTS), groups::WALLET),
            wallet_woken,
        );
        let ledger_relay = relay(
            &config,
            &bus,
            ledger.store().clone(),
            Route::new(Some(LEDGER_EVENTS), groups::LEDGER),
            ledger_woken,
        );
        // The transaction store's outbox holds only dead letters, which are
        // rare: its relay is not woken, it polls.
        let transaction_relay = relay(
            &config,
            &bus,
            transactions.store().clone(),
            Route::new(None, groups::TRANSACTION),
            Arc::new(Notify::new()),
        );
        Embedded {
            wallet_relay,
            ledger_relay,
            transaction_relay,
            ledger_consumer: ConsumerRunner::new(
                consumer(groups::LEDGER, WALLET_EVENTS),
                ledger.clone(),
                bus.clone(),
                groups::LEDGER,
                config.consumer.clone(),
            ),
            wallet_consumer: ConsumerRunner::new(
                consumer(groups::WALLET, LEDGER_EVENTS),
                wallets.clone(),
                bus.clone(),
                groups::WALLET,
                config.consumer.clone(),
            ),
            transaction_consumer: ConsumerRunner::new(
                consumer(groups::TRANSACTION, LEDGER_EVENTS),
                transactions.clone(),
                bus.clone(),
                groups::TRANSACTION,
                config.consumer.clone(),
            ),
            transactions,
            wallets,
            ledger,
            bus,
            retry_every: config.retry_every,
        }
    }

    /// One pass of every relay and consumer, without waiting; returns how
    /// many events moved. Errors of the in-memory adapters cannot happen.
    pub async fn pump(&mut self) -> usize {
        let mut moved = self.wallet_relay.run_once().await.expect("memory relay");
        moved += self
            .ledger_consumer
            .run_once(Duration::ZERO)
            .await
            .expect("memory consumer")
            .delivered;
        moved += self.ledger_relay.run_once().await.expect("memory relay");
        moved += self
            .wallet_consumer
            .run_once(Duration::ZERO)
            .await
            .expect("memory consumer")
            .delivered;
        moved += self
            .transaction_consumer
            .run_once(Duration::ZERO)
            .await
            .expect("memory consumer")
            .delivered;
        moved += self
            .transaction_relay
            .run_once()
            .await
            .expect("memory relay");
        moved
    }

    /// Pumps until no event moves: every saga whose reserve was answered is
    /// then complete.
    pub async fn drain(&mut self) {
        while self.pump().await > 0 {}
    }

    /// Audits the three services' stores.
    pub async fn audit(&self, scope: Scope) -> AuditReport {
        Audit::new(scope)
            .run(
                self.transactions.store(),
                self.wallets.store(),
                self.ledger.store(),
            )
            .await
            .expect("memory stores do not fail")
    }

    /// Runs every relay, consumer, the retrier and the sweeper of expired
    /// holds as tokio tasks. Dropping
    /// or aborting the returned handles stops them.
    pub fn spawn(self) -> Running {
        let transactions = self.transactions.clone();
        let retry_every = self.retry_every;
        let retrier = async move {
            loop {
                tokio::time::sleep(retry_every).await;
                if let Err(error) = transactions.retry_pending().await {
                    tracing::error!(%error, "retrier pass failed");
                }
                if let Err(error) = transactions.sweep_expired().await {
                    tracing::error!(%error, "sweeper pass failed");
                }
            }
        };
        // An integrity failure stops a consumer; the runner logged it, and
        // the process keeps serving for an operator to look.
        let (ledger, wallet, transaction) = (
            self.ledger_consumer,
            self.wallet_consumer,
            self.transaction_consumer,
        );
        let tasks = vec![
            tokio::spawn(self.wallet_relay.run()),
            tokio::spawn(self.ledger_relay.run()),
            tokio::spawn(self.transaction_relay.run()),
            tokio::spawn(async move { drop(ledger.run().await) }),
            tokio::spawn(async move { drop(wallet.run().await) }),
            tokio::spawn(async move { drop(transaction.run().await) }),
            tokio::spawn(retrier),
        ];
        Running {
            transactions: self.transactions,
            wallets: self.wallets,
            ledger: self.ledger,
            bus: self.bus,
            tasks,
        }
    }
}

/// A relay of `outbox` on the bus, as a worker of its own.
fn relay<O: Outbox>(
    config: &EmbeddedConfig,
    bus: &MemoryBus,
    outbox: O,
    route: Route,
    wake: Arc<Notify>,
) -> Relay<O, MemoryBus> {
    let worker = config.ids.worker_id();
    let clock = config.clock.clone();
    Relay::new(
        outbox,
        bus.clone(),
        route,
        clock,
        worker,
        wake,
        config.relay.clone(),
    )
}

/// The embedded system with its loops running.
pub struct Running {
    /// The transaction service.
    pub transactions: Arc<MemoryTransactionService>,
    /// The wallet service.
    pub wallets: Arc<MemoryWalletService>,
    /// The ledger service.
    pub ledger: Arc<MemoryLedgerService>,
    /// The bus between them.
    pub bus: MemoryBus,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
