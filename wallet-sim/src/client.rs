//! The simulated clients: which requests they send, and what answers the
//! API contract allows for each.

use std::fmt;

use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_core::ids::{CorrelationId, IdempotencyKey, TransferId, WalletId};
use wallet_core::money::{Amount, Currency};
use wallet_core::outcome::{FailureReason, ReserveOutcome};
use wallet_core::ports::StoreError;
use wallet_core::service::{CreateError, Created, Parties, TransferRequest};
use wallet_core::transfer::{RefundRejection, TransferKind, TransferStatus};
use wallet_core::wallet::ReserveRequest;

use crate::rng::Rng;

/// The currencies wallets are opened in: two of scale 2, one of scale 0
/// and one of scale 3, so amounts meet every scale.
pub(crate) const CURRENCIES: [Currency; 4] =
    [Currency::USD, Currency::EUR, Currency::JPY, Currency::KWD];

/// The amount of an "insufficient funds" request: more than all deposits
/// of any run put together, so it can never be covered.
pub(crate) fn insufficient_amount() -> Decimal {
    Decimal::from(1_000_000_000_u64)
}

/// A kind of client request, as counted in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RequestKind {
    /// Open a wallet.
    OpenWallet,
    /// Money in from the system account.
    Deposit,
    /// Money out to the system account.
    Withdrawal,
    /// A withdrawal of exactly the wallet's available balance, read just
    /// before: it must be reserved.
    WithdrawAll,
    /// Wallet to wallet, same currency.
    Transfer,
    /// A wallet that does not exist, or a system account, named by a client.
    UnknownWallet,
    /// Sender and receiver are one wallet.
    SameWallet,
    /// Wallets of different currencies.
    CrossCurrency,
    /// The request names a currency the wallets do not hold.
    WrongCurrency,
    /// Zero, negative, too many decimals or over the maximum.
    BadAmount,
    /// More than the sender can ever have.
    Insufficient,
    /// An earlier request again, same key and same body.
    RepeatSame,
    /// An earlier key with another body.
    RepeatDifferent,
    /// Another internal caller (an older or buggy transaction-service
    /// version) asks the wallet service to reserve for a request the API
    /// would refuse: an unknown wallet, one wallet twice, two currencies, an
    /// amount invalid for the currency, or more than the sender has. The
    /// wallet service must reject it, for that reason.
    InternalReserve,
    /// Hold a wallet's funds, with or without a receiver, expiring after
    /// one of several spans of virtual time.
    Hold,
    /// A hold of more than the wallet can ever have.
    HoldInsufficient,
    /// A hold refused before anything is stored: an expiry of zero or
    /// beyond the longest, or its own wallet named as the receiver.
    HoldInvalid,
    /// Capture a hold the client made: all of it, part of it, or to
    /// another receiver than the hold's.
    Capture,
    /// A capture refused: more than the hold holds, no receiver where the
    /// hold names none, or a hold that does not exist.
    CaptureInvalid,
    /// Void a hold the client made (or one that does not exist).
    Void,
    /// Refund a SUCCEEDED transfer, in whole or in part, within what is
    /// left to refund.
    Refund,
    /// A refund refused: more than is left to refund, of a transfer not
    /// SUCCEEDED, of a hold or a refund, or of no transfer.
    RefundInvalid,
    /// An earlier hold, capture or refund again, same key and same body.
    RepeatOpSame,
    /// An earlier hold, capture or refund key with another amount.
    RepeatOpDifferent,
}

impl RequestKind {
    /// The kinds of the holds and refunds API.
    pub(crate) fn is_op(self) -> bool {
        matches!(
            self,
            RequestKind::Hold
                | RequestKind::HoldInsufficient
                | RequestKind::HoldInvalid
                | RequestKind::Capture
                | RequestKind::CaptureInvalid
                | RequestKind::Void
                | RequestKind::Refund
                | RequestKind::RefundInvalid
                | RequestKind::RepeatOpSame
                | RequestKind::RepeatOpDifferent
        )
    }

