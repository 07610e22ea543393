//! A refused event put right with `walletctl dead-letters`, on the real
//! stack ([`Stack`](wallet_e2e::stack::Stack)): the wallet database loses a
//! reservation (as if restored from a backup taken before the reserve),
//! the wallet service refuses the ledger's outcome for it, and the refusal
//! lands on `wallet-service.dlq`. Once the reservation is made again, a
//! replay of the dead letter completes the transfer, and a second replay
//! changes nothing.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use wallet_e2e::binary;
use wallet_e2e::stack::{LEDGER, SESSION_TIMEOUT, Stack, TRANSACTION, WALLET, call, settled};

/// Runs `walletctl` with `args`.
fn walletctl(args: &[&str]) -> Output {
    Command::new(binary("walletctl"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("walletctl runs")
}

/// Runs `walletctl ... --json` and reads its JSON answer; it must succeed.
fn walletctl_json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let output = walletctl(&args);
    assert!(
        output.status.success(),
        "walletctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "walletctl {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// `walletctl audit` on the stack's three databases: success, and its
/// report.
fn audit(stack: &Stack) -> (bool, String) {
    let output = walletctl(&[
        "audit",
        "--transaction-db",
        stack.database_url(TRANSACTION),
        "--wallet-db",
        stack.database_url(WALLET),
        "--ledger-db",
        stack.database_url(LEDGER),
    ]);
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), report)
}

/// The records of `group`'s dead-letter topic, as `list --json` shows them.
fn dead_letters(stack: &Stack, group: &str) -> Vec<Value> {
    let listed = walletctl_json(&[
        "dead-letters",
        "list",
        "--group",
        group,
        "--brokers",
        &stack.bootstrap(),
    ]);
    listed.as_array().expect("a list").clone()
}

/// Waits until the event `id` is in the inbox of the database at `url`:
/// its consumer handled it.
async fn handled(url: &str, id: &str, within: Duration) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let id: sqlx::types::Uuid = id.parse().expect("an event id");
    let deadline = Instant::now() + within;
    loop {
        let seen: Option<i32> = sqlx::query_scalar("SELECT 1 FROM inbox WHERE event_id = $1")
            .bind(id)
            .fetch_optional(&mut conn)
            .await
            .expect("read the inbox");
        if seen.is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "event {id} not handled within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_outcome_fixed_at_its_cause_and_replayed_completes_its_transfer() {
    let mut stack = Stack::start(1).await;
    let (http, base) = (stack.http.clone(), stack.base.clone());
    let within = Duration::from_secs(60);
    let wallets = stack.funded_wallets(2, "100.00").await;
    let (a, b) = (wallets[0].clone(), wallets[1].clone());
    settled(&http, &base, &a, "100.00", within).await;
    settled(&http, &base, &b, "100.00", within).await;
    let brokers = stack.bootstrap();

    // The ledger down: the transfer is reserved and waits.
    stack.services[LEDGER][0].process.kill();
    let body = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "30.00"});
    let post = http
        .post(format!("{base}/v1/transfers"))
        .header("Idempotency-Key", "dlq-1")
        .json(&body);
    let (status, transfer) = call(post).await.expect("an answer");
    assert_eq!(status, 202, "{transfer}");
    assert_eq!(transfer["status"], "RESERVED", "{transfer}");
    let id = transfer["id"].as_str().expect("an id").to_owned();
    assert_eq!(
        stack.balances(&a).await,
        Some(("70.00".to_owned(), "30.00".to_owned()))
    );

    // The wallet database as a backup taken before the reserve has it:
    // no reservation, A's funds available again.
    let mut wallet_db = sqlx::PgConnection::connect(stack.database_url(WALLET))
        .await
        .expect("connect to the wallet database");
    let transfer_id: sqlx::types::Uuid = id.parse().unwrap();
    let sender: sqlx::types::Uuid = a.parse().unwrap();
    let deleted = sqlx::query("DELETE FROM reservations WHERE transfer_id = $1")
        .bind(transfer_id)
        .execute(&mut wallet_db)
        .await
        .expect("delete the reservation")
        .rows_affected();
    assert_eq!(deleted, 1);
    let restored = sqlx::query(
        "UPDATE wallets SET available = available + 30, reserved = reserved - 30 WHERE id = $1",
    )
    .bind(sender)
    .execute(&mut wallet_db)
    .await
    .expect("restore the sender")
    .rows_affected();
    assert_eq!(restored, 1);
    assert_eq!(
        stack.balances(&a).await,
        Some(("100.00".to_owned(), "0.00".to_owned()))
    );

    // The ledger back (after the broker dropped its dead member): it posts
    // the transfer; the transaction service applies the outcome, the wallet
    // service refuses it and dead-letters it.
    tokio::time::sleep(SESSION_TIMEOUT).await;
    stack.services[LEDGER][0].restart();
    let statuses = stack.wait_terminal(std::slice::from_ref(&id), within).await;
    assert_eq!(statuses.get("SUCCEEDED"), Some(&1), "{statuses:?}");
    let deadline = Instant::now() + within;
    let letters = loop {
        let letters = dead_letters(&stack, "wallet-service");
        if !letters.is_empty() {
            break letters;
        }
        assert!(Instant::now() < deadline, "nothing on wallet-service.dlq");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["transfer_id"], id.as_str(), "{letter}");
    assert_eq!(letter["event_type"], "LedgerSucceeded", "{letter}");
    assert_eq!(
        letter["reason"],
        format!("no reservation for transfer {id}")
    );
    assert_eq!(letter["source_topic"], Value::Null, "a store's refusal");
    let refused = letter["event_id"].as_str().expect("an event id").to_owned();
    let at = format!("{}:{}", letter["partition"], letter["offset"]);
    let show = |args: &[&str]| {
        let mut all = vec!["dead-letters", "show", "--group", "wallet-service"];
        all.extend_from_slice(&["--brokers", &brokers]);
        all.extend_from_slice(args);
        walletctl_json(&all)
    };
    for shown in [show(&[&at]), show(&["--event-id", &refused])] {
        assert_eq!(
            shown["dead_letter"]["event_id"],
            refused.as_str(),
            "{shown}"
        );
        assert_eq!(shown["event"]["event_type"], "LedgerSucceeded", "{shown}");
        assert_eq!(shown["event"]["transfer_id"], id.as_str(), "{shown}");
        assert_eq!(shown["event"]["payload"]["amount"], "30.00", "{shown}");
    }
    assert_eq!(
        dead_letters(&stack, "transaction-service"),
        Vec::<Value>::new()
    );
    // Nothing kept failing transiently, so nothing is parked.
    let parked = walletctl_json(&[
        "dead-letters",
        "parked",
        "--group",
        "wallet-service",
        "--brokers",
        &brokers,
    ]);
    assert_eq!(parked, json!([]), "nothing parked");
    // The wallets never moved, and disagree with the ledger.
    settled(&http, &base, &a, "100.00", within).await;
    settled(&http, &base, &b, "100.00", within).await;
    let (clean, report) = audit(&stack);
    assert!(
        !clean,
        "the audit must fail while A and B disagree:\n{report}"
    );
    assert!(report.contains(&a) && report.contains(&b), "{report}");

    // The cause fixed: the reservation made again on the wallet service's
    // own address, as the transaction service made it.
    let reserve = json!({
        "transfer_id": id,
        "correlation_id": transfer["correlation_id"],
        "kind": transfer["kind"],
        "sender_wallet_id": a,
        "receiver_wallet_id": b,
        "amount": "30.00",
        "currency": "USD",
    });
    let internal = stack.services[WALLET][0].internal.as_ref().unwrap();
    let again = http
        .post(format!("http://{internal}/internal/v1/reserve"))
        .bearer_auth(&stack.internal_token)
        .json(&reserve);
    let (status, outcome) = call(again).await.expect("an answer");
    assert_eq!((status, &outcome["outcome"]), (200, &json!("reserved")));
    assert_eq!(
        stack.balances(&a).await,
        Some(("70.00".to_owned(), "30.00".to_owned()))
    );

    // The replay completes it.
    let replay = || {
        walletctl_json(&[
            "dead-letters",
            "replay",
            "--group",
            "wallet-service",
            "--all",
            "--brokers",
            &brokers,
        ])
    };
    let first = replay();
    let replayed = first["replayed"].as_array().expect("replayed").clone();
    assert_eq!(replayed.len(), 1, "{first}");
    assert_eq!(first["skipped"], json!([]), "{first}");
    assert_eq!(replayed[0]["original_event_id"], refused.as_str());
    assert_eq!(replayed[0]["topic"], "ledger.events");
    assert_ne!(replayed[0]["event_id"], refused.as_str(), "a new event id");
    settled(&http, &base, &a, "70.00", within).await;
    settled(&http, &base, &b, "130.00", within).await;
    let report = stack
        .assert_consistent(std::slice::from_ref(&id), &wallets, within)
        .await;
    println!("after the replay: {report}");

    // A second replay changes nothing: both consumers of ledger.events
    // take it (their inboxes record it) and apply nothing.
    let second = replay();
    let replayed = second["replayed"].as_array().expect("replayed").clone();
    assert_eq!(replayed.len(), 1, "{second}");
    let again = replayed[0]["event_id"].as_str().expect("an event id");
    handled(stack.database_url(WALLET), again, within).await;
    handled(stack.database_url(TRANSACTION), again, within).await;
    assert_eq!(
        stack.balances(&a).await,
        Some(("70.00".to_owned(), "0.00".to_owned()))
    );
    assert_eq!(
        stack.balances(&b).await,
        Some(("130.00".to_owned(), "0.00".to_owned()))
    );
    let (clean, report) = audit(&stack);
    assert!(clean, "the audit after a second replay:\n{report}");
    assert_eq!(dead_letters(&stack, "wallet-service").len(), 1);
    assert_eq!(
        dead_letters(&stack, "transaction-service"),
        Vec::<Value>::new()
    );
    stack.stop();
}
