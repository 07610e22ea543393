//! One supervisor for every background loop of a process (relays,
//! consumers, the retrier, sweepers): it starts each loop, restarts it with
//! backoff after an error or a panic, and keeps each loop's state where
//! readiness checks and gauges read it.
//!
//! A loop reports through its [`LoopHandle`]: [`LoopHandle::ok`] after a
//! pass that made progress or found nothing to do, [`LoopHandle::failed`]
//! after a pass that failed (the loop counts as stalled once it has failed
//! for [`SupervisorConfig::stall_after`] without a good pass in between),
//! and [`LoopHandle::stalled`] when it cannot go on by itself (an integrity
//! stop, a consumer that gets nothing from its group).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ids::{EventId, TransferId};

/// Limits of the supervisor.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Wait before the first restart of a loop that ended; doubled at each
    /// restart that follows without a good pass in between. Default 100 ms.
    pub backoff_initial: Duration,
    /// Longest wait between restarts. Default 30 s.
    pub backoff_max: Duration,
    /// How long a loop may keep failing before it counts as stalled.
    /// Default 30 s.
    pub stall_after: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            stall_after: Duration::from_secs(30),
        }
    }
}

/// Where a loop was when it failed: what an operator looks at first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Place {
    /// The topic and partition (`ledger.events[3]@120`), or the outbox.
    pub source: String,
    /// The event it was handling, if it was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    /// Its transfer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<TransferId>,
}

/// What a loop's failure was, where, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The last error.
    pub error: String,
    /// Where.
    #[serde(flatten)]
    pub place: Place,
    /// Seconds since the loop last did a good pass.
    pub failing_for_s: u64,
}

/// One loop's state, as readiness shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoopState {
    /// Its name (`consumer wallet-service`, `relay ledger-service`).
    pub name: String,
    /// Running (false between an end and its restart).
    pub up: bool,
    /// Stalled: failing past the limit, or stopped until an operator acts.
    pub stalled: bool,
    /// Restarts since the process started.
    pub restarts: u64,
    /// The failure since the last good pass, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

#[derive(Debug)]
struct Entry {
    up: bool,
    restarts: u64,
    /// Stalled without waiting for `stall_after`.
    stopped: bool,
    failing: Option<(Instant, String, Place)>,
}

/// The states of a process's loops. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct Loops {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    config: Arc<SupervisorConfig>,
}

impl Loops {
    /// No loops yet.
    pub fn new(config: SupervisorConfig) -> Loops {
        Loops {
            entries: Arc::default(),
            config: Arc::new(config),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every loop's state, by name.
    pub fn states(&self) -> Vec<LoopState> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|(name, e)| {
                let failure = e.failing.as_ref().map(|(since, error, place)| Failure {
                    error: error.clone(),
                    place: place.clone(),
                    failing_for_s: now.duration_since(*since).as_secs(),
                });
                let stalled = e.stopped
                    || e.failing.as_ref().is_some_and(|(since, ..)| {
                        now.duration_since(*since) >= self.config.stall_after
                    });
                LoopState {
                    name: name.clone(),
                    up: e.up,
                    stalled,
                    restarts: e.restarts,
                    failure,
                }
            })
            .collect()
    }

    /// The loops that are stalled or down: what makes a process not ready.
    pub fn unwell(&self) -> Vec<LoopState> {
        self.states()
            .into_iter()
            .filter(|s| s.stalled || !s.up)
            .collect()
    }

    /// A handle for loop `name`, registered as up.
    pub fn handle(&self, name: &str) -> LoopHandle {
        self.lock().insert(
            name.to_owned(),
            Entry {
                up: true,
                restarts: 0,
                stopped: false,
                failing: None,
            },
        );
        LoopHandle {
            loops: self.clone(),
            name: name.to_owned(),
        }
    }

    /// Runs `start`'s loop as `name` until `stop` resolves: a loop that
    /// returns an error or panics is logged, counted and started again
    /// (with the backoff of [`SupervisorConfig`]); one that returns `Ok`
    /// has stopped for good. `start` makes a fresh loop each time.
    pub fn supervise<F, Fut, S>(&self, name: &str, mut start: F, stop: S) -> JoinHandle<()>
    where
        F: FnMut(LoopHandle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
        S: Future<Output = ()> + Send + 'static,
    {
        let handle = self.handle(name);
        let config = self.config.clone();
        tokio::spawn(async move {
            tokio::pin!(stop);
            let mut backoff = config.backoff_initial;
            loop {
                let started = Instant::now();
                let mut run = tokio::spawn(start(handle.clone()));
                let ended = tokio::select! {
                    ended = &mut run => ended,
                    () = &mut stop => {
                        // The loop heeds the same stop between its steps:
                        // let it finish the step in hand.
                        let _ = run.await;
                        return;
                    }
                };
                let error = match ended {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) => error,
                    Err(join) => match join.try_into_panic() {
                        Ok(panic) => format!("panicked: {}", panic_message(&*panic)),
                        Err(join) => format!("cancelled: {join}"),
                    },
                };
                handle.ended(&error);
                if started.elapsed() > config.backoff_max {
                    backoff = config.backoff_initial;
                }
                tracing::error!(loop_name = %handle.name, %error, ?backoff,
                    "background loop ended; restarting it");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.backoff_max);
                handle.restarted();
            }
        })
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// What one loop reports its state through. Clones report for the same
/// loop.
#[derive(Debug, Clone)]
pub struct LoopHandle {
    loops: Loops,
    name: String,
}

impl LoopHandle {
    /// A handle that reports to a registry of its own: for a loop run
    /// without a supervisor (tests, the simulator).
    pub fn detached(name: &str) -> LoopHandle {
        Loops::default().handle(name)
    }

    /// The loop's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True while the loop is stopped until a good pass
    /// ([`LoopHandle::stalled`]).
    pub fn is_stalled(&self) -> bool {
        self.loops.lock().get(&self.name).is_some_and(|e| e.stopped)
    }

    fn update(&self, change: impl FnOnce(&mut Entry)) {
        if let Some(entry) = self.loops.lock().get_mut(&self.name) {
            change(entry);
        }
    }

    /// A good pass: whatever failed before is over.
    pub fn ok(&self) {
        self.update(|e| {
            e.stopped = false;
            e.failing = None;
        });
    }

    /// A failed pass; the loop goes on. Stalled once it has failed for
    /// `stall_after` without a good pass.
    pub fn failed(&self, error: &str, place: Place) {
        self.update(|e| {
            let since = e.failing.as_ref().map_or_else(Instant::now, |f| f.0);
            e.failing = Some((since, error.to_owned(), place));
        });
    }

    /// The loop cannot go on by itself: stalled at once, until a good pass.
    pub fn stalled(&self, error: &str, place: Place) {
        self.failed(error, place);
        self.update(|e| e.stopped = true);
    }

    fn ended(&self, error: &str) {
        self.update(|e| {
            e.up = false;
            let since = e.failing.as_ref().map_or_else(Instant::now, |f| f.0);
            let place = e.failing.take().map(|f| f.2).unwrap_or_default();
            e.failing = Some((since, error.to_owned(), place));
        });
        crate::metrics::loop_restart(&self.name);
    }

    fn restarted(&self) {
        self.update(|e| {
            e.up = true;
            e.restarts += 1;
        });
    }
}
