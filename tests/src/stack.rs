//! The whole system as real processes: the three services (any number of
//! instances of each) on three fresh databases of the local PostgreSQL
//! (each connecting as its database's runtime role), a
//! broker of its own, and the repository's nginx configuration in front.
//! Every process is killed when the stack is dropped.
//!
//! [`Stack::start_with_proxies`] puts a fault proxy ([`Proxy`]) between the
//! services and each database, and one between the services and the
//! broker.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wallet_core_postgres::Schema;
use wallet_core_postgres::testdb::TestDatabase;

use crate::proxy::Proxy;
use crate::{
    Broker, Process, TempDir, binary, free_port, start_broker_advertising, start_gateway,
    start_service,
};

/// How long the broker waits for a silent group member (the services'
/// default session timeout, 10 s) and a little more: a service restarted
/// after a kill gets its partitions once the broker has dropped the dead
/// member; starting it after that keeps the group from waiting on a
/// rebalance.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(12);

/// The service binaries, in the order of [`Stack::services`].
pub const NAMES: [&str; 3] = ["transaction-service", "wallet-service", "ledger-service"];
/// Index of the transaction service in [`Stack::services`].
pub const TRANSACTION: usize = 0;
/// Index of the wallet service in [`Stack::services`].
pub const WALLET: usize = 1;
/// Index of the ledger service in [`Stack::services`].
pub const LEDGER: usize = 2;

/// One instance of a service, with what it takes to start it again on the
/// same port after a kill.
pub struct Service {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    /// The running process.
    pub process: Process,
    /// Its own address, `127.0.0.1:port` (not through the gateway).
    pub addr: String,
    /// The address of its internal routes (the wallet service's only).
    pub internal: Option<String>,
}

impl Service {
    /// Starts it again with the same settings.
    pub fn restart(&mut self) {
        self.process = start_service(self.name, &self.env).0;
    }

    /// Replaces it as a deploy does: stops it gracefully (SIGTERM, killed
    /// after 30 s), then starts it on the same port with `var` set to
    /// `value` on top of its settings, kept for later restarts.
    pub fn replace_with(&mut self, var: &'static str, value: &str) {
        self.process.terminate(Duration::from_secs(30));
        self.env.retain(|(k, _)| *k != var);
        self.env.push((var, value.to_owned()));
        self.restart();
    }
}

/// The proxies of a stack started with [`Stack::start_with_proxies`].
pub struct Proxies {
    /// In front of each database, by service ([`TRANSACTION`], [`WALLET`],
    /// [`LEDGER`]).
    pub databases: [Proxy; 3],
    /// In front of the broker, which advertises the proxy's address, so
    /// every broker connection of the services goes through it.
    pub broker: Proxy,
}

/// The running system.
pub struct Stack {
    /// The broker (replaceable: see [`Stack::restart_broker`]).
    pub broker: Broker,
    /// The port the broker advertises: its own, or its proxy's.
    broker_advertised: u16,
    broker_dir: Arc<TempDir>,
    dbs: [TestDatabase; 3],
    /// By service ([`TRANSACTION`], [`WALLET`], [`LEDGER`]), then instance.
    pub services: [Vec<Service>; 3],
    /// The gateway's base URL, `http://127.0.0.1:port`.
    pub base: String,
    /// A client with a 15 s timeout per request.
    pub http: reqwest::Client,
    /// The fault proxies, when started with them.
    pub proxies: Option<Proxies>,
    /// The token the wallet service's internal routes accept, and its
    /// callers present.
    pub internal_token: String,
    _gateway: Process,
}

