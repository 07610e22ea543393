#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
#[cfg(feature = "contract")]
pub mod contract;
pub mod event;
pub mod history;
pub mod idempotency;
pub mod ids;
pub mod ledger;
#[cfg(feature = "memory")]
pub mod memory;
pub mod metrics;
pub mod money;
pub mod outcome;
pub mod ports;
pub mod recovery;
pub mod runtime;
pub mod service;
pub mod tags;
pub mod time;
pub mod trace;
pub mod transfer;
pub mod wallet;

#[cfg(test)]
mod tests;

pub use ids::{CorrelationId, EventId, IdempotencyKey, TransferId, WalletId};
pub use money::{Amount, Balance, Currency};
pub use time::Timestamp;
