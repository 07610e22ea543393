//! Logs and metrics of a service process.
//!
//! Nothing here installs process-wide state. [`logs`] builds the subscriber
//! and [`Metrics::recorder`] the recorder; the binaries install them (their
//! `main`), and a program that embeds the services keeps its own and passes
//! [`crate::Process::start`] the [`Metrics`] to serve at `/metrics`, if
//! any.

use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tracing::Subscriber;
use tracing_subscriber::EnvFilter;

/// A subscriber logging to stderr, filtered by `RUST_LOG` (default
/// `info`); one JSON object per line when `json`. Every line of a saga
/// carries its `transfer_id` and `correlation_id` fields, as the core logs
/// them. Not installed: a binary installs it
/// (`tracing_subscriber::util::SubscriberInitExt::try_init`).
pub fn logs(json: bool) -> Box<dyn Subscriber + Send + Sync> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        Box::new(logs.json().flatten_event(true).finish())
    } else {
        Box::new(logs.finish())
    }
}

/// Latency buckets, in seconds: from 0.5 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's metrics, rendered in Prometheus text form.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// A Prometheus recorder with the services' latency buckets, and the
    /// metrics it renders. The recorder is not installed: a binary installs
    /// it (`metrics::set_global_recorder`), then calls
    /// [`describe_metrics`].
    pub fn recorder() -> anyhow::Result<(PrometheusRecorder, Metrics)> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
            .context("latency buckets")?
            .build_recorder();
        let handle = recorder.handle();
        Ok((recorder, Metrics { handle }))
    }

    /// The metrics of a Prometheus recorder made elsewhere: that of a
    /// program embedding the services.
    pub fn from_handle(handle: PrometheusHandle) -> Metrics {
        Metrics { handle }
    }

    /// The metrics as Prometheus text.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// `GET /metrics`.
    pub fn route(&self) -> Router {
        let metrics = self.clone();
        Router::new().route(
            "/metrics",
            get(move || async move {
                let content_type = "text/plain; version=0.0.4; charset=utf-8";
                ([("content-type", content_type)], metrics.render())
            }),
        )
    }
}

/// Describes every metric a service process records (`# HELP` and unit)
/// to the recorder installed: the core's, the wallet service's and the
/// process's own. Call it after the recorder is installed.
pub fn describe_metrics() {
    wallet_core::metrics::describe();
    wallet_service::describe_metrics();
    describe();
}

/// Describes the metrics the process itself records: requests and the
/// gauges of its background loops, outbox and consumers.
fn describe() {
    describe_counter!(
        "http_requests_total",
        Unit::Count,
        "Requests answered, by route template, method and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "Time to answer a request, by route template and method."
    );
    describe_gauge!(
        "wallet_outbox_backlog",
        Unit::Count,
        "Outbox records not yet published."
    );
    describe_gauge!(
        "wallet_outbox_oldest_seconds",
        Unit::Seconds,
        "Age of the oldest outbox record not yet published (0 when none)."
    );
    describe_gauge!(
        "wallet_outbox_quarantined",
        Unit::Count,
        "Outbox rows set aside as unreadable; each needs an operator."
    );
    describe_gauge!(
        "wallet_consumer_lag",
        Unit::Count,
        "Records the consumer group has not committed, by group and topic."
    );
    describe_gauge!(
        "wallet_loop_up",
        "1 while a supervised background loop runs, 0 between its end and its restart (label loop)."
    );
    describe_gauge!(
        "wallet_loop_stalled",
        "1 while a background loop is stalled: failing past the stall time, or stopped on an integrity error (label loop)."
    );
}

/// Counts the requests of `routes` by route template, method and status
/// (`http_requests_total`) and records their latency
/// (`http_request_duration_seconds`). Applied to matched routes only, so a
/// scan of random paths does not make a label per path.
pub fn track_requests(routes: Router) -> Router {
    routes.route_layer(axum::middleware::from_fn(record))
}

async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!("http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!("http_requests_total", "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}
