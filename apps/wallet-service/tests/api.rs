//! The wallet service's routes over the in-memory adapters. Every refusal
//! is checked for its status, its code, and that nothing changed.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::http::{Method, StatusCode, header};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use wallet_core::event::{Inbound, Outgoing, StampedReserve};
use wallet_core::ids::{CorrelationId, IdempotencyKey, TransferId, WalletId};
use wallet_core::memory::{Embedded, EmbeddedConfig, MemoryWalletStore};
use wallet_core::money::{Amount, Currency};
use wallet_core::outcome::{LedgerOutcome, ReserveOutcome};
use wallet_core::ports::{
    Claim, Clock, IdGenerator, Outbox, OutboxRecord, RandomIds, Refusal, StoreError, SystemClock,
    WalletReads, WalletStore,
};
use wallet_core::service::{Parties, TransferRequest, WalletService};
use wallet_core::transfer::TransferKind;
use wallet_core::wallet::Reservation;
use wallet_core::wallet::{HoldRelease, HoldState, ReserveRequest, Wallet};
use wallet_http::testing::{SystemState, assert_quiet, get, json as json_req, raw, send};
use wallet_http::{MAX_BODY_BYTES, ServiceToken};

/// Every wallet the store holds.
async fn all_wallets(store: &MemoryWalletStore) -> Vec<Wallet> {
    store.wallets_page(None, 1_000).await.unwrap()
}

/// Every reservation the store holds.
async fn all_reservations(store: &MemoryWalletStore) -> Vec<Reservation> {
    store.reservations_page(None, 1_000).await.unwrap()
}

/// What the store's outbox holds unpublished, claimed by a fresh worker
/// far in the future (past any lease).
async fn outbox(store: &MemoryWalletStore) -> Vec<OutboxRecord> {
    let later = SystemClock.now() + chrono::Duration::days(1);
    let claim = Claim::new(RandomIds.worker_id(), later, std::time::Duration::ZERO);
    store.claim(&claim, 1_000).await.unwrap()
}

/// The token the tests' routers accept.
fn token() -> ServiceToken {
    ServiceToken::new("test-token").unwrap()
}

/// The whole service, every request presenting the token as the
/// transaction service's gateway does.
fn service<S: WalletStore + WalletReads>(svc: Arc<WalletService<S>>) -> Router {
    wallet_service::router(svc, Arc::from([token()])).layer(axum::middleware::map_request(
        |mut request: axum::extract::Request| async move {
            let value = token().header_value();
            request.headers_mut().insert(header::AUTHORIZATION, value);
            request
        },
    ))
}

fn system() -> (Embedded, Router) {
    let embedded = Embedded::new(EmbeddedConfig::default());
    let app = service(embedded.wallets.clone());
    (embedded, app)
}

/// A wallet holding `amount`, deposited through the saga.
async fn funded(e: &mut Embedded, currency: Currency, amount: &str) -> WalletId {
    let wallet = e.wallets.open(currency).await.unwrap();
    let request = TransferRequest {
        tags: Default::default(),
        key: IdempotencyKey::new(format!("fund-{}", wallet.id)).unwrap(),
        parties: Parties::Deposit(wallet.id),
        amount: Decimal::from_str(amount).unwrap(),
        currency: None,
    };
    e.transactions.create(request).await.unwrap();
    e.drain().await;
    wallet.id
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

fn post(uri: &str, body: Value) -> axum::http::Request<axum::body::Body> {
    json_req(Method::POST, uri, &body)
}

#[tokio::test]
async fn opening_a_wallet_returns_201_and_the_wallet() {
    let (e, app) = system();
    let response = send(&app, post("/v1/wallets", json!({"currency": "JPY"}))).await;
    assert_eq!(response.status, StatusCode::CREATED);
    let body = &response.body;
    assert_eq!(body["currency"], "JPY");
    assert_eq!(
        (&body["available"], &body["reserved"]),
        (&json!("0"), &json!("0"))
    );
    assert_eq!(body.get("kind"), None, "wallets have no kind");
    let id = body["id"].as_str().unwrap();
    assert_eq!(
        response.header("location"),
        Some(&*format!("/v1/wallets/{id}"))
    );
    let fetched = send(&app, get(&format!("/v1/wallets/{id}"))).await;
    assert_eq!((fetched.status, &fetched.body), (StatusCode::OK, body));
    assert_eq!(all_wallets(e.wallets.store()).await.len(), 1);
}

#[tokio::test]
async fn a_funded_wallet_shows_its_balances_as_strings() {
    let (mut e, app) = system();
    let id = funded(&mut e, Currency::USD, "12.5").await;
    let response = send(&app, get(&format!("/v1/wallets/{id}"))).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body["available"], "12.50");
    assert_eq!(response.body["reserved"], "0.00");
    assert_quiet(&e).await;
}

