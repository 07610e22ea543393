//! The simulated system: the three services, two relays and three consumer
//! runners over the in-memory stores and bus, rebuilt piece by piece when a
//! service "restarts".

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use wallet_core::audit::Snapshot;
use wallet_core::event::{LEDGER_EVENTS, WALLET_EVENTS};
use wallet_core::memory::{
    MemoryBus, MemorySubscription, MemoryTransferStore, MemoryWalletStore, groups,
};
use wallet_core::ports::{
    Clock, IdGenerator, Outbox, Publisher, Subscription, TransferReads, WalletReads,
};
use wallet_core::runtime::{
    BatchReport, ConsumerConfig, ConsumerError, ConsumerRunner, EventHandler, Relay, RelayConfig,
    RelayError, Route,
};
use wallet_core::service::{LedgerService, TransactionConfig, TransactionService, WalletService};

use crate::clock::{SimClock, SimIds};
use crate::exec::run_now;
use crate::faults::{Flaky, SharedFaults, SimGateway, WalletSlot};
use crate::planted::SimLedger;

/// The wallet service as simulated.
pub(crate) type WalletSvc = WalletService<MemoryWalletStore>;
/// The transaction service as simulated.
pub(crate) type TxSvc = TransactionService<MemoryTransferStore, SimGateway>;
type Runner<H> = ConsumerRunner<MemorySubscription, Flaky<Arc<H>>, MemoryBus>;

/// One of the three consumer groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConsumerId {
    Ledger,
    Wallet,
    Transaction,
}

impl ConsumerId {
    pub const ALL: [ConsumerId; 3] = [
        ConsumerId::Ledger,
        ConsumerId::Wallet,
        ConsumerId::Transaction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ConsumerId::Ledger => "ledger",
            ConsumerId::Wallet => "wallet",
            ConsumerId::Transaction => "transaction",
        }
    }
}

/// One of the two outbox relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayId {
    Wallet,
    Ledger,
    Transaction,
}

impl RelayId {
    pub const ALL: [RelayId; 3] = [RelayId::Wallet, RelayId::Ledger, RelayId::Transaction];

    pub fn name(self) -> &'static str {
        match self {
            RelayId::Wallet => "wallet",
            RelayId::Ledger => "ledger",
            RelayId::Transaction => "transaction",
        }
    }
}

/// One of the three services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceId {
    Transaction,
    Wallet,
    Ledger,
}

/// How a consumer step ends after handling its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Store the offsets (the normal case).
    Commit,
    /// Crash before storing them: go back to the committed offsets.
    Rewind,
    /// Handle the batch a second time, then commit.
    HandleTwice,
}

/// Limits the simulated services run with.
pub(crate) struct Settings {
    pub transaction: TransactionConfig,
    pub relay: RelayConfig,
    pub consumer: ConsumerConfig,
    pub timeout_is_refusal: bool,
}

impl Settings {
    /// Small batches and caches so the interesting paths (several batches,
    /// a cache emptied when full, the idempotency lease running out) occur
    /// in short runs.
    pub fn new(max_batch: usize, timeout_is_refusal: bool) -> Settings {
        Settings {
            transaction: TransactionConfig {
                idempotency_lease: Duration::from_secs(10),
                retry_min_age: Duration::from_secs(1),
                retry_batch: 8,
                currency_cache: 16,
                ..TransactionConfig::default()
            },
            // Short leases, so work a dead relay held is taken over within
            // a few clock ticks of a run.
            relay: RelayConfig {
                batch_size: max_batch,
                lease: Duration::from_secs(2),
                ..RelayConfig::default()
            },
            // No retries inside the runner: a failing batch is rewound at once
            // instead of sleeping through a backoff, which needs wall time.
            consumer: ConsumerConfig {
                batch_size: max_batch,
                poll_wait: Duration::ZERO,
                max_retries: 0,
                ..ConsumerConfig::default()
            },
            timeout_is_refusal,
        }
    }
}

/// What survives a restart: the stores, the bus, time and ids.
struct Base<L> {
    clock: SimClock,
    ids: Arc<SimIds>,
    bus: MemoryBus,
    faults: SharedFaults,
    settings: Settings,
    transfer_store: MemoryTransferStore,
    wallet_store: MemoryWalletStore,
    ledger_store: L,
    wallet_slot: WalletSlot,
}

