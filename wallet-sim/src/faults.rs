//! The faults the simulator injects, the shared state that arms them for
//! the port wrappers (`crate::ports`), and the wallet gateway with the
//! network's faults.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use async_trait::async_trait;
use wallet_core::Timestamp;
use wallet_core::ids::{TransferId, WalletId, WorkerId};
use wallet_core::outcome::{FailureReason, ReserveOutcome};
use wallet_core::ports::{
    Claim, GatewayError, OutboxRecord, WalletGateway, WalletReads, WalletStore,
};
use wallet_core::service::WalletService;
use wallet_core::transfer::{HoldEnd, Transfer, TransferStatus};
use wallet_core::wallet::{HoldRelease, HoldState, ReserveRequest, Wallet};

use crate::client::Struck;
use crate::rng::Rng;

/// A kind of fault, as counted in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// A subscription's poll returned a batch again: the next poll
    /// redelivers it, or the batch carries each message twice.
    DuplicateDelivery,
    /// A subscription's offset commit failed before storing anything.
    CommitFailure,
    /// A subscription stored the offsets, then its answer was lost (error).
    CommitLost,
    /// A subscription's rewind failed and left its position past the batch
    /// it was to deliver again: the runner must rejoin before it polls.
    RewindFailure,
    /// A subscription's poll failed.
    PollFailure,
    /// A publish failed after some (maybe none) of its messages went out.
    PublishFailure,
    /// A publish delivered every message, then its answer was lost (error).
    PublishAckLost,
    /// A store's unit failed before applying anything
    /// (`StoreError::Unavailable`).
    StoreUnavailable,
    /// A store's unit committed, then its answer was lost
    /// (`StoreError::Unavailable` after applying).
    StoreAckLost,
    /// A store refused a unit with `StoreError::Integrity` (a constraint
    /// the core does not know of), applying nothing: a consumer must report
    /// an integrity failure and not commit past the batch.
    StoreIntegrity,
    /// A relay died at an await point (after its claim, after publishing,
    /// ...); a new relay instance took its place and took the records
    /// over once the lease ended.
    RelayCrash,
    /// A consumer died at an await point (after its handler's unit
    /// committed and before the offset commit, ...); it restarted from the
    /// committed offsets.
    ConsumerCrash,
    /// A request or a retrier pass died at an await point (after the
    /// transfer was stored, after the reservation committed, ...); the
    /// service instance that ran it (a transaction-service instance, or the
    /// wallet service for its own requests) restarted.
    CrashInRequest,
    /// The reserve call timed out before the wallet service saw it.
    ReserveTimeoutBefore,
    /// The reserve call timed out after the reservation committed.
    ReserveTimeoutAfter,
    /// A wallet-currency lookup timed out (the request got a 503).
    LookupTimeout,
    /// A reserve call was slow (before or after the reservation committed):
    /// the request or retrier pass stayed in flight while other steps ran,
    /// and answered late.
    SlowReserve,
    /// A slow reserve call was cut by a wallet service restart after the
    /// reservation committed: the caller saw the connection reset.
    ConnectionReset,
    /// A transaction-service instance restarted: caches, requests in flight
    /// and consumer positions lost.
    RestartTransaction,
    /// The wallet service restarted.
    RestartWallet,
    /// The ledger service restarted.
    RestartLedger,
    /// A poison message was published (undecodable bytes, unknown event
    /// type, schema version 0, or an event on the wrong topic).
    Poison,
    /// The ledger saw a reserved transfer's posting request otherwise than
    /// the wallet reserved it (another currency, one wallet twice, an
    /// amount invalid for the currency) and refused it.
    LedgerSkew,
    /// A well-formed ledger outcome that contradicts the reservations (or
    /// names an unknown transfer) was published: the wallet store (and the
    /// transaction store) must dead-letter it.
    ForgedOutcome,
    /// The wallet gateway's release call (a void's or the sweeper's) timed
    /// out before the wallet service saw it.
    ReleaseTimeoutBefore,
    /// The wallet gateway's release call found the wallet service
    /// unavailable.
    ReleaseUnavailable,
    /// The wallet gateway's release call timed out after the release
    /// committed: the holds ended, the caller does not know it.
    ReleaseAnswerLost,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 27] = [
        FaultKind::DuplicateDelivery,
        FaultKind::CommitFailure,
        FaultKind::CommitLost,
        FaultKind::RewindFailure,
        FaultKind::PollFailure,
        FaultKind::PublishFailure,
        FaultKind::PublishAckLost,
        FaultKind::StoreUnavailable,
        FaultKind::StoreAckLost,
        FaultKind::StoreIntegrity,
        FaultKind::RelayCrash,
        FaultKind::ConsumerCrash,
        FaultKind::CrashInRequest,
        FaultKind::ReserveTimeoutBefore,
        FaultKind::ReserveTimeoutAfter,
        FaultKind::LookupTimeout,
        FaultKind::SlowReserve,
        FaultKind::ConnectionReset,
        FaultKind::RestartTransaction,
        FaultKind::RestartWallet,
        FaultKind::RestartLedger,
        FaultKind::Poison,
        FaultKind::LedgerSkew,
        FaultKind::ForgedOutcome,
        FaultKind::ReleaseTimeoutBefore,
        FaultKind::ReleaseUnavailable,
        FaultKind::ReleaseAnswerLost,
    ];

    /// The snake_case name used in traces and tables.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::DuplicateDelivery => "duplicate_delivery",
            FaultKind::CommitFailure => "commit_failure",
            FaultKind::CommitLost => "commit_lost",
            FaultKind::RewindFailure => "rewind_failure",
            FaultKind::PollFailure => "poll_failure",
            FaultKind::PublishFailure => "publish_failure",
            FaultKind::PublishAckLost => "publish_ack_lost",
            FaultKind::StoreUnavailable => "store_unavailable",
            FaultKind::StoreAckLost => "store_ack_lost",
            FaultKind::StoreIntegrity => "store_integrity",
            FaultKind::RelayCrash => "relay_crash",
            FaultKind::ConsumerCrash => "consumer_crash",
            FaultKind::CrashInRequest => "crash_in_request",
            FaultKind::ReserveTimeoutBefore => "reserve_timeout_before",
            FaultKind::ReserveTimeoutAfter => "reserve_timeout_after",
            FaultKind::LookupTimeout => "lookup_timeout",
            FaultKind::SlowReserve => "slow_reserve",
            FaultKind::ConnectionReset => "connection_reset",
            FaultKind::RestartTransaction => "restart_transaction",
            FaultKind::RestartWallet => "restart_wallet",
            FaultKind::RestartLedger => "restart_ledger",
            FaultKind::Poison => "poison",
            FaultKind::LedgerSkew => "ledger_skew",
            FaultKind::ForgedOutcome => "forged_outcome",
            FaultKind::ReleaseTimeoutBefore => "release_timeout_before",
            FaultKind::ReleaseUnavailable => "release_unavailable",
            FaultKind::ReleaseAnswerLost => "release_answer_lost",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the three services' stores, as the fault wrappers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StorePort {
    Transfers,
    Wallets,
    Ledger,
}

