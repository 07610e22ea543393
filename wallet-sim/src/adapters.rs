//! What the simulated world is built on: a factory of the three stores, the
//! bus and its subscriptions. The simulator only calls their ports (the
//! write ports through its fault wrappers, the read ports for its checks),
//! so any adapter of the ports can be simulated.
//!
//! [`MemoryAdapters`] is the default. An adapter over a database or a broker
//! implements [`Adapters`] with a fresh schema or topic prefix per run; its
//! futures must then be driven by a runtime that waits for I/O, and a run
//! takes longer, so fewer seeds are run on it.

use wallet_core::memory::{
    MemoryBus, MemoryLedgerStore, MemorySubscription, MemoryTransferStore, MemoryWalletStore,
};
use wallet_core::ports::{
    LedgerReads, LedgerStore, Outbox, Publisher, Subscription, TransferReads, TransferStore,
    WalletReads, WalletStore,
};

/// Makes the stores and the bus of one simulated run. Each call of a store
/// method gives a handle on the same store (as a connection pool does);
/// the simulator calls each once per run.
pub trait Adapters: 'static {
    /// The transaction service's store.
    type Transfers: TransferStore + TransferReads + Outbox + Clone;
    /// The wallet service's store.
    type Wallets: WalletStore + WalletReads + Outbox + Clone;
    /// The ledger service's store.
    type Ledger: LedgerStore + LedgerReads + Outbox + Clone;
    /// The bus, as a publisher; clones share it.
    type Bus: Publisher + Clone;
    /// A consumer group's subscription to a topic.
    type Subscription: Subscription;

    /// An empty transaction store.
    fn transfer_store(&self) -> Self::Transfers;
    /// An empty wallet store.
    fn wallet_store(&self) -> Self::Wallets;
    /// An empty ledger.
    fn ledger_store(&self) -> Self::Ledger;
    /// An empty bus with `partitions` partitions per topic, topics keyed by
    /// transfer id.
    fn bus(&self, partitions: u32) -> Self::Bus;
    /// Reads `topic` as consumer group `group` from the group's committed
    /// offsets (from the start for a new group).
    fn subscribe(&self, bus: &Self::Bus, group: &str, topic: &str) -> Self::Subscription;
}

/// The in-memory adapters of `wallet-core`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryAdapters;

impl Adapters for MemoryAdapters {
    type Transfers = MemoryTransferStore;
    type Wallets = MemoryWalletStore;
    type Ledger = MemoryLedgerStore;
    type Bus = MemoryBus;
    type Subscription = MemorySubscription;

    fn transfer_store(&self) -> MemoryTransferStore {
        MemoryTransferStore::new()
    }

    fn wallet_store(&self) -> MemoryWalletStore {
        MemoryWalletStore::new()
    }

    fn ledger_store(&self) -> MemoryLedgerStore {
        MemoryLedgerStore::new()
    }

    fn bus(&self, partitions: u32) -> MemoryBus {
        // Keeps every message: the simulator re-reads dead-letter topics.
        MemoryBus::new(partitions)
    }

    fn subscribe(&self, bus: &MemoryBus, group: &str, topic: &str) -> MemorySubscription {
        bus.subscribe(group, topic)
    }
}
