//! Every contract scenario, run against the in-memory adapters.

use std::future::Future;

use wallet_core::contract::{BusFixture, Fixture};
use wallet_core::memory::{
    DEFAULT_PARTITIONS, MemoryBus, MemoryLedgerStore, MemorySubscription, MemoryTransferStore,
    MemoryWalletStore,
};

/// A fixture as a type rather than a closure, as an adapter whose fixture
/// holds configuration (a database server's address) would write it.
struct FreshLedger;

impl Fixture for FreshLedger {
    type Store = MemoryLedgerStore;

    async fn fresh(&self) -> MemoryLedgerStore {
        MemoryLedgerStore::new()
    }
}

/// The in-memory bus keeping every message, as `MemoryBus::new` builds it.
struct KeepingBus;

impl BusFixture for KeepingBus {
    type Bus = MemoryBus;
    type Subscription = MemorySubscription;

    async fn fresh(&self) -> MemoryBus {
        MemoryBus::new(DEFAULT_PARTITIONS)
    }

    fn subscribe(
        &self,
        bus: &MemoryBus,
        group: &str,
        topic: &str,
    ) -> impl Future<Output = MemorySubscription> {
        std::future::ready(bus.subscribe(group, topic))
    }
}

/// The in-memory bus as the embedded system builds it by default: messages
/// every group committed are dropped.
struct DroppingBus;

impl BusFixture for DroppingBus {
    type Bus = MemoryBus;
    type Subscription = MemorySubscription;

    async fn fresh(&self) -> MemoryBus {
        MemoryBus::new(DEFAULT_PARTITIONS).dropping_consumed()
    }

    async fn subscribe(&self, bus: &MemoryBus, group: &str, topic: &str) -> MemorySubscription {
        bus.subscribe(group, topic)
    }
}

wallet_core::contract_tests!(transfer_store: || async { MemoryTransferStore::new() });
wallet_core::contract_tests!(wallet_store: || async { MemoryWalletStore::new() });
wallet_core::contract_tests!(ledger_store: FreshLedger);
wallet_core::contract_tests!(bus: KeepingBus);
wallet_core::contract_tests!(bus as bus_dropping_consumed: DroppingBus);

/// Every `pub async fn` of a kind's module is in the kind's list, so
/// `contract_tests!` runs it for every adapter: a scenario written but not
/// listed fails here.
#[test]
fn every_scenario_is_listed() {
    use wallet_core::contract::{bus, ledger_store, transfer_store, wallet_store};
    let kinds = [
        (
            "transfer_store",
            include_str!("../src/contract/transfer_store.rs"),
            transfer_store::SCENARIOS,
        ),
        (
            "wallet_store",
            include_str!("../src/contract/wallet_store.rs"),
            wallet_store::SCENARIOS,
        ),
        (
            "ledger_store",
            include_str!("../src/contract/ledger_store.rs"),
            ledger_store::SCENARIOS,
        ),
        (
            "bus",
            include_str!("../src/contract/bus.rs"),
            bus::SCENARIOS,
        ),
    ];
    for (kind, source, listed) in kinds {
        let mut defined: Vec<&str> = source
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .map(|rest| rest.split(['<', '(']).next().unwrap_or(rest))
            .collect();
        let mut listed = listed.to_vec();
        defined.sort_unstable();
        listed.sort_unstable();
        assert_eq!(
            defined, listed,
            "{kind}: the scenarios defined and the scenarios listed in __contract_scenarios! differ"
        );
    }
}
