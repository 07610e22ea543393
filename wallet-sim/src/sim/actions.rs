//! The steps themselves.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_core::event::{
    Envelope, Event, LEDGER_EVENTS, LedgerFailure, PostingFacts, WALLET_EVENTS, producer,
};
use wallet_core::ids::{CorrelationId, EventId, IdGenerator, TransferId, WalletId};
use wallet_core::memory::groups;
use wallet_core::money::{Amount, Currency};
use wallet_core::outcome::FailureReason;
use wallet_core::ports::{Clock, Message, WalletReads};
use wallet_core::runtime::{BatchReport, ConsumerError};
use wallet_core::service::TransferRequest;
use wallet_core::transfer::TransferStatus;
use wallet_core::wallet::{ReservationState, ReserveRequest};

use super::{Answer, Injection, Move, Outcome, Poison, Sim, Suspended, Waiter};
use crate::adapters::Adapters;
use crate::client::{Action, Planned, RequestKind, describe, label, reserve_label, short};
use crate::coverage::{Transition, count};
use crate::exec::{Driven, drive, drive_pinned, run_now};
use crate::faults::{
    BeginSeen, CrashArm, FaultKind, Gate, PublishFault, Skew, SlowPoint, StoreArm, StoreFault,
    StorePort, SubscriptionFault, lock,
};
use crate::report::Broken;
use crate::world::{ConsumerId, INSTANCES, RelayId, ServiceId};

/// The violation of a future that waited: nothing in the simulated system
/// may wait, unless the simulator made it crash or hold a slow call.
pub(super) fn stalled(what: &str) -> Broken {
    Broken::new(
        "stalled",
        format!("{what} did not finish without waiting (wall time or a lost wake-up)"),
    )
}

/// The await point where a forged outcome's refusal has been committed by
/// the wallet store and not yet published.
const AFTER_FINALIZE: &str = "after wallet_store.finalize";

impl<A: Adapters> Sim<A> {
    /// A normal step.
    pub(super) fn advance(&mut self, next: Move) -> Outcome {
        match next {
            Move::Request => {
                let i = self.instance();
                self.request(i)
            }
            Move::Relay(which) => {
                let i = self.instance();
                self.relay(which, i)
            }
            Move::Consume(which) => {
                let max = self.batch();
                self.consume(which, Some(max))
            }
            Move::Retry => {
                let i = self.instance();
                self.retry(i)
            }
            Move::Resume if !self.in_flight.is_empty() => {
                let i = self.rng.below(self.in_flight.len() as u64) as usize;
                self.resume(i)
            }
            Move::Sweep => {
                let i = self.instance();
                self.sweep(i)
            }
            Move::Tick | Move::Resume => {
                let by = self.tick_length();
                self.tick(by)
            }
        }
    }

    /// A fault step: arms a fault at a port, then runs a step that calls it.
    pub(super) fn inject(&mut self, injection: Injection) -> Outcome {
        match injection {
            Injection::Duplicate => {
                let fault = *self
                    .rng
                    .pick(&[SubscriptionFault::Redeliver, SubscriptionFault::Doubled]);
                lock(&self.faults).subscription = Some(fault);
                self.any_consumer()
            }
            Injection::CommitFault => {
                let fault = *self.rng.pick(&[
                    SubscriptionFault::CommitFails,
                    SubscriptionFault::CommitLost,
                    SubscriptionFault::PollFails,
                ]);
                lock(&self.faults).subscription = Some(fault);
                self.any_consumer()
            }
            Injection::PublishFault => {
                let fault = *self
                    .rng
                    .pick(&[PublishFault::Partial, PublishFault::AckLost]);
                lock(&self.faults).publish = Some(fault);
                self.any_relay()
            }
            Injection::StoreFault => self.store_fault(),
            Injection::RelayCrash => {
                let n = self.rng.range(1, 6) as u32;
                lock(&self.faults).crash = Some(CrashArm::Count(n));
                self.any_relay()
            }
            Injection::ConsumerCrash => {
                let n = self.rng.range(1, 8) as u32;
                lock(&self.faults).crash = Some(CrashArm::Count(n));
                self.any_consumer()
            }
            Injection::CrashInRequest => {
                let n = self.rng.range(1, 6) as u32;
                lock(&self.faults).crash = Some(CrashArm::Count(n));
                let i = self.instance();
                match self.rng.below(4) {
                    0 | 1 => self.request(i),
                    2 => self.retry(i),
                    _ => self.sweep(i),
                }
            }
            Injection::SlowReserve => {
                let point = *self
                    .rng
                    .pick(&[SlowPoint::BeforeReserve, SlowPoint::AfterReserve]);
                let gate = Gate::default();
                lock(&self.faults).slow = Some((point, gate.clone()));
                self.armed_gate = Some(gate);
                let i = self.instance();
                let outcome = if self.rng.chance(0.7) {
                    self.request(i)
                } else {
                    self.retry(i)
                };
                // Unfired when the step made no reserve call.
                self.armed_gate = None;
                outcome
            }
            Injection::Restart(service) => self.restart(service),
            Injection::Poison => {
                let topic = *self.rng.pick(&[WALLET_EVENTS, LEDGER_EVENTS]);
                self.poison(topic)
            }
            Injection::LedgerSkew => self.skew(),
            Injection::Forged => self.forge(),
            Injection::ReleaseFault => self.release_fault(),
        }
    }

