//! Crashes on real parts: while a stream of transfers goes through the
//! gateway, each service in turn is killed (SIGKILL) and started again, and
//! so is the broker. Once quiet, every accepted transfer is terminal, every
//! wallet has nothing reserved, and `walletctl audit` finds the three
//! databases consistent.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
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

#[tokio::test(flavor = "multi_thread")]
async fn killing_each_service_and_the_broker_loses_no_money_and_leaves_nothing_stuck() {
    let broker_port = free_port();
    let broker_dir = temp_dir("broker");
    let mut broker: Broker = start_broker_at(broker_port, broker_dir.clone());
    let bootstrap = format!("127.0.0.1:{broker_port}");
    let dbs = [
        TestDatabase::create().await,
        TestDatabase::create().await,
        TestDatabase::create().await,
    ];
    let ports = [free_port(), free_port(), free_port()];
    let names = ["transaction-service", "wallet-service", "ledger-service"];
    let mut services: Vec<Service> = Vec::new();
    // The wallet service first: the transaction service calls it.
    for i in [1, 2, 0] {
        let mut env = vec![
            ("DATABASE_URL", dbs[i].url().to_owned()),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.clone()),
            ("KAFKA_PARTITIONS", "2".to_owned()),
            ("LISTEN", format!("127.0.0.1:{}", ports[i])),
            ("DB_MAX_CONNECTIONS", "4".to_owned()),
        ];
        if i != 1 {
            env.push((
                "WALLET_SERVICE_URL",
                format!("http://127.0.0.1:{}", ports[1]),
            ));
            env.push(("WALLET_SERVICE_TIMEOUT_MS", "1000".to_owned()));
            env.push(("RETRY_EVERY_MS", "200".to_owned()));
        }
        let (process, _) = start_service(names[i], &env);
        services.push(Service {
            name: names[i],
            env,
            process,
        });
    }
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let (_gateway, base) = start_gateway(&addr(0), &addr(1), &addr(2));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();

    // Four funded wallets.
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

    // A stream of transfers until told to stop; what was accepted (202) is
    // remembered. Answers while a service is down (502, 503, timeouts) are
    // not acceptances; the audit covers whatever they left behind.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let sender = {
        let (http, base, wallets, accepted) = (
            http.clone(),
            base.clone(),
            wallets.clone(),
            accepted.clone(),
        );
        tokio::spawn(async move {
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
                    .header("Idempotency-Key", format!("stream-{n}"))
                    .json(&body);
                if let Some((202, transfer)) = call(request).await {
                    accepted
                        .lock()
                        .unwrap()
                        .push(transfer["id"].as_str().unwrap().to_owned());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let pause = |d: u64| tokio::time::sleep(Duration::from_secs(d));
    pause(2).await;
    for service in &mut services {
        service.process.kill();
        tokio::time::sleep(SESSION_TIMEOUT).await;
        service.restart();
        pause(2).await;
    }
    broker.process.kill();
    pause(2).await;
    broker = start_broker_at(broker_port, broker_dir);
    pause(3).await;
    stop.send(true).unwrap();
    sender.await.unwrap();
    let accepted = accepted.lock().unwrap().clone();
    assert!(
        accepted.len() > 50,
        "the stream went on: {} accepted",
        accepted.len()
    );

    // Quiet: every accepted transfer terminal, nothing reserved.
    let mut statuses = BTreeMap::new();
    for id in &accepted {
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
    for id in &wallets {
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

    // The three databases agree.
    let audit = Command::new(binary("walletctl"))
        .args(["audit", "--transaction-db", dbs[0].url()])
        .args(["--wallet-db", dbs[1].url(), "--ledger-db", dbs[2].url()])
        .output()
        .expect("walletctl audit runs");
    let report = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "audit failed:\n{report}");
    assert!(report.contains("clean"), "{report}");
    println!("{} accepted: {statuses:?}\n{report}", accepted.len());
    // The services before the broker, so they do not log its absence.
    drop(services);
    drop(broker);
}
