//! `walletctl dead-letters list|show|replay|parked`: a consumer group's
//! dead-letter topic (`<group>.dlq`), read from its start to its current
//! end without joining a group or committing, and its events published
//! again once their cause is fixed; and the events the group parked on its
//! retry topic (`<group>.retry`), pending or done.
//!
//! A replay publishes the dead letter's original event to its source topic
//! under a new event id, with `causation_id` the original id: the store
//! that refused the original recorded its id in its inbox, so the same id
//! would be skipped. Every consumer is idempotent by state as well (one
//! posting per transfer, one finalization per reservation, a terminal
//! transfer never moves), so replaying what was applied since changes
//! nothing. See docs/operations.md, "Dead letters".

use std::collections::BTreeMap;
use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use wallet_core::event::{Envelope, LEDGER_EVENTS, WALLET_EVENTS, groups};
use wallet_core::ids::{EventId, IdGenerator, RandomIds};
use wallet_core::ports::{Message, Payload, Publisher};
use wallet_core::runtime::DeadLetter;
use wallet_core_kafka::headers::{EVENT_ID, EVENT_TYPE};
use wallet_core_kafka::{DeadLetterRecord, DeadLetters, KafkaPublisher, KafkaSettings, Parked};

/// The consumer groups that have a dead-letter topic.
const GROUPS: [&str; 3] = [groups::LEDGER, groups::WALLET, groups::TRANSACTION];

/// Which topic to read.
#[derive(Debug, Clone, clap::Args)]
pub struct Topic {
    /// The broker's bootstrap servers, `host:port` (several separated by
    /// commas).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    brokers: String,
    /// The consumer group whose dead-letter topic (`<group>.dlq`) to read.
    #[arg(long, value_parser = GROUPS)]
    group: String,
    /// Any librdkafka property, as `key=value` (TLS and SASL: see
    /// docs/operations.md), as the services' `KAFKA_PROPERTIES`; repeat
    /// the flag, or separate with commas in the variable.
    #[arg(long = "kafka-property", env = "KAFKA_PROPERTIES", hide_env_values = true,
        value_delimiter = ',', value_parser = crate::broker_floor::key_value)]
    properties: Vec<(String, String)>,
}

/// `walletctl dead-letters ...`
#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// Every record of the group's dead-letter topic, from its start to its
    /// current end, one line each: partition, offset, event id, transfer id
    /// (the key), reason, source topic. Read-only: joins no consumer group
    /// and commits nothing.
    List {
        #[command(flatten)]
        topic: Topic,
    },
    /// One dead letter whole, payload included, by PARTITION:OFFSET or by
    /// its event's id.
    Show {
        #[command(flatten)]
        topic: Topic,
        /// Where it is, PARTITION:OFFSET (as `list` shows).
        #[arg(
            value_parser = parse_position,
            required_unless_present = "event_id",
            conflicts_with = "event_id"
        )]
        position: Option<Position>,
        /// The id of the event it sets aside.
        #[arg(long)]
        event_id: Option<EventId>,
    },
    /// Publishes the original event of chosen dead letters again, to its
    /// source topic (the group's input topic when the letter names none),
    /// keyed by its transfer id, under a new event id whose
    /// `causation_id` is the original one. Fix what made the consumer
    /// refuse it first.
    #[command(group(
        clap::ArgGroup::new("selection")
            .required(true)
            .multiple(true)
            .args(["offsets", "event_ids", "from", "all"])
    ))]
    Replay {
        #[command(flatten)]
        topic: Topic,
        /// A dead letter by PARTITION:OFFSET (repeat the flag for several).
        #[arg(long = "offset", value_parser = parse_position)]
        offsets: Vec<Position>,
        /// A dead letter by its event's id (repeat the flag for several).
        #[arg(long = "event-id")]
        event_ids: Vec<EventId>,
        /// The first of a range of one partition, PARTITION:OFFSET
        /// (inclusive); needs --to.
        #[arg(long, value_parser = parse_position, requires = "to")]
        from: Option<Position>,
        /// The last of the range, PARTITION:OFFSET (inclusive), in the
        /// partition of --from.
        #[arg(long, value_parser = parse_position, requires = "from")]
        to: Option<Position>,
        /// Every dead letter of the topic; records that carry no event of
        /// the group are skipped and listed.
        #[arg(long, conflicts_with_all = ["offsets", "event_ids", "from", "to"])]
        all: bool,
    },
    /// The events the group parked on its retry topic (`<group>.retry`)
    /// because they kept failing alone, one line each: partition, offset,
    /// event id, event type, transfer id, and `pending` while its retry
    /// consumer has not passed it (its transfer waits) or `done` once it
    /// was applied or dead-lettered. Read-only, like `list`.
    Parked {
        #[command(flatten)]
        topic: Topic,
    },
}

