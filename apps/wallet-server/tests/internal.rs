//! The wallet service's internal routes as the process serves them: apart
//! from the public ones, refused without the services' token, each refusal
//! counted; and the token kept out of printed settings.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use clap::Parser;
use wallet_core::memory::{Embedded, EmbeddedConfig};
use wallet_core::money::Currency;
use wallet_http::ServiceToken;
use wallet_http::testing::{get, send};
use wallet_server::settings::{Internal, WalletLink};
use wallet_server::telemetry::Metrics;

/// The value of the sample `name`, if any.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn bearing(value: &str, mut request: Request) -> Request {
    let value = value.parse().unwrap();
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request
}

// One test: the recorder is process-wide.
#[tokio::test]
async fn internal_routes_live_apart_and_need_the_token() {
    // The test installs the recorder, as a binary does: the library never.
    let (recorder, metrics) = Metrics::recorder().unwrap();
    ::metrics::set_global_recorder(recorder).unwrap();
    wallet_server::telemetry::describe_metrics();
    let e = Embedded::new(EmbeddedConfig::default());
    let wallet = e.wallets.open(Currency::USD).await.unwrap().id;
    let path = format!("/internal/v1/wallets/{wallet}");
    let accepted: Arc<[ServiceToken]> = Arc::from([ServiceToken::new("s3cret").unwrap()]);
    // The two listeners' routes, as the wallet service binary splits them.
    let public = wallet_http::service_router(wallet_service::api(e.wallets.clone()));
    let internal = wallet_http::service_router(wallet_service::internal(
        e.wallets.clone(),
        accepted.clone(),
    ));

    for request in [get(&path), bearing("Bearer s3cret", get(&path))] {
        send(&public, request)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    send(&internal, get(&path))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    send(&internal, bearing("Bearer s3cre", get(&path)))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    let answer = send(&internal, bearing("Bearer s3cret", get(&path))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["currency"], "USD");

    let text = metrics.render();
    assert_eq!(
        sample(&text, "wallet_internal_unauthorized_total"),
        Some(2.0),
        "{text}"
    );
}

#[test]
fn printed_settings_never_show_a_token() {
    let internal = Internal {
        internal_listen: None,
        internal_token: vec![ServiceToken::new("s3cret-a").unwrap()],
        internal_token_file: None,
        internal_tls_cert: None,
        internal_tls_key: None,
    };
    #[derive(Debug, Parser)]
    struct Caller {
        #[command(flatten)]
        wallet: WalletLink,
    }
    let caller = Caller::try_parse_from(["caller", "--wallet-service-token", "s3cret-b"]).unwrap();
    assert!(caller.wallet.wallet_service_token.is_some());
    let printed = format!("{internal:?} {internal:#?} {caller:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("***"), "{printed}");
}
