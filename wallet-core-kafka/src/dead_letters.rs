//! Reading a dead-letter topic (`<group>.dlq`), or the events a group
//! parked on its retry topic (`<group>.retry`): every record from the
//! start of each partition to its end as it stands when the read begins,
//! for an operator to list, inspect and replay.
//!
//! The reader is read-only towards the broker: it assigns itself the
//! topic's partitions and seeks them to the beginning. It never subscribes,
//! so it joins no consumer group (no rebalance of the services' groups),
//! and it never commits, so no group gets an offset. Its `group.id`
//! ([`READER_GROUP`]) is there only because librdkafka assigns partitions
//! through a group handle; nothing is written under it.
//!
//! ```no_run
//! use wallet_core_kafka::{DeadLetters, KafkaSettings};
//!
//! # async fn run() -> Result<(), wallet_core::ports::BusError> {
//! let settings = KafkaSettings::new("127.0.0.1:9092");
//! for record in DeadLetters::of_group(&settings, "wallet-service").records().await? {
//!     let reason = record.letter().map(|l| l.reason).unwrap_or_default();
//!     println!("{}:{} {reason}", record.partition, record.offset);
//! }
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use wallet_core::ports::BusError;
use wallet_core::runtime::{DeadLetter, dead_letter_topic, retry_topic};

use crate::probe::partition_lags;
use crate::publisher::bus_error;
use crate::settings::KafkaSettings;

/// The `group.id` the reader's client carries. It never joins this group
/// and never commits under it.
pub const READER_GROUP: &str = "wallet-dead-letter-reader";

/// How long one poll waits before the reader checks its progress.
const POLL_SLICE: Duration = Duration::from_millis(200);

/// One record of a dead-letter topic, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRecord {
    /// Its partition.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
    /// Its key: the original message's key (the transfer id).
    pub key: Vec<u8>,
    /// Its bytes: a [`DeadLetter`] as JSON, when a consumer wrote it.
    pub payload: Vec<u8>,
    /// Its headers, by name (see [`crate::headers`]).
    pub headers: BTreeMap<String, String>,
}

impl DeadLetterRecord {
    /// The dead letter it carries, or why its bytes are not one.
    pub fn letter(&self) -> Result<DeadLetter, String> {
        serde_json::from_slice(&self.payload).map_err(|e| format!("not a dead letter: {e}"))
    }

    /// The key as text (invalid UTF-8 replaced).
    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }

    /// The value of header `name`, if it is set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads one dead-letter topic from start to end. Cheap: each
/// [`DeadLetters::records`] makes its own client and closes it.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    settings: KafkaSettings,
    topic: String,
}

impl DeadLetters {
    /// A reader of `topic`.
    pub fn new(settings: &KafkaSettings, topic: impl Into<String>) -> DeadLetters {
        DeadLetters {
            settings: settings.clone(),
            topic: topic.into(),
        }
    }

    /// A reader of consumer group `group`'s dead-letter topic,
    /// [`dead_letter_topic`]`(group)`.
    pub fn of_group(settings: &KafkaSettings, group: &str) -> DeadLetters {
        DeadLetters::new(settings, dead_letter_topic(group))
    }

    /// The topic it reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Every record of the topic from the start of each partition to its
    /// high watermark as read first, by partition, then offset. Records
    /// published meanwhile may be left out. Fails when the topic does not
    /// exist, or when the broker delivers nothing for the request timeout
    /// while records remain.
    pub async fn records(&self) -> Result<Vec<DeadLetterRecord>, BusError> {
        let (settings, topic) = (self.settings.clone(), self.topic.clone());
        tokio::task::spawn_blocking(move || read_all(&settings, &topic))
            .await
            .map_err(|e| BusError(format!("reading {}: {e}", self.topic)))?
    }
}

/// One event a consumer group parked on its retry topic, and whether the
/// group's retry consumer is past it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRecord {
    /// The record as parked: the original event's key, bytes and headers.
    pub record: DeadLetterRecord,
    /// `true` while the retry consumer (group `<group>.retry`) has not
    /// committed past it: it is still being retried, and its transfer
    /// waits. `false` once it was applied, or set aside as a dead letter.
    pub pending: bool,
}

/// Reads the events a consumer group parked on its retry topic
/// ([`retry_topic`]), each with whether its retry consumer is past it.
/// Read-only, like [`DeadLetters`]: reading moves no group.
#[derive(Debug, Clone)]
pub struct Parked {
    reader: DeadLetters,
}

