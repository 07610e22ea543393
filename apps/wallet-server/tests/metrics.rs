//! The metrics a service exposes: the core's saga counters and the HTTP
//! request counters, rendered in Prometheus text form.

use std::str::FromStr;

use axum::Router;
use axum::http::Method;
use rust_decimal::Decimal;
use serde_json::json;
use wallet_core::ids::IdempotencyKey;
use wallet_core::memory::{Embedded, EmbeddedConfig};
use wallet_core::money::Currency;
use wallet_core::service::{Parties, TransferRequest};
use wallet_http::testing::{get, json as request, send};
use wallet_server::telemetry::{Metrics, track_requests};

/// The value of the sample `name` (with its labels, as rendered), if any.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn deposit(wallet: wallet_core::ids::WalletId, amount: &str) -> TransferRequest {
    TransferRequest {
        tags: Default::default(),
        key: IdempotencyKey::new(uuid::Uuid::now_v7().to_string()).unwrap(),
        parties: Parties::Deposit(wallet),
        amount: Decimal::from_str(amount).unwrap(),
        currency: None,
    }
}

// One test: the recorder is process-wide.
#[tokio::test]
async fn saga_and_request_metrics_are_counted() {
    // The test installs the recorder, as a binary does: the library never.
    let (recorder, metrics) = Metrics::recorder().unwrap();
    ::metrics::set_global_recorder(recorder).unwrap();
    wallet_server::telemetry::describe_metrics();
    let mut e = Embedded::new(EmbeddedConfig::default());
    let a = e
        .wallets
        .open(Currency::parse("USD").unwrap())
        .await
        .unwrap()
        .id;
    let b = e
        .wallets
        .open(Currency::parse("USD").unwrap())
        .await
        .unwrap()
        .id;
    e.transactions.create(deposit(a, "5.00")).await.unwrap();
    e.drain().await;
    let refused = TransferRequest {
        parties: Parties::Transfer {
            sender: b,
            receiver: a,
        },
        ..deposit(a, "1.00")
    };
    e.transactions.create(refused).await.unwrap();
    e.drain().await;

    let text = metrics.render();
    let count = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} in:\n{text}"));
    assert_eq!(
        count(r#"wallet_saga_transitions_total{to="RESERVED"}"#),
        1.0
    );
    assert_eq!(
        count(r#"wallet_saga_transitions_total{to="SUCCEEDED"}"#),
        1.0
    );
    assert_eq!(count(r#"wallet_saga_transitions_total{to="FAILED"}"#), 1.0);
    assert_eq!(
        count(r#"wallet_relay_published_total{group="wallet-service"}"#),
        1.0
    );
    assert_eq!(
        count(r#"wallet_events_handled_total{group="ledger-service"}"#),
        1.0
    );
    assert_eq!(
        count(r#"wallet_events_handled_total{group="transaction-service"}"#),
        1.0
    );

    // Requests, by route template and status.
    let app: Router = track_requests(wallet_service::api(e.wallets.clone()));
    let opened = send(
        &app,
        request(Method::POST, "/v1/wallets", &json!({"currency": "USD"})),
    )
    .await;
    let id = opened.body["id"].as_str().unwrap();
    send(&app, get(&format!("/v1/wallets/{id}"))).await;
    send(&app, get(&format!("/v1/wallets/{}", uuid::Uuid::now_v7()))).await;
    let text = metrics.render();
    let count = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name} in:\n{text}"));
    assert_eq!(
        count(r#"http_requests_total{route="/v1/wallets/{id}",method="GET",status="200"}"#),
        1.0
    );
    assert_eq!(
        count(r#"http_requests_total{route="/v1/wallets/{id}",method="GET",status="404"}"#),
        1.0
    );
    assert_eq!(
        count(r#"http_request_duration_seconds_count{route="/v1/wallets",method="POST"}"#),
        1.0
    );
}
