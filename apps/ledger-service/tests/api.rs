//! The ledger service's routes over the in-memory adapters.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::http::{Method, StatusCode};
use ledger_service::WalletDirectory;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use wallet_core::event::{EventStamp, Inbound};
use wallet_core::ids::{IdempotencyKey, TransferId, WalletId};
use wallet_core::ledger::{AccountBalance, Entry, PostingRequest};
use wallet_core::memory::{Embedded, EmbeddedConfig};
use wallet_core::money::Currency;
use wallet_core::outcome::LedgerOutcome;
use wallet_core::ports::{
    EntryCursor, GatewayError, LedgerReads, LedgerStore, RandomIds, StoreError, SystemClock,
};
use wallet_core::service::{LedgerService, Parties, TransferRequest};
use wallet_core::wallet::Wallet;
use wallet_http::testing::{SystemState, assert_quiet, get, raw, send};

fn system() -> (Embedded, Router) {
    let embedded = Embedded::new(EmbeddedConfig::default());
    let app = ledger_service::router(embedded.ledger.clone(), embedded.wallets.clone());
    (embedded, app)
}

/// A USD wallet that received one deposit per amount, in order.
async fn deposited(e: &mut Embedded, amounts: &[&str]) -> (WalletId, Vec<TransferId>) {
    let wallet = e.wallets.open(Currency::USD).await.unwrap().id;
    let mut transfers = Vec::new();
    for (i, amount) in amounts.iter().enumerate() {
        let request = TransferRequest {
            tags: Default::default(),
            key: IdempotencyKey::new(format!("dep-{wallet}-{i}")).unwrap(),
            parties: Parties::Deposit(wallet),
            amount: Decimal::from_str(amount).unwrap(),
            currency: None,
        };
        transfers.push(e.transactions.create(request).await.unwrap().transfer.id);
        e.drain().await;
    }
    (wallet, transfers)
}

fn entries_uri(wallet: WalletId, query: &str) -> String {
    format!("/v1/wallets/{wallet}/entries{query}")
}

fn seqs(page: &Value) -> Vec<u64> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn entries_show_the_postings_newest_first() {
    let (mut e, app) = system();
    let (wallet, transfers) = deposited(&mut e, &["1", "2.5"]).await;
    let page = send(&app, get(&entries_uri(wallet, ""))).await;
    assert_eq!(page.status, StatusCode::OK);
    let entries = page.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let newest = &entries[0];
    assert_eq!(newest["transfer_id"], json!(transfers[1]));
    assert_eq!(newest["direction"], "credit");
    assert_eq!(newest["amount"], "2.50");
    assert_eq!(newest["currency"], "USD");
    assert!(newest["posted_at"].is_string());
    let keys: Vec<&str> = newest
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "amount",
            "currency",
            "direction",
            "posted_at",
            "seq",
            "transfer_id"
        ]
    );
    assert!(entries[0]["seq"].as_u64() > entries[1]["seq"].as_u64());
    assert_eq!(page.body["next_before"], Value::Null);
    // The system account's side of the same postings: debits.
    let system = send(&app, get(&entries_uri(WalletId::system(Currency::USD), ""))).await;
    assert_eq!(system.body["entries"][0]["direction"], "debit");
    assert_quiet(&e).await;
}

#[tokio::test]
async fn next_before_walks_every_page() {
    let (mut e, app) = system();
    let (wallet, _) = deposited(&mut e, &["1", "2", "3", "4", "5"]).await;
    let all = seqs(
        &send(&app, get(&entries_uri(wallet, "?limit=500")))
            .await
            .body,
    );
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0] > w[1]), "newest first: {all:?}");
    let mut walked = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = send(&app, get(&entries_uri(wallet, &query))).await;
        assert_eq!(page.status, StatusCode::OK);
        walked.extend(seqs(&page.body));
        pages += 1;
        match page.body["next_before"].as_u64() {
            Some(before) => {
                assert_eq!(Some(&before), walked.last(), "the last entry's seq");
                query = format!("?limit=2&before={before}");
            }
            None => break,
        }
    }
    assert_eq!((walked, pages), (all, 3));
}

#[tokio::test]
async fn a_full_last_page_is_followed_by_an_empty_one() {
    let (mut e, app) = system();
    let (wallet, _) = deposited(&mut e, &["1", "2"]).await;
    let first = send(&app, get(&entries_uri(wallet, "?limit=2"))).await;
    let before = first.body["next_before"].as_u64().expect("a full page");
    let second = send(
        &app,
        get(&entries_uri(wallet, &format!("?limit=2&before={before}"))),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body, json!({"entries": [], "next_before": null}));
}

#[tokio::test]
async fn an_unknown_wallet_is_404_and_a_wallet_without_entries_an_empty_page() {
    let (e, app) = system();
    let before = SystemState::capture(&e).await;
    let unknown = WalletId::from_uuid(uuid::Uuid::now_v7());
    send(&app, get(&entries_uri(unknown, "")))
        .await
        .assert_error(StatusCode::NOT_FOUND, "wallet_not_found");
    let later = send(&app, get(&entries_uri(unknown, "?before=5"))).await;
    later.assert_error(StatusCode::NOT_FOUND, "wallet_not_found");
    assert_eq!(SystemState::capture(&e).await, before);

    let quiet = e.wallets.open(Currency::USD).await.unwrap().id;
    let page = send(&app, get(&entries_uri(quiet, ""))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, json!({"entries": [], "next_before": null}));
}