    /// A clock advance: a random one, or now and then one that lands
    /// exactly on a boundary: the end of a lease a claim gave, or the time
    /// an INITIATED transfer reaches the retrier's minimum age or its key's
    /// idempotency lease, so each limit is met on its boundary.
    fn tick_length(&mut self) -> Duration {
        if !self.rng.chance(0.3) {
            return Duration::from_millis(self.rng.range(1, 3_000));
        }
        let now = self.world.clock().now();
        let t = &self.world.settings().transaction;
        let min_age = chrono::Duration::from_std(t.retry_min_age).expect("a short limit");
        // Each kind of boundary as likely as the others, however many of
        // each there are.
        let kinds = [
            lock(&self.faults).lease_ends(),
            self.seen.initiated.values().map(|c| *c + min_age).collect(),
            self.unanswered.iter().map(|(ends, _)| *ends).collect(),
            self.seen.expiries.values().copied().collect(),
        ];
        let ahead: Vec<Vec<_>> = kinds
            .into_iter()
            .map(|mut d: Vec<_>| {
                d.retain(|d| *d > now);
                d.sort();
                d.dedup();
                d
            })
            .filter(|d| !d.is_empty())
            .collect();
        if ahead.is_empty() {
            let exact = [t.idempotency_lease, t.retry_min_age, t.retry_lease];
            return *self.rng.pick(&exact);
        }
        let deadlines = self.rng.pick(&ahead);
        let deadline = *self.rng.pick(deadlines);
        (deadline - now).to_std().expect("a deadline ahead")
    }

    /// A transaction-service instance or relay instance.
    pub(super) fn instance(&mut self) -> usize {
        self.rng.below(INSTANCES as u64) as usize
    }

    /// A batch size for a consumer step: random, so batches of different
    /// transfers interleave differently.
    fn batch(&mut self) -> usize {
        self.rng.range(1, self.config.max_batch as u64) as usize
    }

    fn any_consumer(&mut self) -> Outcome {
        let which = *self.rng.pick(&ConsumerId::ALL);
        let max = self.batch();
        self.consume(which, Some(max))
    }

    fn any_relay(&mut self) -> Outcome {
        let which = *self.rng.pick(&RelayId::ALL);
        let i = self.instance();
        self.relay(which, i)
    }

    /// A store unit fails or loses its answer: the first or second write
    /// of a step that writes the store.
    fn store_fault(&mut self) -> Outcome {
        let port = *self
            .rng
            .pick(&[StorePort::Transfers, StorePort::Wallets, StorePort::Ledger]);
        let fault = *self.rng.pick(&[
            StoreFault::Unavailable,
            StoreFault::AckLost,
            StoreFault::Integrity,
        ]);
        let skip = self.rng.below(2) as u32;
        let mut faults = lock(&self.faults);
        faults.store = Some(StoreArm { port, skip, fault });
        // A consumer whose store failed rewinds its batch; half the time
        // the rewind fails too and leaves the position past the batch.
        if self.rng.chance(0.5) {
            faults.subscription = Some(SubscriptionFault::RewindFails);
        }
        drop(faults);
        let i = self.instance();
        let max = self.batch();
        match (port, self.rng.below(6)) {
            (StorePort::Transfers | StorePort::Wallets, 4) => self.sweep(i),
            // A request whose units are those of holds and refunds: a
            // refund's begin_refund, a void's record_hold_ends or its
            // wallet unit release_holds, a capture's record_reserve.
            (StorePort::Transfers | StorePort::Wallets, 5) => {
                self.issued += 1;
                let kind = match port {
                    StorePort::Wallets => RequestKind::Void,
                    _ => *self.rng.pick(&[
                        RequestKind::Refund,
                        RequestKind::Void,
                        RequestKind::Capture,
                    ]),
                };
                self.op(i, kind)
            }
            (StorePort::Transfers, 0) | (StorePort::Wallets, 0) => self.request(i),
            (StorePort::Transfers, 1) => self.retry(i),
            (StorePort::Transfers, 2) => self.consume(ConsumerId::Transaction, Some(max)),
            (StorePort::Wallets, 1 | 2) => self.consume(ConsumerId::Wallet, Some(max)),
            (StorePort::Ledger, 0 | 1 | 4) => self.consume(ConsumerId::Ledger, Some(max)),
            (StorePort::Transfers, _) => self.relay(RelayId::Transaction, i),
            (StorePort::Wallets, _) => self.relay(RelayId::Wallet, i),
            (StorePort::Ledger, _) => self.relay(RelayId::Ledger, i),
        }
    }

