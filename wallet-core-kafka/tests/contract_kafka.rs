//! The core's bus contract scenarios, the same functions the in-memory bus
//! passes, against a real Kafka-protocol broker (`WALLET_TEST_KAFKA`).

mod common;

use std::time::Duration;

use wallet_core::contract::BusFixture;
use wallet_core_kafka::KafkaSubscription;

use common::{CreatingPublisher, bootstrap, settings};

/// Each `fresh` bus is a new producer on the shared broker; the scenarios
/// name their own topics and groups, unique per run, so runs in parallel
/// do not meet.
struct KafkaFixture {
    bootstrap: String,
}

impl KafkaFixture {
    fn from_env() -> KafkaFixture {
        KafkaFixture {
            bootstrap: bootstrap(),
        }
    }
}

impl BusFixture for KafkaFixture {
    type Bus = CreatingPublisher;
    type Subscription = KafkaSubscription;

    async fn fresh(&self) -> CreatingPublisher {
        CreatingPublisher::new(settings(&self.bootstrap, 3))
    }

    async fn subscribe(
        &self,
        bus: &CreatingPublisher,
        group: &str,
        topic: &str,
    ) -> KafkaSubscription {
        bus.ensure(topic).await;
        KafkaSubscription::new(&bus.settings, group, topic).expect("subscription")
    }

    /// Joining a new group takes a few seconds on a real broker.
    fn patience(&self) -> Duration {
        Duration::from_secs(45)
    }
}

wallet_core::contract_tests!(bus: KafkaFixture::from_env());
