//! The holds and refunds API as clients use it: holds, captures, voids and
//! refunds, planned from what the read ports show just before the request
//! and judged against what the wallet service and the transfer store must
//! decide from that state; the hold sweeper; and the clients' retries of
//! voids left without an answer.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use uuid::Uuid;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::money::Currency;
use wallet_core::ports::{Clock, StoreError, TransferReads, WalletReads};
use wallet_core::service::{
    CaptureRequest, CreateError, Created, HoldRequest, RefundRequest, VoidError,
};
use wallet_core::transfer::{Transfer, TransferKind, TransferStatus};
use wallet_core::wallet::{Reservation, ReservationState, Wallet};

use super::checks::{PAGE, all};
use super::{Answer, Outcome, Sim, Suspended, Waiter};
use crate::adapters::Adapters;
use crate::client::{RequestKind, amount, insufficient_amount, label, short, wallet_name};
use crate::exec::{Driven, drive, drive_pinned, run_now};
use crate::faults::{FaultKind, ReleaseFault, lock};
use crate::report::Broken;

/// The expiries a hold asks for, in virtual time (`None`: the service's
/// default of seven days). Most are short, so holds expire within a run.
const EXPIRIES: [Option<u64>; 8] = [
    Some(1),
    Some(3),
    Some(8),
    Some(20),
    Some(45),
    Some(120),
    Some(600),
    None,
];

/// A request of the holds and refunds API.
#[derive(Debug, Clone)]
pub(crate) enum OpAction {
    Hold(HoldRequest),
    Capture(CaptureRequest),
    Void(TransferId),
    Refund(RefundRequest),
}

impl OpAction {
    /// Its trace text.
    fn describe(&self) -> String {
        let amount = |a: Option<Decimal>| a.map_or("all".to_owned(), |a| a.to_string());
        match self {
            OpAction::Hold(h) => format!(
                "{} {} for {} {}{} in {}",
                h.key,
                wallet_name(h.wallet),
                h.receiver.map_or("-".to_owned(), wallet_name),
                h.amount,
                h.currency.map(|c| format!(" {c}")).unwrap_or_default(),
                h.expires_in
                    .map_or("default".to_owned(), |d| format!("{}s", d.as_secs())),
            ),
            OpAction::Capture(c) => format!(
                "{} of {} {} to {}",
                c.key,
                short(c.hold.as_uuid()),
                amount(c.amount),
                c.receiver.map_or("its receiver".to_owned(), wallet_name),
            ),
            OpAction::Void(id) => short(id.as_uuid()),
            OpAction::Refund(r) => format!(
                "{} of {} {}",
                r.key,
                short(r.original.as_uuid()),
                amount(r.amount)
            ),
        }
    }
}

/// A planned request: its kind, what it does, and the answers the API
/// contract allows given the state before it, faults aside.
#[derive(Debug, Clone)]
pub(crate) struct PlannedOp {
    pub kind: RequestKind,
    pub action: OpAction,
    /// The answers allowed when no fault struck.
    expect: Vec<String>,
    /// A repeat's: the transfer its key first answered.
    replays: Option<TransferId>,
}

/// What a request of the holds and refunds API answered.
pub(crate) enum OpAnswer {
    Created(Result<Created, CreateError>),
    Voided(Result<Transfer, VoidError>),
}

/// What the clients remember of the holds and refunds API.
#[derive(Debug, Default)]
pub(crate) struct OpsMemory {
    /// Holds answered with their transfer.
    holds: Vec<TransferId>,
    /// Keys answered with a transfer (stored, so repeatable): the request
    /// and the transfer.
    keys: Vec<(OpAction, TransferId)>,
    /// Voids without a definite answer (lost, refused as transient, or of
    /// a hold not decided yet): their clients retry them until answered.
    pub unsettled_voids: BTreeSet<TransferId>,
}

/// What the read ports show before a request.
pub(super) struct Pre {
    pub transfers: BTreeMap<TransferId, Transfer>,
    pub reservations: BTreeMap<TransferId, Reservation>,
    pub wallets: BTreeMap<WalletId, Wallet>,
}

impl Pre {
    fn available(&self, wallet: WalletId) -> Decimal {
        self.wallets
            .get(&wallet)
            .map_or(Decimal::ZERO, |w| w.available.value())
    }

