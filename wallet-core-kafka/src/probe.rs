//! What an operator asks of the broker: does it answer (readiness), and how
//! far behind is a consumer group (the lag gauge).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use wallet_core::ports::BusError;

use crate::publisher::bus_error;
use crate::settings::KafkaSettings;

/// How long one metadata request of [`reachable`] may take before the
/// client's reports are looked at again.
const STEP: Duration = Duration::from_millis(250);

/// Whether the broker answers a metadata request within the settings'
/// request timeout. A TLS handshake that fails (a certificate not signed
/// by `ssl.ca.location`'s authority) or a refused authentication (SASL)
/// ends the wait at once, with librdkafka's words for it. A broker that
/// never answers fails it at the timeout, with the `security.protocol` in
/// force and the last problem the client reported: a plain-text client at
/// a TLS port may hear only that its connections close. A file that a
/// `*.location` property names and that does not exist fails it first,
/// naming both; a property librdkafka refuses (an unknown
/// `security.protocol`, SASL without a username) fails the client's
/// creation.
pub async fn reachable(settings: &KafkaSettings) -> Result<(), BusError> {
    let config = settings.admin_config();
    let timeout = settings.request_timeout;
    let protocol = config
        .get("security.protocol")
        .unwrap_or("plaintext")
        .to_owned();
    // librdkafka's own words for a missing file name neither the file nor
    // the property.
    for (key, path) in config.config_map() {
        if key.ends_with(".location") && path != "probe" {
            std::fs::metadata(path).map_err(|e| BusError(format!("{key} {path}: {e}")))?;
        }
    }
    blocking(move || {
        let client: BaseConsumer<Reports> = config
            .create_with_context(Reports::default())
            .map_err(|e| bus_error("creating a client", &e))?;
        let deadline = Instant::now() + timeout;
        loop {
            let failed = match client.fetch_metadata(None, STEP) {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            // Serves the client's events: its errors reach `Reports`.
            while client.poll(Duration::ZERO).is_some() {}
            let reports = client.context().lock();
            if let Some(refusal) = &reports.refusal {
                return Err(BusError(format!("the broker connection failed: {refusal}")));
            }
            if Instant::now() >= deadline {
                // A plain-text client at a TLS port, or the other way
                // round, may hear nothing but a closed connection.
                let mut message = format!(
                    "no answer within {timeout:?} with security.protocol={protocol}: {failed}"
                );
                if let Some(last) = &reports.last {
                    message.push_str(&format!("; the client last reported: {last}"));
                }
                return Err(BusError(message));
            }
        }
    })
    .await
}

/// What a client reported about its connections: the first refusal that
/// waiting will not mend (a failed TLS handshake, failed authentication),
/// and the last problem of any other kind.
#[derive(Default)]
struct Reports(Mutex<Reported>);

#[derive(Default)]
struct Reported {
    refusal: Option<String>,
    last: Option<String>,
}

impl Reports {
    fn lock(&self) -> std::sync::MutexGuard<'_, Reported> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientContext for Reports {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "broker client error");
        let code = match &error {
            KafkaError::Global(code)
            | KafkaError::MessageConsumption(code)
            | KafkaError::MessageConsumptionFatal(code) => Some(*code),
            _ => None,
        };
        let mut reported = self.lock();
        match code {
            Some(
                RDKafkaErrorCode::SSL
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed,
            ) => {
                reported.refusal.get_or_insert_with(|| reason.to_owned());
            }
            // Says only that the others failed: keep what said why.
            Some(RDKafkaErrorCode::AllBrokersDown) if reported.last.is_some() => {}
            _ => reported.last = Some(reason.to_owned()),
        }
    }
}

impl ConsumerContext for Reports {}

/// How many records of a topic a consumer group has not committed yet, as
/// asked again and again by a gauge: one client, made once, that never
/// joins the group (so asking moves no partition).
pub struct GroupLag {
    client: Arc<BaseConsumer>,
    topic: String,
    timeout: Duration,
}

impl std::fmt::Debug for GroupLag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupLag")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl GroupLag {
    /// A probe of `group`'s lag on `topic`. Does not contact the broker
    /// yet.
    pub fn new(settings: &KafkaSettings, group: &str, topic: &str) -> Result<GroupLag, BusError> {
        let client: BaseConsumer = settings
            .consumer_config(group)
            .create()
            .map_err(|e| bus_error("creating a client", &e))?;
        Ok(GroupLag {
            client: Arc::new(client),
            topic: topic.to_owned(),
            timeout: settings.request_timeout,
        })
    }

    /// The high watermark minus the committed offset, summed over the
    /// topic's partitions (the low watermark stands in where the group
    /// committed nothing).
    pub async fn lag(&self) -> Result<u64, BusError> {
        let (client, topic, timeout) = (self.client.clone(), self.topic.clone(), self.timeout);
        blocking(move || {
            let lags = partition_lags(&*client, &topic, timeout)?;
            Ok(lags.iter().map(|(_, lag)| lag).sum())
        })
        .await
    }
}

/// For each partition of `topic`, by number: the group's committed offset
/// (the low watermark where it committed none) and the messages after it
/// (the high watermark minus it). Blocking: several broker requests.
pub(crate) fn partition_lags<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(u64, u64)>, BusError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| bus_error("fetching metadata", &e))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let committed = client
        .committed_offsets(wanted, timeout)
        .map_err(|e| bus_error("fetching committed offsets", &e))?;
    (0..partitions)
        .map(|partition| {
            let (low, high) = client
                .fetch_watermarks(topic, partition, timeout)
                .map_err(|e| bus_error("fetching watermarks", &e))?;
            let done = committed
                .find_partition(topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(low);
            Ok((done.max(0) as u64, (high - done).max(0) as u64))
        })
        .collect()
}

/// Runs a blocking client call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, BusError> + Send + 'static,
) -> Result<T, BusError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| BusError(format!("broker call did not finish: {e}")))?
}