#[tokio::test]
async fn an_unknown_currency_is_422_and_opens_nothing() {
    let (e, app) = system();
    let before = SystemState::capture(&e).await;
    for code in ["XXX", "usd", ""] {
        send(&app, post("/v1/wallets", json!({"currency": code})))
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_currency");
    }
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn malformed_wallet_bodies_are_400_and_open_nothing() {
    let (e, app) = system();
    let before = SystemState::capture(&e).await;
    let bodies = [
        "{",
        r#"{"currency": 840}"#,
        r#"{}"#,
        r#"{"currency": "USD", "owner": "me"}"#,
        r#"["USD"]"#,
    ];
    for body in bodies {
        let request = raw(Method::POST, "/v1/wallets", Some("application/json"), body);
        send(&app, request)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "malformed_request");
    }
    let untyped = raw(Method::POST, "/v1/wallets", None, r#"{"currency":"USD"}"#);
    send(&app, untyped)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn a_body_over_16_kib_is_413_and_opens_nothing() {
    let (e, app) = system();
    let before = SystemState::capture(&e).await;
    let body = json!({"currency": "USD", "pad": "x".repeat(MAX_BODY_BYTES)});
    send(&app, post("/v1/wallets", body))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let hold_body = json!({"pad": "x".repeat(MAX_BODY_BYTES)});
    send(&app, post("/internal/v1/reserve", hold_body))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn unknown_malformed_and_system_wallet_ids_are_refused() {
    let (mut e, app) = system();
    funded(&mut e, Currency::USD, "1").await;
    let before = SystemState::capture(&e).await;
    let unknown = WalletId::from_uuid(uuid::Uuid::now_v7());
    send(&app, get(&format!("/v1/wallets/{unknown}")))
        .await
        .assert_error(StatusCode::NOT_FOUND, "wallet_not_found");
    // The USD system account took part in the deposit, but has no wallet.
    let system = WalletId::system(Currency::USD);
    assert!(
        !all_wallets(e.wallets.store())
            .await
            .iter()
            .any(|w| w.id == system)
    );
    send(&app, get(&format!("/v1/wallets/{system}")))
        .await
        .assert_error(StatusCode::NOT_FOUND, "wallet_not_found");
    send(&app, get("/v1/wallets/not-a-uuid"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn reserve_holds_funds_once_per_transfer() {
    let (mut e, app) = system();
    let sender = funded(&mut e, Currency::USD, "10").await;
    let receiver = e.wallets.open(Currency::USD).await.unwrap().id;
    let request = serde_json::to_value(reservation(sender, receiver, "4")).unwrap();
    for _ in 0..2 {
        let response = send(&app, post("/internal/v1/reserve", request.clone())).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.body, json!({"outcome": "reserved"}));
    }
    let wallet = e.wallets.wallet(sender).await.unwrap().unwrap();
    assert_eq!(wallet.available.to_string(), "6.00");
    assert_eq!(wallet.reserved.to_string(), "4.00");
    assert_eq!(outbox(e.wallets.store()).await.len(), 1, "one event");
}

#[tokio::test]
async fn reserve_refusals_are_definite_outcomes_and_move_no_money() {
    let (mut e, app) = system();
    let sender = funded(&mut e, Currency::USD, "10").await;
    let receiver = e.wallets.open(Currency::USD).await.unwrap().id;
    let eur = e.wallets.open(Currency::EUR).await.unwrap().id;
    let unknown = WalletId::from_uuid(uuid::Uuid::now_v7());
    let before = SystemState::capture(&e).await;
    let cases = [
        (reservation(sender, receiver, "10.01"), "insufficient_funds"),
        (reservation(sender, unknown, "1"), "wallet_not_found"),
        (reservation(sender, eur, "1"), "currency_mismatch"),
        (reservation(sender, sender, "1"), "same_wallet"),
    ];
    for (request, reason) in cases {
        let body = serde_json::to_value(&request).unwrap();
        let response = send(&app, post("/internal/v1/reserve", body)).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(
            response.body,
            json!({"outcome": "rejected", "reason": reason})
        );
    }
    let after = SystemState::capture(&e).await;
    assert_eq!(after.wallets, before.wallets);
    assert_eq!(after.entries, before.entries);
    assert_eq!(after.wallet_events, before.wallet_events);
    assert!(outbox(e.wallets.store()).await.is_empty());
}

#[tokio::test]
async fn a_system_account_is_refused_as_the_sender_of_a_transfer_whoever_asks() {
    let (mut e, app) = system();
    let alice = funded(&mut e, Currency::USD, "10").await;
    let bob = e.wallets.open(Currency::USD).await.unwrap().id;
    let system = WalletId::system(Currency::USD);
    let minted = ReserveRequest {
        kind: TransferKind::Transfer,
        ..reservation(system, bob, "1000")
    };
    let before = SystemState::capture(&e).await;
    let response = send(
        &app,
        post(
            "/internal/v1/reserve",
            serde_json::to_value(&minted).unwrap(),
        ),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.body,
        json!({"outcome": "rejected", "reason": "wallet_not_found"})
    );
    let after = SystemState::capture(&e).await;
    assert_eq!(after.wallets, before.wallets);
    assert!(outbox(e.wallets.store()).await.is_empty(), "no event");

    // In a batch, that request alone is refused, with its own outcome.
    let batch = [
        reservation(alice, bob, "4"),
        ReserveRequest {
            kind: TransferKind::Transfer,
            ..reservation(system, alice, "500")
        },
        reservation(system, bob, "2"),
    ];
    assert_eq!(batch[2].kind, TransferKind::Deposit);
    let response = send(
        &app,
        post("/internal/v1/reserve-batch", json!({ "requests": batch })),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.body,
        json!({"outcomes": [
            {"outcome": "reserved"},
            {"outcome": "rejected", "reason": "wallet_not_found"},
            {"outcome": "reserved"},
        ]})
    );
    let reservations = all_reservations(e.wallets.store()).await;
    let refused = reservations
        .iter()
        .find(|r| r.request.transfer_id == batch[1].transfer_id)
        .expect("the refusal is recorded");
    assert_eq!(refused.request.kind, TransferKind::Transfer);
    let events: Vec<_> = outbox(e.wallets.store())
        .await
        .into_iter()
        .map(|record| match record.item {
            Outgoing::Event(event) => event.transfer_id,
            other => panic!("not an event: {other:?}"),
        })
        .collect();
    assert_eq!(
        events,
        [batch[0].transfer_id, batch[2].transfer_id],
        "the two reserves' events, none for the refusal"
    );
    let alice_now = e.wallets.wallet(alice).await.unwrap().unwrap();
    assert_eq!(alice_now.available.to_string(), "6.00");
}

#[tokio::test]
async fn a_reserve_request_must_say_its_kind() {
    let (mut e, app) = system();
    let sender = funded(&mut e, Currency::USD, "10").await;
    let receiver = e.wallets.open(Currency::USD).await.unwrap().id;
    let before = SystemState::capture(&e).await;
    let mut unsaid = serde_json::to_value(reservation(sender, receiver, "1")).unwrap();
    unsaid.as_object_mut().unwrap().remove("kind");
    let mut unknown = serde_json::to_value(reservation(sender, receiver, "1")).unwrap();
    unknown["kind"] = json!("gift");
    for body in [unsaid, unknown] {
        send(&app, post("/internal/v1/reserve", body))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "malformed_request");
    }
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn malformed_reserve_requests_are_400_and_hold_nothing() {
    let (mut e, app) = system();
    let sender = funded(&mut e, Currency::USD, "10").await;
    let receiver = e.wallets.open(Currency::USD).await.unwrap().id;
    let before = SystemState::capture(&e).await;
    let mut number = serde_json::to_value(reservation(sender, receiver, "1")).unwrap();
    number["amount"] = json!(1);
    let mut missing = serde_json::to_value(reservation(sender, receiver, "1")).unwrap();
    missing.as_object_mut().unwrap().remove("transfer_id");
    let mut bad_id = serde_json::to_value(reservation(sender, receiver, "1")).unwrap();
    bad_id["sender_wallet_id"] = json!("nope");
    for body in [number, missing, bad_id, json!("reserve")] {
        send(&app, post("/internal/v1/reserve", body))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "malformed_request");
    }
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn the_internal_wallet_route_tells_the_currency_and_the_balances() {
    let (mut e, app) = system();
    let wallet = funded(&mut e, Currency::KWD, "2.5").await;
    let wallet = e.wallets.wallet(wallet).await.unwrap().unwrap();
    let before = SystemState::capture(&e).await;
    let response = send(&app, get(&format!("/internal/v1/wallets/{}", wallet.id))).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.body,
        json!({
            "id": wallet.id,
            "currency": "KWD",
            "available": "2.500",
            "reserved": "0.000",
            "created_at": wallet.created_at,
            "updated_at": wallet.updated_at,
        })
    );
    let public = send(&app, get(&format!("/v1/wallets/{}", wallet.id))).await;
    assert_eq!(response.body, public.body, "the public route's answer");
    let unknown = WalletId::from_uuid(uuid::Uuid::now_v7());
    send(&app, get(&format!("/internal/v1/wallets/{unknown}")))
        .await
        .assert_error(StatusCode::NOT_FOUND, "wallet_not_found");
    send(&app, get("/internal/v1/wallets/42"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn healthz_unknown_routes_and_wrong_methods() {
    let (e, app) = system();
    let before = SystemState::capture(&e).await;
    let health = send(&app, get("/healthz")).await;
    assert_eq!(
        (health.status, health.body),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    send(&app, get("/v1/nothing"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    send(&app, raw(Method::DELETE, "/v1/wallets", None, ""))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    send(&app, get("/internal/v1/reserve"))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn the_internal_routes_need_an_accepted_token() {
    let mut e = Embedded::new(EmbeddedConfig::default());
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        e.wallets.open(Currency::USD).await.unwrap().id,
    );
    let before = SystemState::capture(&e).await;
    let accepted = Arc::from([ServiceToken::new("old").unwrap(), token()]);
    let app = wallet_service::router(e.wallets.clone(), accepted);
    let body = serde_json::to_value(reservation(a, b, "4")).unwrap();
    let bearing = |value: Option<&str>, mut request: axum::extract::Request| {
        if let Some(value) = value {
            let value = value.parse().unwrap();
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        request
    };
    for refused in [
        None,
        Some("Bearer wrong"),
        Some("test-token"),
        Some("Basic test-token"),
    ] {
        let requests = [
            post("/internal/v1/reserve", body.clone()),
            post(
                "/internal/v1/reserve-batch",
                json!({"requests": [body.clone()]}),
            ),
            get(&format!("/internal/v1/wallets/{a}")),
        ];
        for request in requests {
            let response = send(&app, bearing(refused, request)).await;
            response.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        }
    }
    assert_eq!(SystemState::capture(&e).await, before);
    // Either accepted token (two during a rotation) lets the call through.
    for accepted in ["Bearer test-token", "Bearer old"] {
        let request = get(&format!("/internal/v1/wallets/{a}"));
        let response = send(&app, bearing(Some(accepted), request)).await;
        assert_eq!(response.status, StatusCode::OK, "{accepted}");
    }
    let request = post("/internal/v1/reserve", body);
    let response = send(&app, bearing(Some("Bearer test-token"), request)).await;
    assert_eq!(response.status, StatusCode::OK);
    // The public routes need none.
    let response = send(&app, get(&format!("/v1/wallets/{a}"))).await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn the_public_api_alone_has_no_internal_routes() {
    let e = Embedded::new(EmbeddedConfig::default());
    let app = wallet_http::service_router(wallet_service::api(e.wallets.clone()));
    let wallet = e.wallets.open(Currency::USD).await.unwrap();
    send(&app, get(&format!("/internal/v1/wallets/{}", wallet.id)))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

/// A store whose every operation fails as a database that is down would,
/// while `down` is set.
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryWalletStore,
    down: Arc<AtomicBool>,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl WalletReads for Flaky {
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError> {
        self.check()?;
        self.inner.wallet(id).await
    }
    async fn wallets_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<Wallet>, StoreError> {
        self.check()?;
        self.inner.wallets_page(after, limit).await
    }
    async fn reservations_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Reservation>, StoreError> {
        self.check()?;
        self.inner.reservations_page(after, limit).await
    }
}

#[async_trait]
impl WalletStore for Flaky {
    async fn open_wallet(&self, wallet: &Wallet) -> Result<(), StoreError> {
        self.check()?;
        self.inner.open_wallet(wallet).await
    }
    async fn reserve_batch(
        &self,
        batch: &[StampedReserve],
    ) -> Result<Vec<ReserveOutcome>, StoreError> {
        self.check()?;
        self.inner.reserve_batch(batch).await
    }
    async fn finalize(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: wallet_core::Timestamp,
    ) -> Result<Vec<Refusal>, StoreError> {
        self.check()?;
        self.inner.finalize(batch, now).await
    }
    async fn release_holds(
        &self,
        batch: &[(TransferId, HoldRelease)],
        now: wallet_core::Timestamp,
    ) -> Result<Vec<Option<HoldState>>, StoreError> {
        self.check()?;
        self.inner.release_holds(batch, now).await
    }
}

#[tokio::test]
async fn storage_down_is_503_on_every_route() {
    let store = Flaky::default();
    let svc = Arc::new(WalletService::new(
        store.clone(),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        Arc::default(),
    ));
    let app = service(svc.clone());
    let wallet = svc.open(Currency::USD).await.unwrap();
    store.down.store(true, Ordering::SeqCst);
    let other = WalletId::from_uuid(uuid::Uuid::now_v7());
    let requests = [
        post("/v1/wallets", json!({"currency": "USD"})),
        get(&format!("/v1/wallets/{}", wallet.id)),
        get(&format!("/internal/v1/wallets/{}", wallet.id)),
        post(
            "/internal/v1/reserve",
            serde_json::to_value(reservation(wallet.id, other, "1")).unwrap(),
        ),
        post(
            "/internal/v1/release-holds",
            json!({"requests": [{"hold_id": other.to_string(), "release": "void"}]}),
        ),
    ];
    for request in requests {
        send(&app, request)
            .await
            .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    assert_eq!(
        all_wallets(&store.inner).await,
        vec![wallet],
        "nothing written"
    );
    assert!(all_reservations(&store.inner).await.is_empty());
}