/// A record's place in its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The offset in it.
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

/// Reads `PARTITION:OFFSET`, both decimal.
pub fn parse_position(text: &str) -> Result<Position, String> {
    let malformed = || format!("expected PARTITION:OFFSET, such as 0:12, not {text:?}");
    let (partition, offset) = text.split_once(':').ok_or_else(malformed)?;
    Ok(Position {
        partition: partition.trim().parse().map_err(|_| malformed())?,
        offset: offset.trim().parse().map_err(|_| malformed())?,
    })
}

fn position(record: &DeadLetterRecord) -> Position {
    Position {
        partition: record.partition,
        offset: record.offset,
    }
}

/// The topic a group reads its events from.
pub fn input_topic(group: &str) -> &'static str {
    if group == groups::LEDGER {
        WALLET_EVENTS
    } else {
        LEDGER_EVENTS
    }
}

/// Whether `group` consumes events of `event_type`.
fn consumes(group: &str, event_type: &str) -> bool {
    if group == groups::LEDGER {
        event_type == "WalletReserved"
    } else {
        matches!(event_type, "LedgerSucceeded" | "LedgerFailed")
    }
}

/// The event a replay publishes: the original's transfer, type, payload,
/// correlation and time, under `event_id`, caused by the original.
pub fn replay_of(original: &Envelope, event_id: EventId) -> Envelope {
    Envelope {
        event_id,
        causation_id: Some(original.event_id),
        ..original.clone()
    }
}

/// The event id a record names: its letter's, else its header's (the head
/// of an event the runner could not decode).
fn event_id_of(record: &DeadLetterRecord, letter: Option<&DeadLetter>) -> Option<String> {
    letter
        .and_then(|l| l.event_id)
        .map(|id| id.to_string())
        .or_else(|| record.header(EVENT_ID).map(str::to_owned))
}

/// What a replay of `record` publishes, or why it cannot be replayed.
fn replayable(group: &str, record: &DeadLetterRecord) -> Result<(Envelope, String), String> {
    let letter = record.letter()?;
    let original = Envelope::decode(letter.payload.as_bytes())
        .map_err(|e| format!("its payload is not an event this build reads ({e})"))?;
    let event_type = original.event.event_type();
    if !consumes(group, event_type) {
        return Err(format!("{group} does not consume {event_type} events"));
    }
    let topic = letter
        .source
        .map_or_else(|| input_topic(group).to_owned(), |s| s.topic);
    Ok((original, topic))
}

/// Runs a dead-letters command; `json` prints JSON instead of text.
pub async fn run(command: DeadLettersCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        DeadLettersCommand::List { topic } => list(&topic, json).await,
        DeadLettersCommand::Parked { topic } => parked(&topic, json).await,
        DeadLettersCommand::Show {
            topic,
            position,
            event_id,
        } => show(&topic, position, event_id, json).await,
        DeadLettersCommand::Replay {
            topic,
            offsets,
            event_ids,
            from,
            to,
            all,
        } => {
            let selection = if all {
                Selection::All
            } else if let (Some(from), Some(to)) = (from, to) {
                if from.partition != to.partition {
                    bail!(
                        "--from {from} and --to {to} must name one partition (a range is within a partition)"
                    );
                }
                if from.offset > to.offset {
                    bail!("--from {from} comes after --to {to}");
                }
                Selection::Range(from, to)
            } else {
                Selection::Named { offsets, event_ids }
            };
            replay(&topic, selection, json).await
        }
    }
}

