//! The steps themselves.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_core::event::{
    Envelope, Event, LEDGER_EVENTS, LedgerFailure, PostingFacts, SCHEMA_VERSION, WALLET_EVENTS,
};
use wallet_core::ids::{CorrelationId, EventId, TransferId, WalletId};
use wallet_core::money::{Amount, Currency};
use wallet_core::outcome::FailureReason;
use wallet_core::ports::{Clock, Message, Publisher};
use wallet_core::service::TransferRequest;

use super::{Injection, Move, Outcome, Poison, Sim, Suspended};
use crate::client::{Action, Planned, RequestKind, describe, label, short};
use crate::exec::{poll_now, run_now};
use crate::faults::{CrashPoint, FaultKind, Gate, HandlerFailure, lock};
use crate::planted::SimLedger;
use crate::report::Broken;
use crate::world::{ConsumerId, Ending, RelayId, ServiceId};

/// The violation of a future that waited: nothing in the simulated system
/// may wait, unless the simulator made it crash.
fn stalled(what: &str) -> Broken {
    Broken::new(
        "stalled",
        format!("{what} did not finish without waiting (wall time or a lost wake-up)"),
    )
}

impl<L: SimLedger> Sim<L> {
    /// A normal step.
    pub(super) fn advance(&mut self, next: Move) -> Outcome {
        match next {
            Move::Request => self.request(),
            Move::Relay(which) => self.relay(which, None),
            Move::Consume(which) => {
                let max = self.batch();
                self.consume(which, max, Ending::Commit)
            }
            Move::Retry => self.retry(),
            Move::Resume if !self.in_flight.is_empty() => {
                let i = self.rng.below(self.in_flight.len() as u64) as usize;
                self.resume(i)
            }
            Move::Tick | Move::Resume => {
                let ms = self.rng.range(1, 3_000);
                self.tick(Duration::from_millis(ms))
            }
        }
    }

    /// A fault step.
    pub(super) fn inject(&mut self, injection: Injection) -> Outcome {
        match injection {
            Injection::Duplicate => {
                self.consume_fault(Ending::HandleTwice, FaultKind::DuplicateDelivery)
            }
            Injection::ConsumerCrash => {
                self.consume_fault(Ending::Rewind, FaultKind::ConsumerCrash)
            }
            Injection::HandlerFailure => {
                let failure = if self.rng.chance(0.5) {
                    HandlerFailure::BeforeCommit
                } else {
                    HandlerFailure::AfterCommit
                };
                lock(&self.faults).handler = Some(failure);
                let which = *self.rng.pick(&ConsumerId::ALL);
                let max = self.batch();
                let outcome = self.consume(which, max, Ending::Commit);
                // Unfired when the batch was empty: it must not leak into a
                // later step.
                lock(&self.faults).handler = None;
                outcome
            }
            Injection::RelayCrash => {
                let which = *self.rng.pick(&RelayId::ALL);
                let limit = self.batch();
                self.relay(which, Some(limit))
            }
            Injection::CrashInRequest => self.crash_in_request(),
            Injection::SlowReserve => {
                let point = *self
                    .rng
                    .pick(&[CrashPoint::BeforeReserve, CrashPoint::AfterReserve]);
                let gate = Gate::default();
                lock(&self.faults).slow = Some((point, gate.clone()));
                self.armed_gate = Some(gate);
                let outcome = self.request();
                // Unfired when the request made no reserve call.
                lock(&self.faults).slow = None;
                self.armed_gate = None;
                outcome
            }
            Injection::Restart(service) => self.restart(service),
            Injection::Poison => {
                let topic = *self.rng.pick(&[WALLET_EVENTS, LEDGER_EVENTS]);
                self.poison(topic)
            }
        }
    }

    /// A batch size for a consumer step: random, so batches of different
    /// transfers interleave differently.
    fn batch(&mut self) -> usize {
        self.rng.range(1, self.config.max_batch as u64) as usize
    }

    fn consume_fault(&mut self, ending: Ending, kind: FaultKind) -> Outcome {
        let which = *self.rng.pick(&ConsumerId::ALL);
        let max = self.batch();
        let outcome = self.consume(which, max, ending);
        if outcome.moved > 0 {
            lock(&self.faults).record(kind);
        }
        outcome
    }

    fn crash_in_request(&mut self) -> Outcome {
        let point = *self
            .rng
            .pick(&[CrashPoint::BeforeReserve, CrashPoint::AfterReserve]);
        lock(&self.faults).crash = Some(point);
        let outcome = if self.rng.chance(0.5) {
            self.request()
        } else {
            self.retry()
        };
        // Unfired when no reserve call was made.
        lock(&self.faults).crash = None;
        outcome
    }

