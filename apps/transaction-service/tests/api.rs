//! The transaction service's routes over the in-memory adapters. Every
//! refusal is checked for its status, its code, and that nothing changed.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::http::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio::sync::Notify;
use wallet_core::ids::{IdempotencyKey, TransferId, WalletId};
use wallet_core::memory::{Embedded, EmbeddedConfig, MemoryTransferStore, MemoryWalletService};
use wallet_core::money::Currency;
use wallet_core::outcome::ReserveOutcome;
use wallet_core::ports::{GatewayError, RandomIds, SystemClock, TransferReads, WalletGateway};
use wallet_core::service::{Parties, TransactionConfig, TransactionService, TransferRequest};
use wallet_core::transfer::{Transfer, TransferStatus};
use wallet_core::wallet::{HoldRelease, HoldState, ReserveRequest, Wallet};
use wallet_http::MAX_BODY_BYTES;
use wallet_http::testing::{SystemState, TestResponse, assert_quiet, get, post_keyed, raw, send};

fn system() -> (Embedded, Router) {
    let embedded = Embedded::new(EmbeddedConfig::default());
    let app = transaction_service::router(embedded.transactions.clone());
    (embedded, app)
}

fn new_key() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn unknown_wallet() -> WalletId {
    WalletId::from_uuid(uuid::Uuid::now_v7())
}

/// A wallet holding `amount`, deposited through the core and drained.
/// Every transfer the store holds.
async fn all_transfers(store: &MemoryTransferStore) -> Vec<Transfer> {
    store.transfers_page(None, 1_000).await.unwrap()
}

async fn funded(e: &mut Embedded, currency: Currency, amount: &str) -> WalletId {
    let wallet = e.wallets.open(currency).await.unwrap().id;
    let request = TransferRequest {
        tags: Default::default(),
        key: IdempotencyKey::new(new_key()).unwrap(),
        parties: Parties::Deposit(wallet),
        amount: Decimal::from_str(amount).unwrap(),
        currency: None,
    };
    e.transactions.create(request).await.unwrap();
    e.drain().await;
    wallet
}

async fn empty(e: &Embedded, currency: Currency) -> WalletId {
    e.wallets.open(currency).await.unwrap().id
}

fn transfer(sender: WalletId, receiver: WalletId, amount: Value) -> Value {
    json!({"sender_wallet_id": sender, "receiver_wallet_id": receiver, "amount": amount})
}

async fn post(app: &Router, uri: &str, key: Option<&str>, body: &Value) -> TestResponse {
    send(app, post_keyed(uri, key, body)).await
}

fn deposits(wallet: WalletId) -> String {
    format!("/v1/wallets/{wallet}/deposits")
}

fn withdrawals(wallet: WalletId) -> String {
    format!("/v1/wallets/{wallet}/withdrawals")
}

async fn available(e: &Embedded, wallet: WalletId) -> String {
    let wallet = e.wallets.wallet(wallet).await.unwrap().unwrap();
    wallet.available.to_string()
}

#[tokio::test]
async fn a_transfer_is_accepted_then_succeeds() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "100").await,
        empty(&e, Currency::USD).await,
    );
    let created = post(
        &app,
        "/v1/transfers",
        Some("t-1"),
        &transfer(a, b, json!("25.5")),
    )
    .await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    let body = &created.body;
    let fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let expected = [
        "amount",
        "correlation_id",
        "created_at",
        "currency",
        "failure_reason",
        "hold_id",
        "id",
        "kind",
        "metadata",
        "receiver_wallet_id",
        "reference",
        "refund_of",
        "sender_wallet_id",
        "status",
        "updated_at",
    ];
    assert_eq!(fields, expected, "no internal field leaks");
    assert_eq!(body["status"], "RESERVED");
    assert_eq!(body["failure_reason"], Value::Null);
    assert_eq!(
        (&body["amount"], &body["currency"]),
        (&json!("25.50"), &json!("USD"))
    );
    assert_eq!(body["kind"], "transfer");
    assert_eq!(
        (&body["sender_wallet_id"], &body["receiver_wallet_id"]),
        (&json!(a), &json!(b))
    );
    let id = body["id"].as_str().unwrap();
    assert_eq!(
        created.header("location"),
        Some(&*format!("/v1/transfers/{id}"))
    );
    assert_eq!(created.header("idempotent-replayed"), None);
    e.drain().await;
    let fetched = send(&app, get(&format!("/v1/transfers/{id}"))).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["status"], "SUCCEEDED");
    assert_eq!(
        (available(&e, a).await, available(&e, b).await),
        ("74.50".into(), "25.50".into())
    );
    assert_quiet(&e).await;
}

