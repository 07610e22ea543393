//! The three services as real processes on PostgreSQL (three fresh
//! databases) and a broker of their own, behind the repository's nginx
//! configuration, driven over HTTP through the gateway only
//! ([`Stack`](wallet_e2e::stack::Stack)).

use serde_json::{Value, json};
use std::time::{Duration, Instant};

use wallet_e2e::stack::{NAMES, SESSION_TIMEOUT, Stack, TRANSACTION, WALLET};

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    wallet_e2e::stack::call(request).await.expect("an answer")
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let request = self
            .http
            .post(url)
            .header("Idempotency-Key", key)
            .json(&body);
        call(request).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        call(self.http.get(url)).await
    }

    async fn open(&self) -> String {
        let (status, wallet) = self
            .post("/v1/wallets", "-", json!({"currency": "USD"}))
            .await;
        assert_eq!(status, 201, "{wallet}");
        wallet["id"].as_str().unwrap().to_owned()
    }

    /// The transfer once SUCCEEDED or FAILED (the server long-polls).
    async fn terminal(&self, transfer: &Value) -> Value {
        let id = transfer["id"].as_str().expect("a transfer id");
        for _ in 0..6 {
            let (status, now) = self.get(&format!("/v1/transfers/{id}?wait_ms=10000")).await;
            assert_eq!(status, 200, "{now}");
            if now["status"] == "SUCCEEDED" || now["status"] == "FAILED" {
                return now;
            }
        }
        panic!("transfer {id} not terminal after a minute");
    }

    async fn balances(&self, wallet: &str) -> (String, String) {
        let (status, w) = self.get(&format!("/v1/wallets/{wallet}")).await;
        assert_eq!(status, 200, "{w}");
        let text = |v: &Value| v.as_str().unwrap().to_owned();
        (text(&w["available"]), text(&w["reserved"]))
    }

    /// Waits until `wallet` shows `available` with nothing reserved. Up to
    /// 40 s: a wallet service restarted after a kill gets its partitions
    /// only once the broker has given up on the killed member (the 10 s
    /// session timeout).
    async fn settled(&self, wallet: &str, available: &str) {
        let within = std::time::Duration::from_secs(40);
        wallet_e2e::stack::settled(&self.http, &self.base, wallet, available, within).await;
    }
}

