//! Request bodies and the checks that turn them into a [`TransferRequest`].

use std::fmt;

use axum::http::HeaderMap;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::Value;
use std::time::Duration;

use wallet_core::ids::{IdempotencyKey, TransferId, WalletId};
use wallet_core::money::{Currency, parse_amount};
use wallet_core::service::{CaptureRequest, HoldRequest, Parties, RefundRequest, TransferRequest};
use wallet_core::tags::{Metadata, Reference, Tags};
use wallet_http::ApiError;
use wallet_http::openapi::{amount_schema, currency_schema};

/// The header that carries the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The body of `POST /v1/transfers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TransferRequest)]
pub(crate) struct TransferBody {
    /// The wallet debited.
    #[serde(deserialize_with = "wallet_http::uuid")]
    #[schema(value_type = uuid::Uuid)]
    sender_wallet_id: WalletId,
    /// The wallet credited.
    #[serde(deserialize_with = "wallet_http::uuid")]
    #[schema(value_type = uuid::Uuid)]
    receiver_wallet_id: WalletId,
    #[schema(schema_with = amount_schema)]
    amount: AmountInput,
    /// When given, both wallets must hold it (422 `currency_mismatch`).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = currency_schema, required = false)]
    currency: Option<String>,
    /// Your own name for it, unique in its wallet; a second transfer with
    /// it answers 409 `reference_taken`.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = reference_schema, required = false)]
    reference: Option<String>,
    /// Your notes on it, returned on reads and carried in its events.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = metadata_schema, required = false)]
    metadata: Option<Value>,
}

/// The body of deposits and withdrawals; the wallet is in the path.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MovementRequest)]
pub(crate) struct MovementBody {
    #[schema(schema_with = amount_schema)]
    amount: AmountInput,
    /// When given, the wallet must hold it (422 `currency_mismatch`).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = currency_schema, required = false)]
    currency: Option<String>,
    /// Your own name for it, unique in its wallet; a second transfer with
    /// it answers 409 `reference_taken`.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = reference_schema, required = false)]
    reference: Option<String>,
    /// Your notes on it, returned on reads and carried in its events.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = metadata_schema, required = false)]
    metadata: Option<Value>,
}

/// The longest expiry a hold may ask for, in seconds: 30 days, the
/// service's default [`wallet_core::service::TransactionConfig::max_hold_expiry`].
pub const MAX_HOLD_EXPIRY_S: u64 = 30 * 24 * 3600;

/// The body of `POST /v1/holds`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HoldRequest)]
pub(crate) struct HoldBody {
    /// Whose funds to hold.
    #[serde(deserialize_with = "wallet_http::uuid")]
    #[schema(value_type = uuid::Uuid)]
    wallet_id: WalletId,
    #[schema(schema_with = amount_schema)]
    amount: AmountInput,
    /// When given, the wallet must hold it (422 `currency_mismatch`).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = currency_schema, required = false)]
    currency: Option<String>,
    /// Seconds until the hold expires, 1 to 2592000 (30 days); 7 days when
    /// left out.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(schema_with = expires_in_schema, required = false)]
    expires_in_s: Option<u64>,
    /// Who a capture that names no receiver pays.
    #[serde(default, deserialize_with = "present_uuid")]
    #[schema(value_type = uuid::Uuid, required = false)]
    receiver_wallet_id: Option<WalletId>,
    /// Your own name for it, unique in its wallet; a second transfer with
    /// it answers 409 `reference_taken`.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = reference_schema, required = false)]
    reference: Option<String>,
    /// Your notes on it, returned on reads and carried in its events.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = metadata_schema, required = false)]
    metadata: Option<Value>,
}

/// The body of `POST /v1/holds/{id}/capture`; every member may be left
/// out (`{}`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CaptureRequest)]
pub(crate) struct CaptureBody {
    /// How much to capture; all the hold holds when left out.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = amount_schema, required = false)]
    amount: Option<AmountInput>,
    /// Who is paid; the hold's receiver when left out.
    #[serde(default, deserialize_with = "present_uuid")]
    #[schema(value_type = uuid::Uuid, required = false)]
    receiver_wallet_id: Option<WalletId>,
    /// Your own name for it, unique in its wallet; a second transfer with
    /// it answers 409 `reference_taken`.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = reference_schema, required = false)]
    reference: Option<String>,
    /// Your notes on it, returned on reads and carried in its events.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = metadata_schema, required = false)]
    metadata: Option<Value>,
}

