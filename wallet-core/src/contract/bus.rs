//! Scenarios of [`Publisher`] and [`Subscription`]: what the relays and
//! consumers rely on from a broker.
//!
//! Each scenario uses topics and consumer groups named for it alone
//! ([`TestData::name`]). A poll may return fewer messages than are waiting
//! (a broker delivers in batches), so scenarios poll until they have what
//! they expect, up to [`BusFixture::patience`]. Commits and rewinds use one
//! key, so everything is on one partition and "the messages after the
//! committed offset" has one meaning. Groups that must each see every
//! message subscribe before either commits: retention is not part of the
//! ports, and a bus may drop what every group it knows of has committed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::contract::BusFixture;
use crate::contract::data::TestData;
use crate::event::Envelope;
use crate::ids::{EventId, IdGenerator, WalletId};
use crate::money::Currency;
use crate::ports::{Backlog, BusError, Delivery, Message, Payload, Publisher, Subscription};
use crate::runtime::{ConsumerConfig, ConsumerRunner, EventHandler, HandleError, Handled};

crate::__contract_scenarios!(bus => __contract_names());

fn message(topic: &str, key: &str, payload: String) -> Message {
    Message {
        topic: topic.to_owned(),
        key: key.as_bytes().to_vec(),
        payload: Payload::Bytes(payload.into_bytes()),
    }
}

async fn publish<B: Publisher>(bus: &B, messages: &[Message]) {
    bus.publish(messages)
        .await
        .unwrap_or_else(|e| panic!("publish failed: {e}"));
}

/// Polls until `count` deliveries arrived, failing after `patience`.
async fn take<S: Subscription>(
    subscription: &mut S,
    count: usize,
    patience: Duration,
    context: &str,
) -> Vec<Delivery> {
    let deadline = Instant::now() + patience;
    let mut got = Vec::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{context}: expected {count} messages, got {} within {patience:?}: {:?}",
            got.len(),
            payloads(&got)
        );
        let wait = left.min(Duration::from_millis(200));
        let batch = subscription
            .poll(count - got.len(), wait)
            .await
            .unwrap_or_else(|e| panic!("{context}: poll failed: {e}"));
        assert!(
            batch.len() <= count - got.len(),
            "{context}: poll returned more than max"
        );
        got.extend(batch);
    }
    got
}

fn text(payload: &Payload) -> String {
    String::from_utf8_lossy(&payload.to_bytes()).into_owned()
}

fn payloads(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| text(&d.payload)).collect()
}

/// `count` messages of one key, payloads `"{prefix}-0"`, `"{prefix}-1"`, ...
fn numbered(topic: &str, key: &str, prefix: &str, count: usize) -> Vec<Message> {
    (0..count)
        .map(|i| message(topic, key, format!("{prefix}-{i}")))
        .collect()
}

fn payloads_of(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| text(&m.payload)).collect()
}

/// The payloads of `key`'s deliveries, in delivery order.
fn of_key(deliveries: &[Delivery], key: &str) -> Vec<String> {
    payloads(
        &deliveries
            .iter()
            .filter(|d| d.key == key.as_bytes())
            .cloned()
            .collect::<Vec<_>>(),
    )
}

/// Messages of one key are delivered in the order published, across
/// publish calls, with their topic and key, and offsets rising within a
/// partition.
pub async fn keeps_each_keys_order_within_a_topic<F: BusFixture>(fixture: &F) {
    let bus = fixture.fresh().await;
    let data = TestData::new();
    let topic = data.name("order");
    let keys = ["k0", "k1", "k2", "k3"];
    let mut sent: Vec<Message> = Vec::new();
    for round in 0..2 {
        let mut batch = Vec::new();
        for i in 0..5 {
            for key in keys {
                batch.push(message(&topic, key, format!("{key}-{round}-{i}")));
            }
        }
        publish(&bus, &batch).await;
        sent.extend(batch);
    }
    let mut subscription = fixture.subscribe(&bus, &data.name("group"), &topic).await;
    let got = take(
        &mut subscription,
        sent.len(),
        fixture.patience(),
        "per-key order",
    )
    .await;
    for key in keys {
        let expected: Vec<String> = payloads_of(&sent)
            .into_iter()
            .filter(|p| p.starts_with(&format!("{key}-")))
            .collect();
        assert_eq!(
            of_key(&got, key),
            expected,
            "key {key}: messages should arrive in the order published"
        );
    }
    for delivery in &got {
        assert_eq!(delivery.topic, topic, "a delivery names its topic");
        let payload = text(&delivery.payload);
        assert!(
            payload.starts_with(&format!("{}-", String::from_utf8_lossy(&delivery.key))),
            "a delivery carries its message's key: {delivery:?}"
        );
    }
    for (i, a) in got.iter().enumerate() {
        for b in &got[i + 1..] {
            if a.partition == b.partition {
                assert!(
                    a.offset < b.offset,
                    "offsets should rise within a partition, in delivery order"
                );
            }
        }
        if let Some(other) = got.iter().find(|d| d.key == a.key) {
            assert_eq!(
                other.partition, a.partition,
                "one key's messages should share a partition"
            );
        }
    }
}

