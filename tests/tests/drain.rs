//! A service told to stop (SIGTERM) drains before it goes: `/readyz`
//! answers 503 `draining` at once, so a load balancer takes it out, while
//! it keeps serving for its drain delay; then it stops taking connections,
//! finishes its work, flushes its producer and exits cleanly. A transfer
//! accepted during the drain completes once the service is back.

use std::time::{Duration, Instant};

use serde_json::json;
use wallet_e2e::stack::{Stack, TRANSACTION, call};

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_service_reports_draining_serves_its_drain_and_exits_cleanly() {
    let mut stack = Stack::start(1).await;
    let wallets = stack.funded_wallets(2, "10.00").await;
    let addr = stack.services[TRANSACTION][0].addr.clone();
    let http = reqwest::Client::new();
    let ready = call(http.get(format!("http://{addr}/readyz"))).await;
    assert_eq!(ready.map(|(status, _)| status), Some(200));

    stack.services[TRANSACTION][0].process.ask_to_stop();
    // The stack leaves DRAIN_DELAY_MS at its default (2 s): the first
    // probe after the signal finds the service draining.
    let deadline = Instant::now() + Duration::from_secs(5);
    let draining = loop {
        let answer = call(http.get(format!("http://{addr}/readyz"))).await;
        if let Some((503, body)) = &answer {
            break body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered 503 after SIGTERM: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(draining["status"], "draining", "{draining}");

    // Still serving: a transfer sent straight to the draining instance.
    let transfer = http
        .post(format!("http://{addr}/v1/transfers"))
        .header("Idempotency-Key", "during-the-drain")
        .json(&json!({
            "sender_wallet_id": wallets[0],
            "receiver_wallet_id": wallets[1],
            "amount": "2.50",
        }));
    let (status, body) = call(transfer).await.expect("served while draining");
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("an id").to_owned();

    let service = &mut stack.services[TRANSACTION][0];
    let exit = service.process.wait_exit(Duration::from_secs(30));
    assert!(
        exit.is_some_and(|status| status.success()),
        "the service should exit cleanly after its drain: {exit:?}"
    );
    let refused = http.get(format!("http://{addr}/healthz")).send().await;
    assert!(refused.is_err(), "nothing listens once it has exited");

    service.restart();
    let report = stack
        .assert_consistent(&[id], &wallets, Duration::from_secs(60))
        .await;
    assert!(report.contains("SUCCEEDED"), "{report}");
    stack.stop();
}