fn settings(topic: &Topic) -> KafkaSettings {
    let mut settings = KafkaSettings::new(&topic.brokers);
    settings.client_id = "walletctl".to_owned();
    settings.properties.extend(topic.properties.iter().cloned());
    settings
}

async fn read(topic: &Topic) -> anyhow::Result<(DeadLetters, Vec<DeadLetterRecord>)> {
    let reader = DeadLetters::of_group(&settings(topic), &topic.group);
    let records = reader
        .records()
        .await
        .with_context(|| format!("reading {} at {}", reader.topic(), topic.brokers))?;
    Ok((reader, records))
}

/// One line of `list`.
fn summary(record: &DeadLetterRecord) -> Value {
    let letter = record.letter();
    let event_id = event_id_of(record, letter.as_ref().ok());
    let (reason, source) = match &letter {
        Ok(l) => (l.reason.clone(), l.source.as_ref().map(|s| s.topic.clone())),
        Err(e) => (e.clone(), None),
    };
    json!({
        "partition": record.partition,
        "offset": record.offset,
        "event_id": event_id,
        "event_type": record.header(EVENT_TYPE),
        "transfer_id": record.key_text(),
        "reason": reason,
        "source_topic": source,
    })
}

async fn list(topic: &Topic, json: bool) -> anyhow::Result<ExitCode> {
    let (reader, records) = read(topic).await?;
    let lines: Vec<Value> = records.iter().map(summary).collect();
    let columns = [
        ("partition", "partition"),
        ("offset", "offset"),
        ("event id", "event_id"),
        ("transfer id", "transfer_id"),
        ("reason", "reason"),
        ("source topic", "source_topic"),
    ];
    let empty = format!("no dead letters on {}", reader.topic());
    if print_lines(&lines, json, &columns, &empty) {
        println!("{} dead letters on {}", lines.len(), reader.topic());
    }
    Ok(ExitCode::SUCCESS)
}

