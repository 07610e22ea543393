//! Currencies, amounts and balances.
//!
//! An [`Amount`] is always positive, never has more decimals than its currency
//! allows, and never exceeds [`Amount::MAX`]. A [`Balance`] is signed: system
//! accounts may go negative, user wallets never do.

use std::fmt;
use std::ops::{Add, Neg, Sub};
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a currency code or an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// The code is not an ISO 4217 code this library knows. HTTP 422; do not retry.
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    /// The text is not a plain decimal number. HTTP 422; do not retry.
    #[error("amount {0:?} is not a plain decimal such as \"10.50\"")]
    NotANumber(String),
    /// Zero or negative. HTTP 422; do not retry.
    #[error("amount must be greater than zero")]
    NotPositive,
    /// More decimals than the currency's minor unit. HTTP 422; do not retry.
    #[error("{currency} allows at most {scale} decimal places")]
    TooManyDecimals {
        /// The currency the amount was checked against.
        currency: Currency,
        /// Its number of decimal places.
        scale: u32,
    },
    /// Larger than [`Amount::MAX`]. HTTP 422; do not retry.
    #[error("amount exceeds the maximum of {}", Amount::MAX)]
    TooLarge,
}

/// An ISO 4217 currency with its fixed number of decimal places.
///
/// Only the codes in [`Currency::ALL`] are accepted; each has one scale, so
/// `"10.001"` USD is refused rather than rounded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    scale: u8,
}

macro_rules! currencies {
    ($($name:ident = $code:literal, $scale:literal;)*) => {
        impl Currency {
            $(
                #[doc = concat!("`", $code, "`, ", stringify!($scale), " decimal places.")]
                pub const $name: Currency = Currency::new_unchecked($code, $scale);
            )*
            /// Every currency this library accepts.
            pub const ALL: &'static [Currency] = &[$(Currency::$name),*];
        }
    };
}

currencies! {
    AUD = "AUD", 2; BHD = "BHD", 3; BRL = "BRL", 2; CAD = "CAD", 2;
    CHF = "CHF", 2; CLP = "CLP", 0; CNY = "CNY", 2; CZK = "CZK", 2;
    DKK = "DKK", 2; EUR = "EUR", 2; GBP = "GBP", 2; HKD = "HKD", 2;
    INR = "INR", 2; ISK = "ISK", 0; JOD = "JOD", 3; JPY = "JPY", 0;
    KRW = "KRW", 0; KWD = "KWD", 3; MXN = "MXN", 2; NOK = "NOK", 2;
    NZD = "NZD", 2; OMR = "OMR", 3; PLN = "PLN", 2; SEK = "SEK", 2;
    SGD = "SGD", 2; TND = "TND", 3; USD = "USD", 2; ZAR = "ZAR", 2;
}

impl Currency {
    const fn new_unchecked(code: &str, scale: u8) -> Self {
        let b = code.as_bytes();
        Currency {
            code: [b[0], b[1], b[2]],
            scale,
        }
    }

    /// Looks up an ISO code (upper case, as ISO writes it).
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        Currency::ALL
            .iter()
            .find(|c| c.code() == code)
            .copied()
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        // The codes are ASCII constants from the table above.
        std::str::from_utf8(&self.code).expect("currency codes are ASCII")
    }

    /// Decimal places of the minor unit (USD 2, JPY 0, KWD 3).
    pub fn scale(&self) -> u32 {
        u32::from(self.scale)
    }

    /// A number fitting in 24 bits that names this currency; used to derive
    /// the system account's id.
    pub(crate) fn as_u32(&self) -> u32 {
        u32::from_be_bytes([0, self.code[0], self.code[1], self.code[2]])
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// A positive quantity of money, valid for the currency it was checked against.
///
/// Serialized as a decimal string (`"12.50"`) so no JSON reader turns it into a
/// float.
///
/// Deserializing accepts only a plain decimal string (no exponent, no
/// number). It cannot know the currency, so whoever reads an amount from
/// outside checks it with [`Amount::new`]: the event decoder and every
/// `decide_*` function do.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Amount(#[serde(with = "rust_decimal::serde::str")] Decimal);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        parse_decimal(&text)
            .map(Amount)
            .map_err(serde::de::Error::custom)
    }
}