    /// What the refunds not FAILED of `original` send back.
    fn refunded(&self, original: TransferId) -> Decimal {
        self.transfers
            .values()
            .filter(|t| t.refund_of == Some(original) && t.status != TransferStatus::Failed)
            .map(|t| t.amount.value())
            .sum()
    }
}

/// A status as an answer's label.
fn status_label(status: TransferStatus) -> String {
    status.as_str().to_ascii_lowercase()
}

/// The label of an answer.
fn op_label(answer: Option<&OpAnswer>) -> String {
    match answer {
        None => "crashed".to_owned(),
        Some(OpAnswer::Created(result)) => label(Some(result)),
        Some(OpAnswer::Voided(result)) => match result {
            Ok(t) => status_label(t.status),
            Err(VoidError::NotFound(_)) => "hold_not_found".to_owned(),
            Err(VoidError::Pending(_)) => "hold_pending".to_owned(),
            Err(VoidError::Ended(t)) => format!("ended:{}", status_label(t.status)),
            Err(VoidError::Gateway(_)) => "unavailable".to_owned(),
            Err(VoidError::Store(_)) => "store_error".to_owned(),
            Err(_) => "other_error".to_owned(),
        },
    }
}

/// One minor unit of `currency`.
fn unit(currency: Currency) -> Decimal {
    Decimal::new(1, currency.scale())
}

/// What the wallet service answers a capture of `amount` from the hold
/// whose reservation is `hold`, at `now`.
fn capture_decision(
    hold: Option<&Reservation>,
    amount: Decimal,
    now: wallet_core::Timestamp,
) -> String {
    let Some(hold) = hold else {
        return "failed:hold_not_found".to_owned();
    };
    match hold.state {
        ReservationState::Held if hold.request.expires_at.is_none_or(|at| now >= at) => {
            "failed:hold_expired".to_owned()
        }
        ReservationState::Held if amount > hold.request.amount.value() => {
            "failed:exceeds_hold".to_owned()
        }
        ReservationState::Held => "reserved".to_owned(),
        ReservationState::Converted => "failed:hold_captured".to_owned(),
        ReservationState::Voided => "failed:hold_voided".to_owned(),
        ReservationState::Expired => "failed:hold_expired".to_owned(),
        _ => "failed:hold_not_found".to_owned(),
    }
}

impl<A: Adapters> Sim<A> {
    /// Everything the read ports show, for planning and judging a request.
    pub(super) fn pre(&self) -> Result<Pre, Broken> {
        let (transfers, wallets, _) = self.world.reads();
        let read = async {
            let t = all(|after| transfers.transfers_page(after, PAGE), |t| t.id).await?;
            let r = all(
                |after| wallets.reservations_page(after, PAGE),
                |r| r.request.transfer_id,
            )
            .await?;
            let w = all(|after| wallets.wallets_page(after, PAGE), |w| w.id).await?;
            Ok::<_, StoreError>(Pre {
                transfers: t.into_iter().map(|t| (t.id, t)).collect(),
                reservations: r.into_iter().map(|r| (r.request.transfer_id, r)).collect(),
                wallets: w.into_iter().map(|w| (w.id, w)).collect(),
            })
        };
        run_now(read)
            .ok_or_else(|| Broken::new("stalled", "a read did not answer at once"))?
            .map_err(|e| Broken::new("store_error", format!("read: {e}")))
    }

    /// A transfer id nobody made.
    fn absent_transfer(&mut self) -> TransferId {
        TransferId::from_uuid(Uuid::from_u128(
            (0xdead_u128 << 112) | (1 << 64) | u128::from(self.rng.below(1 << 32)),
        ))
    }

    /// Plans a request of `kind` from the state `pre`; kinds that need
    /// what the run does not have yet (a hold, a SUCCEEDED transfer, an
    /// earlier key) become a plain hold.
    fn plan_op(&mut self, kind: RequestKind, pre: &Pre) -> PlannedOp {
        let planned = match kind {
            RequestKind::Capture | RequestKind::CaptureInvalid => self.plan_capture(kind, pre),
            RequestKind::Void => self.plan_void(pre),
            RequestKind::Refund | RequestKind::RefundInvalid => self.plan_refund(kind, pre),
            RequestKind::RepeatOpSame | RequestKind::RepeatOpDifferent => {
                self.plan_repeat(kind, pre)
            }
            RequestKind::HoldInsufficient | RequestKind::HoldInvalid => {
                Some(self.plan_hold(kind, pre))
            }
            _ => None,
        };
        planned.unwrap_or_else(|| self.plan_hold(RequestKind::Hold, pre))
    }

