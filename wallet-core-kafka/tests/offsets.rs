//! `reset_offsets` on a real broker (`WALLET_TEST_KAFKA`): a group that
//! consumed and committed a topic is moved back to a time (the first
//! record written at or after it), to the end for a time after every
//! record, and to the earliest; a member that joins then reads from there.

mod common;

use std::time::{Duration, Instant, SystemTime};

use wallet_core::contract::data::TestData;
use wallet_core::ports::{Message, Publisher, Subscription};
use wallet_core_kafka::{
    KafkaPublisher, KafkaSubscription, PartitionReset, ResetTo, create_topics, reset_offsets,
};

use common::{bootstrap, event_message, settings, unique, wallet_reserved};

const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `subscription` until it delivered `n` records; commits them.
async fn consume(subscription: &mut KafkaSubscription, n: usize) -> Vec<u64> {
    let deadline = Instant::now() + PATIENCE;
    let mut offsets = Vec::new();
    while offsets.len() < n {
        assert!(Instant::now() < deadline, "only {offsets:?} delivered");
        let batch = subscription
            .poll(100, Duration::from_millis(200))
            .await
            .expect("poll");
        subscription.commit(&batch).await.expect("commit");
        offsets.extend(batch.iter().map(|d| d.offset));
    }
    offsets
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_group_is_moved_back_to_a_time_or_the_earliest_and_reads_from_there() {
    let settings = settings(&bootstrap(), 1);
    let (topic, group) = (unique("reset"), unique("reset-group"));
    create_topics(&settings, std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let publisher = KafkaPublisher::new(&settings).expect("producer");
    let data = TestData::new();
    let messages = |n: usize| -> Vec<Message> {
        (0..n)
            .map(|_| event_message(&topic, &wallet_reserved(&data)))
            .collect()
    };
    publisher.publish(&messages(3)).await.expect("publish");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publisher.publish(&messages(2)).await.expect("publish");

    let mut member = KafkaSubscription::new(&settings, &group, &topic).expect("subscribe");
    assert_eq!(consume(&mut member, 5).await, [0, 1, 2, 3, 4]);
    drop(member);

    let reset = |to| {
        let (settings, group, topic) = (settings.clone(), group.clone(), topic.clone());
        async move {
            reset_offsets(&settings, &group, &topic, to)
                .await
                .expect("reset")
        }
    };
    let moved = |before: i64, after: i64| {
        vec![PartitionReset {
            partition: 0,
            before: Some(before),
            after,
        }]
    };
    assert_eq!(reset(ResetTo::Time(between)).await, moved(5, 3));
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(reset(ResetTo::Time(later)).await, moved(3, 5));
    assert_eq!(reset(ResetTo::Earliest).await, moved(5, 0));

    let mut again = KafkaSubscription::new(&settings, &group, &topic).expect("subscribe");
    assert_eq!(consume(&mut again, 5).await, [0, 1, 2, 3, 4]);
}