impl Amount {
    /// The largest amount accepted in one transfer: one trillion major units.
    pub const MAX: Decimal = Decimal::from_parts(0xD4A5_1000, 0xE8, 0, false, 0);

    /// Checks `value` against `currency`: positive, at most the currency's
    /// decimal places, at most [`Amount::MAX`]. Trailing zeros are accepted
    /// (`"10.50"` USD) and the value is kept at the currency's scale.
    pub fn new(value: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        if value <= Decimal::ZERO {
            return Err(MoneyError::NotPositive);
        }
        if value > Self::MAX {
            return Err(MoneyError::TooLarge);
        }
        let normal = value.normalize();
        if normal.scale() > currency.scale() {
            return Err(MoneyError::TooManyDecimals {
                currency,
                scale: currency.scale(),
            });
        }
        let mut scaled = normal;
        scaled.rescale(currency.scale());
        Ok(Amount(scaled))
    }

    /// The most decimal places of any currency (KWD, BHD, ...).
    pub const MAX_SCALE: u32 = 3;

    /// The text of an amount as a client writes it, as a regular
    /// expression (ECMA-262, as JSON Schema's `pattern`): what
    /// [`parse_amount`] reads and [`Amount::new`] accepts for a currency of
    /// [`Amount::MAX_SCALE`] decimals. Digits without a sign or leading
    /// zeros, at most three decimals, greater than zero, at most
    /// [`Amount::MAX`]. A currency with fewer decimals refuses more of them
    /// (`"1.005"` USD), which only the currency can tell.
    pub const PATTERN: &'static str = r"^(?:[1-9][0-9]{0,11}(?:\.[0-9]{1,3})?|1000000000000(?:\.0{1,3})?|0\.(?:[1-9][0-9]{0,2}|0[1-9][0-9]?|00[1-9]))$";

    /// Parses an amount as a client writes it ([`parse_amount`]) and checks
    /// it as [`Amount::new`] does.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        Amount::new(parse_amount(text)?, currency)
    }

    /// The value.
    pub fn value(&self) -> Decimal {
        self.0
    }
}

/// Parses an amount as a client writes it: digits, without a sign or
/// leading zeros, then at most [`Amount::MAX_SCALE`] decimals after a point
/// (`"10"`, `"0.5"`, `"10.50"`). One way to write each value, so that
/// every reader of a request sees the same number; [`Amount::PATTERN`]
/// says the same with the range. Zero and the range are
/// [`Amount::new`]'s to refuse.
pub fn parse_amount(text: &str) -> Result<Decimal, MoneyError> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let canonical = digits(whole)
        && (whole == "0" || !whole.starts_with('0'))
        && fraction.is_none_or(|f| digits(f) && f.len() <= Amount::MAX_SCALE as usize);
    canonical
        .then(|| Decimal::from_str_exact(text).ok())
        .flatten()
        .ok_or_else(|| MoneyError::NotANumber(text.to_owned()))
}

