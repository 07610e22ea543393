#![doc = include_str!("../README.md")]

pub mod audit;
pub mod event;
pub mod idempotency;
pub mod ids;
pub mod ledger;
#[cfg(feature = "memory")]
pub mod memory;
pub mod money;
pub mod ports;
pub mod runtime;
pub mod service;
pub mod transfer;
pub mod wallet;

#[cfg(test)]
mod tests;

/// A point in time, UTC.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

pub use ids::{CorrelationId, EventId, IdempotencyKey, TransferId, WalletId};
pub use money::{Amount, Balance, Currency};
