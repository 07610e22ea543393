//! `walletctl broker-floor`: what the broker alone costs one hop of a
//! transfer, the floor under the end-to-end latency on that broker.
//!
//! One record at a time goes to a fresh topic of one partition through the
//! services' producer, and a fresh consumer group reads it back with the
//! services' consumer settings (`fetch.wait.max.ms` from `--fetch-wait-ms`,
//! the services' `KAFKA_FETCH_WAIT_MS`; `fetch.min.bytes` left at
//! librdkafka's 1, as the services leave it; any `--kafka-property` on top,
//! as their `KAFKA_PROPERTIES`). One sample is the time from handing the
//! record to the producer to the consumer's poll returning it; the next
//! record goes only then. The first few records, sent while the group
//! forms, are not timed.
//!
//! A transfer crosses the broker twice on its way to a terminal state (the
//! wallet service's `WalletReserved` to the ledger, the ledger's outcome
//! back to the transaction service), so no end-to-end latency on that
//! broker gets below twice this floor. Only loopback brokers are measured.
//! Each run leaves its topic (a few hundred small records) on the broker.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde::Serialize;
use wallet_core::ports::{Message, Payload, Publisher, Subscription};
use wallet_core_kafka::{KafkaPublisher, KafkaSettings, KafkaSubscription, create_topics};

use crate::bench::Stats;

/// Records sent and read back before the timed ones: the first waits for
/// the group to form and the partition to be assigned.
const WARM_UP: usize = 3;

/// Bytes of each record's payload: about an event's size.
const PAYLOAD_BYTES: usize = 512;

/// Options of `walletctl broker-floor`; the global `--json` prints the
/// report as one JSON line.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerFloorArgs {
    /// The broker's bootstrap servers, `host:port` (several separated by
    /// commas); loopback addresses only.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    pub brokers: String,
    /// Records timed, one at a time.
    #[arg(long, default_value_t = 200)]
    pub records: usize,
    /// The consumer's longest fetch wait (`fetch.wait.max.ms`), as the
    /// services' `KAFKA_FETCH_WAIT_MS`.
    #[arg(long, env = "KAFKA_FETCH_WAIT_MS", default_value_t = 100)]
    pub fetch_wait_ms: u64,
    /// Any librdkafka property, as `key=value`, for both clients, as the
    /// services' `KAFKA_PROPERTIES`; repeat the flag, or separate with
    /// commas in the variable.
    #[arg(long = "kafka-property", env = "KAFKA_PROPERTIES", hide_env_values = true,
        value_delimiter = ',', value_parser = key_value)]
    pub properties: Vec<(String, String)>,
    /// Longest wait for one record, in milliseconds, the untimed first ones
    /// included.
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
}

pub(crate) fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

/// The report of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FloorReport {
    /// Always `broker_floor`, to tell this line from others in a log.
    pub measure: &'static str,
    /// The bootstrap servers.
    pub brokers: String,
    /// The topic the records went to.
    pub topic: String,
    /// Records timed.
    pub records: usize,
    /// The consumer's `fetch.wait.max.ms`.
    pub fetch_wait_ms: u64,
    /// Record handed to the producer to record returned by a poll, ms.
    pub latency_ms: Stats,
}

impl FloorReport {
    /// The human-readable form.
    fn table(&self) -> String {
        let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        let s = &self.latency_ms;
        format!(
            "walletctl broker-floor: {} ({} records one at a time, fetch.wait.max.ms {})\n\
             \n  {:<20} {:>9} {:>9} {:>9} {:>9}\n  {:<20} {:>9} {:>9} {:>9} {:>9}\n",
            self.brokers,
            self.records,
            self.fetch_wait_ms,
            "ms",
            "p50",
            "p95",
            "p99",
            "max",
            "produce to consume",
            cell(s.p50),
            cell(s.p95),
            cell(s.p99),
            cell(s.max),
        )
    }
}

/// The bootstrap servers, if every one is `host:port` on a loopback
/// address: like the bench, this sends load nowhere else.
fn loopback_brokers(brokers: &str) -> anyhow::Result<String> {
    let servers: Vec<&str> = brokers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    ensure!(!servers.is_empty(), "--brokers names no broker");
    for server in &servers {
        let malformed = || format!("expected host:port in --brokers, not {server:?}");
        let (host, port) = server.rsplit_once(':').with_context(malformed)?;
        ensure!(port.parse::<u16>().is_ok(), malformed());
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare.eq_ignore_ascii_case("localhost")
            || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        ensure!(
            loopback,
            "walletctl broker-floor only measures brokers on loopback addresses \
             (127.0.0.0/8, [::1], localhost), not {host}"
        );
    }
    Ok(servers.join(","))
}

