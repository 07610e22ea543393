//! The record headers the publisher sets, so brokers' tools, filters and
//! operators can route and inspect records without parsing their JSON.
//!
//! Every event carries [`EVENT_ID`], [`EVENT_TYPE`] and [`CORRELATION_ID`],
//! and [`TRACEPARENT`] when it was written in a trace: the consumer
//! continues that trace.
//! A dead letter carries the headers of the message it sets aside (as far
//! as that message reads as an event) and [`DEAD_LETTER_REASON`],
//! [`DEAD_LETTER_GROUP`] and, when the consumer runner set it aside, where
//! the message was read: [`DEAD_LETTER_TOPIC`], [`DEAD_LETTER_PARTITION`],
//! [`DEAD_LETTER_OFFSET`]. Header values are UTF-8 text.

use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::Deserialize;
use wallet_core::ports::{Message, Payload};
use wallet_core::runtime::{DeadLetter, dead_letter_topic};
use wallet_core::trace::TraceParent;

/// The event's id: consumers dedupe by it.
pub const EVENT_ID: &str = "event_id";
/// The event's type, such as `WalletReserved`.
pub const EVENT_TYPE: &str = "event_type";
/// The correlation id every event of one transfer shares.
pub const CORRELATION_ID: &str = "correlation_id";
/// The W3C trace context of the change that wrote the event.
pub const TRACEPARENT: &str = "traceparent";
/// Why a message was dead-lettered.
pub const DEAD_LETTER_REASON: &str = "dead_letter_reason";
/// The consumer group that set it aside.
pub const DEAD_LETTER_GROUP: &str = "dead_letter_group";
/// The topic it was read from.
pub const DEAD_LETTER_TOPIC: &str = "dead_letter_topic";
/// The partition it was read from, in decimal.
pub const DEAD_LETTER_PARTITION: &str = "dead_letter_partition";
/// Its offset in that partition, in decimal.
pub const DEAD_LETTER_OFFSET: &str = "dead_letter_offset";

/// The head of an envelope, read leniently: a dead letter's payload may be
/// any bytes, and an event of an unknown type still names its type.
#[derive(Debug, Default, Deserialize)]
struct Head {
    event_id: Option<String>,
    event_type: Option<String>,
    correlation_id: Option<String>,
}

