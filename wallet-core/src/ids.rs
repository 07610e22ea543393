//! Identifiers. Each is a newtype so a wallet id can never be passed where a
//! transfer id is expected.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Currency;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a uuid.
            pub const fn from_uuid(id: Uuid) -> Self {
                $name(id)
            }

            /// The uuid inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

uuid_id! {
    /// A wallet, and the ledger account of the same id.
    WalletId
}
uuid_id! {
    /// A transfer: the saga's key, the reservation's key, the posting's key and the
    /// Kafka message key.
    TransferId
}
uuid_id! {
    /// One event; consumers dedupe by it.
    EventId
}
uuid_id! {
    /// Ties together every event and log line caused by one API request.
    CorrelationId
}
uuid_id! {
    /// One running relay or retrier: the owner of the records it claims.
    WorkerId
}

/// Makes ids. Injected so the simulator's runs are reproducible.
pub trait IdGenerator: Send + Sync + 'static {
    /// A fresh, unique uuid.
    fn next_uuid(&self) -> Uuid;

    /// A fresh wallet id.
    fn wallet_id(&self) -> WalletId {
        WalletId::from_uuid(self.next_uuid())
    }
    /// A fresh transfer id.
    fn transfer_id(&self) -> TransferId {
        TransferId::from_uuid(self.next_uuid())
    }
    /// A fresh event id.
    fn event_id(&self) -> EventId {
        EventId::from_uuid(self.next_uuid())
    }
    /// A fresh correlation id.
    fn correlation_id(&self) -> CorrelationId {
        CorrelationId::from_uuid(self.next_uuid())
    }
    /// A fresh worker id.
    fn worker_id(&self) -> WorkerId {
        WorkerId::from_uuid(self.next_uuid())
    }
}

/// Time-ordered random uuids (version 7): index-friendly, unique across
/// processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn next_uuid(&self) -> Uuid {
        Uuid::now_v7()
    }
}

impl WalletId {
    /// The system account of a currency: the other side of every deposit and
    /// withdrawal. Its id is fixed (`00000000-0000-0000-0000-000000` followed
    /// by the code's ASCII bytes in hex), and its balance may go negative.
    pub fn system(currency: Currency) -> WalletId {
        WalletId(Uuid::from_u128(u128::from(currency.as_u32())))
    }

    /// The currency whose system account this is, if it is one.
    pub fn system_currency(&self) -> Option<Currency> {
        let n = self.0.as_u128();
        if n >> 24 != 0 {
            return None;
        }
        Currency::ALL
            .iter()
            .copied()
            .find(|c| u128::from(c.as_u32()) == n)
    }
}

/// The client's idempotency key: 1 to 255 visible ASCII characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

/// An idempotency key that is empty, too long or not visible ASCII.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("idempotency key must be 1 to {max} visible ASCII characters", max = IdempotencyKey::MAX_LEN)]
pub struct InvalidIdempotencyKey;

impl IdempotencyKey {
    /// The longest key accepted.
    pub const MAX_LEN: usize = 255;

    /// The keys [`IdempotencyKey::new`] accepts, as a regular expression
    /// (ECMA-262, as JSON Schema's `pattern`).
    pub const PATTERN: &'static str = "^[!-~]{1,255}$";

    /// Checks and wraps a key.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidIdempotencyKey> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.len() <= Self::MAX_LEN
            && key.bytes().all(|b| b.is_ascii_graphic());
        ok.then_some(IdempotencyKey(key))
            .ok_or(InvalidIdempotencyKey)
    }

    /// The key as the client sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = InvalidIdempotencyKey;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        IdempotencyKey::new(s)
    }
}

impl From<IdempotencyKey> for String {
    fn from(k: IdempotencyKey) -> String {
        k.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_accounts_are_fixed_per_currency_and_recognised() {
        let usd = WalletId::system(Currency::USD);
        assert_eq!(usd.to_string(), "00000000-0000-0000-0000-000000555344");
        assert_eq!(usd.system_currency(), Some(Currency::USD));
        assert_ne!(usd, WalletId::system(Currency::EUR));
        let user = WalletId::from_uuid(Uuid::from_u128(0x1_0000_0000));
        assert_eq!(user.system_currency(), None);
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        assert!(IdempotencyKey::new("order-42").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("has space").is_err());
        assert!(IdempotencyKey::new("é").is_err());
        assert!(IdempotencyKey::new("k".repeat(255)).is_ok());
        assert!(IdempotencyKey::new("k".repeat(256)).is_err());
        assert!(IdempotencyKey::PATTERN.ends_with(&format!("{{1,{}}}$", IdempotencyKey::MAX_LEN)));
    }

    proptest::proptest! {
        /// Every key the pattern allows is accepted (what the pattern
        /// refuses, the API fuzzer's negative cases send).
        #[test]
        fn every_key_of_the_pattern_is_accepted(
            key in proptest::string::string_regex(
                &IdempotencyKey::PATTERN[1..IdempotencyKey::PATTERN.len() - 1],
            ).expect("the pattern compiles")
        ) {
            proptest::prop_assert!(IdempotencyKey::new(key).is_ok());
        }
    }
}
