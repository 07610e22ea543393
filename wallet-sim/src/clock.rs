//! Virtual time and deterministic ids.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use uuid::Uuid;
use wallet_core::Timestamp;
use wallet_core::ports::{Clock, IdGenerator};

/// A clock that only moves when told to. Clones share the time.
#[derive(Debug, Clone)]
pub struct SimClock {
    micros: Arc<AtomicI64>,
}

impl SimClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> SimClock {
        SimClock {
            micros: Arc::new(AtomicI64::new(start.timestamp_micros())),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Default for SimClock {
    /// Stopped at 2026-01-01T00:00:00Z: a fixed start keeps traces equal
    /// across runs.
    fn default() -> Self {
        let start = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("valid start");
        SimClock::new(start)
    }
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        chrono::DateTime::from_timestamp_micros(self.micros.load(Ordering::SeqCst))
            .expect("simulated time stays in range")
    }
}

/// Ids from a counter: unique within a run, equal across runs of a seed.
///
/// The top byte is `0x51`, so no id can be mistaken for a currency's system
/// account (whose uuid is below 2^24).
#[derive(Debug, Default)]
pub struct SimIds {
    next: AtomicU64,
}

impl SimIds {
    /// Counting from 1.
    pub fn new() -> SimIds {
        SimIds::default()
    }

    /// The counter value inside an id made here, for short trace names.
    pub fn ordinal(id: Uuid) -> u64 {
        id.as_u128() as u64
    }
}

impl IdGenerator for SimIds {
    fn next_uuid(&self) -> Uuid {
        let n = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        Uuid::from_u128((0x51_u128 << 120) | u128::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_moves_only_when_advanced() {
        let clock = SimClock::default();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.clone().advance(Duration::from_millis(1500));
        assert_eq!((clock.now() - t0).num_milliseconds(), 1500);
    }

    #[test]
    fn ids_count_up_and_are_never_system_accounts() {
        let ids = SimIds::new();
        let a = ids.wallet_id();
        let b = ids.wallet_id();
        assert_ne!(a, b);
        assert_eq!(SimIds::ordinal(b.as_uuid()), 2);
        assert_eq!(a.system_currency(), None);
    }
}
