//! Kafka adapters of `wallet-core`'s `Publisher` and `Subscription` ports,
//! topic admin and dead-letter topics, on rdkafka.
//!
//! The adapters land with the Kafka issue; until then the services run on
//! `wallet_core::memory::MemoryBus`.
