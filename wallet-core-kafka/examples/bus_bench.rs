//! Publish and consume rates of the Kafka adapters against a running
//! broker, printed as one JSON object.
//!
//! ```text
//! cargo run --release -p wallet-core-kafka --example bus_bench -- \
//!     --bootstrap 127.0.0.1:9092 --events 50000 [--batch 500] [--partitions 8] \
//!     [--property librdkafka.key=value ...]
//! ```
//!
//! Publishing goes as the relay does it: `WalletReserved` events in
//! batches of `--batch`, each `publish` waiting for every delivery. Consuming
//! goes as the consumer runner does it: polls of up to `--batch`, each batch
//! decoded and then committed synchronously. Both use fresh topic and group
//! names, so runs do not meet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wallet_core::event::{Envelope, Event, PostingFacts, producer};
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::money::Currency;
use wallet_core::ports::{
    Clock, Message, Payload, Publisher, RandomIds, Subscription, SystemClock,
};
use wallet_core_kafka::{KafkaPublisher, KafkaSettings, KafkaSubscription, create_topics};

struct Args {
    bootstrap: String,
    events: usize,
    batch: usize,
    partitions: i32,
    /// librdkafka properties for every client, `--property key=value`.
    properties: Vec<(String, String)>,
}

fn args() -> Args {
    let mut args = Args {
        bootstrap: String::new(),
        events: 50_000,
        batch: 500,
        partitions: 8,
        properties: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => args.bootstrap = value,
            "--events" => args.events = value.parse().expect("--events: a number"),
            "--batch" => args.batch = value.parse().expect("--batch: a number"),
            "--partitions" => args.partitions = value.parse().expect("--partitions: a number"),
            "--property" => {
                let (key, value) = value.split_once('=').expect("--property key=value");
                args.properties.push((key.to_owned(), value.to_owned()));
            }
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        !args.bootstrap.is_empty(),
        "--bootstrap host:port is required"
    );
    args
}

fn event(ids: &RandomIds) -> Envelope {
    Envelope::new(
        ids.event_id(),
        Event::WalletReserved(PostingFacts {
            tags: Default::default(),
            sender_wallet_id: WalletId::system(Currency::USD),
            receiver_wallet_id: ids.wallet_id(),
            amount: wallet_core::contract::data::usd("10.00"),
            currency: Currency::USD,
        }),
        ids.transfer_id(),
        ids.correlation_id(),
        None,
        SystemClock.now(),
        producer::WALLET,
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = args();
    let mut settings = KafkaSettings::new(&args.bootstrap);
    settings.partitions = args.partitions;
    settings.properties.extend(args.properties.iter().cloned());
    let run = RandomIds.event_id().to_string();
    let topic = format!("bench.events.{run}");
    let group = format!("bench.group.{run}");
    create_topics(&settings, std::slice::from_ref(&topic))
        .await
        .expect("create the topic");

    let ids = RandomIds;
    let messages: Vec<Message> = (0..args.events)
        .map(|_| {
            let e = event(&ids);
            Message {
                topic: topic.clone(),
                key: e.transfer_id.to_string().into_bytes(),
                payload: Payload::Event(Arc::new(e)),
            }
        })
        .collect();
    let publisher = KafkaPublisher::new(&settings).expect("producer");
    let started = Instant::now();
    for batch in messages.chunks(args.batch) {
        publisher.publish(batch).await.expect("publish");
    }
    let publish_secs = started.elapsed().as_secs_f64();

    let mut subscription = KafkaSubscription::new(&settings, &group, &topic).expect("subscribe");
    // The clock starts at the first delivery: joining the group is not
    // consuming.
    let mut first = subscription
        .poll(args.batch, Duration::from_secs(60))
        .await
        .expect("poll");
    assert!(!first.is_empty(), "nothing to consume within 60 s");
    let started = Instant::now();
    let mut consumed = 0;
    loop {
        for d in &first {
            d.payload.envelope().expect("an event");
        }
        subscription.commit(&first).await.expect("commit");
        consumed += first.len();
        if consumed >= args.events {
            break;
        }
        first = subscription
            .poll(args.batch, Duration::from_secs(10))
            .await
            .expect("poll");
        assert!(
            !first.is_empty(),
            "consumed {consumed} of {} then nothing",
            args.events
        );
    }
    let consume_secs = started.elapsed().as_secs_f64();
    let report = serde_json::json!({
        "events": args.events,
        "batch": args.batch,
        "partitions": args.partitions,
        "publish_seconds": round(publish_secs),
        "publish_events_per_second": round(args.events as f64 / publish_secs),
        "consume_seconds": round(consume_secs),
        "consume_events_per_second": round(consumed as f64 / consume_secs),
    });
    println!("{report}");
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
