//! Settings of a service process, from flags or environment variables
//! (a flag wins). Every setting has a default except the database URL and
//! the broker's address, which would otherwise reach a wrong system.
//! docs/operations.md lists them with the reason for each default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use wallet_core::event::SCHEMA_VERSION;
use wallet_core::service::TransactionConfig;
use wallet_http::{ServerTls, ServiceToken};

/// Settings every service takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Address to serve HTTP on. Loopback by default: put the gateway, not
    /// the service, on a public address. [default: the service's port on
    /// 127.0.0.1]
    #[arg(long, env = "LISTEN")]
    pub listen: Option<SocketAddr>,

    /// The service's own PostgreSQL database (`postgres://user@host:port/db`),
    /// as its runtime role (`<db>_app`). The service migrates nothing: it
    /// refuses to start, saying so, until `walletctl migrate` has applied
    /// this build's migrations.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Connections in the database pool at most; each unit of work holds one.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Milliseconds before the server cancels a statement (the unit fails as
    /// unavailable and is retried).
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    pub db_statement_timeout_ms: u64,

    /// Milliseconds a statement waits for a row lock before it fails (and is
    /// retried).
    #[arg(long, env = "DB_LOCK_TIMEOUT_MS", default_value_t = 2_000)]
    pub db_lock_timeout_ms: u64,

    /// Milliseconds a relay's claim holds outbox records: how long a dead
    /// relay's batch waits before another instance publishes it.
    #[arg(long, env = "OUTBOX_LEASE_MS", default_value_t = 30_000)]
    pub outbox_lease_ms: u64,

    /// Milliseconds an idle relay waits for a NOTIFY before it looks at the
    /// outbox anyway.
    #[arg(long, env = "RELAY_POLL_MS", default_value_t = 250)]
    pub relay_poll_ms: u64,

    /// Hours published outbox rows are kept for inspection before they are
    /// pruned.
    #[arg(long, env = "OUTBOX_RETENTION_HOURS", default_value_t = 24)]
    pub outbox_retention_hours: u64,

    /// Kafka bootstrap servers (`host:port,...`).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_bootstrap_servers: String,

    /// Partitions of each topic created at start (existing topics keep
    /// theirs): the most consumers of one group that can work at once.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 8)]
    pub kafka_partitions: i32,

    /// Longest wait, in milliseconds, of a consumer's fetch for new events
    /// (`fetch.wait.max.ms`). Kafka answers as soon as events arrive; a
    /// broker that holds every fetch this long adds it to each hop.
    #[arg(long, env = "KAFKA_FETCH_WAIT_MS", default_value_t = 100)]
    pub kafka_fetch_wait_ms: u64,

    /// Any librdkafka property, as `key=value`, for every client (TLS and
    /// SASL among them: `security.protocol`, `ssl.ca.location`,
    /// `sasl.mechanism`, `sasl.username`, `sasl.password`); repeat the
    /// flag, or separate with commas in the variable. Hidden from `--help`'s
    /// environment values, since it may hold a password.
    #[arg(long = "kafka-property", env = "KAFKA_PROPERTIES", hide_env_values = true,
          value_delimiter = ',', value_parser = key_value)]
    pub kafka_properties: Vec<(String, String)>,

    /// Events a consumer hands to its store at most in one database
    /// transaction.
    #[arg(long, env = "CONSUMER_BATCH", default_value_t = 500)]
    pub consumer_batch: usize,

    /// Milliseconds a consumer may deliver nothing while its partitions (or,
    /// owning none, its whole group) stay behind before it leaves the group
    /// and joins again: the way back when the broker never hands a quickly
    /// restarted member its partitions.
    #[arg(long, env = "CONSUMER_STALL_MS", default_value_t = 20_000)]
    pub consumer_stall_ms: u64,

    /// Milliseconds a background loop (relay, consumer, retrier) may keep
    /// failing before it counts as stalled: `/readyz` then answers 503
    /// naming it, and `wallet_loop_stalled` is 1.
    #[arg(long, env = "LOOP_STALL_MS", default_value_t = 30_000)]
    pub loop_stall_ms: u64,

    /// The event schema version the process writes and the newest it
    /// reads: this build's (the default), or the next one, to rehearse an
    /// upgrade: the process then acts as a build that adds an optional
    /// member in a new version (same events, stamped one higher). Nothing
    /// else is accepted.
    #[arg(long, env = "EVENT_SCHEMA_VERSION", default_value_t = SCHEMA_VERSION,
          value_parser = schema_version)]
    pub event_schema_version: u16,

    /// Logs as one JSON object per line (for log collectors) instead of text.
    #[arg(long, env = "LOG_JSON")]
    pub log_json: bool,

    /// Milliseconds a stopping service gives requests and batches in flight
    /// to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,

    /// Milliseconds a service keeps serving after SIGTERM, with `/readyz`
    /// answering 503 `draining`, before it stops taking connections: time
    /// for a load balancer that probes `/readyz` to take it out of
    /// rotation. At least the probe's period.
    #[arg(long, env = "DRAIN_DELAY_MS", default_value_t = 2_000)]
    pub drain_delay_ms: u64,
}

