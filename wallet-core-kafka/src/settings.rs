//! Client settings: what every producer, consumer and admin client of this
//! crate is built from. Every field has a documented default
//! ([`KafkaSettings::new`]); any other librdkafka property passes through
//! [`KafkaSettings::properties`] and its producer and consumer variants.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use wallet_core::event::{LEDGER_EVENTS, WALLET_EVENTS};
use wallet_core::runtime::{dead_letter_topic, retry_topic};

/// The consumer groups of the three services, whose dead-letter topics the
/// topic admin creates by default. The same names the services use.
pub const DEFAULT_GROUPS: [&str; 3] = ["ledger-service", "wallet-service", "transaction-service"];

/// Partitions of each topic the admin creates, unless configured otherwise:
/// the in-memory bus's default, enough for a few consumers per group.
pub const DEFAULT_PARTITIONS: i32 = 8;

/// How to reach the broker and how to behave on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: comma-separated `host:port` list. No default
    /// that could reach a wrong cluster: it must be given.
    pub bootstrap_servers: String,
    /// `client.id`, shown in broker logs and metrics. Default
    /// `"wallet-core"`.
    pub client_id: String,
    /// `linger.ms`: how long the producer waits to fill a batch. A relay
    /// publishes a claimed batch at once, so a few milliseconds let its
    /// messages share requests without delaying a lone event noticeably.
    /// Default 5 ms.
    pub linger: Duration,
    /// `message.timeout.ms`: how long the producer keeps trying to deliver
    /// one message before [`Publisher::publish`](wallet_core::ports::Publisher::publish)
    /// fails. Must stay well below the relay's lease (30 s by default), or
    /// another relay instance publishes the same records meanwhile
    /// (harmless: consumers dedupe, but wasteful). Default 10 s.
    pub delivery_timeout: Duration,
    /// `session.timeout.ms`: how long the group waits for a silent consumer
    /// before giving its partitions to others. Shorter moves a crashed
    /// consumer's partitions sooner; too short evicts a consumer stuck in a
    /// long database transaction. Default 10 s.
    pub session_timeout: Duration,
    /// `fetch.wait.max.ms`: how long a consumer's fetch may wait for new
    /// records. Kafka answers a fetch as soon as records arrive, so this
    /// costs nothing in latency there and bounds the empty fetches of an
    /// idle consumer (one per wait). Some brokers hold every fetch for
    /// (part of) the wait even when records are there, which puts it on
    /// every hop: tansu 0.6.0 does. Default 100 ms (librdkafka's is 500).
    pub fetch_wait: Duration,
    /// `auto.offset.reset`: where a group with no committed offset starts.
    /// Default `"earliest"`: a new group reads what was published before it
    /// existed, so no event is skipped on a first deploy.
    pub auto_offset_reset: String,
    /// Partitions of every topic the admin creates: the upper bound on
    /// consumers of one group working at once. Partition counts cannot
    /// shrink, and growing them moves keys. Default
    /// [`DEFAULT_PARTITIONS`].
    pub partitions: i32,
    /// Replication factor of every topic the admin creates; `-1` lets the
    /// broker choose (`default.replication.factor`, Kafka 2.4+). Default `-1`.
    pub replication_factor: i32,
    /// The event topics the admin creates. Default `wallet.events` and
    /// `ledger.events`.
    pub topics: Vec<String>,
    /// Consumer groups whose dead-letter topics (`<group>.dlq`) and retry
    /// topics (`<group>.retry`) the admin creates. Default
    /// [`DEFAULT_GROUPS`].
    pub dead_letter_groups: Vec<String>,
    /// How long admin requests and blocking consumer calls (commit, seek)
    /// may take before they fail. Default 10 s.
    pub request_timeout: Duration,
    /// librdkafka properties for every client, applied after the settings
    /// above, so they override them. Default empty.
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the producer only, applied last. Default
    /// empty.
    pub producer_properties: BTreeMap<String, String>,
    /// librdkafka properties for consumers only, applied last. Default
    /// empty.
    pub consumer_properties: BTreeMap<String, String>,
}

