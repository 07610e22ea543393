//! Request spans and trace context: one `http.request` span per request,
//! named by its route template, which a handler fills with the transfer it
//! concerns and which continues a caller's W3C `traceparent`; and the
//! context of a span as a [`TraceParent`], to hand to a call, an outbox
//! record or a published event.
//!
//! Without an OpenTelemetry layer in the process's subscriber, spans have
//! no context: [`context_of`] is `None` and [`continue_from`] does nothing.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wallet_core::trace::TraceParent;

/// The header a trace context travels in, over HTTP and on records.
pub const TRACEPARENT: &str = "traceparent";

/// Routes polled by probes and scrapers: their requests get no span, so
/// traces hold the work alone.
const UNTRACED: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The span of one request (none for the probes' and scrapers' routes,
/// `/healthz`, `/readyz` and `/metrics`): at info level, so a process that
/// exports traces sees it whatever its log filter. `transfer_id` and
/// `correlation_id` are empty until a handler records them
/// ([`record_transfer`]). A valid `traceparent` header makes it a child of
/// the caller's span; no other header is read, so no credential reaches a
/// log or a trace.
pub fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    if UNTRACED.contains(&route) {
        return Span::none();
    }
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        transfer_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
    );
    if let Some(parent) = from_headers(request.headers()) {
        continue_from(&span, &parent);
    }
    span
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

/// The trace context a `traceparent` header carries, if valid.
pub fn from_headers(headers: &HeaderMap) -> Option<TraceParent> {
    headers.get(TRACEPARENT)?.to_str().ok()?.parse().ok()
}

/// The context of `span`: what a call or an event made in it continues.
pub fn context_of(span: &Span) -> Option<TraceParent> {
    let context = span.context();
    let span = context.span();
    let span = span.span_context();
    if !span.is_valid() {
        return None;
    }
    TraceParent::new(
        span.trace_id().to_bytes(),
        span.span_id().to_bytes(),
        span.trace_flags().to_u8(),
    )
}

/// The context of the current span.
pub fn current() -> Option<TraceParent> {
    context_of(&Span::current())
}

/// Makes `span`, just made and not yet entered, a child of the remote
/// span `parent` names, in its trace.
pub fn continue_from(span: &Span, parent: &TraceParent) {
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id()),
        SpanId::from_bytes(parent.span_id()),
        TraceFlags::new(parent.flags()),
        true,
        TraceState::default(),
    );
    // Refused only without an OpenTelemetry layer, or for a span already
    // started: there is nothing to continue then.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}