impl Common {
    /// The address to serve on: `--listen`, or 127.0.0.1 and `port`.
    pub fn listen_or(&self, port: u16) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The grace period after SIGTERM.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// How long the listeners keep serving after SIGTERM.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }
}

/// Parses a schema version this build can write: its own or the next.
fn schema_version(text: &str) -> Result<u16, String> {
    let next = SCHEMA_VERSION + 1;
    match text.trim().parse::<u16>() {
        Ok(v) if v == SCHEMA_VERSION || v == next => Ok(v),
        _ => Err(format!(
            "expected {SCHEMA_VERSION} (this build's event schema version) or {next} \
             (the next, to rehearse an upgrade), got {text:?}"
        )),
    }
}

/// Parses `key=value`.
fn key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {text:?}"))?;
    if key.is_empty() {
        return Err(format!("empty key in {text:?}"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// How the transaction and ledger services reach the wallet service.
#[derive(Debug, Clone, Args)]
pub struct WalletLink {
    /// Base URL of the wallet service's internal routes (through its own
    /// address, never the public gateway); several instances' URLs
    /// separated by commas, called in turn, the next one when one refuses
    /// the connection.
    #[arg(
        long,
        env = "WALLET_SERVICE_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub wallet_service_url: String,

    /// Milliseconds to wait for the wallet service's answer; a reserve
    /// without an answer in time leaves its transfer INITIATED for the
    /// retrier.
    #[arg(long, env = "WALLET_SERVICE_TIMEOUT_MS", default_value_t = 2_000)]
    pub wallet_service_timeout_ms: u64,

    /// The token this service presents to the wallet service's internal
    /// routes (`Authorization: Bearer`): one of those its `INTERNAL_TOKEN`
    /// accepts. This or `--wallet-service-token-file` is required.
    #[arg(
        long,
        env = "WALLET_SERVICE_TOKEN",
        hide_env_values = true,
        conflicts_with = "wallet_service_token_file"
    )]
    pub wallet_service_token: Option<ServiceToken>,

    /// A file holding the token instead (its surrounding blanks ignored).
    #[arg(long, env = "WALLET_SERVICE_TOKEN_FILE")]
    pub wallet_service_token_file: Option<PathBuf>,

    /// The certificate authorities (a PEM file) trusted for the wallet
    /// service's certificate, given `https://` URLs: the only ones, in
    /// place of the web's public authorities built in. Requires every URL
    /// to be `https://`.
    #[arg(long, env = "WALLET_SERVICE_CA_FILE")]
    pub wallet_service_ca_file: Option<PathBuf>,
}

impl WalletLink {
    /// The HTTP client of the wallet service's internal routes, presenting
    /// the token; an error names the missing or unreadable setting.
    pub fn gateway(&self) -> anyhow::Result<transaction_service::HttpWalletGateway> {
        let tokens = credential(
            self.wallet_service_token.iter().cloned().collect(),
            self.wallet_service_token_file.as_deref(),
            "WALLET_SERVICE_TOKEN",
        )?;
        let [token] = <[ServiceToken; 1]>::try_from(tokens).map_err(|_| {
            anyhow::anyhow!("WALLET_SERVICE_TOKEN_FILE must hold one token, not several")
        })?;
        let timeout = std::time::Duration::from_millis(self.wallet_service_timeout_ms);
        let urls: Vec<&str> = self.wallet_service_url.split(',').map(str::trim).collect();
        let gateway = match &self.wallet_service_ca_file {
            None => transaction_service::HttpWalletGateway::instances(&urls, timeout)?,
            Some(ca_file) => {
                transaction_service::HttpWalletGateway::instances_trusting(&urls, timeout, ca_file)
                    .context("WALLET_SERVICE_CA_FILE")?
            }
        };
        Ok(gateway.with_token(token))
    }
}

/// Settings of the wallet service only: its internal routes.
#[derive(Debug, Clone, Args)]
pub struct Internal {
    /// Address to serve the internal routes on, apart from the public ones:
    /// reachable by the transaction and ledger services, never by clients.
    /// [default: 127.0.0.1, on the public port + 1000]
    #[arg(long, env = "INTERNAL_LISTEN")]
    pub internal_listen: Option<SocketAddr>,

    /// The tokens the internal routes accept (`Authorization: Bearer`),
    /// separated by commas: one, or the old and the new one while a token
    /// is rotated. This or `--internal-token-file` is required.
    #[arg(
        long,
        env = "INTERNAL_TOKEN",
        hide_env_values = true,
        value_delimiter = ',',
        conflicts_with = "internal_token_file"
    )]
    pub internal_token: Vec<ServiceToken>,

    /// A file holding the tokens instead, one a line (or separated by
    /// commas).
    #[arg(long, env = "INTERNAL_TOKEN_FILE")]
    pub internal_token_file: Option<PathBuf>,

    /// The internal listener's TLS certificate (PEM: its own first, then
    /// any intermediates). With `--internal-tls-key`, the internal routes
    /// are served over TLS only (`https://`).
    #[arg(long, env = "INTERNAL_TLS_CERT", requires = "internal_tls_key")]
    pub internal_tls_cert: Option<PathBuf>,

    /// The private key of `--internal-tls-cert` (PEM).
    #[arg(long, env = "INTERNAL_TLS_KEY", requires = "internal_tls_cert")]
    pub internal_tls_key: Option<PathBuf>,
}

