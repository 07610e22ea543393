//! The transfer as the API shows it.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{AdditionalProperties, Object, ObjectBuilder, SchemaType, Type};
use wallet_core::Timestamp;
use wallet_core::ids::{CorrelationId, TransferId, WalletId};
use wallet_core::money::{Amount, Currency};
use wallet_core::outcome::FailureReason;
use wallet_core::tags::{Metadata, Reference};
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
    /// `INITIATED`, `RESERVED`, `SUCCEEDED` or `FAILED`; a hold's
    /// `HELD`, `CAPTURED`, `VOIDED` or `EXPIRED`.
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
    /// `transfer`, `deposit`, `withdrawal` or `hold`.
    #[schema(schema_with = kind_schema)]
    pub kind: TransferKind,
    /// A capture's hold; `null` for any other transfer.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub hold_id: Option<TransferId>,
    /// A refund's original transfer; `null` for any other transfer.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub refund_of: Option<TransferId>,
    /// The client's reference; `null` when it gave none.
    #[schema(value_type = Option<String>)]
    pub reference: Option<Reference>,
    /// The client's notes, a JSON object; `null` when it gave none.
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<Metadata>,
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
            hold_id: t.hold_id,
            refund_of: t.refund_of,
            reference: t.tags.reference,
            metadata: t.tags.metadata,
            correlation_id: t.correlation_id,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A hold as every hold route shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Hold, description = "Funds of a wallet held for a later capture, void or expiry.")]
pub struct HoldResource {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: TransferId,
    /// `INITIATED` (the wallet service has not answered yet), `HELD`,
    /// `CAPTURED`, `VOIDED`, `EXPIRED`, or `FAILED` (nothing was held).
    #[schema(schema_with = hold_status_schema)]
    pub status: TransferStatus,
    /// Why it FAILED; `null` otherwise.
    #[schema(schema_with = failure_reason_schema)]
    pub failure_reason: Option<FailureReason>,
    /// Whose funds are held.
    #[schema(value_type = uuid::Uuid)]
    pub wallet_id: WalletId,
    /// Who a capture that names no receiver pays; `null` when the hold
    /// names none.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub receiver_wallet_id: Option<WalletId>,
    /// How much is held.
    #[schema(schema_with = amount_schema)]
    pub amount: Amount,
    /// ISO 4217 code.
    #[schema(schema_with = currency_schema)]
    pub currency: Currency,
    /// When it expires unless captured or voided before.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// The capture that took its funds, once CAPTURED; `null` otherwise.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub captured_by: Option<TransferId>,
    /// The client's reference; `null` when it gave none.
    #[schema(value_type = Option<String>)]
    pub reference: Option<Reference>,
    /// The client's notes, a JSON object; `null` when it gave none.
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<Metadata>,
    /// Shared by its log lines and those of its capture.
    #[schema(value_type = uuid::Uuid)]
    pub correlation_id: CorrelationId,
    /// When it was accepted.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When its status last changed.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl HoldResource {
    /// The hold `t` shows, or `None` when `t` is no hold.
    pub fn of(t: Transfer) -> Option<HoldResource> {
        let expires_at = t.expires_at.filter(|_| t.kind == TransferKind::Hold)?;
        Some(HoldResource {
            id: t.id,
            status: t.status,
            failure_reason: t.failure_reason,
            wallet_id: t.sender_wallet_id,
            receiver_wallet_id: t.hold_receiver(),
            amount: t.amount,
            currency: t.currency,
            expires_at,
            captured_by: t.captured_by,
            reference: t.tags.reference,
            metadata: t.tags.metadata,
            correlation_id: t.correlation_id,
            created_at: t.created_at,
            updated_at: t.updated_at,
        })
    }
}

fn metadata_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .additional_properties(Some(AdditionalProperties::FreeForm(true)))
        .build()
}

pub(crate) const STATUSES: [&str; 8] = [
    "INITIATED",
    "RESERVED",
    "SUCCEEDED",
    "FAILED",
    "HELD",
    "CAPTURED",
    "VOIDED",
    "EXPIRED",
];

fn status_schema() -> Object {
    string_enum(&STATUSES, false)
}

fn hold_status_schema() -> Object {
    string_enum(
        &[
            "INITIATED",
            "HELD",
            "CAPTURED",
            "VOIDED",
            "EXPIRED",
            "FAILED",
        ],
        false,
    )
}

pub(crate) const KINDS: [&str; 4] = ["transfer", "deposit", "withdrawal", "hold"];

fn kind_schema() -> Object {
    string_enum(&KINDS, false)
}

fn failure_reason_schema() -> Object {
    let reasons = [
        FailureReason::WalletNotFound,
        FailureReason::SameWallet,
        FailureReason::CurrencyMismatch,
        FailureReason::InsufficientFunds,
        FailureReason::InvalidAmount,
        FailureReason::HoldNotFound,
        FailureReason::HoldExpired,
        FailureReason::HoldVoided,
        FailureReason::HoldCaptured,
        FailureReason::ExceedsHold,
    ];
    string_enum(&reasons.map(|r| r.code()), true)
}
