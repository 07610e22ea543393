//! `GET /readyz`: what the process needs answers (its database, the
//! broker). `GET /healthz`, that the process serves at all, comes with every
//! service's router.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use wallet_core::runtime::Loops;

/// A check of one dependency: `Ok` when it answers, or why not.
pub type Check =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Wraps an async check.
pub fn check<F, Fut>(f: F) -> Check
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// `/readyz`: 200 when every check passes and no background loop is down
/// or stalled, else 503 with each check's answer and each unwell loop (its
/// name, error, and the topic and partition or outbox, event and transfer
/// it was at); the checks run one after the other, each under `timeout`.
/// Once `draining` is set (the process got SIGTERM), 503 `draining` without
/// running the checks: a load balancer takes the instance out while it
/// finishes what it has.
pub fn readiness(
    checks: Vec<(&'static str, Check)>,
    loops: Loops,
    timeout: std::time::Duration,
    draining: watch::Receiver<bool>,
) -> Router {
    let checks = Arc::new(checks);
    Router::new().route(
        "/readyz",
        get(move || {
            let (checks, loops) = (checks.clone(), loops.clone());
            let draining = *draining.borrow();
            async move {
                if draining {
                    let body = json!({"status": "draining", "checks": {}});
                    return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body));
                }
                ready(&checks, &loops, timeout).await
            }
        }),
    )
}

async fn ready(
    checks: &[(&'static str, Check)],
    loops: &Loops,
    timeout: std::time::Duration,
) -> (StatusCode, axum::Json<Value>) {
    let mut answers = Map::new();
    let mut all = true;
    for (name, check) in checks {
        let answer = match tokio::time::timeout(timeout, check()).await {
            Ok(Ok(())) => "ok".to_owned(),
            Ok(Err(reason)) => reason,
            Err(_) => format!("no answer in {timeout:?}"),
        };
        all &= answer == "ok";
        answers.insert((*name).to_owned(), Value::from(answer));
    }
    let unwell = loops.unwell();
    all &= unwell.is_empty();
    let loops = if unwell.is_empty() {
        Value::from("ok")
    } else {
        serde_json::to_value(&unwell).expect("loop states serialize")
    };
    answers.insert("loops".to_owned(), loops);
    let status = if all { "ready" } else { "not_ready" };
    let code = if all {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({"status": status, "checks": answers})),
    )
}
