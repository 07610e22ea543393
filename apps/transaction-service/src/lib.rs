//! The transaction service's HTTP API.
