//! The core's consumer runner over a Kafka subscription and a real store:
//! a crash between the store's commit and the offset commit, and poison
//! messages, against a real broker (`WALLET_TEST_KAFKA`).

mod common;

use std::time::{Duration, Instant};

use std::sync::Arc;

use wallet_core::contract::data::{TestData, balance};
use wallet_core::event::Envelope;
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::memory::MemoryWalletStore;
use wallet_core::money::Currency;
use wallet_core::outcome::LedgerOutcome;
use wallet_core::ports::{Message, Payload, Publisher, Subscription};
use wallet_core::ports::{RandomIds, SystemClock, WalletStore};
use wallet_core::runtime::EventHandler;
use wallet_core::runtime::{ConsumerConfig, ConsumerRunner, DeadLetter, dead_letter_topic};
use wallet_core::service::WalletService;
use wallet_core_kafka::headers::{
    DEAD_LETTER_GROUP, DEAD_LETTER_OFFSET, DEAD_LETTER_PARTITION, DEAD_LETTER_REASON,
    DEAD_LETTER_TOPIC, EVENT_ID, EVENT_TYPE,
};
use wallet_core_kafka::{KafkaPublisher, KafkaSubscription, create_topics};

use common::{
    Counting, bootstrap, counts, decided_all, decisions, event_message, ledger, read_records,
    settings, unique, wallet_reserved,
};

const PATIENCE: Duration = Duration::from_secs(60);

/// A consumer applies a batch (its store commits the effects and the
/// outcome events) and dies before it commits the offsets. The group's next
/// member gets the same messages again, and the store's inbox makes the
/// second delivery a no-op: one decision per transfer.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_before_the_offset_commit_redelivers_and_the_inbox_dedupes() {
    let bootstrap = bootstrap();
    let settings = settings(&bootstrap, 2);
    let (topic, group) = (unique("crash"), unique("crash-group"));
    create_topics(&settings, &[topic.clone(), dead_letter_topic(&group)])
        .await
        .expect("topics");
    let publisher = KafkaPublisher::new(&settings).expect("producer");
    let data = TestData::new();
    let events: Vec<_> = (0..5).map(|_| wallet_reserved(&data)).collect();
    let messages: Vec<Message> = events.iter().map(|e| event_message(&topic, e)).collect();
    publisher.publish(&messages).await.expect("publish");

    let handler = Counting::new(ledger());
    {
        let subscription = KafkaSubscription::new(&settings, &group, &topic).expect("subscribe");
        let mut runner = ConsumerRunner::new(
            subscription,
            handler.clone(),
            publisher.clone(),
            group.clone(),
            ConsumerConfig::default(),
        );
        let mut polled = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        while polled.len() < events.len() {
            assert!(
                Instant::now() < deadline,
                "the first member got {} of 5",
                polled.len()
            );
            let batch = runner
                .subscription_mut()
                .poll(100, Duration::from_millis(200))
                .await
                .expect("poll");
            polled.extend(batch);
        }
        let report = runner.process(&polled).await.expect("handled");
        assert_eq!(report.handled, events.len());
        // The member dies here: its store committed, its offsets did not.
    }
    assert_eq!(
        decisions(&handler.inner).await,
        events.len(),
        "one decision per event"
    );

    let subscription = KafkaSubscription::new(&settings, &group, &topic).expect("subscribe");
    let mut runner = ConsumerRunner::new(
        subscription,
        handler.clone(),
        publisher.clone(),
        group.clone(),
        ConsumerConfig::default(),
    );
    let deadline = Instant::now() + PATIENCE;
    let mut delivered = 0;
    while delivered < events.len() {
        assert!(
            Instant::now() < deadline,
            "the next member got {delivered} of 5 again"
        );
        delivered += runner
            .run_once(Duration::from_millis(200))
            .await
            .expect("run")
            .delivered;
    }
    let seen = counts(&handler.seen());
    for event in &events {
        assert_eq!(
            seen.get(&event.event_id),
            Some(&2),
            "every event is delivered again after the crash"
        );
    }
    assert_eq!(
        decisions(&handler.inner).await,
        events.len(),
        "the inbox made the second delivery a no-op: still one decision per event"
    );
    // The next member committed: a third member starts after the five.
    drop(runner);
    let marker = wallet_reserved(&data);
    publisher
        .publish(&[event_message(&topic, &marker)])
        .await
        .expect("publish");
    let mut third = KafkaSubscription::new(&settings, &group, &topic).expect("subscribe");
    let deadline = Instant::now() + PATIENCE;
    let first = loop {
        assert!(Instant::now() < deadline, "the third member got nothing");
        let batch = third
            .poll(100, Duration::from_millis(200))
            .await
            .expect("poll");
        if !batch.is_empty() {
            break batch;
        }
    };
    assert_eq!(
        first
            .iter()
            .map(|d| d.payload.envelope().expect("event").event_id)
            .collect::<Vec<_>>(),
        vec![marker.event_id],
        "after the commit, the group reads only what came later"
    );
}

