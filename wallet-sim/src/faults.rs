//! The faults the simulator injects, and the wrappers that inject the ones
//! that happen inside the services' calls (the reserve call, a handler's
//! store).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use async_trait::async_trait;
use wallet_core::Currency;
use wallet_core::event::Envelope;
use wallet_core::ids::WalletId;
use wallet_core::outcome::{FailureReason, ReserveOutcome};
use wallet_core::ports::{GatewayError, WalletGateway};
use wallet_core::runtime::{EventHandler, HandleError, Handled};
use wallet_core::wallet::ReserveRequest;

use crate::client::Struck;
use crate::rng::Rng;
use crate::world::WalletSvc;

/// A kind of fault, as counted in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// A consumer handled a batch twice before committing it.
    DuplicateDelivery,
    /// A consumer crashed after handling a batch and before storing its
    /// offsets: the batch is delivered again.
    ConsumerCrash,
    /// A handler's store failed transiently, before or after its commit; the
    /// runner rewound the batch.
    HandlerFailure,
    /// A relay crashed after publishing and before marking the rows sent:
    /// the events go out again.
    RelayCrash,
    /// The reserve call timed out before the wallet service saw it.
    ReserveTimeoutBefore,
    /// The reserve call timed out after the reservation committed.
    ReserveTimeoutAfter,
    /// A wallet-currency lookup timed out (the request got a 503).
    LookupTimeout,
    /// The transaction service died during a reserve call (before or after
    /// the reservation committed) and restarted.
    CrashInRequest,
    /// A reserve call was slow (before or after the reservation committed):
    /// the request stayed in flight while other steps ran, and answered late.
    SlowReserve,
    /// A slow reserve call was cut by a wallet service restart after the
    /// reservation committed: the caller saw the connection reset.
    ConnectionReset,
    /// The transaction service restarted: caches and consumer positions lost.
    RestartTransaction,
    /// The wallet service restarted.
    RestartWallet,
    /// The ledger service restarted.
    RestartLedger,
    /// A poison message was published (undecodable bytes, unknown event
    /// type, newer schema version, or an event on the wrong topic).
    Poison,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 14] = [
        FaultKind::DuplicateDelivery,
        FaultKind::ConsumerCrash,
        FaultKind::HandlerFailure,
        FaultKind::RelayCrash,
        FaultKind::ReserveTimeoutBefore,
        FaultKind::ReserveTimeoutAfter,
        FaultKind::LookupTimeout,
        FaultKind::CrashInRequest,
        FaultKind::SlowReserve,
        FaultKind::ConnectionReset,
        FaultKind::RestartTransaction,
        FaultKind::RestartWallet,
        FaultKind::RestartLedger,
        FaultKind::Poison,
    ];

    /// The snake_case name used in traces and tables.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::DuplicateDelivery => "duplicate_delivery",
            FaultKind::ConsumerCrash => "consumer_crash",
            FaultKind::HandlerFailure => "handler_failure",
            FaultKind::RelayCrash => "relay_crash",
            FaultKind::ReserveTimeoutBefore => "reserve_timeout_before",
            FaultKind::ReserveTimeoutAfter => "reserve_timeout_after",
            FaultKind::LookupTimeout => "lookup_timeout",
            FaultKind::CrashInRequest => "crash_in_request",
            FaultKind::SlowReserve => "slow_reserve",
            FaultKind::ConnectionReset => "connection_reset",
            FaultKind::RestartTransaction => "restart_transaction",
            FaultKind::RestartWallet => "restart_wallet",
            FaultKind::RestartLedger => "restart_ledger",
            FaultKind::Poison => "poison",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When an armed handler failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandlerFailure {
    /// The store is down: nothing is written.
    BeforeCommit,
    /// The unit commits, then the connection drops before the answer.
    AfterCommit,
}

/// Where an armed crash or delay strikes in a reserve call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashPoint {
    /// Before the wallet service sees the call.
    BeforeReserve,
    /// After the reservation committed.
    AfterReserve,
}

enum ReservePlan {
    Normal,
    TimeoutBefore,
    TimeoutAfter,
    Crash(CrashPoint),
    Slow(CrashPoint, Gate),
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

/// The fault state shared by the simulator and its wrappers: rates of the
/// faults rolled per call, faults armed for the next call, and the counts.
pub(crate) struct Faults {
    rng: Rng,
    reserve_rate: f64,
    lookup_rate: f64,
    /// Faults injected so far, by kind.
    pub counts: BTreeMap<FaultKind, u64>,
    /// Notes of the faults fired during the current step, for its trace line.
    notes: Vec<String>,
    /// A crash for the next reserve call.
    pub crash: Option<CrashPoint>,
    /// A failure for the next handler call.
    pub handler: Option<HandlerFailure>,
    /// A delay for the next reserve call.
    pub slow: Option<(CrashPoint, Gate)>,
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
            counts: BTreeMap::new(),
            notes: Vec::new(),
            crash: None,
            handler: None,
            slow: None,
        }
    }

    /// No more faults: the run is draining.
    pub fn stop(&mut self) {
        self.reserve_rate = 0.0;
        self.lookup_rate = 0.0;
        self.crash = None;
        self.handler = None;
        self.slow = None;
    }

    /// Counts a fault and notes it for the current step's trace line.
    pub fn record(&mut self, kind: FaultKind) {
        *self.counts.entry(kind).or_default() += 1;
        self.notes.push(kind.name().to_owned());
    }

    /// The notes of the faults fired since the last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    /// Which faults struck the current step so far.
    pub fn struck(&self) -> Struck {
        let has = |kind: FaultKind| self.notes.iter().any(|n| n == kind.name());
        Struck {
            lookup: has(FaultKind::LookupTimeout),
            reserve: has(FaultKind::ReserveTimeoutBefore) || has(FaultKind::ReserveTimeoutAfter),
            crash: has(FaultKind::CrashInRequest),
            handler: has(FaultKind::HandlerFailure),
            slow: has(FaultKind::SlowReserve),
            reset: has(FaultKind::ConnectionReset),
        }
    }

    fn reserve_plan(&mut self) -> ReservePlan {
        if let Some(point) = self.crash.take() {
            self.record(FaultKind::CrashInRequest);
            return ReservePlan::Crash(point);
        }
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

    fn lookup_fails(&mut self) -> bool {
        let fails = self.rng.chance(self.lookup_rate);
        if fails {
            self.record(FaultKind::LookupTimeout);
        }
        fails
    }
}

