//! The simulated system: two transaction-service instances, the wallet and
//! ledger services, two relay instances per outbox and the three consumer
//! runners of `wallet-core`, over the stores and bus an [`Adapters`] makes,
//! every write port and the bus behind a fault wrapper. Pieces are rebuilt
//! when they crash or restart; the stores, the bus and time survive.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use wallet_core::event::{LEDGER_EVENTS, WALLET_EVENTS};
use wallet_core::memory::groups;
use wallet_core::ports::{Clock, IdGenerator, Message, Outbox, Publisher, Subscription};
use wallet_core::runtime::{
    BatchReport, ConsumerConfig, ConsumerError, ConsumerRunner, EventHandler, Relay, RelayConfig,
    RelayError, Route, dead_letter_topic,
};
use wallet_core::service::{LedgerService, TransactionConfig, TransactionService, WalletService};

use crate::adapters::Adapters;
use crate::clock::{SimClock, SimIds};
use crate::exec::{Driven, drive, run_now};
use crate::faults::{SharedFaults, SimGateway, StorePort, WalletSlot};
use crate::planted::OutsideUnit;
use crate::ports::{FaultyPublisher, FaultyStore, FaultySubscription};

/// The bus as the services publish to it.
pub(crate) type Pub<A> = FaultyPublisher<<A as Adapters>::Bus>;
/// The wallet store as the wallet service and its relays use it.
pub(crate) type WalletStoreOf<A> = OutsideUnit<FaultyStore<<A as Adapters>::Wallets>, Pub<A>>;
/// The ledger store as the ledger service and its relays use it.
pub(crate) type LedgerStoreOf<A> = FaultyStore<<A as Adapters>::Ledger>;
/// The transfer store as the transaction service and its relays use it.
pub(crate) type TransferStoreOf<A> = FaultyStore<<A as Adapters>::Transfers>;
/// The wallet service as simulated.
pub(crate) type WalletSvc<A> = WalletService<WalletStoreOf<A>>;
/// The ledger service as simulated.
pub(crate) type LedgerSvc<A> = LedgerService<LedgerStoreOf<A>>;
/// The transaction service as simulated.
pub(crate) type TxSvc<A> = TransactionService<TransferStoreOf<A>, SimGateway<WalletStoreOf<A>>>;
type Sub<A> = FaultySubscription<<A as Adapters>::Subscription>;
type Runner<A, H> = ConsumerRunner<Sub<A>, Arc<H>, Pub<A>>;

/// Instances of the transaction service, and relays per outbox.
pub(crate) const INSTANCES: usize = 2;

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

/// One of the three outboxes' relays.
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

/// Limits the simulated services run with.
pub(crate) struct Settings {
    pub transaction: TransactionConfig,
    pub relay: RelayConfig,
    pub consumer: ConsumerConfig,
    pub timeout_is_refusal: bool,
    pub dead_letters_outside_unit: bool,
    pub expire_without_wallet: bool,
}

impl Settings {
    /// Small batches and caches so the interesting paths (several batches,
    /// a cache emptied when full, the idempotency lease running out) occur
    /// in short runs.
    pub fn new(max_batch: usize) -> Settings {
        Settings {
            // The idempotency lease is shorter than the retrier's minimum
            // age, so a repeated key meets all three answers: in flight,
            // replayed, and (its first request dead, the retrier not yet
            // done) the transfer as it is once the lease ran out. The
            // retrier waits long enough for a ledger outcome to overtake a
            // lost reserve answer now and then.
            transaction: TransactionConfig {
                idempotency_lease: Duration::from_secs(2),
                retry_min_age: Duration::from_secs(3),
                retry_batch: 8,
                currency_cache: 16,
                // The simulator drives one request at a time and keeps slow
                // ones suspended, so each request runs as its own batch of
                // one through the batched store units and reserve call.
                batches_in_flight: 64,
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
                // Stalls are judged by wall time, which a run must not
                // depend on; a memory bus never stalls anyway.
                stall_after: Duration::MAX,
                ..ConsumerConfig::default()
            },
            timeout_is_refusal: false,
            dead_letters_outside_unit: false,
            expire_without_wallet: false,
        }
    }
}

