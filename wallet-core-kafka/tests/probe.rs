//! The operator's probes against the broker: readiness and a group's lag.

mod common;

use std::time::{Duration, Instant};

use wallet_core::ports::{Message, Payload, Publisher, Subscription};
use wallet_core_kafka::{GroupLag, KafkaPublisher, KafkaSubscription, create_topics, reachable};

use common::{bootstrap, settings, unique};

fn messages(topic: &str, range: std::ops::Range<usize>) -> Vec<Message> {
    range
        .map(|n| Message {
            topic: topic.to_owned(),
            key: format!("key-{n}").into_bytes(),
            payload: Payload::Bytes(format!("message {n}").into_bytes()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lag_counts_what_the_group_has_not_committed() {
    let settings = settings(&bootstrap(), 2);
    let (topic, group) = (unique("lag"), unique("lag-group"));
    create_topics(&settings, std::slice::from_ref(&topic))
        .await
        .expect("topic");
    let publisher = KafkaPublisher::new(&settings).expect("producer");
    publisher.publish(&messages(&topic, 0..10)).await.unwrap();
    let probe = GroupLag::new(&settings, &group, &topic).unwrap();
    assert_eq!(probe.lag().await, Ok(10), "a group that committed nothing");

    let mut member = KafkaSubscription::new(&settings, &group, &topic).unwrap();
    let mut polled = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while polled.len() < 10 && Instant::now() < deadline {
        polled.extend(member.poll(10, Duration::from_millis(200)).await.unwrap());
    }
    assert_eq!(polled.len(), 10);
    member.commit(&polled).await.unwrap();
    assert_eq!(probe.lag().await, Ok(0), "everything committed");

    publisher.publish(&messages(&topic, 10..13)).await.unwrap();
    assert_eq!(probe.lag().await, Ok(3), "the same probe, asked again");
    assert_eq!(probe.lag().await, Ok(3), "asking moves nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_that_does_not_answer_is_not_reachable() {
    let settings = settings(&bootstrap(), 2);
    assert_eq!(reachable(&settings).await, Ok(()));
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut nowhere = common::settings(&closed.to_string(), 2);
    nowhere.request_timeout = Duration::from_millis(500);
    assert!(reachable(&nowhere).await.is_err());
}