impl Skew {
    /// Why the ledger refuses a request seen so.
    pub fn reason(self) -> FailureReason {
        match self {
            Skew::Currency => FailureReason::CurrencyMismatch,
            Skew::SameWallet => FailureReason::SameWallet,
            Skew::Amount => FailureReason::InvalidAmount,
        }
    }
}

impl StorePort {
    pub fn name(self) -> &'static str {
        match self {
            StorePort::Transfers => "transfer_store",
            StorePort::Wallets => "wallet_store",
            StorePort::Ledger => "ledger_store",
        }
    }
}

/// How an armed store unit fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreFault {
    /// Nothing is applied; `StoreError::Unavailable`.
    Unavailable,
    /// The unit commits, then `StoreError::Unavailable`.
    AckLost,
    /// Nothing is applied; `StoreError::Integrity`.
    Integrity,
}

/// A store fault armed for the `skip`-th next write call (claims and
/// acknowledgements of its outbox included) of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StoreArm {
    pub port: StorePort,
    pub skip: u32,
    pub fault: StoreFault,
}

/// How the wallet gateway's release call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReleaseFault {
    /// It times out before the wallet service sees it.
    TimeoutBefore,
    /// The wallet service is unavailable: nothing is released.
    Unavailable,
    /// The release commits, then the call times out.
    AnswerLost,
}

