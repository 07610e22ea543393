//! Conversions between the core's types and column values. Every value read
//! back is checked as the core would check it; one that fails is an
//! integrity error, never a panic.

use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use wallet_core::event::Envelope;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::money::{Amount, Balance, Currency, MoneyError};
use wallet_core::ports::StoreError;

use crate::error::{Db, corrupt};

/// The text a unit-like enum serializes to (`"INITIATED"`, `"deposit"`,
/// `"insufficient_funds"`): the same names as in the API and the events.
pub(crate) fn text_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        other => panic!("expected a name, serialized to {other:?}"),
    }
}

/// The enum named by `text`.
pub(crate) fn parse_text<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| corrupt(format!("{text:?}: {e}")))
}

/// A currency by ISO code.
pub(crate) fn currency(code: &str) -> Result<Currency, StoreError> {
    Currency::parse(code).map_err(corrupt)
}

/// An amount at its currency's scale. A request whose amount has more
/// decimals than its currency allows is stored as it came (the core rejects
/// it as `invalid_amount` and remembers the rejection with the request), so
/// such an amount is read back at the scale it was stored with: as an
/// amount of the currency with that scale, which is the same value; or,
/// with more decimals than any currency has, as it was stored, the way a
/// reader of the wire gets it.
pub(crate) fn amount(value: Decimal, currency: Currency) -> Result<Amount, StoreError> {
    match Amount::new(value, currency) {
        Err(MoneyError::TooManyDecimals { .. }) => {
            let stored_at = Currency::ALL
                .iter()
                .filter(|c| c.scale() >= value.scale())
                .min_by_key(|c| c.scale());
            match stored_at {
                Some(stored_at) => Amount::new(value, *stored_at).map_err(corrupt),
                None if value > Decimal::ZERO => {
                    serde_json::from_value(serde_json::Value::String(value.to_string()))
                        .map_err(|e| corrupt(format!("amount {value}: {e}")))
                }
                None => Err(corrupt(format!("amount {value} is not positive"))),
            }
        }
        other => other.map_err(corrupt),
    }
}

/// A balance at the currency's scale.
pub(crate) fn balance(mut value: Decimal, currency: Currency) -> Balance {
    value.rescale(currency.scale());
    Balance::from_decimal(value)
}

/// A seq column (bigint identity, always positive).
pub(crate) fn seq(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(corrupt)
}

/// A seq as a bigint, for binding.
pub(crate) fn seq_param(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A page size as a bigint, for `LIMIT`.
pub(crate) fn limit(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// One page of a keyset read by uuid: `sql` takes the cursor as `$1` (the
/// nil uuid, below every id, for the first page) and the limit as `$2`;
/// each row becomes a `T` through `row_of`.
pub(crate) async fn uuid_page<T>(
    pool: &sqlx::PgPool,
    sql: &'static str,
    after: Option<uuid::Uuid>,
    limit: usize,
    row_of: impl Fn(&sqlx::postgres::PgRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let rows = sqlx::query(sql)
        .bind(after.unwrap_or(uuid::Uuid::nil()))
        .bind(self::limit(limit))
        .fetch_all(pool)
        .await
        .db()?;
    rows.iter().map(row_of).collect()
}

/// An envelope as stored: JSON text, cast to `jsonb` by the statement.
pub(crate) fn envelope_text(envelope: &Envelope) -> String {
    String::from_utf8(envelope.encode()).expect("serde_json writes UTF-8")
}

/// A stored envelope, read back as a consumer would read it.
pub(crate) fn envelope(text: &str) -> Result<Envelope, StoreError> {
    Envelope::decode(text.as_bytes()).map_err(corrupt)
}

/// Ids as uuids, for binding arrays.
pub(crate) fn wallet_uuids(ids: impl IntoIterator<Item = WalletId>) -> Vec<uuid::Uuid> {
    ids.into_iter().map(|id| id.as_uuid()).collect()
}

/// Optional wallet ids as uuids, for binding arrays with NULLs.
pub(crate) fn wallet_uuids_opt(
    ids: impl IntoIterator<Item = Option<WalletId>>,
) -> Vec<Option<uuid::Uuid>> {
    ids.into_iter()
        .map(|id| id.map(|id| id.as_uuid()))
        .collect()
}

/// Ids as uuids, for binding arrays.
pub(crate) fn transfer_uuids(ids: impl IntoIterator<Item = TransferId>) -> Vec<uuid::Uuid> {
    ids.into_iter().map(|id| id.as_uuid()).collect()
}

/// Optional transfer ids as a `uuid[]` parameter with nulls.
pub(crate) fn transfer_uuids_opt(
    ids: impl IntoIterator<Item = Option<TransferId>>,
) -> Vec<Option<uuid::Uuid>> {
    ids.into_iter()
        .map(|id| id.map(|id| id.as_uuid()))
        .collect()
}

#[cfg(test)]
mod tests {
    use wallet_core::outcome::FailureReason;
    use wallet_core::transfer::{TransferKind, TransferStatus};

    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(text_of(&TransferStatus::Initiated), "INITIATED");
        assert_eq!(text_of(&TransferKind::Deposit), "deposit");
        assert_eq!(
            text_of(&FailureReason::InsufficientFunds),
            "insufficient_funds"
        );
        let status: TransferStatus = parse_text("FAILED").unwrap();
        assert_eq!(status, TransferStatus::Failed);
        assert!(parse_text::<TransferStatus>("LOST").is_err());
    }

    #[test]
    fn amounts_are_checked_against_their_currency() {
        let ten = Decimal::new(1000, 2);
        assert_eq!(amount(ten, Currency::USD).unwrap().to_string(), "10.00");
        // Stored as it came, read back as the same value and scale.
        let odd = amount(Decimal::new(105, 1), Currency::JPY).unwrap();
        assert_eq!(odd.value(), Decimal::new(105, 1));
        assert_eq!(odd.value().scale(), 2, "the smallest scale that holds it");
        assert!(amount(Decimal::ZERO, Currency::USD).is_err());
        // More decimals than any currency has: the simulator on PostgreSQL,
        // seed 4 of 60 requests, rejected an internal reserve of 3.1781 KWD
        // (`invalid_amount`), and no read port could return its reservation
        // again ("amount 3.1781 has too many decimals").
        let finer = amount(Decimal::new(31781, 4), Currency::KWD).unwrap();
        assert_eq!(finer.value(), Decimal::new(31781, 4));
        assert_eq!(finer.value().scale(), 4, "as it was stored");
        assert!(amount(Decimal::new(-31781, 4), Currency::KWD).is_err());
        assert_eq!(
            balance(Decimal::new(-5, 0), Currency::USD)
                .value()
                .to_string(),
            "-5.00"
        );
    }
}
