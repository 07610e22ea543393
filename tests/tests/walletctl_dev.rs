//! `walletctl dev` as a real process, driven over HTTP and through the
//! walletctl client commands, through full transfers to SUCCEEDED.

use std::process::Command;

use serde_json::{Value, json};
use wallet_e2e::stack::settled;
use wallet_e2e::{Server, binary};

/// How long balances may lag a SUCCEEDED answer in these tests.
const SETTLING: std::time::Duration = std::time::Duration::from_secs(10);

async fn post(http: &reqwest::Client, url: String, key: &str, body: Value) -> (u16, Value) {
    let response = http
        .post(url)
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    (
        response.status().as_u16(),
        response.json().await.expect("JSON body"),
    )
}

async fn get(http: &reqwest::Client, url: String) -> (u16, Value) {
    let response = http.get(url).send().await.expect("request sent");
    (
        response.status().as_u16(),
        response.json().await.expect("JSON body"),
    )
}

async fn open_wallet(http: &reqwest::Client, base: &str) -> String {
    let (status, wallet) = post(
        http,
        format!("{base}/v1/wallets"),
        "-",
        json!({"currency": "USD"}),
    )
    .await;
    assert_eq!(status, 201, "{wallet}");
    wallet["id"].as_str().expect("wallet id").to_owned()
}

/// Waits (server-side long poll) for a terminal status.
async fn finished(http: &reqwest::Client, base: &str, transfer: &Value) -> Value {
    let id = transfer["id"].as_str().expect("transfer id");
    let (status, done) = get(http, format!("{base}/v1/transfers/{id}?wait_ms=10000")).await;
    assert_eq!(status, 200);
    done
}

