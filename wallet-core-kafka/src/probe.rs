//! What an operator asks of the broker: does it answer (readiness), and how
//! far behind is a consumer group (the lag gauge).

use rdkafka::consumer::{BaseConsumer, Consumer};
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

/// How many records of `topic` consumer group `group` has not committed
/// yet, over all partitions: the high watermark minus the committed offset
/// (the low watermark where the group committed nothing). Asks without
/// joining the group, so it moves no partition.
pub async fn group_lag(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
) -> Result<u64, BusError> {
    let config = settings.consumer_config(group);
    let timeout = settings.request_timeout;
    let topic = topic.to_owned();
    blocking(move || {
        let client: BaseConsumer = config
            .create()
            .map_err(|e| bus_error("creating a client", &e))?;
        let metadata = client
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| bus_error("fetching metadata", &e))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let mut wanted = TopicPartitionList::new();
        for partition in 0..partitions {
            wanted.add_partition(&topic, partition);
        }
        let committed = client
            .committed_offsets(wanted, timeout)
            .map_err(|e| bus_error("fetching committed offsets", &e))?;
        let mut lag = 0;
        for partition in 0..partitions {
            let (low, high) = client
                .fetch_watermarks(&topic, partition, timeout)
                .map_err(|e| bus_error("fetching watermarks", &e))?;
            let done = committed
                .find_partition(&topic, partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(low);
            lag += (high - done).max(0) as u64;
        }
        Ok(lag)
    })
    .await
}

/// Runs a blocking client call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, BusError> + Send + 'static,
) -> Result<T, BusError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| BusError(format!("broker call did not finish: {e}")))?
}
