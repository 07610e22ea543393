//! The event envelope: JSON round trips of every event type, the field
//! names of the contract (docs/events.md), and what `decode` refuses.

use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::event::{
    DecodeError, Envelope, Event, EventStamp, Inbound, LedgerFailure, PostingFacts, SCHEMA_VERSION,
    producer,
};
use crate::ids::{CorrelationId, EventId, TransferId, WalletId};
use crate::money::{Amount, Currency};
use crate::outcome::FailureReason;
use crate::outcome::LedgerOutcome;
use crate::tags::{Metadata, Reference, Tags};
use crate::time::Timestamp;

use super::fixtures::{at, cid, eid, tid, usd, wid};

const REASONS: [FailureReason; 5] = [
    FailureReason::WalletNotFound,
    FailureReason::SameWallet,
    FailureReason::CurrencyMismatch,
    FailureReason::InsufficientFunds,
    FailureReason::InvalidAmount,
];

fn facts() -> PostingFacts {
    PostingFacts {
        tags: Default::default(),
        sender_wallet_id: wid(1),
        receiver_wallet_id: wid(2),
        amount: usd("10.50"),
        currency: Currency::USD,
    }
}

fn envelope(event: Event) -> Envelope {
    Envelope::new(
        eid(1),
        event,
        tid(1),
        cid(1),
        Some(eid(0)),
        at(0),
        producer::WALLET,
    )
}

fn json_of(envelope: &Envelope) -> Value {
    serde_json::from_slice(&envelope.encode()).unwrap()
}

fn decode_value(value: &Value) -> Result<Envelope, DecodeError> {
    Envelope::decode(&serde_json::to_vec(value).unwrap())
}

#[test]
fn the_envelope_has_exactly_the_fields_of_the_contract() {
    let value = json_of(&envelope(Event::WalletReserved(facts())));
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "causation_id",
            "correlation_id",
            "event_id",
            "event_type",
            "occurred_at",
            "payload",
            "producer",
            "schema_version",
            "transfer_id",
        ]
    );
    assert_eq!(value["event_id"], json!(eid(1).to_string()));
    assert_eq!(value["event_type"], json!("WalletReserved"));
    assert_eq!(value["schema_version"], json!(1));
    assert_eq!(value["transfer_id"], json!(tid(1).to_string()));
    assert_eq!(value["correlation_id"], json!(cid(1).to_string()));
    assert_eq!(value["causation_id"], json!(eid(0).to_string()));
    assert_eq!(value["producer"], json!("wallet-service"));
    let occurred: Timestamp = serde_json::from_value(value["occurred_at"].clone()).unwrap();
    assert_eq!(occurred, at(0));
}

#[test]
fn payloads_carry_ids_amounts_as_strings_and_reason_codes() {
    let value = json_of(&envelope(Event::LedgerSucceeded(facts())));
    assert_eq!(value["event_type"], json!("LedgerSucceeded"));
    assert_eq!(
        value["payload"],
        json!({
            "sender_wallet_id": wid(1).to_string(),
            "receiver_wallet_id": wid(2).to_string(),
            "amount": "10.50",
            "currency": "USD",
        })
    );
    let failed = envelope(Event::LedgerFailed(LedgerFailure {
        reason: FailureReason::InsufficientFunds,
    }));
    let value = json_of(&failed);
    assert_eq!(value["event_type"], json!("LedgerFailed"));
    assert_eq!(value["payload"], json!({ "reason": "insufficient_funds" }));
    let mut no_cause = failed;
    no_cause.causation_id = None;
    assert_eq!(json_of(&no_cause)["causation_id"], Value::Null);
}

