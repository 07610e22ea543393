//! Settings of the adapters, each with its default, and the pool they make.

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use wallet_core::ports::StoreError;
use wallet_core::runtime::RelayConfig;

use crate::error::{Db, store_error};

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
    /// with the timeouts set for each connection at its start, and one
    /// connection made to check that the database answers.
    ///
    /// TLS follows the URL's `sslmode` (default `prefer`: TLS when the
    /// server offers it, unverified) and `sslrootcert`, `sslcert` and
    /// `sslkey`, or the `PGSSLMODE`, `PGSSLROOTCERT`, ... variables, as
    /// libpq does; `verify-full` checks the server's certificate against
    /// `sslrootcert` (the bundled web roots without it) and its name
    /// against the URL's host. A certificate or key file that cannot be
    /// read, and a failed TLS handshake, are errors naming them.
    pub async fn connect(&self, url: &str) -> Result<PgPool, StoreError> {
        let millis = |d: Duration| d.as_millis().to_string();
        let options = PgConnectOptions::from_str(url).db()?;
        check_tls_files(&options)?;
        let tls = tls_summary(&options);
        // Statements are prepared once per connection and run for its
        // life. A generic plan, which PostgreSQL may settle on after five
        // runs, is costed for the tables as they were then: chosen while
        // they were small (a new deployment) or before any ANALYZE, it
        // scans whole tables for every batch from then on. A plan per run
        // costs a fraction of a millisecond per statement and follows the
        // tables and the batch sizes.
        let options = options.application_name("wallet-core-postgres").options([
            ("statement_timeout", millis(self.statement_timeout)),
            ("lock_timeout", millis(self.lock_timeout)),
            ("plan_cache_mode", "force_custom_plan".to_owned()),
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
            .map_err(|error| match &error {
                // rustls's refusals during the handshake come as invalid
                // data on the connection.
                sqlx::Error::Tls(_) => tls_error(&tls, &error),
                sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                    tls_error(&tls, &error)
                }
                _ => store_error(error),
            })
    }
}

fn tls_error(tls: &str, error: &sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("TLS with the database ({tls}): {error}"))
}

/// The TLS parameters `options` ended up with, as they would be written in
/// a URL: `sslmode=verify-full, sslrootcert=file: /path`.
fn tls_summary(options: &PgConnectOptions) -> String {
    options
        .to_url_lossy()
        .query_pairs()
        .filter(|(key, _)| key.starts_with("ssl"))
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that each certificate or key file `options` name (`sslrootcert`,
/// `sslcert`, `sslkey`, from the URL or the `PGSSL*` variables) can be
/// read. sqlx would fail on a missing one only at the handshake, with the
/// bare system error and no file name.
fn check_tls_files(options: &PgConnectOptions) -> Result<(), StoreError> {
    for (key, value) in options.to_url_lossy().query_pairs() {
        // sqlx writes a file as `file: <path>`, and PEM text given inline
        // as it is; only files are checked.
        let Some(path) = value.strip_prefix("file: ") else {
            continue;
        };
        if matches!(&*key, "sslrootcert" | "sslcert" | "sslkey") {
            std::fs::File::open(path).map_err(|error| {
                StoreError::Unavailable(format!("the database's {key} {path}: {error}"))
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_certificate_file_is_named_before_any_connection() {
        let missing = std::env::temp_dir().join(format!("no-such-ca-{}.pem", std::process::id()));
        // Port 1 on loopback: nothing is reached, the check comes first.
        let url = format!(
            "postgres://postgres@127.0.0.1:1/db?sslmode=verify-full&sslrootcert={}",
            missing.display()
        );
        let error = PgSettings::default().connect(&url).await.unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("sslrootcert") && text.contains(&missing.display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn the_tls_summary_shows_the_mode_and_the_files() {
        let options = PgConnectOptions::from_str(
            "postgres://u:secret@h/db?sslmode=require&sslrootcert=/ca.pem",
        )
        .unwrap();
        let summary = tls_summary(&options);
        assert_eq!(summary, "sslmode=require, sslrootcert=file: /ca.pem");
    }
}