    /// The snake_case name used in traces and tables.
    pub fn name(self) -> &'static str {
        match self {
            RequestKind::OpenWallet => "open_wallet",
            RequestKind::Deposit => "deposit",
            RequestKind::Withdrawal => "withdrawal",
            RequestKind::WithdrawAll => "withdraw_all",
            RequestKind::Transfer => "transfer",
            RequestKind::UnknownWallet => "unknown_wallet",
            RequestKind::SameWallet => "same_wallet",
            RequestKind::CrossCurrency => "cross_currency",
            RequestKind::WrongCurrency => "wrong_currency",
            RequestKind::BadAmount => "bad_amount",
            RequestKind::Insufficient => "insufficient",
            RequestKind::RepeatSame => "repeat_same",
            RequestKind::RepeatDifferent => "repeat_different",
            RequestKind::InternalReserve => "internal_reserve",
            RequestKind::Hold => "hold",
            RequestKind::HoldInsufficient => "hold_insufficient",
            RequestKind::HoldInvalid => "hold_invalid",
            RequestKind::Capture => "capture",
            RequestKind::CaptureInvalid => "capture_invalid",
            RequestKind::Void => "void",
            RequestKind::Refund => "refund",
            RequestKind::RefundInvalid => "refund_invalid",
            RequestKind::RepeatOpSame => "repeat_op_same",
            RequestKind::RepeatOpDifferent => "repeat_op_different",
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const WEIGHTS: [(RequestKind, u32); 24] = [
    (RequestKind::OpenWallet, 2),
    (RequestKind::Deposit, 20),
    (RequestKind::Withdrawal, 8),
    (RequestKind::WithdrawAll, 2),
    (RequestKind::Transfer, 34),
    (RequestKind::UnknownWallet, 3),
    (RequestKind::SameWallet, 2),
    (RequestKind::CrossCurrency, 3),
    (RequestKind::WrongCurrency, 2),
    (RequestKind::BadAmount, 4),
    (RequestKind::Insufficient, 3),
    (RequestKind::RepeatSame, 12),
    (RequestKind::RepeatDifferent, 4),
    (RequestKind::InternalReserve, 3),
    (RequestKind::Hold, 10),
    (RequestKind::HoldInsufficient, 1),
    (RequestKind::HoldInvalid, 2),
    (RequestKind::Capture, 12),
    (RequestKind::CaptureInvalid, 2),
    (RequestKind::Void, 5),
    (RequestKind::Refund, 5),
    (RequestKind::RefundInvalid, 3),
    (RequestKind::RepeatOpSame, 3),
    (RequestKind::RepeatOpDifferent, 2),
];

/// What a request does.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// `WalletService::open`.
    Open(Currency),
    /// `TransactionService::create`.
    Create(TransferRequest),
    /// `WalletService::reserve`, to be rejected for this reason.
    Reserve(ReserveRequest, FailureReason),
    /// A request of the holds and refunds API, planned by the simulator
    /// from what the read ports show (`crate::sim` `ops`).
    Op,
}

/// A request about to be sent.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub kind: RequestKind,
    pub action: Action,
    /// For repeats, the index of the key repeated.
    pub repeat_of: Option<usize>,
}

/// What the client remembers of a key that created a transfer.
#[derive(Debug, Clone)]
struct KeyRecord {
    /// The kind of the first request.
    kind: RequestKind,
    request: TransferRequest,
    /// True while the key may not be stored at all: its first request died
    /// without an answer, maybe before the transfer was stored. A repeat
    /// may then create the transfer.
    maybe_absent: bool,
    /// The key may be stored with either of two bodies (a repeat with
    /// another body died unanswered while the key may have been absent):
    /// the client no longer repeats it.
    ambiguous: bool,
    /// The transfer, once an answer named it.
    transfer: Option<TransferId>,
    /// False while the first request's answer was lost (its caller crashed)
    /// and no repeat has been answered yet: only then may a repeat get 409.
    answered: bool,
}