impl Parked {
    /// A reader of the events `group` parked.
    pub fn of_group(settings: &KafkaSettings, group: &str) -> Parked {
        Parked {
            reader: DeadLetters::new(settings, retry_topic(group)),
        }
    }

    /// The retry topic it reads; its retry consumer's group has the same
    /// name.
    pub fn topic(&self) -> &str {
        self.reader.topic()
    }

    /// Every parked record, by partition, then offset (see
    /// [`DeadLetters::records`]), each marked pending or not from the
    /// retry group's committed offsets, read after the records (so a
    /// record retried meanwhile shows as done).
    pub async fn records(&self) -> Result<Vec<ParkedRecord>, BusError> {
        let records = self.reader.records().await?;
        let settings = self.reader.settings.clone();
        let topic = self.topic().to_owned();
        let committed = tokio::task::spawn_blocking(move || {
            // The retry consumer's group is named after its topic.
            let client: BaseConsumer = settings
                .consumer_config(&topic)
                .create()
                .map_err(|e| bus_error("creating a client", &e))?;
            partition_lags(&client, &topic, settings.request_timeout)
        })
        .await
        .map_err(|e| BusError(format!("reading {}: {e}", self.topic())))??;
        Ok(records
            .into_iter()
            .map(|record| {
                let done = committed
                    .get(record.partition as usize)
                    .map_or(0, |(committed, _)| *committed);
                ParkedRecord {
                    pending: record.offset >= done,
                    record,
                }
            })
            .collect())
    }
}

/// The reader's client configuration: the settings' consumer properties,
/// then, whatever they say, nothing committed or stored, and an end of
/// partition reported.
fn reader(settings: &KafkaSettings) -> Result<BaseConsumer, BusError> {
    let mut config = settings.consumer_config(READER_GROUP);
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true");
    config
        .create()
        .map_err(|e| bus_error("creating the reader", &e))
}

/// Blocking: the records of `topic`, from start to the ends read first.
fn read_all(settings: &KafkaSettings, topic: &str) -> Result<Vec<DeadLetterRecord>, BusError> {
    let timeout = settings.request_timeout;
    let consumer = reader(settings)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| bus_error("fetching metadata", &e))?;
    let partitions = match metadata.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            t.partitions().iter().map(|p| p.id()).collect::<Vec<i32>>()
        }
        Some(t) => {
            return Err(BusError(match t.error().map(RDKafkaErrorCode::from) {
                None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
                    format!("topic {topic} does not exist")
                }
                Some(code) => format!("topic {topic} cannot be read: {code}"),
            }));
        }
        None => return Err(BusError(format!("topic {topic} does not exist"))),
    };
    // Where each partition ends now: the reader stops there.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| bus_error("fetching watermarks", &e))?;
        if high > low {
            ends.insert(partition, high);
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(|e| bus_error("assigning", &e))?;
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return Ok(records);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| bus_error("assigning", &e))?;
    let mut progress = Instant::now();
    while !ends.is_empty() {
        match consumer.poll(POLL_SLICE) {
            Some(Ok(message)) => {
                let partition = message.partition();
                let Some(&end) = ends.get(&partition) else {
                    continue;
                };
                progress = Instant::now();
                if message.offset() >= end {
                    ends.remove(&partition);
                    continue;
                }
                records.push(record(&message));
                if message.offset() + 1 >= end {
                    ends.remove(&partition);
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                ends.remove(&partition);
            }
            Some(Err(error)) => return Err(bus_error(&format!("reading {topic}"), &error)),
            None if progress.elapsed() > timeout => {
                let left: Vec<String> = ends.keys().map(i32::to_string).collect();
                return Err(BusError(format!(
                    "reading {topic}: nothing delivered for {timeout:?} while partitions {} \
                     had records left",
                    left.join(", ")
                )));
            }
            None => {}
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}

fn record(message: &rdkafka::message::BorrowedMessage<'_>) -> DeadLetterRecord {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                    (h.key.to_owned(), value.into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    DeadLetterRecord {
        partition: u32::try_from(message.partition()).expect("partitions are not negative"),
        offset: u64::try_from(message.offset()).expect("offsets are not negative"),
        key: message.key().unwrap_or_default().to_vec(),
        payload: message.payload().unwrap_or_default().to_vec(),
        headers,
    }
}
