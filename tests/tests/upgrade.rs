//! A rolling upgrade across an event schema version, on the real stack,
//! in the worst order: each writer of the new version goes out before its
//! readers. A service started with `EVENT_SCHEMA_VERSION` one above this
//! build's acts as the next build (it writes the new version and reads
//! it). Its readers on the old version hold its events (no commit, no dead
//! letter, `/readyz` naming the version); once they are replaced, every
//! accepted transfer completes, nothing is dead-lettered or parked, and
//! the audit is clean.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wallet_e2e::binary;
use wallet_e2e::stack::{LEDGER, Stack, Stream, TRANSACTION, WALLET};

const NEXT: &str = "2";

/// `GET /readyz` of one service, straight to it: status and body.
async fn readyz(http: &reqwest::Client, addr: &str) -> (u16, String) {
    match http.get(format!("http://{addr}/readyz")).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Waits until the service at `addr` reports it holds an event of the
/// next schema version: 503, naming the version.
async fn holds_the_next_version(http: &reqwest::Client, addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = readyz(http, addr).await;
        if status == 503 && body.contains(&format!("schema version {NEXT} is newer")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never held a version {NEXT} event: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `walletctl dead-letters <verb> --group <group>` lists.
fn listed(stack: &Stack, verb: &str, group: &str) -> Value {
    let output = Command::new(binary("walletctl"))
        .args(["dead-letters", verb, "--group", group, "--json"])
        .args(["--brokers", &stack.bootstrap()])
        .output()
        .expect("walletctl runs");
    assert!(
        output.status.success(),
        "{verb} {group}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_upgrade_across_a_schema_version_strands_nothing() {
    let mut stack = Stack::start(1).await;
    let wallets = stack.funded_wallets(4, "1000.00").await;
    let http = stack.http.clone();
    let stream = Stream::start(&stack, &wallets, "upgrade");
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The wallet service first: its WalletReserved events go out in the
    // next version, which the ledger cannot read yet.
    stack.services[WALLET][0].replace_with("EVENT_SCHEMA_VERSION", NEXT);
    let ledger = stack.services[LEDGER][0].addr.clone();
    holds_the_next_version(&http, &ledger, "the ledger").await;
    assert_eq!(
        listed(&stack, "list", "ledger-service"),
        Value::Array(vec![])
    );

    // Then the ledger: it posts what it held, and its outcomes go out in
    // the next version, which the (upgraded) wallet service reads and the
    // transaction service holds.
    stack.services[LEDGER][0].replace_with("EVENT_SCHEMA_VERSION", NEXT);
    let transaction = stack.services[TRANSACTION][0].addr.clone();
    holds_the_next_version(&http, &transaction, "the transaction service").await;

    // Last, the transaction service.
    stack.services[TRANSACTION][0].replace_with("EVENT_SCHEMA_VERSION", NEXT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let accepted = stream.stop().await;
    assert!(accepted.len() > 50, "{} accepted", accepted.len());
    let report = stack
        .assert_consistent(&accepted, &wallets, Duration::from_secs(90))
        .await;
    println!("{report}");
    for group in ["ledger-service", "wallet-service", "transaction-service"] {
        for verb in ["list", "parked"] {
            assert_eq!(
                listed(&stack, verb, group),
                Value::Array(vec![]),
                "{verb} {group}"
            );
        }
    }
    for service in stack.services.iter().flatten() {
        let (status, body) = readyz(&http, &service.addr).await;
        assert_eq!(status, 200, "{}: {body}", service.addr);
    }
    stack.stop();
}
