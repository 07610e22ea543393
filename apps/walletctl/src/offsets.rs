//! `walletctl offsets reset`: a stopped consumer group's committed offsets
//! moved back, so that a service whose database was restored from a
//! backup is delivered again the events it had applied since (its inbox
//! skips those the backup holds). See docs/operations.md, "Backup and
//! recovery".

use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use wallet_core_kafka::{KafkaSettings, ResetTo, reset_offsets};

use crate::dead_letters::input_topic;

/// The groups whose offsets may be moved: the services' own.
const GROUPS: [&str; 3] = ["ledger-service", "wallet-service", "transaction-service"];

/// `walletctl offsets ...`
#[derive(Debug, clap::Subcommand)]
pub enum OffsetsCommand {
    /// Moves the committed offsets of a consumer group, on every partition
    /// of its input topic, back to the earliest record or to a time, and
    /// prints each partition's offset before and after. Stop every
    /// instance of its service first: refused while the broker describes
    /// the group with members (a broker that cannot describe it gets a
    /// warning).
    #[command(group(clap::ArgGroup::new("to").required(true).args(["to_earliest", "to_time"])))]
    Reset {
        /// The broker's bootstrap servers, `host:port` (several separated
        /// by commas).
        #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
        brokers: String,
        /// The consumer group (a service's).
        #[arg(long, value_parser = GROUPS)]
        group: String,
        /// The topic; by default the group's input topic (`wallet.events`
        /// for `ledger-service`, `ledger.events` for the other two).
        #[arg(long)]
        topic: Option<String>,
        /// To the first record each partition still holds.
        #[arg(long)]
        to_earliest: bool,
        /// To the first record written at or after this time (RFC 3339,
        /// such as 2026-12-06T13:00:00Z): before the backup was taken,
        /// less the longest the group may have lagged then.
        #[arg(long, value_parser = parse_time)]
        to_time: Option<SystemTime>,
        /// Any librdkafka property, as `key=value` (TLS and SASL), as the
        /// services' `KAFKA_PROPERTIES`.
        #[arg(long = "kafka-property", env = "KAFKA_PROPERTIES", hide_env_values = true,
            value_delimiter = ',', value_parser = crate::broker_floor::key_value)]
        properties: Vec<(String, String)>,
    },
}

/// Reads an RFC 3339 time.
fn parse_time(text: &str) -> Result<SystemTime, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(SystemTime::from)
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-12-06T13:00:00Z: {e}"))
}

/// Runs an offsets command; `json` prints JSON instead of text.
pub async fn run(command: OffsetsCommand, json: bool) -> anyhow::Result<ExitCode> {
    let OffsetsCommand::Reset {
        brokers,
        group,
        topic,
        to_earliest,
        to_time,
        properties,
    } = command;
    let topic = topic.unwrap_or_else(|| input_topic(&group).to_owned());
    let to = match to_time {
        Some(time) if !to_earliest => ResetTo::Time(time),
        _ => ResetTo::Earliest,
    };
    let mut settings = KafkaSettings::new(&brokers);
    settings.client_id = "walletctl".to_owned();
    settings.properties.extend(properties);
    let resets = reset_offsets(&settings, &group, &topic, to)
        .await
        .with_context(|| format!("moving the offsets of {group} on {topic} at {brokers}"))?;
    if json {
        let rows: Vec<_> = resets
            .iter()
            .map(|r| {
                serde_json::json!({
                    "group": group,
                    "topic": topic,
                    "partition": r.partition,
                    "before": r.before,
                    "after": r.after,
                })
            })
            .collect();
        println!("{}", serde_json::Value::from(rows));
    } else {
        for r in &resets {
            let before = r.before.map_or("-".to_owned(), |o| o.to_string());
            println!("{group}\t{topic}[{}]\t{before} -> {}", r.partition, r.after);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_rfc_3339() {
        let time = parse_time("2026-12-06T13:00:00Z").unwrap();
        let seconds = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(seconds, 1_796_562_000);
        assert!(parse_time("2026-12-06 13:00").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