/// The body of `POST /v1/transfers/{id}/refunds`; `{}` refunds it all.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RefundRequest)]
pub(crate) struct RefundBody {
    /// How much to send back; the transfer's whole amount when left out.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = amount_schema, required = false)]
    amount: Option<AmountInput>,
    /// Your own name for it, unique in its wallet; a second transfer with
    /// it answers 409 `reference_taken`.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = reference_schema, required = false)]
    reference: Option<String>,
    /// Your notes on it, returned on reads and carried in its events.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = metadata_schema, required = false)]
    metadata: Option<Value>,
}

impl RefundBody {
    /// The request to refund `original`, or the first 400 then the first
    /// 422 it breaks.
    pub(crate) fn request(
        &self,
        headers: &HeaderMap,
        original: TransferId,
    ) -> Result<RefundRequest, ApiError> {
        let key = idempotency_key(headers)?;
        let amount = self.amount.as_ref().map(AmountInput::decimal).transpose()?;
        Ok(RefundRequest {
            key,
            original,
            amount,
            tags: tags(&self.reference, &self.metadata)?,
        })
    }
}

fn expires_in_schema() -> utoipa::openapi::schema::Object {
    let description = "Seconds until the hold expires; 7 days when left out.";
    wallet_http::openapi::bounded_integer(1, MAX_HOLD_EXPIRY_S, description)
}

/// An optional whole number, as JSON Schema's `integer` reads one: `600`
/// or `600.0`, not `600.5` or `-1`.
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Whole;
    impl Visitor<'_> for Whole {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number of seconds")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("{v} is below zero")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            let whole = v.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&v);
            // A whole f64 in range converts exactly.
            whole
                .then_some(v as u64)
                .ok_or_else(|| E::custom(format!("{v} is not a whole number of seconds")))
        }
    }
    d.deserialize_any(Whole).map(Some)
}

/// An optional wallet id that, when given, is a hyphenated uuid.
fn present_uuid<'de, D: Deserializer<'de>>(d: D) -> Result<Option<WalletId>, D::Error> {
    wallet_http::uuid(d).map(Some)
}

impl HoldBody {
    /// The request, or the first 400 then the first 422 it breaks.
    pub(crate) fn request(&self, headers: &HeaderMap) -> Result<HoldRequest, ApiError> {
        let key = idempotency_key(headers)?;
        let amount = self.amount.decimal()?;
        let currency = self.currency.as_deref().map(Currency::parse).transpose()?;
        Ok(HoldRequest {
            key,
            wallet: self.wallet_id,
            receiver: self.receiver_wallet_id,
            amount,
            currency,
            expires_in: self.expires_in_s.map(Duration::from_secs),
            tags: tags(&self.reference, &self.metadata)?,
        })
    }
}

impl CaptureBody {
    /// The request for `hold`, or the first 400 then the first 422 it
    /// breaks.
    pub(crate) fn request(
        &self,
        headers: &HeaderMap,
        hold: TransferId,
    ) -> Result<CaptureRequest, ApiError> {
        let key = idempotency_key(headers)?;
        let amount = self.amount.as_ref().map(AmountInput::decimal).transpose()?;
        Ok(CaptureRequest {
            key,
            hold,
            amount,
            receiver: self.receiver_wallet_id,
            tags: tags(&self.reference, &self.metadata)?,
        })
    }
}

/// An optional member that, when given, is a value: `null` is refused
/// (400) rather than read as absent, so a request has one spelling.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// The `Idempotency-Key` header of the routes that move money.
#[derive(utoipa::IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
#[allow(dead_code)] // describes the header, never built
pub(crate) struct KeyHeader(
    /// Unique per intended transfer, deposit or withdrawal: 1 to 255
    /// visible ASCII characters. A repeat with the same key and body gets
    /// the first answer again. (The pattern is
    /// `IdempotencyKey::PATTERN`; the OpenAPI test holds them equal.)
    #[param(pattern = "^[!-~]{1,255}$", min_length = 1, max_length = 255)]
    String,
);

/// An amount as the client wrote it. A JSON number is read, not refused as
/// malformed, so the client learns the actual rule (422: amounts are decimal
/// strings) rather than a type error.
#[derive(Debug)]
enum AmountInput {
    Text(String),
    Number(String),
}

impl<'de> Deserialize<'de> for AmountInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AmountVisitor)
    }
}

struct AmountVisitor;

