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
use crate::tags::Tags;
use crate::time::Timestamp;
use crate::transfer::{HoldEnd, Transfer, TransferKind};

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
    /// A hold's expiry (kind [`TransferKind::Hold`] only): the hold's funds
    /// go back to the sender once it has passed, unless a capture took
    /// them before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// A capture's hold: the funds come from that hold, not from the
    /// sender's available balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<TransferId>,
    /// The transfer's reference and metadata, for its `WalletReserved`
    /// event; the wallet service decides nothing by them and stores none.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

impl ReserveRequest {
    /// The reserve the transaction service asks for `transfer`.
    pub fn of(transfer: &Transfer) -> ReserveRequest {
        ReserveRequest {
            transfer_id: transfer.id,
            correlation_id: transfer.correlation_id,
            kind: transfer.kind,
            sender_wallet_id: transfer.sender_wallet_id,
            receiver_wallet_id: transfer.receiver_wallet_id,
            amount: transfer.amount,
            currency: transfer.currency,
            expires_at: transfer.expires_at,
            hold_id: transfer.hold_id,
            tags: transfer.tags.clone(),
        }
    }
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
    /// A hold's funds are reserved, for a capture, a void or the expiry.
    Held,
    /// A hold whose funds a capture took (see [`Reservation::captured_by`]);
    /// what the capture did not take went back to available.
    Converted,
    /// A hold voided; its funds went back to available.
    Voided,
    /// A hold expired; its funds went back to available.
    Expired,
}

/// The wallet service's record of a reserve request, keyed by transfer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// What was asked.
    pub request: ReserveRequest,
    /// What became of it.
    pub state: ReservationState,
    /// A [`ReservationState::Converted`] hold's capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_by: Option<TransferId>,
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

    /// What this reservation says of a hold: `None` unless it is one the
    /// wallet service holds or held.
    pub fn hold_state(&self) -> Option<HoldState> {
        match self.state {
            ReservationState::Held => Some(HoldState::Held),
            ReservationState::Converted => self
                .captured_by
                .map(|by| HoldState::Ended(HoldEnd::Captured(by))),
            ReservationState::Voided => Some(HoldState::Ended(HoldEnd::Voided)),
            ReservationState::Expired => Some(HoldState::Ended(HoldEnd::Expired)),
            _ => None,
        }
    }

    /// Whether a hold, held now, has passed its expiry at `now`.
    fn expired_at(&self, now: Timestamp) -> bool {
        self.request.expires_at.is_none_or(|at| now >= at)
    }

    /// This reservation, moved to `state` at `now`.
    fn moved(&self, state: ReservationState, now: Timestamp) -> Reservation {
        Reservation {
            state,
            updated_at: now,
            ..self.clone()
        }
    }
}

/// Where a hold stands, as the wallet service, which decides its end, tells
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum HoldState {
    /// Its funds are held.
    Held,
    /// It ended.
    Ended(HoldEnd),
}

/// What the transaction service asks of a held hold: its client voids it,
/// or its sweeper found its expiry passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldRelease {
    /// Release it now (at or after its expiry, it expires instead).
    Void,
    /// Release it if its expiry has passed by the wallet service's clock.
    Expire,
}

/// What a release of a hold writes: the hold and its wallet after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedHold {
    /// The hold, voided or expired.
    pub hold: Reservation,
    /// Its wallet, the funds back in available.
    pub wallet: Wallet,
}

/// Every rule of a hold's end but a capture (which is a reserve, see
/// [`decide_reserve`]): `hold` is the stored reservation of the hold's id,
/// `wallet` its sender's stored wallet. Returns where the hold stands after
/// the request, and what to write when it moved: a held hold is voided (or
/// expired, once its expiry has passed, whoever asks); a hold that ended
/// stays as it ended; an id that is no hold is `None`.
pub fn decide_release(
    hold: Option<&Reservation>,
    wallet: Option<&Wallet>,
    release: HoldRelease,
    now: Timestamp,
) -> Option<(HoldState, Option<ReleasedHold>)> {
    let hold = hold.filter(|h| h.request.kind == TransferKind::Hold)?;
    let state = hold.hold_state()?;
    if state != HoldState::Held {
        return Some((state, None));
    }
    let end = match (release, hold.expired_at(now)) {
        (_, true) => HoldEnd::Expired,
        (HoldRelease::Void, false) => HoldEnd::Voided,
        (HoldRelease::Expire, false) => return Some((HoldState::Held, None)),
    };
    let mut wallet = wallet
        .expect("a held hold's wallet exists: wallets are never deleted")
        .clone();
    wallet.apply(WalletChange::Released(hold.request.amount), now);
    let state = match end {
        HoldEnd::Expired => ReservationState::Expired,
        _ => ReservationState::Voided,
    };
    Some((
        HoldState::Ended(end),
        Some(ReleasedHold {
            hold: hold.moved(state, now),
            wallet,
        }),
    ))
}