/// Faults that struck the request being judged.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Struck {
    pub lookup: bool,
    pub reserve: bool,
    pub crash: bool,
    /// A store unit failed or lost its answer.
    pub store: bool,
    /// Of those, an integrity error.
    pub integrity: bool,
    /// A publish or an offset commit failed or lost its answer.
    pub bus: bool,
    pub slow: bool,
    pub reset: bool,
    /// The ledger refused the transfer of a late answer, for this reason,
    /// because the run skewed its view: the answer may say so.
    pub refused: Option<FailureReason>,
}

/// The clients' shared memory of wallets and keys.
#[derive(Debug, Default)]
pub(crate) struct Client {
    wallets: Vec<(WalletId, Currency)>,
    keys: Vec<KeyRecord>,
    next_key: u64,
    next_unknown: u64,
}

/// A short, stable name for an id made by [`crate::SimIds`].
pub(crate) fn short(id: Uuid) -> String {
    format!("#{}", crate::clock::SimIds::ordinal(id))
}

/// A short name for a wallet named in a request: `#n` for the run's own,
/// `sys:USD` for a system account, `?n` for an id that does not exist.
pub(crate) fn wallet_name(id: WalletId) -> String {
    let uuid = id.as_uuid();
    match id.system_currency() {
        Some(c) => format!("sys:{c}"),
        None if uuid.as_u128() >> 120 == 0x51 => short(uuid),
        None => format!("?{}", uuid.as_u128() as u64),
    }
}

/// A request as a trace shows it.
pub(crate) fn describe(request: &TransferRequest) -> String {
    let parties = match request.parties {
        Parties::Deposit(w) => format!("in->{}", wallet_name(w)),
        Parties::Withdrawal(w) => format!("{}->out", wallet_name(w)),
        Parties::Transfer { sender, receiver } => {
            format!("{}->{}", wallet_name(sender), wallet_name(receiver))
        }
    };
    let currency = request
        .currency
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    format!("{} {parties} {}{currency}", request.key, request.amount)
}

impl Client {
    /// How many wallets the clients know they opened.
    pub fn wallets_opened(&self) -> usize {
        self.wallets.len()
    }

    /// Remembers an opened wallet.
    pub fn opened(&mut self, id: WalletId, currency: Currency) {
        self.wallets.push((id, currency));
    }

    /// Chooses the next request; `available` tells a wallet's available
    /// balance now.
    pub fn plan(&mut self, rng: &mut Rng, available: &dyn Fn(WalletId) -> Decimal) -> Planned {
        let kind = rng.weighted(&WEIGHTS);
        if self.wallets.is_empty() {
            return self.open(rng);
        }
        let planned = match kind {
            RequestKind::OpenWallet => Some(self.open(rng)),
            RequestKind::RepeatSame | RequestKind::RepeatDifferent => self.repeat(kind, rng),
            RequestKind::InternalReserve => Some(self.internal_reserve(rng)),
            RequestKind::WithdrawAll => self.withdraw_all(rng, available),
            kind if kind.is_op() => Some(Planned {
                kind,
                action: Action::Op,
                repeat_of: None,
            }),
            _ => self.create(kind, rng).map(|request| Planned {
                kind,
                action: Action::Create(request),
                repeat_of: None,
            }),
        };
        // Kinds that need what the run does not have yet (two wallets of a
        // currency, an earlier key) fall back to a deposit.
        planned.unwrap_or_else(|| {
            let request = self
                .create(RequestKind::Deposit, rng)
                .expect("a wallet exists");
            Planned {
                kind: RequestKind::Deposit,
                action: Action::Create(request),
                repeat_of: None,
            }
        })
    }

    fn open(&mut self, rng: &mut Rng) -> Planned {
        Planned {
            kind: RequestKind::OpenWallet,
            action: Action::Open(*rng.pick(&CURRENCIES)),
            repeat_of: None,
        }
    }

    pub(crate) fn key(&mut self) -> IdempotencyKey {
        self.next_key += 1;
        IdempotencyKey::new(format!("k-{}", self.next_key)).expect("valid key")
    }

