//! Crashes on real parts. While a stream of transfers goes through the
//! gateway, processes are killed (SIGKILL): each service in turn and then
//! the broker, restarted each time. Once quiet, every accepted transfer is
//! terminal, no wallet keeps a reservation, and `walletctl audit` finds the
//! three databases consistent. `Stack::start` takes a number of instances
//! per service for tests of several.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wallet_core_postgres::testdb::TestDatabase;
use wallet_e2e::{
    Broker, Process, binary, free_port, start_broker_at, start_gateway, start_service, temp_dir,
};

/// A service's way back after a kill: its settings, with a fixed port.
struct Service {
    name: &'static str,
    env: Vec<(&'static str, String)>,
    process: Process,
}

impl Service {
    fn restart(&mut self) {
        self.process = start_service(self.name, &self.env).0;
    }
}

async fn call(request: reqwest::RequestBuilder) -> Option<(u16, Value)> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// After a kill, a service's consumer gets its partitions once the broker
/// has dropped the dead member (its 10 s session timeout); starting the
/// new one after that keeps the group from waiting on a rebalance.
const SESSION_TIMEOUT: Duration = Duration::from_secs(12);

/// The three services (`instances` of each) on three fresh databases, a
/// broker and the gateway.
struct Stack {
    broker: Broker,
    broker_dir: std::path::PathBuf,
    dbs: [TestDatabase; 3],
    /// By service (transaction, wallet, ledger), then instance.
    services: [Vec<Service>; 3],
    base: String,
    http: reqwest::Client,
    _gateway: Process,
}

const NAMES: [&str; 3] = ["transaction-service", "wallet-service", "ledger-service"];

impl Stack {
    async fn start(instances: usize) -> Stack {
        let broker_port = free_port();
        let broker_dir = temp_dir("broker");
        let broker = start_broker_at(broker_port, broker_dir.clone());
        let bootstrap = format!("127.0.0.1:{broker_port}");
        let dbs = [
            TestDatabase::create().await,
            TestDatabase::create().await,
            TestDatabase::create().await,
        ];
        let ports: Vec<[u16; 3]> = (0..instances)
            .map(|_| [free_port(), free_port(), free_port()])
            .collect();
        // The other services call wallet instance 0 directly (there is no
        // internal load balancer here).
        let wallet_url = format!("http://127.0.0.1:{}", ports[0][1]);
        let mut services: [Vec<Service>; 3] = Default::default();
        // The wallet service first: the others call it.
        for s in [1, 2, 0] {
            for port in &ports {
                let mut env = vec![
                    ("DATABASE_URL", dbs[s].url().to_owned()),
                    ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.clone()),
                    ("KAFKA_PARTITIONS", "2".to_owned()),
                    ("LISTEN", format!("127.0.0.1:{}", port[s])),
                    ("DB_MAX_CONNECTIONS", "4".to_owned()),
                    // A dead instance's claims are taken over after this.
                    ("OUTBOX_LEASE_MS", "3000".to_owned()),
                ];
                if s != 1 {
                    env.push(("WALLET_SERVICE_URL", wallet_url.clone()));
                    env.push(("WALLET_SERVICE_TIMEOUT_MS", "1000".to_owned()));
                    env.push(("RETRY_EVERY_MS", "200".to_owned()));
                }
                let (process, _) = start_service(NAMES[s], &env);
                services[s].push(Service {
                    name: NAMES[s],
                    env,
                    process,
                });
            }
        }
        let addrs = |s: usize| -> Vec<String> {
            ports
                .iter()
                .map(|p| format!("127.0.0.1:{}", p[s]))
                .collect()
        };
        let (gateway, base) = start_gateway(&addrs(0), &addrs(1), &addrs(2));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap();
        Stack {
            broker,
            broker_dir,
            dbs,
            services,
            base,
            http,
            _gateway: gateway,
        }
    }

    /// Four wallets with 1,000.00 each.
    async fn funded_wallets(&self) -> Vec<String> {
        let (http, base) = (&self.http, &self.base);
        let mut wallets = Vec::new();
        for n in 0..4 {
            let open = http
                .post(format!("{base}/v1/wallets"))
                .json(&json!({"currency": "USD"}));
            let (status, wallet) = call(open).await.expect("open");
            assert_eq!(status, 201, "{wallet}");
            let id = wallet["id"].as_str().unwrap().to_owned();
            let deposit = http
                .post(format!("{base}/v1/wallets/{id}/deposits"))
                .header("Idempotency-Key", format!("fund-{n}"))
                .json(&json!({"amount": "1000.00"}));
            let (status, body) = call(deposit).await.expect("deposit");
            assert_eq!(status, 202, "{body}");
            wallets.push(id);
        }
        wallets
    }