/// How an armed publish fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PublishFault {
    /// Part of the batch (maybe nothing) goes out, then an error.
    Partial,
    /// All of it goes out, then an error.
    AckLost,
}

/// A fault armed for the next call of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubscriptionFault {
    /// The next poll's batch is returned again by the poll after it.
    Redeliver,
    /// The next poll's batch carries each message twice.
    Doubled,
    /// The next commit fails before storing.
    CommitFails,
    /// The next commit stores, then fails.
    CommitLost,
    /// The next rewind fails without moving back.
    RewindFails,
    /// The next poll fails.
    PollFails,
}

/// How the ledger's view of a posting request is skewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skew {
    /// Another currency than the wallets': refused `currency_mismatch`.
    Currency,
    /// The sender as the receiver: refused `same_wallet`.
    SameWallet,
    /// An amount with more decimals than the currency has: refused
    /// `invalid_amount`.
    Amount,
}

/// Where an armed crash strikes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CrashArm {
    /// At the n-th await point of the step (1 is the first).
    Count(u32),
    /// At the first await point with this name (`after wallet_store.finalize`).
    Named(&'static str),
}

/// What `TransferStore::begin` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BeginSeen {
    /// A new key: the transfer was stored.
    Created,
    /// A known key.
    Existing {
        /// Its first response was recorded.
        answered: bool,
        /// How long ago the key was first stored.
        age: chrono::Duration,
    },
}

/// What the port wrappers saw during a step, for the coverage counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// Posting requests handed to the ledger store and not decided by it
    /// (already in its inbox, or already decided).
    pub ledger_skipped: u64,
    /// What `TransferStore::begin` answered.
    pub begin: Option<BeginSeen>,
    /// Posting requests the ledger store said it decided.
    pub ledger_decided: u64,
    /// Write calls made to the stores (claims that took nothing aside):
    /// when none was made, the stores are as the last check saw them.
    pub writes: u64,
}

/// The fault state shared by the simulator and its wrappers: rates of the
/// faults rolled per call, faults armed for the next call, and the counts.
pub(crate) struct Faults {
    rng: Rng,
    reserve_rate: f64,
    lookup_rate: f64,
    release_rate: f64,
    /// Faults injected so far, by kind.
    pub counts: BTreeMap<FaultKind, u64>,
    /// Notes of the faults fired during the current step, for its trace line.
    notes: Vec<String>,
    /// Kinds fired during the current step.
    struck: BTreeSet<FaultKind>,
    /// A store fault for a coming write call.
    pub store: Option<StoreArm>,
    /// A fault for the next publish.
    pub publish: Option<PublishFault>,
    /// A fault for the next subscription call it concerns.
    pub subscription: Option<SubscriptionFault>,
    /// A crash for the current step.
    pub crash: Option<CrashArm>,
    /// Where the current step died, once it did.
    pub crashed: Option<String>,
    /// A delay for the next reserve call.
    pub slow: Option<(SlowPoint, Gate)>,
    /// A fault for the next release call.
    pub release: Option<ReleaseFault>,
    /// The most messages the next poll returns (the broker's batching).
    pub poll_limit: Option<usize>,
    /// Posting requests the ledger will see skewed, by transfer; kept until
    /// they reach the ledger, drain included.
    pub skews: BTreeMap<TransferId, Skew>,
    /// Skews that reached the ledger, with the reason it must refuse for.
    pub skewed: BTreeMap<TransferId, FailureReason>,
    /// What the wrappers saw during the current step.
    pub observed: Observed,
    /// The leases the stores' claims gave, as their answers showed them.
    leases: Leases,
    /// Broken promises of a port seen by its wrapper (a claim that gave
    /// away a held record, or kept back a free one).
    pub broken_ports: Vec<String>,
}

/// The leases the claims of the stores gave, as seen at their ports: each
/// claim is checked against the promises of `Outbox::claim` and
/// `TransferStore::claim_initiated`.
#[derive(Debug, Default)]
struct Leases {
    /// Outbox records claimed and not acknowledged: their transfer, holder
    /// and the end of the lease.
    records: BTreeMap<(StorePort, u64), (TransferId, WorkerId, Timestamp)>,
    /// INITIATED transfers claimed by a retrier: holder and lease end.
    transfers: BTreeMap<TransferId, (WorkerId, Timestamp)>,
}

