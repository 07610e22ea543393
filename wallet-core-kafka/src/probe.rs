//! What an operator asks of the broker: does it answer (readiness), and how
//! far behind is a consumer group (the lag gauge).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use wallet_core::ports::BusError;

use crate::publisher::bus_error;
use crate::settings::KafkaSettings;

/// Whether the broker answers a metadata request within the settings'
/// request timeout.
pub async fn reachable(settings: &KafkaSettings) -> Result<(), BusError> {
    let config = settings.admin_config();
    let timeout = settings.request_timeout;
    blocking(move || {
        let client: BaseConsumer = config
            .create()
            .map_err(|e| bus_error("creating a client", &e))?;
        client
            .fetch_metadata(None, timeout)
            .map_err(|e| bus_error("fetching metadata", &e))?;
        Ok(())
    })
    .await
}

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
