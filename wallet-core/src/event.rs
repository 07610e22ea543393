//! Events between the services and their versioned JSON envelope.
//!
//! ```json
//! {"event_id":"…","event_type":"WalletReserved","schema_version":1,
//!  "transfer_id":"…","correlation_id":"…","causation_id":null,
//!  "occurred_at":"2026-01-01T00:00:00Z","producer":"wallet-service",
//!  "payload":{"sender_wallet_id":"…","receiver_wallet_id":"…","amount":"10.00","currency":"USD"}}
//! ```
//!
//! The Kafka key of every event is its transfer id, so the events of one
//! transfer stay in order.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ids::{CorrelationId, EventId, TransferId, WalletId};
use crate::ledger::PostingRequest;
use crate::money::{Amount, Currency};
use crate::outcome::{FailureReason, LedgerOutcome};
use crate::tags::Tags;
use crate::time::Timestamp;
use crate::trace::TraceParent;
use crate::wallet::{
    Reservation, ReservationState, ReserveBatch, ReserveRequest, Wallet, decide_reserves,
};

/// The topic of `WalletReserved`, consumed by the ledger service.
pub const WALLET_EVENTS: &str = "wallet.events";
/// The topic of `LedgerSucceeded` and `LedgerFailed`, consumed by the wallet
/// and transaction services.
pub const LEDGER_EVENTS: &str = "ledger.events";
/// The consumer groups of the three services (and the names their dead
/// letters and metrics carry).
pub mod groups {
    /// The ledger service, reading `wallet.events`.
    pub const LEDGER: &str = "ledger-service";
    /// The wallet service, reading `ledger.events`.
    pub const WALLET: &str = "wallet-service";
    /// The transaction service, reading `ledger.events`.
    pub const TRANSACTION: &str = "transaction-service";
}

/// The schema version this build writes and the highest it reads.
pub const SCHEMA_VERSION: u16 = 1;

/// Which service wrote an event.
pub mod producer {
    /// The wallet service.
    pub const WALLET: &str = "wallet-service";
    /// The ledger service.
    pub const LEDGER: &str = "ledger-service";
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum Event {
    /// The sender's funds are held; the ledger may post.
    WalletReserved(PostingFacts),
    /// The ledger posted the transfer.
    LedgerSucceeded(PostingFacts),
    /// The ledger refused the transfer.
    LedgerFailed(LedgerFailure),
}

/// Who pays whom how much: the payload of `WalletReserved` and
/// `LedgerSucceeded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostingFacts {
    /// Debited.
    pub sender_wallet_id: WalletId,
    /// Credited.
    pub receiver_wallet_id: WalletId,
    /// How much, as a decimal string.
    pub amount: Amount,
    /// ISO code.
    pub currency: Currency,
    /// The transfer's reference and metadata, when it has them.
    #[serde(flatten)]
    pub tags: Tags,
}

/// The payload of `LedgerFailed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerFailure {
    /// Why nothing was posted.
    pub reason: FailureReason,
}

impl Event {
    /// The `event_type` string.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::WalletReserved(_) => "WalletReserved",
            Event::LedgerSucceeded(_) => "LedgerSucceeded",
            Event::LedgerFailed(_) => "LedgerFailed",
        }
    }

    /// The ledger's outcome, for `LedgerSucceeded` and `LedgerFailed`.
    pub fn ledger_outcome(&self) -> Option<LedgerOutcome> {
        match self {
            Event::LedgerSucceeded(_) => Some(LedgerOutcome::Succeeded),
            Event::LedgerFailed(f) => Some(LedgerOutcome::Failed(f.reason)),
            Event::WalletReserved(_) => None,
        }
    }
}

/// One event with its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per event; consumers dedupe by it.
    pub event_id: EventId,
    /// Type and payload.
    #[serde(flatten)]
    pub event: Event,
    /// Version of the payload's schema.
    pub schema_version: u16,
    /// The transfer, also the Kafka key.
    pub transfer_id: TransferId,
    /// Shared by every event of the transfer.
    pub correlation_id: CorrelationId,
    /// The event that caused this one, if any.
    pub causation_id: Option<EventId>,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// Which service wrote it.
    pub producer: Cow<'static, str>,
    /// The trace context of the change that wrote it, if the writing
    /// process traces: kept with its outbox record and sent as the
    /// record's `traceparent` header, never in the JSON.
    #[serde(skip)]
    pub trace: Option<TraceParent>,
}