/// Parses a plain decimal number (no exponent, no thousands separators), as
/// the system writes it in events and storage.
pub fn parse_decimal(text: &str) -> Result<Decimal, MoneyError> {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+');
    plain
        .then(|| Decimal::from_str_exact(text).ok())
        .flatten()
        .ok_or_else(|| MoneyError::NotANumber(text.to_owned()))
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A signed quantity of money: a wallet's available or reserved funds, or a
/// ledger account's balance.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Balance(#[serde(with = "rust_decimal::serde::str")] Decimal);

impl Balance {
    /// Nothing.
    pub const ZERO: Balance = Balance(Decimal::ZERO);

    /// Zero written at the currency's scale (`0.00` USD, `0` JPY), so
    /// balances always print with the currency's decimals.
    pub fn zero(currency: Currency) -> Self {
        let mut zero = Decimal::ZERO;
        zero.rescale(currency.scale());
        Balance(zero)
    }

    /// Wraps a value read from storage.
    pub fn from_decimal(value: Decimal) -> Self {
        Balance(value)
    }

    /// The value.
    pub fn value(&self) -> Decimal {
        self.0
    }

    /// True below zero.
    pub fn is_negative(&self) -> bool {
        self.0 < Decimal::ZERO
    }
}

impl From<Amount> for Balance {
    fn from(a: Amount) -> Self {
        Balance(a.0)
    }
}

impl Add<Amount> for Balance {
    type Output = Balance;
    fn add(self, rhs: Amount) -> Balance {
        Balance(self.0 + rhs.0)
    }
}

impl Sub<Amount> for Balance {
    type Output = Balance;
    fn sub(self, rhs: Amount) -> Balance {
        Balance(self.0 - rhs.0)
    }
}

impl Add for Balance {
    type Output = Balance;
    fn add(self, rhs: Balance) -> Balance {
        Balance(self.0 + rhs.0)
    }
}

impl Neg for Balance {
    type Output = Balance;
    fn neg(self) -> Balance {
        Balance(-self.0)
    }
}

impl std::iter::Sum for Balance {
    fn sum<I: Iterator<Item = Balance>>(iter: I) -> Balance {
        iter.fold(Balance::ZERO, |a, b| a + b)
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Result<Amount, MoneyError> {
        Amount::parse(s, Currency::USD)
    }

    #[test]
    fn accepts_amounts_within_the_currency_scale() {
        assert_eq!(usd("10.5").unwrap().to_string(), "10.50");
        assert_eq!(usd("10.50").unwrap().to_string(), "10.50");
        assert_eq!(usd("7").unwrap().to_string(), "7.00");
        assert_eq!(Amount::parse("7", Currency::JPY).unwrap().to_string(), "7");
        assert_eq!(usd("1000000000000").unwrap().value(), Amount::MAX);
    }

    #[test]
    fn rejects_zero_negative_overscaled_and_oversized_amounts() {
        assert_eq!(usd("0"), Err(MoneyError::NotPositive));
        assert_eq!(usd("0.00"), Err(MoneyError::NotPositive));
        assert!(matches!(
            usd("0.001"),
            Err(MoneyError::TooManyDecimals { scale: 2, .. })
        ));
        assert!(matches!(
            Amount::parse("1.5", Currency::JPY),
            Err(MoneyError::TooManyDecimals { scale: 0, .. })
        ));
        assert_eq!(usd("1000000000000.01"), Err(MoneyError::TooLarge));
    }

    #[test]
    fn rejects_text_that_is_not_a_plain_decimal() {
        let bad = [
            "", "abc", "1e3", "1,000", " 1", "NaN", "1.2.3", "-1", "+1", "01", "00.5", ".5", "1.",
            "1.0000", "1_000", "\u{661}",
        ];
        for bad in bad {
            assert!(
                matches!(usd(bad), Err(MoneyError::NotANumber(_))),
                "{bad:?}"
            );
        }
        // Events and stored rows are read as the system writes them.
        assert_eq!(parse_decimal("-1.0000"), Ok(Decimal::new(-10000, 4)));
    }

    #[test]
    fn the_largest_scale_is_that_of_a_known_currency() {
        let largest = Currency::ALL.iter().map(Currency::scale).max();
        assert_eq!(largest, Some(Amount::MAX_SCALE));
    }

    proptest::proptest! {
        /// Every text the pattern allows is an amount of a currency of the
        /// largest scale. The other way round, text the pattern refuses and
        /// the code takes, is what the API fuzzer's negative cases look for.
        #[test]
        fn every_text_of_the_pattern_is_an_amount(
            text in proptest::string::string_regex(
                &Amount::PATTERN[1..Amount::PATTERN.len() - 1],
            ).expect("the pattern compiles")
        ) {
            let kwd = Amount::parse(&text, Currency::KWD);
            proptest::prop_assert!(kwd.is_ok(), "{text:?}: {kwd:?}");
        }
    }

    #[test]
    fn currencies_parse_by_code_only() {
        assert_eq!(Currency::parse("JPY").unwrap().scale(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().scale(), 3);
        assert!(Currency::parse("usd").is_err());
        assert!(Currency::parse("XXX").is_err());
        let json = serde_json::to_string(&Currency::EUR).unwrap();
        assert_eq!(json, "\"EUR\"");
        assert_eq!(
            serde_json::from_str::<Currency>(&json).unwrap(),
            Currency::EUR
        );
    }

    #[test]
    fn amounts_and_balances_serialize_as_strings() {
        let a = usd("12.3").unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"12.30\"");
        let b = Balance::ZERO - a;
        assert_eq!(serde_json::to_string(&b).unwrap(), "\"-12.30\"");
        assert!(b.is_negative());
    }
}
