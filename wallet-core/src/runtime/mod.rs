//! The generic loops every service runs: the outbox relay and the event
//! consumer runner. Each has a `run_once` step (used by tests and the
//! simulator) and a `run` loop (used by the services).

mod consumer;
mod relay;
mod supervisor;

pub use consumer::{
    BatchReport, ConsumerConfig, ConsumerError, ConsumerRunner, DeadLetter, EventHandler,
    HandleError, Handled, Held, Holding, Source, dead_letter_topic, retry_topic, stalled,
};
pub use relay::{Relay, RelayConfig, RelayError, Route};
pub use supervisor::{Failure, LoopHandle, LoopState, Loops, Place, SupervisorConfig};