impl<L: SimLedger> Base<L> {
    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.clock.clone())
    }

    fn wallet_service(&self) -> Arc<WalletSvc> {
        let clock = self.clock();
        let store = self.wallet_store.clone();
        Arc::new(WalletService::new(
            store,
            clock,
            self.ids.clone(),
            Arc::default(),
        ))
    }

    fn ledger_service(&self) -> Arc<LedgerService<L>> {
        let clock = self.clock();
        let store = self.ledger_store.clone();
        Arc::new(LedgerService::new(
            store,
            clock,
            self.ids.clone(),
            Arc::default(),
        ))
    }

    fn transaction_service(&self) -> Arc<TxSvc> {
        let gateway = SimGateway {
            wallets: self.wallet_slot.clone(),
            faults: self.faults.clone(),
            timeout_is_refusal: self.settings.timeout_is_refusal,
        };
        let config = self.settings.transaction.clone();
        let store = self.transfer_store.clone();
        let service =
            TransactionService::new(store, gateway, self.clock(), self.ids.clone(), config);
        Arc::new(service)
    }

    fn relay<O: Outbox>(&self, outbox: O, route: Route) -> Relay<O, MemoryBus> {
        let wake = Arc::new(Notify::new());
        Relay::new(
            outbox,
            self.bus.clone(),
            route,
            self.clock(),
            self.ids.worker_id(),
            wake,
            self.settings.relay.clone(),
        )
    }

    /// A runner reading from the group's committed offsets, as a restarted
    /// consumer does.
    fn consumer<H: EventHandler>(&self, group: &str, topic: &str, handler: Arc<H>) -> Runner<H> {
        let handler = Flaky {
            inner: handler,
            faults: self.faults.clone(),
        };
        let subscription = self.bus.subscribe(group, topic);
        let config = self.settings.consumer.clone();
        ConsumerRunner::new(subscription, handler, self.bus.clone(), group, config)
    }
}

/// The whole simulated system.
pub(crate) struct World<L: SimLedger> {
    base: Base<L>,
    /// The transaction service now running.
    pub transactions: Arc<TxSvc>,
    /// The wallet service now running.
    pub wallets: Arc<WalletSvc>,
    wallet_relay: Relay<MemoryWalletStore, MemoryBus>,
    ledger_relay: Relay<L, MemoryBus>,
    transaction_relay: Relay<MemoryTransferStore, MemoryBus>,
    ledger_consumer: Runner<LedgerService<L>>,
    wallet_consumer: Runner<WalletSvc>,
    transaction_consumer: Runner<TxSvc>,
}

impl<L: SimLedger> World<L> {
    /// An empty system on `partitions` partitions per topic.
    pub fn new(clock: SimClock, partitions: u32, faults: SharedFaults, settings: Settings) -> Self {
        let ids = Arc::new(SimIds::new());
        let wallet_store = MemoryWalletStore::new();
        let wallets = Arc::new(WalletService::new(
            wallet_store.clone(),
            Arc::new(clock.clone()),
            ids.clone(),
            Arc::default(),
        ));
        let base = Base {
            clock,
            ids,
            bus: MemoryBus::new(partitions),
            faults,
            settings,
            transfer_store: MemoryTransferStore::new(),
            wallet_store,
            ledger_store: L::default(),
            wallet_slot: WalletSlot::new(wallets.clone()),
        };
        let ledger = base.ledger_service();
        let transactions = base.transaction_service();
        World {
            wallet_relay: base.relay(base.wallet_store.clone(), wallet_route()),
            ledger_relay: base.relay(base.ledger_store.clone(), ledger_route()),
            transaction_relay: base.relay(base.transfer_store.clone(), transaction_route()),
            ledger_consumer: base.consumer(groups::LEDGER, WALLET_EVENTS, ledger),
            wallet_consumer: base.consumer(groups::WALLET, LEDGER_EVENTS, wallets.clone()),
            transaction_consumer: base.consumer(
                groups::TRANSACTION,
                LEDGER_EVENTS,
                transactions.clone(),
            ),
            transactions,
            wallets,
            base,
        }
    }

    /// The virtual clock.
    pub fn clock(&self) -> &SimClock {
        &self.base.clock
    }

    /// The bus.
    pub fn bus(&self) -> &MemoryBus {
        &self.base.bus
    }

    /// Rebuilds a service over its store: caches, in-flight work, relay
    /// state and consumer positions not committed are lost.
    pub fn restart(&mut self, service: ServiceId) {
        let b = &self.base;
        match service {
            ServiceId::Transaction => {
                self.transactions = b.transaction_service();
                self.transaction_relay = b.relay(b.transfer_store.clone(), transaction_route());
                let handler = self.transactions.clone();
                self.transaction_consumer = b.consumer(groups::TRANSACTION, LEDGER_EVENTS, handler);
            }
            ServiceId::Wallet => {
                self.wallets = b.wallet_service();
                b.wallet_slot.replace(self.wallets.clone());
                self.wallet_relay = b.relay(b.wallet_store.clone(), wallet_route());
                let handler = self.wallets.clone();
                self.wallet_consumer = b.consumer(groups::WALLET, LEDGER_EVENTS, handler);
            }
            ServiceId::Ledger => {
                let ledger = b.ledger_service();
                self.ledger_relay = b.relay(b.ledger_store.clone(), ledger_route());
                self.ledger_consumer = b.consumer(groups::LEDGER, WALLET_EVENTS, ledger);
            }
        }
    }