    fn restart(&mut self, service: ServiceId) -> Outcome {
        let (kind, name) = match service {
            ServiceId::Transaction => (FaultKind::RestartTransaction, "transaction"),
            ServiceId::Wallet => (FaultKind::RestartWallet, "wallet"),
            ServiceId::Ledger => (FaultKind::RestartLedger, "ledger"),
        };
        lock(&self.faults).record(kind);
        if service == ServiceId::Transaction {
            let i = self.instance();
            return self.restart_transaction(i, format!("restart transaction service #{i}"));
        }
        self.world.restart(service);
        Outcome::ok(format!("restart {name} service"))
    }

    /// Restarts transaction-service instance `i`, dropping the requests and
    /// the retrier pass it had in flight: their clients never get an answer.
    pub(super) fn restart_transaction(&mut self, i: usize, mut description: String) -> Outcome {
        self.world.restart_transaction(i);
        let (lost, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|s| s.instance == i);
        self.in_flight = kept;
        for lost in lost {
            let kind = match &lost.waiter {
                Waiter::Request { planned, .. } => Some(planned.kind),
                Waiter::Op(planned) => Some(planned.kind),
                Waiter::Retrier => None,
            };
            if let Some(kind) = kind {
                let key = (kind, "lost_in_flight".to_owned());
                *self.requests.entry(key).or_default() += 1;
            }
            description += &format!("; lost {}", lost.text);
        }
        Outcome::ok(description)
    }

    /// Moves the virtual clock.
    pub(super) fn tick(&mut self, by: Duration) -> Outcome {
        self.world.clock().advance(by);
        Outcome::ok(format!("clock +{}ms", by.as_millis()))
    }
}

impl<A: Adapters> Sim<A> {
    /// A client request, to transaction-service instance `i` when it is
    /// one.
    fn request(&mut self, i: usize) -> Outcome {
        let (_, wallets, _) = self.world.reads();
        let available = |id| {
            run_now(wallets.wallet(id))
                .and_then(Result::ok)
                .flatten()
                .map_or(Decimal::ZERO, |w| w.available.value())
        };
        // A client whose request died unanswered retries it, half the time
        // exactly when the key's idempotency lease ends.
        let now = self.world.clock().now();
        self.unanswered.retain(|(ends, _)| *ends >= now);
        let due = self
            .unanswered
            .iter()
            .find(|(ends, _)| *ends == now)
            .map(|(_, key)| *key);
        let retried = due
            .filter(|_| self.rng.chance(0.5))
            .and_then(|key| self.client.repeat_key(key));
        let planned = match retried {
            Some(planned) => planned,
            None => self.client.plan(&mut self.rng, &available),
        };
        self.issued += 1;
        match planned.action.clone() {
            Action::Open(currency) => self.open_wallet(planned.kind, currency, true),
            Action::Create(request) => self.create(i, &planned, request),
            Action::Reserve(request, reason) => self.internal_reserve(request, reason),
            Action::Op => self.op(i, planned.kind),
        }
    }

    pub(super) fn count_request(&mut self, kind: RequestKind, label: &str) {
        *self.requests.entry((kind, label.to_owned())).or_default() += 1;
    }

