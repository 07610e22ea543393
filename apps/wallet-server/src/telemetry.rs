//! Logs, traces and metrics of a service process.
//!
//! Nothing here installs process-wide state. [`logs`] builds the subscriber
//! (and the span exporter, when a collector is set) and
//! [`Metrics::recorder`] the recorder; the binaries install them (their
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
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The variables that turn the export of spans on: OTLP over HTTP to this
/// collector (`/v1/traces` is appended to the first; the second is the
/// traces' whole URL).
pub const OTLP_ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];
/// The variable naming the service in exported spans (`service.name`),
/// in place of the process's own name.
pub const SERVICE_NAME: &str = "OTEL_SERVICE_NAME";

/// The process's traces: exported over OTLP, or (without a collector set)
/// made for the logs only.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still buffered and stops the exporter; waits for
    /// the collector (up to its export timeout). Nothing to do when not
    /// exporting.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match flushed {
            Ok(Ok(())) => tracing::info!("spans exported"),
            Ok(Err(error)) => tracing::warn!(%error, "spans left unexported at exit"),
            Err(error) => tracing::warn!(%error, "stopping the span exporter failed"),
        }
    }
}

/// The name exported spans carry as `service.name`: `OTEL_SERVICE_NAME`
/// (as `env` reads it) when set, else `service`.
pub fn service_name(env: impl Fn(&str) -> Option<String>, service: &str) -> String {
    env(SERVICE_NAME)
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| service.to_owned())
}

/// The span exporter of `service`, when `env` sets a collector
/// ([`OTLP_ENDPOINTS`]); `None` otherwise, and nothing is exported. The
/// exporter reads OpenTelemetry's other standard variables itself
/// (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
/// `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, ...).
pub fn tracer_provider(
    env: impl Fn(&str) -> Option<String>,
    service: &str,
) -> anyhow::Result<Option<SdkTracerProvider>> {
    let set = OTLP_ENDPOINTS
        .iter()
        .any(|name| env(name).is_some_and(|value| !value.is_empty()));
    if !set {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("creating the OTLP span exporter")?;
    let resource = Resource::builder()
        .with_service_name(service_name(&env, service))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

/// A subscriber logging to stderr, filtered by `RUST_LOG` (default
/// `info`); one JSON object per line when `json`. Every line of a saga
/// carries its `transfer_id` and `correlation_id` fields, as the core logs
/// them. Not installed: a binary installs it
/// (`tracing_subscriber::util::SubscriberInitExt::try_init`).
///
/// With a collector set in the environment ([`tracer_provider`]), the
/// subscriber also exports the spans at info level and above over OTLP, as
/// `service` (or `OTEL_SERVICE_NAME`), whatever `RUST_LOG` lets through to
/// the logs; without one, no exporter is made and spans carry no trace
/// context. The [`Tracing`] flushes the exporter at the stop.
pub fn logs(
    json: bool,
    service: &str,
) -> anyhow::Result<(Box<dyn Subscriber + Send + Sync>, Tracing)> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = if json {
        Box::new(logs.json().flatten_event(true))
    } else {
        Box::new(logs)
    };
    let provider = tracer_provider(|name| std::env::var(name).ok(), service)?;
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("wallet-server"))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                meta.is_span() && *meta.level() <= tracing::Level::INFO
            }))
    });
    let subscriber = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(spans);
    Ok((Box::new(subscriber), Tracing { provider }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn without_a_collector_nothing_is_made_to_export() {
        let provider = tracer_provider(env(&[]), "wallet-service").unwrap();
        assert!(
            provider.is_none(),
            "an exporter was made with no collector set"
        );
        let empty = [("OTEL_EXPORTER_OTLP_ENDPOINT", "")];
        let provider = tracer_provider(env(&empty), "wallet-service").unwrap();
        assert!(
            provider.is_none(),
            "an exporter was made for an empty endpoint"
        );
    }

    #[test]
    fn a_collector_set_makes_an_exporter() {
        for name in OTLP_ENDPOINTS {
            let vars = [(name, "http://127.0.0.1:4318")];
            let provider = tracer_provider(env(&vars), "wallet-service").unwrap();
            let provider = provider.unwrap_or_else(|| panic!("no exporter with {name} set"));
            provider.shutdown().unwrap();
        }
    }

    #[test]
    fn the_service_name_is_the_process_unless_otel_service_name_says_otherwise() {
        assert_eq!(service_name(env(&[]), "ledger-service"), "ledger-service");
        let named = [(SERVICE_NAME, "ledger-eu")];
        assert_eq!(service_name(env(&named), "ledger-service"), "ledger-eu");
        let empty = [(SERVICE_NAME, "")];
        assert_eq!(
            service_name(env(&empty), "ledger-service"),
            "ledger-service"
        );
    }
}
