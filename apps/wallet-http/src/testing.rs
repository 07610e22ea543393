//! Helpers for router tests (feature `test-util`): requests sent with
//! `tower::ServiceExt::oneshot`, no socket, and a comparable capture of the
//! embedded system's state, to show that a refused request changed nothing.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use tower::ServiceExt;
use wallet_core::audit::Scope;
use wallet_core::event::{LEDGER_EVENTS, WALLET_EVENTS};
use wallet_core::ledger::Entry;
use wallet_core::memory::Embedded;
use wallet_core::ports::{LedgerReads, TransferReads, WalletReads};
use wallet_core::transfer::Transfer;
use wallet_core::wallet::{Reservation, Wallet};

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The body as JSON; `Null` when empty, a JSON string when not JSON.
    pub body: serde_json::Value,
}

impl TestResponse {
    /// The error code of an error-shaped body, or "" when there is none.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Panics unless the status and the error code are these, and the body
    /// has the error shape.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "body: {}",
            self.body
        );
        assert!(
            self.body["error"]["message"].is_string(),
            "error shape: {}",
            self.body
        );
    }

    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request through a clone of `router`.
pub async fn send(router: &Router, request: Request<Body>) -> TestResponse {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("routers are infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("test bodies are read whole");
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into())
    };
    TestResponse {
        status,
        headers,
        body,
    }
}

/// A GET without a body.
pub fn get(uri: &str) -> Request<Body> {
    raw(Method::GET, uri, None, Body::empty())
}

/// A request with a JSON body.
pub fn json(method: Method, uri: &str, body: &serde_json::Value) -> Request<Body> {
    raw(
        method,
        uri,
        Some("application/json"),
        Body::from(body.to_string()),
    )
}

/// A POST with a JSON body and, if given, an `Idempotency-Key` header.
pub fn post_keyed(uri: &str, key: Option<&str>, body: &serde_json::Value) -> Request<Body> {
    let mut request = json(Method::POST, uri, body);
    if let Some(key) = key {
        let value = key.parse().expect("test keys are valid header values");
        request.headers_mut().insert("idempotency-key", value);
    }
    request
}

/// A request with any body and content type.
pub fn raw(
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).expect("test requests are valid")
}

/// What a refused request must leave unchanged: wallets with their
/// balances, reservations, transfers, ledger entries and the bus's topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemState {
    /// Wallets, by id.
    pub wallets: Vec<Wallet>,
    /// Reservations, by transfer id.
    pub reservations: Vec<Reservation>,
    /// Transfers, by id.
    pub transfers: Vec<Transfer>,
    /// Ledger entries, by transfer.
    pub entries: Vec<Entry>,
    /// Messages on `wallet.events`.
    pub wallet_events: usize,
    /// Messages on `ledger.events`.
    pub ledger_events: usize,
}

impl SystemState {
    /// The embedded system's state now, read through the stores' read
    /// ports.
    pub async fn capture(embedded: &Embedded) -> SystemState {
        const ALL: usize = 100_000;
        let wallets = embedded.wallets.store();
        let ledger = embedded.ledger.store();
        let read = "memory stores do not fail";
        SystemState {
            wallets: wallets.wallets_page(None, ALL).await.expect(read),
            reservations: wallets.reservations_page(None, ALL).await.expect(read),
            transfers: embedded
                .transactions
                .store()
                .transfers_page(None, ALL)
                .await
                .expect(read),
            entries: ledger.postings_page(None, ALL).await.expect(read),
            wallet_events: embedded.bus.len(WALLET_EVENTS),
            ledger_events: embedded.bus.len(LEDGER_EVENTS),
        }
    }
}

/// Panics unless every invariant of a quiet system holds.
pub async fn assert_quiet(embedded: &Embedded) {
    let violations = embedded.audit(Scope::Quiet).await.violations;
    assert!(violations.is_empty(), "invariants broken: {violations:?}");
}
