//! Request bodies and the checks that turn them into a [`TransferRequest`].

use std::fmt;

use axum::http::HeaderMap;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use wallet_core::ids::{IdempotencyKey, WalletId};
use wallet_core::money::{Currency, parse_amount};
use wallet_core::service::{Parties, TransferRequest};
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
        request(headers, parties, &self.amount, self.currency.as_deref())
    }
}

impl MovementBody {
    /// The request for `parties` (a deposit or a withdrawal).
    pub(crate) fn request(
        &self,
        headers: &HeaderMap,
        parties: Parties,
    ) -> Result<TransferRequest, ApiError> {
        request(headers, parties, &self.amount, self.currency.as_deref())
    }
}

fn request(
    headers: &HeaderMap,
    parties: Parties,
    amount: &AmountInput,
    currency: Option<&str>,
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
    })
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