/// What to store for a reserve request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveDecision {
    /// The transfer id was seen before: answer as then, write nothing.
    Replay(ReserveOutcome),
    /// Record the rejection (so a repeat gets the same answer); no balance
    /// moves.
    Reject(Reservation),
    /// Record the reservation (a hold's in state
    /// [`ReservationState::Held`]), store the sender as it is after it,
    /// and, but for a hold, publish `WalletReserved`.
    Reserve {
        /// The new reservation, in state [`ReservationState::Reserved`] or
        /// [`ReservationState::Held`].
        reservation: Reservation,
        /// The sender after the reservation; `None` when the sender is a
        /// system account, which is neither checked nor written.
        sender: Option<Wallet>,
        /// A capture's hold, converted: the capture took its funds.
        hold: Option<Reservation>,
    },
    /// A capture found its hold's expiry passed: record the capture's
    /// rejection ([`FailureReason::HoldExpired`]) and the hold's expiry,
    /// its funds back in its wallet.
    Expire {
        /// The capture's rejection.
        reservation: Reservation,
        /// The hold and its wallet after the expiry.
        expired: ReleasedHold,
    },
}

/// Every rule of a reserve. `sender` and `receiver` are the stored wallets,
/// if any; a system account is known by its id alone, so an adapter never
/// needs to load, lock or write one. `hold` is the stored reservation of
/// the request's `hold_id`, for a capture.
///
/// A hold ([`TransferKind::Hold`]) reserves as a transfer does but is
/// [`ReservationState::Held`] and publishes nothing; it may name no
/// receiver (its own wallet stands in). A capture (`hold_id` set) takes its
/// funds from its hold instead of the sender's available balance: up to
/// what the hold holds, the rest going back to available, while the hold is
/// held and before its expiry.
pub fn decide_reserve(
    request: &ReserveRequest,
    existing: Option<&Reservation>,
    hold: Option<&Reservation>,
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
            captured_by: None,
            created_at: now,
            updated_at: now,
        })
    };
    let currency_of =
        |id: WalletId, stored: Option<&Wallet>| stored.map(|w| w.currency).or(id.system_currency());
    let is_hold = request.kind == TransferKind::Hold;
    let names_receiver = !is_hold || request.receiver_wallet_id != request.sender_wallet_id;
    if names_receiver && request.sender_wallet_id == request.receiver_wallet_id {
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
    if is_hold && request.expires_at.is_none_or(|at| now >= at) {
        return reject(FailureReason::HoldExpired);
    }
    let reservation = Reservation {
        request: request.clone(),
        state: if is_hold {
            ReservationState::Held
        } else {
            ReservationState::Reserved
        },
        captured_by: None,
        created_at: now,
        updated_at: now,
    };
    if request.hold_id.is_some() {
        return decide_capture(request, reservation, hold, sender, now).unwrap_or_else(reject);
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
        reservation,
        sender,
        hold: None,
    }
}

