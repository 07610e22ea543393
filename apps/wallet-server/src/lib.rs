//! The three services as processes: each wires the library's routers,
//! stores, relays, consumers and (for the transaction service) the retrier
//! to PostgreSQL and Kafka, and adds what an operator needs: settings from
//! flags and the environment, health and readiness, Prometheus metrics,
//! JSON logs, and a graceful stop on SIGTERM.
//!
//! The binaries `transaction-service`, `wallet-service` and
//! `ledger-service` are thin: each parses its settings and calls this
//! crate.

pub mod health;
mod process;
pub mod settings;
pub mod telemetry;
pub mod traced;

pub use process::{GAUGE_EVERY, InternalRoutes, Process};
pub use wallet_core_postgres::Schema;
