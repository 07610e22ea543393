//! The transfer as the API shows it.

use serde::{Deserialize, Serialize};
use wallet_core::Timestamp;
use wallet_core::ids::{CorrelationId, TransferId, WalletId};
use wallet_core::money::{Amount, Currency};
use wallet_core::outcome::FailureReason;
use wallet_core::transfer::{Transfer, TransferKind, TransferStatus};

/// A transfer, deposit or withdrawal, as every route of the service shows
/// it.
///
/// Written out field by field so the stored [`Transfer`] can change without
/// changing the API, and so the idempotency key (a client's secret-ish
/// handle) is never echoed. `correlation_id` is shown on purpose: every log
/// line and event of the transfer carries it, so it is what support asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResource {
    /// Its id.
    pub id: TransferId,
    /// `INITIATED`, `RESERVED`, `SUCCEEDED` or `FAILED`.
    pub status: TransferStatus,
    /// Why it FAILED (`insufficient_funds`, ...); `null` otherwise.
    pub failure_reason: Option<FailureReason>,
    /// Debited wallet; the currency's system account for a deposit.
    pub sender_wallet_id: WalletId,
    /// Credited wallet; the currency's system account for a withdrawal.
    pub receiver_wallet_id: WalletId,
    /// How much, as a decimal string at the currency's scale (`"10.50"`).
    pub amount: Amount,
    /// ISO 4217 code.
    pub currency: Currency,
    /// `transfer`, `deposit` or `withdrawal`.
    pub kind: TransferKind,
    /// Shared by every event and log line of this transfer.
    pub correlation_id: CorrelationId,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When its status last changed.
    pub updated_at: Timestamp,
}

impl From<Transfer> for TransferResource {
    fn from(t: Transfer) -> Self {
        TransferResource {
            id: t.id,
            status: t.status,
            failure_reason: t.failure_reason,
            sender_wallet_id: t.sender_wallet_id,
            receiver_wallet_id: t.receiver_wallet_id,
            amount: t.amount,
            currency: t.currency,
            kind: t.kind,
            correlation_id: t.correlation_id,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}
