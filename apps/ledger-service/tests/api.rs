//! The ledger service's routes over the in-memory adapters.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::http::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use wallet_core::event::{EventStamp, Inbound};
use wallet_core::ids::{IdempotencyKey, TransferId, WalletId};
use wallet_core::ledger::{AccountBalance, Entry, PostingRequest};
use wallet_core::memory::{Embedded, EmbeddedConfig};
use wallet_core::money::Currency;
use wallet_core::outcome::LedgerOutcome;
use wallet_core::ports::{
    EntryCursor, LedgerReads, LedgerStore, RandomIds, StoreError, SystemClock,
};
use wallet_core::service::{LedgerService, Parties, TransferRequest};
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
}
