//! Wallets and reservations, as the wallet service keeps them.
//!
//! A wallet has `available` and `reserved` funds. A transfer first *reserves*
//! the amount (available -> reserved); once the ledger has posted it the reservation
//! is *captured* (reserved -> gone, receiver credited); if the ledger refused
//! it the reservation is *released* (reserved -> available). Every change of a
//! balance follows a ledger decision, so the wallets are a snapshot of the
//! ledger.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::ids::{CorrelationId, TransferId, WalletId};
use crate::money::{Amount, Balance, Currency};
use crate::outcome::{FailureReason, LedgerOutcome, ReserveOutcome};
use crate::time::Timestamp;
use crate::transfer::TransferKind;

/// A user wallet's balances. A currency's system account (the other side of
/// deposits and withdrawals, see [`WalletId::system`]) has no wallet: it is
/// never checked or locked, and its balance is the ledger's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    /// Its id, also its ledger account.
    pub id: WalletId,
    /// Its only currency.
    pub currency: Currency,
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
    /// A new, empty wallet.
    pub fn open(id: WalletId, currency: Currency, now: Timestamp) -> Wallet {
        assert!(
            id.system_currency().is_none(),
            "system accounts have no wallet"
        );
        Wallet {
            id,
            currency,
            available: Balance::zero(currency),
            reserved: Balance::zero(currency),
            created_at: now,
            updated_at: now,
        }
    }

    /// Decides whether `amount` can be held.
    pub fn decide_reservation(&self, amount: Amount) -> Result<WalletChange, WalletRejection> {
        if self.available < Balance::from(amount) {
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
            !self.available.is_negative(),
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
    /// What the transfer is: it says which side a system account may take
    /// ([`TransferKind::allows`]), so a system account named as the sender
    /// of a transfer between wallets is refused, whoever asks.
    pub kind: TransferKind,
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
    /// Record the rejection (so a repeat gets the same answer); no balance
    /// moves.
    Reject(Reservation),
    /// Record the reservation, store the sender as it is after it, and
    /// publish `WalletReserved`.
    Reserve {
        /// The new reservation, in state [`ReservationState::Reserved`].
        reservation: Reservation,
        /// The sender after the reservation; `None` when the sender is a
        /// system account, which is neither checked nor written.
        sender: Option<Wallet>,
    },
}

/// Every rule of a reserve. `sender` and `receiver` are the stored wallets,
/// if any; a system account is known by its id alone, so an adapter never
/// needs to load, lock or write one.
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
    let currency_of =
        |id: WalletId, stored: Option<&Wallet>| stored.map(|w| w.currency).or(id.system_currency());
    if request.sender_wallet_id == request.receiver_wallet_id {
        return reject(FailureReason::SameWallet);
    }
    // A system account is no wallet to a transfer between wallets, as it
    // is none to a client: it only sends deposits and receives withdrawals.
    if !request
        .kind
        .allows(request.sender_wallet_id, request.receiver_wallet_id)
    {
        return reject(FailureReason::WalletNotFound);
    }
    let (Some(sender_currency), Some(receiver_currency)) = (
        currency_of(request.sender_wallet_id, sender),
        currency_of(request.receiver_wallet_id, receiver),
    ) else {
        return reject(FailureReason::WalletNotFound);
    };
    if sender_currency != request.currency || receiver_currency != request.currency {
        return reject(FailureReason::CurrencyMismatch);
    }
    if Amount::new(request.amount.value(), request.currency).is_err() {
        return reject(FailureReason::InvalidAmount);
    }
    let sender = match sender {
        None => None,
        Some(wallet) => match wallet.decide_reservation(request.amount) {
            Err(WalletRejection::InsufficientFunds { .. }) => {
                return reject(FailureReason::InsufficientFunds);
            }
            Ok(change) => {
                let mut wallet = wallet.clone();
                wallet.apply(change, now);
                Some(wallet)
            }
        },
    };
    ReserveDecision::Reserve {
        reservation: Reservation {
            request: request.clone(),
            state: ReservationState::Reserved,
            created_at: now,
            updated_at: now,
        },
        sender,
    }
}

