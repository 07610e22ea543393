//! Moving a consumer group's committed offsets back, for recovery: after
//! a service's database is restored from a backup, the events it had
//! applied since are behind the group's committed offsets and would never
//! be delivered again. Rewound to a point at or before the backup, the
//! group delivers them again; what the restored inbox already holds is
//! skipped, the rest applied.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use wallet_core::ports::BusError;

use crate::dead_letters::READER_GROUP;
use crate::publisher::bus_error;
use crate::settings::KafkaSettings;

/// Where to move a group's offsets to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The first record each partition still holds.
    Earliest,
    /// The first record of each partition written at or after this time
    /// (the end of a partition with none).
    Time(SystemTime),
}

/// One partition's committed offset before and after a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionReset {
    /// The partition.
    pub partition: i32,
    /// The group's committed offset before, if it had one.
    pub before: Option<i64>,
    /// The committed offset now: the next record the group reads.
    pub after: i64,
}

/// Commits, for consumer group `group` on `topic`, the offsets `to` names
/// on every partition, and reads them back. Refused while the group has
/// members: a running consumer would commit over them (stop every
/// instance of the group's service first). A broker that cannot describe
/// the group (tansu) is taken at the caller's word, with a warning.
/// Blocking calls run off the async threads.
pub async fn reset_offsets(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    to: ResetTo,
) -> Result<Vec<PartitionReset>, BusError> {
    let (settings, group, topic) = (settings.clone(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || reset_blocking(&settings, &group, &topic, to))
        .await
        .map_err(|e| BusError(format!("the reset did not finish: {e}")))?
}

fn reset_blocking(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    to: ResetTo,
) -> Result<Vec<PartitionReset>, BusError> {
    let timeout = settings.request_timeout;
    let client: BaseConsumer = settings
        .consumer_config(group)
        .create()
        .map_err(|e| bus_error("creating a client", &e))?;
    match client.fetch_group_list(Some(group), timeout) {
        Ok(groups) => {
            if let Some(described) = groups.groups().iter().find(|g| g.name() == group) {
                let members = described.members().len();
                if members > 0 {
                    return Err(BusError(format!(
                        "consumer group {group} has {members} member(s) (state {}): stop \
                         every instance of its service before moving its offsets",
                        described.state()
                    )));
                }
            }
        }
        // tansu 0.6.0 drops the connection instead of describing a group
        // that has committed offsets.
        Err(error) => tracing::warn!(%error, group,
            "the broker did not describe the group: its offsets are moved on the word that \
             every instance of its service is stopped"),
    }
    let partitions = partitions_of(&client, topic, timeout)?;
    let mut wanted = TopicPartitionList::new();
    for &partition in &partitions {
        wanted.add_partition(topic, partition);
    }
    let before = client
        .committed_offsets(wanted.clone(), timeout)
        .map_err(|e| bus_error("fetching committed offsets", &e))?;
    let targets = targets(settings, &client, topic, &partitions, to, timeout)?;
    let mut commit = TopicPartitionList::new();
    for (&partition, &offset) in partitions.iter().zip(&targets) {
        commit
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(|e| bus_error("listing the offsets", &e))?;
    }
    client
        .commit(&commit, CommitMode::Sync)
        .map_err(|e| bus_error("committing the offsets", &e))?;
    let after = client
        .committed_offsets(wanted, timeout)
        .map_err(|e| bus_error("reading the offsets back", &e))?;
    partitions
        .iter()
        .zip(&targets)
        .map(|(&partition, &target)| {
            let read = offset_of(&after, topic, partition);
            if read != Some(target) {
                return Err(BusError(format!(
                    "{topic}[{partition}]: committed {target}, the broker answers {read:?}"
                )));
            }
            Ok(PartitionReset {
                partition,
                before: offset_of(&before, topic, partition),
                after: target,
            })
        })
        .collect()
}

/// The partitions of `topic`, by number; an error when it has none.
fn partitions_of(
    client: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, BusError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| bus_error("fetching metadata", &e))?;
    let count = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    if count == 0 {
        return Err(BusError(format!("topic {topic} has no partitions")));
    }
    Ok((0..count).collect())
}

/// The offset `to` names on each of `partitions`, in order.
fn targets(
    settings: &KafkaSettings,
    client: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    to: ResetTo,
    timeout: Duration,
) -> Result<Vec<i64>, BusError> {
    let watermarks = |partition: i32| {
        client
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| bus_error("fetching watermarks", &e))
    };
    match to {
        ResetTo::Earliest => partitions
            .iter()
            .map(|&p| watermarks(p).map(|(low, _)| low))
            .collect(),
        ResetTo::Time(time) => {
            let millis = time
                .duration_since(UNIX_EPOCH)
                .map_err(|_| BusError("a time before 1970".into()))?
                .as_millis() as i64;
            let mut asked = TopicPartitionList::new();
            for &partition in partitions {
                asked
                    .add_partition_offset(topic, partition, Offset::Offset(millis))
                    .map_err(|e| bus_error("listing the partitions", &e))?;
            }
            let found = client
                .offsets_for_times(asked, timeout)
                .map_err(|e| bus_error("finding the offsets of the time", &e))?;
            partitions
                .iter()
                .map(|&p| {
                    let (low, high) = watermarks(p)?;
                    // No record at or after the time: the end. tansu
                    // 0.6.0 answers the earliest offset instead, so a
                    // partition whose last record is older than the time
                    // is moved to its end whatever the broker says.
                    match offset_of(&found, topic, p) {
                        Some(_)
                            if high > low && last_written(settings, topic, p, high)? < millis =>
                        {
                            Ok(high)
                        }
                        Some(offset) => Ok(offset),
                        None => Ok(high),
                    }
                })
                .collect()
        }
    }
}

/// When the record before `high` (the partition's last) was written, in
/// milliseconds since 1970, read by a client of its own that joins no
/// group and commits nothing.
fn last_written(
    settings: &KafkaSettings,
    topic: &str,
    partition: i32,
    high: i64,
) -> Result<i64, BusError> {
    let timeout = settings.request_timeout;
    let reader: BaseConsumer = settings
        .consumer_config(READER_GROUP)
        .create()
        .map_err(|e| bus_error("creating a reader", &e))?;
    let mut at = TopicPartitionList::new();
    at.add_partition_offset(topic, partition, Offset::Offset(high - 1))
        .map_err(|e| bus_error("listing the partition", &e))?;
    reader.assign(&at).map_err(|e| bus_error("assigning", &e))?;
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                return message.timestamp().to_millis().ok_or_else(|| {
                    BusError(format!("{topic}[{partition}]@{}: no timestamp", high - 1))
                });
            }
            Some(Err(e)) => return Err(bus_error("reading the last record", &e)),
            None => {}
        }
    }
    Err(BusError(format!(
        "{topic}[{partition}]@{}: not read within {timeout:?}",
        high - 1
    )))
}

/// The offset a list holds for one partition, when it is a position.
fn offset_of(list: &TopicPartitionList, topic: &str, partition: i32) -> Option<i64> {
    match list.find_partition(topic, partition)?.offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}