/// A new group reads what was published before it subscribed.
pub async fn delivers_messages_published_before_subscribing<F: BusFixture>(fixture: &F) {
    let bus = fixture.fresh().await;
    let data = TestData::new();
    let topic = data.name("early");
    let sent = numbered(&topic, "key", "early", 3);
    publish(&bus, &sent).await;
    let mut subscription = fixture.subscribe(&bus, &data.name("group"), &topic).await;
    let got = take(
        &mut subscription,
        3,
        fixture.patience(),
        "published before subscribing",
    )
    .await;
    assert_eq!(
        payloads(&got),
        payloads_of(&sent),
        "messages published before the group subscribed should be delivered, in order"
    );
}

/// `rewind` goes back to the committed offsets: what was polled but not
/// committed is delivered again, what was committed is not.
pub async fn rewind_redelivers_what_was_not_committed<F: BusFixture>(fixture: &F) {
    let bus = fixture.fresh().await;
    let data = TestData::new();
    let topic = data.name("rewind");
    let sent = numbered(&topic, "key", "m", 6);
    publish(&bus, &sent).await;
    let mut subscription = fixture.subscribe(&bus, &data.name("group"), &topic).await;
    let patience = fixture.patience();

    let first = take(&mut subscription, 6, patience, "first poll").await;
    assert_eq!(payloads(&first), payloads_of(&sent), "first poll, in order");
    subscription.rewind().await.expect("rewind");
    let again = take(
        &mut subscription,
        6,
        patience,
        "after rewinding with nothing committed",
    )
    .await;
    assert_eq!(
        (
            payloads(&again),
            again.iter().map(|d| d.offset).collect::<Vec<_>>()
        ),
        (
            payloads(&first),
            first.iter().map(|d| d.offset).collect::<Vec<_>>()
        ),
        "with nothing committed, a rewind redelivers everything, at the same offsets"
    );

    subscription.commit(&again[..2]).await.expect("commit");
    subscription.rewind().await.expect("rewind");
    let rest = take(
        &mut subscription,
        4,
        patience,
        "after committing two and rewinding",
    )
    .await;
    assert_eq!(
        payloads(&rest),
        payloads_of(&sent[2..]),
        "a rewind goes back to the committed offset: the uncommitted messages, in order"
    );
}

/// `rejoin` starts reading afresh from the committed offsets, whatever was
/// polled, committed or rewound before: what was committed is not
/// delivered again, the rest is, in order.
pub async fn rejoin_delivers_again_from_the_committed_offsets<F: BusFixture>(fixture: &F) {
    let bus = fixture.fresh().await;
    let data = TestData::new();
    let topic = data.name("rejoin");
    let sent = numbered(&topic, "key", "m", 6);
    publish(&bus, &sent).await;
    let mut subscription = fixture.subscribe(&bus, &data.name("group"), &topic).await;
    let patience = fixture.patience();

    let first = take(&mut subscription, 6, patience, "first poll").await;
    subscription.commit(&first[..2]).await.expect("commit");
    subscription.rejoin().await.expect("rejoin");
    let rest = take(
        &mut subscription,
        4,
        patience,
        "after committing two and rejoining",
    )
    .await;
    assert_eq!(
        payloads(&rest),
        payloads_of(&sent[2..]),
        "a rejoin starts at the committed offset: the uncommitted messages, in order"
    );
    subscription.rejoin().await.expect("a second rejoin");
    let again = take(&mut subscription, 4, patience, "after rejoining again").await;
    assert_eq!(
        payloads(&again),
        payloads_of(&sent[2..]),
        "nothing more was committed: a second rejoin delivers the same messages"
    );
}

