//! `HttpWalletGateway` against the wallet service's router on a loopback
//! socket, and against servers that misbehave.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use rust_decimal::Decimal;
use tokio::net::TcpListener;
use transaction_service::{GatewaySetupError, HttpWalletGateway};
use wallet_core::ids::{CorrelationId, IdempotencyKey, TransferId, WalletId};
use wallet_core::memory::{Embedded, EmbeddedConfig, MemoryTransferStore};
use wallet_core::money::{Amount, Currency};
use wallet_core::outcome::{FailureReason, ReserveOutcome};
use wallet_core::ports::{GatewayError, RandomIds, SystemClock, WalletGateway};
use wallet_core::service::{Parties, TransactionConfig, TransactionService, TransferRequest};
use wallet_core::transfer::{HoldEnd, TransferKind, TransferStatus};
use wallet_core::wallet::{HoldRelease, HoldState, ReserveRequest};
use wallet_http::ServiceToken;

/// Serves `app` on 127.0.0.1 and returns its base URL. The server stops
/// with the test's runtime.
async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The token the wallet service's routers accept here.
fn token() -> ServiceToken {
    ServiceToken::new("gateway-test-token").unwrap()
}

/// The wallet service's routers (public and internal), accepting [`token`].
fn wallet_router(e: &Embedded) -> Router {
    wallet_service::router(e.wallets.clone(), Arc::from([token()]))
}

/// The embedded system with its wallet service on a socket, and a gateway
/// presenting the token.
async fn wallet_server() -> (Embedded, HttpWalletGateway) {
    let e = Embedded::new(EmbeddedConfig::default());
    let base = serve(wallet_router(&e)).await;
    (
        e,
        HttpWalletGateway::new(&base).unwrap().with_token(token()),
    )
}

async fn funded(e: &mut Embedded, amount: &str) -> WalletId {
    let wallet = e.wallets.open(Currency::USD).await.unwrap().id;
    let request = TransferRequest {
        tags: Default::default(),
        key: IdempotencyKey::new(format!("fund-{wallet}")).unwrap(),
        parties: Parties::Deposit(wallet),
        amount: Decimal::from_str(amount).unwrap(),
        currency: None,
    };
    e.transactions.create(request).await.unwrap();
    e.drain().await;
    wallet
}

fn reservation(sender: WalletId, receiver: WalletId, amount: &str) -> ReserveRequest {
    ReserveRequest {
        tags: Default::default(),
        transfer_id: TransferId::from_uuid(uuid::Uuid::now_v7()),
        correlation_id: CorrelationId::from_uuid(uuid::Uuid::now_v7()),
        kind: TransferKind::between(sender, receiver),
        sender_wallet_id: sender,
        receiver_wallet_id: receiver,
        amount: Amount::parse(amount, Currency::USD).unwrap(),
        currency: Currency::USD,
        expires_at: None,
        hold_id: None,
    }
}

/// One reserve through the gateway's batch call.
async fn reserve(
    gateway: &HttpWalletGateway,
    request: &ReserveRequest,
) -> Result<ReserveOutcome, GatewayError> {
    let outcomes = gateway.reserve_batch(std::slice::from_ref(request)).await?;
    assert_eq!(outcomes.len(), 1, "one outcome per request");
    Ok(outcomes[0])
}

#[tokio::test]
async fn a_batch_over_http_is_decided_in_order_with_one_answer_each() {
    let (mut e, gateway) = wallet_server().await;
    let (a, b) = (
        funded(&mut e, "10").await,
        e.wallets.open(Currency::USD).await.unwrap().id,
    );
    let first = reservation(a, b, "6");
    let batch = [
        first.clone(),
        reservation(a, b, "5"),
        reservation(a, b, "4"),
        first.clone(),
        reservation(a, a, "1"),
    ];
    assert_eq!(
        gateway.reserve_batch(&batch).await,
        Ok(vec![
            ReserveOutcome::Reserved,
            ReserveOutcome::Rejected(FailureReason::InsufficientFunds),
            ReserveOutcome::Reserved,
            ReserveOutcome::Reserved,
            ReserveOutcome::Rejected(FailureReason::SameWallet),
        ])
    );
    let wallet = e.wallets.wallet(a).await.unwrap().unwrap();
    assert_eq!(
        (wallet.available.to_string(), wallet.reserved.to_string()),
        ("0.00".into(), "10.00".into())
    );
    assert_eq!(gateway.reserve_batch(&[]).await, Ok(vec![]));
}

