//! What the broker tests share: the broker's address, settings tuned for
//! tests, unique names, and a raw reader that sees records' headers.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use wallet_core::ports::{BusError, Message, Publisher};
use wallet_core_kafka::{KafkaPublisher, KafkaSettings, create_topics};

/// The environment variable naming the broker's bootstrap servers.
pub const BROKER_ENV: &str = "WALLET_TEST_KAFKA";

/// The broker the tests run against. Missing is a failure, not a skip:
/// `scripts/lib/broker.sh` starts one and sets the variable.
pub fn bootstrap() -> String {
    std::env::var(BROKER_ENV).unwrap_or_else(|_| {
        panic!(
            "{BROKER_ENV} is not set: start a broker (source scripts/lib/broker.sh; start_broker) \
             and export its bootstrap servers"
        )
    })
}

/// Settings for tests: few partitions (so groups settle fast), short
/// timeouts (so a departed member's partitions move quickly).
pub fn settings(bootstrap: &str, partitions: i32) -> KafkaSettings {
    let mut settings = KafkaSettings::new(bootstrap);
    settings.partitions = partitions;
    settings.replication_factor = 1;
    settings.session_timeout = Duration::from_secs(6);
    settings.delivery_timeout = Duration::from_secs(20);
    settings
        .consumer_properties
        .insert("heartbeat.interval.ms".into(), "500".into());
    settings
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A publisher that creates each topic (with the settings' partitions)
/// before its first message goes there, as the topic admin does at a
/// service's start: the contract scenarios name their topics as they go.
pub struct CreatingPublisher {
    pub settings: KafkaSettings,
    pub publisher: KafkaPublisher,
    created: Mutex<HashSet<String>>,
}

impl CreatingPublisher {
    pub fn new(settings: KafkaSettings) -> CreatingPublisher {
        CreatingPublisher {
            publisher: KafkaPublisher::new(&settings).expect("producer"),
            settings,
            created: Mutex::default(),
        }
    }

    pub async fn ensure(&self, topic: &str) {
        if self.created.lock().unwrap().contains(topic) {
            return;
        }
        create_topics(&self.settings, &[topic.to_owned()])
            .await
            .unwrap_or_else(|e| panic!("creating {topic}: {e}"));
        self.created.lock().unwrap().insert(topic.to_owned());
    }
}

#[async_trait]
impl Publisher for CreatingPublisher {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        let topics: HashSet<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
        for topic in topics {
            self.ensure(topic).await;
        }
        self.publisher.publish(messages).await
    }
}

/// A record as a plain consumer sees it, headers included.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

/// Reads `count` records of `topic` from the beginning with a throwaway
/// group, failing after `patience`.
pub fn read_records(bootstrap: &str, topic: &str, count: usize, patience: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + patience;
    let mut records = Vec::new();
    while records.len() < count {
        assert!(
            Instant::now() < deadline,
            "expected {count} records on {topic}, got {}: {records:?}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
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
                records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default().to_vec(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(e)) => eprintln!("reader: {e}"),
            None => {}
        }
    }
    records
}

/// How many times each key of `seen` was seen.
pub fn counts<T: std::hash::Hash + Eq + Clone>(seen: &[T]) -> HashMap<T, usize> {
    let mut counts = HashMap::new();
    for item in seen {
        *counts.entry(item.clone()).or_insert(0) += 1;
    }
    counts
}

use std::sync::Arc;

use wallet_core::contract::data::TestData;
use wallet_core::event::Envelope;
use wallet_core::ids::{EventId, IdGenerator, WalletId};
use wallet_core::memory::MemoryLedgerStore;
use wallet_core::money::Currency;
use wallet_core::ports::{Claim, LedgerReads, Outbox, Payload, RandomIds, SystemClock};
use wallet_core::runtime::{EventHandler, HandleError, Handled};
use wallet_core::service::LedgerService;

/// A `WalletReserved` event of a fresh deposit, as the wallet service's
/// relay publishes it.
pub fn wallet_reserved(data: &TestData) -> Envelope {
    let request = data.reserve_request(
        WalletId::system(Currency::USD),
        data.wallet_id(),
        "10.00",
        Currency::USD,
    );
    data.wallet_reserved(&request).0.envelope
}

/// The message a relay publishes for `event` on `topic`.
pub fn event_message(topic: &str, event: &Envelope) -> Message {
    Message {
        topic: topic.to_owned(),
        key: event.transfer_id.to_string().into_bytes(),
        payload: Payload::Event(Arc::new(event.clone())),
    }
}

/// The ledger service on its in-memory store: a real store with an inbox
/// that dedupes by event id, and an outbox that receives one
/// `LedgerSucceeded` or `LedgerFailed` per transfer decided.
pub fn ledger() -> Arc<LedgerService<MemoryLedgerStore>> {
    Arc::new(LedgerService::new(
        MemoryLedgerStore::new(),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        Arc::default(),
    ))
}

/// How many events the ledger's store decided (its outbox's records).
pub async fn decisions(ledger: &LedgerService<MemoryLedgerStore>) -> usize {
    let claim = Claim::new(
        wallet_core::contract::data::inspector(),
        wallet_core::ports::Clock::now(&SystemClock),
        Duration::ZERO,
    );
    ledger
        .store()
        .claim(&claim, usize::MAX)
        .await
        .expect("claim")
        .len()
}

/// True when the ledger decided every transfer of `events`.
pub async fn decided_all(ledger: &LedgerService<MemoryLedgerStore>, events: &[Envelope]) -> bool {
    for e in events {
        if ledger
            .store()
            .outcome(e.transfer_id)
            .await
            .expect("read")
            .is_none()
        {
            return false;
        }
    }
    true
}

/// A handler that records every event id it is given, then hands the
/// batch to `inner`.
pub struct Counting<H> {
    pub inner: H,
    pub seen: Mutex<Vec<EventId>>,
}

impl<H> Counting<H> {
    pub fn new(inner: H) -> Arc<Counting<H>> {
        Arc::new(Counting {
            inner,
            seen: Mutex::default(),
        })
    }

    pub fn seen(&self) -> Vec<EventId> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl<H: EventHandler> EventHandler for Counting<H> {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        self.seen
            .lock()
            .unwrap()
            .extend(batch.iter().map(|e| e.event_id));
        self.inner.handle(batch).await
    }
}