    fn plan_hold(&mut self, kind: RequestKind, pre: &Pre) -> PlannedOp {
        let rng = &mut self.rng;
        let (wallet, c) = self.client.wallet(rng);
        let receiver = if rng.chance(0.5) {
            self.client.other_of(rng, c, wallet)
        } else {
            None
        };
        let mut request = HoldRequest {
            tags: Default::default(),
            key: self.client.key(),
            wallet,
            receiver,
            // Mostly within what the wallet has, so most holds are held.
            amount: match (pre.available(wallet) / unit(c)).trunc().to_u64() {
                Some(units) if units > 0 && rng.chance(0.8) => amount(rng, c, 1, units),
                _ => amount(rng, c, 1, 20_000),
            },
            currency: rng.chance(0.5).then_some(c),
            expires_in: rng.pick(&EXPIRIES).map(Duration::from_secs),
        };
        let expect = match kind {
            RequestKind::HoldInsufficient => {
                request.amount = insufficient_amount();
                "failed:insufficient_funds".to_owned()
            }
            RequestKind::HoldInvalid => match rng.below(3) {
                0 => {
                    request.expires_in = Some(Duration::ZERO);
                    "invalid_expiry".to_owned()
                }
                1 => {
                    let max = self.world.settings().transaction.max_hold_expiry;
                    request.expires_in = Some(max + Duration::from_secs(1));
                    "invalid_expiry".to_owned()
                }
                _ => {
                    request.receiver = Some(wallet);
                    "same_wallet".to_owned()
                }
            },
            _ if pre.available(wallet) >= request.amount => "held".to_owned(),
            _ => "failed:insufficient_funds".to_owned(),
        };
        PlannedOp {
            kind,
            action: OpAction::Hold(request),
            expect: vec![expect],
            replays: None,
        }
    }

    /// One of the holds the clients made: a HELD one seven times in ten
    /// when there is one, for `live`; an ended one otherwise.
    fn pick_hold(&mut self, pre: &Pre, live: bool) -> Option<TransferId> {
        let held = |id: &TransferId| {
            pre.transfers
                .get(id)
                .is_some_and(|t| t.status == TransferStatus::Held)
        };
        let (matching, rest): (Vec<TransferId>, Vec<TransferId>) = self
            .ops
            .holds
            .iter()
            .copied()
            .partition(|id| held(id) == live);
        if !matching.is_empty() && (rest.is_empty() || self.rng.chance(0.7)) {
            return Some(*self.rng.pick(&matching));
        }
        // Without a hold of the kind wanted, another now and then; a new
        // hold otherwise.
        (!rest.is_empty() && (!matching.is_empty() || self.rng.chance(0.3)))
            .then(|| *self.rng.pick(&rest))
    }

    fn plan_capture(&mut self, kind: RequestKind, pre: &Pre) -> Option<PlannedOp> {
        let now = self.world.clock().now();
        let invalid = kind == RequestKind::CaptureInvalid;
        let variant = if invalid { self.rng.below(3) } else { 0 };
        if variant == 2 {
            // No such hold: an id nobody made, or a transfer that is no hold.
            let transfers: Vec<TransferId> = pre
                .transfers
                .values()
                .filter(|t| t.kind != TransferKind::Hold)
                .map(|t| t.id)
                .collect();
            let hold = if transfers.is_empty() || self.rng.chance(0.5) {
                self.absent_transfer()
            } else {
                *self.rng.pick(&transfers)
            };
            let request = CaptureRequest {
                tags: Default::default(),
                key: self.client.key(),
                hold,
                amount: None,
                receiver: None,
            };
            return Some(PlannedOp {
                kind,
                action: OpAction::Capture(request),
                expect: vec!["hold_not_found".to_owned()],
                replays: None,
            });
        }
        let id = self.pick_hold(pre, true)?;
        let hold = pre.transfers.get(&id)?.clone();
        let c = hold.currency;
        let held = hold.amount.value();
        let other = self
            .client
            .other_of(&mut self.rng, c, hold.sender_wallet_id);
        let (amount, receiver) = if invalid && variant == 1 && hold.hold_receiver().is_none() {
            // A hold that names no receiver, and a capture that names none.
            (None, None)
        } else {
            let receiver = match hold.hold_receiver() {
                Some(_) if self.rng.chance(0.6) => None,
                _ => Some(other?),
            };
            let units = (held / unit(c)).trunc();
            let amount = if invalid {
                Some(held + unit(c))
            } else if self.rng.chance(0.5) || units < Decimal::TWO {
                None
            } else {
                let units = units.to_u64().unwrap_or(1);
                let part = self.rng.range(1, units - 1);
                Some(Decimal::from(part) * unit(c))
            };
            (amount, receiver)
        };
        let request = CaptureRequest {
            tags: Default::default(),
            key: self.client.key(),
            hold: id,
            amount,
            receiver,
        };
        let expect = match hold.status {
            TransferStatus::Initiated => "hold_pending".to_owned(),
            TransferStatus::Failed => "hold_failed".to_owned(),
            _ if receiver.or(hold.hold_receiver()).is_none() => "receiver_required".to_owned(),
            _ => capture_decision(pre.reservations.get(&id), amount.unwrap_or(held), now),
        };
        Some(PlannedOp {
            kind,
            action: OpAction::Capture(request),
            expect: vec![expect],
            replays: None,
        })
    }