impl Head {
    fn read(bytes: &[u8]) -> Head {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

/// The (name, value) pairs of the headers of `message`, whose payload
/// encodes to `bytes`.
pub fn header_pairs(message: &Message, bytes: &[u8]) -> Vec<(&'static str, String)> {
    let mut pairs = Vec::new();
    match &message.payload {
        Payload::Event(envelope) => {
            pairs.push((EVENT_ID, envelope.event_id.to_string()));
            pairs.push((EVENT_TYPE, envelope.event.event_type().to_owned()));
            pairs.push((CORRELATION_ID, envelope.correlation_id.to_string()));
            if let Some(trace) = envelope.trace {
                pairs.push((TRACEPARENT, trace.to_string()));
            }
        }
        Payload::Bytes(_) => match dead_letter(message, bytes) {
            Some(letter) => {
                let head = Head::read(letter.payload.as_bytes());
                let event_id = letter.event_id.map(|id| id.to_string()).or(head.event_id);
                push_head(&mut pairs, event_id, head.event_type, head.correlation_id);
                pairs.push((DEAD_LETTER_REASON, letter.reason));
                pairs.push((DEAD_LETTER_GROUP, letter.group));
                if let Some(source) = letter.source {
                    pairs.push((DEAD_LETTER_TOPIC, source.topic));
                    pairs.push((DEAD_LETTER_PARTITION, source.partition.to_string()));
                    pairs.push((DEAD_LETTER_OFFSET, source.offset.to_string()));
                }
            }
            None => {
                let head = Head::read(bytes);
                push_head(
                    &mut pairs,
                    head.event_id,
                    head.event_type,
                    head.correlation_id,
                );
            }
        },
    }
    pairs
}

fn push_head(
    pairs: &mut Vec<(&'static str, String)>,
    event_id: Option<String>,
    event_type: Option<String>,
    correlation_id: Option<String>,
) {
    let named = [
        (EVENT_ID, event_id),
        (EVENT_TYPE, event_type),
        (CORRELATION_ID, correlation_id),
    ];
    pairs.extend(named.into_iter().filter_map(|(n, v)| v.map(|v| (n, v))));
}

/// The dead letter `message` carries, when it goes to a dead-letter topic
/// and reads as one. Dead letters travel as bytes (the consumer runner and
/// the relay both encode them), so their topic's name tells them apart.
fn dead_letter(message: &Message, bytes: &[u8]) -> Option<DeadLetter> {
    if !message.topic.ends_with(&dead_letter_topic("")) {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// The trace context a record's [`TRACEPARENT`] header carries, if valid.
pub fn trace(record: &impl rdkafka::message::Message) -> Option<TraceParent> {
    let headers = record.headers()?;
    let header = headers.iter().find(|h| h.key == TRACEPARENT)?;
    std::str::from_utf8(header.value?).ok()?.parse().ok()
}

/// The headers of `message`, ready for a record.
pub fn headers(message: &Message, bytes: &[u8]) -> OwnedHeaders {
    let pairs = header_pairs(message, bytes);
    let mut headers = OwnedHeaders::new_with_capacity(pairs.len());
    for (key, value) in &pairs {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use wallet_core::runtime::Source;

    fn message(topic: &str, payload: Vec<u8>) -> Message {
        Message {
            topic: topic.to_owned(),
            key: b"k".to_vec(),
            payload: Payload::Bytes(payload),
        }
    }

    #[test]
    fn a_dead_letter_from_the_runner_says_why_and_where() {
        let letter = DeadLetter {
            group: "g".into(),
            reason: "unknown event type \"Nope\"".into(),
            event_id: None,
            source: Some(Source {
                topic: "t".into(),
                partition: 3,
                offset: 41,
            }),
            payload: r#"{"event_id":"e1","event_type":"Nope","correlation_id":"c1"}"#.into(),
        };
        let m = message("g.dlq", letter.encode());
        let pairs = header_pairs(&m, &letter.encode());
        let expected: Vec<(&str, String)> = vec![
            (EVENT_ID, "e1".into()),
            (EVENT_TYPE, "Nope".into()),
            (CORRELATION_ID, "c1".into()),
            (DEAD_LETTER_REASON, "unknown event type \"Nope\"".into()),
            (DEAD_LETTER_GROUP, "g".into()),
            (DEAD_LETTER_TOPIC, "t".into()),
            (DEAD_LETTER_PARTITION, "3".into()),
            (DEAD_LETTER_OFFSET, "41".into()),
        ];
        assert_eq!(pairs, expected);
    }

    #[test]
    fn an_event_written_in_a_trace_carries_its_traceparent() {
        let envelope = wallet_core::event::Envelope::decode(
            br#"{"event_id":"0193a1f0-3c55-7d2e-9a41-6a1c2b7e0c01","event_type":"LedgerFailed",
                "payload":{"reason":"insufficient_funds"},"schema_version":1,
                "transfer_id":"0193a1f0-3c50-7e61-a0b2-9f8e7d6c5b40",
                "correlation_id":"0193a1f0-3c51-7b7a-8c9d-0e1f2a3b4c50","causation_id":null,
                "occurred_at":"2026-11-25T18:40:02.117Z","producer":"ledger-service"}"#,
        )
        .unwrap();
        let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let message = |envelope: wallet_core::event::Envelope| Message {
            topic: "ledger.events".into(),
            key: b"k".to_vec(),
            payload: Payload::Event(std::sync::Arc::new(envelope)),
        };
        let untraced = message(envelope.clone());
        let pairs = header_pairs(&untraced, &untraced.payload.to_bytes());
        assert!(pairs.iter().all(|(name, _)| *name != TRACEPARENT));
        let m = message(envelope.traced(Some(traced.parse().unwrap())));
        let pairs = header_pairs(&m, &m.payload.to_bytes());
        assert!(
            pairs.contains(&(TRACEPARENT, traced.to_owned())),
            "{pairs:?}"
        );
    }

    #[test]
    fn garbage_gets_no_headers_unless_it_is_a_dead_letter() {
        let m = message("t", b"\xff garbage".to_vec());
        assert!(header_pairs(&m, b"\xff garbage").is_empty());
        let m = message("t.dlq", b"not a letter".to_vec());
        assert!(header_pairs(&m, b"not a letter").is_empty());
    }
}
