#![doc = include_str!("../README.md")]
//!
//! ## The crate
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
#![cfg_attr(docsrs, feature(doc_cfg))]

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
