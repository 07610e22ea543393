//! The run: setup, an active phase of requests, steps and faults chosen by
//! the seed, then a drain without faults and the checks of a quiet system.

mod actions;
mod checks;
mod ops;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wallet_core::event::{LEDGER_EVENTS, WALLET_EVENTS};
use wallet_core::ids::{EventId, TransferId};
use wallet_core::outcome::{FailureReason, LedgerOutcome};
use wallet_core::ports::StoreError;
use wallet_core::service::{CreateError, Created, RetryReport};
use wallet_core::transfer::TransferStatus;
use wallet_core::wallet::Reservation;

use crate::SimConfig;
use crate::adapters::Adapters;
use crate::client::{CURRENCIES, Client, Planned, RequestKind};
use crate::clock::SimClock;
use crate::coverage::Coverage;
use crate::faults::{Faults, Gate, SharedFaults, lock};
use crate::planted::PlantedBug;
use crate::report::{Broken, Failure, SimReport, Trace};
use crate::rng::Rng;
use crate::world::{ConsumerId, INSTANCES, RelayId, ServiceId, Settings, World};

/// Drain rounds after which a system that still moves is reported as not
/// reaching quiet.
const MAX_DRAIN_ROUNDS: u32 = 100;

/// A step of the active phase that is not a fault.
#[derive(Debug, Clone, Copy)]
enum Move {
    Request,
    Relay(RelayId),
    Consume(ConsumerId),
    Retry,
    Tick,
    /// A slow reserve call answers.
    Resume,
    /// A pass of the hold sweeper.
    Sweep,
}

const MOVES: [(Move, u32); 11] = [
    (Move::Request, 30),
    (Move::Relay(RelayId::Wallet), 9),
    (Move::Relay(RelayId::Ledger), 9),
    (Move::Relay(RelayId::Transaction), 2),
    (Move::Consume(ConsumerId::Ledger), 9),
    (Move::Consume(ConsumerId::Wallet), 9),
    (Move::Consume(ConsumerId::Transaction), 9),
    (Move::Retry, 5),
    (Move::Tick, 8),
    (Move::Resume, 4),
    (Move::Sweep, 5),
];

/// A fault step of the active phase. Reserve and lookup timeouts are not
/// here: the gateway rolls them on every call.
#[derive(Debug, Clone, Copy)]
enum Injection {
    /// A consumer's poll delivers a batch twice.
    Duplicate,
    /// A consumer's offset commit fails or loses its answer.
    CommitFault,
    /// A relay's (or a runner's dead-letter) publish fails part-way or
    /// loses its answer.
    PublishFault,
    /// A store's unit fails or loses its answer, in any step that writes it.
    StoreFault,
    RelayCrash,
    ConsumerCrash,
    CrashInRequest,
    SlowReserve,
    Restart(ServiceId),
    Poison,
    LedgerSkew,
    Forged,
    /// The wallet gateway's release call (a void's or the sweeper's) times
    /// out, finds the wallet service unavailable, or loses its answer
    /// after the release committed.
    ReleaseFault,
}

const INJECTIONS: [(Injection, u32); 15] = [
    (Injection::Duplicate, 3),
    (Injection::CommitFault, 2),
    (Injection::PublishFault, 3),
    (Injection::StoreFault, 4),
    (Injection::RelayCrash, 3),
    (Injection::ConsumerCrash, 3),
    (Injection::CrashInRequest, 3),
    (Injection::SlowReserve, 3),
    (Injection::Restart(ServiceId::Transaction), 1),
    (Injection::Restart(ServiceId::Wallet), 1),
    (Injection::Restart(ServiceId::Ledger), 1),
    (Injection::Poison, 1),
    (Injection::LedgerSkew, 2),
    (Injection::Forged, 2),
    (Injection::ReleaseFault, 3),
];

/// What a step did.
struct Outcome {
    description: String,
    /// Messages, events or transfers it moved; the drain stops when a round
    /// moves nothing.
    moved: u64,
    broken: Option<Broken>,
}