/// The Prometheus text of the service at `addr` (its own address), once it
/// holds a sample starting with `sample` (within 30 s: gauges are read
/// every 5 s).
async fn metrics_with(http: &reqwest::Client, addr: &str, sample: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let response = http.get(format!("http://{addr}/metrics")).send().await;
        let text = match response {
            Ok(response) if response.status() == 200 => response.text().await.unwrap_or_default(),
            _ => String::new(),
        };
        if text.lines().any(|line| line.starts_with(sample)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {sample} in http://{addr}/metrics within 30 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts that every metric family of `text` (each `# TYPE` line) has a
/// `# HELP` line, and returns how many families there are.
fn assert_described(service: &str, text: &str) -> usize {
    let names = |prefix: &str| -> Vec<String> {
        text.lines()
            .filter_map(|line| line.strip_prefix(prefix)?.split(' ').next())
            .map(str::to_owned)
            .collect()
    };
    let (families, helped) = (names("# TYPE "), names("# HELP "));
    let undescribed: Vec<&String> = families.iter().filter(|f| !helped.contains(f)).collect();
    assert!(
        undescribed.is_empty(),
        "{service} exports metrics without a HELP line: {undescribed:?}\n{text}"
    );
    families.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_system_through_its_gateway() {
    let mut stack = Stack::start(1).await;
    let c = Client {
        http: reqwest::Client::new(),
        base: stack.base.clone(),
    };

    // Wallets, a deposit, a transfer.
    let (a, b) = (c.open().await, c.open().await);
    let (status, deposit) = c
        .post(
            &format!("/v1/wallets/{a}/deposits"),
            "d-1",
            json!({"amount": "100.00"}),
        )
        .await;
    assert_eq!(status, 202, "{deposit}");
    assert_eq!(c.terminal(&deposit).await["status"], "SUCCEEDED");
    c.settled(&a, "100.00").await;
    let body = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "30.25"});
    let (status, first) = c.post("/v1/transfers", "t-1", body.clone()).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(c.terminal(&first).await["status"], "SUCCEEDED");
    c.settled(&a, "69.75").await;
    c.settled(&b, "30.25").await;
    let (status, entries) = c.get(&format!("/v1/wallets/{b}/entries")).await;
    assert_eq!(status, 200);
    let entries = entries["entries"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["direction"], "credit");
    assert_eq!(entries[0]["amount"], "30.25");
    assert_eq!(entries[0]["transfer_id"], first["id"]);

    // The same key: the first answer again; with another body: 422.
    let (status, replay) = c.post("/v1/transfers", "t-1", body.clone()).await;
    assert_eq!(status, 202);
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(
        replay["status"], first["status"],
        "the first response, not today's"
    );
    let other = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "1.00"});
    let (status, reused) = c.post("/v1/transfers", "t-1", other).await;
    assert_eq!(
        (status, reused["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );

    // Insufficient funds: 422, nothing moves.
    let too_much = json!({"sender_wallet_id": b, "receiver_wallet_id": a, "amount": "500.00"});
    let (status, refused) = c.post("/v1/transfers", "t-2", too_much).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (422, Some("insufficient_funds"))
    );
    assert_eq!(
        c.balances(&a).await,
        ("69.75".to_owned(), "0.00".to_owned())
    );
    assert_eq!(
        c.balances(&b).await,
        ("30.25".to_owned(), "0.00".to_owned())
    );

    // Unknown wallets.
    let nobody = "0192f0c0-0000-7000-8000-000000000099";
    let (status, missing) = c.get(&format!("/v1/wallets/{nobody}")).await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("wallet_not_found"))
    );
    let to_nobody = json!({"sender_wallet_id": a, "receiver_wallet_id": nobody, "amount": "1.00"});
    let (status, _) = c.post("/v1/transfers", "t-3", to_nobody).await;
    assert_eq!(status, 404);
    let (status, none) = c.get(&format!("/v1/wallets/{nobody}/entries")).await;
    assert_eq!(
        (status, none["error"]["code"].as_str()),
        (404, Some("wallet_not_found"))
    );
    let fresh = c.open().await;
    let (status, empty) = c.get(&format!("/v1/wallets/{fresh}/entries")).await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(empty["entries"], json!([]));

    // The ledger's balance as of a time between two deposits counts the
    // first only; now, once quiet, it agrees with the wallet service's.
    let saver = c.open().await;
    for (key, amount, total) in [("s-1", "10.00", "10.00"), ("s-2", "5.00", "15.00")] {
        let path = format!("/v1/wallets/{saver}/deposits");
        let (status, deposit) = c.post(&path, key, json!({"amount": amount})).await;
        assert_eq!(status, 202, "{deposit}");
        assert_eq!(c.terminal(&deposit).await["status"], "SUCCEEDED");
        c.settled(&saver, total).await;
    }
    let (_, page) = c.get(&format!("/v1/wallets/{saver}/entries")).await;
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
    let as_of = between.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let balance = format!("/v1/wallets/{saver}/balance");
    let (status, then) = c.get(&format!("{balance}?as_of={as_of}")).await;
    assert_eq!(status, 200, "{then}");
    assert_eq!(
        (
            &then["balance"],
            &then["position"],
            &then["currency"],
            &then["wallet"]
        ),
        (&json!("10.00"), &first_seq, &json!("USD"), &Value::Null),
        "{then}"
    );
    let (status, now) = c.get(&balance).await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(
        (&now["balance"], &now["position"], &now["as_of"]),
        (&json!("15.00"), &second_seq, &Value::Null),
        "{now}"
    );
    assert_eq!(
        (&now["wallet"]["available"], &now["wallet"]["reserved"]),
        (&json!("15.00"), &json!("0.00")),
        "the ledger and the wallet service agree once quiet: {now}"
    );
    let (status, bad) = c.get(&format!("{balance}?as_of=soon")).await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let (status, none) = c.get(&format!("/v1/wallets/{nobody}/balance")).await;
    assert_eq!(
        (status, none["error"]["code"].as_str()),
        (404, Some("wallet_not_found"))
    );
    let (status, refused) = c.post(&balance, "-", json!({})).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{refused}"
    );

    // Abuse limits at the edge: a gateway in front of the same services
    // with a tight limit per client address answers 429 in the error
    // shape, with Retry-After, once the burst is spent.
    let addr = |service: usize| vec![stack.services[service][0].addr.clone()];
    let limits = "limit_req_zone $binary_remote_addr zone=per_client:1m rate=1r/s;\n\
                  limit_req zone=per_client burst=3 nodelay;\n\
                  limit_conn_zone $binary_remote_addr zone=client_connections:1m;\n\
                  limit_conn client_connections 64;\n";
    let (_limited, limited) = wallet_e2e::start_gateway_limited(
        &addr(wallet_e2e::stack::TRANSACTION),
        &addr(WALLET),
        &addr(wallet_e2e::stack::LEDGER),
        limits,
    );
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = c
            .http
            .get(format!("{limited}/v1/wallets/{a}"))
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let body: Value = response.json().await.expect("JSON");
        if status == 429 {
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            assert_eq!(retry_after.as_ref().map(|v| v.as_bytes()), Some(&b"1"[..]));
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429, 429, 429],
        "one request and a burst of three pass, the rest are refused at once"
    );

    // What the gateway does not expose.
    let token = stack.internal_token.clone();
    let wallet = &stack.services[WALLET][0];
    for path in [
        "/internal/v1/wallets/x",
        "/metrics",
        "/readyz",
        "/openapi.json",
    ] {
        let (status, body) = c.get(path).await;
        assert_eq!(status, 404, "{path} through the gateway: {body}");
    }
    let (status, _) = c.post("/internal/v1/reserve", "-", json!({})).await;
    assert_eq!(status, 404, "internal reserve through the gateway");
    // ... while the services serve them on their own addresses.
    let direct = format!("http://{}", wallet.addr);
    metrics_with(&c.http, &wallet.addr, "http_requests_total").await;
    let (status, ready) = call(c.http.get(format!("{direct}/readyz"))).await;
    assert_eq!(status, 200, "{ready}");
    // The wallet service's internal routes: not on its public address, and
    // on their own only with the services' token.
    let currency = |base: &str| format!("{base}/internal/v1/wallets/{a}");
    let (status, body) = call(c.http.get(currency(&direct))).await;
    assert_eq!(status, 404, "internal route on the public address: {body}");
    let internal = format!("http://{}", wallet.internal.as_ref().unwrap());
    let (status, body) = call(c.http.get(currency(&internal))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let wrong = c.http.get(currency(&internal)).bearer_auth("wrong");
    assert_eq!(call(wrong).await.0, 401);
    let right = c.http.get(currency(&internal)).bearer_auth(&token);
    let (status, body) = call(right).await;
    assert_eq!(
        (status, body["currency"].as_str()),
        (200, Some("USD")),
        "{body}"
    );
    metrics_with(
        &c.http,
        &wallet.addr,
        "wallet_internal_unauthorized_total 2",
    )
    .await;

    // Every metric each service exports is described.
    let waited_for = [
        "wallet_transfers_unfinished{",
        "wallet_loop_up{",
        "wallet_loop_up{",
    ];
    for (s, sample) in waited_for.into_iter().enumerate() {
        let service = &stack.services[s][0];
        let text = metrics_with(&c.http, &service.addr, sample).await;
        let families = assert_described(NAMES[s], &text);
        assert!(
            families >= 10,
            "{} exports {families} families:\n{text}",
            NAMES[s]
        );
    }

    // The wallet service down: transfers are accepted and stay INITIATED
    // (the reserve's answer is unknown, never taken for a refusal), then
    // complete once it is back.
    stack.services[WALLET][0].process.kill();
    let down = Instant::now();
    let late = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "1.00"});
    let (status, pending) = c.post("/v1/transfers", "t-4", late).await;
    assert_eq!(status, 202, "{pending}");
    assert_eq!(pending["status"], "INITIATED");
    let id = pending["id"].as_str().unwrap().to_owned();
    let (_, still) = c.get(&format!("/v1/transfers/{id}")).await;
    assert_eq!(still["status"], "INITIATED");
    // The transaction service counts it among its unfinished transfers.
    let transactions = stack.services[TRANSACTION][0].addr.clone();
    let unfinished = r#"wallet_transfers_unfinished{status="INITIATED",age="lt_1m"}"#;
    metrics_with(&c.http, &transactions, &format!("{unfinished} 1")).await;
    // Back after the broker has dropped the killed member from its group
    // (its 10 s session timeout), as an orchestrator's restart delay would
    // have it; a member joining earlier waits for that rebalance.
    tokio::time::sleep(SESSION_TIMEOUT.saturating_sub(down.elapsed())).await;
    stack.services[WALLET][0].restart();
    assert_eq!(c.terminal(&pending).await["status"], "SUCCEEDED");
    c.settled(&a, "68.75").await;
    c.settled(&b, "31.25").await;
    metrics_with(&c.http, &transactions, &format!("{unfinished} 0")).await;
    assert!(stack.services[WALLET][0].process.running());
    stack.stop();
}
