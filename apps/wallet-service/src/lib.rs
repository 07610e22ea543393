//! The wallet service's HTTP API.