impl Outcome {
    fn ok(description: String) -> Outcome {
        Outcome::moved(description, 0)
    }

    fn moved(description: String, moved: u64) -> Outcome {
        Outcome {
            description,
            moved,
            broken: None,
        }
    }

    fn broken(description: String, broken: Broken) -> Outcome {
        Outcome {
            description,
            moved: 0,
            broken: Some(broken),
        }
    }
}

/// What a suspended call answers.
#[allow(clippy::large_enum_variant)] // a handful exist at once
enum Answer {
    Created(Result<Created, CreateError>),
    Retried(Result<RetryReport, StoreError>),
    Op(ops::OpAnswer),
}

/// Who waits for a suspended call.
#[allow(clippy::large_enum_variant)] // a handful exist at once
enum Waiter {
    /// A client, for its request: its plan and its key's index in the
    /// client's memory.
    Request { planned: Planned, key: usize },
    /// A retrier pass.
    Retrier,
    /// A client, for its hold, capture or refund.
    Op(ops::PlannedOp),
}

/// A request or retrier pass whose reserve call is slow: it waits at its
/// gate while other steps run.
struct Suspended {
    /// The transaction-service instance running it.
    instance: usize,
    waiter: Waiter,
    /// Its trace text.
    text: String,
    gate: Gate,
    future: Pin<Box<dyn Future<Output = Answer>>>,
}

/// A poison message published by the run.
struct Poison {
    marker: String,
    topic: &'static str,
    /// How the reason of its dead letters starts.
    reason: &'static str,
}

/// The state the read ports showed at the last check, for the checks and
/// the coverage diff.
#[derive(Default)]
struct Seen {
    /// Every transfer's status and failure reason.
    transfers: BTreeMap<TransferId, (TransferStatus, Option<FailureReason>)>,
    /// Every reservation.
    reservations: BTreeMap<TransferId, Reservation>,
    /// The ledger's outcomes.
    outcomes: BTreeMap<TransferId, LedgerOutcome>,
    /// INITIATED transfers, with when they were created.
    initiated: BTreeMap<TransferId, wallet_core::Timestamp>,
    /// HELD holds, with when they expire.
    expiries: BTreeMap<TransferId, wallet_core::Timestamp>,
}