    fn plan_void(&mut self, pre: &Pre) -> Option<PlannedOp> {
        let id = if self.rng.chance(0.1) {
            self.absent_transfer()
        } else {
            self.pick_hold(pre, true)?
        };
        Some(PlannedOp {
            kind: RequestKind::Void,
            action: OpAction::Void(id),
            expect: vec![self.void_decision(pre, id)],
            replays: None,
        })
    }

    /// What a void of `id` answers, given `pre`.
    fn void_decision(&self, pre: &Pre, id: TransferId) -> String {
        let now = self.world.clock().now();
        let Some(hold) = pre
            .transfers
            .get(&id)
            .filter(|t| t.kind == TransferKind::Hold)
        else {
            return "hold_not_found".to_owned();
        };
        match hold.status {
            TransferStatus::Initiated => "hold_pending".to_owned(),
            TransferStatus::Held => match pre.reservations.get(&id).map(|r| (r.state, r)) {
                Some((ReservationState::Held, r))
                    if r.request.expires_at.is_none_or(|at| now >= at) =>
                {
                    "ended:expired".to_owned()
                }
                Some((ReservationState::Held | ReservationState::Voided, _)) => "voided".to_owned(),
                Some((ReservationState::Converted, _)) => "ended:captured".to_owned(),
                Some((ReservationState::Expired, _)) => "ended:expired".to_owned(),
                _ => "a hold the wallet service does not hold".to_owned(),
            },
            TransferStatus::Voided => "voided".to_owned(),
            other => format!("ended:{}", status_label(other)),
        }
    }

    fn plan_refund(&mut self, kind: RequestKind, pre: &Pre) -> Option<PlannedOp> {
        let refundable = |t: &Transfer| t.amount.value() - pre.refunded(t.id);
        let succeeded: Vec<&Transfer> = pre
            .transfers
            .values()
            .filter(|t| {
                t.status == TransferStatus::Succeeded
                    && t.refund_of.is_none()
                    && t.kind != TransferKind::Hold
            })
            .collect();
        let open: Vec<&Transfer> = succeeded
            .iter()
            .copied()
            .filter(|t| refundable(t) > Decimal::ZERO)
            .collect();
        let key = self.client.key();
        let (original, amount, expect) = if kind == RequestKind::Refund {
            if open.is_empty() {
                return None;
            }
            let original = *self.rng.pick(&open);
            let rest = refundable(original);
            let c = original.currency;
            let amount = if rest == original.amount.value() && self.rng.chance(0.4) {
                None
            } else {
                let units = (rest / unit(c)).trunc().to_u64().unwrap_or(1).max(1);
                Some(Decimal::from(self.rng.range(1, units)) * unit(c))
            };
            let value = amount.unwrap_or(original.amount.value());
            // The refund's sender is the original's receiver.
            let payer = original.receiver_wallet_id;
            let expect = if payer.system_currency().is_some() || pre.available(payer) >= value {
                "reserved"
            } else {
                "failed:insufficient_funds"
            };
            (original.id, amount, expect.to_owned())
        } else {
            match self.rng.below(4) {
                // More than is left to refund.
                0 if !succeeded.is_empty() => {
                    let original = *self.rng.pick(&succeeded);
                    let rest = refundable(original);
                    let amount = if rest < original.amount.value() && self.rng.chance(0.5) {
                        None
                    } else {
                        Some(rest + unit(original.currency))
                    };
                    (original.id, amount, "exceeds_refundable".to_owned())
                }
                // Not SUCCEEDED, a hold, or a refund.
                1 | 2 => {
                    let refused: Vec<&Transfer> = pre
                        .transfers
                        .values()
                        .filter(|t| {
                            t.status != TransferStatus::Succeeded
                                || t.refund_of.is_some()
                                || t.kind == TransferKind::Hold
                        })
                        .collect();
                    if refused.is_empty() {
                        return None;
                    }
                    let t = *self.rng.pick(&refused);
                    let expect = if t.kind == TransferKind::Hold || t.refund_of.is_some() {
                        "not_refundable"
                    } else {
                        "transfer_not_succeeded"
                    };
                    (t.id, None, expect.to_owned())
                }
                _ => (
                    self.absent_transfer(),
                    None,
                    "transfer_not_found".to_owned(),
                ),
            }
        };
        Some(PlannedOp {
            kind,
            action: OpAction::Refund(RefundRequest {
                tags: Default::default(),
                key,
                original,
                amount,
            }),
            expect: vec![expect],
            replays: None,
        })
    }

