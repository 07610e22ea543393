//! What each service binary installs for its whole process before it
//! starts: the library installs nothing process-wide, so that a program
//! embedding the services keeps its own subscriber and recorder.

use anyhow::Context;
use tracing_subscriber::util::SubscriberInitExt;
use wallet_server::telemetry::{self, Metrics, Tracing};

/// Installs the log subscriber of `service` (JSON lines when `json`; spans
/// exported over OTLP when a collector is set) and the Prometheus recorder,
/// describes the services' metrics to it, and returns what `/metrics`
/// serves and the span exporter to flush at the stop.
pub fn telemetry(json: bool, service: &str) -> anyhow::Result<(Metrics, Tracing)> {
    let (subscriber, traces) = telemetry::logs(json, service)?;
    subscriber
        .try_init()
        .context("installing the log and trace subscriber")?;
    let (recorder, metrics) = Metrics::recorder()?;
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    telemetry::describe_metrics();
    Ok((metrics, traces))
}
