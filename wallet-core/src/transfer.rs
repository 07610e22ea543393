//! The transfer saga as the transaction service sees it.
//!
//! ```text
//! INITIATED --reserved--> RESERVED --ledger succeeded--> SUCCEEDED
//!     |                      |
//!     |                      +------ledger failed------> FAILED
//!     +--reserve rejected / ledger failed--------------> FAILED
//!     +--ledger succeeded (reserve answer was lost)----> SUCCEEDED
//! ```
//!
//! A hold (kind [`TransferKind::Hold`]) reserves without moving money and
//! waits for one of three ends, which the wallet service decides:
//!
//! ```text
//! INITIATED --reserved--> HELD --a capture reserved--> CAPTURED
//!     |                     +----voided--------------> VOIDED
//!     |                     +----expired-------------> EXPIRED
//!     +--reserve rejected----------------------------> FAILED
//! ```
//!
//! A capture is a transfer of its own (its `hold_id` names the hold) that
//! takes its funds from the hold and goes through the saga as any other.
//!
//! A terminal transfer never moves again: late and duplicate events are
//! refused with [`TransferRejection::Terminal`], which callers treat as a no-op.

use serde::{Deserialize, Serialize};

use crate::ids::{CorrelationId, IdempotencyKey, TransferId, WalletId};
use crate::money::{Amount, Balance, Currency};
use crate::outcome::{FailureReason, LedgerOutcome, ReserveOutcome};
use crate::tags::Tags;
use crate::time::Timestamp;

/// Where the money comes from and goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Wallet to wallet.
    Transfer,
    /// The currency's system account to a wallet.
    Deposit,
    /// A wallet to the currency's system account.
    Withdrawal,
    /// Funds of a wallet set aside for a later capture, void or expiry;
    /// no money moves until a capture does.
    Hold,
}

impl TransferKind {
    /// Whether money may move from `sender` to `receiver` in a transfer of
    /// this kind. A currency's system account sends deposits and receives
    /// withdrawals and takes no other part: a transfer is between two user
    /// wallets, a deposit comes from a system account into a user wallet,
    /// a withdrawal goes the other way. (Whose system account, and whether
    /// the wallets exist, are other checks.)
    pub fn allows(self, sender: WalletId, receiver: WalletId) -> bool {
        let system = |id: WalletId| id.system_currency().is_some();
        match self {
            TransferKind::Transfer | TransferKind::Hold => !system(sender) && !system(receiver),
            TransferKind::Deposit => system(sender) && !system(receiver),
            TransferKind::Withdrawal => !system(sender) && system(receiver),
        }
    }

    /// The kind of a refund of a transfer of this kind: money going back
    /// the other way. A deposit's refund is a withdrawal and the other way
    /// round; a hold moves no money and has no refund.
    pub fn reversed(self) -> Option<TransferKind> {
        match self {
            TransferKind::Transfer => Some(TransferKind::Transfer),
            TransferKind::Deposit => Some(TransferKind::Withdrawal),
            TransferKind::Withdrawal => Some(TransferKind::Deposit),
            TransferKind::Hold => None,
        }
    }

    /// The kind these parties make: a deposit from a system account, a
    /// withdrawal to one, a transfer otherwise. For test data and reading
    /// back what was stored before requests said their kind; a request
    /// carries the kind of the transfer it is for, never one guessed from
    /// its parties.
    pub fn between(sender: WalletId, receiver: WalletId) -> TransferKind {
        match (sender.system_currency(), receiver.system_currency()) {
            (Some(_), _) => TransferKind::Deposit,
            (None, Some(_)) => TransferKind::Withdrawal,
            (None, None) => TransferKind::Transfer,
        }
    }
}

/// The saga's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferStatus {
    /// Stored; the reserve has no definite answer yet.
    Initiated,
    /// The sender's funds are held; waiting for the ledger.
    Reserved,
    /// Posted in the ledger. Terminal.
    Succeeded,
    /// Refused by the wallet or the ledger; nothing moved. Terminal.
    Failed,
    /// A hold's funds are reserved; waiting for a capture, a void or its
    /// expiry.
    Held,
    /// A hold a capture took its funds from (the rest went back). Terminal.
    Captured,
    /// A hold voided before its expiry; its funds went back. Terminal.
    Voided,
    /// A hold that expired uncaptured; its funds went back. Terminal.
    Expired,
}