    fn plan_repeat(&mut self, kind: RequestKind, pre: &Pre) -> Option<PlannedOp> {
        if self.ops.keys.is_empty() {
            return None;
        }
        let (action, first) = self.rng.pick(&self.ops.keys).clone();
        let same = kind == RequestKind::RepeatOpSame;
        let plus = |amount: Decimal, c: Currency| if same { amount } else { amount + unit(c) };
        let currency_of = |id: TransferId| pre.transfers.get(&id).map(|t| (t.currency, t.amount));
        let action = match action {
            OpAction::Hold(mut h) => {
                let c = pre.wallets.get(&h.wallet)?.currency;
                h.amount = plus(h.amount, c);
                OpAction::Hold(h)
            }
            OpAction::Capture(mut r) => {
                let (c, held) = currency_of(r.hold)?;
                if !same {
                    r.amount = Some(plus(r.amount.unwrap_or(held.value()), c));
                }
                OpAction::Capture(r)
            }
            OpAction::Refund(mut r) => {
                let (c, whole) = currency_of(r.original)?;
                if !same {
                    r.amount = Some(plus(r.amount.unwrap_or(whole.value()), c));
                }
                OpAction::Refund(r)
            }
            OpAction::Void(_) => return None,
        };
        let expect = if same { "replayed" } else { "key_reused" };
        Some(PlannedOp {
            kind,
            action,
            expect: vec![expect.to_owned()],
            replays: same.then_some(first),
        })
    }

    /// A request of the holds and refunds API of `kind`, to
    /// transaction-service instance `i`.
    pub(super) fn op(&mut self, i: usize, kind: RequestKind) -> Outcome {
        let pre = match self.pre() {
            Ok(pre) => pre,
            Err(broken) => return Outcome::broken(format!("{kind}"), broken),
        };
        let planned = self.plan_op(kind, &pre);
        self.send_op(i, planned)
    }

    /// Sends a planned request and judges its answer.
    fn send_op(&mut self, i: usize, planned: PlannedOp) -> Outcome {
        let text = format!("{} {} (tx#{i})", planned.kind, planned.action.describe());
        let transactions = self.world.transactions[i].clone();
        let action = planned.action.clone();
        let mut future: Pin<Box<dyn Future<Output = Answer>>> = Box::pin(async move {
            Answer::Op(match action {
                OpAction::Hold(r) => OpAnswer::Created(transactions.hold(r).await),
                OpAction::Capture(r) => OpAnswer::Created(transactions.capture(r).await),
                OpAction::Refund(r) => OpAnswer::Created(transactions.refund(r).await),
                OpAction::Void(id) => OpAnswer::Voided(transactions.void(id).await),
            })
        });
        let driven = drive_pinned(future.as_mut(), &self.faults);
        lock(&self.faults).observed.begin = None;
        let answer = match driven {
            Driven::Done(Answer::Op(answer)) => Some(answer),
            Driven::Done(_) => unreachable!("a request of the holds API answers one"),
            Driven::Crashed(point) => {
                lock(&self.faults).record_with(FaultKind::CrashInRequest, point);
                None
            }
            Driven::Waiting if lock(&self.faults).struck().slow => {
                let gate = self
                    .armed_gate
                    .take()
                    .expect("the slow call took the armed gate");
                let description = format!("{text} -> waits for a slow reserve call");
                self.in_flight.push(Suspended {
                    instance: i,
                    waiter: Waiter::Op(planned),
                    text,
                    gate,
                    future,
                });
                return Outcome::moved(description, 1);
            }
            Driven::Waiting => {
                return Outcome::broken(text, super::actions::stalled("a hold or refund request"));
            }
        };
        let label = op_label(answer.as_ref());
        let judged = self.judge_op(&planned, answer.as_ref(), &label, false);
        self.count_request(planned.kind, &label);
        let mut description = format!("{text} -> {label}");
        if let Some(OpAnswer::Created(Ok(created))) = &answer {
            description += &format!(" {}", short(created.transfer.id.as_uuid()));
        }
        let outcome = match answer {
            None => self.restart_transaction(i, description + "; instance restarted"),
            Some(_) => Outcome::moved(description, 1),
        };
        match judged {
            Ok(()) => outcome,
            Err(detail) => Outcome::broken(outcome.description, Broken::new("contract", detail)),
        }
    }