    pub(crate) fn wallet(&self, rng: &mut Rng) -> (WalletId, Currency) {
        *rng.pick(&self.wallets)
    }

    /// Two distinct wallets, of one currency when `same` is true and of two
    /// currencies otherwise.
    pub(crate) fn pair(&self, rng: &mut Rng, same: bool) -> Option<(WalletId, WalletId, Currency)> {
        let (a, currency) = self.wallet(rng);
        let others: Vec<WalletId> = self
            .wallets
            .iter()
            .filter(|(id, c)| *id != a && (*c == currency) == same)
            .map(|(id, _)| *id)
            .collect();
        (!others.is_empty()).then(|| (a, *rng.pick(&others), currency))
    }

    fn unknown_wallet(&mut self, rng: &mut Rng) -> WalletId {
        if rng.chance(0.3) {
            // Clients may not name system accounts.
            return WalletId::system(*rng.pick(&CURRENCIES));
        }
        self.absent_wallet()
    }

    /// Another wallet of `currency` than `not`, if the run has one.
    pub(crate) fn other_of(
        &self,
        rng: &mut Rng,
        currency: Currency,
        not: WalletId,
    ) -> Option<WalletId> {
        let others: Vec<WalletId> = self
            .wallets
            .iter()
            .filter(|(id, c)| *id != not && *c == currency)
            .map(|(id, _)| *id)
            .collect();
        (!others.is_empty()).then(|| *rng.pick(&others))
    }

    /// A wallet id nobody opened.
    fn absent_wallet(&mut self) -> WalletId {
        self.next_unknown += 1;
        WalletId::from_uuid(Uuid::from_u128(
            (0xdead_u128 << 112) | u128::from(self.next_unknown),
        ))
    }
}

/// A valid amount of `lo..=hi` minor units, sometimes written with a
/// trailing zero ("10.50" for "10.5"), which must not change the request.
pub(crate) fn amount(rng: &mut Rng, currency: Currency, lo: u64, hi: u64) -> Decimal {
    let units = rng.range(lo, hi) as i64;
    if rng.chance(0.25) {
        Decimal::new(units * 10, currency.scale() + 1)
    } else {
        Decimal::new(units, currency.scale())
    }
}

/// A currency other than `c`.
fn other_currency(c: Currency, rng: &mut Rng) -> Currency {
    let other = *rng.pick(&CURRENCIES);
    if other == c { Currency::GBP } else { other }
}

/// An amount the currency refuses.
fn bad_amount(rng: &mut Rng, currency: Currency) -> Decimal {
    match rng.below(4) {
        0 => Decimal::ZERO,
        1 => -amount(rng, currency, 1, 1000),
        2 => Decimal::new(rng.range(1, 1000) as i64 * 10 + 1, currency.scale() + 1),
        _ => Amount::MAX + Decimal::ONE,
    }
}

impl Client {
    /// A new transfer request of `kind`; `None` when the run cannot make
    /// one yet.
    fn create(&mut self, kind: RequestKind, rng: &mut Rng) -> Option<TransferRequest> {
        let (wallet, c) = self.wallet(rng);
        let named = |rng: &mut Rng, c: Currency| rng.chance(0.5).then_some(c);
        let (parties, amount, currency) = match kind {
            RequestKind::Deposit => (
                Parties::Deposit(wallet),
                amount(rng, c, 1_000, 50_000),
                named(rng, c),
            ),
            RequestKind::Withdrawal => (
                Parties::Withdrawal(wallet),
                amount(rng, c, 1, 20_000),
                named(rng, c),
            ),
            RequestKind::Transfer | RequestKind::Insufficient | RequestKind::BadAmount => {
                let (sender, receiver, c) = self.pair(rng, true)?;
                let amount = match kind {
                    RequestKind::Transfer => amount(rng, c, 1, 20_000),
                    RequestKind::Insufficient => insufficient_amount(),
                    _ => bad_amount(rng, c),
                };
                let parties = Parties::Transfer { sender, receiver };
                (parties, amount, named(rng, c))
            }
            _ => (
                self.invalid_parties(kind, wallet, rng)?,
                amount(rng, c, 1, 20_000),
                None,
            ),
        };
        let currency = match kind {
            RequestKind::WrongCurrency => Some(other_currency(c, rng)),
            _ => currency,
        };
        let key = self.key();
        Some(TransferRequest {
            tags: Default::default(),
            key,
            parties,
            amount,
            currency,
        })
    }