/// One run.
pub(crate) struct Sim<A: Adapters> {
    config: SimConfig,
    rng: Rng,
    world: World<A>,
    faults: SharedFaults,
    client: Client,
    /// What the clients remember of holds, captures, voids and refunds.
    ops: ops::OpsMemory,
    trace: Trace,
    requests: BTreeMap<(RequestKind, String), u64>,
    issued: usize,
    /// Request indexes before which a poison message goes to a topic.
    poison_plan: Vec<(usize, &'static str)>,
    poison: Vec<Poison>,
    /// (marker, group) of every poison message found dead-lettered.
    poison_seen: BTreeSet<(String, &'static str)>,
    /// Forged events, with the groups that must dead-letter them.
    forged: BTreeMap<EventId, Vec<&'static str>>,
    /// (event, group) of every forged event found dead-lettered.
    forged_seen: BTreeSet<(EventId, &'static str)>,
    seen: Seen,
    coverage: Coverage,
    succeeded: usize,
    dead_letters_seen: usize,
    /// How far the drain moves the clock each round: past the retrier's
    /// minimum age and every lease, so work a dead relay or retrier held
    /// is taken over.
    drain_tick: Duration,
    /// Requests and retrier passes waiting for a slow reserve call, oldest
    /// first.
    in_flight: Vec<Suspended>,
    /// The gate of an armed slow call, until the call takes it.
    armed_gate: Option<Gate>,
    /// Keys stored by a request that died before its answer was recorded,
    /// with the time their idempotency lease ends.
    unanswered: Vec<(wallet_core::Timestamp, usize)>,
}

impl<A: Adapters> Sim<A> {
    pub fn new(adapters: A, config: &SimConfig) -> Sim<A> {
        let mut rng = Rng::new(config.seed);
        let faults = Arc::new(Mutex::new(Faults::new(rng.fork(), config.fault_rate)));
        let mut settings = Settings::new(config.max_batch);
        settings.timeout_is_refusal = config.planted_bug == Some(PlantedBug::FailOnTimeout);
        settings.dead_letters_outside_unit =
            config.planted_bug == Some(PlantedBug::DeadLetterOutsideUnit);
        settings.expire_without_wallet =
            config.planted_bug == Some(PlantedBug::ExpireWithoutWallet);
        let drain_tick = [
            settings.transaction.retry_min_age,
            settings.transaction.retry_lease,
            settings.transaction.sweep_lease,
            settings.relay.lease,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
            + Duration::from_millis(1);
        let world = World::new(
            adapters,
            SimClock::default(),
            config.partitions,
            faults.clone(),
            settings,
        );
        let mut poison_plan = Vec::new();
        if config.fault_rate > 0.0 && config.transfers > 0 {
            for topic in [WALLET_EVENTS, LEDGER_EVENTS] {
                poison_plan.push((rng.below(config.transfers as u64) as usize, topic));
            }
        }
        Sim {
            config: config.clone(),
            rng,
            world,
            faults,
            client: Client::default(),
            ops: ops::OpsMemory::default(),
            trace: Trace::new(config.trace_len),
            requests: BTreeMap::new(),
            issued: 0,
            poison_plan,
            poison: Vec::new(),
            poison_seen: BTreeSet::new(),
            forged: BTreeMap::new(),
            forged_seen: BTreeSet::new(),
            seen: Seen::default(),
            coverage: Coverage::new(),
            succeeded: 0,
            dead_letters_seen: 0,
            drain_tick,
            in_flight: Vec::new(),
            armed_gate: None,
            unanswered: Vec::new(),
        }
    }

    /// Runs to the end or to the first violation.
    pub fn run(mut self) -> SimReport {
        let failure = self.phases().err();
        SimReport {
            seed: self.config.seed,
            steps: self.trace.steps(),
            faults: lock(&self.faults).counts.clone(),
            requests: self.requests,
            transfers: self.seen.transfers.len(),
            succeeded: self.succeeded,
            dead_letters: self.dead_letters_seen,
            coverage: self.coverage,
            trace: self.trace.last(),
            trace_hash: self.trace.hash(),
            failure,
        }
    }

    fn phases(&mut self) -> Result<(), Failure> {
        for i in 0..self.config.wallets {
            let currency = CURRENCIES[i % CURRENCIES.len()];
            self.step(|s| s.open_wallet(RequestKind::OpenWallet, currency, false))?;
        }
        self.active()?;
        self.drain()?;
        // Quiet, with holds still HELD before their expiry: the audit of a
        // quiet system and the holds' own checks.
        self.step(|s| s.quiet_checks())?;
        // Then past every expiry: the sweepers must end every hold.
        self.step(Self::expire_all)?;
        self.drain()?;
        self.step(Self::final_checks)?;
        Ok(())
    }

    fn active(&mut self) -> Result<(), Failure> {
        while self.issued < self.config.transfers {
            let issued = self.issued;
            let due: Vec<&'static str> = self
                .poison_plan
                .iter()
                .filter(|(at, _)| *at == issued)
                .map(|(_, topic)| *topic)
                .collect();
            self.poison_plan.retain(|(at, _)| *at != issued);
            for topic in due {
                self.step(|s| s.poison(topic))?;
            }
            if self.rng.chance(self.config.fault_rate) {
                let injection = self.rng.weighted(&INJECTIONS);
                self.step(|s| s.inject(injection))?;
            } else {
                let next = self.rng.weighted(&MOVES);
                self.step(|s| s.advance(next))?;
            }
        }
        Ok(())
    }

    /// No more faults: pump everything, with the clock past the retrier's
    /// minimum age and every lease, until a whole round moves nothing.
    fn drain(&mut self) -> Result<(), Failure> {
        lock(&self.faults).stop();
        // Slow calls answer first; they are not faults of the drain.
        while !self.in_flight.is_empty() {
            self.step(|s| s.resume(0))?;
        }
        let drain_tick = self.drain_tick;
        for _ in 0..MAX_DRAIN_ROUNDS {
            self.step(|s| s.tick(drain_tick))?;
            let mut moved = 0;
            for i in 0..INSTANCES {
                moved += self.step(|s| s.retry(i))?;
            }
            for i in 0..INSTANCES {
                moved += self.step(|s| s.sweep(i))?;
            }
            moved += self.step(|s| s.settle_voids())?;
            for (relay, consumer) in [
                (RelayId::Wallet, ConsumerId::Ledger),
                (RelayId::Ledger, ConsumerId::Wallet),
            ] {
                for i in 0..INSTANCES {
                    moved += self.step(|s| s.relay(relay, i))?;
                }
                moved += self.step(|s| s.consume(consumer, None))?;
            }
            moved += self.step(|s| s.consume(ConsumerId::Transaction, None))?;
            for i in 0..INSTANCES {
                moved += self.step(|s| s.relay(RelayId::Transaction, i))?;
            }
            if moved == 0 {
                return Ok(());
            }
        }
        let index = self.trace.push("drain gave up".to_owned());
        Err(self.failure(
            index,
            Broken::new("quiescence", "still moving after the drain"),
        ))
    }

    /// Runs one step: records it in the trace, catches a panic as a
    /// violation, then checks the invariants that hold at every moment.
    fn step(&mut self, act: impl FnOnce(&mut Self) -> Outcome) -> Result<u64, Failure> {
        lock(&self.faults).observed = Default::default();
        let outcome = catch_unwind(AssertUnwindSafe(|| act(self))).unwrap_or_else(|payload| {
            let message = panic_message(payload.as_ref());
            Outcome::broken("panicked".to_owned(), Broken::new("panic", message))
        });
        let notes = {
            let mut faults = lock(&self.faults);
            faults.disarm();
            faults.take_notes()
        };
        let mut description = outcome.description;
        if !notes.is_empty() {
            description = format!("{description} [fault: {}]", notes.join(", "));
        }
        let index = self.trace.push(description);
        if let Some(broken) = outcome.broken {
            return Err(self.failure(index, broken));
        }
        let checked = catch_unwind(AssertUnwindSafe(|| self.check_always()))
            .unwrap_or_else(|payload| Some(Broken::new("panic", panic_message(payload.as_ref()))));
        match checked {
            Some(broken) => Err(self.failure(index, broken)),
            None => Ok(outcome.moved),
        }
    }

    fn failure(&self, step: u64, broken: Broken) -> Failure {
        Failure {
            seed: self.config.seed,
            step,
            invariant: broken.invariant.to_owned(),
            detail: broken.detail,
        }
    }
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use wallet_core::money::{Amount, Currency};
    use wallet_core::wallet::{Wallet, WalletChange};

    use super::*;
    use crate::adapters::MemoryAdapters;

    #[test]
    fn a_panic_of_a_core_assertion_is_reported_as_a_violation() {
        let mut sim = Sim::new(MemoryAdapters, &SimConfig::new(5));
        let failure = sim
            .step(|s| {
                let now = wallet_core::ports::Clock::now(s.world.clock());
                let id = wallet_core::ids::WalletId::from_uuid(uuid::Uuid::from_u128(1 << 100));
                let mut wallet = Wallet::open(id, Currency::USD, now);
                let one = Amount::parse("1", Currency::USD).expect("valid");
                // Capturing funds that were never reserved breaks a wallet
                // invariant: `Wallet::apply` asserts.
                wallet.apply(WalletChange::Captured(one), now);
                Outcome::ok("unreachable".into())
            })
            .expect_err("the panic is a failure");
        assert_eq!((failure.seed, failure.step), (5, 0));
        assert_eq!(failure.invariant, "panic");
        assert!(
            failure.detail.contains("reserved < 0"),
            "{}",
            failure.detail
        );
    }
}