#[test]
fn decode_refuses_bytes_that_are_not_an_envelope() {
    let valid = json_of(&envelope(Event::WalletReserved(facts())));
    let mut no_payload = valid.clone();
    no_payload.as_object_mut().unwrap().remove("payload");
    let mut bad_id = valid.clone();
    bad_id["event_id"] = json!("not-a-uuid");
    let mut bad_currency = valid.clone();
    bad_currency["payload"]["currency"] = json!("XXX");
    let mut numeric_amount = valid.clone();
    numeric_amount["payload"]["amount"] = json!(10.5);
    let inputs: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"".to_vec(),
        b"[1,2]".to_vec(),
        b"{}".to_vec(),
        b"{\"event_type\":\"WalletReserved\"}".to_vec(),
        valid.to_string().as_bytes()[..40].to_vec(),
        serde_json::to_vec(&no_payload).unwrap(),
        serde_json::to_vec(&bad_id).unwrap(),
        serde_json::to_vec(&bad_currency).unwrap(),
        serde_json::to_vec(&numeric_amount).unwrap(),
    ];
    for bytes in inputs {
        let result = Envelope::decode(&bytes);
        assert!(
            matches!(result, Err(DecodeError::Malformed(_))),
            "{:?} -> {result:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[test]
fn decode_refuses_an_unknown_event_type() {
    let mut value = json_of(&envelope(Event::WalletReserved(facts())));
    value["event_type"] = json!("WalletOpened");
    assert_eq!(
        decode_value(&value),
        Err(DecodeError::UnknownType("WalletOpened".into()))
    );
}

#[test]
fn decode_refuses_version_zero_and_tells_a_newer_version_apart() {
    let expected = [
        (0u16, DecodeError::UnsupportedVersion(0)),
        (
            SCHEMA_VERSION + 1,
            DecodeError::NewerVersion(SCHEMA_VERSION + 1),
        ),
    ];
    for (version, error) in expected {
        let mut value = json_of(&envelope(Event::LedgerSucceeded(facts())));
        value["schema_version"] = json!(version);
        assert_eq!(decode_value(&value), Err(error));
    }
    assert_eq!(SCHEMA_VERSION + 1, 2);
}

#[test]
fn an_additive_change_is_read_by_this_build() {
    // A newer build of the same version adds a member: this build ignores
    // it, as docs/events.md promises.
    let event = envelope(Event::LedgerSucceeded(facts()));
    let mut value = json_of(&event);
    value["payload"]["memo"] = json!("added later");
    value["trace"] = json!({"parent": "00-abc"});
    assert_eq!(decode_value(&value), Ok(event));
}

#[test]
fn decode_refuses_amounts_not_valid_for_their_currency() {
    for (event_type, amount, currency) in [
        ("WalletReserved", "10.005", "USD"),
        ("LedgerSucceeded", "10.005", "USD"),
        ("WalletReserved", "1.5", "JPY"),
        ("WalletReserved", "0", "USD"),
        ("LedgerSucceeded", "-1", "EUR"),
        ("WalletReserved", "1000000000000.01", "USD"),
    ] {
        let mut value = json_of(&envelope(Event::WalletReserved(facts())));
        value["event_type"] = json!(event_type);
        value["payload"]["amount"] = json!(amount);
        value["payload"]["currency"] = json!(currency);
        let result = decode_value(&value);
        assert!(
            matches!(result, Err(DecodeError::InvalidAmount(_))),
            "{event_type} {amount} {currency} -> {result:?}"
        );
    }
}

#[test]
fn decode_accepts_an_amount_with_trailing_zeros() {
    let mut value = json_of(&envelope(Event::WalletReserved(facts())));
    value["payload"]["amount"] = json!("10.5");
    let decoded = decode_value(&value).unwrap();
    let Event::WalletReserved(f) = decoded.event else {
        panic!("type changed");
    };
    assert_eq!(f.amount, usd("10.50"));
}

#[test]
fn decode_ignores_fields_it_does_not_know() {
    // A tolerant reader: a producer may add fields without a new version.
    let original = envelope(Event::WalletReserved(facts()));
    let mut value = json_of(&original);
    value["trace_id"] = json!("abc");
    value["payload"]["memo"] = json!("rent");
    assert_eq!(decode_value(&value), Ok(original));
}

#[test]
fn a_posting_request_is_read_from_wallet_reserved_only() {
    let reserved = envelope(Event::WalletReserved(facts()));
    let request = reserved.posting_request().unwrap();
    assert_eq!(
        (
            request.transfer_id,
            request.sender_wallet_id,
            request.receiver_wallet_id
        ),
        (tid(1), wid(1), wid(2))
    );
    assert_eq!(
        (request.amount, request.currency),
        (usd("10.50"), Currency::USD)
    );
    assert_eq!(
        envelope(Event::LedgerSucceeded(facts())).posting_request(),
        None
    );
}

fn any_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn any_amount() -> impl Strategy<Value = (Amount, Currency)> {
    (
        0..Currency::ALL.len(),
        1i64..=1_000_000_000_000,
        any::<bool>(),
    )
        .prop_map(|(ci, units, whole)| {
            let currency = Currency::ALL[ci];
            let scale = if whole { 0 } else { currency.scale() };
            let value = Decimal::new(units, scale).min(Amount::MAX);
            (Amount::new(value, currency).unwrap(), currency)
        })
}

fn any_wallet() -> impl Strategy<Value = WalletId> {
    prop_oneof![
        any_uuid().prop_map(WalletId::from_uuid),
        (0..Currency::ALL.len()).prop_map(|ci| WalletId::system(Currency::ALL[ci])),
    ]
}

fn any_facts() -> impl Strategy<Value = PostingFacts> {
    (any_wallet(), any_wallet(), any_amount()).prop_map(|(s, r, (amount, currency))| PostingFacts {
        tags: Default::default(),
        sender_wallet_id: s,
        receiver_wallet_id: r,
        amount,
        currency,
    })
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        any_facts().prop_map(Event::WalletReserved),
        any_facts().prop_map(Event::LedgerSucceeded),
        (0..REASONS.len()).prop_map(|i| Event::LedgerFailed(LedgerFailure { reason: REASONS[i] })),
    ]
}

fn any_time() -> impl Strategy<Value = Timestamp> {
    // 1970 to 2200, with nanoseconds.
    (0i64..7_258_118_400, 0u32..1_000_000_000)
        .prop_map(|(s, n)| chrono::DateTime::from_timestamp(s, n).unwrap())
}

fn any_envelope() -> impl Strategy<Value = Envelope> {
    (
        any_uuid(),
        any_event(),
        any_uuid(),
        any_uuid(),
        proptest::option::of(any_uuid()),
        any_time(),
        prop_oneof![Just(producer::WALLET), Just(producer::LEDGER)],
    )
        .prop_map(|(id, event, transfer, correlation, cause, time, from)| {
            Envelope::new(
                EventId::from_uuid(id),
                event,
                TransferId::from_uuid(transfer),
                CorrelationId::from_uuid(correlation),
                cause.map(EventId::from_uuid),
                time,
                from,
            )
        })
}

proptest! {
    #[test]
    fn every_envelope_survives_encode_and_decode(envelope in any_envelope()) {
        let decoded = Envelope::decode(&envelope.encode());
        prop_assert_eq!(decoded.as_ref(), Ok(&envelope));
        let decoded = decoded.unwrap();
        prop_assert_eq!(decoded.event.event_type(), envelope.event.event_type());
        prop_assert_eq!(decoded.encode(), envelope.encode());
    }

    #[test]
    fn the_event_type_on_the_wire_is_the_type_name(envelope in any_envelope()) {
        let value: Value = serde_json::from_slice(&envelope.encode()).unwrap();
        prop_assert_eq!(value["event_type"].as_str(), Some(envelope.event.event_type()));
        prop_assert_eq!(value["schema_version"].as_u64(), Some(u64::from(SCHEMA_VERSION)));
    }
}

#[test]
fn decode_refuses_amounts_with_an_exponent_and_keeps_the_currency_scale() {
    let mut value = json_of(&envelope(Event::WalletReserved(facts())));
    value["payload"]["amount"] = json!("1e3");
    assert!(matches!(
        decode_value(&value),
        Err(DecodeError::Malformed(_))
    ));

    value["payload"]["amount"] = json!("7.5");
    let Event::WalletReserved(f) = decode_value(&value).unwrap().event else {
        panic!("type changed");
    };
    assert_eq!(f.amount.to_string(), "7.50");
}

#[test]
fn a_reference_and_metadata_travel_from_the_reserve_to_the_ledgers_answer() {
    let tags = Tags {
        reference: Some(Reference::new("invoice-1").unwrap()),
        metadata: Some(Metadata::new(json!({"lines": [{"sku": "x"}]})).unwrap()),
    };
    let reserved = envelope(Event::WalletReserved(PostingFacts {
        tags: tags.clone(),
        ..facts()
    }));
    let value = json_of(&reserved);
    assert_eq!(value["payload"]["reference"], "invoice-1");
    assert_eq!(
        value["payload"]["metadata"],
        json!({"lines": [{"sku": "x"}]})
    );
    let read = decode_value(&value).unwrap();
    assert_eq!(read, reserved);
    let request = read.posting_request().unwrap();
    assert_eq!(request.tags, tags);
    let stamp = EventStamp {
        event_id: eid(2),
        at: at(1),
        trace: None,
    };
    let inbound = Inbound {
        envelope: read,
        body: request,
    };
    let answer = json_of(&Envelope::ledger_decided(
        &inbound,
        LedgerOutcome::Succeeded,
        stamp,
    ));
    assert_eq!(answer["payload"]["reference"], "invoice-1");
    assert_eq!(answer["payload"]["metadata"]["lines"][0]["sku"], "x");

    let untagged = json_of(&envelope(Event::WalletReserved(facts())));
    let payload = untagged["payload"].as_object().unwrap();
    assert!(!payload.contains_key("reference") && !payload.contains_key("metadata"));
    let mut forged = value.clone();
    forged["payload"]["metadata"] = json!("not an object");
    assert!(
        decode_value(&forged).is_err(),
        "metadata is checked on the way in"
    );
}