impl Visitor<'_> for AmountVisitor {
    type Value = AmountInput;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal string such as \"10.50\"")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<AmountInput, E> {
        Ok(AmountInput::Text(v.to_owned()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<AmountInput, E> {
        Ok(AmountInput::Number(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<AmountInput, E> {
        Ok(AmountInput::Number(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<AmountInput, E> {
        Ok(AmountInput::Number(v.to_string()))
    }
}

impl AmountInput {
    /// The decimal, or 422 `invalid_amount`. Range and scale are checked
    /// later against the wallets' currency.
    fn decimal(&self) -> Result<Decimal, ApiError> {
        match self {
            AmountInput::Text(text) => Ok(parse_amount(text)?),
            AmountInput::Number(n) => Err(ApiError::unprocessable(
                "invalid_amount",
                format!("amounts are decimal strings, e.g. \"{n}\", not JSON numbers"),
            )),
        }
    }
}

impl TransferBody {
    /// The request, or the first 400 then the first 422 it breaks.
    pub(crate) fn request(&self, headers: &HeaderMap) -> Result<TransferRequest, ApiError> {
        let parties = Parties::Transfer {
            sender: self.sender_wallet_id,
            receiver: self.receiver_wallet_id,
        };
        let tags = tags(&self.reference, &self.metadata);
        request(
            headers,
            parties,
            &self.amount,
            self.currency.as_deref(),
            tags,
        )
    }
}

impl MovementBody {
    /// The request for `parties` (a deposit or a withdrawal).
    pub(crate) fn request(
        &self,
        headers: &HeaderMap,
        parties: Parties,
    ) -> Result<TransferRequest, ApiError> {
        let tags = tags(&self.reference, &self.metadata);
        request(
            headers,
            parties,
            &self.amount,
            self.currency.as_deref(),
            tags,
        )
    }
}

fn request(
    headers: &HeaderMap,
    parties: Parties,
    amount: &AmountInput,
    currency: Option<&str>,
    tags: Result<Tags, ApiError>,
) -> Result<TransferRequest, ApiError> {
    // 400s before 422s: a request without a usable key is malformed
    // whatever its amount.
    let key = idempotency_key(headers)?;
    let amount = amount.decimal()?;
    let currency = currency.map(Currency::parse).transpose()?;
    Ok(TransferRequest {
        key,
        parties,
        amount,
        currency,
        tags: tags?,
    })
}

/// A body's reference and metadata, checked: 422 `invalid_reference` or
/// `invalid_metadata`.
fn tags(reference: &Option<String>, metadata: &Option<Value>) -> Result<Tags, ApiError> {
    Ok(Tags {
        reference: reference.clone().map(Reference::new).transpose()?,
        metadata: metadata.clone().map(Metadata::new).transpose()?,
    })
}

fn reference_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(Reference::MAX_CHARS))
        .pattern(Some(Reference::PATTERN))
        .description(Some(format!(
            "Your own name for it, unique in its wallet (the wallet paying, or for a deposit \
             the wallet paid): 1 to {} characters, none a control character. Another \
             transfer or hold with it in the same wallet answers 409 `reference_taken`, \
             naming that one's `transfer_id`.",
            Reference::MAX_CHARS
        )))
        .build()
}

fn metadata_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Object)
        .max_properties(Some(Metadata::MAX_KEYS))
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
        ))
        .description(Some(format!(
            "Your notes: a JSON object of at most {} keys counting those of nested objects, \
             nested at most {} levels deep (a flat object is one), at most {} bytes as \
             compact JSON, no U+0000 in a key or string; beyond, 422 `invalid_metadata`. Returned on reads and carried in \
             the transfer's events.",
            Metadata::MAX_KEYS,
            Metadata::MAX_DEPTH,
            Metadata::MAX_BYTES
        )))
        .build()
}

/// The key from the one `Idempotency-Key` header.
fn idempotency_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let key = match (values.next(), values.next()) {
        (None, _) => {
            let message = "send an Idempotency-Key header, unique per intended transfer";
            return Err(ApiError::bad_request("idempotency_key_required", message));
        }
        (Some(value), None) => value.to_str().map_err(|_| invalid_key())?,
        (Some(_), Some(_)) => {
            let message = "send one Idempotency-Key header";
            return Err(ApiError::bad_request("invalid_idempotency_key", message));
        }
    };
    IdempotencyKey::new(key).map_err(|_| invalid_key())
}

fn invalid_key() -> ApiError {
    let message = format!(
        "an idempotency key is 1 to {} visible ASCII characters",
        IdempotencyKey::MAX_LEN
    );
    ApiError::bad_request("invalid_idempotency_key", message)
}
