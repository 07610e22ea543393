//! API idempotency: a key plus a fingerprint of the request it first came
//! with.
//!
//! The record is stored in the same unit as the transfer it created. A repeat
//! of the key is then one of: the same request after the first one answered
//! (replay that answer), the same request while the first one is still being
//! answered (in flight), or another request (reused key).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use crate::ids::{IdempotencyKey, TransferId, WalletId};
use crate::money::{Amount, Currency};
use crate::tags::Tags;
use crate::time::Timestamp;
use crate::transfer::{Transfer, TransferKind};

/// A wallet id as a fingerprint line: its lowercase hyphenated uuid.
fn uuid(id: WalletId) -> String {
    id.as_uuid().hyphenated().to_string()
}

/// An amount as a fingerprint line: exactly the currency's decimals.
fn scaled(amount: Amount, currency: Currency) -> String {
    let mut value = amount.value();
    value.rescale(currency.scale());
    value.to_string()
}

/// A stable digest of a request: two requests with the same fingerprint are
/// the same request (`"10.5"` and `"10.50"` USD included).
///
/// Version 1 is `"v1:"` followed by the lowercase hex SHA-256 of the
/// canonical text: five fields joined by `'\n'`, in this order:
///
/// 1. the kind: `transfer`, `deposit` or `withdrawal`;
/// 2. the sender wallet id and 3. the receiver wallet id, as lowercase
///    hyphenated uuids (a system account's id for the outside side);
/// 4. the amount with exactly the currency's number of decimals (`10.50`
///    USD, `1000` JPY);
/// 5. the currency's ISO code.
///
/// The encoding never depends on how a type prints or is named in code, so
/// stored fingerprints keep matching across releases. A future encoding
/// gets a new prefix; records of the old one keep their meaning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The prefix of the current encoding.
    pub const VERSION: &'static str = "v1";

    /// The fingerprint of a transfer request, after its amount was checked.
    pub fn of_transfer(
        kind: TransferKind,
        sender: WalletId,
        receiver: WalletId,
        amount: Amount,
        currency: Currency,
    ) -> Fingerprint {
        let kind = match kind {
            TransferKind::Transfer => "transfer",
            TransferKind::Deposit => "deposit",
            TransferKind::Withdrawal => "withdrawal",
            TransferKind::Hold => "hold",
        };
        Fingerprint::of_lines(&[
            kind,
            &uuid(sender),
            &uuid(receiver),
            &scaled(amount, currency),
            currency.code(),
        ])
    }

    /// The fingerprint of a hold request: the lines `hold`, the wallet, the
    /// receiver it names (empty when none), the amount and currency as for
    /// a transfer, and the expiry asked for in whole seconds.
    pub fn of_hold(
        wallet: WalletId,
        receiver: Option<WalletId>,
        amount: Amount,
        currency: Currency,
        expires_in_s: u64,
    ) -> Fingerprint {
        Fingerprint::of_lines(&[
            "hold",
            &uuid(wallet),
            &receiver.map(uuid).unwrap_or_default(),
            &scaled(amount, currency),
            currency.code(),
            &expires_in_s.to_string(),
        ])
    }

    /// The fingerprint of a capture request, with what it resolved to: the
    /// lines `capture`, the hold, the receiver, the amount and currency as
    /// for a transfer.
    pub fn of_capture(
        hold: TransferId,
        receiver: WalletId,
        amount: Amount,
        currency: Currency,
    ) -> Fingerprint {
        Fingerprint::of_lines(&[
            "capture",
            &hold.as_uuid().hyphenated().to_string(),
            &uuid(receiver),
            &scaled(amount, currency),
            currency.code(),
        ])
    }

    /// The fingerprint of a refund request: the lines `refund`, the
    /// original transfer, the amount and currency as for a transfer.
    pub fn of_refund(original: TransferId, amount: Amount, currency: Currency) -> Fingerprint {
        Fingerprint::of_lines(&[
            "refund",
            &original.as_uuid().hyphenated().to_string(),
            &scaled(amount, currency),
            currency.code(),
        ])
    }

    /// The fingerprint of a request that carries `tags` besides what this
    /// fingerprint covers: this one when it carries none (so requests
    /// without tags keep the fingerprint they always had), else the hash of
    /// this one, the reference and the metadata's canonical text
    /// ([`crate::tags::Metadata::canonical`]).
    pub fn tagged(self, tags: &Tags) -> Fingerprint {
        if tags.is_empty() {
            return self;
        }
        let reference = tags.reference.as_ref().map(|r| r.as_str()).unwrap_or("");
        let metadata = tags
            .metadata
            .as_ref()
            .map(|m| m.canonical())
            .unwrap_or_default();
        Fingerprint::of_lines(&[&self.0, "tags", reference, &metadata])
    }

    /// `"v1:"` and the hex SHA-256 of the lines joined by `'\n'`.
    fn of_lines(lines: &[&str]) -> Fingerprint {
        let canonical = lines.join("\n");
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(Self::VERSION.len() + 1 + 64);
        text.push_str(Self::VERSION);
        text.push(':');
        for byte in Sha256::digest(canonical.as_bytes()) {
            text.push(char::from(HEX[usize::from(byte >> 4)]));
            text.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        Fingerprint(text)
    }

    /// Wraps a stored fingerprint.
    pub fn from_stored(text: String) -> Fingerprint {
        Fingerprint(text)
    }

    /// The stored text: version prefix and digest.
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
    Replay(Box<Transfer>),
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
        return IdempotencyCheck::Replay(Box::new(first.clone()));
    }
    let age = (now - record.created_at).to_std().unwrap_or_default();
    if age < lease {
        IdempotencyCheck::InFlight
    } else {
        IdempotencyCheck::Replay(Box::new(current.clone()))
    }
}
