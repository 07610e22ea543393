//! Routes and layers every service shares, and serving.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::ApiError;

/// The largest request body accepted, in bytes: 16 KiB.
///
/// Every request of the API is a handful of ids and short strings (well
/// under 1 KiB); the limit leaves room for that and stops a client from
/// making a service buffer megabytes. Larger bodies get 413
/// `body_too_large`.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Limits the bodies of `router`'s routes to [`MAX_BODY_BYTES`], answering
/// 413 in the error shape.
///
/// Two layers, because a body can be too large in two ways: a declared
/// `Content-Length` over the limit is refused before the handler runs (by
/// tower-http, whose plain-text 413 is rewritten here), and a body without a
/// length is cut while [`crate::Json`] reads it. Apply it in each service's
/// `api()`, so the limit holds when several services share one router.
pub fn limit_body<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    limit_body_to(router, MAX_BODY_BYTES)
}

/// [`limit_body`] with a limit of `max` bytes: for routes that take
/// batches from a peer service.
pub fn limit_body_to<S>(router: Router<S>, max: usize) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(DefaultBodyLimit::max(max))
        .layer(RequestBodyLimitLayer::new(max))
        .layer(axum::middleware::map_response(move |response| {
            reshape_too_large(response, max)
        }))
}

/// Replaces a 413 that is not in the error shape (tower-http's) with one
/// that is.
async fn reshape_too_large(response: Response, max: usize) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return ApiError::body_too_large(max).into_response();
    }
    response
}

/// `GET /healthz`: 200 `{"status":"ok"}` while the process serves requests.
/// It does not probe storage or peers, so an orchestrator does not restart a
/// healthy process because its database is down.
pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// The fallback for unknown routes: 404 `not_found`.
pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

/// The answer to a known route with an unknown method: 405
/// `method_not_allowed`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// Completes a service's router: `api` (one service's routes, or several
/// merged) plus `GET /healthz`, 404 and 405 in the error shape, and request
/// tracing (one `http.request` span per request, see [`crate::trace`]).
pub fn service_router(api: Router) -> Router {
    api.route("/healthz", get(healthz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TraceLayer::new_for_http().make_span_with(crate::trace::request_span))
}

/// Serves `app` on `listener` until Ctrl-C or SIGTERM, then stops accepting
/// and lets requests in progress finish.
pub async fn serve(listener: TcpListener, app: Router) -> std::io::Result<()> {
    serve_until(listener, app, shutdown_signal()).await
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and lets requests in progress finish. `shutdown` is the place
/// to end what would keep a request going (a long poll's wait) before the
/// server waits for it.
pub async fn serve_until<L>(
    listener: L,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM (what orchestrators send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            // Without the handler only SIGTERM can stop the server gracefully.
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
