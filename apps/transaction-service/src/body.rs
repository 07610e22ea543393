//! Request bodies and the checks that turn them into a [`TransferRequest`].

use std::fmt;

use axum::http::HeaderMap;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use wallet_core::ids::{IdempotencyKey, WalletId};
use wallet_core::money::{Currency, parse_decimal};
use wallet_core::service::{Parties, TransferRequest};
use wallet_http::ApiError;

/// The header that carries the idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The body of `POST /v1/transfers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TransferRequest)]
pub(crate) struct TransferBody {
    /// The wallet debited.
    #[schema(value_type = uuid::Uuid)]
    sender_wallet_id: WalletId,
    /// The wallet credited.
    #[schema(value_type = uuid::Uuid)]
    receiver_wallet_id: WalletId,
    /// A decimal string at most at the currency's scale (`"10.50"`); a JSON
    /// number is refused.
    #[schema(value_type = String, example = "10.50")]
    amount: AmountInput,
    /// ISO 4217 code; when given, both wallets must hold it.
    #[schema(example = "USD")]
    currency: Option<String>,
    /// The key, when the `Idempotency-Key` header is not sent.
    idempotency_key: Option<String>,
}

/// The body of deposits and withdrawals; the wallet is in the path.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = MovementRequest)]
pub(crate) struct MovementBody {
    /// A decimal string at most at the currency's scale (`"10.50"`); a JSON
    /// number is refused.
    #[schema(value_type = String, example = "10.50")]
    amount: AmountInput,
    /// ISO 4217 code; when given, the wallet must hold it.
    #[schema(example = "USD")]
    currency: Option<String>,
    /// The key, when the `Idempotency-Key` header is not sent.
    idempotency_key: Option<String>,
}

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
            AmountInput::Text(text) => Ok(parse_decimal(text)?),
            AmountInput::Number(n) => Err(ApiError::unprocessable(
                "invalid_amount",
                format!("amounts are decimal strings, e.g. \"{n}\", not JSON numbers"),
            )),
        }
    }
}

/// What both body kinds carry besides the parties.
struct Money<'a> {
    amount: &'a AmountInput,
    currency: Option<&'a str>,
    key: Option<&'a str>,
}

impl TransferBody {
    /// The request, or the first 400 then the first 422 it breaks.
    pub(crate) fn request(&self, headers: &HeaderMap) -> Result<TransferRequest, ApiError> {
        let parties = Parties::Transfer {
            sender: self.sender_wallet_id,
            receiver: self.receiver_wallet_id,
        };
        let money = Money {
            amount: &self.amount,
            currency: self.currency.as_deref(),
            key: self.idempotency_key.as_deref(),
        };
        money.request(headers, parties)
    }
}

impl MovementBody {
    /// The request for `parties` (a deposit or a withdrawal).
    pub(crate) fn request(
        &self,
        headers: &HeaderMap,
        parties: Parties,
    ) -> Result<TransferRequest, ApiError> {
        let money = Money {
            amount: &self.amount,
            currency: self.currency.as_deref(),
            key: self.idempotency_key.as_deref(),
        };
        money.request(headers, parties)
    }
}

impl Money<'_> {
    fn request(&self, headers: &HeaderMap, parties: Parties) -> Result<TransferRequest, ApiError> {
        // 400s before 422s: a request without a usable key is malformed
        // whatever its amount.
        let key = idempotency_key(headers, self.key)?;
        let amount = self.amount.decimal()?;
        let currency = self.currency.map(Currency::parse).transpose()?;
        Ok(TransferRequest {
            key,
            parties,
            amount,
            currency,
        })
    }
}

/// The key from the `Idempotency-Key` header or the body's
/// `idempotency_key`. The header is the documented way; the body field is
/// accepted for older clients. Both given must agree.
fn idempotency_key(headers: &HeaderMap, body: Option<&str>) -> Result<IdempotencyKey, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let header = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(value), None) => Some(value.to_str().map_err(|_| invalid_key())?),
        (Some(_), Some(_)) => {
            let message = "send one Idempotency-Key header";
            return Err(ApiError::bad_request("invalid_idempotency_key", message));
        }
    };
    let key = match (header, body) {
        (Some(h), Some(b)) if h != b => {
            let message = "the Idempotency-Key header and the body's idempotency_key differ";
            return Err(ApiError::bad_request("idempotency_key_mismatch", message));
        }
        (Some(key), _) | (None, Some(key)) => key,
        (None, None) => {
            let message = "send an Idempotency-Key header, unique per intended transfer";
            return Err(ApiError::bad_request("idempotency_key_required", message));
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