/// The JSON a successful `walletctl --json` printed.
fn json_of(out: std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn walletctl(base: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary("walletctl"))
        .arg("--url")
        .arg(base)
        .args(args)
        .output()
        .expect("walletctl runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_completes_with_the_balances_right() {
    let server = Server::walletctl_dev();
    let (http, base) = (reqwest::Client::new(), server.url.clone());

    let (status, health) = get(&http, format!("{base}/healthz")).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));

    let alice = open_wallet(&http, &base).await;
    let bob = open_wallet(&http, &base).await;

    let (status, deposit) = post(
        &http,
        format!("{base}/v1/wallets/{alice}/deposits"),
        "dep-1",
        json!({"amount": "100.00"}),
    )
    .await;
    assert_eq!(status, 202, "{deposit}");
    assert_eq!(
        finished(&http, &base, &deposit).await["status"],
        "SUCCEEDED"
    );
    settled(&http, &base, &alice, "100.00", SETTLING).await;

    let body = json!({"sender_wallet_id": alice, "receiver_wallet_id": bob, "amount": "30.25"});
    let (status, transfer) =
        post(&http, format!("{base}/v1/transfers"), "pay-1", body.clone()).await;
    assert_eq!(status, 202, "{transfer}");
    let done = finished(&http, &base, &transfer).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["failure_reason"], Value::Null);

    // A retry with the same key and body is answered from the first response
    // and moves no more money.
    let (status, again) = post(&http, format!("{base}/v1/transfers"), "pay-1", body).await;
    assert_eq!((status, &again["id"]), (202, &transfer["id"]));

    let a = settled(&http, &base, &alice, "69.75", SETTLING).await;
    let b = settled(&http, &base, &bob, "30.25", SETTLING).await;
    assert_eq!(
        (a["available"].as_str(), a["reserved"].as_str()),
        (Some("69.75"), Some("0.00"))
    );
    assert_eq!(
        (b["available"].as_str(), b["reserved"].as_str()),
        (Some("30.25"), Some("0.00"))
    );

    let (status, page) = get(&http, format!("{base}/v1/wallets/{bob}/entries")).await;
    assert_eq!(status, 200);
    let entries = page["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (
            entries[0]["direction"].as_str(),
            entries[0]["amount"].as_str()
        ),
        (Some("credit"), Some("30.25"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_commands_drive_the_same_api() {
    let server = Server::walletctl_dev();
    let base = server.url.as_str();

    let alice = json_of(walletctl(
        base,
        &["--json", "wallet", "create", "--currency", "EUR"],
    ));
    let bob = json_of(walletctl(
        base,
        &["--json", "wallet", "create", "--currency", "EUR"],
    ));
    let (alice, bob) = (
        alice["id"].as_str().unwrap().to_owned(),
        bob["id"].as_str().unwrap().to_owned(),
    );

    let deposit = json_of(walletctl(
        base,
        &["--json", "deposit", &alice, "--amount", "50"],
    ));
    assert_eq!(deposit["status"], "SUCCEEDED", "{deposit}");
    let http = reqwest::Client::new();
    settled(&http, base, &alice, "50.00", SETTLING).await;

    let out = walletctl(
        base,
        &[
            "transfer", "--from", &alice, "--to", &bob, "--amount", "20.5",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("SUCCEEDED"), "{text}");
    settled(&http, base, &bob, "20.50", SETTLING).await;

    // A definite refusal exits non-zero and names the reason; nothing moves.
    let out = walletctl(
        base,
        &[
            "transfer", "--from", &bob, "--to", &alice, "--amount", "1000",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("insufficient_funds"));

    let shown = json_of(walletctl(base, &["--json", "wallet", "show", &bob]));
    assert_eq!(
        (shown["available"].as_str(), shown["reserved"].as_str()),
        (Some("20.50"), Some("0.00"))
    );
    let shown = json_of(walletctl(base, &["--json", "wallet", "show", &alice]));
    assert_eq!(shown["available"].as_str(), Some("29.50"));
}

#[tokio::test(flavor = "multi_thread")]
async fn holds_and_refunds_through_walletctl() {
    let server = Server::walletctl_dev();
    let base = server.url.as_str();
    let create = |currency| {
        json_of(walletctl(
            base,
            &["--json", "wallet", "create", "--currency", currency],
        ))
    };
    let (payer, payee) = (create("USD"), create("USD"));
    let (payer, payee) = (
        payer["id"].as_str().unwrap().to_owned(),
        payee["id"].as_str().unwrap().to_owned(),
    );
    let deposit = json_of(walletctl(
        base,
        &["--json", "deposit", &payer, "--amount", "50"],
    ));
    assert_eq!(deposit["status"], "SUCCEEDED", "{deposit}");
    let http = reqwest::Client::new();
    settled(&http, base, &payer, "50.00", SETTLING).await;

    let hold = json_of(walletctl(
        base,
        &[
            "--json", "hold", "create", &payer, "--amount", "20", "--to", &payee,
        ],
    ));
    assert_eq!(hold["status"], "HELD", "{hold}");
    let hold = hold["id"].as_str().unwrap().to_owned();
    let capture = json_of(walletctl(
        base,
        &["--json", "hold", "capture", &hold, "--amount", "15"],
    ));
    assert_eq!(
        (capture["status"].as_str(), capture["hold_id"].as_str()),
        (Some("SUCCEEDED"), Some(hold.as_str())),
        "{capture}"
    );
    let shown = json_of(walletctl(base, &["--json", "hold", "show", &hold]));
    assert_eq!(shown["status"], "CAPTURED", "{shown}");

    // Part of the capture goes back; asking for more than is left fails.
    let capture = capture["id"].as_str().unwrap().to_owned();
    let refund = json_of(walletctl(
        base,
        &["--json", "refund", &capture, "--amount", "5"],
    ));
    assert_eq!(
        (refund["status"].as_str(), refund["refund_of"].as_str()),
        (Some("SUCCEEDED"), Some(capture.as_str())),
        "{refund}"
    );
    let out = walletctl(base, &["refund", &capture, "--amount", "10.01"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exceeds_refundable"));

    // A void of a captured hold exits non-zero, naming its state.
    let out = walletctl(base, &["hold", "void", &hold]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("hold_captured"));

    let other = json_of(walletctl(
        base,
        &["--json", "hold", "create", &payer, "--amount", "5"],
    ));
    let other = other["id"].as_str().unwrap().to_owned();
    let out = walletctl(base, &["hold", "void", &other]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("VOIDED"), "{text}");
    settled(&http, base, &payee, "10.00", SETTLING).await;
    settled(&http, base, &payer, "40.00", SETTLING).await;
    let shown = json_of(walletctl(base, &["--json", "wallet", "show", &payer]));
    assert_eq!(shown["reserved"].as_str(), Some("0.00"));
}

#[tokio::test(flavor = "multi_thread")]
async fn references_metadata_and_history_through_walletctl() {
    let server = Server::walletctl_dev();
    let base = server.url.as_str();
    let created = json_of(walletctl(
        base,
        &["--json", "wallet", "create", "--currency", "EUR"],
    ));
    let wallet = created["id"].as_str().unwrap().to_owned();
    let tagged = |reference: &str, amount: &str| {
        walletctl(
            base,
            &[
                "--json",
                "deposit",
                &wallet,
                "--amount",
                amount,
                "--reference",
                reference,
                "--metadata",
                r#"{"source": {"bank": "B-1"}}"#,
            ],
        )
    };
    let first = json_of(tagged("payout-1", "10"));
    assert_eq!(
        (&first["reference"], &first["metadata"]["source"]["bank"]),
        (&json!("payout-1"), &json!("B-1")),
        "{first}"
    );
    json_of(tagged("payout-2", "20"));
    json_of(tagged("payout-3", "30"));
    let out = tagged("payout-1", "40");
    assert!(!out.status.success(), "a reference taken twice");
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("reference_taken"), "{error}");
    let out = walletctl(
        base,
        &["deposit", &wallet, "--amount", "1", "--metadata", "{"],
    );
    assert!(!out.status.success(), "metadata that is not JSON");

    // Two pages of two, newest first; the second from the first's cursor.
    let list = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "transfers",
            "list",
            "--wallet",
            &wallet,
            "--limit",
            "2",
        ];
        args.extend_from_slice(extra);
        json_of(walletctl(base, &args))
    };
    let page = list(&[]);
    let refs = |page: &Value| -> Vec<String> {
        page["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["reference"].as_str().unwrap_or("-").to_owned())
            .collect()
    };
    assert_eq!(refs(&page), ["payout-3", "payout-2"], "{page}");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = list(&["--cursor", &cursor]);
    assert_eq!(refs(&next), ["payout-1"], "{next}");
    assert_eq!(next["next_cursor"], Value::Null);
    let found = list(&["--reference", "payout-2", "--kind", "deposit"]);
    assert_eq!(refs(&found), ["payout-2"]);
    let out = walletctl(base, &["transfers", "list", "--wallet", &wallet]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("ref payout-3"),
        "{text}"
    );
    let out = walletctl(base, &["transfers", "list", "--cursor", "nope"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_cursor"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_balance_as_of_a_time_through_walletctl() {
    let server = Server::walletctl_dev();
    let base = server.url.as_str();
    let http = reqwest::Client::new();
    let wallet = json_of(walletctl(
        base,
        &["--json", "wallet", "create", "--currency", "USD"],
    ));
    let wallet = wallet["id"].as_str().unwrap().to_owned();
    for (amount, total) in [("10", "10.00"), ("5", "15.00")] {
        let deposit = json_of(walletctl(
            base,
            &["--json", "deposit", &wallet, "--amount", amount],
        ));
        assert_eq!(deposit["status"], "SUCCEEDED", "{deposit}");
        settled(&http, base, &wallet, total, SETTLING).await;
    }
    let (_, page) = get(&http, format!("{base}/v1/wallets/{wallet}/entries")).await;
    let entry = |i: usize| {
        let e = &page["entries"][i];
        let at = e["posted_at"].as_str().expect("posted_at");
        (
            at.parse::<chrono::DateTime<chrono::Utc>>().unwrap(),
            e["seq"].clone(),
        )
    };
    let ((second_at, second_seq), (first_at, first_seq)) = (entry(0), entry(1));
    assert!(first_at < second_at, "{page}");
    let between = first_at + (second_at - first_at) / 2;
    // Given with an offset, whose `+` walletctl sends encoded.
    let east = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
    let as_of = between
        .with_timezone(&east)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    assert!(as_of.contains('+'), "{as_of}");

    let then = json_of(walletctl(
        base,
        &["--json", "wallet", "balance", &wallet, "--as-of", &as_of],
    ));
    assert_eq!(
        (&then["balance"], &then["position"], &then["wallet"]),
        (&json!("10.00"), &first_seq, &Value::Null),
        "{then}"
    );
    let echoed: chrono::DateTime<chrono::Utc> = then["as_of"].as_str().unwrap().parse().unwrap();
    assert_eq!(echoed, between, "{then}");

    let now = json_of(walletctl(base, &["--json", "wallet", "balance", &wallet]));
    assert_eq!(
        (
            &now["balance"],
            &now["position"],
            &now["wallet"]["available"]
        ),
        (&json!("15.00"), &second_seq, &json!("15.00")),
        "{now}"
    );
    let out = walletctl(base, &["wallet", "balance", &wallet]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && text.contains("as of      now")
            && text.contains("balance    15.00")
            && text.contains("available  15.00"),
        "{text}"
    );

    let out = walletctl(base, &["wallet", "balance", &wallet, "--as-of", "noon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_query"));
}