impl TransferStatus {
    /// SUCCEEDED or FAILED, or a hold's end: CAPTURED, VOIDED or EXPIRED.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            TransferStatus::Initiated | TransferStatus::Reserved | TransferStatus::Held
        )
    }

    /// The upper-case name used in the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransferStatus::Initiated => "INITIATED",
            TransferStatus::Reserved => "RESERVED",
            TransferStatus::Succeeded => "SUCCEEDED",
            TransferStatus::Failed => "FAILED",
            TransferStatus::Held => "HELD",
            TransferStatus::Captured => "CAPTURED",
            TransferStatus::Voided => "VOIDED",
            TransferStatus::Expired => "EXPIRED",
        }
    }
}

/// How long ago a transfer that is not terminal was created: the buckets of
/// [`Unfinished`]. A bucket holds the ages from its lower bound up to, not
/// including, the next one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AgeBucket {
    /// Under a minute: the saga at work.
    UnderMinute,
    /// One to five minutes: the retrier or a consumer behind.
    MinutesToFive,
    /// Five minutes to an hour: stuck (`walletctl audit` flags these by
    /// default).
    FiveToHour,
    /// An hour or more.
    HourOrMore,
}

impl AgeBucket {
    /// Every bucket, youngest first.
    pub const ALL: [AgeBucket; 4] = [
        AgeBucket::UnderMinute,
        AgeBucket::MinutesToFive,
        AgeBucket::FiveToHour,
        AgeBucket::HourOrMore,
    ];

    /// The youngest age in the bucket.
    pub fn lower_bound(self) -> chrono::TimeDelta {
        match self {
            AgeBucket::UnderMinute => chrono::TimeDelta::zero(),
            AgeBucket::MinutesToFive => chrono::TimeDelta::minutes(1),
            AgeBucket::FiveToHour => chrono::TimeDelta::minutes(5),
            AgeBucket::HourOrMore => chrono::TimeDelta::hours(1),
        }
    }

    /// The bucket of a transfer created at `created_at`, at `now`; a
    /// creation time ahead of `now` (clocks apart) counts as under a
    /// minute.
    pub fn of(created_at: Timestamp, now: Timestamp) -> AgeBucket {
        let age = now - created_at;
        AgeBucket::ALL
            .into_iter()
            .rev()
            .find(|bucket| age >= bucket.lower_bound())
            .unwrap_or(AgeBucket::UnderMinute)
    }

    /// Its label in the `wallet_transfers_unfinished` gauge.
    pub fn label(self) -> &'static str {
        match self {
            AgeBucket::UnderMinute => "lt_1m",
            AgeBucket::MinutesToFive => "1m_5m",
            AgeBucket::FiveToHour => "5m_1h",
            AgeBucket::HourOrMore => "gt_1h",
        }
    }
}

/// The transfers not terminal at a moment, counted by status and
/// [`AgeBucket`]: the transaction service's gauge of what is in flight and
/// for how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// INITIATED transfers, by bucket (in the order of [`AgeBucket::ALL`]).
    pub initiated: [u64; 4],
    /// RESERVED transfers, by bucket.
    pub reserved: [u64; 4],
}

impl Unfinished {
    /// The transfers of `status` in `bucket`; none for a terminal status,
    /// nor for HELD (a hold waits for its client by design, up to its
    /// expiry).
    pub fn count(&self, status: TransferStatus, bucket: AgeBucket) -> u64 {
        match status {
            TransferStatus::Initiated => self.initiated[bucket as usize],
            TransferStatus::Reserved => self.reserved[bucket as usize],
            _ => 0,
        }
    }

    /// Counts `transfer`, at `now`, if it is INITIATED or RESERVED.
    pub fn add(&mut self, transfer: &Transfer, now: Timestamp) {
        let bucket = AgeBucket::of(transfer.created_at, now) as usize;
        match transfer.status {
            TransferStatus::Initiated => self.initiated[bucket] += 1,
            TransferStatus::Reserved => self.reserved[bucket] += 1,
            _ => {}
        }
    }
}

/// A transfer as the transaction service stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Its id.
    pub id: TransferId,
    /// Transfer, deposit or withdrawal.
    pub kind: TransferKind,
    /// Where the saga stands.
    pub status: TransferStatus,
    /// Set when FAILED.
    pub failure_reason: Option<FailureReason>,
    /// Debited wallet (the system account for a deposit).
    pub sender_wallet_id: WalletId,
    /// Credited wallet (the system account for a withdrawal). A hold
    /// names the wallet its capture goes to by default, or its own wallet
    /// when it names none ([`Transfer::hold_receiver`]).
    pub receiver_wallet_id: WalletId,
    /// How much.
    pub amount: Amount,
    /// In which currency.
    pub currency: Currency,
    /// Shared by every event of this transfer.
    pub correlation_id: CorrelationId,
    /// The client's key.
    pub idempotency_key: IdempotencyKey,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When its status last changed.
    pub updated_at: Timestamp,
    /// A hold's: when it expires unless captured or voided before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// A capture's: the hold it takes its funds from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<TransferId>,
    /// A CAPTURED hold's: the capture that took its funds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_by: Option<TransferId>,
    /// A refund's: the SUCCEEDED transfer whose money it sends back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_of: Option<TransferId>,
    /// The client's reference and metadata.
    #[serde(flatten)]
    pub tags: Tags,
}

