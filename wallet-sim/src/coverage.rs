//! Which transitions of the state machines a run reached. Observed from the
//! outside: by diffing what the read ports show before and after each step
//! (transfers, reservations, ledger outcomes), by the answers the API gave
//! (idempotency), by what the ledger store's port was handed and decided
//! (duplicates skipped), and by what reached the dead-letter topics.
//! Nothing in the core reports to the simulator.

use std::collections::BTreeMap;
use std::fmt;

use wallet_core::outcome::FailureReason;

/// A transition of one of the state machines, or a path of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transition {
    /// Transfer INITIATED -> RESERVED.
    TransferReserved,
    /// Transfer INITIATED -> FAILED: the reserve was rejected.
    TransferRejected,
    /// Transfer RESERVED -> SUCCEEDED.
    TransferSucceeded,
    /// Transfer RESERVED -> FAILED: the ledger refused it.
    TransferRefused,
    /// Transfer INITIATED -> SUCCEEDED: the reserve's answer was lost and
    /// the ledger's outcome came first.
    TransferSucceededUnanswered,
    /// Transfer INITIATED -> FAILED: the ledger refused it while the
    /// reserve's answer was lost.
    TransferRefusedUnanswered,
    /// A reservation held funds.
    ReservationReserved,
    /// A reserve was rejected, for this reason.
    ReservationRejected(FailureReason),
    /// A reservation was captured: the ledger posted it.
    ReservationCaptured,
    /// A reservation was released: the ledger refused it.
    ReservationReleased,
    /// The ledger posted a transfer.
    LedgerPosted,
    /// The ledger refused a transfer, for this reason.
    LedgerRejected(FailureReason),
    /// The ledger skipped a posting request it had seen or decided before.
    LedgerDuplicateSkipped,
    /// A new idempotency key stored its transfer.
    IdempotencyCreated,
    /// A repeated key got its first answer again.
    IdempotencyReplayed,
    /// A repeated key met its first request still in flight (409).
    IdempotencyInFlight,
    /// A key came back with another request (422).
    IdempotencyReused,
    /// A repeated key whose first request never answered, after the lease:
    /// the transfer as it now is.
    IdempotencyLeaseExpired,
    /// A refusal the wallet store recorded reached `wallet-service.dlq`.
    DeadLetterWalletStore,
    /// A refusal the transaction store recorded reached
    /// `transaction-service.dlq`.
    DeadLetterTransferStore,
    /// A consumer runner dead-lettered a message it could not hand over.
    DeadLetterPoison,
    /// Hold INITIATED -> HELD.
    HoldHeld,
    /// Hold HELD -> CAPTURED.
    HoldCaptured,
    /// Hold HELD -> VOIDED.
    HoldVoided,
    /// Hold HELD -> EXPIRED.
    HoldExpired,
    /// A hold's reservation held funds.
    ReservationHeld,
    /// A hold's reservation was converted: a capture took its funds.
    ReservationConverted,
    /// A hold's reservation was voided.
    ReservationVoided,
    /// A hold's reservation expired.
    ReservationExpired,
    /// A refund reached SUCCEEDED.
    RefundSucceeded,
    /// A refund ended FAILED (its payer lacked the money).
    RefundFailed,
}

impl Transition {
    /// Every transition a run is expected to reach, in report order.
    pub const ALL: [Transition; 41] = [
        Transition::TransferReserved,
        Transition::TransferRejected,
        Transition::TransferSucceeded,
        Transition::TransferRefused,
        Transition::TransferSucceededUnanswered,
        Transition::TransferRefusedUnanswered,
        Transition::ReservationReserved,
        Transition::ReservationRejected(FailureReason::InsufficientFunds),
        Transition::ReservationRejected(FailureReason::WalletNotFound),
        Transition::ReservationRejected(FailureReason::SameWallet),
        Transition::ReservationRejected(FailureReason::CurrencyMismatch),
        Transition::ReservationRejected(FailureReason::InvalidAmount),
        Transition::ReservationCaptured,
        Transition::ReservationReleased,
        Transition::LedgerPosted,
        Transition::LedgerRejected(FailureReason::CurrencyMismatch),
        Transition::LedgerRejected(FailureReason::SameWallet),
        Transition::LedgerRejected(FailureReason::InvalidAmount),
        Transition::LedgerDuplicateSkipped,
        Transition::IdempotencyCreated,
        Transition::IdempotencyReplayed,
        Transition::IdempotencyInFlight,
        Transition::IdempotencyReused,
        Transition::IdempotencyLeaseExpired,
        Transition::DeadLetterWalletStore,
        Transition::DeadLetterTransferStore,
        Transition::DeadLetterPoison,
        Transition::HoldHeld,
        Transition::HoldCaptured,
        Transition::HoldVoided,
        Transition::HoldExpired,
        Transition::ReservationHeld,
        Transition::ReservationConverted,
        Transition::ReservationVoided,
        Transition::ReservationExpired,
        Transition::ReservationRejected(FailureReason::HoldExpired),
        Transition::ReservationRejected(FailureReason::HoldVoided),
        Transition::ReservationRejected(FailureReason::HoldCaptured),
        Transition::ReservationRejected(FailureReason::ExceedsHold),
        Transition::RefundSucceeded,
        Transition::RefundFailed,
    ];

