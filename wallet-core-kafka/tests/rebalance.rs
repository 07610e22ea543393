//! Three members of one consumer group share a topic; one leaves while
//! messages still flow. Every message is handled (at least once), none is
//! lost, and each key's messages stay in order per member.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wallet_core::ports::{Message, Payload, Publisher, Subscription};
use wallet_core_kafka::{KafkaPublisher, KafkaSubscription, create_topics};

use common::{bootstrap, settings, unique};

const MESSAGES: usize = 3_000;
const KEYS: usize = 200;

/// Polls, "handles" (records), commits, until told to stop; then leaves
/// the group by dropping the subscription.
async fn member(
    mut subscription: KafkaSubscription,
    name: usize,
    handled: Arc<Mutex<Vec<(usize, String)>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let batch = match subscription.poll(100, Duration::from_millis(100)).await {
            Ok(batch) if !batch.is_empty() => batch,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("member {name}: poll failed (will retry): {e}");
                continue;
            }
        };
        handled.lock().unwrap().extend(batch.iter().map(|d| {
            (
                name,
                String::from_utf8(d.payload.to_bytes().into_owned()).unwrap(),
            )
        }));
        // As the consumer runner does: a failed commit (a rebalance under
        // way) leaves the offsets behind; the messages may come again.
        if let Err(e) = subscription.commit(&batch).await {
            eprintln!("member {name}: commit failed: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_leaving_mid_stream_loses_nothing() {
    let bootstrap = bootstrap();
    let settings = settings(&bootstrap, 6);
    let (topic, group) = (unique("rebalance"), unique("rebalance-group"));
    create_topics(&settings, std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let publisher = KafkaPublisher::new(&settings).expect("producer");
    let handled = Arc::new(Mutex::new(Vec::new()));
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::default()).collect();
    let mut members = Vec::new();
    for (name, stop) in stops.iter().enumerate() {
        let subscription = KafkaSubscription::new(&settings, &group, &topic).expect("subscribe");
        members.push(tokio::spawn(member(
            subscription,
            name,
            handled.clone(),
            stop.clone(),
        )));
    }

    // Publish in paced batches, so the departure happens mid-stream.
    let sent: Vec<String> = (0..MESSAGES).map(|i| format!("{}:{i}", i % KEYS)).collect();
    let mut left = false;
    for chunk in sent.chunks(100) {
        let messages: Vec<Message> = chunk
            .iter()
            .map(|p| Message {
                topic: topic.clone(),
                key: p.split(':').next().unwrap().as_bytes().to_vec(),
                payload: Payload::Bytes(p.clone().into_bytes()),
            })
            .collect();
        publisher.publish(&messages).await.expect("publish");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let count = handled.lock().unwrap().len();
        if !left && count >= MESSAGES / 3 {
            let by_leaver = handled
                .lock()
                .unwrap()
                .iter()
                .filter(|(m, _)| *m == 2)
                .count();
            eprintln!("member 2 leaves after handling {by_leaver} of {count}");
            stops[2].store(true, Ordering::SeqCst);
            left = true;
        }
    }

    let deadline = Instant::now() + Duration::from_secs(120);
    let expected: HashSet<&String> = sent.iter().collect();
    loop {
        let got: HashSet<String> = handled
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect();
        if expected.iter().all(|p| got.contains(*p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lost messages: {} of {MESSAGES} handled",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(left, "member 2 should have left mid-stream");
    for stop in &stops {
        stop.store(true, Ordering::SeqCst);
    }
    for m in members {
        m.await.expect("member");
    }
    let handled = handled.lock().unwrap().clone();
    let members_used: HashSet<usize> = handled.iter().map(|(m, _)| *m).collect();
    assert_eq!(members_used.len(), 3, "all three members handled messages");
    // Per member, one key's messages arrive in publish order (a rebalance
    // may redeliver a suffix, which starts the order again).
    for name in 0..3 {
        let mut last: std::collections::HashMap<&str, usize> = Default::default();
        for (_, p) in handled.iter().filter(|(m, _)| *m == name) {
            let (key, i) = p.split_once(':').unwrap();
            let i: usize = i.parse().unwrap();
            if let Some(prev) = last.insert(key, i) {
                assert!(
                    i > prev || handled.iter().filter(|(_, q)| q == p).count() > 1,
                    "member {name}: key {key} went from {prev} to {i} without a redelivery"
                );
            }
        }
    }
    eprintln!(
        "handled {} deliveries of {MESSAGES} messages ({} redelivered)",
        handled.len(),
        handled.len() - MESSAGES
    );
}