/// Why a refund is refused before anything is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefundRejection {
    /// Only a SUCCEEDED transfer has money to send back.
    #[error("the transfer is {0:?}, not SUCCEEDED")]
    NotSucceeded(TransferStatus),
    /// A hold is not refunded (its capture is): it moved no money.
    #[error("a hold is not refunded; refund its capture")]
    Hold,
    /// A refund is not refunded: a new transfer sends its money on.
    #[error("a refund is not refunded")]
    Refund,
    /// The refunds would send back more than the transfer moved.
    #[error("at most {refundable} more can be refunded")]
    Exceeds {
        /// What is left to refund: the amount less the refunds not FAILED.
        refundable: Balance,
    },
}

/// Every rule of a refund of `original` by `amount`, given the refunds it
/// has (those FAILED sent nothing back and do not count; those not yet
/// decided do, so two refunds at once never exceed it together). An
/// adapter decides under a lock on the original, so refunds of one
/// transfer are decided one at a time.
pub fn decide_refund(
    original: &Transfer,
    refunds: &[Transfer],
    amount: Amount,
) -> Result<(), RefundRejection> {
    if original.kind == TransferKind::Hold {
        return Err(RefundRejection::Hold);
    }
    if original.refund_of.is_some() {
        return Err(RefundRejection::Refund);
    }
    if original.status != TransferStatus::Succeeded {
        return Err(RefundRejection::NotSucceeded(original.status));
    }
    let refunded = refunds
        .iter()
        .filter(|r| r.status != TransferStatus::Failed)
        .fold(Balance::zero(original.currency), |sum, r| sum + r.amount);
    let refundable = Balance::from(original.amount) + -refunded;
    if Balance::from(amount) > refundable {
        return Err(RefundRejection::Exceeds { refundable });
    }
    Ok(())
}

impl Transfer {
    /// The wallet a reference of this transfer is unique in: the user
    /// wallet whose money leaves, or for a deposit the one it enters.
    pub fn reference_wallet(&self) -> WalletId {
        match self.sender_wallet_id.system_currency() {
            Some(_) => self.receiver_wallet_id,
            None => self.sender_wallet_id,
        }
    }

    /// A hold's receiver, if it names one: the wallet a capture that names
    /// none pays. (A hold that names none stores its own wallet.)
    pub fn hold_receiver(&self) -> Option<WalletId> {
        (self.receiver_wallet_id != self.sender_wallet_id).then_some(self.receiver_wallet_id)
    }
}

/// How a hold ended, as the wallet service decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "end", content = "by", rename_all = "snake_case")]
pub enum HoldEnd {
    /// A capture (this transfer) took its funds.
    Captured(TransferId),
    /// Voided before its expiry.
    Voided,
    /// Expired uncaptured.
    Expired,
}

/// What the transaction service learns about a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// The wallet service's definite answer to the reserve.
    RecordReserve(ReserveOutcome),
    /// The ledger's outcome.
    RecordLedger(LedgerOutcome),
    /// A hold's end, decided by the wallet service.
    EndHold(HoldEnd),
}

impl TransferCommand {
    /// What this command, applied to `capture`, tells of the hold the
    /// capture takes its funds from: a capture the wallet service reserved
    /// (or the ledger decided, which it does only on reserved funds) took
    /// the hold; one it rejected because the hold had expired or been
    /// voided tells that end. `None` for a transfer that is no capture, and
    /// for every other answer. A store applies the end to the hold
    /// ([`TransferCommand::EndHold`]) in the unit that moves the capture.
    pub fn hold_end(&self, capture: &Transfer) -> Option<(TransferId, HoldEnd)> {
        let hold = capture.hold_id?;
        let end = match self {
            TransferCommand::RecordReserve(ReserveOutcome::Reserved)
            | TransferCommand::RecordLedger(_) => HoldEnd::Captured(capture.id),
            TransferCommand::RecordReserve(ReserveOutcome::Rejected(
                FailureReason::HoldExpired,
            )) => HoldEnd::Expired,
            TransferCommand::RecordReserve(ReserveOutcome::Rejected(FailureReason::HoldVoided)) => {
                HoldEnd::Voided
            }
            _ => return None,
        };
        Some((hold, end))
    }
}

