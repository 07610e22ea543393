//! `idempotency::check` and request fingerprints.

use std::time::Duration;

use rust_decimal::Decimal;

use crate::idempotency::{Fingerprint, IdempotencyCheck, IdempotencyRecord, check};
use crate::ids::{IdempotencyKey, WalletId};
use crate::money::{Amount, Currency};
use crate::tags::{Metadata, Reference, Tags};
use crate::transfer::{TransferKind, TransferStatus};

use super::fixtures::{at, t0, tid, transfer, wid};
use super::gwt::given;

const LEASE: Duration = Duration::from_secs(30);

fn fingerprint(amount: &str) -> Fingerprint {
    let amount = Amount::parse(amount, Currency::USD).unwrap();
    Fingerprint::of_transfer(
        TransferKind::Transfer,
        wid(1),
        wid(2),
        amount,
        Currency::USD,
    )
}

fn record(response: Option<TransferStatus>) -> IdempotencyRecord {
    IdempotencyRecord {
        key: IdempotencyKey::new("key-1").unwrap(),
        fingerprint: fingerprint("10"),
        transfer_id: tid(1),
        created_at: t0(),
        response: response.map(transfer),
    }
}

fn repeat(amount: &'static str, now_s: i64) -> impl FnOnce(&IdempotencyRecord) -> IdempotencyCheck {
    move |r| {
        let current = transfer(TransferStatus::Succeeded);
        check(r, &current, &fingerprint(amount), at(now_s), LEASE)
    }
}

#[test]
fn another_request_under_the_key_is_reused_whatever_its_state() {
    for response in [None, Some(TransferStatus::Reserved)] {
        given(record(response))
            .when_decided(repeat("10.01", 1))
            .then_decides(IdempotencyCheck::Reused);
        given(record(response))
            .when_decided(repeat("10.01", 3600))
            .then_decides(IdempotencyCheck::Reused);
    }
}

#[test]
fn the_same_request_after_the_first_answered_replays_the_first_answer() {
    // The transfer has since SUCCEEDED; the replay is the first response.
    given(record(Some(TransferStatus::Reserved)))
        .when_decided(repeat("10", 1))
        .then_decides(IdempotencyCheck::Replay(Box::new(transfer(
            TransferStatus::Reserved,
        ))));
    given(record(Some(TransferStatus::Failed)))
        .when_decided(repeat("10", 3600))
        .then_decides(IdempotencyCheck::Replay(Box::new(transfer(
            TransferStatus::Failed,
        ))));
}

#[test]
fn the_same_request_while_the_first_is_unanswered_is_in_flight_within_the_lease() {
    given(record(None))
        .when_decided(repeat("10", 0))
        .then_decides(IdempotencyCheck::InFlight);
    given(record(None))
        .when_decided(repeat("10", 29))
        .then_decides(IdempotencyCheck::InFlight);
}

#[test]
fn after_the_lease_an_unanswered_request_replays_the_current_transfer() {
    given(record(None))
        .when_decided(repeat("10", 30))
        .then_decides(IdempotencyCheck::Replay(Box::new(transfer(
            TransferStatus::Succeeded,
        ))));
    given(record(None))
        .when_decided(repeat("10", 31))
        .then_decides(IdempotencyCheck::Replay(Box::new(transfer(
            TransferStatus::Succeeded,
        ))));
}

#[test]
fn a_clock_that_went_back_counts_as_in_flight() {
    given(record(None))
        .when_decided(repeat("10", -5))
        .then_decides(IdempotencyCheck::InFlight);
}

