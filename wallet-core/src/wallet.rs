//! Wallets and reservations, as the wallet service keeps them.
//!
//! A wallet has `available` and `reserved` funds. A transfer first *reserves*
//! the amount (available -> reserved); once the ledger has posted it the reservation
//! is *captured* (reserved -> gone, receiver credited); if the ledger refused
//! it the reservation is *released* (reserved -> available). Every change of a
//! balance follows a ledger decision, so the wallets are a snapshot of the
//! ledger.

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::ids::{CorrelationId, TransferId, WalletId};
use crate::ledger::LedgerOutcome;
use crate::money::{Amount, Balance, Currency};
use crate::transfer::FailureReason;

/// A user wallet, or a currency's system account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletKind {
    /// Opened through the API; its available balance never goes negative.
    User,
    /// The outside world of one currency (see [`WalletId::system`]); may go
    /// negative.
    System,
}

/// A wallet's balances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    /// Its id, also its ledger account.
    pub id: WalletId,
    /// Its only currency.
    pub currency: Currency,
    /// User or system.
    pub kind: WalletKind,
    /// Spendable now.
    pub available: Balance,
    /// Held for transfers the ledger has not decided yet.
    pub reserved: Balance,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When a balance last changed.
    pub updated_at: Timestamp,
}

/// A change to one wallet's balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletChange {
    /// available -> reserved.
    Reserved(Amount),
    /// reserved -> out (the ledger posted the debit).
    Captured(Amount),
    /// reserved -> available (the ledger refused the transfer).
    Released(Amount),
    /// -> available (the ledger posted the credit).
    Credited(Amount),
}

/// Why a wallet refuses a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WalletRejection {
    /// The available balance is below the amount.
    #[error("insufficient funds: {available} available, {requested} requested")]
    InsufficientFunds {
        /// What the wallet had.
        available: Balance,
        /// What was asked for.
        requested: Amount,
    },
}

impl Wallet {
    /// A new, empty user wallet.
    pub fn open(id: WalletId, currency: Currency, now: Timestamp) -> Wallet {
        Wallet {
            id,
            currency,
            kind: WalletKind::User,
            available: Balance::zero(currency),
            reserved: Balance::zero(currency),
            created_at: now,
            updated_at: now,
        }
    }

    /// A currency's system account, as it is before its first transfer.
    pub fn system(currency: Currency, now: Timestamp) -> Wallet {
        Wallet {
            id: WalletId::system(currency),
            kind: WalletKind::System,
            ..Wallet::open(WalletId::system(currency), currency, now)
        }
    }

    /// Decides whether `amount` can be held.
    pub fn decide_reservation(&self, amount: Amount) -> Result<WalletChange, WalletRejection> {
        if self.kind == WalletKind::User && self.available < Balance::from(amount) {
            return Err(WalletRejection::InsufficientFunds {
                available: self.available,
                requested: amount,
            });
        }
        Ok(WalletChange::Reserved(amount))
    }

    /// Applies a decided change. A change that would break a wallet invariant
    /// is a bug, not an input error, and panics.
    pub fn apply(&mut self, change: WalletChange, now: Timestamp) {
        match change {
            WalletChange::Reserved(a) => {
                self.available = self.available - a;
                self.reserved = self.reserved + a;
            }
            WalletChange::Captured(a) => self.reserved = self.reserved - a,
            WalletChange::Released(a) => {
                self.reserved = self.reserved - a;
                self.available = self.available + a;
            }
            WalletChange::Credited(a) => self.available = self.available + a,
        }
        assert!(
            !self.reserved.is_negative(),
            "wallet {} reserved < 0",
            self.id
        );
        assert!(
            self.kind == WalletKind::System || !self.available.is_negative(),
            "wallet {} available < 0",
            self.id
        );
        self.updated_at = now;
    }
}

/// The transaction service's request to reserve funds for a transfer. Sent
/// again, unchanged, by the retrier until it gets a definite answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The transfer; the reservation's key.
    pub transfer_id: TransferId,
    /// Copied into the events.
    pub correlation_id: CorrelationId,
    /// Whose funds to reserve.
    pub sender_wallet_id: WalletId,
    /// Who will be credited.
    pub receiver_wallet_id: WalletId,
    /// How much.
    pub amount: Amount,
    /// Must be the currency of both wallets.
    pub currency: Currency,
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum ReservationState {
    /// Funds are reserved.
    Reserved,
    /// The ledger posted the transfer; funds left the sender.
    Captured,
    /// The ledger refused the transfer; funds went back to available.
    Released,
    /// Nothing was held; the reserve was refused for this reason.
    Rejected(FailureReason),
}

/// The wallet service's record of a reserve request, keyed by transfer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// What was asked.
    pub request: ReserveRequest,
    /// What became of it.
    pub state: ReservationState,
    /// When it was decided.
    pub created_at: Timestamp,
    /// When its state last changed.
    pub updated_at: Timestamp,
}

/// The definite answer to a reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum ReserveOutcome {
    /// The funds are held.
    Reserved,
    /// Nothing was held.
    Rejected(FailureReason),
}