#[tokio::test]
async fn bad_limits_queries_and_ids_are_400() {
    let (mut e, app) = system();
    let (wallet, _) = deposited(&mut e, &["1"]).await;
    let before = SystemState::capture(&e).await;
    for query in [
        "?limit=0",
        "?limit=501",
        "?limit=-1",
        "?limit=ten",
        "?before=-1",
        "?before=x",
        "?limt=5",
    ] {
        send(&app, get(&entries_uri(wallet, query)))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    }
    send(&app, get("/v1/wallets/not-a-uuid/entries"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    let edge = send(&app, get(&entries_uri(wallet, "?limit=1"))).await;
    assert_eq!(seqs(&edge.body).len(), 1);
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
    send(&app, get("/v1/entries"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let wallet = WalletId::from_uuid(uuid::Uuid::now_v7());
    send(&app, raw(Method::POST, &entries_uri(wallet, ""), None, ""))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(SystemState::capture(&e).await, before);
}

fn balance_uri(wallet: WalletId, query: &str) -> String {
    format!("/v1/wallets/{wallet}/balance{query}")
}

/// The `posted_at` of `wallet`'s entries, oldest first, with their seqs.
async fn posted(app: &Router, wallet: WalletId) -> Vec<(String, u64)> {
    let page = send(app, get(&entries_uri(wallet, ""))).await;
    let mut entries: Vec<(String, u64)> = page.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["posted_at"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    entries.reverse();
    entries
}

#[tokio::test]
async fn the_balance_as_of_a_time_counts_the_entries_posted_by_then() {
    let (mut e, app) = system();
    let (wallet, _) = deposited(&mut e, &["1", "2.5"]).await;
    let entries = posted(&app, wallet).await;
    let [(first_at, first_seq), (second_at, second_seq)] = &entries[..] else {
        panic!("two entries: {entries:?}");
    };
    assert!(first_at < second_at, "{entries:?}");
    let before = SystemState::capture(&e).await;

    let at_first = send(
        &app,
        get(&balance_uri(wallet, &format!("?as_of={first_at}"))),
    )
    .await;
    assert_eq!(at_first.status, StatusCode::OK, "{}", at_first.body);
    assert_eq!(
        at_first.body,
        json!({
            "wallet_id": wallet,
            "currency": "USD",
            "as_of": first_at,
            "balance": "1.00",
            "position": first_seq,
            "wallet": null,
        })
    );
    let at_second = send(
        &app,
        get(&balance_uri(wallet, &format!("?as_of={second_at}"))),
    )
    .await;
    assert_eq!(
        (&at_second.body["balance"], &at_second.body["position"]),
        (&json!("3.50"), &json!(second_seq))
    );
    let long_ago = "?as_of=2000-01-01T00:00:00Z";
    let nothing_yet = send(&app, get(&balance_uri(wallet, long_ago))).await;
    assert_eq!(
        (&nothing_yet.body["balance"], &nothing_yet.body["position"]),
        (&json!("0.00"), &Value::Null),
        "{}",
        nothing_yet.body
    );
    // An offset is read, and echoed in UTC; the future counts what is
    // posted so far.
    let future = send(
        &app,
        get(&balance_uri(wallet, "?as_of=2999-01-01T02:00:00%2B02:00")),
    )
    .await;
    assert_eq!(
        (&future.body["as_of"], &future.body["balance"]),
        (&json!("2999-01-01T00:00:00Z"), &json!("3.50"))
    );

    // Now: every entry, beside the wallet service's balances.
    let now = send(&app, get(&balance_uri(wallet, ""))).await;
    assert_eq!(now.status, StatusCode::OK, "{}", now.body);
    let snapshot = e.wallets.wallet(wallet).await.unwrap().unwrap();
    assert_eq!(
        now.body,
        json!({
            "wallet_id": wallet,
            "currency": "USD",
            "as_of": null,
            "balance": "3.50",
            "position": second_seq,
            "wallet": {
                "available": "3.50",
                "reserved": "0.00",
                "updated_at": snapshot.updated_at,
            },
        })
    );
    assert_eq!(
        SystemState::capture(&e).await,
        before,
        "reads change nothing"
    );
}

#[tokio::test]
async fn the_balance_of_a_wallet_without_entries_is_zero_and_of_no_wallet_404() {
    let (mut e, app) = system();
    let quiet = e.wallets.open(Currency::EUR).await.unwrap().id;
    let now = send(&app, get(&balance_uri(quiet, ""))).await;
    assert_eq!(
        (
            now.status,
            &now.body["currency"],
            &now.body["balance"],
            &now.body["position"]
        ),
        (StatusCode::OK, &json!("EUR"), &json!("0.00"), &Value::Null),
        "{}",
        now.body
    );
    assert_eq!(now.body["wallet"]["available"], "0.00");
    let then = send(
        &app,
        get(&balance_uri(quiet, "?as_of=2030-01-01T00:00:00Z")),
    )
    .await;
    assert_eq!(
        (&then.body["balance"], &then.body["wallet"]),
        (&json!("0.00"), &Value::Null)
    );

    let before = SystemState::capture(&e).await;
    let unknown = WalletId::from_uuid(uuid::Uuid::now_v7());
    for query in ["", "?as_of=2030-01-01T00:00:00Z"] {
        send(&app, get(&balance_uri(unknown, query)))
            .await
            .assert_error(StatusCode::NOT_FOUND, "wallet_not_found");
    }
    assert_eq!(SystemState::capture(&e).await, before);

    // A system account has entries but no wallet: its balance, negative,
    // with no wallet service's balances beside it.
    deposited(&mut e, &["4"]).await;
    let system = WalletId::system(Currency::USD);
    let now = send(&app, get(&balance_uri(system, ""))).await;
    assert_eq!(
        (now.status, &now.body["balance"], &now.body["wallet"]),
        (StatusCode::OK, &json!("-4.00"), &Value::Null),
        "{}",
        now.body
    );
}

#[tokio::test]
async fn bad_times_and_queries_of_the_balance_are_400() {
    let (mut e, app) = system();
    let (wallet, _) = deposited(&mut e, &["1"]).await;
    let before = SystemState::capture(&e).await;
    for query in [
        "?as_of=yesterday",
        "?as_of=",
        "?as_of=2026-01-01",
        "?as_of=2026-01-01T00:00:00",
        "?as_of=2026-13-01T00:00:00Z",
        "?as_of=1700000000",
        // A `+` not sent as `%2B` reads as a space.
        "?as_of=2026-01-01T00:00:00+02:00",
        "?asof=2026-01-01T00:00:00Z",
        "?as_of=2026-01-01T00:00:00Z&limit=1",
    ] {
        send(&app, get(&balance_uri(wallet, query)))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    }
    send(&app, get("/v1/wallets/not-a-uuid/balance"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    send(&app, raw(Method::POST, &balance_uri(wallet, ""), None, ""))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(SystemState::capture(&e).await, before);
}

/// A wallet service that cannot be reached.
struct Unreachable;

#[async_trait]
impl WalletDirectory for Unreachable {
    async fn wallet(&self, _: WalletId) -> Result<Option<Wallet>, GatewayError> {
        Err(GatewayError::Unavailable("connection refused".into()))
    }
}

#[tokio::test]
async fn without_the_wallet_service_only_the_ledger_alone_answers() {
    let (mut e, _) = system();
    let (wallet, _) = deposited(&mut e, &["1"]).await;
    let app = ledger_service::router(e.ledger.clone(), Unreachable);
    send(&app, get(&balance_uri(wallet, "")))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let then = send(
        &app,
        get(&balance_uri(wallet, "?as_of=2999-01-01T00:00:00Z")),
    )
    .await;
    assert_eq!(
        (then.status, &then.body["balance"]),
        (StatusCode::OK, &json!("1.00")),
        "{}",
        then.body
    );
    // A wallet without entries needs the wallet service even as of a time.
    let quiet = e.wallets.open(Currency::USD).await.unwrap().id;
    send(
        &app,
        get(&balance_uri(quiet, "?as_of=2999-01-01T00:00:00Z")),
    )
    .await
    .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}

/// A ledger whose database is down.
struct Down;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable("connection refused".into()))
}

#[async_trait]
impl LedgerStore for Down {
    async fn post(&self, _: &[(Inbound<PostingRequest>, EventStamp)]) -> Result<usize, StoreError> {
        down()
    }
}

#[async_trait]
impl LedgerReads for Down {
    async fn entries(
        &self,
        _: WalletId,
        _: Option<u64>,
        _: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        down()
    }
    async fn postings_page(
        &self,
        _: Option<EntryCursor>,
        _: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        down()
    }
    async fn outcome(&self, _: TransferId) -> Result<Option<LedgerOutcome>, StoreError> {
        down()
    }
    async fn outcomes_page(
        &self,
        _: Option<TransferId>,
        _: usize,
    ) -> Result<Vec<(TransferId, LedgerOutcome)>, StoreError> {
        down()
    }
    async fn balances_page(
        &self,
        _: Option<WalletId>,
        _: usize,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        down()
    }
}

#[tokio::test]
async fn storage_down_is_503() {
    let svc = LedgerService::new(
        Down,
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        Arc::default(),
    );
    let wallets = Embedded::new(EmbeddedConfig::default()).wallets;
    let app = ledger_service::router(Arc::new(svc), wallets);
    let wallet = WalletId::from_uuid(uuid::Uuid::now_v7());
    send(&app, get(&entries_uri(wallet, "")))
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    send(
        &app,
        get(&balance_uri(wallet, "?as_of=2030-01-01T00:00:00Z")),
    )
    .await
    .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}
