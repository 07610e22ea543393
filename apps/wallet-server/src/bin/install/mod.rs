//! What each service binary installs for its whole process before it
//! starts: the library installs nothing process-wide, so that a program
//! embedding the services keeps its own subscriber and recorder.

use anyhow::Context;
use tracing_subscriber::util::SubscriberInitExt;
use wallet_server::telemetry::{self, Metrics};

/// Installs the log subscriber (JSON lines when `json`) and the Prometheus
/// recorder, describes the services' metrics to it, and returns what
/// `/metrics` serves.
pub fn telemetry(json: bool) -> anyhow::Result<Metrics> {
    telemetry::logs(json)
        .try_init()
        .context("installing the log subscriber")?;
    let (recorder, metrics) = Metrics::recorder()?;
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    telemetry::describe_metrics();
    Ok(metrics)
}