/// What a batch of reserves writes, as one unit: see [`decide_reserves`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReserveBatch {
    /// One answer per request, in the batch's order.
    pub outcomes: Vec<ReserveOutcome>,
    /// The reservations to store (reserved or rejected), in the batch's
    /// order, each with the position of its request in the batch.
    pub reservations: Vec<(usize, Reservation)>,
    /// The senders whose balances moved, each once as the batch leaves
    /// it, in id order.
    pub senders: Vec<Wallet>,
}

/// Every rule of a batch of reserves: [`decide_reserve`] for each request
/// in order (each with its time), against the wallets and reservations as
/// the earlier requests of the batch left them. So a hot wallet's reserves
/// are decided in arrival order, one short of funds is refused alone, and
/// a transfer id that comes twice gets its first answer twice and is
/// written once.
///
/// `wallets` holds the stored wallets among the batch's senders and
/// receivers (a missing one is unknown), `existing` the stored
/// reservations of its transfer ids.
pub fn decide_reserves<'a>(
    batch: impl IntoIterator<Item = (&'a ReserveRequest, Timestamp)>,
    mut wallets: HashMap<WalletId, Wallet>,
    mut existing: HashMap<TransferId, Reservation>,
) -> ReserveBatch {
    let mut decided = ReserveBatch::default();
    let mut moved = BTreeSet::new();
    for (at, (request, now)) in batch.into_iter().enumerate() {
        let decision = decide_reserve(
            request,
            existing.get(&request.transfer_id),
            wallets.get(&request.sender_wallet_id),
            wallets.get(&request.receiver_wallet_id),
            now,
        );
        let reservation = match decision {
            ReserveDecision::Replay(outcome) => {
                decided.outcomes.push(outcome);
                continue;
            }
            ReserveDecision::Reject(reservation) => reservation,
            ReserveDecision::Reserve {
                reservation,
                sender,
            } => {
                if let Some(wallet) = sender {
                    moved.insert(wallet.id);
                    wallets.insert(wallet.id, wallet);
                }
                reservation
            }
        };
        decided.outcomes.push(reservation.outcome());
        decided.reservations.push((at, reservation.clone()));
        existing.insert(request.transfer_id, reservation);
    }
    decided.senders = moved
        .into_iter()
        .filter_map(|id| wallets.remove(&id))
        .collect();
    decided
}

/// Why a ledger outcome cannot be applied to a reservation. Both mean the events
/// disagree with the wallet's records: the consumer dead-letters the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinalizeError {
    /// No reserve was ever recorded for this transfer.
    #[error("no reservation for transfer {0}")]
    UnknownReservation(TransferId),
    /// The outcome contradicts the reservation (captured then failed, or an
    /// outcome on a rejected reserve).
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
    /// Changes per wallet, in wallet id order (the order to lock them in).
    /// System accounts have no wallet and get no change.
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
    let finalization = |state, changes: Vec<(WalletId, WalletChange)>| {
        let mut changes: Vec<_> = changes
            .into_iter()
            .filter(|(id, _)| id.system_currency().is_none())
            .collect();
        changes.sort_by_key(|(id, _)| *id);
        Ok(Some(Finalization { state, changes }))
    };
    match (reservation.state, outcome) {
        (ReservationState::Reserved, LedgerOutcome::Succeeded) => finalization(
            ReservationState::Captured,
            vec![
                (sender, WalletChange::Captured(amount)),
                (receiver, WalletChange::Credited(amount)),
            ],
        ),
        (ReservationState::Reserved, LedgerOutcome::Failed(_)) => finalization(
            ReservationState::Released,
            vec![(sender, WalletChange::Released(amount))],
        ),
        (ReservationState::Captured, LedgerOutcome::Succeeded)
        | (ReservationState::Released, LedgerOutcome::Failed(_)) => Ok(None),
        (state, outcome) => Err(FinalizeError::Contradiction { state, outcome }),
    }
}