/// A fresh random token: 24 bytes from the system's random source, in hex.
fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends `request`; its status and JSON body (null when not JSON), or
/// `None` when no answer came.
pub async fn call(request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// The `host:port` of a PostgreSQL URL such as
/// `postgres://user@127.0.0.1:5432/db` (port 5432 when it names none).
fn server_address(url: &str) -> String {
    let (_, host, _) = split_url(url);
    if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// `url` with its `host:port` replaced by the proxy's address.
fn through(url: &str, proxy: &Proxy) -> String {
    let (before, _, after) = split_url(url);
    format!("{before}{}{after}", proxy.addr)
}

/// A URL cut around its `host:port`: what comes before (scheme and user),
/// the address, and what follows (path and query).
fn split_url(url: &str) -> (&str, &str, &str) {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let host = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    (&url[..host], &url[host..end], &url[end..])
}

/// A stream of transfers of 1.00 among the first four of the wallets,
/// every ordered pair in turn, one about every 20 ms through the gateway,
/// until stopped.
pub struct Stream {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<String>>,
}

impl Stream {
    /// Starts it on `stack` among `wallets` (at least four), with
    /// idempotency keys `<keys>-1`, `<keys>-2`, and so on.
    pub fn start(stack: &Stack, wallets: &[String], keys: &str) -> Stream {
        let (http, base) = (stack.http.clone(), stack.base.clone());
        let wallets = wallets[..4].to_vec();
        let keys = keys.to_owned();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut n = 0usize;
            while !*stopped.borrow_and_update() {
                let (a, b) = (&wallets[n % 4], &wallets[(n / 4 + n + 1) % 4]);
                n += 1;
                if a == b {
                    continue;
                }
                let body =
                    json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "1.00"});
                let request = http
                    .post(format!("{base}/v1/transfers"))
                    .header("Idempotency-Key", format!("{keys}-{n}"))
                    .json(&body);
                if let Some((202, transfer)) = call(request).await {
                    accepted.push(transfer["id"].as_str().unwrap().to_owned());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            accepted
        });
        Stream { stop, task }
    }

    /// Stops it once the request under way has its answer, and returns
    /// the ids of the transfers accepted (202). Answers while a part is
    /// down (502, 503, timeouts) are not acceptances; the audit covers
    /// whatever they left.
    pub async fn stop(self) -> Vec<String> {
        self.stop.send_replace(true);
        self.task.await.expect("the stream's task")
    }
}

/// The statuses a transfer (or a hold) ends in.
const TERMINAL: [&str; 5] = ["SUCCEEDED", "FAILED", "CAPTURED", "VOIDED", "EXPIRED"];

