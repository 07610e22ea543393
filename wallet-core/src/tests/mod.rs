//! Unit tests of the state machines and services that need the crate's
//! private test doubles (mockall mocks exist only under `cfg(test)`).

mod fixtures;
mod gwt;

mod audit;
mod envelope;
mod holds;
mod idempotency;
mod ledger;
mod recovery;
mod refunds;
mod runtime;
mod supervisor;
mod transaction_service;
mod transfer;
mod wallet;
