//! Application services of the three roles, over the ports.

pub mod ledger;
pub mod transaction;
pub mod wallet;

pub use ledger::LedgerService;
pub use transaction::{
    CaptureRequest, CreateError, Created, HistoryError, HoldRequest, Parties, RefundRequest,
    RetryReport, SweepReport, TransactionConfig, TransactionService, TransferRequest, VoidError,
};
pub use wallet::WalletService;