    /// Opens a wallet; `counted` when it is a client request rather than
    /// the run's setup.
    pub(super) fn open_wallet(
        &mut self,
        kind: RequestKind,
        currency: Currency,
        counted: bool,
    ) -> Outcome {
        let wallets = self.world.wallets.clone();
        let text = format!("{kind} {currency}");
        let driven = drive(wallets.open(currency), &self.faults);
        let struck = lock(&self.faults).struck();
        let (label, outcome) = match driven {
            Driven::Done(Ok(wallet)) => {
                self.client.opened(wallet.id, currency);
                let described = format!("{text} -> {}", short(wallet.id.as_uuid()));
                ("opened", Outcome::ok(described))
            }
            // The wallet may exist (the answer was lost); the client does
            // not know it, and it stays empty.
            Driven::Done(Err(e)) if struck.store => (
                "store_error",
                Outcome::ok(format!("{text} -> store_error: {e}")),
            ),
            Driven::Done(Err(e)) => {
                let broken = Broken::new("contract", format!("open: {e}"));
                return Outcome::broken(text, broken);
            }
            Driven::Crashed(point) => {
                lock(&self.faults).record_with(FaultKind::CrashInRequest, point);
                self.world.restart(ServiceId::Wallet);
                let described = format!("{text} -> crashed; wallet service restarted");
                ("crashed", Outcome::ok(described))
            }
            Driven::Waiting => return Outcome::broken(text, stalled("open wallet")),
        };
        if counted {
            self.count_request(kind, label);
        }
        outcome
    }

    /// An internal caller's reserve request, which the wallet service must
    /// reject for `reason`.
    fn internal_reserve(&mut self, mut request: ReserveRequest, reason: FailureReason) -> Outcome {
        request.transfer_id = self.world.ids().transfer_id();
        request.correlation_id = self.world.ids().correlation_id();
        let kind = RequestKind::InternalReserve;
        let text = format!(
            "{kind} {}: {}->{} {} {}",
            short(request.transfer_id.as_uuid()),
            crate::client::wallet_name(request.sender_wallet_id),
            crate::client::wallet_name(request.receiver_wallet_id),
            request.amount.value(),
            request.currency,
        );
        let wallets = self.world.wallets.clone();
        let driven = drive(wallets.reserve(&request), &self.faults);
        let struck = lock(&self.faults).struck();
        let result = match driven {
            Driven::Done(result) => Some(result),
            Driven::Crashed(point) => {
                lock(&self.faults).record_with(FaultKind::CrashInRequest, point);
                self.world.restart(ServiceId::Wallet);
                None
            }
            Driven::Waiting => return Outcome::broken(text, stalled("a reserve call")),
        };
        let label = reserve_label(result.as_ref());
        self.count_request(kind, &label);
        let allowed = label == format!("rejected:{reason}")
            || (label == "store_error" && struck.store)
            || (label == "crashed" && struck.crash);
        let description = format!("{text} -> {label}");
        if allowed {
            Outcome::moved(description, 1)
        } else {
            let detail = format!("{kind} for {reason} answered {label}");
            Outcome::broken(description, Broken::new("contract", detail))
        }
    }

    fn create(&mut self, i: usize, planned: &Planned, request: TransferRequest) -> Outcome {
        let text = format!("{} {} (tx#{i})", planned.kind, describe(&request));
        let transactions = self.world.transactions[i].clone();
        let mut future: Pin<Box<dyn Future<Output = Answer>>> =
            Box::pin(async move { Answer::Created(transactions.create(request).await) });
        let driven = drive_pinned(future.as_mut(), &self.faults);
        let begin = lock(&self.faults).observed.begin.take();
        if begin == Some(BeginSeen::Created) {
            count(&mut self.coverage, Transition::IdempotencyCreated, 1);
        }
        let result = match driven {
            Driven::Done(Answer::Created(result)) => Some(result),
            Driven::Done(_) => unreachable!("a request answers a request"),
            Driven::Crashed(point) => {
                lock(&self.faults).record_with(FaultKind::CrashInRequest, point);
                None
            }
            Driven::Waiting if lock(&self.faults).struck().slow => {
                let key = self.client.suspended(planned);
                let gate = self
                    .armed_gate
                    .take()
                    .expect("the slow call took the armed gate");
                let description = format!("{text} -> waits for a slow reserve call");
                self.in_flight.push(Suspended {
                    instance: i,
                    waiter: Waiter::Request {
                        planned: planned.clone(),
                        key,
                    },
                    text,
                    gate,
                    future,
                });
                return Outcome::moved(description, 1);
            }
            Driven::Waiting => return Outcome::broken(text, stalled("a transfer request")),
        };
        let struck = lock(&self.faults).struck();
        let label = label(result.as_ref());
        let idempotency = match (label.as_str(), begin) {
            (
                "replayed",
                Some(BeginSeen::Existing {
                    answered: false, ..
                }),
            ) => Some(Transition::IdempotencyLeaseExpired),
            ("replayed", _) => Some(Transition::IdempotencyReplayed),
            ("in_flight", _) => Some(Transition::IdempotencyInFlight),
            ("key_reused", _) => Some(Transition::IdempotencyReused),
            _ => None,
        };
        if let Some(transition) = idempotency {
            count(&mut self.coverage, transition, 1);
        }
        let judged = self
            .lease_kept(&label, begin)
            .and_then(|()| self.client.judge(planned, result.as_ref(), &label, struck));
        self.count_request(planned.kind, &label);
        let mut description = format!("{text} -> {label}");
        if let Some(Ok(created)) = &result {
            description += &format!(" {}", short(created.transfer.id.as_uuid()));
        }
        // Died after storing the key and before recording its answer: the
        // key stays unanswered, a repeat gets 409 until its lease ends.
        let stored = begin == Some(BeginSeen::Created);
        let recorded = lock(&self.faults)
            .crashed
            .as_deref()
            .is_some_and(|p| p == "after transfer_store.record_reserve");
        if result.is_none() && stored && !recorded {
            let key = planned.repeat_of.or(self.client.last_key());
            let lease = self.world.settings().transaction.idempotency_lease;
            let ends = self.world.clock().now() + chrono::Duration::from_std(lease).expect("short");
            self.unanswered.extend(key.map(|k| (ends, k)));
        }
        let outcome = match result {
            // The process died with the request: restart it.
            None => self.restart_transaction(i, description + "; instance restarted"),
            Some(_) => Outcome::moved(description, 1),
        };
        match judged {
            Ok(()) => outcome,
            Err(detail) => Outcome::broken(outcome.description, Broken::new("contract", detail)),
        }
    }