/// Which call of a [`Failing`] subscription fails next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Poll,
    Commit,
    /// Fails having moved nothing back, as a rewind that seeks some
    /// partitions and not others leaves the rest past the failed batch.
    Rewind,
}

/// A subscription whose next poll, commit or rewind fails when armed,
/// having done nothing.
struct Failing<S> {
    inner: S,
    armed: Arc<Mutex<Option<Failure>>>,
}

impl<S> Failing<S> {
    fn fails(&self, call: Failure) -> Result<(), BusError> {
        let mut armed = self.armed.lock().expect("not poisoned");
        if *armed == Some(call) {
            *armed = None;
            return Err(BusError(format!("planted: {call:?} failed")));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: Subscription> Subscription for Failing<S> {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        self.fails(Failure::Poll)?;
        self.inner.poll(max, wait).await
    }

    async fn commit(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
        self.fails(Failure::Commit)?;
        self.inner.commit(deliveries).await
    }

    async fn rewind(&mut self) -> Result<(), BusError> {
        self.fails(Failure::Rewind)?;
        self.inner.rewind().await
    }

    async fn rejoin(&mut self) -> Result<(), BusError> {
        self.inner.rejoin().await
    }

    async fn backlog(&mut self) -> Result<Backlog, BusError> {
        self.inner.backlog().await
    }
}

/// Records the events it is handed; fails the first batch when told to.
#[derive(Default)]
struct Recorder {
    seen: Mutex<HashSet<EventId>>,
    fail_first: AtomicBool,
}

impl Recorder {
    fn seen(&self) -> usize {
        self.seen.lock().expect("not poisoned").len()
    }
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        if self.fail_first.swap(false, Ordering::SeqCst) {
            return Err(HandleError::Transient("planted: the store is down".into()));
        }
        let mut seen = self.seen.lock().expect("not poisoned");
        seen.extend(batch.iter().map(|e| e.event_id));
        Ok(Handled::default())
    }
}

/// Every event here is well formed: a dead letter is a failure.
struct NoDeadLetters;

#[async_trait]
impl Publisher for NoDeadLetters {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        panic!("no dead letter expected, got {}", messages.len());
    }
}

/// A consumer runner whose subscription fails a poll, a commit, or the
/// rewind of a batch its handler failed, still hands every event to the
/// handler: after any such failure it rejoins before it polls again, so
/// nothing is committed past an event it did not handle.
pub async fn a_consumer_never_skips_an_event_after_a_subscription_failure<F: BusFixture>(
    fixture: &F,
) {
    const EVENTS: usize = 24;
    for failure in [Failure::Rewind, Failure::Commit, Failure::Poll] {
        let bus = fixture.fresh().await;
        let data = TestData::new();
        let (topic, group) = (data.name("faults"), data.name("group"));
        let messages: Vec<Message> = (0..EVENTS)
            .map(|_| {
                let request =
                    data.reserve_request(data.wallet_id(), data.wallet_id(), "1.00", Currency::USD);
                let event = data.wallet_reserved(&request).0.envelope;
                let key = event.transfer_id.to_string();
                message(
                    &topic,
                    &key,
                    String::from_utf8(event.encode()).expect("JSON"),
                )
            })
            .collect();
        publish(&bus, &messages).await;
        let armed = Arc::new(Mutex::new(Some(failure)));
        let subscription = Failing {
            inner: fixture.subscribe(&bus, &group, &topic).await,
            armed: armed.clone(),
        };
        let handler = Arc::new(Recorder {
            fail_first: AtomicBool::new(failure == Failure::Rewind),
            ..Recorder::default()
        });
        // One event per batch: a failing batch of several would be split
        // and handled by halves instead of rewound.
        let config = ConsumerConfig {
            batch_size: 1,
            max_retries: 0,
            ..ConsumerConfig::default()
        };
        let mut runner =
            ConsumerRunner::new(subscription, handler.clone(), NoDeadLetters, group, config);
        let deadline = Instant::now() + fixture.patience() * 3;
        while handler.seen() < EVENTS {
            assert!(
                Instant::now() < deadline,
                "after a failed {failure:?}: {} of {EVENTS} events handled; the rest were skipped",
                handler.seen()
            );
            let _ = runner.run_once(Duration::from_millis(200)).await;
        }
        assert_eq!(
            *armed.lock().expect("not poisoned"),
            None,
            "the planted {failure:?} failure struck"
        );
    }
}