    /// Parties that make a request invalid whatever its amount: an unknown
    /// wallet, one wallet twice, two currencies; and, for a wrong currency,
    /// a plain deposit whose named currency the caller changes.
    fn invalid_parties(
        &mut self,
        kind: RequestKind,
        wallet: WalletId,
        rng: &mut Rng,
    ) -> Option<Parties> {
        let transfer = |sender, receiver| Parties::Transfer { sender, receiver };
        match kind {
            RequestKind::UnknownWallet => {
                let unknown = self.unknown_wallet(rng);
                Some(match rng.below(3) {
                    0 => Parties::Deposit(unknown),
                    1 => transfer(unknown, wallet),
                    _ => transfer(wallet, unknown),
                })
            }
            RequestKind::SameWallet => Some(transfer(wallet, wallet)),
            RequestKind::CrossCurrency => {
                let (sender, receiver, _) = self.pair(rng, false)?;
                Some(transfer(sender, receiver))
            }
            _ => Some(Parties::Deposit(wallet)),
        }
    }

    /// A withdrawal of all that a wallet holds; `None` when it holds
    /// nothing.
    fn withdraw_all(
        &mut self,
        rng: &mut Rng,
        available: &dyn Fn(WalletId) -> Decimal,
    ) -> Option<Planned> {
        let (wallet, c) = self.wallet(rng);
        let amount = available(wallet);
        if amount <= Decimal::ZERO {
            return None;
        }
        let request = TransferRequest {
            tags: Default::default(),
            key: self.key(),
            parties: Parties::Withdrawal(wallet),
            amount,
            currency: rng.chance(0.5).then_some(c),
        };
        Some(Planned {
            kind: RequestKind::WithdrawAll,
            action: Action::Create(request),
            repeat_of: None,
        })
    }

    /// A reserve request the wallet service must reject, and the reason.
    /// `transfer_id` is made by the caller's id generator.
    fn internal_reserve(&mut self, rng: &mut Rng) -> Planned {
        let (wallet, c) = self.wallet(rng);
        let units = |rng: &mut Rng, c| amount(rng, c, 1, 20_000);
        let valid = |value: Decimal, c| Amount::new(value, c).expect("a valid amount");
        let (sender, receiver, value, currency, reason) = match rng.below(5) {
            0 => {
                let unknown = self.absent_wallet();
                let (s, r) = if rng.chance(0.5) {
                    (unknown, wallet)
                } else {
                    (wallet, unknown)
                };
                let value = valid(units(rng, c), c);
                (s, r, value, c, FailureReason::WalletNotFound)
            }
            1 => (
                wallet,
                wallet,
                valid(units(rng, c), c),
                c,
                FailureReason::SameWallet,
            ),
            2 => {
                let other = other_currency(c, rng);
                let value = valid(units(rng, other), other);
                let (s, r) = match self.pair(rng, false) {
                    Some((s, r, _)) if rng.chance(0.5) => (s, r),
                    _ => (wallet, WalletId::system(c)),
                };
                (s, r, value, other, FailureReason::CurrencyMismatch)
            }
            3 => {
                // One decimal more than the currency has, as a reader of the
                // wire would get it: `Amount::new` refuses to make one.
                let value = units(rng, c) + Decimal::new(1, c.scale() + 1);
                let text = serde_json::Value::String(value.to_string());
                let value = serde_json::from_value(text).expect("a plain decimal");
                (
                    wallet,
                    WalletId::system(c),
                    value,
                    c,
                    FailureReason::InvalidAmount,
                )
            }
            _ => {
                let value = valid(insufficient_amount(), c);
                let receiver = WalletId::system(c);
                (wallet, receiver, value, c, FailureReason::InsufficientFunds)
            }
        };
        let request = ReserveRequest {
            tags: Default::default(),
            transfer_id: TransferId::from_uuid(Uuid::nil()),
            correlation_id: CorrelationId::from_uuid(Uuid::nil()),
            kind: TransferKind::between(sender, receiver),
            sender_wallet_id: sender,
            receiver_wallet_id: receiver,
            amount: value,
            currency,
            expires_at: None,
            hold_id: None,
        };
        Planned {
            kind: RequestKind::InternalReserve,
            action: Action::Reserve(request, reason),
            repeat_of: None,
        }
    }