    /// A repeated key whose first request never answered is in flight
    /// exactly while the idempotency lease runs, and replays the transfer
    /// as it is once it ran out.
    fn lease_kept(&self, label: &str, begin: Option<BeginSeen>) -> Result<(), String> {
        let Some(BeginSeen::Existing {
            answered: false,
            age,
        }) = begin
        else {
            return Ok(());
        };
        let lease = self.world.settings().transaction.idempotency_lease;
        let lease = chrono::Duration::from_std(lease).expect("a short lease");
        match label {
            "in_flight" if age >= lease => {
                Err(format!("409 in flight at age {age}, lease {lease}"))
            }
            "replayed" if age < lease => Err(format!("replayed at age {age} within lease {lease}")),
            _ => Ok(()),
        }
    }

    /// The slow reserve call of in-flight request or retrier pass `i`
    /// answers.
    pub(super) fn resume(&mut self, i: usize) -> Outcome {
        let mut waiting = self.in_flight.remove(i);
        waiting.gate.open();
        let answer = match drive_pinned(waiting.future.as_mut(), &self.faults) {
            Driven::Done(answer) => answer,
            Driven::Crashed(_) | Driven::Waiting => {
                return Outcome::broken(waiting.text, stalled("a resumed call"));
            }
        };
        let struck = lock(&self.faults).struck();
        let (planned, key, result) = match (waiting.waiter, answer) {
            (Waiter::Request { planned, key }, Answer::Created(result)) => (planned, key, result),
            (Waiter::Retrier, Answer::Retried(Ok(r))) => {
                let description = format!(
                    "{} -> answers late: {} pending, {} answered",
                    waiting.text, r.attempted, r.answered
                );
                return Outcome::moved(description, r.attempted as u64);
            }
            (Waiter::Op(planned), Answer::Op(answer)) => {
                let outcome = self.judge_late_op(&planned, &answer);
                return Outcome {
                    description: format!("{}: {}", waiting.text, outcome.description),
                    ..outcome
                };
            }
            (Waiter::Retrier, Answer::Retried(Err(e))) => {
                let broken = Broken::new("store_error", e.to_string());
                return Outcome::broken(waiting.text, broken);
            }
            _ => unreachable!("a suspended call answers its own waiter"),
        };
        let label = label(Some(&result));
        let mut struck = struck;
        if let Ok(created) = &result {
            struck.refused = lock(&self.faults).skewed.get(&created.transfer.id).copied();
        }
        let judged = self
            .client
            .judge_late(&planned, key, &result, &label, struck);
        self.count_request(planned.kind, &label);
        let mut description = format!("{} -> answers late: {label}", waiting.text);
        if let Ok(created) = &result {
            description += &format!(" {}", short(created.transfer.id.as_uuid()));
        }
        match judged {
            Ok(()) => Outcome::moved(description, 1),
            Err(detail) => Outcome::broken(description, Broken::new("contract", detail)),
        }
    }