/// The rules of a capture, once the request itself passed: its hold must
/// be a hold of the same wallet and currency, held, unexpired, and hold at
/// least the amount. `Err` is the capture's rejection, the hold unchanged.
fn decide_capture(
    request: &ReserveRequest,
    reservation: Reservation,
    hold: Option<&Reservation>,
    sender: Option<&Wallet>,
    now: Timestamp,
) -> Result<ReserveDecision, FailureReason> {
    let hold = hold
        .filter(|h| {
            h.request.kind == TransferKind::Hold
                && request.kind == TransferKind::Transfer
                && h.request.sender_wallet_id == request.sender_wallet_id
                && h.request.currency == request.currency
        })
        .ok_or(FailureReason::HoldNotFound)?;
    match hold.hold_state().ok_or(FailureReason::HoldNotFound)? {
        HoldState::Held => {}
        HoldState::Ended(HoldEnd::Captured(_)) => return Err(FailureReason::HoldCaptured),
        HoldState::Ended(HoldEnd::Voided) => return Err(FailureReason::HoldVoided),
        HoldState::Ended(HoldEnd::Expired) => return Err(FailureReason::HoldExpired),
    }
    let wallet = sender.expect("a held hold's wallet exists: wallets are never deleted");
    if hold.expired_at(now) {
        let Some((_, Some(expired))) =
            decide_release(Some(hold), Some(wallet), HoldRelease::Expire, now)
        else {
            unreachable!("a held hold past its expiry expires");
        };
        return Ok(ReserveDecision::Expire {
            reservation: Reservation {
                state: ReservationState::Rejected(FailureReason::HoldExpired),
                ..reservation
            },
            expired,
        });
    }
    let held = Balance::from(hold.request.amount);
    if Balance::from(request.amount) > held {
        return Err(FailureReason::ExceedsHold);
    }
    let mut wallet = wallet.clone();
    if let Ok(rest) = Amount::new((held - request.amount).value(), request.currency) {
        wallet.apply(WalletChange::Released(rest), now);
    }
    let mut converted = hold.moved(ReservationState::Converted, now);
    converted.captured_by = Some(request.transfer_id);
    Ok(ReserveDecision::Reserve {
        reservation,
        sender: Some(wallet),
        hold: Some(converted),
    })
}

/// What a batch of reserves writes, as one unit: see [`decide_reserves`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReserveBatch {
    /// One answer per request, in the batch's order.
    pub outcomes: Vec<ReserveOutcome>,
    /// The reservations to store (reserved, held or rejected), in the
    /// batch's order, each with the position of its request in the batch.
    pub reservations: Vec<(usize, Reservation)>,
    /// The stored holds the batch's captures converted or found expired,
    /// each once as the batch leaves it, in id order: reservations to
    /// update. (A hold the batch made is among `reservations`, as the
    /// batch leaves it.)
    pub holds: Vec<Reservation>,
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
/// reservations of its transfer ids and of its captures' holds.
pub fn decide_reserves<'a>(
    batch: impl IntoIterator<Item = (&'a ReserveRequest, Timestamp)>,
    mut wallets: HashMap<WalletId, Wallet>,
    mut existing: HashMap<TransferId, Reservation>,
) -> ReserveBatch {
    let mut decided = ReserveBatch::default();
    let mut moved = BTreeSet::new();
    let mut holds = BTreeSet::new();
    for (at, (request, now)) in batch.into_iter().enumerate() {
        let decision = decide_reserve(
            request,
            existing.get(&request.transfer_id),
            request.hold_id.and_then(|id| existing.get(&id)),
            wallets.get(&request.sender_wallet_id),
            wallets.get(&request.receiver_wallet_id),
            now,
        );
        let (reservation, sender, hold) = match decision {
            ReserveDecision::Replay(outcome) => {
                decided.outcomes.push(outcome);
                continue;
            }
            ReserveDecision::Reject(reservation) => (reservation, None, None),
            ReserveDecision::Reserve {
                reservation,
                sender,
                hold,
            } => (reservation, sender, hold),
            ReserveDecision::Expire {
                reservation,
                expired,
            } => (reservation, Some(expired.wallet), Some(expired.hold)),
        };
        if let Some(wallet) = sender {
            moved.insert(wallet.id);
            wallets.insert(wallet.id, wallet);
        }
        if let Some(hold) = hold {
            holds.insert(hold.request.transfer_id);
            existing.insert(hold.request.transfer_id, hold);
        }
        decided.outcomes.push(reservation.outcome());
        decided.reservations.push((at, reservation.clone()));
        existing.insert(request.transfer_id, reservation);
    }
    // A hold the batch itself made is a new row: it is stored as the batch
    // leaves it. The others are stored rows to update.
    for (_, reservation) in &mut decided.reservations {
        let id = reservation.request.transfer_id;
        if holds.remove(&id) {
            *reservation = existing[&id].clone();
        }
    }
    decided.holds = holds
        .into_iter()
        .filter_map(|id| existing.remove(&id))
        .collect();
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