#[test]
fn fingerprints_are_equal_for_equal_amounts_written_differently() {
    assert_eq!(fingerprint("10.5"), fingerprint("10.50"));
    assert_eq!(fingerprint("7"), fingerprint("7.00"));
    let from_decimal = Amount::new(Decimal::new(1050, 2), Currency::USD).unwrap();
    let from_other_scale = Amount::new(Decimal::new(105, 1), Currency::USD).unwrap();
    assert_eq!(
        Fingerprint::of_transfer(
            TransferKind::Transfer,
            wid(1),
            wid(2),
            from_decimal,
            Currency::USD
        ),
        Fingerprint::of_transfer(
            TransferKind::Transfer,
            wid(1),
            wid(2),
            from_other_scale,
            Currency::USD
        ),
    );
}

#[test]
fn fingerprints_differ_in_every_field() {
    let base = fingerprint("10");
    let amount = Amount::parse("10", Currency::USD).unwrap();
    let eur = Amount::parse("10", Currency::EUR).unwrap();
    let others = [
        fingerprint("10.01"),
        Fingerprint::of_transfer(TransferKind::Deposit, wid(1), wid(2), amount, Currency::USD),
        Fingerprint::of_transfer(
            TransferKind::Transfer,
            wid(3),
            wid(2),
            amount,
            Currency::USD,
        ),
        Fingerprint::of_transfer(
            TransferKind::Transfer,
            wid(1),
            wid(3),
            amount,
            Currency::USD,
        ),
        Fingerprint::of_transfer(TransferKind::Transfer, wid(1), wid(2), eur, Currency::EUR),
    ];
    for other in others {
        assert_ne!(base, other);
    }
}

/// Vectors computed outside this code base (SHA-256 of the documented
/// canonical text), so a change of the encoding cannot go unnoticed: stored
/// fingerprints would stop matching their retries.
#[test]
fn fingerprints_match_pinned_vectors_of_the_canonical_encoding() {
    // "transfer\n<alice>\n<bob>\n10.50\nUSD"
    let transfer = Fingerprint::of_transfer(
        TransferKind::Transfer,
        wid(1),
        wid(2),
        Amount::parse("10.5", Currency::USD).unwrap(),
        Currency::USD,
    );
    assert_eq!(
        transfer.as_str(),
        "v1:c95e5dc207774a28c050404d6427bf7d7b8c4420ce0ebb7696013fc64b20c971"
    );
    // "deposit\n<JPY system account>\n<alice>\n1000\nJPY"
    let deposit = Fingerprint::of_transfer(
        TransferKind::Deposit,
        WalletId::system(Currency::JPY),
        wid(1),
        Amount::parse("1000", Currency::JPY).unwrap(),
        Currency::JPY,
    );
    assert_eq!(
        deposit.as_str(),
        "v1:bcedc5e3fa51f0cb05272cd3c041ef2c83ba5fb3b57b56562db0cdc637475e05"
    );
}

#[test]
fn tags_change_the_fingerprint_but_not_their_key_order_nor_an_untagged_one() {
    let tags = |reference: Option<&str>, metadata: &str| Tags {
        reference: reference.map(|r| Reference::new(r).unwrap()),
        metadata: Some(Metadata::new(serde_json::from_str(metadata).unwrap()).unwrap()),
    };
    let plain = fingerprint("10.00");
    assert_eq!(
        plain.clone().tagged(&Tags::default()),
        plain,
        "untagged: as before"
    );
    let a = plain
        .clone()
        .tagged(&tags(Some("r-1"), r#"{"a":1,"b":{"c":2,"d":3}}"#));
    let b = plain
        .clone()
        .tagged(&tags(Some("r-1"), r#"{"b":{"d":3,"c":2},"a":1}"#));
    assert_eq!(a, b, "the same object written in another order");
    assert_ne!(a, plain);
    for other in [
        tags(Some("r-2"), r#"{"a":1,"b":{"c":2,"d":3}}"#),
        tags(None, r#"{"a":1,"b":{"c":2,"d":3}}"#),
        tags(Some("r-1"), r#"{"a":1,"b":{"c":2,"d":4}}"#),
    ] {
        assert_ne!(plain.clone().tagged(&other), a, "{other:?}");
    }
}
