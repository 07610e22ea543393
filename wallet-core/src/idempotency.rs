//! API idempotency: a key plus a fingerprint of the request it first came
//! with.
//!
//! The record is stored in the same unit as the transfer it created. A repeat
//! of the key is then one of: the same request after the first one answered
//! (replay that answer), the same request while the first one is still being
//! answered (in flight), or another request (reused key).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::ids::{IdempotencyKey, TransferId, WalletId};
use crate::money::{Amount, Currency};
use crate::transfer::{Transfer, TransferKind};

/// A canonical text of a request: two requests with the same fingerprint are
/// the same request (`"10.5"` and `"10.50"` USD included).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint of a transfer request, after its amount was checked.
    pub fn of_transfer(
        kind: TransferKind,
        sender: WalletId,
        receiver: WalletId,
        amount: Amount,
        currency: Currency,
    ) -> Fingerprint {
        Fingerprint(format!("{kind:?}|{sender}|{receiver}|{amount}|{currency}"))
    }

    /// Wraps a stored fingerprint.
    pub fn from_stored(text: String) -> Fingerprint {
        Fingerprint(text)
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the transaction service remembers of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The client's key.
    pub key: IdempotencyKey,
    /// The request it first came with.
    pub fingerprint: Fingerprint,
    /// The transfer that request created.
    pub transfer_id: TransferId,
    /// When the first request arrived.
    pub created_at: Timestamp,
    /// The transfer as the first response showed it; `None` while that
    /// response is still being prepared.
    pub response: Option<Transfer>,
}

/// The outcome on a key that was seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyCheck {
    /// Same request: answer with this transfer, marked as a replay.
    Replay(Transfer),
    /// Same request, and the first is still being answered: HTTP 409, retry
    /// later.
    InFlight,
    /// Another request under the same key: HTTP 422, do not retry.
    Reused,
}

/// Decides what a repeated key gets. `current` is the transfer as stored now.
/// A first request that has not answered within `lease` is taken to have died
/// (the retrier finishes its transfer), and repeats get the current state.
pub fn check(
    record: &IdempotencyRecord,
    current: &Transfer,
    fingerprint: &Fingerprint,
    now: Timestamp,
    lease: Duration,
) -> IdempotencyCheck {
    if &record.fingerprint != fingerprint {
        return IdempotencyCheck::Reused;
    }
    if let Some(first) = &record.response {
        return IdempotencyCheck::Replay(first.clone());
    }
    let age = (now - record.created_at).to_std().unwrap_or_default();
    if age < lease {
        IdempotencyCheck::InFlight
    } else {
        IdempotencyCheck::Replay(current.clone())
    }
}
