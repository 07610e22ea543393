//! Every contract scenario of the stores, run against PostgreSQL: the same
//! functions `wallet-core`'s in-memory adapters run. Each store lives in a
//! database of its own.

mod common;

use common::{FreshLedger, ledger_store, transfer_store, wallet_store};

wallet_core::contract_tests!(transfer_store: || transfer_store());
wallet_core::contract_tests!(wallet_store: || wallet_store());
wallet_core::contract_tests!(ledger_store: FreshLedger);

/// Both fixture styles make working stores.
#[tokio::test]
async fn closure_and_type_fixtures_agree() {
    use wallet_core::ports::LedgerReads;
    let store = ledger_store().await;
    assert_eq!(store.balances_page(None, 10).await.unwrap(), vec![]);
}