pub(crate) type SharedFaults = Arc<Mutex<Faults>>;

/// Locks the simulator's own state. After a panic (reported as a violation)
/// the state is still read for the report, so poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Faults {
    /// Per-call faults drawn from `rng`: a reserve call times out with
    /// probability `fault_rate / 2`, a lookup with `fault_rate / 5`.
    pub fn new(rng: Rng, fault_rate: f64) -> Faults {
        Faults {
            rng,
            reserve_rate: fault_rate / 2.0,
            lookup_rate: fault_rate / 5.0,
            release_rate: fault_rate / 4.0,
            counts: BTreeMap::new(),
            notes: Vec::new(),
            struck: BTreeSet::new(),
            store: None,
            publish: None,
            subscription: None,
            crash: None,
            crashed: None,
            slow: None,
            release: None,
            poll_limit: None,
            skews: BTreeMap::new(),
            skewed: BTreeMap::new(),
            observed: Observed::default(),
            leases: Leases::default(),
            broken_ports: Vec::new(),
        }
    }

    /// Checks an outbox claim against what earlier claims gave: no record
    /// another worker holds is given, nor one behind an older record of
    /// its transfer that another worker holds; and a claim that took fewer
    /// than `limit` took every known record that is free for it.
    pub fn outbox_claimed(
        &mut self,
        port: StorePort,
        claim: &Claim,
        limit: usize,
        records: &[OutboxRecord],
    ) {
        let known: Vec<(u64, TransferId, WorkerId, Timestamp)> = self
            .leases
            .records
            .range((port, 0)..=(port, u64::MAX))
            .map(|((_, seq), (t, w, until))| (*seq, *t, *w, *until))
            .collect();
        let held = |w: WorkerId, until: Timestamp| w != claim.worker && until > claim.now;
        let blocked = |seq: u64, transfer: TransferId| {
            known
                .iter()
                .any(|(s, t, w, until)| *s < seq && *t == transfer && held(*w, *until))
        };
        let name = port.name();
        for r in records {
            let transfer = r.item.transfer_id();
            if let Some((_, _, w, until)) = known.iter().find(|k| k.0 == r.seq)
                && held(*w, *until)
            {
                self.broken_ports.push(format!(
                    "{name}: record {} claimed while another worker holds it until {until}",
                    r.seq
                ));
            }
            if blocked(r.seq, transfer) {
                self.broken_ports.push(format!(
                    "{name}: record {} claimed before an older held record of its transfer",
                    r.seq
                ));
            }
        }
        if records.len() < limit {
            for (seq, transfer, w, until) in &known {
                let free = !held(*w, *until) && !blocked(*seq, *transfer);
                if free && !records.iter().any(|r| r.seq == *seq) {
                    self.broken_ports.push(format!(
                        "{name}: free record {seq} not claimed (its lease ended at {until})"
                    ));
                }
            }
        }
        for r in records {
            let lease = (r.item.transfer_id(), claim.worker, claim.until);
            self.leases.records.insert((port, r.seq), lease);
        }
    }

    /// When the leases known to be held end.
    pub fn lease_ends(&self) -> Vec<Timestamp> {
        let records = self.leases.records.values().map(|(_, _, until)| *until);
        let transfers = self.leases.transfers.values().map(|(_, until)| *until);
        records.chain(transfers).collect()
    }

    /// Forgets acknowledged records (also when the acknowledgement failed:
    /// the leases are then only unknown, never wrongly assumed).
    pub fn outbox_acknowledged(&mut self, port: StorePort, seqs: &[u64]) {
        for seq in seqs {
            self.leases.records.remove(&(port, *seq));
        }
    }

    /// Checks a retrier's claim: only INITIATED transfers created before
    /// `created_before`, and none another worker holds.
    pub fn initiated_claimed(
        &mut self,
        claim: &Claim,
        created_before: Timestamp,
        transfers: &[Transfer],
    ) {
        for t in transfers {
            if t.status != TransferStatus::Initiated || t.created_at >= created_before {
                self.broken_ports.push(format!(
                    "transfer_store: claim_initiated before {created_before} gave transfer {} ({:?}, created {})",
                    t.id, t.status, t.created_at
                ));
            }
            if let Some((w, until)) = self.leases.transfers.get(&t.id)
                && *w != claim.worker
                && *until > claim.now
            {
                self.broken_ports.push(format!(
                    "transfer_store: transfer {} claimed while another retrier holds it until {until}",
                    t.id
                ));
            }
            self.leases
                .transfers
                .insert(t.id, (claim.worker, claim.until));
        }
    }

    /// No more faults: the run is draining. Skews already armed stay: they
    /// are the ledger's view of transfers on their way.
    pub fn stop(&mut self) {
        self.reserve_rate = 0.0;
        self.lookup_rate = 0.0;
        self.release_rate = 0.0;
        self.disarm();
    }

    /// Forgets the faults armed for a step that did not fire.
    pub fn disarm(&mut self) {
        self.store = None;
        self.publish = None;
        self.subscription = None;
        self.crash = None;
        self.crashed = None;
        self.slow = None;
        self.release = None;
        self.poll_limit = None;
    }

    /// Counts a fault and notes it for the current step's trace line.
    pub fn record(&mut self, kind: FaultKind) {
        self.record_with(kind, String::new());
    }

    /// Counts a fault and notes it with a detail.
    pub fn record_with(&mut self, kind: FaultKind, detail: String) {
        *self.counts.entry(kind).or_default() += 1;
        self.struck.insert(kind);
        if detail.is_empty() {
            self.notes.push(kind.name().to_owned());
        } else {
            self.notes.push(format!("{} {detail}", kind.name()));
        }
    }

    /// The notes of the faults fired since the last call; the step is over.
    pub fn take_notes(&mut self) -> Vec<String> {
        self.struck.clear();
        std::mem::take(&mut self.notes)
    }

    /// True when `kind` struck the current step.
    pub fn has(&self, kind: FaultKind) -> bool {
        self.struck.contains(&kind)
    }

    /// Which faults struck the current step so far.
    pub fn struck(&self) -> Struck {
        let has = |kind: FaultKind| self.has(kind);
        Struck {
            lookup: has(FaultKind::LookupTimeout),
            reserve: has(FaultKind::ReserveTimeoutBefore) || has(FaultKind::ReserveTimeoutAfter),
            crash: self.crashed.is_some(),
            store: has(FaultKind::StoreUnavailable)
                || has(FaultKind::StoreAckLost)
                || has(FaultKind::StoreIntegrity),
            integrity: has(FaultKind::StoreIntegrity),
            bus: has(FaultKind::PublishFailure)
                || has(FaultKind::PublishAckLost)
                || has(FaultKind::CommitFailure)
                || has(FaultKind::CommitLost)
                || has(FaultKind::PollFailure),
            slow: has(FaultKind::SlowReserve),
            reset: has(FaultKind::ConnectionReset),
            refused: None,
        }
    }

    /// An await point named `when` `what`: true when the armed crash strikes
    /// here (the caller then yields, and the step's driver drops it).
    pub fn point(&mut self, when: &str, what: &str) -> bool {
        let strikes = match &mut self.crash {
            None => false,
            Some(CrashArm::Count(n)) => {
                *n -= 1;
                *n == 0
            }
            Some(CrashArm::Named(name)) => {
                name.strip_prefix(when)
                    .and_then(|rest| rest.strip_prefix(' '))
                    == Some(what)
            }
        };
        if strikes {
            self.crash = None;
            self.crashed = Some(format!("{when} {what}"));
        }
        strikes
    }

    /// The fault of the coming write call of `port`, if it is armed for it.
    pub fn store_fault(&mut self, port: StorePort) -> Option<StoreFault> {
        let arm = self.store.filter(|a| a.port == port)?;
        if arm.skip > 0 {
            self.store = Some(StoreArm {
                skip: arm.skip - 1,
                ..arm
            });
            return None;
        }
        self.store = None;
        Some(arm.fault)
    }

    /// The fault of a publish of `len` messages: `Some(n)` publishes the
    /// first `n` and fails.
    pub fn publish_fault(&mut self, len: usize) -> Option<usize> {
        let fault = self.publish.take()?;
        Some(match fault {
            PublishFault::Partial => {
                let n = self.rng.below(len as u64) as usize;
                self.record_with(
                    FaultKind::PublishFailure,
                    format!("after {n} of {len} messages"),
                );
                n
            }
            PublishFault::AckLost => {
                self.record(FaultKind::PublishAckLost);
                len
            }
        })
    }

    /// The subscription fault armed for a poll, if any.
    pub fn poll_fault(&mut self) -> Option<SubscriptionFault> {
        match self.subscription {
            Some(
                f @ (SubscriptionFault::Redeliver
                | SubscriptionFault::Doubled
                | SubscriptionFault::PollFails),
            ) => {
                self.subscription = None;
                Some(f)
            }
            _ => None,
        }
    }

    /// The subscription fault armed for a commit, if any.
    pub fn commit_fault(&mut self) -> Option<SubscriptionFault> {
        match self.subscription {
            Some(f @ (SubscriptionFault::CommitFails | SubscriptionFault::CommitLost)) => {
                self.subscription = None;
                Some(f)
            }
            _ => None,
        }
    }

    /// True when a failure of the next rewind is armed (it is then used).
    pub fn rewind_fails(&mut self) -> bool {
        let armed = self.subscription == Some(SubscriptionFault::RewindFails);
        if armed {
            self.subscription = None;
        }
        armed
    }

    fn reserve_plan(&mut self) -> ReservePlan {
        if let Some((point, gate)) = self.slow.take() {
            self.record(FaultKind::SlowReserve);
            return ReservePlan::Slow(point, gate);
        }
        if !self.rng.chance(self.reserve_rate) {
            return ReservePlan::Normal;
        }
        if self.rng.chance(0.5) {
            self.record(FaultKind::ReserveTimeoutBefore);
            ReservePlan::TimeoutBefore
        } else {
            self.record(FaultKind::ReserveTimeoutAfter);
            ReservePlan::TimeoutAfter
        }
    }

    /// The fault of a release call: the armed one, or one rolled with
    /// probability `fault_rate / 4`.
    fn release_fault(&mut self) -> Option<ReleaseFault> {
        let fault = match self.release.take() {
            Some(fault) => fault,
            None if self.rng.chance(self.release_rate) => *self.rng.pick(&[
                ReleaseFault::TimeoutBefore,
                ReleaseFault::Unavailable,
                ReleaseFault::AnswerLost,
            ]),
            None => return None,
        };
        self.record(match fault {
            ReleaseFault::TimeoutBefore => FaultKind::ReleaseTimeoutBefore,
            ReleaseFault::Unavailable => FaultKind::ReleaseUnavailable,
            ReleaseFault::AnswerLost => FaultKind::ReleaseAnswerLost,
        });
        Some(fault)
    }

    fn lookup_fails(&mut self) -> bool {
        let fails = self.rng.chance(self.lookup_rate);
        if fails {
            self.record(FaultKind::LookupTimeout);
        }
        fails
    }
}