/// Why bytes from a topic are not an event this build can handle. Permanent
/// (the consumer dead-letters the message), except
/// [`DecodeError::NewerVersion`], which waits for a newer build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON, or not an envelope.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// An `event_type` this build does not know.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// A `schema_version` of 0, which no build writes.
    #[error("unsupported schema version {0}")]
    UnsupportedVersion(u16),
    /// A `schema_version` newer than the reader reads: written by a newer
    /// build. Not poison: the consumer holds it (no commit, no dead letter)
    /// until a build that reads it takes over.
    #[error("schema version {0} is newer than this build reads")]
    NewerVersion(u16),
    /// Well-formed, but its amount is not valid for its currency.
    #[error("invalid amount in event: {0}")]
    InvalidAmount(String),
}

#[derive(Deserialize)]
struct Head {
    event_type: String,
    schema_version: u16,
}

impl Envelope {
    /// Builds an envelope of the current schema version.
    pub fn new(
        event_id: EventId,
        event: Event,
        transfer_id: TransferId,
        correlation_id: CorrelationId,
        causation_id: Option<EventId>,
        occurred_at: Timestamp,
        producer: impl Into<Cow<'static, str>>,
    ) -> Envelope {
        Envelope {
            event_id,
            event,
            schema_version: SCHEMA_VERSION,
            transfer_id,
            correlation_id,
            causation_id,
            occurred_at,
            producer: producer.into(),
            trace: None,
        }
    }

    /// The same envelope with the trace context `trace`.
    pub fn traced(self, trace: Option<TraceParent>) -> Envelope {
        Envelope { trace, ..self }
    }

    /// The JSON bytes written to the topic.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("envelopes always serialize")
    }

    /// Reads an envelope, refusing unknown types, schema versions it cannot
    /// read (see [`DecodeError::NewerVersion`]) and
    /// amounts that are not valid for their currency.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        Envelope::decode_up_to(bytes, SCHEMA_VERSION)
    }

    /// [`Envelope::decode`] by a reader of every schema version up to
    /// `newest`: [`SCHEMA_VERSION`] for this build, one more for a process
    /// rehearsing the next build (see docs/events.md, "Compatibility").
    pub fn decode_up_to(bytes: &[u8], newest: u16) -> Result<Envelope, DecodeError> {
        let head: Head =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !["WalletReserved", "LedgerSucceeded", "LedgerFailed"].contains(&&*head.event_type) {
            return Err(DecodeError::UnknownType(head.event_type));
        }
        if head.schema_version == 0 {
            return Err(DecodeError::UnsupportedVersion(head.schema_version));
        }
        if head.schema_version > newest {
            return Err(DecodeError::NewerVersion(head.schema_version));
        }
        let mut envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if let Event::WalletReserved(f) | Event::LedgerSucceeded(f) = &mut envelope.event {
            // Checked against the currency and kept at its scale, as the API
            // keeps it, so "10.5" USD reads as 10.50.
            f.amount = Amount::new(f.amount.value(), f.currency)
                .map_err(|e| DecodeError::InvalidAmount(e.to_string()))?;
        }
        Ok(envelope)
    }

    /// The posting request a `WalletReserved` event carries.
    pub fn posting_request(&self) -> Option<PostingRequest> {
        match &self.event {
            Event::WalletReserved(f) => Some(PostingRequest {
                transfer_id: self.transfer_id,
                sender_wallet_id: f.sender_wallet_id,
                receiver_wallet_id: f.receiver_wallet_id,
                amount: f.amount,
                currency: f.currency,
                tags: f.tags.clone(),
            }),
            _ => None,
        }
    }
}

/// An event as a store operation receives it: the envelope, and the body the
/// operation reads from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound<T> {
    /// The whole event: its id is the inbox's dedupe key, its correlation id
    /// is copied into what it causes, and a refusal dead-letters it as is.
    pub envelope: Envelope,
    /// What the operation reads from it.
    pub body: T,
}

impl<T> Inbound<T> {
    /// The event's id.
    pub fn event_id(&self) -> EventId {
        self.envelope.event_id
    }