/// What survives a restart: the stores, the bus, time and ids.
struct Base<A: Adapters> {
    adapters: A,
    clock: SimClock,
    ids: Arc<SimIds>,
    faults: SharedFaults,
    settings: Settings,
    bus: A::Bus,
    publisher: Pub<A>,
    transfer_reads: A::Transfers,
    wallet_reads: A::Wallets,
    ledger_reads: A::Ledger,
    transfer_store: TransferStoreOf<A>,
    wallet_store: WalletStoreOf<A>,
    ledger_store: LedgerStoreOf<A>,
    wallet_slot: WalletSlot<WalletStoreOf<A>>,
}

impl<A: Adapters> Base<A> {
    fn clock(&self) -> Arc<dyn Clock> {
        Arc::new(self.clock.clone())
    }

    fn wallet_service(&self) -> Arc<WalletSvc<A>> {
        let store = self.wallet_store.clone();
        Arc::new(WalletService::new(
            store,
            self.clock(),
            self.ids.clone(),
            Arc::default(),
        ))
    }

    fn ledger_service(&self) -> Arc<LedgerSvc<A>> {
        let store = self.ledger_store.clone();
        Arc::new(LedgerService::new(
            store,
            self.clock(),
            self.ids.clone(),
            Arc::default(),
        ))
    }

    /// An instance with a worker id of its own, as a new process gets.
    fn transaction_service(&self) -> Arc<TxSvc<A>> {
        let gateway = SimGateway {
            wallets: self.wallet_slot.clone(),
            faults: self.faults.clone(),
            timeout_is_refusal: self.settings.timeout_is_refusal,
            expire_without_wallet: self.settings.expire_without_wallet,
        };
        let config = self.settings.transaction.clone();
        let store = self.transfer_store.clone();
        let service =
            TransactionService::new(store, gateway, self.clock(), self.ids.clone(), config);
        Arc::new(service)
    }

    /// A relay with a worker id of its own.
    fn relay<O: Outbox>(&self, outbox: O, route: Route) -> Relay<O, Pub<A>> {
        Relay::new(
            outbox,
            self.publisher.clone(),
            route,
            self.clock(),
            self.ids.worker_id(),
            Arc::new(Notify::new()),
            self.settings.relay.clone(),
        )
    }

    fn relays<O: Outbox + Clone>(&self, outbox: &O, route: Route) -> [Relay<O, Pub<A>>; INSTANCES] {
        std::array::from_fn(|_| self.relay(outbox.clone(), route.clone()))
    }

    /// A runner reading from the group's committed offsets, as a restarted
    /// consumer does.
    fn consumer<H: EventHandler>(&self, group: &str, topic: &str, handler: Arc<H>) -> Runner<A, H> {
        let subscription = self.adapters.subscribe(&self.bus, group, topic);
        let subscription = FaultySubscription::new(subscription, self.faults.clone());
        let config = self.settings.consumer.clone();
        ConsumerRunner::new(subscription, handler, self.publisher.clone(), group, config)
    }
}