impl Internal {
    /// Where to serve the internal routes: `--internal-listen`, or 127.0.0.1
    /// on `public`'s port + 1000 (any free port when `public`'s is 0).
    pub fn listen_or(&self, public: SocketAddr) -> SocketAddr {
        let port = match public.port() {
            0 => 0,
            port => port.saturating_add(1000),
        };
        self.internal_listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The internal listener's TLS identity, when its certificate and key
    /// are given; an error names the file that does not do.
    pub fn tls(&self) -> anyhow::Result<Option<ServerTls>> {
        match (&self.internal_tls_cert, &self.internal_tls_key) {
            (Some(cert), Some(key)) => Ok(Some(
                ServerTls::from_pem_files(cert, key)
                    .context("INTERNAL_TLS_CERT and INTERNAL_TLS_KEY")?,
            )),
            _ => Ok(None),
        }
    }

    /// The accepted tokens; an error names both settings when neither is
    /// set.
    pub fn tokens(&self) -> anyhow::Result<Arc<[ServiceToken]>> {
        let tokens = credential(
            self.internal_token.clone(),
            self.internal_token_file.as_deref(),
            "INTERNAL_TOKEN",
        )?;
        Ok(tokens.into())
    }
}

/// The tokens of a `<name>` / `<name>_FILE` pair of settings (clap refuses
/// both at once): the given ones, or those the file holds, one a line or
/// separated by commas. Neither, or a file without a token, is an error
/// naming both settings.
fn credential(
    given: Vec<ServiceToken>,
    file: Option<&Path>,
    name: &str,
) -> anyhow::Result<Vec<ServiceToken>> {
    let tokens = match file {
        None => given,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {name}_FILE {}", path.display()))?;
            text.split([',', '\n'])
                .filter(|t| !t.trim().is_empty())
                .map(ServiceToken::new)
                .collect::<Result<_, _>>()
                .with_context(|| format!("{name}_FILE {}", path.display()))?
        }
    };
    anyhow::ensure!(
        !tokens.is_empty(),
        "the service credential is missing: set {name} or {name}_FILE"
    );
    Ok(tokens)
}