    /// One retrier pass of transaction-service instance `i`.
    pub(super) fn retry(&mut self, i: usize) -> Outcome {
        let text = format!("retrier tx#{i}");
        let transactions = self.world.transactions[i].clone();
        let mut future: Pin<Box<dyn Future<Output = Answer>>> =
            Box::pin(async move { Answer::Retried(transactions.retry_pending().await) });
        let driven = drive_pinned(future.as_mut(), &self.faults);
        let struck = lock(&self.faults).struck();
        match driven {
            Driven::Done(Answer::Retried(Ok(r))) => Outcome::moved(
                format!("{text}: {} pending, {} answered", r.attempted, r.answered),
                r.attempted as u64,
            ),
            Driven::Done(Answer::Retried(Err(e))) if struck.store => {
                Outcome::moved(format!("{text}: {e}"), 1)
            }
            Driven::Done(Answer::Retried(Err(e))) => {
                Outcome::broken(text, Broken::new("store_error", e.to_string()))
            }
            Driven::Done(_) => unreachable!("a retrier answers a retrier"),
            Driven::Crashed(point) => {
                lock(&self.faults).record_with(FaultKind::CrashInRequest, point);
                self.restart_transaction(i, format!("{text}: died; instance restarted"))
            }
            Driven::Waiting if struck.slow => {
                let gate = self
                    .armed_gate
                    .take()
                    .expect("the slow call took the armed gate");
                let description = format!("{text} -> waits for a slow reserve call");
                self.in_flight.push(Suspended {
                    instance: i,
                    waiter: Waiter::Retrier,
                    text,
                    gate,
                    future,
                });
                Outcome::moved(description, 1)
            }
            Driven::Waiting => Outcome::broken(text, stalled("the retrier")),
        }
    }
}

impl<A: Adapters> Sim<A> {
    /// One pass of relay instance `i`.
    pub(super) fn relay(&mut self, which: RelayId, i: usize) -> Outcome {
        let text = format!("relay {}#{i}", which.name());
        let driven = self.world.relay(which, i);
        let struck = lock(&self.faults).struck();
        match driven {
            Driven::Done(Ok(n)) => Outcome::moved(format!("{text}: published {n}"), n as u64),
            // Unacknowledged records are claimed again: by this relay at
            // once, by another once the lease ends.
            Driven::Done(Err(e)) if struck.store || struck.bus => {
                Outcome::moved(format!("{text}: {e}"), 1)
            }
            Driven::Done(Err(e)) => {
                Outcome::broken(text, Broken::new("relay_error", e.to_string()))
            }
            Driven::Crashed(point) => {
                lock(&self.faults).record_with(FaultKind::RelayCrash, point);
                self.world.replace_relay(which, i);
                Outcome::moved(format!("{text}: died; a new instance replaces it"), 1)
            }
            Driven::Waiting => Outcome::broken(text, stalled("a relay pass")),
        }
    }

    /// One consumer step, its batch at most `max` messages (`None`: the
    /// runner's batch size).
    pub(super) fn consume(&mut self, which: ConsumerId, max: Option<usize>) -> Outcome {
        lock(&self.faults).poll_limit = max;
        let text = match max {
            Some(max) => format!("consume {} max {max}", which.name()),
            None => format!("consume {}", which.name()),
        };
        let driven = self.world.consume(which);
        self.consumed(which, text, driven)
    }

    fn consumed(
        &mut self,
        which: ConsumerId,
        text: String,
        driven: Driven<Result<BatchReport, ConsumerError>>,
    ) -> Outcome {
        let struck = lock(&self.faults).struck();
        match driven {
            Driven::Done(Ok(r)) => Outcome::moved(
                format!(
                    "{text}: {} delivered, {} handled, {} dead-lettered",
                    r.delivered, r.handled, r.dead_lettered
                ),
                r.delivered as u64,
            ),
            // The injected failure: the runner rewound the batch (or kept
            // its position when only the commit failed). An integrity error
            // must be reported as one (the runner's loop stops on it until
            // an operator acts; here the next step is the operator's), any
            // other as transient.
            Driven::Done(Err(e))
                if (struck.store || struck.bus) && e.is_integrity() == struck.integrity =>
            {
                Outcome::moved(format!("{text}: {e}"), 1)
            }
            Driven::Done(Err(e)) => {
                Outcome::broken(text, Broken::new("consumer_error", e.to_string()))
            }
            Driven::Crashed(point) => {
                lock(&self.faults).record_with(FaultKind::ConsumerCrash, point);
                self.world.restart_consumer(which);
                Outcome::moved(
                    format!("{text}: died; restarted from the committed offsets"),
                    1,
                )
            }
            Driven::Waiting => Outcome::broken(text, stalled("a consumer step")),
        }
    }