/// A change of a transfer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferEvent {
    /// INITIATED -> RESERVED.
    Reserved,
    /// INITIATED -> HELD (a hold).
    Held,
    /// -> SUCCEEDED.
    Succeeded,
    /// -> FAILED.
    Failed(FailureReason),
    /// HELD -> CAPTURED, VOIDED or EXPIRED.
    HoldEnded(HoldEnd),
}

/// Why a command does not move a transfer. None of these is a fault of the
/// caller: a consumer acknowledges the event and moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransferRejection {
    /// The transfer is SUCCEEDED or FAILED already (late or duplicate event).
    #[error("transfer is already {0:?}")]
    Terminal(TransferStatus),
    /// A second "reserved" answer (the retrier and the request both got one).
    #[error("transfer is already reserved")]
    AlreadyReserved,
    /// The wallet service said "rejected" after it had said "reserved". The
    /// wallet service returns the first outcome for a transfer id, so this
    /// means a bug or tampering: it is logged and ignored.
    #[error("reserve rejected after it had been reserved")]
    Contradiction,
    /// A hold's end for a transfer that is not a HELD hold: a hold not
    /// decided yet (INITIATED), or no hold at all.
    #[error("transfer is not a held hold")]
    NotHeld,
}

impl Transfer {
    /// Holds every rule of the saga's state machine.
    pub fn decide(&self, command: &TransferCommand) -> Result<TransferEvent, TransferRejection> {
        use TransferStatus::*;
        if self.status.is_terminal() {
            return Err(TransferRejection::Terminal(self.status));
        }
        let hold = self.kind == TransferKind::Hold;
        match (self.status, command) {
            (Initiated, TransferCommand::RecordReserve(ReserveOutcome::Reserved)) if hold => {
                Ok(TransferEvent::Held)
            }
            (Initiated, TransferCommand::RecordReserve(ReserveOutcome::Reserved)) => {
                Ok(TransferEvent::Reserved)
            }
            (Initiated, TransferCommand::RecordReserve(ReserveOutcome::Rejected(reason))) => {
                Ok(TransferEvent::Failed(*reason))
            }
            (Reserved | Held, TransferCommand::RecordReserve(ReserveOutcome::Reserved)) => {
                Err(TransferRejection::AlreadyReserved)
            }
            (Reserved | Held, TransferCommand::RecordReserve(ReserveOutcome::Rejected(_))) => {
                Err(TransferRejection::Contradiction)
            }
            (Held, TransferCommand::EndHold(end)) => Ok(TransferEvent::HoldEnded(*end)),
            (_, TransferCommand::EndHold(_)) => Err(TransferRejection::NotHeld),
            // The ledger never posts a hold: its funds move by a capture.
            (_, TransferCommand::RecordLedger(_)) if hold => Err(TransferRejection::Contradiction),
            (_, TransferCommand::RecordLedger(LedgerOutcome::Succeeded)) => {
                Ok(TransferEvent::Succeeded)
            }
            (_, TransferCommand::RecordLedger(LedgerOutcome::Failed(reason))) => {
                Ok(TransferEvent::Failed(*reason))
            }
            (Succeeded | Failed | Captured | Voided | Expired, _) => {
                unreachable!("terminal transfers return above")
            }
        }
    }

    /// Applies a decided change. No rules here.
    pub fn apply(&mut self, event: TransferEvent, now: Timestamp) {
        assert!(
            !self.status.is_terminal(),
            "terminal transfer {} moved",
            self.id
        );
        match event {
            TransferEvent::Reserved => self.status = TransferStatus::Reserved,
            TransferEvent::Held => self.status = TransferStatus::Held,
            TransferEvent::HoldEnded(HoldEnd::Captured(by)) => {
                self.status = TransferStatus::Captured;
                self.captured_by = Some(by);
            }
            TransferEvent::HoldEnded(HoldEnd::Voided) => self.status = TransferStatus::Voided,
            TransferEvent::HoldEnded(HoldEnd::Expired) => self.status = TransferStatus::Expired,
            TransferEvent::Succeeded => self.status = TransferStatus::Succeeded,
            TransferEvent::Failed(reason) => {
                self.status = TransferStatus::Failed;
                self.failure_reason = Some(reason);
            }
        }
        self.updated_at = now;
    }

    /// Decides and applies; returns whether the transfer changed. A
    /// [`TransferRejection::Contradiction`] is logged as an error and leaves the
    /// transfer as it is.
    pub fn handle(&mut self, command: &TransferCommand, now: Timestamp) -> bool {
        match self.decide(command) {
            Ok(event) => {
                self.apply(event, now);
                true
            }
            Err(TransferRejection::Contradiction) => {
                tracing::error!(transfer_id = %self.id, ?command, status = ?self.status,
                    "contradictory outcome ignored");
                false
            }
            Err(_) => false,
        }
    }
}
