//! Settings of the adapters, each with its default, and the pool they make.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use wallet_core::ports::StoreError;
use wallet_core::runtime::RelayConfig;

use crate::error::Db;

/// How a store talks to its database. Every field has a default, listed on
/// it; `PgSettings::default()` suits one service process on a small
/// machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// Connections in the pool at most. Each unit of work holds one for its
    /// duration, so this bounds how many run at once. Default 16.
    pub max_connections: u32,
    /// How long a unit waits for a free connection before it fails with
    /// `Unavailable`. Default 5 s.
    pub acquire_timeout: Duration,
    /// The server cancels a statement that runs longer (`statement_timeout`);
    /// the unit fails with `Unavailable`. Default 5 s.
    pub statement_timeout: Duration,
    /// The server gives up waiting for a row lock after this long
    /// (`lock_timeout`); the unit fails with `Unavailable`. Default 2 s.
    pub lock_timeout: Duration,
    /// How long a relay's claim holds outbox records ([`Self::relay_config`]):
    /// a relay that dies delays its batch by at most this long. (The
    /// retrier's claim on INITIATED transfers takes its lease from the
    /// transaction service's configuration.) Default 30 s.
    pub claim_lease: Duration,
    /// How long an idle relay waits for a wake (LISTEN/NOTIFY) before it
    /// looks at the outbox anyway. Default 250 ms.
    pub relay_poll: Duration,
    /// How long published outbox rows are kept, for inspection, before
    /// [`crate::prune_sent`] deletes them. Default 24 h.
    pub sent_retention: Duration,
    /// Rows deleted per pruning statement, so pruning never holds long
    /// locks. Default 5,000.
    pub prune_batch: usize,
    /// Whether a store announces new outbox rows with `NOTIFY`, so relays
    /// in other processes wake at once. Default true.
    pub announce_outbox: bool,
    /// Whether the transfer store announces the transfers its units move
    /// with `NOTIFY` (on [`crate::TRANSFERS_CHANNEL`]), so long polls in
    /// other processes wake at once ([`crate::TransferWake`]). Default
    /// true.
    pub announce_transfers: bool,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(2),
            claim_lease: Duration::from_secs(30),
            relay_poll: Duration::from_millis(250),
            sent_retention: Duration::from_secs(24 * 60 * 60),
            prune_batch: 5_000,
            announce_outbox: true,
            announce_transfers: true,
        }
    }
}

impl PgSettings {
    /// The relay configuration these settings imply: the claim lease and the
    /// poll fallback; the rest as the core's defaults.
    pub fn relay_config(&self) -> RelayConfig {
        RelayConfig {
            lease: self.claim_lease,
            idle_poll: self.relay_poll,
            ..RelayConfig::default()
        }
    }

    /// A pool on the database at `url` (`postgres://user@host:port/db`),
    /// with the timeouts set for each connection at its start.
    pub async fn connect(&self, url: &str) -> Result<PgPool, StoreError> {
        let millis = |d: Duration| d.as_millis().to_string();
        let options = PgConnectOptions::from_str(url)
            .db()?
            .application_name("wallet-core-postgres")
            .options([
                ("statement_timeout", millis(self.statement_timeout)),
                ("lock_timeout", millis(self.lock_timeout)),
            ]);
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            // The pool already checks each connection when it comes back
            // (a round trip); checking it again on the way out doubled the
            // round trips of every one-statement unit. A connection that
            // broke while idle fails its next statement as `Unavailable`,
            // which callers retry, and is then dropped.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .db()
    }
}
