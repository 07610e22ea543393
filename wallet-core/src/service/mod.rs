//! Application services of the three roles, over the ports.

pub mod ledger;
pub mod transaction;
pub mod wallet;

pub use ledger::LedgerService;
pub use transaction::{
    CreateError, Created, Parties, RetryReport, TransactionConfig, TransactionService,
    TransferRequest,
};
pub use wallet::WalletService;