impl KafkaSettings {
    /// The defaults, for the broker at `bootstrap_servers`.
    pub fn new(bootstrap_servers: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: "wallet-core".to_owned(),
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(100),
            auto_offset_reset: "earliest".to_owned(),
            partitions: DEFAULT_PARTITIONS,
            replication_factor: -1,
            topics: vec![WALLET_EVENTS.to_owned(), LEDGER_EVENTS.to_owned()],
            dead_letter_groups: DEFAULT_GROUPS.iter().map(|g| (*g).to_owned()).collect(),
            request_timeout: Duration::from_secs(10),
            properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
        }
    }

    /// Every topic the admin creates: the event topics, then the dead-letter
    /// topics, then the retry topics of the same groups.
    pub fn all_topics(&self) -> Vec<String> {
        let mut topics = self.topics.clone();
        topics.extend(self.dead_letter_groups.iter().map(|g| dead_letter_topic(g)));
        topics.extend(self.dead_letter_groups.iter().map(|g| retry_topic(g)));
        topics
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", &self.client_id);
        config
    }

    fn apply(config: &mut ClientConfig, properties: &BTreeMap<String, String>) {
        for (key, value) in properties {
            config.set(key, value);
        }
    }

    /// The producer's configuration: idempotent, every in-sync replica
    /// acknowledging, keys partitioned as the Java client does.
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.base();
        config
            // No duplicates or reordering from the producer's own retries.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // murmur2 of the key, as the Java client's default partitioner:
            // a transfer's events land on the partition any Java producer
            // would pick. Keyless messages (none here) go to random ones.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", millis(self.linger))
            .set("message.timeout.ms", millis(self.delivery_timeout));
        Self::apply(&mut config, &self.properties);
        Self::apply(&mut config, &self.producer_properties);
        config
    }

    /// The configuration of a consumer in `group`: nothing is stored or
    /// committed except by [`Subscription::commit`](wallet_core::ports::Subscription::commit).
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group)
            // Offsets move only when the runner commits, after the store's
            // transaction did: a crash in between redelivers, never skips.
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &self.auto_offset_reset)
            .set("session.timeout.ms", millis(self.session_timeout))
            .set("fetch.wait.max.ms", millis(self.fetch_wait))
            // Only what the producers committed, should a transactional
            // producer ever write to these topics.
            .set("isolation.level", "read_committed");
        Self::apply(&mut config, &self.properties);
        Self::apply(&mut config, &self.consumer_properties);
        config
    }

    /// The admin client's configuration.
    pub fn admin_config(&self) -> ClientConfig {
        let mut config = self.base();
        Self::apply(&mut config, &self.properties);
        config
    }
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_commit_only_when_told_and_fetch_promptly() {
        let settings = KafkaSettings::new("127.0.0.1:9092");
        let config = settings.consumer_config("ledger-service");
        for (key, value) in [
            ("group.id", "ledger-service"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("session.timeout.ms", "10000"),
            ("fetch.wait.max.ms", "100"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn properties_override_the_settings_and_stay_with_their_client() {
        let mut settings = KafkaSettings::new("127.0.0.1:9092");
        settings.fetch_wait = Duration::from_millis(25);
        settings
            .consumer_properties
            .insert("session.timeout.ms".into(), "6000".into());
        settings
            .producer_properties
            .insert("linger.ms".into(), "1".into());
        let consumer = settings.consumer_config("g");
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("25"));
        assert_eq!(consumer.get("session.timeout.ms"), Some("6000"));
        assert_eq!(consumer.get("linger.ms"), None);
        let producer = settings.producer_config();
        assert_eq!(producer.get("linger.ms"), Some("1"));
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("fetch.wait.max.ms"), None);
    }
}
