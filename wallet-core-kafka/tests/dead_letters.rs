//! The dead-letter and parked-event readers against a real broker
//! (`WALLET_TEST_KAFKA`): what the consumers set aside on `<group>.dlq` or
//! parked on `<group>.retry` is read back whole, in order, and reading it
//! leaves no trace in any consumer group.

mod common;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use wallet_core::contract::data::TestData;
use wallet_core::ports::Subscription;
use wallet_core::ports::{Delivery, Message, Payload, Publisher};
use wallet_core::runtime::{DeadLetter, dead_letter_topic, retry_topic};
use wallet_core_kafka::headers::{DEAD_LETTER_GROUP, DEAD_LETTER_REASON, DEAD_LETTER_TOPIC};
use wallet_core_kafka::{
    DeadLetters, KafkaPublisher, KafkaSettings, KafkaSubscription, Parked, READER_GROUP,
    create_topics,
};

use common::{bootstrap, settings, unique, wallet_reserved};

/// The offsets `group` committed on each of `partitions` partitions of
/// `topic`, `None` where it committed nothing.
fn committed(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<Option<i64>> {
    let client: BaseConsumer = settings.consumer_config(group).create().expect("client");
    let mut wanted = TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let offsets = client
        .committed_offsets(wanted, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match offsets.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dead_letter_is_read_back_in_order_and_no_group_moves() {
    let settings = settings(&bootstrap(), 3);
    let group = unique("dlq-group");
    let topic = dead_letter_topic(&group);
    create_topics(&settings, std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let reader = DeadLetters::of_group(&settings, &group);
    assert_eq!(reader.topic(), topic);
    assert_eq!(reader.records().await, Ok(Vec::new()), "an empty topic");

    // A transfer's letters, one key (so one partition, in order), then
    // letters of other transfers spread over the partitions.
    let data = TestData::new();
    let event = wallet_reserved(&data);
    let source = unique("events");
    let garbage = Delivery {
        topic: source.clone(),
        partition: 1,
        offset: 17,
        key: event.transfer_id.to_string().into_bytes(),
        payload: Payload::Bytes(b"\xff not json".to_vec()),
        trace: None,
    };
    let mut letters = vec![
        DeadLetter::undecodable(&group, &garbage, "malformed event: expected value"),
        DeadLetter::refused(
            &group,
            &event,
            &format!("no reservation for transfer {}", event.transfer_id),
        ),
    ];
    let mut keys = vec![garbage.key.clone(), garbage.key.clone()];
    for n in 0..6 {
        let other = wallet_reserved(&data);
        letters.push(DeadLetter::refused(&group, &other, &format!("refusal {n}")));
        keys.push(other.transfer_id.to_string().into_bytes());
    }
    let publisher = KafkaPublisher::new(&settings).expect("producer");
    let messages: Vec<Message> = letters
        .iter()
        .zip(&keys)
        .map(|(letter, key)| Message {
            topic: topic.clone(),
            key: key.clone(),
            payload: Payload::Bytes(letter.encode()),
        })
        .collect();
    publisher.publish(&messages).await.expect("publish");

    let records = reader.records().await.expect("read");
    assert_eq!(records.len(), letters.len(), "{records:?}");
    let positions: Vec<(u32, u64)> = records.iter().map(|r| (r.partition, r.offset)).collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(positions, sorted, "by partition, then offset, each once");
    let mut read: Vec<DeadLetter> = Vec::new();
    for record in &records {
        let letter = record.letter().expect("a dead letter");
        assert_eq!(
            record.header(DEAD_LETTER_REASON),
            Some(letter.reason.as_str())
        );
        assert_eq!(record.header(DEAD_LETTER_GROUP), Some(group.as_str()));
        let at = letters
            .iter()
            .position(|l| *l == letter)
            .expect("published");
        assert_eq!(record.key, keys[at], "the original key");
        read.push(letter);
    }
    for letter in &letters {
        assert_eq!(
            read.iter().filter(|l| *l == letter).count(),
            1,
            "{letter:?}"
        );
    }
    // The transfer's two letters: one partition, in the order published.
    let same: Vec<_> = records.iter().filter(|r| r.key == keys[0]).collect();
    assert_eq!(same.len(), 2);
    assert_eq!(same[0].partition, same[1].partition);
    assert!(same[0].offset < same[1].offset);
    assert_eq!(same[0].letter().unwrap(), letters[0]);
    assert_eq!(same[1].letter().unwrap(), letters[1]);
    assert_eq!(same[0].header(DEAD_LETTER_TOPIC), Some(source.as_str()));
    assert_eq!(same[1].header(DEAD_LETTER_TOPIC), None, "a store's refusal");
    assert_eq!(same[1].key_text(), event.transfer_id.to_string());

    // Read-only: a second read sees the same, and neither the reader's
    // group id nor the consumer group has an offset on the topic.
    assert_eq!(reader.records().await.expect("read again"), records);
    for name in [READER_GROUP, group.as_str()] {
        assert_eq!(
            committed(&settings, name, &topic, 3),
            vec![None; 3],
            "{name} committed nothing on {topic}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_is_named() {
    let mut settings = settings(&bootstrap(), 1);
    settings.request_timeout = Duration::from_secs(5);
    let group = unique("no-such-group");
    let error = DeadLetters::of_group(&settings, &group)
        .records()
        .await
        .expect_err("no topic");
    assert!(
        error.0.contains(&dead_letter_topic(&group)) && error.0.contains("does not exist"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn parked_events_read_pending_until_the_retry_group_commits_past_them() {
    let settings = settings(&bootstrap(), 3);
    let group = unique("parking-group");
    let topic = retry_topic(&group);
    create_topics(&settings, std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let parked = Parked::of_group(&settings, &group);
    assert_eq!(parked.topic(), topic);
    assert_eq!(parked.records().await, Ok(Vec::new()), "an empty topic");

    // Three events of one transfer, parked as the runner parks them: the
    // delivery's key and bytes as they were (so one partition, in order).
    let data = TestData::new();
    let events: Vec<_> = (0..3).map(|_| wallet_reserved(&data)).collect();
    let key = events[0].transfer_id.to_string().into_bytes();
    let messages: Vec<Message> = events
        .iter()
        .map(|event| Message {
            topic: topic.clone(),
            key: key.clone(),
            payload: Payload::Bytes(event.encode()),
        })
        .collect();
    let publisher = KafkaPublisher::new(&settings).expect("producer");
    publisher.publish(&messages).await.expect("publish");

    let before = parked.records().await.expect("read");
    assert_eq!(before.len(), 3, "{before:?}");
    assert!(before.iter().all(|p| p.pending), "nothing retried yet");
    for (p, event) in before.iter().zip(&events) {
        assert_eq!(p.record.key, key);
        assert_eq!(p.record.payload, event.encode(), "the bytes as parked");
    }

    // The retry consumer (its group named after its topic) handles and
    // commits the first two.
    let mut retry = KafkaSubscription::new(&settings, &topic, &topic).expect("member");
    let mut taken = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while taken < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "retry topic not delivered"
        );
        let batch = retry
            .poll(1, Duration::from_millis(500))
            .await
            .expect("poll");
        taken += batch.len();
        retry.commit(&batch).await.expect("commit");
    }
    let after = parked.records().await.expect("read again");
    let pending: Vec<bool> = after.iter().map(|p| p.pending).collect();
    assert_eq!(pending, [false, false, true], "{after:?}");
    assert_eq!(
        committed(&settings, READER_GROUP, &topic, 3),
        vec![None; 3],
        "the reader committed nothing"
    );
}
