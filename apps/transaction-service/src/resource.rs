//! The transfer as the API shows it.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Object;
use wallet_core::Timestamp;
use wallet_core::ids::{CorrelationId, TransferId, WalletId};
use wallet_core::money::{Amount, Currency};
use wallet_core::outcome::FailureReason;
use wallet_core::transfer::{Transfer, TransferKind, TransferStatus};
use wallet_http::openapi::{amount_schema, currency_schema, string_enum};

/// A transfer, deposit or withdrawal, as every route of the service shows
/// it.
///
/// Written out field by field so the stored [`Transfer`] can change without
/// changing the API, and so the idempotency key (a client's secret-ish
/// handle) is never echoed. `correlation_id` is shown on purpose: every log
/// line and event of the transfer carries it, so it is what support asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Transfer, description = "A transfer, deposit or withdrawal. The idempotency key is never shown; `correlation_id` is on every log line and event of the transfer.")]
pub struct TransferResource {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: TransferId,
    /// `INITIATED`, `RESERVED`, `SUCCEEDED` or `FAILED`.
    #[schema(schema_with = status_schema)]
    pub status: TransferStatus,
    /// Why it FAILED (`insufficient_funds`, ...); `null` otherwise.
    #[schema(schema_with = failure_reason_schema)]
    pub failure_reason: Option<FailureReason>,
    /// Debited wallet; the currency's system account for a deposit.
    #[schema(value_type = uuid::Uuid)]
    pub sender_wallet_id: WalletId,
    /// Credited wallet; the currency's system account for a withdrawal.
    #[schema(value_type = uuid::Uuid)]
    pub receiver_wallet_id: WalletId,
    /// How much, as a decimal string at the currency's scale (`"10.50"`).
    #[schema(schema_with = amount_schema)]
    pub amount: Amount,
    /// ISO 4217 code.
    #[schema(schema_with = currency_schema)]
    pub currency: Currency,
    /// `transfer`, `deposit` or `withdrawal`.
    #[schema(schema_with = kind_schema)]
    pub kind: TransferKind,
    /// Shared by every event and log line of this transfer.
    #[schema(value_type = uuid::Uuid)]
    pub correlation_id: CorrelationId,
    /// When it was accepted.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When its status last changed.
    #[schema(value_type = String, format = DateTime)]
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

fn status_schema() -> Object {
    string_enum(&["INITIATED", "RESERVED", "SUCCEEDED", "FAILED"], false)
}

fn kind_schema() -> Object {
    string_enum(&["transfer", "deposit", "withdrawal"], false)
}

fn failure_reason_schema() -> Object {
    let reasons = [
        FailureReason::WalletNotFound,
        FailureReason::SameWallet,
        FailureReason::CurrencyMismatch,
        FailureReason::InsufficientFunds,
        FailureReason::InvalidAmount,
    ];
    string_enum(&reasons.map(|r| r.code()), true)
}
