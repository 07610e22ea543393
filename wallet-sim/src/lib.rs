//! Deterministic simulation of the wallet saga under injected faults.
//!
//! [`run`] drives the real runtime of `wallet-core` (the
//! `TransactionService`, `WalletService` and `LedgerService`, the outbox
//! `Relay`s and the `ConsumerRunner`s, each step their own `run_once`) over
//! the in-memory stores and bus, on one thread, in an order chosen by a
//! seeded PRNG, with a virtual clock and counter-made ids. Faults are
//! injected at the ports the runtime calls: stores whose units fail or lose
//! their answer, publishes that fail part-way, offset commits that fail,
//! polls that deliver a batch twice, steps that die at an await point
//! (after a publish, after a unit committed, ...), reserve calls that time
//! out, restarts, poison and forged events. It checks the invariants that
//! hold at every moment after every step, counts the state machines'
//! transitions it reached, then drains without faults and checks those of a
//! quiet system. [`run_on`] runs the same on other adapters of the ports.
//!
//! Same seed, same configuration, same build: the same run, step for step.
//! A failure names its seed and step, so it can be replayed.
//!
//! ```
//! let report = wallet_sim::run(&wallet_sim::SimConfig {
//!     transfers: 50,
//!     ..wallet_sim::SimConfig::new(7)
//! });
//! assert!(report.result().is_ok(), "{:?}", report.failure);
//! assert_eq!(report, wallet_sim::run(&wallet_sim::SimConfig { transfers: 50, ..wallet_sim::SimConfig::new(7) }));
//! ```

mod adapters;
mod client;
mod clock;
mod coverage;
mod exec;
mod faults;
mod planted;
mod ports;
mod reads;
mod report;
mod rng;
mod sim;
mod world;

pub use adapters::{Adapters, MemoryAdapters};
pub use client::RequestKind;
pub use clock::{SimClock, SimIds};
pub use coverage::{Coverage, Transition};
pub use faults::FaultKind;
pub use planted::PlantedBug;
pub use report::{Failure, SimReport, Summary, write_coverage};

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Chooses everything: the same seed replays the same run.
    pub seed: u64,
    /// Client requests to issue (opening wallets, deposits, withdrawals and
    /// transfers, valid or not, and repeats). Default 200.
    pub transfers: usize,
    /// User wallets opened before the first request, spread over USD, EUR,
    /// JPY and KWD. Default 8.
    pub wallets: usize,
    /// The share of steps that inject a fault, 0.0 to 1.0; also scales the
    /// reserve and lookup timeouts rolled on each call. 0 runs without
    /// faults. Default 0.1.
    pub fault_rate: f64,
    /// Partitions per topic. Default 4.
    pub partitions: u32,
    /// Largest batch a consumer step or a relay pass takes. Default 8.
    pub max_batch: usize,
    /// Steps kept in the report's trace. Default 64.
    pub trace_len: usize,
    /// A deliberately broken component, to test the simulator itself.
    pub planted_bug: Option<PlantedBug>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            transfers: 200,
            wallets: 8,
            fault_rate: 0.1,
            partitions: 4,
            max_batch: 8,
            trace_len: 64,
            planted_bug: None,
        }
    }
}

impl SimConfig {
    /// The defaults with `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }

    /// The same configuration with out-of-range values brought into range.
    fn normalized(&self) -> SimConfig {
        let fault_rate = if self.fault_rate.is_nan() {
            0.0
        } else {
            self.fault_rate.clamp(0.0, 1.0)
        };
        SimConfig {
            fault_rate,
            partitions: self.partitions.max(1),
            max_batch: self.max_batch.max(1),
            ..self.clone()
        }
    }
}

/// Runs one simulation on the in-memory adapters. Never panics on a broken
/// invariant: violations, including panics of the core's own assertions,
/// come back in [`SimReport::failure`].
pub fn run(config: &SimConfig) -> SimReport {
    match config.planted_bug {
        Some(PlantedBug::DoublePosting) => run_on(planted::DoublePostingAdapters, config),
        _ => run_on(MemoryAdapters, config),
    }
}

/// Runs one simulation on the stores and bus `adapters` makes.
pub fn run_on<A: Adapters>(adapters: A, config: &SimConfig) -> SimReport {
    sim::Sim::new(adapters, &config.normalized()).run()
}