/// Settings of the transaction service only.
#[derive(Debug, Clone, Args)]
pub struct Transaction {
    /// Milliseconds between passes of the retrier over INITIATED transfers,
    /// and of the sweeper over holds past their expiry.
    #[arg(long, env = "RETRY_EVERY_MS", default_value_t = 500)]
    pub retry_every_ms: u64,

    /// New transfers stored, reserved (one call to the wallet service) and
    /// recorded together at most. Requests that arrive while a batch is in
    /// flight go in the next one; a lone request goes at once.
    #[arg(long, env = "TRANSFER_BATCH_SIZE", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub transfer_batch_size: u32,

    /// Batches of new transfers in flight at once at most.
    #[arg(long, env = "TRANSFER_BATCHES_IN_FLIGHT", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub transfer_batches_in_flight: u32,

    /// Transfer requests waiting for a batch at most; one more is answered
    /// 503 at once instead of waiting.
    #[arg(long, env = "TRANSFER_BATCH_QUEUE", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub transfer_batch_queue: u32,

    /// Milliseconds between reads of a long poll's transfer when nothing
    /// woke it. Waits wake when their transfer moves, in any instance (the
    /// database announces it); this only bounds how late a wait sees a
    /// change whose announcement was lost.
    #[arg(long, env = "WAIT_POLL_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub wait_poll_ms: u64,
}

impl Transaction {
    /// The transaction service's limits these flags give.
    pub fn config(&self) -> TransactionConfig {
        TransactionConfig {
            batch_size: self.transfer_batch_size as usize,
            batches_in_flight: self.transfer_batches_in_flight as usize,
            batch_queue: self.transfer_batch_queue as usize,
            wait_poll: Duration::from_millis(self.wait_poll_ms),
            ..TransactionConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> ServiceToken {
        ServiceToken::new(text).unwrap()
    }

    #[test]
    fn a_credential_is_given_or_read_from_a_file() {
        let given = credential(vec![token("a")], None, "T").unwrap();
        assert_eq!(given, [token("a")]);
        let error = credential(Vec::new(), None, "T").unwrap_err().to_string();
        assert!(error.contains("set T or T_FILE"), "{error}");
        let path = std::env::temp_dir().join(format!("token-{}", std::process::id()));
        std::fs::write(&path, "old\nnew,newer\n\n").unwrap();
        let read = credential(Vec::new(), Some(&path), "T").unwrap();
        assert_eq!(read, [token("old"), token("new"), token("newer")]);
        std::fs::write(&path, "\n").unwrap();
        assert!(credential(Vec::new(), Some(&path), "T").is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(credential(Vec::new(), Some(&path), "T").is_err());
    }

    #[test]
    fn the_internal_address_follows_the_public_one() {
        let internal = Internal {
            internal_listen: None,
            internal_token: vec![token("s3cret")],
            internal_token_file: None,
            internal_tls_cert: None,
            internal_tls_key: None,
        };
        let public = SocketAddr::from(([0, 0, 0, 0], 8082));
        assert_eq!(internal.listen_or(public).to_string(), "127.0.0.1:9082");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        assert_eq!(internal.listen_or(any).to_string(), "127.0.0.1:0");
        assert!(!format!("{internal:?}").contains("s3cret"));
    }

    #[test]
    fn properties_are_key_value_pairs() {
        assert_eq!(
            key_value("linger.ms=5"),
            Ok(("linger.ms".to_owned(), "5".to_owned()))
        );
        assert_eq!(key_value("a=b=c"), Ok(("a".to_owned(), "b=c".to_owned())));
        assert!(key_value("linger.ms").is_err());
        assert!(key_value("=5").is_err());
    }

    #[test]
    fn a_schema_version_is_this_builds_or_the_next() {
        let (this, next) = (SCHEMA_VERSION, SCHEMA_VERSION + 1);
        assert_eq!(schema_version(&this.to_string()), Ok(this));
        assert_eq!(schema_version(&next.to_string()), Ok(next));
        let beyond = (next + 1).to_string();
        for refused in ["0", &beyond, "-1", "two", ""] {
            let error = schema_version(refused).unwrap_err();
            assert!(
                error.contains("to rehearse an upgrade"),
                "{refused}: {error}"
            );
        }
    }
}
