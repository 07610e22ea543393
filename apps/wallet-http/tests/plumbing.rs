//! The shared plumbing on a small router: every rejection uses the error
//! shape with the documented status and code.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wallet_core::WalletId;
use wallet_http::testing::{get as get_req, json, raw, send};
use wallet_http::{Json, MAX_BODY_BYTES, Path, Query, limit_body, service_router};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Echo {
    name: String,
    count: u32,
}

#[derive(Deserialize)]
struct Page {
    limit: Option<u32>,
}

async fn echo(Json(body): Json<Echo>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"name": body.name, "count": body.count}))
}

async fn by_id(Path(id): Path<WalletId>, Query(page): Query<Page>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"id": id, "limit": page.limit}))
}

fn app() -> Router {
    let api = Router::new()
        .route("/echo", post(echo))
        .route("/things/{id}", get(by_id));
    service_router(limit_body(api))
}

fn echo_body(name_len: usize) -> String {
    serde_json::json!({"name": "n".repeat(name_len), "count": 1}).to_string()
}

#[tokio::test]
async fn a_valid_body_is_read() {
    let response = send(
        &app(),
        json(
            Method::POST,
            "/echo",
            &serde_json::json!({"name": "a", "count": 2}),
        ),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body, serde_json::json!({"name": "a", "count": 2}));
}

#[tokio::test]
async fn malformed_json_wrong_types_and_unknown_fields_are_400() {
    let bodies = [
        "{not json",
        r#"{"name": 1, "count": 2}"#,
        r#"{"name": "a"}"#,
        r#"{"name": "a", "count": 2, "extra": true}"#,
        r#"{"name": "a", "count": -1}"#,
        r#"["a", 1]"#,
        "",
    ];
    for body in bodies {
        let request = raw(Method::POST, "/echo", Some("application/json"), body);
        send(&app(), request)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "malformed_request");
    }
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_415() {
    for content_type in [None, Some("text/plain")] {
        let request = raw(Method::POST, "/echo", content_type, echo_body(1));
        send(&app(), request)
            .await
            .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_or_without_a_length() {
    let big = echo_body(MAX_BODY_BYTES);
    let declared = Method::POST;
    let mut request = raw(declared, "/echo", Some("application/json"), big.clone());
    request
        .headers_mut()
        .insert("content-length", big.len().to_string().parse().unwrap());
    send(&app(), request)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    let undeclared = raw(Method::POST, "/echo", Some("application/json"), big);
    send(&app(), undeclared)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_read() {
    let overhead = echo_body(0).len();
    let body = echo_body(MAX_BODY_BYTES - overhead);
    assert_eq!(body.len(), MAX_BODY_BYTES);
    let response = send(
        &app(),
        raw(Method::POST, "/echo", Some("application/json"), body),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_path_ids_and_queries_are_400() {
    send(&app(), get_req("/things/not-a-uuid"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    // An id has one spelling: the uuid parser's others are refused too.
    for other in [
        "0191e3f68a8e7c3e9d2b3f1f4b0c9a11",
        "urn:uuid:0191e3f6-8a8e-7c3e-9d2b-3f1f4b0c9a11",
    ] {
        send(&app(), get_req(&format!("/things/{other}")))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    }
    let id = "0191e3f6-8a8e-7c3e-9d2b-3f1f4b0c9a11";
    send(&app(), get_req(&format!("/things/{id}?limit=many")))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    let ok = send(&app(), get_req(&format!("/things/{id}?limit=3"))).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["limit"], 3);
}

#[tokio::test]
async fn healthz_unknown_routes_and_methods() {
    let health = send(&app(), get_req("/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, serde_json::json!({"status": "ok"}));
    send(&app(), get_req("/nowhere"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    send(&app(), raw(Method::DELETE, "/echo", None, Body::empty()))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn serve_answers_on_a_loopback_socket() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(wallet_http::serve(listener, app()));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(r#"{"status":"ok"}"#), "{answer}");
    server.abort();
}