/// Publishes, on one key (so one partition), `events[0]`, a garbage
/// record, an event of an unknown type, then the other events; runs the
/// core's consumer runner with `handler` until every message was delivered
/// and checks the dead-letter topic: two letters, each with headers saying
/// why, which group, and the topic, partition and offset it was read at.
async fn poison_scenario<H: EventHandler>(handler: Arc<H>, events: &[Envelope]) {
    let bootstrap = bootstrap();
    let settings = settings(&bootstrap, 2);
    let (topic, group) = (unique("poison"), unique("poison-group"));
    let dead_letters = dead_letter_topic(&group);
    create_topics(&settings, &[topic.clone(), dead_letters.clone()])
        .await
        .expect("topics");
    let publisher = KafkaPublisher::new(&settings).expect("producer");
    let key = events[0].transfer_id.to_string().into_bytes();
    let unknown = format!(
        r#"{{"event_id":"{}","event_type":"WalletFrozen","schema_version":1,"transfer_id":"{}","correlation_id":"{}","causation_id":null,"occurred_at":"2026-01-01T00:00:00Z","producer":"wallet-service","payload":{{}}}}"#,
        RandomIds.event_id(),
        events[0].transfer_id,
        events[0].correlation_id,
    );
    let garbage = b"\xff\xfe not json at all".to_vec();
    let raw = |payload: Vec<u8>| Message {
        topic: topic.clone(),
        key: key.clone(),
        payload: Payload::Bytes(payload),
    };
    let mut messages = vec![event_message(&topic, &events[0])];
    messages.push(raw(garbage.clone()));
    messages.push(raw(unknown.clone().into_bytes()));
    for e in &events[1..] {
        let mut m = event_message(&topic, e);
        m.key = key.clone();
        messages.push(m);
    }
    publisher.publish(&messages).await.expect("publish");

    let subscription = KafkaSubscription::new(&settings, &group, &topic).expect("subscribe");
    let mut runner = ConsumerRunner::new(
        subscription,
        handler,
        publisher.clone(),
        group.clone(),
        ConsumerConfig::default(),
    );
    let deadline = Instant::now() + PATIENCE;
    let (mut delivered, mut dead_lettered) = (0, 0);
    while delivered < messages.len() {
        assert!(
            Instant::now() < deadline,
            "{delivered} of {} delivered",
            messages.len()
        );
        let report = runner
            .run_once(Duration::from_millis(200))
            .await
            .expect("run");
        delivered += report.delivered;
        dead_lettered += report.dead_lettered;
    }
    assert_eq!(dead_lettered, 2, "two poison messages");

    let records = read_records(&bootstrap, &dead_letters, 2, PATIENCE);
    let source = read_records(&bootstrap, &topic, messages.len(), PATIENCE);
    let position = |payload: &[u8]| {
        source
            .iter()
            .find(|r| r.payload == payload)
            .map(|r| (r.partition.to_string(), r.offset.to_string()))
            .expect("the poison message is on its topic")
    };
    let mut reasons = Vec::new();
    for record in &records {
        let letter: DeadLetter = serde_json::from_slice(&record.payload).expect("a dead letter");
        let h = &record.headers;
        assert_eq!(record.key, key, "a dead letter keeps its message's key");
        assert_eq!(h.get(DEAD_LETTER_GROUP), Some(&group));
        assert_eq!(h.get(DEAD_LETTER_TOPIC), Some(&topic));
        assert_eq!(h.get(DEAD_LETTER_REASON), Some(&letter.reason));
        let (partition, offset) = if letter.payload.contains("WalletFrozen") {
            assert!(
                letter.reason.contains("unknown event type"),
                "{}",
                letter.reason
            );
            assert_eq!(h.get(EVENT_TYPE).map(String::as_str), Some("WalletFrozen"));
            assert!(h.contains_key(EVENT_ID), "an unknown type still has an id");
            position(unknown.as_bytes())
        } else {
            assert!(letter.reason.contains("malformed"), "{}", letter.reason);
            assert!(!h.contains_key(EVENT_TYPE), "garbage has no event type");
            position(&garbage)
        };
        assert_eq!(h.get(DEAD_LETTER_PARTITION), Some(&partition));
        assert_eq!(h.get(DEAD_LETTER_OFFSET), Some(&offset));
        reasons.push(letter.reason);
    }
    reasons.sort();
    assert!(
        reasons[0].contains("malformed") && reasons[1].contains("unknown"),
        "{reasons:?}"
    );
}

/// On the wallet service's topic: the ledger service's consumer
/// dead-letters the poison and decides every valid `WalletReserved`, the
/// ones behind the poison included.
#[tokio::test(flavor = "multi_thread")]
async fn poison_on_the_wallet_topic_is_dead_lettered_and_the_partition_moves_on() {
    let data = TestData::new();
    let events: Vec<_> = (0..4).map(|_| wallet_reserved(&data)).collect();
    let ledger = ledger();
    poison_scenario(ledger.clone(), &events).await;
    assert!(
        decided_all(&ledger, &events).await,
        "every valid event was decided"
    );
    assert_eq!(decisions(&ledger).await, events.len(), "each once");
}

/// On the ledger's topic: the wallet service's consumer dead-letters the
/// poison and captures every reservation whose `LedgerSucceeded` follows.
#[tokio::test(flavor = "multi_thread")]
async fn poison_on_the_ledger_topic_is_dead_lettered_and_the_partition_moves_on() {
    let data = TestData::new();
    let wallets = Arc::new(WalletService::new(
        MemoryWalletStore::new(),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        Arc::default(),
    ));
    let mut events = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..4 {
        let receiver = data.wallet(Currency::USD);
        wallets.store().open_wallet(&receiver).await.expect("open");
        let request = data.reserve_request(
            WalletId::system(Currency::USD),
            receiver.id,
            "10.00",
            Currency::USD,
        );
        wallets.reserve(&request).await.expect("reserve");
        events.push(
            data.ledger_outcome(&request, LedgerOutcome::Succeeded)
                .envelope,
        );
        receivers.push(receiver.id);
    }
    poison_scenario(wallets.clone(), &events).await;
    for id in receivers {
        let wallet = wallets.wallet(id).await.expect("read").expect("wallet");
        assert_eq!(
            wallet.available,
            balance("10.00"),
            "the deposit behind the poison was captured"
        );
    }
}