    /// A stream of transfers among `wallets` until `stop` says so; returns
    /// what was accepted (202). Answers while a service is down (502, 503,
    /// timeouts) are not acceptances; the audit covers whatever they left.
    fn stream(
        &self,
        wallets: Vec<String>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<Vec<String>> {
        let (http, base) = (self.http.clone(), self.base.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut n = 0usize;
            while !*stop.borrow_and_update() {
                let (a, b) = (&wallets[n % 4], &wallets[(n / 4 + n + 1) % 4]);
                n += 1;
                if a == b {
                    continue;
                }
                let body =
                    json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "1.00"});
                let request = http
                    .post(format!("{base}/v1/transfers"))
                    .header("Idempotency-Key", format!("stream-{n}"))
                    .json(&body);
                if let Some((202, transfer)) = call(request).await {
                    accepted.push(transfer["id"].as_str().unwrap().to_owned());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            accepted
        })
    }

    /// Once quiet: every accepted transfer terminal, nothing reserved, and
    /// the audit clean. Returns the audit's report.
    async fn assert_consistent(&self, accepted: &[String], wallets: &[String]) -> String {
        let (http, base) = (&self.http, &self.base);
        let mut statuses = BTreeMap::new();
        for id in accepted {
            let mut status = Value::Null;
            for _ in 0..12 {
                let get = http.get(format!("{base}/v1/transfers/{id}?wait_ms=10000"));
                if let Some((200, transfer)) = call(get).await {
                    status = transfer["status"].clone();
                    if status == "SUCCEEDED" || status == "FAILED" {
                        break;
                    }
                }
            }
            *statuses.entry(status.to_string()).or_insert(0) += 1;
        }
        let terminal = statuses.get("\"SUCCEEDED\"").copied().unwrap_or(0)
            + statuses.get("\"FAILED\"").copied().unwrap_or(0);
        assert_eq!(
            terminal,
            accepted.len(),
            "not all accepted transfers are terminal: {statuses:?}"
        );
        for id in wallets {
            let mut reserved = Value::Null;
            for _ in 0..600 {
                let get = http.get(format!("{base}/v1/wallets/{id}"));
                if let Some((200, wallet)) = call(get).await {
                    reserved = wallet["reserved"].clone();
                    if reserved == "0.00" {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(reserved, "0.00", "wallet {id} keeps a reservation");
        }
        let audit = Command::new(binary("walletctl"))
            .args(["audit", "--transaction-db", self.dbs[0].url()])
            .args(["--wallet-db", self.dbs[1].url()])
            .args(["--ledger-db", self.dbs[2].url()])
            .output()
            .expect("walletctl audit runs");
        let report = String::from_utf8_lossy(&audit.stdout).into_owned();
        assert!(audit.status.success(), "audit failed:\n{report}");
        assert!(report.contains("clean"), "{report}");
        format!("{} accepted: {statuses:?}\n{report}", accepted.len())
    }

    /// Stops the services before the broker, so they do not log its
    /// absence.
    fn stop(self) {
        drop(self.services);
        drop(self.broker);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_each_service_and_the_broker_loses_no_money_and_leaves_nothing_stuck() {
    let mut stack = Stack::start(1).await;
    let wallets = stack.funded_wallets().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sender = stack.stream(wallets.clone(), stopped);

    let pause = |d: u64| tokio::time::sleep(Duration::from_secs(d));
    pause(2).await;
    for service in stack.services.iter_mut().flatten() {
        service.process.kill();
        tokio::time::sleep(SESSION_TIMEOUT).await;
        service.restart();
        pause(2).await;
    }
    let port = stack.broker.port;
    stack.broker.process.kill();
    pause(2).await;
    stack.broker = start_broker_at(port, stack.broker_dir.clone());
    pause(3).await;
    stop.send(true).unwrap();
    let accepted = sender.await.unwrap();
    assert!(
        accepted.len() > 50,
        "the stream went on: {} accepted",
        accepted.len()
    );
    println!("{}", stack.assert_consistent(&accepted, &wallets).await);
    stack.stop();
}
