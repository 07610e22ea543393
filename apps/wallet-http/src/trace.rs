//! Request spans: one `http.request` span per request, named by its route
//! template, which a handler fills with the transfer it concerns.

use axum::extract::{MatchedPath, Request};
use tracing::Span;

/// The span of one request: at info level, so a process that exports
/// traces sees it whatever its log filter. `transfer_id` and
/// `correlation_id` are empty until a handler records them
/// ([`record_transfer`]). Never the headers: no credential reaches a log or
/// a trace.
pub fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let method = request.method().as_str();
    tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        transfer_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
    )
}

/// Names the transfer a request concerns on its span (the current one).
pub fn record_transfer(
    transfer_id: impl std::fmt::Display,
    correlation_id: impl std::fmt::Display,
) {
    let span = Span::current();
    span.record("transfer_id", tracing::field::display(transfer_id));
    span.record("correlation_id", tracing::field::display(correlation_id));
}