    /// Publishes a poison message on `topic`.
    pub(super) fn poison(&mut self, topic: &'static str) -> Outcome {
        let n = self.poison.len() as u64 + 1;
        let marker = format!("poison#{n};");
        let now = self.world.clock().now();
        // Each form with the start of the reason its dead letter must give.
        let (form, reason, payload) = match self.rng.below(4) {
            0 => (
                "undecodable",
                "malformed event",
                [&b"\xff\xfe{not json "[..], marker.as_bytes()].concat(),
            ),
            1 => (
                "unknown_type",
                "unknown event type",
                head("WalletFrozen", 1, &marker),
            ),
            // A newer version is not poison (it waits for a newer build);
            // version 0 is.
            2 => (
                "schema_zero",
                "unsupported schema version",
                head("WalletReserved", 0, &marker),
            ),
            _ => (
                "wrong_topic",
                "not a ",
                wrong_topic(topic, &marker, n, now).encode(),
            ),
        };
        let message = Message {
            topic: topic.to_owned(),
            key: marker.clone().into_bytes(),
            payload: payload.into(),
        };
        match self.world.publish_raw(&[message]) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                let broken = Broken::new("relay_error", format!("poison publish: {e}"));
                return Outcome::broken(format!("poison on {topic}"), broken);
            }
            None => return Outcome::broken(format!("poison on {topic}"), stalled("a publish")),
        }
        lock(&self.faults).record(FaultKind::Poison);
        self.poison.push(Poison {
            marker,
            topic,
            reason,
        });
        Outcome::ok(format!("poison {n} ({form}) on {topic}"))
    }

    /// Arms a skew of the ledger's view for a reserved transfer on its way
    /// to the ledger, preferably one whose reserve answer was lost.
    fn skew(&mut self) -> Outcome {
        let seen = &self.seen;
        let candidates: Vec<TransferId> = {
            let faults = lock(&self.faults);
            seen.reservations
                .values()
                .filter(|r| r.state == ReservationState::Reserved)
                .map(|r| r.request.transfer_id)
                .filter(|id| !seen.outcomes.contains_key(id) && !faults.skews.contains_key(id))
                .collect()
        };
        let unanswered: Vec<TransferId> = candidates
            .iter()
            .copied()
            .filter(|id| {
                seen.transfers
                    .get(id)
                    .is_some_and(|(s, _)| *s == TransferStatus::Initiated)
            })
            .collect();
        let pool = if unanswered.is_empty() {
            candidates
        } else {
            unanswered
        };
        if pool.is_empty() {
            return Outcome::ok("ledger skew: no reservation on its way".to_owned());
        }
        let id = *self.rng.pick(&pool);
        let skew = *self
            .rng
            .pick(&[Skew::Currency, Skew::SameWallet, Skew::Amount]);
        lock(&self.faults).skews.insert(id, skew);
        Outcome::ok(format!(
            "ledger skew {skew:?} armed for {}",
            short(id.as_uuid())
        ))
    }

    /// Publishes a forged ledger outcome that the wallet store (and, for a
    /// transfer it does not know, the transaction store) must refuse and
    /// dead-letter, then makes the wallet consumer die after its unit
    /// committed, or its unit lose its answer, or the wallet relay's
    /// publish fail: the dead letter must come out anyway.
    fn forge(&mut self) -> Outcome {
        let now = self.world.clock().now();
        let seen = &self.seen;
        // Reservations whose outcome is final and whose transfer (if the
        // transaction service has one) is terminal: a forged outcome moves
        // neither.
        let finished: Vec<TransferId> = seen
            .reservations
            .values()
            .filter(|r| match seen.transfers.get(&r.request.transfer_id) {
                Some((status, _)) => status.is_terminal() && r.state != ReservationState::Reserved,
                None => matches!(r.state, ReservationState::Rejected(_)),
            })
            .map(|r| r.request.transfer_id)
            .collect();
        let ids = self.world.ids();
        let (event_id, correlation) = (ids.event_id(), ids.correlation_id());
        let (transfer_id, event, what) = if !finished.is_empty() && self.rng.chance(0.7) {
            let id = *self.rng.pick(&finished);
            let r = &self.seen.reservations[&id];
            let facts = PostingFacts {
                tags: Default::default(),
                sender_wallet_id: r.request.sender_wallet_id,
                receiver_wallet_id: r.request.receiver_wallet_id,
                amount: r.request.amount,
                currency: r.request.currency,
            };
            let failed = Event::LedgerFailed(LedgerFailure {
                reason: FailureReason::InsufficientFunds,
            });
            // A forged event is well-formed: an amount the currency refuses
            // (an internal reserve's) would make it poison instead.
            let valid = Amount::new(facts.amount.value(), facts.currency).is_ok();
            let event = match r.state {
                ReservationState::Captured => failed,
                ReservationState::Released => Event::LedgerSucceeded(facts),
                _ if !valid || self.rng.chance(0.5) => failed,
                _ => Event::LedgerSucceeded(facts),
            };
            (id, event, format!("{:?} reservation", r.state))
        } else {
            let id = self.world.ids().transfer_id();
            let event = Event::LedgerFailed(LedgerFailure {
                reason: FailureReason::CurrencyMismatch,
            });
            (id, event, "unknown transfer".to_owned())
        };
        let mut groups = vec![groups::WALLET];
        if !self.seen.transfers.contains_key(&transfer_id) {
            groups.push(groups::TRANSACTION);
        }
        let envelope = Envelope::new(
            event_id,
            event,
            transfer_id,
            correlation,
            None,
            now,
            producer::LEDGER,
        );
        let description = format!(
            "forged {} for {} ({what})",
            envelope.event.event_type(),
            short(transfer_id.as_uuid())
        );
        let message = Message {
            topic: LEDGER_EVENTS.to_owned(),
            key: transfer_id.to_string().into_bytes(),
            payload: envelope.encode().into(),
        };
        match self.world.publish_raw(&[message]) {
            Some(Ok(())) => {}
            _ => return Outcome::broken(description, stalled("a publish")),
        }
        lock(&self.faults).record_with(FaultKind::ForgedOutcome, short(event_id.as_uuid()));
        self.forged.insert(event_id, groups);
        let tail = match self.rng.below(3) {
            0 => {
                lock(&self.faults).crash = Some(CrashArm::Named(AFTER_FINALIZE));
                self.consume(ConsumerId::Wallet, None)
            }
            1 => {
                lock(&self.faults).store = Some(StoreArm {
                    port: StorePort::Wallets,
                    skip: 0,
                    fault: StoreFault::AckLost,
                });
                self.consume(ConsumerId::Wallet, None)
            }
            _ => {
                let consumed = self.consume(ConsumerId::Wallet, None);
                if consumed.broken.is_some() {
                    consumed
                } else {
                    let fault = *self
                        .rng
                        .pick(&[PublishFault::Partial, PublishFault::AckLost]);
                    lock(&self.faults).publish = Some(fault);
                    let i = self.instance();
                    let relayed = self.relay(RelayId::Wallet, i);
                    Outcome {
                        description: format!("{}; {}", consumed.description, relayed.description),
                        ..relayed
                    }
                }
            }
        };
        Outcome {
            description: format!("{description}; {}", tail.description),
            ..tail
        }
    }
}