async fn parked(topic: &Topic, json: bool) -> anyhow::Result<ExitCode> {
    let reader = Parked::of_group(&settings(topic), &topic.group);
    let records = reader
        .records()
        .await
        .with_context(|| format!("reading {} at {}", reader.topic(), topic.brokers))?;
    let lines: Vec<Value> = records
        .iter()
        .map(|parked| {
            let record = &parked.record;
            // Parked as delivered: the event itself, its id in a header
            // too when it came from a broker.
            let event = Envelope::decode(&record.payload).ok();
            let event_id = event
                .as_ref()
                .map(|e| e.event_id.to_string())
                .or_else(|| record.header(EVENT_ID).map(str::to_owned));
            let event_type = event
                .as_ref()
                .map(|e| e.event.event_type().to_owned())
                .or_else(|| record.header(EVENT_TYPE).map(str::to_owned));
            json!({
                "partition": record.partition,
                "offset": record.offset,
                "event_id": event_id,
                "event_type": event_type,
                "transfer_id": record.key_text(),
                "state": if parked.pending { "pending" } else { "done" },
            })
        })
        .collect();
    let columns = [
        ("partition", "partition"),
        ("offset", "offset"),
        ("event id", "event_id"),
        ("event type", "event_type"),
        ("transfer id", "transfer_id"),
        ("state", "state"),
    ];
    let empty = format!("nothing parked on {}", reader.topic());
    if print_lines(&lines, json, &columns, &empty) {
        let pending = records.iter().filter(|p| p.pending).count();
        println!(
            "{} parked on {}, {pending} pending",
            lines.len(),
            reader.topic()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints `lines` as one JSON array, or as a table of `columns` (header,
/// member) separated by tabs, `-` for a missing value, or `empty` when
/// there are none. True when it printed a table, for the caller's count.
fn print_lines(lines: &[Value], json: bool, columns: &[(&str, &str)], empty: &str) -> bool {
    if json {
        println!("{}", Value::from(lines.to_vec()));
        return false;
    }
    if lines.is_empty() {
        println!("{empty}");
        return false;
    }
    let header: Vec<&str> = columns.iter().map(|(header, _)| *header).collect();
    println!("{}", header.join("\t"));
    for line in lines {
        let cells: Vec<String> = columns
            .iter()
            .map(|(_, member)| match &line[*member] {
                Value::String(text) => text.clone(),
                Value::Null => "-".to_owned(),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("\t"));
    }
    true
}

/// Whether `record` sets aside the event `id`.
fn names_event(record: &DeadLetterRecord, id: EventId) -> bool {
    event_id_of(record, record.letter().ok().as_ref()).as_deref() == Some(&id.to_string())
}

async fn show(
    topic: &Topic,
    at: Option<Position>,
    event_id: Option<EventId>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (reader, records) = read(topic).await?;
    let matching: Vec<&DeadLetterRecord> = match (at, event_id) {
        (Some(at), _) => records.iter().filter(|r| position(r) == at).collect(),
        (None, Some(id)) => records.iter().filter(|r| names_event(r, id)).collect(),
        (None, None) => unreachable!("clap requires one"),
    };
    let Some(record) = matching.first() else {
        match (at, event_id) {
            (Some(at), _) => bail!("no record at {at} on {}", reader.topic()),
            (_, id) => bail!(
                "no dead letter of event {} on {}",
                id.map(|i| i.to_string()).unwrap_or_default(),
                reader.topic()
            ),
        }
    };
    let also: Vec<String> = matching[1..]
        .iter()
        .map(|r| position(r).to_string())
        .collect();
    let letter = record.letter();
    let payload = letter.as_ref().map_or_else(
        |_| String::from_utf8_lossy(&record.payload).into_owned(),
        |l| l.payload.clone(),
    );
    let event: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
    if json {
        let shown = json!({
            "topic": reader.topic(),
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key_text(),
            "headers": record.headers,
            "dead_letter": letter.as_ref().ok(),
            "not_a_dead_letter": letter.as_ref().err(),
            "event": event,
            "also_at": also,
        });
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("dead letter {} {}", reader.topic(), position(record));
    let line = |label: &str, value: &str| println!("  {label:<13} {value}");
    let event_id = event_id_of(record, letter.as_ref().ok());
    line("event id", event_id.as_deref().unwrap_or("-"));
    line("event type", record.header(EVENT_TYPE).unwrap_or("-"));
    line("transfer id", &record.key_text());
    match &letter {
        Ok(l) => {
            line("group", &l.group);
            line("reason", &l.reason);
            let source = l.source.as_ref().map_or_else(
                || "- (refused by the store; the event id identifies it)".to_owned(),
                |s| format!("{}[{}]@{}", s.topic, s.partition, s.offset),
            );
            line("source", &source);
        }
        Err(e) => line("reason", e),
    }
    if !also.is_empty() {
        line("also at", &also.join(", "));
    }
    println!("  headers");
    for (name, value) in &record.headers {
        println!("    {name}: {value}");
    }
    println!("  payload");
    match &event {
        Value::Null => println!("{payload}"),
        event => println!("{}", serde_json::to_string_pretty(event)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Which dead letters to replay.
#[derive(Debug)]
enum Selection {
    Named {
        offsets: Vec<Position>,
        event_ids: Vec<EventId>,
    },
    Range(Position, Position),
    All,
}

/// The records `selection` names, in topic order, each once. Names that
/// match nothing are an error.
fn select<'r>(
    records: &'r [DeadLetterRecord],
    selection: &Selection,
    topic: &str,
) -> anyhow::Result<Vec<&'r DeadLetterRecord>> {
    let chosen: Vec<&DeadLetterRecord> = match selection {
        Selection::All => records.iter().collect(),
        Selection::Range(from, to) => {
            let chosen: Vec<_> = records
                .iter()
                .filter(|r| (*from..=*to).contains(&position(r)))
                .collect();
            if chosen.is_empty() {
                bail!("no record from {from} to {to} on {topic}");
            }
            chosen
        }
        Selection::Named { offsets, event_ids } => {
            for at in offsets {
                if !records.iter().any(|r| position(r) == *at) {
                    bail!("no record at {at} on {topic}");
                }
            }
            for id in event_ids {
                if !records.iter().any(|r| names_event(r, *id)) {
                    bail!("no dead letter of event {id} on {topic}");
                }
            }
            records
                .iter()
                .filter(|r| {
                    offsets.contains(&position(r)) || event_ids.iter().any(|id| names_event(r, *id))
                })
                .collect()
        }
    };
    Ok(chosen)
}

async fn replay(topic: &Topic, selection: Selection, json: bool) -> anyhow::Result<ExitCode> {
    let (reader, records) = read(topic).await?;
    let chosen = select(&records, &selection, reader.topic())?;
    let named = matches!(selection, Selection::Named { .. });
    let mut messages = Vec::new();
    let mut replayed = Vec::new();
    let mut skipped = Vec::new();
    // Each original event once, however many of its letters were chosen.
    let mut seen: BTreeMap<EventId, Position> = BTreeMap::new();
    for record in chosen {
        let at = position(record);
        let (original, target) = match replayable(&topic.group, record) {
            Ok(found) => found,
            Err(why) if named => bail!("{at} on {} cannot be replayed: {why}", reader.topic()),
            Err(why) => {
                skipped
                    .push(json!({"partition": at.partition, "offset": at.offset, "reason": why}));
                continue;
            }
        };
        if let Some(first) = seen.get(&original.event_id) {
            let why = format!("the same event as {first}, replayed once");
            skipped.push(json!({"partition": at.partition, "offset": at.offset, "reason": why}));
            continue;
        }
        seen.insert(original.event_id, at);
        let event = replay_of(&original, RandomIds.event_id());
        replayed.push(json!({
            "partition": at.partition,
            "offset": at.offset,
            "original_event_id": original.event_id,
            "event_id": event.event_id,
            "event_type": event.event.event_type(),
            "transfer_id": event.transfer_id,
            "topic": target,
        }));
        messages.push(Message {
            topic: target,
            key: event.transfer_id.to_string().into_bytes(),
            payload: Payload::Event(Arc::new(event)),
        });
    }
    if !messages.is_empty() {
        let publisher = KafkaPublisher::new(&settings(topic)).context("creating the producer")?;
        publisher.publish(&messages).await.with_context(|| {
            format!(
                "publishing {} events at {} (some may have gone out; replaying them again is safe)",
                messages.len(),
                topic.brokers
            )
        })?;
        publisher
            .flush(Duration::from_secs(10))
            .context("flushing the producer")?;
    }
    if json {
        println!(
            "{}",
            json!({"topic": reader.topic(), "replayed": replayed, "skipped": skipped})
        );
        return Ok(ExitCode::SUCCESS);
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for r in &replayed {
        println!(
            "replayed {}:{} event {} as {} ({}, transfer {}) to {}",
            r["partition"],
            r["offset"],
            text(&r["original_event_id"]),
            text(&r["event_id"]),
            text(&r["event_type"]),
            text(&r["transfer_id"]),
            text(&r["topic"]),
        );
    }
    for s in &skipped {
        println!(
            "skipped {}:{}: {}",
            s["partition"],
            s["offset"],
            text(&s["reason"])
        );
    }
    println!(
        "{} replayed, {} skipped from {}",
        replayed.len(),
        skipped.len(),
        reader.topic()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wallet_core::contract::data::TestData;
    use wallet_core::ids::WalletId;
    use wallet_core::money::Currency;
    use wallet_core::ports::Delivery;
    use wallet_core::runtime::Source;

    fn record(partition: u32, offset: u64, letter: &DeadLetter) -> DeadLetterRecord {
        DeadLetterRecord {
            partition,
            offset,
            key: b"k".to_vec(),
            payload: letter.encode(),
            headers: BTreeMap::new(),
        }
    }

    fn reserved() -> Envelope {
        let data = TestData::new();
        let request = data.reserve_request(
            WalletId::system(Currency::USD),
            data.wallet_id(),
            "10.00",
            Currency::USD,
        );
        data.wallet_reserved(&request).0.envelope
    }

    #[test]
    fn positions_read_partition_colon_offset() {
        assert_eq!(
            parse_position("3:120"),
            Ok(Position {
                partition: 3,
                offset: 120
            })
        );
        for bad in ["3", "3:", ":1", "a:1", "1:-2", "1:2:3", ""] {
            let error = parse_position(bad).expect_err(bad);
            assert!(error.contains("PARTITION:OFFSET"), "{error}");
        }
    }

    #[test]
    fn a_replay_is_the_same_event_under_a_new_id_caused_by_the_original() {
        let original = reserved();
        let id = RandomIds.event_id();
        let replay = replay_of(&original, id);
        assert_eq!(replay.event_id, id);
        assert_eq!(replay.causation_id, Some(original.event_id));
        assert_eq!(replay.event, original.event);
        assert_eq!(replay.transfer_id, original.transfer_id);
        assert_eq!(replay.correlation_id, original.correlation_id);
        assert_eq!(replay.schema_version, original.schema_version);
    }

    #[test]
    fn a_refusal_goes_back_to_the_group_input_and_a_runner_letter_to_its_source() {
        let event = reserved();
        let refused = DeadLetter::refused(groups::LEDGER, &event, "why");
        let (again, topic) = replayable(groups::LEDGER, &record(0, 0, &refused)).unwrap();
        assert_eq!((again, topic.as_str()), (event.clone(), WALLET_EVENTS));
        let mut sourced = refused.clone();
        sourced.source = Some(Source {
            topic: "elsewhere".into(),
            partition: 1,
            offset: 2,
        });
        let (_, topic) = replayable(groups::LEDGER, &record(0, 1, &sourced)).unwrap();
        assert_eq!(topic, "elsewhere");
        // Not an event the group consumes, and not an event at all.
        let wrong = DeadLetter::refused(groups::WALLET, &event, "not a ledger outcome");
        let why = replayable(groups::WALLET, &record(0, 2, &wrong)).unwrap_err();
        assert!(why.contains("does not consume WalletReserved"), "{why}");
        let garbage = Delivery {
            topic: LEDGER_EVENTS.into(),
            partition: 0,
            offset: 9,
            key: b"k".to_vec(),
            payload: Payload::Bytes(b"\xff".to_vec()),
            trace: None,
        };
        let letter = DeadLetter::undecodable(groups::WALLET, &garbage, "malformed");
        let why = replayable(groups::WALLET, &record(0, 3, &letter)).unwrap_err();
        assert!(why.contains("not an event"), "{why}");
    }

    #[test]
    fn a_selection_names_existing_records_only() {
        let event = reserved();
        let letter = DeadLetter::refused(groups::LEDGER, &event, "why");
        let records = vec![
            record(0, 4, &letter),
            record(0, 5, &letter),
            record(1, 0, &letter),
        ];
        let at = |p, o| Position {
            partition: p,
            offset: o,
        };
        let chosen = select(&records, &Selection::Range(at(0, 0), at(0, 4)), "t").unwrap();
        assert_eq!(chosen.len(), 1);
        let chosen = select(&records, &Selection::All, "t").unwrap();
        assert_eq!(chosen.len(), 3);
        let named = Selection::Named {
            offsets: vec![at(1, 0)],
            event_ids: vec![],
        };
        assert_eq!(select(&records, &named, "t").unwrap().len(), 1);
        let missing = Selection::Named {
            offsets: vec![at(2, 0)],
            event_ids: vec![],
        };
        let error = select(&records, &missing, "t").unwrap_err().to_string();
        assert_eq!(error, "no record at 2:0 on t");
        let by_id = Selection::Named {
            offsets: vec![],
            event_ids: vec![event.event_id],
        };
        assert_eq!(select(&records, &by_id, "t").unwrap().len(), 3);
        let empty = Selection::Range(at(1, 1), at(1, 9));
        assert!(select(&records, &empty, "t").is_err());
    }
}