    /// The index of the latest key remembered.
    pub fn last_key(&self) -> Option<usize> {
        self.keys.len().checked_sub(1)
    }

    /// Key `index` again with its body, as a client retrying a request it
    /// got no answer to; `None` when the key's body is in doubt.
    pub fn repeat_key(&self, index: usize) -> Option<Planned> {
        let record = self.keys.get(index).filter(|r| !r.ambiguous)?;
        let mut request = record.request.clone();
        let scale = request.amount.scale();
        request.amount.rescale(scale + 1);
        Some(Planned {
            kind: RequestKind::RepeatSame,
            action: Action::Create(request),
            repeat_of: Some(index),
        })
    }

    /// An earlier key again, with its body (amount rewritten with a trailing
    /// zero) or with another amount.
    fn repeat(&mut self, kind: RequestKind, rng: &mut Rng) -> Option<Planned> {
        let usable: Vec<usize> = (0..self.keys.len())
            .filter(|i| !self.keys[*i].ambiguous)
            .collect();
        if usable.is_empty() {
            return None;
        }
        // Half the repeats are of the latest keys, as a client retrying a
        // request it just sent would; only those can meet a 409 while the
        // first answer is lost.
        let len = usable.len() as u64;
        let index = if rng.chance(0.5) {
            usable[(len - 1 - rng.below(len.min(4))) as usize]
        } else {
            usable[rng.below(len) as usize]
        };
        let mut request = self.keys[index].request.clone();
        if kind == RequestKind::RepeatSame {
            let scale = request.amount.scale();
            request.amount.rescale(scale + 1);
        } else {
            request.amount += Decimal::ONE;
        }
        Some(Planned {
            kind,
            action: Action::Create(request),
            repeat_of: Some(index),
        })
    }
}

/// The outcome label of an answer, as counted in reports.
pub(crate) fn label(result: Option<&Result<Created, CreateError>>) -> String {
    let label = match result {
        None => "crashed",
        Some(Ok(c)) if c.replayed => "replayed",
        Some(Ok(c)) => match (c.transfer.status, c.transfer.failure_reason) {
            (TransferStatus::Failed, Some(reason)) => return format!("failed:{reason}"),
            (status, _) => return status.as_str().to_ascii_lowercase(),
        },
        Some(Err(e)) => match e {
            CreateError::InvalidAmount(_) => "invalid_amount",
            CreateError::WalletNotFound(_) => "wallet_not_found",
            CreateError::SameWallet => "same_wallet",
            CreateError::CurrencyMismatch(_) => "currency_mismatch",
            CreateError::KeyReused => "key_reused",
            CreateError::InFlight => "in_flight",
            CreateError::Gateway(_) => "unavailable",
            CreateError::Store(_) => "store_error",
            CreateError::HoldNotFound(_) => "hold_not_found",
            CreateError::HoldPending(_) => "hold_pending",
            CreateError::HoldFailed(_) => "hold_failed",
            CreateError::ReceiverRequired => "receiver_required",
            CreateError::TransferNotFound(_) => "transfer_not_found",
            CreateError::InvalidExpiry { .. } => "invalid_expiry",
            CreateError::Refund(r) => match r {
                RefundRejection::NotSucceeded(_) => "transfer_not_succeeded",
                RefundRejection::Hold | RefundRejection::Refund => "not_refundable",
                RefundRejection::Exceeds { .. } => "exceeds_refundable",
            },
            _ => "other_error",
        },
    };
    label.to_owned()
}