    fn restart(&mut self, service: ServiceId) -> Outcome {
        let (kind, name) = match service {
            ServiceId::Transaction => (FaultKind::RestartTransaction, "transaction"),
            ServiceId::Wallet => (FaultKind::RestartWallet, "wallet"),
            ServiceId::Ledger => (FaultKind::RestartLedger, "ledger"),
        };
        lock(&self.faults).record(kind);
        let description = format!("restart {name} service");
        if service == ServiceId::Transaction {
            return self.restart_transaction(description);
        }
        self.world.restart(service);
        Outcome::ok(description)
    }

    /// Restarts the transaction service, dropping the requests it had in
    /// flight: their clients never get an answer.
    fn restart_transaction(&mut self, mut description: String) -> Outcome {
        self.world.restart(ServiceId::Transaction);
        for lost in self.in_flight.drain(..) {
            let key = (lost.planned.kind, "lost_in_flight".to_owned());
            *self.requests.entry(key).or_default() += 1;
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

impl<L: SimLedger> Sim<L> {
    /// A client request.
    fn request(&mut self) -> Outcome {
        let planned = self.client.plan(&mut self.rng);
        self.issued += 1;
        match planned.action.clone() {
            Action::Open(currency) => self.open_wallet(planned.kind, currency, true),
            Action::Create(request) => self.create(&planned, request),
        }
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
        match run_now(wallets.open(currency)) {
            Some(Ok(wallet)) => {
                self.client.opened(wallet.id, currency);
                if counted {
                    *self.requests.entry((kind, "opened".into())).or_default() += 1;
                }
                Outcome::ok(format!("{text} -> {}", short(wallet.id.as_uuid())))
            }
            Some(Err(e)) => Outcome::broken(text, Broken::new("contract", format!("open: {e}"))),
            None => Outcome::broken(text, stalled("open wallet")),
        }
    }

    fn create(&mut self, planned: &Planned, request: TransferRequest) -> Outcome {
        let text = format!("{} {}", planned.kind, describe(&request));
        let transactions = self.world.transactions.clone();
        let mut future: Pin<Box<dyn Future<Output = _>>> =
            Box::pin(async move { transactions.create(request).await });
        let result = poll_now(future.as_mut());
        let struck = lock(&self.faults).struck();
        if result.is_none() && struck.slow {
            let key = self.client.suspended(planned);
            let gate = self
                .armed_gate
                .take()
                .expect("the slow call took the armed gate");
            let description = format!("{text} -> waits for a slow reserve call");
            let planned = planned.clone();
            self.in_flight.push(Suspended {
                planned,
                text,
                key,
                gate,
                future,
            });
            return Outcome::moved(description, 1);
        }
        if result.is_none() && !struck.crash {
            return Outcome::broken(text, stalled("a transfer request"));
        }
        let label = label(result.as_ref());
        let judged = self.client.judge(planned, result.as_ref(), &label, struck);
        *self
            .requests
            .entry((planned.kind, label.clone()))
            .or_default() += 1;
        let mut description = format!("{text} -> {label}");
        if let Some(Ok(created)) = &result {
            description += &format!(" {}", short(created.transfer.id.as_uuid()));
        }
        let outcome = match result {
            // The process died with the request: restart it.
            None => self.restart_transaction(description + "; transaction service restarted"),
            Some(_) => Outcome::moved(description, 1),
        };
        match judged {
            Ok(()) => outcome,
            Err(detail) => Outcome::broken(outcome.description, Broken::new("contract", detail)),
        }
    }

    /// The slow reserve call of in-flight request `i` answers.
    pub(super) fn resume(&mut self, i: usize) -> Outcome {
        let mut waiting = self.in_flight.remove(i);
        waiting.gate.open();
        let Some(result) = poll_now(waiting.future.as_mut()) else {
            return Outcome::broken(waiting.text, stalled("a resumed request"));
        };
        let struck = lock(&self.faults).struck();
        let label = label(Some(&result));
        let planned = &waiting.planned;
        let judged = self
            .client
            .judge_late(planned, waiting.key, &result, &label, struck);
        *self
            .requests
            .entry((planned.kind, label.clone()))
            .or_default() += 1;
        let mut description = format!("{} -> answers late: {label}", waiting.text);
        if let Ok(created) = &result {
            description += &format!(" {}", short(created.transfer.id.as_uuid()));
        }
        match judged {
            Ok(()) => Outcome::moved(description, 1),
            Err(detail) => Outcome::broken(description, Broken::new("contract", detail)),
        }
    }

    /// One retrier pass.
    pub(super) fn retry(&mut self) -> Outcome {
        let transactions = self.world.transactions.clone();
        match run_now(transactions.retry_pending()) {
            Some(Ok(r)) => Outcome::moved(
                format!("retrier: {} pending, {} answered", r.attempted, r.answered),
                r.attempted as u64,
            ),
            Some(Err(e)) => {
                Outcome::broken("retrier".into(), Broken::new("store_error", e.to_string()))
            }
            None if lock(&self.faults).struck().crash => self.restart_transaction(
                "retrier: died mid-call; transaction service restarted".into(),
            ),
            None => Outcome::broken("retrier".into(), stalled("the retrier")),
        }
    }
}

impl<L: SimLedger> Sim<L> {
    /// One relay pass, or with `crash: Some(limit)` one that dies after
    /// publishing at most `limit` messages and before marking any sent.
    pub(super) fn relay(&mut self, which: RelayId, crash: Option<usize>) -> Outcome {
        let text = format!("relay {}", which.name());
        match self.world.relay(which, crash) {
            Some(Ok(n)) => {
                let mut description = format!("{text}: published {n}");
                if crash.is_some() && n > 0 {
                    lock(&self.faults).record(FaultKind::RelayCrash);
                    description += ", died before acknowledging them";
                }
                Outcome::moved(description, n as u64)
            }
            Some(Err(e)) => Outcome::broken(text, Broken::new("relay_error", e.to_string())),
            None => Outcome::broken(text, stalled("a relay pass")),
        }
    }

    /// One consumer step of at most `max` messages.
    fn consume(&mut self, which: ConsumerId, max: usize, ending: Ending) -> Outcome {
        let text = match ending {
            Ending::Commit => format!("consume {} max {max}", which.name()),
            Ending::Rewind => format!("consume {} max {max}, die before commit", which.name()),
            Ending::HandleTwice => format!("consume {} max {max}, handle twice", which.name()),
        };
        let result = self.world.consume(which, max, ending);
        self.consumed(text, result)
    }

    /// The runner's own `run_once`, as the drain uses it.
    pub(super) fn consume_once(&mut self, which: ConsumerId) -> Outcome {
        let result = self.world.consume_once(which);
        self.consumed(format!("consume {} run_once", which.name()), result)
    }

    fn consumed(
        &mut self,
        text: String,
        result: Option<
            Result<wallet_core::runtime::BatchReport, wallet_core::runtime::ConsumerError>,
        >,
    ) -> Outcome {
        match result {
            Some(Ok(r)) => Outcome::moved(
                format!(
                    "{text}: {} delivered, {} handled, {} dead-lettered",
                    r.delivered, r.handled, r.dead_lettered
                ),
                r.delivered as u64,
            ),
            // The injected failure: the batch was rewound, as the runner does.
            Some(Err(e)) if lock(&self.faults).struck().handler => {
                Outcome::moved(format!("{text}: {e}; rewound"), 1)
            }
            Some(Err(e)) => Outcome::broken(text, Broken::new("consumer_error", e.to_string())),
            None => Outcome::broken(text, stalled("a consumer step")),
        }
    }

    /// Publishes a poison message on `topic`.
    pub(super) fn poison(&mut self, topic: &'static str) -> Outcome {
        let n = self.poison.len() as u64 + 1;
        let marker = format!("poison#{n};");
        let now = self.world.clock().now();
        let (form, payload) = match self.rng.below(4) {
            0 => (
                "undecodable",
                [&b"\xff\xfe{not json "[..], marker.as_bytes()].concat(),
            ),
            1 => ("unknown_type", head("WalletFrozen", 1, &marker)),
            2 => (
                "newer_schema",
                head("WalletReserved", SCHEMA_VERSION + 1, &marker),
            ),
            _ => ("wrong_topic", wrong_topic(topic, &marker, n, now).encode()),
        };
        let message = Message {
            topic: topic.to_owned(),
            key: marker.clone().into_bytes(),
            payload: payload.into(),
        };
        let bus = self.world.bus().clone();
        if run_now(bus.publish(&[message])).is_none() {
            return Outcome::broken(format!("poison on {topic}"), stalled("a publish"));
        }
        lock(&self.faults).record(FaultKind::Poison);
        self.poison.push(Poison { marker, topic });
        Outcome::ok(format!("poison {n} ({form}) on {topic}"))
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
            sender_wallet_id: WalletId::from_uuid(id(1)),
            receiver_wallet_id: WalletId::from_uuid(id(2)),
            amount: Amount::new(Decimal::ONE, Currency::USD).expect("valid amount"),
            currency: Currency::USD,
        })
    };
    Envelope::new(
        EventId::from_uuid(id(3)),
        event,
        TransferId::from_uuid(id(4)),
        CorrelationId::from_uuid(id(5)),
        None,
        now,
        marker.to_owned(),
    )
}
