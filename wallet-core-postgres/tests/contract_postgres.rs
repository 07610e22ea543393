//! Every contract scenario of the stores, run against PostgreSQL: the same
//! functions `wallet-core`'s in-memory adapters run. Each store lives in a
//! database of its own.

mod common;

use common::{FreshLedger, transfer_store, wallet_store};

wallet_core::contract_tests!(transfer_store: || transfer_store());
wallet_core::contract_tests!(wallet_store: || wallet_store());
wallet_core::contract_tests!(ledger_store: FreshLedger);