    /// One consumer step with a batch of at most `max`, ended as `ending`
    /// says. `None`: the step did not finish without waiting.
    pub fn consume(
        &mut self,
        which: ConsumerId,
        max: usize,
        ending: Ending,
    ) -> Option<Result<BatchReport, ConsumerError>> {
        match which {
            ConsumerId::Ledger => run_now(consume(&mut self.ledger_consumer, max, ending)),
            ConsumerId::Wallet => run_now(consume(&mut self.wallet_consumer, max, ending)),
            ConsumerId::Transaction => {
                run_now(consume(&mut self.transaction_consumer, max, ending))
            }
        }
    }

    /// The runner's own step, `run_once` without waiting.
    pub fn consume_once(
        &mut self,
        which: ConsumerId,
    ) -> Option<Result<BatchReport, ConsumerError>> {
        match which {
            ConsumerId::Ledger => run_now(self.ledger_consumer.run_once(Duration::ZERO)),
            ConsumerId::Wallet => run_now(self.wallet_consumer.run_once(Duration::ZERO)),
            ConsumerId::Transaction => run_now(self.transaction_consumer.run_once(Duration::ZERO)),
        }
    }

    /// One relay pass. With `crash: Some(n)`, the relay dies after
    /// publishing the first `n` messages of its batch (as a producer may
    /// have sent part of one) and before marking any row sent.
    pub fn relay(&self, which: RelayId, crash: Option<usize>) -> Option<Result<usize, RelayError>> {
        let bus = &self.base.bus;
        match (which, crash) {
            (RelayId::Wallet, None) => run_now(self.wallet_relay.run_once()),
            (RelayId::Ledger, None) => run_now(self.ledger_relay.run_once()),
            (RelayId::Transaction, None) => run_now(self.transaction_relay.run_once()),
            (RelayId::Wallet, Some(n)) => run_now(publish_unacknowledged(
                &self.wallet_relay,
                wallet_route(),
                bus,
                n,
            )),
            (RelayId::Ledger, Some(n)) => run_now(publish_unacknowledged(
                &self.ledger_relay,
                ledger_route(),
                bus,
                n,
            )),
            (RelayId::Transaction, Some(n)) => run_now(publish_unacknowledged(
                &self.transaction_relay,
                transaction_route(),
                bus,
                n,
            )),
        }
    }

    /// The state of the three services' stores, read through their read
    /// ports.
    pub fn snapshot(&self) -> Snapshot {
        const ALL: usize = usize::MAX;
        let b = &self.base;
        let (wallets, reservations, transfers, entries, outcomes) = run_now(async {
            (
                b.wallet_store.wallets_page(None, ALL).await,
                b.wallet_store.reservations_page(None, ALL).await,
                b.transfer_store.transfers_page(None, ALL).await,
                b.ledger_store.postings_page(None, ALL).await,
                b.ledger_store.outcomes_page(None, ALL).await,
            )
        })
        .expect("memory stores answer at once");
        Snapshot {
            wallets: wallets.expect("memory stores do not fail"),
            reservations: reservations.expect("memory stores do not fail"),
            transfers: transfers.expect("memory stores do not fail"),
            entries: entries.expect("memory stores do not fail"),
            outcomes: outcomes
                .expect("memory stores do not fail")
                .into_iter()
                .collect(),
        }
    }
}

/// Poll, handle, then commit, rewind or handle again.
async fn consume<H: EventHandler>(
    runner: &mut Runner<H>,
    max: usize,
    ending: Ending,
) -> Result<BatchReport, ConsumerError> {
    let deliveries = runner.subscription_mut().poll(max, Duration::ZERO).await?;
    if deliveries.is_empty() {
        return Ok(BatchReport::default());
    }
    let mut result = runner.process(&deliveries).await;
    if ending == Ending::HandleTwice && result.is_ok() {
        result = runner.process(&deliveries).await;
    }
    // A failed batch is rewound whatever the plan, as `run_once` does.
    if ending != Ending::Rewind && result.is_ok() {
        runner.subscription_mut().commit(&deliveries).await?;
    } else {
        runner.subscription_mut().rewind().await?;
    }
    result
}

/// The first half of a relay pass, cut short: claim, publish at most
/// `limit` messages, in order, and never acknowledge them.
async fn publish_unacknowledged<O: Outbox>(
    relay: &Relay<O, MemoryBus>,
    route: Route,
    bus: &MemoryBus,
    limit: usize,
) -> Result<usize, RelayError> {
    let records = relay.claim().await?;
    let messages: Vec<_> = records
        .iter()
        .take(limit)
        .map(|r| route.message(r.item.clone()))
        .collect();
    bus.publish(&messages).await?;
    Ok(messages.len())
}

fn wallet_route() -> Route {
    Route::new(Some(WALLET_EVENTS), groups::WALLET)
}

fn ledger_route() -> Route {
    Route::new(Some(LEDGER_EVENTS), groups::LEDGER)
}

fn transaction_route() -> Route {
    Route::new(None, groups::TRANSACTION)
}