    /// Judges an answer against what the state before the request allowed,
    /// widened by the faults that struck it, and remembers what it made.
    /// A late answer (after a slow reserve call) may find any state.
    pub(super) fn judge_op(
        &mut self,
        planned: &PlannedOp,
        answer: Option<&OpAnswer>,
        label: &str,
        late: bool,
    ) -> Result<(), String> {
        let struck = lock(&self.faults).struck();
        let release = {
            let faults = lock(&self.faults);
            faults.has(FaultKind::ReleaseTimeoutBefore)
                || faults.has(FaultKind::ReleaseUnavailable)
                || faults.has(FaultKind::ReleaseAnswerLost)
        };
        let void = matches!(planned.action, OpAction::Void(_));
        let created = matches!(answer, Some(OpAnswer::Created(Ok(_))));
        let allowed = match label {
            "crashed" => struck.crash,
            "store_error" => struck.store,
            "unavailable" => struck.lookup || (void && (release || struck.store)),
            "initiated" => struck.reserve || struck.store || struck.reset,
            // A slow call answers after other steps ran: its hold may have
            // ended, its wallet's funds gone, meanwhile.
            _ if late => created,
            other => planned.expect.iter().any(|e| e == other),
        };
        if !allowed {
            return Err(format!(
                "{} {} answered {label}, the state before it allowed {:?}",
                planned.kind,
                planned.action.describe(),
                planned.expect
            ));
        }
        if let (Some(first), Some(OpAnswer::Created(Ok(c)))) = (planned.replays, answer)
            && c.transfer.id != first
        {
            return Err(format!(
                "{} replayed {}, its key first answered {}",
                planned.kind,
                short(c.transfer.id.as_uuid()),
                short(first.as_uuid())
            ));
        }
        self.remember_op(planned, answer, label);
        Ok(())
    }

    fn remember_op(&mut self, planned: &PlannedOp, answer: Option<&OpAnswer>, label: &str) {
        match (&planned.action, answer) {
            (OpAction::Void(id), _) => {
                let settled = !matches!(
                    label,
                    "crashed" | "store_error" | "unavailable" | "hold_pending"
                );
                if settled {
                    self.ops.unsettled_voids.remove(id);
                } else {
                    self.ops.unsettled_voids.insert(*id);
                }
            }
            (action, Some(OpAnswer::Created(Ok(c)))) if !c.replayed => {
                if let OpAction::Hold(_) = action {
                    self.ops.holds.push(c.transfer.id);
                }
                self.ops.keys.push((action.clone(), c.transfer.id));
            }
            _ => {}
        }
    }

    /// Judges the late answer of a request that waited for a slow call.
    pub(super) fn judge_late_op(&mut self, planned: &PlannedOp, answer: &OpAnswer) -> Outcome {
        let label = op_label(Some(answer));
        let judged = self.judge_op(planned, Some(answer), &label, true);
        self.count_request(planned.kind, &label);
        let description = format!(
            "{} {} -> answers late: {label}",
            planned.kind,
            planned.action.describe()
        );
        match judged {
            Ok(()) => Outcome::moved(description, 1),
            Err(detail) => Outcome::broken(description, Broken::new("contract", detail)),
        }
    }