    /// The transfer it concerns.
    pub fn transfer_id(&self) -> TransferId {
        self.envelope.transfer_id
    }
}

/// The id, time and trace context of an event a store operation may write
/// to its outbox. Made by the caller, so stores never generate ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStamp {
    /// The new event's id.
    pub event_id: EventId,
    /// When it happens.
    pub at: Timestamp,
    /// The trace context of the change that writes it, if any.
    pub trace: Option<TraceParent>,
}

/// One reserve of a batch, with the stamp its `WalletReserved` event gets
/// if it reserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StampedReserve {
    /// What to reserve.
    pub request: ReserveRequest,
    /// The id and time of its event, and the time of its reservation.
    pub stamp: EventStamp,
}

/// A batch of reserves decided ([`crate::wallet::decide_reserves`], each
/// at its stamp's time), and the `WalletReserved` event of each
/// reservation, in the batch's order: what a store writes in one unit.
pub fn decide_stamped_reserves(
    batch: &[StampedReserve],
    wallets: HashMap<WalletId, Wallet>,
    existing: HashMap<TransferId, Reservation>,
) -> (ReserveBatch, Vec<Envelope>) {
    let decided = decide_reserves(
        batch.iter().map(|r| (&r.request, r.stamp.at)),
        wallets,
        existing,
    );
    let events = decided
        .reservations
        .iter()
        .filter(|(_, r)| r.state == ReservationState::Reserved)
        .map(|(at, r)| Envelope::wallet_reserved(r, batch[*at].stamp))
        .collect();
    (decided, events)
}

/// What a store writes to its outbox for the relay to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// An event for the service's topic.
    Event(Envelope),
    /// A consumed event the store refused, with why, for the consumer
    /// group's dead-letter topic. Written in the unit that refused it, so it
    /// cannot be lost between the refusal and its publication.
    DeadLetter {
        /// The refused event, as received.
        event: Envelope,
        /// Why it was refused.
        reason: String,
    },
}

impl Outgoing {
    /// The transfer it concerns: its partitioning key.
    pub fn transfer_id(&self) -> TransferId {
        self.envelope().transfer_id
    }

    /// The trace context it was written in: an event's own, or the
    /// refused event's.
    pub fn trace(&self) -> Option<TraceParent> {
        self.envelope().trace
    }

    /// The event it carries, or the one it refuses.
    pub fn envelope(&self) -> &Envelope {
        match self {
            Outgoing::Event(e) | Outgoing::DeadLetter { event: e, .. } => e,
        }
    }
}

impl Envelope {
    /// The `WalletReserved` event of a new reservation.
    pub fn wallet_reserved(reservation: &Reservation, stamp: EventStamp) -> Envelope {
        let r = &reservation.request;
        Envelope::new(
            stamp.event_id,
            Event::WalletReserved(PostingFacts {
                sender_wallet_id: r.sender_wallet_id,
                receiver_wallet_id: r.receiver_wallet_id,
                amount: r.amount,
                currency: r.currency,
                tags: r.tags.clone(),
            }),
            r.transfer_id,
            r.correlation_id,
            None,
            stamp.at,
            producer::WALLET,
        )
        .traced(stamp.trace)
    }

    /// The `LedgerSucceeded` or `LedgerFailed` event answering a `WalletReserved`.
    pub fn ledger_decided(
        cause: &Inbound<PostingRequest>,
        outcome: LedgerOutcome,
        stamp: EventStamp,
    ) -> Envelope {
        let r = &cause.body;
        let cause = &cause.envelope;
        let event = match outcome {
            LedgerOutcome::Succeeded => Event::LedgerSucceeded(PostingFacts {
                sender_wallet_id: r.sender_wallet_id,
                receiver_wallet_id: r.receiver_wallet_id,
                amount: r.amount,
                currency: r.currency,
                tags: r.tags.clone(),
            }),
            LedgerOutcome::Failed(reason) => Event::LedgerFailed(LedgerFailure { reason }),
        };
        Envelope::new(
            stamp.event_id,
            event,
            cause.transfer_id,
            cause.correlation_id,
            Some(cause.event_id),
            stamp.at,
            producer::LEDGER,
        )
        .traced(stamp.trace)
    }
}
