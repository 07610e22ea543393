//! Outcomes the three services tell each other: why a transfer fails, the
//! wallet service's answer to a reserve, and the ledger's outcome on a
//! posting. A leaf module: every other module may use it, it uses none.

use serde::{Deserialize, Serialize};

/// Why a transfer failed. The snake_case name is the API error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureReason {
    /// The sender or the receiver does not exist.
    WalletNotFound,
    /// Sender and receiver are the same wallet.
    SameWallet,
    /// The wallets, or the wallet and the amount, are in different currencies.
    CurrencyMismatch,
    /// The sender's available balance is below the amount.
    InsufficientFunds,
    /// The amount is not valid for the currency.
    InvalidAmount,
    /// A capture named a hold that does not exist (or is no hold).
    HoldNotFound,
    /// A capture came after its hold expired; the hold's funds went back.
    HoldExpired,
    /// A capture came after its hold was voided.
    HoldVoided,
    /// A capture came after another capture of its hold.
    HoldCaptured,
    /// A capture asked for more than its hold holds; the hold is unchanged.
    ExceedsHold,
}

impl FailureReason {
    /// The snake_case code used in the API and in events.
    pub fn code(&self) -> &'static str {
        match self {
            FailureReason::WalletNotFound => "wallet_not_found",
            FailureReason::SameWallet => "same_wallet",
            FailureReason::CurrencyMismatch => "currency_mismatch",
            FailureReason::InsufficientFunds => "insufficient_funds",
            FailureReason::InvalidAmount => "invalid_amount",
            FailureReason::HoldNotFound => "hold_not_found",
            FailureReason::HoldExpired => "hold_expired",
            FailureReason::HoldVoided => "hold_voided",
            FailureReason::HoldCaptured => "hold_captured",
            FailureReason::ExceedsHold => "exceeds_hold",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The definite answer to a reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum ReserveOutcome {
    /// The funds are held.
    Reserved,
    /// Nothing was held.
    Rejected(FailureReason),
}

/// The ledger's outcome on a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum LedgerOutcome {
    /// A posting was appended.
    Succeeded,
    /// Nothing was posted, for this reason.
    Failed(FailureReason),
}