/// The whole simulated system.
pub(crate) struct World<A: Adapters> {
    base: Base<A>,
    /// The transaction-service instances now running.
    pub transactions: [Arc<TxSvc<A>>; INSTANCES],
    /// The wallet service now running.
    pub wallets: Arc<WalletSvc<A>>,
    wallet_relays: [Relay<WalletStoreOf<A>, Pub<A>>; INSTANCES],
    ledger_relays: [Relay<LedgerStoreOf<A>, Pub<A>>; INSTANCES],
    transaction_relays: [Relay<TransferStoreOf<A>, Pub<A>>; INSTANCES],
    ledger_consumer: Runner<A, LedgerSvc<A>>,
    wallet_consumer: Runner<A, WalletSvc<A>>,
    transaction_consumer: Runner<A, TxSvc<A>>,
    /// The simulator's own readers of the dead-letter topics.
    observers: Vec<(&'static str, A::Subscription)>,
}

/// Every consumer group, whose dead-letter topics are watched.
pub(crate) const GROUPS: [&str; 3] = [groups::LEDGER, groups::WALLET, groups::TRANSACTION];

impl<A: Adapters> World<A> {
    /// An empty system on `partitions` partitions per topic.
    pub fn new(
        adapters: A,
        clock: SimClock,
        partitions: u32,
        faults: SharedFaults,
        settings: Settings,
    ) -> Self {
        let ids = Arc::new(SimIds::new());
        let bus = adapters.bus(partitions);
        let publisher = FaultyPublisher::new(bus.clone(), faults.clone());
        let (transfers, wallets, ledger) = (
            adapters.transfer_store(),
            adapters.wallet_store(),
            adapters.ledger_store(),
        );
        let wallet_store = OutsideUnit::new(
            FaultyStore::new(wallets.clone(), StorePort::Wallets, faults.clone()),
            publisher.clone(),
            settings.dead_letters_outside_unit,
        );
        let wallet_service = Arc::new(WalletService::new(
            wallet_store.clone(),
            Arc::new(clock.clone()),
            ids.clone(),
            Arc::default(),
        ));
        let observers = GROUPS
            .iter()
            .map(|g| {
                let topic = dead_letter_topic(g);
                (*g, adapters.subscribe(&bus, "wallet-sim.observer", &topic))
            })
            .collect();
        let base = Base {
            clock,
            ids,
            faults: faults.clone(),
            settings,
            publisher,
            transfer_store: FaultyStore::new(
                transfers.clone(),
                StorePort::Transfers,
                faults.clone(),
            ),
            ledger_store: FaultyStore::new(ledger.clone(), StorePort::Ledger, faults),
            wallet_store,
            transfer_reads: transfers,
            wallet_reads: wallets,
            ledger_reads: ledger,
            wallet_slot: WalletSlot::new(wallet_service.clone()),
            bus,
            adapters,
        };
        let ledger = base.ledger_service();
        let transactions: [Arc<TxSvc<A>>; INSTANCES] =
            std::array::from_fn(|_| base.transaction_service());
        World {
            wallet_relays: base.relays(&base.wallet_store, wallet_route()),
            ledger_relays: base.relays(&base.ledger_store, ledger_route()),
            transaction_relays: base.relays(&base.transfer_store, transaction_route()),
            ledger_consumer: base.consumer(groups::LEDGER, WALLET_EVENTS, ledger),
            wallet_consumer: base.consumer(groups::WALLET, LEDGER_EVENTS, wallet_service.clone()),
            transaction_consumer: base.consumer(
                groups::TRANSACTION,
                LEDGER_EVENTS,
                transactions[0].clone(),
            ),
            transactions,
            wallets: wallet_service,
            observers,
            base,
        }
    }

    /// The virtual clock.
    pub fn clock(&self) -> &SimClock {
        &self.base.clock
    }

    /// The services' limits.
    pub fn settings(&self) -> &Settings {
        &self.base.settings
    }

    /// The run's ids.
    pub fn ids(&self) -> &SimIds {
        &self.base.ids
    }

    /// The stores' read ports, for the checks.
    pub fn reads(&self) -> (&A::Transfers, &A::Wallets, &A::Ledger) {
        let b = &self.base;
        (&b.transfer_reads, &b.wallet_reads, &b.ledger_reads)
    }

    /// Publishes straight to the bus, past the fault wrapper (poison and
    /// forged events).
    pub fn publish_raw(&self, messages: &[Message]) -> Option<Result<(), String>> {
        run_now(self.base.bus.publish(messages)).map(|r| r.map_err(|e| e.to_string()))
    }

    /// Rebuilds a service over its store: caches, in-flight work, relay
    /// state and consumer positions not committed are lost. The transaction
    /// service's first instance restarts; see [`World::restart_transaction`].
    pub fn restart(&mut self, service: ServiceId) {
        match service {
            ServiceId::Transaction => self.restart_transaction(0),
            ServiceId::Wallet => {
                let b = &self.base;
                self.wallets = b.wallet_service();
                b.wallet_slot.replace(self.wallets.clone());
                self.wallet_relays = b.relays(&b.wallet_store, wallet_route());
                self.restart_consumer(ConsumerId::Wallet);
            }
            ServiceId::Ledger => {
                let b = &self.base;
                self.ledger_relays = b.relays(&b.ledger_store, ledger_route());
                self.restart_consumer(ConsumerId::Ledger);
            }
        }
    }