/// A JSON message with an envelope's head and no body.
fn head(event_type: &str, schema_version: u16, marker: &str) -> Vec<u8> {
    format!(
        r#"{{"event_type":"{event_type}","schema_version":{schema_version},"producer":"{marker}"}}"#
    )
    .into_bytes()
}

/// A well-formed event that the consumers of `topic` refuse: a ledger
/// outcome on the wallet topic, a reservation on the ledger topic.
fn wrong_topic(topic: &str, marker: &str, n: u64, now: wallet_core::Timestamp) -> Envelope {
    let id = |tag: u128| Uuid::from_u128((0xbad_u128 << 112) | (tag << 64) | u128::from(n));
    let event = if topic == WALLET_EVENTS {
        Event::LedgerFailed(LedgerFailure {
            reason: FailureReason::InsufficientFunds,
        })
    } else {
        Event::WalletReserved(PostingFacts {
            tags: Default::default(),
            sender_wallet_id: WalletId::from_uuid(id(1)),
            receiver_wallet_id: WalletId::from_uuid(id(2)),
            amount: Amount::new(Decimal::ONE, Currency::USD).expect("valid amount"),
            currency: Currency::USD,
        })
    };
    let mut envelope = Envelope::new(
        EventId::from_uuid(id(3)),
        event,
        TransferId::from_uuid(id(4)),
        CorrelationId::from_uuid(id(5)),
        None,
        now,
        "poison",
    );
    // The marker rides in the producer, so its dead letter can be found.
    envelope.producer = marker.to_owned().into();
    envelope
}