/// A group's new subscription starts after the offsets it committed, and
/// then reads what is published next.
pub async fn a_new_subscription_starts_after_the_committed_offset<F: BusFixture>(fixture: &F) {
    let bus = fixture.fresh().await;
    let data = TestData::new();
    let (topic, group) = (data.name("resume"), data.name("group"));
    let sent = numbered(&topic, "key", "m", 6);
    publish(&bus, &sent).await;
    let patience = fixture.patience();
    {
        let mut subscription = fixture.subscribe(&bus, &group, &topic).await;
        let got = take(&mut subscription, 6, patience, "the first subscription").await;
        subscription.commit(&got[..4]).await.expect("commit");
    }
    let mut subscription = fixture.subscribe(&bus, &group, &topic).await;
    let got = take(
        &mut subscription,
        2,
        patience,
        "the group's new subscription",
    )
    .await;
    assert_eq!(
        payloads(&got),
        payloads_of(&sent[4..]),
        "a new subscription of the group should start right after the committed offset"
    );
    let later = numbered(&topic, "key", "later", 2);
    publish(&bus, &later).await;
    let got = take(&mut subscription, 2, patience, "messages published later").await;
    assert_eq!(
        payloads(&got),
        payloads_of(&later),
        "messages published later follow"
    );
}

/// Two consumer groups of one topic each get every message, in each key's
/// order, whatever the other commits.
pub async fn every_group_gets_every_message<F: BusFixture>(fixture: &F) {
    let bus = fixture.fresh().await;
    let data = TestData::new();
    let topic = data.name("fanout");
    let keys = ["a", "b", "c"];
    let early: Vec<Message> = keys
        .iter()
        .flat_map(|k| numbered(&topic, k, &format!("{k}-early"), 3))
        .collect();
    publish(&bus, &early).await;
    let mut first = fixture.subscribe(&bus, &data.name("first"), &topic).await;
    let mut second = fixture.subscribe(&bus, &data.name("second"), &topic).await;
    let late: Vec<Message> = keys
        .iter()
        .flat_map(|k| numbered(&topic, k, &format!("{k}-late"), 3))
        .collect();
    publish(&bus, &late).await;

    let patience = fixture.patience();
    let total = early.len() + late.len();
    let got_first = take(&mut first, total, patience, "the first group").await;
    first.commit(&got_first).await.expect("commit");
    let got_second = take(&mut second, total, patience, "the second group").await;
    second.commit(&got_second).await.expect("commit");
    for (group, got) in [("first", &got_first), ("second", &got_second)] {
        for key in keys {
            let expected: Vec<String> = payloads_of(&early)
                .into_iter()
                .chain(payloads_of(&late))
                .filter(|p| p.starts_with(&format!("{key}-")))
                .collect();
            assert_eq!(
                of_key(got, key),
                expected,
                "the {group} group should get every message of key {key}, in order"
            );
        }
    }
}

/// What was published arrives as published: bytes byte for byte, and an
/// event handed over in process (a relay publishes `Payload::Event`) as
/// the same event, whether the bus passes it on or encodes it for the
/// wire.
pub async fn delivers_payloads_as_published<F: BusFixture>(fixture: &F) {
    let bus = fixture.fresh().await;
    let data = TestData::new();
    let topic = data.name("payloads");
    let request = data.reserve_request(
        WalletId::system(Currency::USD),
        data.wallet_id(),
        "12.50",
        Currency::USD,
    );
    let event = data.wallet_reserved(&request).0.envelope;
    let encoded = data.wallet_reserved(&request).0.envelope;
    let bytes = encoded.encode();
    let key = request.transfer_id.to_string();
    let sent = [
        Message {
            topic: topic.clone(),
            key: key.clone().into_bytes(),
            payload: Payload::Event(Arc::new(event.clone())),
        },
        Message {
            topic: topic.clone(),
            key: key.into_bytes(),
            payload: Payload::Bytes(bytes.clone()),
        },
    ];
    publish(&bus, &sent).await;
    let mut subscription = fixture.subscribe(&bus, &data.name("group"), &topic).await;
    let got = take(&mut subscription, 2, fixture.patience(), "payloads").await;
    assert_eq!(
        got[0].payload.envelope(),
        Ok(event),
        "a published event should be delivered as the same event"
    );
    assert_eq!(
        got[1].payload.to_bytes().as_ref(),
        bytes.as_slice(),
        "published bytes should be delivered byte for byte"
    );
    assert_eq!(
        got[1].payload.envelope(),
        Ok(encoded),
        "published bytes of an event should decode to that event"
    );
}