impl Client {
    /// Judges an answer (whose label is `label`) against the API contract
    /// and remembers what it created. `Err` names the broken promise.
    pub fn judge(
        &mut self,
        planned: &Planned,
        result: Option<&Result<Created, CreateError>>,
        label: &str,
        struck: Struck,
    ) -> Result<(), String> {
        self.check(planned, result, label, struck, false)?;
        self.remember(planned, result);
        Ok(())
    }

    /// Remembers the key of a request whose answer is delayed; returns the
    /// index to pass to [`Client::judge_late`].
    pub fn suspended(&mut self, planned: &Planned) -> usize {
        if let Some(i) = planned.repeat_of {
            // The repeat stored its body if the key was absent: which body
            // the key holds is unknown until it answers, maybe for good.
            let record = &mut self.keys[i];
            if record.maybe_absent && planned.kind == RequestKind::RepeatDifferent {
                record.ambiguous = true;
            }
            return i;
        }
        if let Action::Create(request) = &planned.action {
            self.keys.push(KeyRecord {
                kind: planned.kind,
                request: request.clone(),
                maybe_absent: false,
                ambiguous: false,
                transfer: None,
                answered: false,
            });
        }
        self.keys.len() - 1
    }

    /// Judges a delayed answer: the saga may have finished meanwhile, so
    /// the transfer may already be SUCCEEDED.
    pub fn judge_late(
        &mut self,
        planned: &Planned,
        key: usize,
        result: &Result<Created, CreateError>,
        label: &str,
        struck: Struck,
    ) -> Result<(), String> {
        self.check(planned, Some(result), label, struck, true)?;
        if let Ok(created) = result {
            let record = &mut self.keys[key];
            if record.transfer.is_some_and(|id| id != created.transfer.id) {
                return Err(format!("key {} answered two transfers", record.request.key));
            }
            record.transfer = Some(created.transfer.id);
            record.answered = true;
            record.maybe_absent = false;
        }
        Ok(())
    }