#[tokio::test]
async fn holds_are_reserved_captured_and_released_over_http() {
    let (mut e, gateway) = wallet_server().await;
    let (a, b) = (
        funded(&mut e, "10").await,
        e.wallets.open(Currency::USD).await.unwrap().id,
    );
    let in_a_minute = chrono::Utc::now() + chrono::Duration::minutes(1);
    let hold = |amount| ReserveRequest {
        kind: TransferKind::Hold,
        expires_at: Some(in_a_minute),
        ..reservation(a, a, amount)
    };
    let (taken, voided) = (hold("4"), hold("5"));
    let capture = ReserveRequest {
        hold_id: Some(taken.transfer_id),
        ..reservation(a, b, "3")
    };
    let batch = [taken.clone(), voided.clone(), capture.clone()];
    assert_eq!(
        gateway.reserve_batch(&batch).await,
        Ok(vec![ReserveOutcome::Reserved; 3])
    );
    let unknown = TransferId::from_uuid(uuid::Uuid::now_v7());
    let releases = [
        (voided.transfer_id, HoldRelease::Void),
        (taken.transfer_id, HoldRelease::Void),
        (unknown, HoldRelease::Expire),
    ];
    assert_eq!(
        gateway.release_holds(&releases).await,
        Ok(vec![
            Some(HoldState::Ended(HoldEnd::Voided)),
            Some(HoldState::Ended(HoldEnd::Captured(capture.transfer_id))),
            None,
        ])
    );
    let wallet = e.wallets.wallet(a).await.unwrap().unwrap();
    assert_eq!(
        (wallet.available.to_string(), wallet.reserved.to_string()),
        ("7.00".into(), "3.00".into()),
        "the void and the capture's rest went back; the capture stays reserved"
    );
}