/// Waits up to `within` until `wallet`, read from the API at `base`, shows
/// `available` with nothing reserved, and returns its view; panics if it
/// never does. A transfer is SUCCEEDED once the ledger posted it; the
/// wallet service applies the posting to the balances when it consumes the
/// same outcome, a moment later.
pub async fn settled(
    http: &reqwest::Client,
    base: &str,
    wallet: &str,
    available: &str,
    within: Duration,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let seen = call(http.get(format!("{base}/v1/wallets/{wallet}"))).await;
        if let Some((200, view)) = &seen {
            let balances = (view["available"].as_str(), view["reserved"].as_str());
            if balances == (Some(available), Some("0.00")) {
                return view.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "wallet {wallet} shows {seen:?}, expected {available} available and nothing reserved"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Stack {
    /// `instances` of each service, each on its own fixed port, the wallet
    /// service first (the others call it), then the gateway.
    pub async fn start(instances: usize) -> Stack {
        Stack::launch(instances, false, &[]).await
    }

    /// As [`Stack::start`], every service also given the variables `env`.
    pub async fn start_with_env(instances: usize, env: &[(&'static str, String)]) -> Stack {
        Stack::launch(instances, false, env).await
    }

    /// As [`Stack::start`], with the services reaching each database and
    /// the broker through a [`Proxy`] of its own ([`Stack::proxies`]).
    /// Tests and `walletctl audit` reach the databases directly.
    pub async fn start_with_proxies(instances: usize) -> Stack {
        Stack::launch(instances, true, &[]).await
    }

    async fn launch(instances: usize, proxied: bool, extra: &[(&'static str, String)]) -> Stack {
        let broker_port = free_port();
        let broker_dir = Arc::new(TempDir::new("broker"));
        let broker_proxy = if proxied {
            Some(Proxy::start(format!("127.0.0.1:{broker_port}")).await)
        } else {
            None
        };
        let broker_advertised = broker_proxy.as_ref().map_or(broker_port, |p| p.addr.port());
        let broker = start_broker_advertising(broker_port, broker_advertised, broker_dir.clone());
        let bootstrap = format!("127.0.0.1:{broker_advertised}");
        let dbs = [
            TestDatabase::create().await.expect("a test database"),
            TestDatabase::create().await.expect("a test database"),
            TestDatabase::create().await.expect("a test database"),
        ];
        let proxies = match broker_proxy {
            Some(broker) => Some(Proxies {
                databases: [
                    Proxy::start(server_address(dbs[0].url())).await,
                    Proxy::start(server_address(dbs[1].url())).await,
                    Proxy::start(server_address(dbs[2].url())).await,
                ],
                broker,
            }),
            None => None,
        };
        // Prepared as `walletctl migrate` does: the services connect as
        // each database's runtime role.
        let mut db_urls = Vec::new();
        for (s, schema) in Schema::ALL.into_iter().enumerate() {
            let app = dbs[s]
                .prepare(schema)
                .await
                .expect("a prepared test database");
            db_urls.push(match &proxies {
                Some(p) => through(&app, &p.databases[s]),
                None => app,
            });
        }
        let ports: Vec<[u16; 3]> = (0..instances)
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();
        let addrs = |s: usize| -> Vec<String> {
            ports
                .iter()
                .map(|p| format!("127.0.0.1:{}", p[s]))
                .collect()
        };
        // The wallet service's internal routes, on addresses of their own.
        let internal: Vec<String> = (0..instances)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let internal_token = random_token();
        let wallet_urls = internal
            .iter()
            .map(|a| format!("http://{a}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut services: [Vec<Service>; 3] = Default::default();
        for s in [WALLET, LEDGER, TRANSACTION] {
            for (i, addr) in addrs(s).into_iter().enumerate() {
                let mut env = vec![
                    ("DATABASE_URL", db_urls[s].clone()),
                    ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.clone()),
                    ("KAFKA_PARTITIONS", "2".to_owned()),
                    ("LISTEN", addr.clone()),
                    ("DB_MAX_CONNECTIONS", "4".to_owned()),
                    // A dead instance's claims are taken over after this.
                    ("OUTBOX_LEASE_MS", "3000".to_owned()),
                ];
                env.extend(extra.iter().cloned());
                if s == WALLET {
                    env.push(("INTERNAL_LISTEN", internal[i].clone()));
                    env.push(("INTERNAL_TOKEN", internal_token.clone()));
                } else {
                    env.push(("WALLET_SERVICE_URL", wallet_urls.clone()));
                    env.push(("WALLET_SERVICE_TOKEN", internal_token.clone()));
                    env.push(("WALLET_SERVICE_TIMEOUT_MS", "1000".to_owned()));
                    env.push(("RETRY_EVERY_MS", "200".to_owned()));
                }
                let (process, _) = start_service(NAMES[s], &env);
                services[s].push(Service {
                    name: NAMES[s],
                    env,
                    process,
                    addr,
                    internal: (s == WALLET).then(|| internal[i].clone()),
                });
            }
        }
        let (gateway, base) = start_gateway(&addrs(TRANSACTION), &addrs(WALLET), &addrs(LEDGER));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("an HTTP client");
        Stack {
            broker,
            broker_advertised,
            broker_dir,
            dbs,
            services,
            base,
            http,
            proxies,
            internal_token,
            _gateway: gateway,
        }
    }

    /// The database URL of a service ([`TRANSACTION`], [`WALLET`] or
    /// [`LEDGER`]) as the server's administrator, for tests that read or
    /// repair it as an operator would (the services connect as its runtime
    /// role).
    pub fn database_url(&self, service: usize) -> &str {
        self.dbs[service].url()
    }

    /// The broker's bootstrap address, `127.0.0.1:port`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.broker.port)
    }

    /// Kills the broker and starts it again on the same port and data.
    pub fn restart_broker(&mut self) {
        let port = self.broker.port;
        self.broker.process.kill();
        self.broker =
            start_broker_advertising(port, self.broker_advertised, self.broker_dir.clone());
    }

    /// `n` wallets in USD, each funded with a deposit of `amount` that
    /// reached SUCCEEDED and shows in its available balance (`amount` as
    /// the API writes it, two decimals): spendable at once.
    pub async fn funded_wallets(&self, n: usize, amount: &str) -> Vec<String> {
        let (http, base) = (&self.http, &self.base);
        let mut wallets = Vec::new();
        let mut deposits = Vec::new();
        for i in 0..n {
            let open = http
                .post(format!("{base}/v1/wallets"))
                .json(&json!({"currency": "USD"}));
            let (status, wallet) = call(open).await.expect("open");
            assert_eq!(status, 201, "{wallet}");
            let id = wallet["id"].as_str().expect("an id").to_owned();
            let deposit = http
                .post(format!("{base}/v1/wallets/{id}/deposits"))
                .header("Idempotency-Key", format!("fund-{i}"))
                .json(&json!({"amount": amount}));
            let (status, body) = call(deposit).await.expect("deposit");
            assert_eq!(status, 202, "{body}");
            deposits.push(body["id"].as_str().expect("an id").to_owned());
            wallets.push(id);
        }
        let statuses = self.wait_terminal(&deposits, Duration::from_secs(60)).await;
        assert_eq!(statuses.get("SUCCEEDED"), Some(&n), "{statuses:?}");
        for wallet in &wallets {
            settled(
                &self.http,
                &self.base,
                wallet,
                amount,
                Duration::from_secs(30),
            )
            .await;
        }
        wallets
    }

    /// Waits until each of `transfers` is terminal (SUCCEEDED or FAILED, or
    /// a hold's CAPTURED, VOIDED or EXPIRED), or until `within` has passed;
    /// counts them by their last status seen.
    pub async fn wait_terminal(
        &self,
        transfers: &[String],
        within: Duration,
    ) -> BTreeMap<String, usize> {
        let deadline = Instant::now() + within;
        let mut statuses = BTreeMap::new();
        for id in transfers {
            let mut status = String::from("unknown");
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = left.min(Duration::from_secs(10)).as_millis();
                let get = self
                    .http
                    .get(format!("{}/v1/transfers/{id}?wait_ms={wait}", self.base));
                if let Some((200, transfer)) = call(get).await {
                    status = transfer["status"].as_str().unwrap_or("?").to_owned();
                }
                if TERMINAL.contains(&status.as_str()) || left.is_zero() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            *statuses.entry(status).or_insert(0) += 1;
        }
        statuses
    }

    /// The wallet's available and reserved balances.
    pub async fn balances(&self, wallet: &str) -> Option<(String, String)> {
        let get = self.http.get(format!("{}/v1/wallets/{wallet}", self.base));
        let (status, w) = call(get).await?;
        let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
        (status == 200).then(|| (text(&w["available"]), text(&w["reserved"])))
    }

    /// Once quiet, within `within`: every accepted transfer terminal, no
    /// wallet keeps a reservation, and `walletctl audit` finds the three
    /// databases consistent. Returns the statuses and the audit's report.
    pub async fn assert_consistent(
        &self,
        accepted: &[String],
        wallets: &[String],
        within: Duration,
    ) -> String {
        let deadline = Instant::now() + within;
        let statuses = self.wait_terminal(accepted, within).await;
        let terminal: usize = TERMINAL
            .iter()
            .map(|status| statuses.get(*status).unwrap_or(&0))
            .sum();
        assert_eq!(
            terminal,
            accepted.len(),
            "not all accepted transfers are terminal: {statuses:?}"
        );
        for id in wallets {
            // Zero at the wallet's currency's scale: "0.00", "0", "0.000".
            let zero = |reserved: &str| reserved.trim_start_matches(['0', '.']).is_empty();
            let mut seen = self.balances(id).await;
            while seen.as_ref().is_none_or(|(_, reserved)| !zero(reserved))
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
                seen = self.balances(id).await;
            }
            assert!(
                seen.as_ref().is_some_and(|(_, reserved)| zero(reserved)),
                "wallet {id} keeps a reservation {within:?} after the stream stopped: {seen:?}"
            );
        }
        let audit = Command::new(binary("walletctl"))
            .args(["audit", "--transaction-db", self.dbs[TRANSACTION].url()])
            .args(["--wallet-db", self.dbs[WALLET].url()])
            .args(["--ledger-db", self.dbs[LEDGER].url()])
            .output()
            .expect("walletctl audit runs");
        let report = String::from_utf8_lossy(&audit.stdout).into_owned();
        assert!(audit.status.success(), "audit failed:\n{report}");
        assert!(report.contains("clean"), "{report}");
        format!("{} accepted: {statuses:?}\n{report}", accepted.len())
    }

    /// Stops the services before the broker, so they do not log its
    /// absence.
    pub fn stop(self) {
        drop(self.services);
        drop(self.broker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_is_cut_around_its_address() {
        let url = "postgres://postgres@127.0.0.1:5432/wcpg_test_1?sslmode=disable";
        assert_eq!(
            split_url(url),
            (
                "postgres://postgres@",
                "127.0.0.1:5432",
                "/wcpg_test_1?sslmode=disable"
            )
        );
        assert_eq!(server_address("postgres://localhost/db"), "localhost:5432");
        assert_eq!(server_address("postgres://u:p@w@h:6000"), "h:6000");
    }
}