    /// A void of a HELD hold, with the gateway's release call armed to
    /// fail; or a sweeper pass with it armed.
    pub(super) fn release_fault(&mut self) -> Outcome {
        let fault = *self.rng.pick(&[
            ReleaseFault::TimeoutBefore,
            ReleaseFault::Unavailable,
            ReleaseFault::AnswerLost,
        ]);
        lock(&self.faults).release = Some(fault);
        let i = self.instance();
        if self.rng.chance(0.5) {
            return self.sweep(i);
        }
        let pre = match self.pre() {
            Ok(pre) => pre,
            Err(broken) => return Outcome::broken("void".to_owned(), broken),
        };
        self.issued += 1;
        let planned = self.plan_op(RequestKind::Void, &pre);
        self.send_op(i, planned)
    }

    /// One pass of the hold sweeper of transaction-service instance `i`,
    /// as the supervised loop runs it.
    pub(super) fn sweep(&mut self, i: usize) -> Outcome {
        let text = format!("sweeper tx#{i}");
        let transactions = self.world.transactions[i].clone();
        let driven = drive(transactions.sweep_expired(), &self.faults);
        let struck = lock(&self.faults).struck();
        match driven {
            Driven::Done(Ok(r)) => Outcome::moved(
                format!("{text}: {} claimed, {} ended", r.claimed, r.ended),
                r.claimed as u64,
            ),
            // The holds are claimed again once the lease ends.
            Driven::Done(Err(e)) if struck.store => Outcome::moved(format!("{text}: {e}"), 1),
            Driven::Done(Err(e)) => {
                Outcome::broken(text, Broken::new("store_error", e.to_string()))
            }
            Driven::Crashed(point) => {
                lock(&self.faults).record_with(FaultKind::CrashInRequest, point);
                self.restart_transaction(i, format!("{text}: died; instance restarted"))
            }
            Driven::Waiting => Outcome::broken(text, super::actions::stalled("a sweeper pass")),
        }
    }

    /// The clients retry the voids left without an answer, once each; a
    /// void answered for good counts as a move.
    pub(super) fn settle_voids(&mut self) -> Outcome {
        let ids: Vec<TransferId> = self.ops.unsettled_voids.iter().copied().collect();
        if ids.is_empty() {
            return Outcome::ok("voids: none unanswered".to_owned());
        }
        let mut texts = Vec::new();
        let mut moved = 0;
        for id in ids {
            let pre = match self.pre() {
                Ok(pre) => pre,
                Err(broken) => return Outcome::broken("voids again".to_owned(), broken),
            };
            let planned = PlannedOp {
                kind: RequestKind::Void,
                action: OpAction::Void(id),
                expect: vec![self.void_decision(&pre, id)],
                replays: None,
            };
            let transactions = self.world.transactions[0].clone();
            let answer = match drive(transactions.void(id), &self.faults) {
                Driven::Done(result) => OpAnswer::Voided(result),
                _ => {
                    return Outcome::broken(
                        "voids again".to_owned(),
                        super::actions::stalled("a void"),
                    );
                }
            };
            let label = op_label(Some(&answer));
            if let Err(detail) = self.judge_op(&planned, Some(&answer), &label, false) {
                return Outcome::broken(
                    format!("void {} again", short(id.as_uuid())),
                    Broken::new("contract", detail),
                );
            }
            if !self.ops.unsettled_voids.contains(&id) {
                moved += 1;
            }
            texts.push(format!("{} {label}", short(id.as_uuid())));
        }
        Outcome::moved(format!("voids again: {}", texts.join(", ")), moved)
    }

    /// Moves the clock past the expiry of every HELD hold, so that the
    /// drain after it must expire them all.
    pub(super) fn expire_all(&mut self) -> Outcome {
        let pre = match self.pre() {
            Ok(pre) => pre,
            Err(broken) => return Outcome::broken("expire all".to_owned(), broken),
        };
        let now = self.world.clock().now();
        let latest = pre
            .transfers
            .values()
            .filter(|t| t.status == TransferStatus::Held)
            .filter_map(|t| t.expires_at)
            .max();
        match latest {
            Some(at) if at >= now => {
                let by = (at - now).to_std().unwrap_or_default() + Duration::from_millis(1);
                self.world.clock().advance(by);
                Outcome::ok(format!(
                    "clock +{}ms: past every hold's expiry",
                    by.as_millis()
                ))
            }
            _ => Outcome::ok("no hold held".to_owned()),
        }
    }
}
