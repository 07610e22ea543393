//! Time: the timestamp type and the clock port, injected so tests and the
//! simulator control time.

/// A point in time, UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Tells the time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}