impl Reservation {
    /// The answer this reservation gives to its reserve request, first time or replay.
    pub fn outcome(&self) -> ReserveOutcome {
        match self.state {
            ReservationState::Rejected(reason) => ReserveOutcome::Rejected(reason),
            _ => ReserveOutcome::Reserved,
        }
    }
}

/// What to store for a reserve request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveDecision {
    /// The transfer id was seen before: answer as then, write nothing.
    Replay(ReserveOutcome),
    /// Record the refusal (so a repeat gets the same answer); no balance moves.
    Reject(Reservation),
    /// Record the reservation, store these wallets (the sender after the reservation, and a
    /// system account met for the first time), and publish `WalletReserved`.
    Reserve {
        /// The new reservation, in state [`ReservationState::Reserved`].
        reservation: Reservation,
        /// Wallets to write, sender first.
        wallets: Vec<Wallet>,
    },
}

/// Every rule of a reserve. `sender` and `receiver` are the stored wallets, if
/// any; system accounts that were never used are made here.
pub fn decide_reserve(
    request: &ReserveRequest,
    existing: Option<&Reservation>,
    sender: Option<&Wallet>,
    receiver: Option<&Wallet>,
    now: Timestamp,
) -> ReserveDecision {
    if let Some(reservation) = existing {
        return ReserveDecision::Replay(reservation.outcome());
    }
    let reject = |reason| {
        ReserveDecision::Reject(Reservation {
            request: request.clone(),
            state: ReservationState::Rejected(reason),
            created_at: now,
            updated_at: now,
        })
    };
    let known = |id: WalletId, stored: Option<&Wallet>| -> Option<(Wallet, bool)> {
        match (stored, id.system_currency()) {
            (Some(w), _) => Some((w.clone(), false)),
            (None, Some(c)) => Some((Wallet::system(c, now), true)),
            (None, None) => None,
        }
    };
    if request.sender_wallet_id == request.receiver_wallet_id {
        return reject(FailureReason::SameWallet);
    }
    let (Some((mut sender, _)), Some((receiver, receiver_new))) = (
        known(request.sender_wallet_id, sender),
        known(request.receiver_wallet_id, receiver),
    ) else {
        return reject(FailureReason::WalletNotFound);
    };
    if sender.currency != request.currency || receiver.currency != request.currency {
        return reject(FailureReason::CurrencyMismatch);
    }
    if Amount::new(request.amount.value(), request.currency).is_err() {
        return reject(FailureReason::InvalidAmount);
    }
    match sender.decide_reservation(request.amount) {
        Err(WalletRejection::InsufficientFunds { .. }) => reject(FailureReason::InsufficientFunds),
        Ok(change) => {
            sender.apply(change, now);
            let mut wallets = vec![sender];
            wallets.extend(receiver_new.then_some(receiver));
            ReserveDecision::Reserve {
                reservation: Reservation {
                    request: request.clone(),
                    state: ReservationState::Reserved,
                    created_at: now,
                    updated_at: now,
                },
                wallets,
            }
        }
    }
}

/// Why a ledger outcome cannot be applied to a reservation. Both mean the events
/// disagree with the wallet's records: the consumer dead-letters the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinalizeError {
    /// No reserve was ever recorded for this transfer.
    #[error("no reservation for transfer {0}")]
    UnknownReservation(TransferId),
    /// The outcome contradicts the reservation (captured then failed, or a outcome
    /// on a refused reserve).
    #[error("ledger outcome {outcome:?} contradicts reservation state {state:?}")]
    Contradiction {
        /// The reservation's state.
        state: ReservationState,
        /// The ledger's outcome.
        outcome: LedgerOutcome,
    },
}

/// The balance changes that finalize a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalization {
    /// The reservation's new state: captured or released.
    pub state: ReservationState,
    /// Changes per wallet, sender first.
    pub changes: Vec<(WalletId, WalletChange)>,
}

/// Every rule of finalizing a reservation once the ledger has decided. `Ok(None)`: the
/// outcome was applied before (a duplicate), nothing to do.
pub fn decide_finalize(
    reservation: Option<&Reservation>,
    transfer_id: TransferId,
    outcome: LedgerOutcome,
) -> Result<Option<Finalization>, FinalizeError> {
    let reservation = reservation.ok_or(FinalizeError::UnknownReservation(transfer_id))?;
    let (sender, receiver, amount) = (
        reservation.request.sender_wallet_id,
        reservation.request.receiver_wallet_id,
        reservation.request.amount,
    );
    match (reservation.state, outcome) {
        (ReservationState::Reserved, LedgerOutcome::Succeeded) => Ok(Some(Finalization {
            state: ReservationState::Captured,
            changes: vec![
                (sender, WalletChange::Captured(amount)),
                (receiver, WalletChange::Credited(amount)),
            ],
        })),
        (ReservationState::Reserved, LedgerOutcome::Failed(_)) => Ok(Some(Finalization {
            state: ReservationState::Released,
            changes: vec![(sender, WalletChange::Released(amount))],
        })),
        (ReservationState::Captured, LedgerOutcome::Succeeded)
        | (ReservationState::Released, LedgerOutcome::Failed(_)) => Ok(None),
        (state, outcome) => Err(FinalizeError::Contradiction { state, outcome }),
    }
}