/// The wallet service instance now running, and how many times it was
/// restarted; a restart swaps it.
#[derive(Clone)]
pub(crate) struct WalletSlot(Arc<Mutex<(u64, Arc<WalletSvc>)>>);

impl WalletSlot {
    pub fn new(service: Arc<WalletSvc>) -> WalletSlot {
        WalletSlot(Arc::new(Mutex::new((0, service))))
    }

    /// The running instance and its generation.
    fn current(&self) -> (u64, Arc<WalletSvc>) {
        let slot = lock(&self.0);
        (slot.0, slot.1.clone())
    }

    /// Puts a restarted instance in place.
    pub fn replace(&self, service: Arc<WalletSvc>) {
        let mut slot = lock(&self.0);
        *slot = (slot.0 + 1, service);
    }
}

/// The transaction service's line to the wallet service, in process, with
/// the network's failures: timeouts before or after the call took effect,
/// and the caller dying mid-call (the future never finishes).
pub(crate) struct SimGateway {
    pub wallets: WalletSlot,
    pub faults: SharedFaults,
    /// Planted bug: report a timeout as a definite refusal.
    pub timeout_is_refusal: bool,
}

impl SimGateway {
    /// What the caller sees of an ambiguous failure.
    fn ambiguous(&self, error: GatewayError) -> Result<ReserveOutcome, GatewayError> {
        if self.timeout_is_refusal {
            // The seed design's bug: an ambiguous answer taken as a "no".
            return Ok(ReserveOutcome::Rejected(FailureReason::InsufficientFunds));
        }
        Err(error)
    }
}

#[async_trait]
impl WalletGateway for SimGateway {
    async fn reserve(&self, request: &ReserveRequest) -> Result<ReserveOutcome, GatewayError> {
        let plan = lock(&self.faults).reserve_plan();
        match &plan {
            ReservePlan::TimeoutBefore => return self.ambiguous(GatewayError::Timeout),
            ReservePlan::Crash(CrashPoint::BeforeReserve) => std::future::pending().await,
            ReservePlan::Slow(CrashPoint::BeforeReserve, gate) => gate.wait().await,
            _ => {}
        }
        // Taken after a slow start: the call reaches whichever instance runs.
        let (generation, wallets) = self.wallets.current();
        let outcome = wallets
            .reserve(request)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        match plan {
            ReservePlan::TimeoutAfter => self.ambiguous(GatewayError::Timeout),
            ReservePlan::Crash(_) => std::future::pending().await,
            ReservePlan::Slow(CrashPoint::AfterReserve, gate) => {
                gate.wait().await;
                if self.wallets.current().0 != generation {
                    lock(&self.faults).record(FaultKind::ConnectionReset);
                    let reset = GatewayError::Unavailable("connection reset".into());
                    return self.ambiguous(reset);
                }
                Ok(outcome)
            }
            _ => Ok(outcome),
        }
    }

    async fn wallet_currency(&self, id: WalletId) -> Result<Option<Currency>, GatewayError> {
        if lock(&self.faults).lookup_fails() {
            return Err(GatewayError::Timeout);
        }
        let (_, wallets) = self.wallets.current();
        let wallet = wallets
            .wallet(id)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        Ok(wallet.map(|w| w.currency))
    }
}

/// A consumer's handler whose store fails when the simulator arms it.
pub(crate) struct Flaky<H> {
    pub inner: H,
    pub faults: SharedFaults,
}

#[async_trait]
impl<H: EventHandler> EventHandler for Flaky<H> {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        let failure = lock(&self.faults).handler.take();
        let Some(failure) = failure else {
            return self.inner.handle(batch).await;
        };
        lock(&self.faults).record(FaultKind::HandlerFailure);
        match failure {
            HandlerFailure::BeforeCommit => {
                Err(HandleError::Transient("injected: store unavailable".into()))
            }
            HandlerFailure::AfterCommit => {
                self.inner.handle(batch).await?;
                Err(HandleError::Transient(
                    "injected: commit acknowledged too late".into(),
                ))
            }
        }
    }
}