#[tokio::test]
async fn deposits_and_withdrawals_go_through_the_system_account() {
    let (mut e, app) = system();
    let wallet = empty(&e, Currency::JPY).await;
    let system = WalletId::system(Currency::JPY);
    let deposit = post(
        &app,
        &deposits(wallet),
        Some("d-1"),
        &json!({"amount": "500"}),
    )
    .await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED, "{}", deposit.body);
    assert_eq!(deposit.body["kind"], "deposit");
    assert_eq!(deposit.body["sender_wallet_id"], json!(system));
    e.drain().await;
    let body = json!({"amount": "120", "currency": "JPY"});
    let withdrawal = post(&app, &withdrawals(wallet), Some("w-1"), &body).await;
    assert_eq!(
        withdrawal.status,
        StatusCode::ACCEPTED,
        "{}",
        withdrawal.body
    );
    assert_eq!(withdrawal.body["kind"], "withdrawal");
    assert_eq!(withdrawal.body["receiver_wallet_id"], json!(system));
    e.drain().await;
    assert_eq!(available(&e, wallet).await, "380");
    assert_quiet(&e).await;
}

#[tokio::test]
async fn an_amount_as_a_json_number_is_422_and_changes_nothing() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let before = SystemState::capture(&e).await;
    for amount in [json!(5), json!(5.5), json!(-1)] {
        let cases = [
            ("/v1/transfers".to_owned(), transfer(a, b, amount.clone())),
            (deposits(a), json!({"amount": amount})),
            (withdrawals(a), json!({"amount": amount})),
        ];
        for (uri, body) in cases {
            let response = post(&app, &uri, Some(&new_key()), &body).await;
            response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount");
            let message = response.body["error"]["message"].as_str().unwrap();
            assert!(message.contains("decimal strings"), "{message}");
        }
    }
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn invalid_amounts_are_422_and_change_nothing() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let yen = empty(&e, Currency::JPY).await;
    let before = SystemState::capture(&e).await;
    let bad = [
        "0",
        "0.00",
        "-1",
        "-0.01",
        "1.001",
        "1000000000000.01",
        "1e3",
        "abc",
        "",
        " 1",
        // One spelling per value: no sign, no leading zero, no bare point,
        // at most three decimals.
        "+1",
        "01",
        ".5",
        "1.",
        "1.0000",
    ];
    for amount in bad {
        let cases = [
            ("/v1/transfers".to_owned(), transfer(a, b, json!(amount))),
            (deposits(a), json!({"amount": amount})),
            (withdrawals(a), json!({"amount": amount})),
        ];
        for (uri, body) in cases {
            post(&app, &uri, Some(&new_key()), &body)
                .await
                .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount");
        }
    }
    post(
        &app,
        &deposits(yen),
        Some(&new_key()),
        &json!({"amount": "1.5"}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn malformed_bodies_are_400_and_change_nothing() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let before = SystemState::capture(&e).await;
    let transfers = [
        json!({"sender_wallet_id": 5, "receiver_wallet_id": b, "amount": "1"}),
        json!({"sender_wallet_id": "nope", "receiver_wallet_id": b, "amount": "1"}),
        json!({"sender_wallet_id": a, "amount": "1"}),
        json!({"sender_wallet_id": a, "receiver_wallet_id": b}),
        json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "1", "memo": "hi"}),
        json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": true}),
        json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": null}),
        json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "1", "currency": 840}),
        json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "1", "idempotency_key": "k"}),
        json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "1", "currency": null}),
        json!({"sender_wallet_id": a.as_uuid().simple().to_string(), "receiver_wallet_id": b, "amount": "1"}),
        json!({"sender_wallet_id": a, "receiver_wallet_id": b.as_uuid().urn().to_string(), "amount": "1"}),
        json!([a, b, "1"]),
    ];
    for body in transfers {
        post(&app, "/v1/transfers", Some(&new_key()), &body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "malformed_request");
    }
    let movements = [
        json!({}),
        json!({"amount": "1", "wallet": a}),
        json!({"amount": ["1"]}),
        json!({"amount": "1", "currency": null}),
        json!({"amount": "1", "currency": ["USD"]}),
    ];
    for body in movements {
        for uri in [deposits(a), withdrawals(a)] {
            post(&app, &uri, Some(&new_key()), &body)
                .await
                .assert_error(StatusCode::BAD_REQUEST, "malformed_request");
        }
    }
    let syntax = raw(
        Method::POST,
        "/v1/transfers",
        Some("application/json"),
        "{\"amount\":",
    );
    send(&app, syntax)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "malformed_request");
    // A member given twice: refused, whichever copy a reader would take.
    let twice = format!(
        r#"{{"sender_wallet_id":"{a}","receiver_wallet_id":"{b}","amount":"1.00","amount":"6.00"}}"#
    );
    let duplicate = raw(
        Method::POST,
        "/v1/transfers",
        Some("application/json"),
        twice,
    );
    let answer = send(&app, duplicate).await;
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("member \"amount\" is given twice")),
        "{:?}",
        answer.body
    );
    answer.assert_error(StatusCode::BAD_REQUEST, "malformed_request");
    let body = transfer(a, b, json!("1")).to_string();
    let untyped = raw(Method::POST, "/v1/transfers", Some("text/plain"), body);
    send(&app, untyped)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn a_body_over_16_kib_is_413_and_changes_nothing() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let before = SystemState::capture(&e).await;
    let mut body = transfer(a, b, json!("1"));
    body["padding"] = json!("k".repeat(MAX_BODY_BYTES));
    post(&app, "/v1/transfers", Some(&new_key()), &body)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let padded = json!({"amount": "1", "padding": "k".repeat(MAX_BODY_BYTES)});
    post(&app, &deposits(a), Some(&new_key()), &padded)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn idempotency_key_rules_are_400_and_change_nothing() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let before = SystemState::capture(&e).await;
    let body = transfer(a, b, json!("1"));
    post(&app, "/v1/transfers", None, &body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "idempotency_key_required");
    for bad in ["has space", &"k".repeat(256), ""] {
        post(&app, "/v1/transfers", Some(bad), &body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    }
    let mut twice = post_keyed("/v1/transfers", Some("one"), &body);
    twice
        .headers_mut()
        .append("idempotency-key", "two".parse().unwrap());
    send(&app, twice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    // A missing key is reported before a bad amount.
    post(&app, &withdrawals(a), None, &json!({"amount": 5}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "idempotency_key_required");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn unknown_and_system_wallets_are_404_and_change_nothing() {
    let (mut e, app) = system();
    let a = funded(&mut e, Currency::USD, "10").await;
    let system = WalletId::system(Currency::USD);
    let before = SystemState::capture(&e).await;
    let cases = [
        (
            "/v1/transfers".to_owned(),
            transfer(unknown_wallet(), a, json!("1")),
        ),
        (
            "/v1/transfers".to_owned(),
            transfer(a, unknown_wallet(), json!("1")),
        ),
        ("/v1/transfers".to_owned(), transfer(a, system, json!("1"))),
        ("/v1/transfers".to_owned(), transfer(system, a, json!("1"))),
        (deposits(unknown_wallet()), json!({"amount": "1"})),
        (withdrawals(unknown_wallet()), json!({"amount": "1"})),
        (deposits(system), json!({"amount": "1"})),
    ];
    for (uri, body) in cases {
        post(&app, &uri, Some(&new_key()), &body)
            .await
            .assert_error(StatusCode::NOT_FOUND, "wallet_not_found");
    }
    for uri in ["/v1/wallets/nope/deposits", "/v1/wallets/123/withdrawals"] {
        post(&app, uri, Some(&new_key()), &json!({"amount": "1"}))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    }
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn same_wallet_and_currency_mismatches_are_422_and_change_nothing() {
    let (mut e, app) = system();
    let usd = funded(&mut e, Currency::USD, "10").await;
    let other_usd = empty(&e, Currency::USD).await;
    let eur = empty(&e, Currency::EUR).await;
    let before = SystemState::capture(&e).await;
    post(
        &app,
        "/v1/transfers",
        Some(&new_key()),
        &transfer(usd, usd, json!("1")),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "same_wallet");
    post(
        &app,
        "/v1/transfers",
        Some(&new_key()),
        &transfer(usd, eur, json!("1")),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch");
    let mut says_eur = transfer(usd, other_usd, json!("1"));
    says_eur["currency"] = json!("EUR");
    post(&app, "/v1/transfers", Some(&new_key()), &says_eur)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch");
    post(
        &app,
        &deposits(usd),
        Some(&new_key()),
        &json!({"amount": "1", "currency": "JPY"}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "currency_mismatch");
    post(
        &app,
        &deposits(usd),
        Some(&new_key()),
        &json!({"amount": "1", "currency": "XXX"}),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "unknown_currency");
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn insufficient_funds_is_422_with_the_failed_transfer() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let before = SystemState::capture(&e).await;
    let body = transfer(a, b, json!("10.01"));
    let refused = post(&app, "/v1/transfers", Some("poor"), &body).await;
    refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    let id = refused.body["error"]["transfer_id"]
        .as_str()
        .expect("transfer id");
    let fetched = send(&app, get(&format!("/v1/transfers/{id}"))).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["status"], "FAILED");
    assert_eq!(fetched.body["failure_reason"], "insufficient_funds");
    let replay = post(&app, "/v1/transfers", Some("poor"), &body).await;
    assert_eq!(
        (replay.status, &replay.body),
        (refused.status, &refused.body)
    );
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    e.drain().await;
    let after = SystemState::capture(&e).await;
    assert_eq!(after.wallets, before.wallets, "balances unchanged");
    assert_eq!(after.entries, before.entries);
    assert_eq!(
        (after.wallet_events, after.ledger_events),
        (before.wallet_events, before.ledger_events)
    );
    assert_eq!(
        after.transfers.len(),
        before.transfers.len() + 1,
        "only the FAILED transfer"
    );
    withdraw_too_much(&app, a).await;
    assert_quiet(&e).await;
}

async fn withdraw_too_much(app: &Router, wallet: WalletId) {
    let response = post(
        app,
        &withdrawals(wallet),
        Some(&new_key()),
        &json!({"amount": "11"}),
    )
    .await;
    response.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    assert!(response.body["error"]["transfer_id"].is_string());
}

#[tokio::test]
async fn a_repeated_request_gets_the_first_answer_again() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let first = post(
        &app,
        "/v1/transfers",
        Some("again"),
        &transfer(a, b, json!("2.5")),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    e.drain().await;
    let quiet = SystemState::capture(&e).await;
    // "2.50" is the same request as "2.5".
    let same = transfer(a, b, json!("2.50"));
    let replay = post(&app, "/v1/transfers", Some("again"), &same).await;
    assert_eq!((replay.status, &replay.body), (first.status, &first.body));
    assert_eq!(
        replay.body["status"], "RESERVED",
        "the first answer, not the current state"
    );
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.header("location"), first.header("location"));
    e.drain().await;
    assert_eq!(
        SystemState::capture(&e).await,
        quiet,
        "a replay moves nothing"
    );
    assert_quiet(&e).await;
}

#[tokio::test]
async fn a_key_reused_with_another_request_is_422_and_changes_nothing() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let first = post(
        &app,
        "/v1/transfers",
        Some("mine"),
        &transfer(a, b, json!("1")),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let before = SystemState::capture(&e).await;
    let others = [
        ("/v1/transfers".to_owned(), transfer(a, b, json!("2"))),
        ("/v1/transfers".to_owned(), transfer(b, a, json!("1"))),
        (deposits(a), json!({"amount": "1"})),
        (withdrawals(a), json!({"amount": "1"})),
    ];
    for (uri, body) in others {
        post(&app, &uri, Some("mine"), &body)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");
    }
    assert_eq!(SystemState::capture(&e).await, before);
    let id = first.body["id"].as_str().unwrap();
    let untouched = send(&app, get(&format!("/v1/transfers/{id}"))).await;
    assert_eq!(
        untouched.body, first.body,
        "the first transfer is untouched"
    );
    e.drain().await;
    assert_quiet(&e).await;
}

#[tokio::test]
async fn get_transfer_refuses_unknown_and_malformed_ids_and_bad_waits() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let created = post(
        &app,
        "/v1/transfers",
        Some("k"),
        &transfer(a, b, json!("1")),
    )
    .await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let before = SystemState::capture(&e).await;
    let unknown = uuid::Uuid::now_v7();
    send(&app, get(&format!("/v1/transfers/{unknown}")))
        .await
        .assert_error(StatusCode::NOT_FOUND, "transfer_not_found");
    send(&app, get(&format!("/v1/transfers/{unknown}?wait_ms=10")))
        .await
        .assert_error(StatusCode::NOT_FOUND, "transfer_not_found");
    send(&app, get("/v1/transfers/not-a-uuid"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    for query in ["wait_ms=30001", "wait_ms=-1", "wait_ms=soon", "wait=5"] {
        send(&app, get(&format!("/v1/transfers/{id}?{query}")))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    }
    let now = send(&app, get(&format!("/v1/transfers/{id}?wait_ms=0"))).await;
    assert_eq!((now.status, &now.body), (StatusCode::OK, &created.body));
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn wait_ms_returns_once_the_transfer_is_terminal() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let created = post(
        &app,
        "/v1/transfers",
        Some("w"),
        &transfer(a, b, json!("3")),
    )
    .await;
    assert_eq!(created.body["status"], "RESERVED");
    let uri = format!(
        "/v1/transfers/{}?wait_ms=10000",
        created.body["id"].as_str().unwrap()
    );
    let started = Instant::now();
    let settle_later = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        e.drain().await;
    };
    let (polled, ()) = tokio::join!(send(&app, get(&uri)), settle_later);
    assert_eq!(polled.status, StatusCode::OK);
    assert_eq!(polled.body["status"], "SUCCEEDED");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100),
        "it waited: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "it did not wait the whole time: {waited:?}"
    );
    assert_quiet(&e).await;
}

#[tokio::test]
async fn wait_ms_gives_up_with_the_current_state() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let created = post(
        &app,
        "/v1/transfers",
        Some("w"),
        &transfer(a, b, json!("3")),
    )
    .await;
    let uri = format!(
        "/v1/transfers/{}?wait_ms=150",
        created.body["id"].as_str().unwrap()
    );
    let started = Instant::now();
    let polled = send(&app, get(&uri)).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(
        (polled.status, &polled.body["status"]),
        (StatusCode::OK, &json!("RESERVED"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_at_once_when_the_server_shuts_down() {
    let (mut e, app) = system();
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let created = post(
        &app,
        "/v1/transfers",
        Some("w"),
        &transfer(a, b, json!("3")),
    )
    .await;
    assert_eq!(created.body["status"], "RESERVED");
    let id = created.body["id"].as_str().unwrap().to_owned();

    // Served as a process serves it: the shutdown ends the waits first.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
    let transactions = e.transactions.clone();
    let shutdown = async move {
        let _ = signalled.await;
        transactions.stop_waits();
    };
    let server = tokio::spawn(wallet_http::serve_until(listener, app, shutdown));
    let url = format!("http://{addr}/v1/transfers/{id}?wait_ms=10000");
    let poll = tokio::spawn(async move {
        let answer = reqwest::get(url).await.unwrap();
        (answer.status(), answer.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the poll waits while nothing happens");

    let stopping = Instant::now();
    signal.send(()).unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(1), poll)
        .await
        .expect("the poll answers at once on shutdown")
        .unwrap();
    assert_eq!((status.as_u16(), &body), (200, &created.body));
    tokio::time::timeout(Duration::from_secs(1), server)
        .await
        .expect("the server stops at once")
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    assert!(took < Duration::from_millis(500), "shutdown took {took:?}");

    // A wait begun after the shutdown answers at once too.
    let started = Instant::now();
    let now = e
        .transactions
        .wait_for(id.parse().unwrap(), Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.status, TransferStatus::Reserved);
    assert!(started.elapsed() < Duration::from_millis(500));
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
    send(&app, get("/v1/transfer"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    send(&app, raw(Method::DELETE, "/v1/transfers", None, ""))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    send(&app, raw(Method::PUT, "/v1/wallets/x/deposits", None, ""))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(SystemState::capture(&e).await, before);
}

/// A gateway whose reserve waits for `release`, telling `entered` when it
/// starts.
struct Gate {
    inner: Arc<MemoryWalletService>,
    entered: Arc<Notify>,
    release: Arc<Notify>,
}

#[async_trait]
impl WalletGateway for Gate {
    async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, GatewayError> {
        self.entered.notify_one();
        self.release.notified().await;
        WalletGateway::reserve_batch(&self.inner, requests).await
    }
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, GatewayError> {
        WalletGateway::wallet(&self.inner, id).await
    }
    async fn release_holds(
        &self,
        requests: &[(TransferId, HoldRelease)],
    ) -> Result<Vec<Option<HoldState>>, GatewayError> {
        WalletGateway::release_holds(&self.inner, requests).await
    }
}

fn service_over<G: WalletGateway>(gateway: G) -> Arc<TransactionService<MemoryTransferStore, G>> {
    Arc::new(TransactionService::new(
        MemoryTransferStore::new(),
        gateway,
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        TransactionConfig::default(),
    ))
}

#[tokio::test]
async fn a_key_in_flight_is_409_and_changes_nothing() {
    let mut e = Embedded::new(EmbeddedConfig::default());
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let gate = Gate {
        inner: e.wallets.clone(),
        entered: entered.clone(),
        release: release.clone(),
    };
    let svc = service_over(gate);
    let app = transaction_service::router(svc.clone());
    let body = transfer(a, b, json!("4"));
    let first = tokio::spawn({
        let (app, body) = (app.clone(), body.clone());
        async move { post(&app, "/v1/transfers", Some("slow"), &body).await }
    });
    entered.notified().await;
    let before = (
        SystemState::capture(&e).await,
        all_transfers(svc.store()).await,
    );
    let second = post(&app, "/v1/transfers", Some("slow"), &body).await;
    second.assert_error(StatusCode::CONFLICT, "idempotency_key_in_flight");
    assert_eq!(second.header("retry-after"), Some("1"));
    assert_eq!(
        (
            SystemState::capture(&e).await,
            all_transfers(svc.store()).await
        ),
        before
    );
    release.notify_one();
    let first = first.await.unwrap();
    assert_eq!(
        (first.status, &first.body["status"]),
        (StatusCode::ACCEPTED, &json!("RESERVED"))
    );
    let third = post(&app, "/v1/transfers", Some("slow"), &body).await;
    assert_eq!((third.status, &third.body), (first.status, &first.body));
    assert_eq!(third.header("idempotent-replayed"), Some("true"));
}

/// A wallet service that cannot be reached, or answers currencies but
/// never reserves.
struct Broken {
    inner: Option<Arc<MemoryWalletService>>,
}

#[async_trait]
impl WalletGateway for Broken {
    async fn reserve_batch(
        &self,
        _: &[ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, GatewayError> {
        Err(GatewayError::Timeout)
    }
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, GatewayError> {
        match &self.inner {
            Some(inner) => WalletGateway::wallet(inner, id).await,
            None => Err(GatewayError::Unavailable("connection refused".into())),
        }
    }
    async fn release_holds(
        &self,
        _: &[(TransferId, HoldRelease)],
    ) -> Result<Vec<Option<HoldState>>, GatewayError> {
        Err(GatewayError::Timeout)
    }
}

#[tokio::test]
async fn an_unreachable_wallet_service_is_503_and_stores_nothing() {
    let mut e = Embedded::new(EmbeddedConfig::default());
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let svc = service_over(Broken { inner: None });
    let app = transaction_service::router(svc.clone());
    let before = SystemState::capture(&e).await;
    let response = post(
        &app,
        "/v1/transfers",
        Some("k"),
        &transfer(a, b, json!("1")),
    )
    .await;
    response.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(all_transfers(svc.store()).await.is_empty());
    assert_eq!(SystemState::capture(&e).await, before);
}

#[tokio::test]
async fn an_ambiguous_reserve_is_accepted_as_initiated_never_failed() {
    let mut e = Embedded::new(EmbeddedConfig::default());
    let (a, b) = (
        funded(&mut e, Currency::USD, "10").await,
        empty(&e, Currency::USD).await,
    );
    let svc = service_over(Broken {
        inner: Some(e.wallets.clone()),
    });
    let app = transaction_service::router(svc.clone());
    let body = transfer(a, b, json!("1"));
    let first = post(&app, "/v1/transfers", Some("k"), &body).await;
    assert_eq!(
        (first.status, &first.body["status"]),
        (StatusCode::ACCEPTED, &json!("INITIATED"))
    );
    let replay = post(&app, "/v1/transfers", Some("k"), &body).await;
    assert_eq!((replay.status, &replay.body), (first.status, &first.body));
    assert_eq!(all_transfers(svc.store()).await.len(), 1);
}

#[tokio::test]
async fn the_three_apis_merge_into_one_router() {
    let mut e = Embedded::new(EmbeddedConfig::default());
    let api = transaction_service::api(e.transactions.clone())
        .merge(wallet_service::api(e.wallets.clone()))
        .merge(ledger_service::api(e.ledger.clone(), e.wallets.clone()));
    let app = wallet_http::service_router(api);
    let opened = send(
        &app,
        wallet_http::testing::json(Method::POST, "/v1/wallets", &json!({"currency": "USD"})),
    )
    .await;
    assert_eq!(opened.status, StatusCode::CREATED);
    let id: WalletId = opened.body["id"].as_str().unwrap().parse().unwrap();
    let deposit = post(&app, &deposits(id), Some("d"), &json!({"amount": "7"})).await;
    assert_eq!(deposit.status, StatusCode::ACCEPTED);
    e.drain().await;
    let wallet = send(&app, get(&format!("/v1/wallets/{id}"))).await;
    assert_eq!(wallet.body["available"], "7.00");
    let entries = send(&app, get(&format!("/v1/wallets/{id}/entries"))).await;
    assert_eq!(entries.body["entries"].as_array().unwrap().len(), 1);
    let big = json!({"amount": "1", "padding": "k".repeat(MAX_BODY_BYTES)});
    post(&app, &deposits(id), Some("big"), &big)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK);
    assert_quiet(&e).await;
}