/// Runs `walletctl broker-floor` and prints its report.
pub async fn run(args: BrokerFloorArgs, json: bool) -> anyhow::Result<ExitCode> {
    let brokers = loopback_brokers(&args.brokers)?;
    ensure!(args.records >= 1, "--records must be at least 1");
    ensure!(args.timeout_ms >= 1, "--timeout-ms must be at least 1");
    // The services' settings (apps/wallet-server: KafkaSettings::new, the
    // fetch wait and the extra properties), on a topic of its own.
    let mut settings = KafkaSettings::new(brokers.clone());
    settings.client_id = "walletctl-broker-floor".to_owned();
    settings.partitions = 1;
    settings.fetch_wait = Duration::from_millis(args.fetch_wait_ms);
    settings.properties.extend(args.properties.iter().cloned());

    let run = uuid::Uuid::new_v4().simple().to_string();
    let topic = format!("walletctl.broker-floor.{run}");
    let group = format!("walletctl-broker-floor-{run}");
    let timeout = Duration::from_millis(args.timeout_ms);
    let samples = measure(&settings, &topic, &group, args.records, timeout).await?;
    let report = FloorReport {
        measure: "broker_floor",
        brokers,
        topic,
        records: samples.len(),
        fetch_wait_ms: args.fetch_wait_ms,
        latency_ms: Stats::of(&samples).rounded(),
    };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends `records` records (after the warm-up ones) one at a time and
/// times each from publish to poll.
async fn measure(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    records: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Duration>> {
    create_topics(settings, &[topic.to_owned()])
        .await
        .with_context(|| format!("creating topic {topic} on {}", settings.bootstrap_servers))?;
    let publisher = KafkaPublisher::new(settings)?;
    let mut subscription = KafkaSubscription::new(settings, group, topic)?;
    let mut samples = Vec::with_capacity(records);
    for i in 0..WARM_UP + records {
        // The record's number is its key: a poll returns it and nothing
        // older (each record is read before the next is sent).
        let key = i.to_string().into_bytes();
        let message = Message {
            topic: topic.to_owned(),
            key: key.clone(),
            payload: Payload::Bytes(vec![b'x'; PAYLOAD_BYTES]),
        };
        let sent = Instant::now();
        publisher
            .publish(&[message])
            .await
            .with_context(|| format!("publishing record {i}"))?;
        let arrived = receive(&mut subscription, &key, sent + timeout)
            .await
            .with_context(|| format!("reading record {i} back"))?;
        if i >= WARM_UP {
            samples.push(arrived - sent);
        }
    }
    Ok(samples)
}

/// Polls until the record keyed `key` arrives; when it did.
async fn receive(
    subscription: &mut KafkaSubscription,
    key: &[u8],
    deadline: Instant,
) -> anyhow::Result<Instant> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "it did not arrive in time");
        for delivery in subscription.poll(1, left).await? {
            if delivery.key == key {
                return Ok(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_brokers_are_measured() {
        for ok in [
            "127.0.0.1:19092",
            "localhost:9092",
            "[::1]:9092",
            "127.0.0.1:1, 127.0.0.2:2",
        ] {
            assert!(loopback_brokers(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            loopback_brokers(" 127.0.0.1:1 ,localhost:2,").unwrap(),
            "127.0.0.1:1,localhost:2"
        );
        for refused in [
            "10.0.0.1:9092",
            "kafka:9092",
            "127.0.0.1:9092,192.168.1.2:9092",
            "127.0.0.1",
            "127.0.0.1:port",
            "",
            " , ",
        ] {
            assert!(loopback_brokers(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn properties_are_key_value_pairs() {
        assert_eq!(
            key_value("fetch.min.bytes=1"),
            Ok(("fetch.min.bytes".to_owned(), "1".to_owned()))
        );
        assert_eq!(key_value("a=b=c"), Ok(("a".to_owned(), "b=c".to_owned())));
        assert!(key_value("fetch.min.bytes").is_err());
        assert!(key_value("=1").is_err());
    }
}
