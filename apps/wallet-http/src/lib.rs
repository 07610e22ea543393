//! Shared HTTP plumbing of the wallet services.
