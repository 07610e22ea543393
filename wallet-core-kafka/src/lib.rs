//! Kafka adapters of `wallet-core`'s [`Publisher`](wallet_core::ports::Publisher)
//! and [`Subscription`](wallet_core::ports::Subscription) ports, topic admin
//! and dead-letter headers, on rdkafka. Nothing here is specific to one
//! broker: it speaks the Kafka protocol to Apache Kafka, Redpanda or any
//! compatible broker.
//!
//! - [`KafkaPublisher`]: an idempotent producer (`acks=all`, murmur2
//!   partitioning by transfer id) whose `publish` returns once the broker
//!   confirmed every message, so a relay acknowledges outbox records only
//!   after. Records carry the event's id, type and correlation id as
//!   [`headers`]; dead letters also say why and where they came from.
//! - [`KafkaSubscription`]: a consumer group member whose offsets move only
//!   when the consumer runner commits, after the store committed the
//!   batch's effects; `rewind` seeks back to them.
//! - [`ensure_topics`]: creates the event and dead-letter topics at start.
//! - [`DeadLetters`]: reads a dead-letter topic from start to end without
//!   joining a consumer group or committing, for operators; [`Parked`]
//!   reads a group's retry topic the same way, marking what its retry
//!   consumer has not passed yet.
//! - [`reset_offsets`]: moves a stopped consumer group's committed offsets
//!   back (to the earliest, or to a time), so that a service whose database
//!   was restored from a backup is delivered again what it applied since.
//!
//! ```no_run
//! use std::time::Duration;
//! use wallet_core::ports::{Publisher, Subscription};
//! use wallet_core_kafka::{KafkaPublisher, KafkaSettings, KafkaSubscription, ensure_topics};
//!
//! # async fn run() -> Result<(), wallet_core::ports::BusError> {
//! let settings = KafkaSettings::new("127.0.0.1:9092");
//! ensure_topics(&settings).await?;
//! let publisher = KafkaPublisher::new(&settings)?;
//! let mut subscription = KafkaSubscription::new(&settings, "ledger-service", "wallet.events")?;
//! let batch = subscription.poll(500, Duration::from_millis(100)).await?;
//! // ... apply the batch in one store transaction, then:
//! subscription.commit(&batch).await?;
//! # Ok(()) }
//! ```

mod admin;
mod dead_letters;
pub mod headers;
mod offsets;
mod probe;
mod publisher;
mod settings;
mod subscription;

pub use admin::{create_topics, ensure_topics};
pub use dead_letters::{DeadLetterRecord, DeadLetters, Parked, ParkedRecord, READER_GROUP};
pub use offsets::{PartitionReset, ResetTo, reset_offsets};
pub use probe::{GroupLag, reachable};
pub use publisher::KafkaPublisher;
pub use settings::{DEFAULT_GROUPS, DEFAULT_PARTITIONS, KafkaSettings};
pub use subscription::KafkaSubscription;