#[tokio::test]
async fn the_largest_batch_fits_the_wallet_services_limits_and_a_larger_one_is_refused() {
    let (e, gateway) = wallet_server().await;
    let wallet = e.wallets.open(Currency::USD).await.unwrap().id;
    let system = WalletId::system(Currency::USD);
    let deposits: Vec<ReserveRequest> = (0..wallet_service::MAX_RESERVE_BATCH)
        .map(|_| reservation(system, wallet, "0.01"))
        .collect();
    let outcomes = gateway.reserve_batch(&deposits).await.expect("one call");
    assert_eq!(outcomes, vec![ReserveOutcome::Reserved; deposits.len()]);
    let mut more = deposits.clone();
    more.push(reservation(system, wallet, "0.01"));
    let refused = gateway.reserve_batch(&more).await;
    assert!(
        matches!(&refused, Err(GatewayError::Unavailable(m)) if m.contains("batch_too_large")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_answer_with_the_wrong_number_of_outcomes_is_never_definite() {
    let body = r#"{"outcomes":[{"outcome":"reserved"}]}"#;
    let base =
        serve(Router::new().fallback(any(move || async move { (StatusCode::OK, body) }))).await;
    let gateway = HttpWalletGateway::new(&base).unwrap();
    let someone = WalletId::from_uuid(uuid::Uuid::now_v7());
    let two = [
        reservation(someone, someone, "1"),
        reservation(someone, someone, "2"),
    ];
    let answer = gateway.reserve_batch(&two).await;
    assert!(
        matches!(&answer, Err(GatewayError::Unavailable(m)) if m.contains("1 outcomes to 2 reserves")),
        "{answer:?}"
    );
}

#[tokio::test]
async fn reserve_over_http_holds_once_and_refuses_definitely() {
    let (mut e, gateway) = wallet_server().await;
    let (a, b) = (
        funded(&mut e, "10").await,
        e.wallets.open(Currency::USD).await.unwrap().id,
    );
    let request = reservation(a, b, "6");
    assert_eq!(
        reserve(&gateway, &request).await,
        Ok(ReserveOutcome::Reserved)
    );
    assert_eq!(
        reserve(&gateway, &request).await,
        Ok(ReserveOutcome::Reserved),
        "replay"
    );
    let wallet = e.wallets.wallet(a).await.unwrap().unwrap();
    assert_eq!(
        (wallet.available.to_string(), wallet.reserved.to_string()),
        ("4.00".into(), "6.00".into())
    );
    let poor = reserve(&gateway, &reservation(a, b, "5")).await;
    assert_eq!(
        poor,
        Ok(ReserveOutcome::Rejected(FailureReason::InsufficientFunds))
    );
}

#[tokio::test]
async fn wallet_currency_over_http() {
    let (e, gateway) = wallet_server().await;
    let wallet = e.wallets.open(Currency::BHD).await.unwrap().id;
    assert_eq!(
        gateway.wallet_currency(wallet).await,
        Ok(Some(Currency::BHD))
    );
    let unknown = WalletId::from_uuid(uuid::Uuid::now_v7());
    assert_eq!(gateway.wallet_currency(unknown).await, Ok(None));
}

#[tokio::test]
async fn a_wallet_over_http_is_the_wallet_services_own() {
    let (mut e, gateway) = wallet_server().await;
    let wallet = funded(&mut e, "12.5").await;
    let held = e.wallets.wallet(wallet).await.unwrap();
    assert!(held.is_some());
    assert_eq!(WalletGateway::wallet(&gateway, wallet).await, Ok(held));
    let unknown = WalletId::from_uuid(uuid::Uuid::now_v7());
    assert_eq!(WalletGateway::wallet(&gateway, unknown).await, Ok(None));
}

#[tokio::test]
async fn a_transaction_service_over_http_completes_the_saga() {
    let (mut e, gateway) = wallet_server().await;
    let (a, b) = (
        funded(&mut e, "10").await,
        e.wallets.open(Currency::USD).await.unwrap().id,
    );
    let svc = TransactionService::new(
        MemoryTransferStore::new(),
        gateway,
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        TransactionConfig::default(),
    );
    let request = TransferRequest {
        tags: Default::default(),
        key: IdempotencyKey::new("over-http").unwrap(),
        parties: Parties::Transfer {
            sender: a,
            receiver: b,
        },
        amount: Decimal::from_str("2.5").unwrap(),
        currency: Some(Currency::USD),
    };
    let created = svc.create(request).await.unwrap();
    assert_eq!(created.transfer.status, TransferStatus::Reserved);
    e.drain().await;
    let receiver = e.wallets.wallet(b).await.unwrap().unwrap();
    assert_eq!(receiver.available.to_string(), "2.50");
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts connections and keeps them open without a word.
    let silent = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let timeout = Duration::from_millis(200);
    let gateway = HttpWalletGateway::with_timeout(&format!("http://{addr}"), timeout).unwrap();
    let someone = WalletId::from_uuid(uuid::Uuid::now_v7());
    let started = Instant::now();
    assert_eq!(
        reserve(&gateway, &reservation(someone, someone, "1")).await,
        Err(GatewayError::Timeout)
    );
    assert_eq!(
        gateway.wallet_currency(someone).await,
        Err(GatewayError::Timeout)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the timeout"
    );
    silent.abort();
}

#[tokio::test]
async fn a_closed_port_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let gateway = HttpWalletGateway::new(&format!("http://{addr}")).unwrap();
    let someone = WalletId::from_uuid(uuid::Uuid::now_v7());
    let reserve = reserve(&gateway, &reservation(someone, someone, "1")).await;
    assert!(
        matches!(reserve, Err(GatewayError::Unavailable(_))),
        "{reserve:?}"
    );
    let currency = gateway.wallet_currency(someone).await;
    assert!(
        matches!(currency, Err(GatewayError::Unavailable(_))),
        "{currency:?}"
    );
}

#[tokio::test]
async fn server_errors_and_unexpected_answers_are_never_definite() {
    let answers = [
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":{"code":"internal","message":"x"}}"#,
        ),
        (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance"),
        (StatusCode::BAD_REQUEST, "bad reservation"),
        (StatusCode::NOT_FOUND, "no such route"),
        (StatusCode::OK, "not json"),
    ];
    let someone = WalletId::from_uuid(uuid::Uuid::now_v7());
    for (status, body) in answers {
        let base = serve(Router::new().fallback(any(move || async move { (status, body) }))).await;
        let gateway = HttpWalletGateway::new(&base).unwrap();
        let reserve = reserve(&gateway, &reservation(someone, someone, "1")).await;
        let Err(GatewayError::Unavailable(message)) = reserve else {
            panic!("{status}: {reserve:?}");
        };
        if status != StatusCode::OK {
            assert!(message.contains(body), "the body is quoted: {message}");
        }
        let currency = gateway.wallet_currency(someone).await;
        assert!(
            matches!(currency, Err(GatewayError::Unavailable(_))),
            "{status}: {currency:?}"
        );
    }
}

#[test]
fn base_urls_must_be_http() {
    for bad in ["", "wallet-service:8080", "ftp://host", "mailto:x@y"] {
        let result = HttpWalletGateway::new(bad);
        assert!(
            matches!(result, Err(GatewaySetupError::InvalidUrl(_))),
            "{bad}"
        );
    }
    let gateway = HttpWalletGateway::new("http://127.0.0.1:8081/").unwrap();
    assert_eq!(gateway.base_urls(), ["http://127.0.0.1:8081"]);
    let none = HttpWalletGateway::instances(&[], Duration::from_secs(1));
    assert!(matches!(none, Err(GatewaySetupError::InvalidUrl(_))));
}

#[tokio::test]
async fn calls_take_turns_and_pass_over_an_instance_that_refuses() {
    let mut e = Embedded::new(EmbeddedConfig::default());
    let (a, b) = (
        funded(&mut e, "10").await,
        e.wallets.open(Currency::USD).await.unwrap().id,
    );
    // Two instances of one wallet service (one store), counting calls.
    let calls = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut bases = Vec::new();
    for n in 0..2 {
        let calls = calls.clone();
        let app = wallet_router(&e).layer(axum::middleware::from_fn(
            move |request, next: axum::middleware::Next| {
                calls[n].fetch_add(1, Ordering::SeqCst);
                next.run(request)
            },
        ));
        bases.push(serve(app).await);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let urls = [bases[0].as_str(), closed.as_str(), bases[1].as_str()];
    let gateway = HttpWalletGateway::instances(&urls, Duration::from_secs(2))
        .unwrap()
        .with_token(token());
    for _ in 0..6 {
        assert_eq!(gateway.wallet_currency(a).await, Ok(Some(Currency::USD)));
    }
    let request = reservation(a, b, "4");
    assert_eq!(
        reserve(&gateway, &request).await,
        Ok(ReserveOutcome::Reserved)
    );
    let counts = [
        calls[0].load(Ordering::SeqCst),
        calls[1].load(Ordering::SeqCst),
    ];
    // Turns 0, 1 (refused, so 2), 2, 0, 1 (so 2), 2, then the reserve on 0.
    assert_eq!(counts, [3, 4], "each live instance took its share");
    let (only_closed, timeout) = ([closed.as_str()], Duration::from_secs(2));
    let gateway = HttpWalletGateway::instances(&only_closed, timeout).unwrap();
    let reserve = reserve(&gateway, &request).await;
    assert!(
        matches!(reserve, Err(GatewayError::Unavailable(_))),
        "every instance refused: {reserve:?}"
    );
}

#[tokio::test]
async fn every_call_presents_the_token_and_a_refused_one_stays_ambiguous() {
    let (mut e, gateway) = wallet_server().await;
    let (a, b) = (
        funded(&mut e, "10").await,
        e.wallets.open(Currency::USD).await.unwrap().id,
    );
    // The wallet service's own check (401 without the token) lets both
    // calls through.
    assert_eq!(gateway.wallet_currency(a).await, Ok(Some(Currency::USD)));
    let request = reservation(a, b, "4");
    assert_eq!(
        reserve(&gateway, &request).await,
        Ok(ReserveOutcome::Reserved)
    );
    // Without it, or with another, both are refused: ambiguous, never a
    // definite answer (neither "no such wallet" nor a rejected reserve).
    let base = &gateway.base_urls()[0];
    let wrong = ServiceToken::new("not-the-token").unwrap();
    for refused in [
        HttpWalletGateway::new(base).unwrap(),
        HttpWalletGateway::new(base).unwrap().with_token(wrong),
    ] {
        let currency = refused.wallet_currency(a).await;
        assert!(
            matches!(&currency, Err(GatewayError::Unavailable(m)) if m.contains("401")),
            "{currency:?}"
        );
        let reserved = reserve(&refused, &reservation(a, b, "1")).await;
        assert!(
            matches!(&reserved, Err(GatewayError::Unavailable(m)) if m.contains("401")),
            "{reserved:?}"
        );
    }
    // Nothing moved but the first reserve.
    let wallet = e.wallets.wallet(a).await.unwrap().unwrap();
    assert_eq!(wallet.reserved.to_string(), "4.00");
    // The token never shows in the gateway's Debug print.
    assert!(!format!("{gateway:?}").contains("gateway-test-token"));
}
