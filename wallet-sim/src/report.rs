//! What a run reports: counts, the trace and its hash, and the first
//! violation found.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use crate::client::RequestKind;
use crate::coverage::{Coverage, Transition};
use crate::faults::FaultKind;

/// The first broken invariant of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The run's seed: `walletctl sim --seed <seed>` with the same options
    /// replays it.
    pub seed: u64,
    /// The index of the step after which the invariant was found broken
    /// (0-based; the final checks count as one more step).
    pub step: u64,
    /// Which invariant. Of the audit: `conservation`, `snapshot`,
    /// `negative`, `double_posting`, `terminal`, `agreement`. Of the
    /// simulator: `terminal_moved`, `lost_transfer`, `ledger_moved` (a
    /// ledger outcome changed or vanished), `contract` (an API answer the
    /// request did not allow), `outcome` (a final status the request did
    /// not allow), `dead_letter` (a saga event dead-lettered, or a provoked
    /// refusal or a poison message missing from its dead-letter topic),
    /// `claim` (a store's claim gave away a record or transfer another
    /// worker held, or kept back a free one), `quiescence`, `stalled` (a
    /// call waited), `panic` (a core assertion), and `store_error`,
    /// `relay_error`, `consumer_error` (a step failed without an injected
    /// fault, or a consumer reported an integrity failure as transient or
    /// the reverse).
    pub invariant: String,
    /// What exactly was wrong.
    pub detail: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} step {}: {} violated: {}",
            self.seed, self.step, self.invariant, self.detail
        )
    }
}

/// A broken invariant found during a step, before the run's seed and step
/// are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broken {
    pub invariant: &'static str,
    pub detail: String,
}

impl Broken {
    pub fn new(invariant: &'static str, detail: impl Into<String>) -> Broken {
        Broken {
            invariant,
            detail: detail.into(),
        }
    }
}

/// Everything one run reports. Two runs of one seed and one configuration
/// on one build give equal reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Steps taken, drain included.
    pub steps: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Client requests by kind and by outcome label (`reserved`,
    /// `failed:insufficient_funds`, `replayed`, `key_reused`, ...).
    pub requests: BTreeMap<(RequestKind, String), u64>,
    /// Transfers the transaction service holds at the end.
    pub transfers: usize,
    /// Of those, how many SUCCEEDED.
    pub succeeded: usize,
    /// Messages in the dead-letter topics at the end.
    pub dead_letters: usize,
    /// How often each transition of the state machines was reached.
    pub coverage: Coverage,
    /// The last steps, oldest first, numbered.
    pub trace: Vec<String>,
    /// FNV-1a over every step's description: equal hashes, equal runs.
    pub trace_hash: u64,
    /// The first violation, if any; the run stops at it.
    pub failure: Option<Failure>,
}

impl SimReport {
    /// `Ok` when every invariant held.
    pub fn result(&self) -> Result<(), &Failure> {
        self.failure.as_ref().map_or(Ok(()), Err)
    }

    /// Faults injected, all kinds together.
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }
}

/// The trace: every step is hashed, the last few are kept.
#[derive(Debug)]
pub(crate) struct Trace {
    hash: u64,
    last: VecDeque<String>,
    keep: usize,
    steps: u64,
}

impl Trace {
    pub fn new(keep: usize) -> Trace {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            last: VecDeque::with_capacity(keep.min(1024)),
            keep,
            steps: 0,
        }
    }

    /// Records one step; returns its index.
    pub fn push(&mut self, description: String) -> u64 {
        let index = self.steps;
        self.steps += 1;
        for b in description.bytes().chain([b'\n']) {
            self.hash = (self.hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        if self.keep > 0 {
            if self.last.len() == self.keep {
                self.last.pop_front();
            }
            self.last.push_back(format!("{index:>6} {description}"));
        }
        index
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn last(&self) -> Vec<String> {
        self.last.iter().cloned().collect()
    }
}

/// Totals over many runs, printed as a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Runs.
    pub runs: u64,
    /// Steps of all runs.
    pub steps: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Requests by kind.
    pub requests: BTreeMap<RequestKind, u64>,
    /// Transfers created.
    pub transfers: u64,
    /// Of those, SUCCEEDED.
    pub succeeded: u64,
    /// Transitions reached, all runs together.
    pub coverage: Coverage,
    /// Violations by invariant.
    pub violations: BTreeMap<String, u64>,
    /// The failed runs, by seed.
    pub failures: Vec<Failure>,
}

impl Summary {
    /// Adds one run.
    pub fn add(&mut self, report: &SimReport) {
        self.runs += 1;
        self.steps += report.steps;
        for (kind, n) in &report.faults {
            *self.faults.entry(*kind).or_default() += n;
        }
        for ((kind, _), n) in &report.requests {
            *self.requests.entry(*kind).or_default() += n;
        }
        for (transition, n) in &report.coverage {
            *self.coverage.entry(*transition).or_default() += n;
        }
        self.transfers += report.transfers as u64;
        self.succeeded += report.succeeded as u64;
        if let Some(failure) = &report.failure {
            *self
                .violations
                .entry(failure.invariant.clone())
                .or_default() += 1;
            self.failures.push(failure.clone());
            self.failures.sort_by_key(|f| f.seed);
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row =
            |f: &mut fmt::Formatter<'_>, name: &str, n: u64| writeln!(f, "  {name:<56} {n:>10}");
        writeln!(f, "runs")?;
        row(f, "runs", self.runs)?;
        row(f, "passed", self.runs - self.failures.len() as u64)?;
        row(f, "failed", self.failures.len() as u64)?;
        row(f, "steps", self.steps)?;
        row(f, "requests", self.requests.values().sum())?;
        row(f, "transfers created", self.transfers)?;
        row(f, "transfers succeeded", self.succeeded)?;
        writeln!(f, "faults injected")?;
        for kind in FaultKind::ALL {
            row(f, kind.name(), self.faults.get(&kind).copied().unwrap_or(0))?;
        }
        row(f, "total", self.faults.values().sum())?;
        writeln!(f, "transitions reached")?;
        write_coverage(f, &self.coverage)?;
        writeln!(f, "violations")?;
        if self.violations.is_empty() {
            row(f, "none", 0)?;
        }
        for (invariant, n) in &self.violations {
            row(f, invariant, *n)?;
        }
        Ok(())
    }
}

/// The coverage table: every expected transition, with its count, then any
/// other reached.
pub fn write_coverage(f: &mut impl fmt::Write, coverage: &Coverage) -> fmt::Result {
    let row =
        |f: &mut dyn fmt::Write, t: Transition, n: u64| writeln!(f, "  {:<56} {n:>10}", t.name());
    for t in Transition::ALL {
        row(f, t, coverage.get(&t).copied().unwrap_or(0))?;
    }
    for (t, n) in coverage {
        if !Transition::ALL.contains(t) {
            row(f, *t, *n)?;
        }
    }
    Ok(())
}
