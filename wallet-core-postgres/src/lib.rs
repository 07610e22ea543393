//! PostgreSQL adapters of `wallet-core`'s stores: one database per service,
//! transactional outbox and inbox, idempotency records, append-only ledger.
//!
//! The adapters land with the PostgreSQL issue; until then the services run
//! on `wallet_core::memory`.