    /// The row name in tables.
    pub fn name(self) -> String {
        match self {
            Transition::TransferReserved => "transfer INITIATED->RESERVED".into(),
            Transition::TransferRejected => "transfer INITIATED->FAILED (reserve rejected)".into(),
            Transition::TransferSucceeded => "transfer RESERVED->SUCCEEDED".into(),
            Transition::TransferRefused => "transfer RESERVED->FAILED (ledger refused)".into(),
            Transition::TransferSucceededUnanswered => {
                "transfer INITIATED->SUCCEEDED (answer lost)".into()
            }
            Transition::TransferRefusedUnanswered => {
                "transfer INITIATED->FAILED (ledger refused, answer lost)".into()
            }
            Transition::ReservationReserved => "reservation reserved".into(),
            Transition::ReservationRejected(r) => format!("reservation rejected {r}"),
            Transition::ReservationCaptured => "reservation captured".into(),
            Transition::ReservationReleased => "reservation released".into(),
            Transition::LedgerPosted => "ledger posted".into(),
            Transition::LedgerRejected(r) => format!("ledger rejected {r}"),
            Transition::LedgerDuplicateSkipped => "ledger duplicate skipped".into(),
            Transition::IdempotencyCreated => "idempotency created".into(),
            Transition::IdempotencyReplayed => "idempotency replayed".into(),
            Transition::IdempotencyInFlight => "idempotency in flight".into(),
            Transition::IdempotencyReused => "idempotency key reused".into(),
            Transition::IdempotencyLeaseExpired => "idempotency lease expired".into(),
            Transition::DeadLetterWalletStore => "dead letter by wallet store".into(),
            Transition::DeadLetterTransferStore => "dead letter by transfer store".into(),
            Transition::DeadLetterPoison => "dead letter by a runner (poison)".into(),
            Transition::HoldHeld => "hold INITIATED->HELD".into(),
            Transition::HoldCaptured => "hold HELD->CAPTURED".into(),
            Transition::HoldVoided => "hold HELD->VOIDED".into(),
            Transition::HoldExpired => "hold HELD->EXPIRED".into(),
            Transition::ReservationHeld => "reservation held (hold)".into(),
            Transition::ReservationConverted => "reservation converted (hold captured)".into(),
            Transition::ReservationVoided => "reservation voided (hold)".into(),
            Transition::ReservationExpired => "reservation expired (hold)".into(),
            Transition::RefundSucceeded => "refund SUCCEEDED".into(),
            Transition::RefundFailed => "refund FAILED".into(),
        }
    }
}

impl Transition {
    /// Its place in [`Transition::ALL`] (after every listed one if not
    /// listed), then its name: the order of tables and maps.
    fn order(&self) -> (usize, u8, &'static str) {
        let place = Transition::ALL.iter().position(|t| t == self);
        let (machine, reason) = match self {
            Transition::ReservationRejected(r) => (1, r.code()),
            Transition::LedgerRejected(r) => (2, r.code()),
            _ => (0, ""),
        };
        (place.unwrap_or(usize::MAX), machine, reason)
    }
}

impl PartialOrd for Transition {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Transition {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Counts per transition.
pub type Coverage = BTreeMap<Transition, u64>;

/// Adds `n` to a transition's count.
pub(crate) fn count(coverage: &mut Coverage, transition: Transition, n: u64) {
    if n > 0 {
        *coverage.entry(transition).or_default() += n;
    }
}