    fn check(
        &self,
        planned: &Planned,
        result: Option<&Result<Created, CreateError>>,
        label: &str,
        struck: Struck,
        late: bool,
    ) -> Result<(), String> {
        // A late answer comes from a request that stored a transfer: a
        // new one, or a repeat of a key that was absent.
        let creates = matches!(
            planned.kind,
            RequestKind::Deposit
                | RequestKind::Withdrawal
                | RequestKind::WithdrawAll
                | RequestKind::Transfer
        ) || planned.repeat_of.is_some_and(|i| self.keys[i].maybe_absent);
        let allowed = match label {
            "unavailable" => struck.lookup,
            "crashed" => struck.crash,
            "store_error" => struck.store,
            // The reserve's answer was lost: a timeout, a reset, or the
            // wallet store's unit failing or losing its answer.
            "initiated" => struck.reserve || struck.reset || struck.store,
            "succeeded" => late && creates,
            other
                if late
                    && struck
                        .refused
                        .is_some_and(|r| other == format!("failed:{r}")) =>
            {
                creates
            }
            // A slow call reserves after other steps ran: the balance it
            // was sized on may be gone.
            "failed:insufficient_funds" if late && planned.kind == RequestKind::WithdrawAll => true,
            other => {
                (expected(planned.kind, other) || self.created_by_repeat(planned, other))
                    && self.repeat_agrees(planned, result)
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(format!("{} request answered {label}", planned.kind))
        }
    }

    /// A repeat of a key whose first request died unanswered may be the
    /// one that stores it.
    fn created_by_repeat(&self, planned: &Planned, label: &str) -> bool {
        planned.repeat_of.map(|i| &self.keys[i]).is_some_and(|r| {
            // Later than its first try, an all-of-the-balance amount
            // may no longer be covered.
            let kind = match r.kind {
                RequestKind::WithdrawAll => RequestKind::Withdrawal,
                kind => kind,
            };
            r.maybe_absent && r.transfer.is_none() && expected(kind, label)
        })
    }

    /// A replay names the transfer the key first created; a 409 comes only
    /// while the key's first answer is lost.
    fn repeat_agrees(
        &self,
        planned: &Planned,
        result: Option<&Result<Created, CreateError>>,
    ) -> bool {
        let Some(record) = planned.repeat_of.map(|i| &self.keys[i]) else {
            return true;
        };
        match result {
            Some(Ok(c)) if !c.replayed => {
                // Created by the repeat: only a key that may be absent, and
                // with the repeat's own body.
                let Action::Create(request) = &planned.action else {
                    return false;
                };
                record.maybe_absent
                    && record.transfer.is_none()
                    && c.transfer.amount.value() == request.amount
            }
            Some(Ok(c)) => {
                record.transfer.is_none_or(|id| id == c.transfer.id)
                    && c.transfer.amount.value() == record.request.amount
            }
            Some(Err(CreateError::InFlight)) => !record.answered,
            _ => true,
        }
    }

    fn remember(&mut self, planned: &Planned, result: Option<&Result<Created, CreateError>>) {
        let Action::Create(request) = &planned.action else {
            return;
        };
        if let Some(i) = planned.repeat_of {
            let record = &mut self.keys[i];
            let unknown = matches!(result, None | Some(Err(CreateError::Store(_))));
            if unknown && record.maybe_absent && planned.kind == RequestKind::RepeatDifferent {
                record.ambiguous = true;
            }
            if let Some(Ok(c)) = result {
                let record = &mut self.keys[i];
                if !c.replayed {
                    // The repeat stored the key: its body is the key's now.
                    record.request = request.clone();
                }
                record.transfer = Some(c.transfer.id);
                record.answered = true;
                record.maybe_absent = false;
            }
            return;
        }
        let record = |transfer: Option<TransferId>, answered: bool| KeyRecord {
            kind: planned.kind,
            request: request.clone(),
            maybe_absent: transfer.is_none(),
            ambiguous: false,
            transfer,
            answered,
        };
        let stored = match result {
            None => Some(record(None, false)),
            Some(Ok(c)) => Some(record(Some(c.transfer.id), true)),
            Some(Err(_)) => None,
        };
        self.keys.extend(stored);
    }
}

/// The outcome label of an internal reserve's answer.
pub(crate) fn reserve_label(result: Option<&Result<ReserveOutcome, StoreError>>) -> String {
    match result {
        None => "crashed".to_owned(),
        Some(Ok(ReserveOutcome::Reserved)) => "reserved".to_owned(),
        Some(Ok(ReserveOutcome::Rejected(reason))) => format!("rejected:{reason}"),
        Some(Err(_)) => "store_error".to_owned(),
    }
}

/// The answers the contract allows for a kind, faults aside.
fn expected(kind: RequestKind, label: &str) -> bool {
    match kind {
        RequestKind::OpenWallet => label == "opened",
        RequestKind::Deposit => label == "reserved",
        RequestKind::WithdrawAll => label == "reserved",
        RequestKind::Withdrawal | RequestKind::Transfer => {
            matches!(label, "reserved" | "failed:insufficient_funds")
        }
        RequestKind::Insufficient => label == "failed:insufficient_funds",
        RequestKind::UnknownWallet => label == "wallet_not_found",
        RequestKind::SameWallet => label == "same_wallet",
        RequestKind::CrossCurrency | RequestKind::WrongCurrency => label == "currency_mismatch",
        RequestKind::BadAmount => label == "invalid_amount",
        RequestKind::RepeatSame => matches!(label, "replayed" | "in_flight"),
        RequestKind::RepeatDifferent => label == "key_reused",
        RequestKind::InternalReserve => label.starts_with("rejected:"),
        // Judged by the simulator against what the read ports showed
        // before the request (`crate::sim` `ops`).
        _ => false,
    }
}
