//! The ledger service's HTTP API.