    /// Rebuilds transaction-service instance `i` (a new worker id: the
    /// transfers its retrier had claimed wait for their lease to end) and
    /// its relay; instance 0 also runs the consumer.
    pub fn restart_transaction(&mut self, i: usize) {
        let b = &self.base;
        self.transactions[i] = b.transaction_service();
        self.transaction_relays[i] = b.relay(b.transfer_store.clone(), transaction_route());
        if i == 0 {
            self.restart_consumer(ConsumerId::Transaction);
        }
    }

    /// Rebuilds one consumer runner: it reads from the committed offsets.
    pub fn restart_consumer(&mut self, which: ConsumerId) {
        let b = &self.base;
        match which {
            ConsumerId::Ledger => {
                let ledger = b.ledger_service();
                self.ledger_consumer = b.consumer(groups::LEDGER, WALLET_EVENTS, ledger);
            }
            ConsumerId::Wallet => {
                let handler = self.wallets.clone();
                self.wallet_consumer = b.consumer(groups::WALLET, LEDGER_EVENTS, handler);
            }
            ConsumerId::Transaction => {
                let handler = self.transactions[0].clone();
                self.transaction_consumer = b.consumer(groups::TRANSACTION, LEDGER_EVENTS, handler);
            }
        }
    }

    /// Replaces relay instance `i` of an outbox by a new one with its own
    /// worker id, as after the relay's process died: the records the dead
    /// one held wait for their lease to end.
    pub fn replace_relay(&mut self, which: RelayId, i: usize) {
        let b = &self.base;
        match which {
            RelayId::Wallet => {
                self.wallet_relays[i] = b.relay(b.wallet_store.clone(), wallet_route())
            }
            RelayId::Ledger => {
                self.ledger_relays[i] = b.relay(b.ledger_store.clone(), ledger_route())
            }
            RelayId::Transaction => {
                self.transaction_relays[i] = b.relay(b.transfer_store.clone(), transaction_route());
            }
        }
    }

    /// One consumer step: the runner's own `run_once`, without waiting.
    pub fn consume(&mut self, which: ConsumerId) -> Driven<Result<BatchReport, ConsumerError>> {
        let faults = &self.base.faults;
        match which {
            ConsumerId::Ledger => drive(self.ledger_consumer.run_once(Duration::ZERO), faults),
            ConsumerId::Wallet => drive(self.wallet_consumer.run_once(Duration::ZERO), faults),
            ConsumerId::Transaction => {
                drive(self.transaction_consumer.run_once(Duration::ZERO), faults)
            }
        }
    }

    /// One pass of relay instance `i`: the relay's own `run_once`.
    pub fn relay(&self, which: RelayId, i: usize) -> Driven<Result<usize, RelayError>> {
        let faults = &self.base.faults;
        match which {
            RelayId::Wallet => drive(self.wallet_relays[i].run_once(), faults),
            RelayId::Ledger => drive(self.ledger_relays[i].run_once(), faults),
            RelayId::Transaction => drive(self.transaction_relays[i].run_once(), faults),
        }
    }

    /// The dead letters published since the last call, with their group,
    /// read by the simulator's own consumer group.
    pub fn new_dead_letters(&mut self) -> Vec<(&'static str, Vec<u8>)> {
        let mut letters = Vec::new();
        for (group, subscription) in &mut self.observers {
            loop {
                let polled = run_now(subscription.poll(1_000, Duration::ZERO))
                    .expect("a dead-letter poll answers at once")
                    .expect("the simulator's own reader does not fail");
                if polled.is_empty() {
                    break;
                }
                run_now(subscription.commit(&polled))
                    .expect("a commit answers at once")
                    .expect("the simulator's own reader does not fail");
                letters.extend(
                    polled
                        .iter()
                        .map(|d| (*group, d.payload.to_bytes().into_owned())),
                );
            }
        }
        letters
    }
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