/// Where a slow reserve call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlowPoint {
    /// Before the wallet service sees the call.
    BeforeReserve,
    /// After the reservation committed.
    AfterReserve,
}

enum ReservePlan {
    Normal,
    TimeoutBefore,
    TimeoutAfter,
    Slow(SlowPoint, Gate),
}

/// Holds a slow call until the simulator opens it. Polled with a no-op
/// waker, so it needs no wake-up: the simulator polls the call again.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gate(Arc<AtomicBool>);

impl Gate {
    /// Lets the call go on.
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    async fn wait(&self) {
        std::future::poll_fn(|_| {
            if self.0.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// The wallet service instance now running, and how many times it was
/// restarted; a restart swaps it.
pub(crate) struct WalletSlot<W>(Arc<Mutex<(u64, Arc<WalletService<W>>)>>);

impl<W> Clone for WalletSlot<W> {
    fn clone(&self) -> Self {
        WalletSlot(self.0.clone())
    }
}

impl<W: WalletStore + WalletReads> WalletSlot<W> {
    pub fn new(service: Arc<WalletService<W>>) -> WalletSlot<W> {
        WalletSlot(Arc::new(Mutex::new((0, service))))
    }

    /// The running instance and its generation.
    fn current(&self) -> (u64, Arc<WalletService<W>>) {
        let slot = lock(&self.0);
        (slot.0, slot.1.clone())
    }

    /// Puts a restarted instance in place.
    pub fn replace(&self, service: Arc<WalletService<W>>) {
        let mut slot = lock(&self.0);
        *slot = (slot.0 + 1, service);
    }
}

/// The transaction service's line to the wallet service, in process, with
/// the network's failures: timeouts before or after the call took effect,
/// and slow calls answering late (or cut by a restart of the wallet
/// service). A crash of the caller is injected at the wallet store's await
/// points, like every other crash.
pub(crate) struct SimGateway<W> {
    pub wallets: WalletSlot<W>,
    pub faults: SharedFaults,
    /// Planted bug: report a timeout as a definite refusal.
    pub timeout_is_refusal: bool,
    /// Planted bug: answer every expiry as done without asking the wallet
    /// service.
    pub expire_without_wallet: bool,
}

impl<W> SimGateway<W> {
    /// What the caller sees of an ambiguous failure of a call of `n`
    /// reserves.
    fn ambiguous(
        &self,
        n: usize,
        error: GatewayError,
    ) -> Result<Vec<ReserveOutcome>, GatewayError> {
        if self.timeout_is_refusal {
            // The seed design's bug: an ambiguous answer taken as a "no".
            let no = ReserveOutcome::Rejected(FailureReason::InsufficientFunds);
            return Ok(vec![no; n]);
        }
        Err(error)
    }
}

#[async_trait]
impl<W: WalletStore + WalletReads> WalletGateway for SimGateway<W> {
    async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, GatewayError> {
        let n = requests.len();
        let plan = lock(&self.faults).reserve_plan();
        match &plan {
            ReservePlan::TimeoutBefore => return self.ambiguous(n, GatewayError::Timeout),
            ReservePlan::Slow(SlowPoint::BeforeReserve, gate) => gate.wait().await,
            _ => {}
        }
        // Taken after a slow start: the call reaches whichever instance runs.
        let (generation, wallets) = self.wallets.current();
        let outcomes = match wallets.reserve_batch(requests).await {
            Ok(outcomes) => outcomes,
            Err(e) => return self.ambiguous(n, GatewayError::Unavailable(e.to_string())),
        };
        match plan {
            ReservePlan::TimeoutAfter => self.ambiguous(n, GatewayError::Timeout),
            ReservePlan::Slow(SlowPoint::AfterReserve, gate) => {
                gate.wait().await;
                if self.wallets.current().0 != generation {
                    lock(&self.faults).record(FaultKind::ConnectionReset);
                    let reset = GatewayError::Unavailable("connection reset".into());
                    return self.ambiguous(n, reset);
                }
                Ok(outcomes)
            }
            _ => Ok(outcomes),
        }
    }

    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, GatewayError> {
        if lock(&self.faults).lookup_fails() {
            return Err(GatewayError::Timeout);
        }
        let (_, wallets) = self.wallets.current();
        wallets
            .wallet(id)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))
    }

    async fn release_holds(
        &self,
        requests: &[(TransferId, HoldRelease)],
    ) -> Result<Vec<Option<HoldState>>, GatewayError> {
        if self.expire_without_wallet && requests.iter().all(|(_, r)| *r == HoldRelease::Expire) {
            let expired = Some(HoldState::Ended(HoldEnd::Expired));
            return Ok(vec![expired; requests.len()]);
        }
        let fault = lock(&self.faults).release_fault();
        match fault {
            Some(ReleaseFault::TimeoutBefore) => return Err(GatewayError::Timeout),
            Some(ReleaseFault::Unavailable) => {
                return Err(GatewayError::Unavailable(
                    "injected: wallet service down".into(),
                ));
            }
            _ => {}
        }
        let (_, wallets) = self.wallets.current();
        let answers = wallets
            .release_holds(requests)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        if fault == Some(ReleaseFault::AnswerLost) {
            return Err(GatewayError::Timeout);
        }
        Ok(answers)
    }
}
