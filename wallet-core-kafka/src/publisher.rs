//! The publisher: an idempotent rdkafka producer behind wallet-core's
//! [`Publisher`] port.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use wallet_core::ports::{BusError, Message, Publisher};

use crate::headers::headers;
use crate::settings::KafkaSettings;

/// How long to wait before offering a message again when the producer's
/// local queue is full: deliveries drain it meanwhile.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(2);

/// Publishes to Kafka. Cheap to clone: clones share one producer (one
/// connection set, one idempotence sequence per partition).
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher").finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A producer configured by [`KafkaSettings::producer_config`]. Does
    /// not contact the broker yet.
    pub fn new(settings: &KafkaSettings) -> Result<KafkaPublisher, BusError> {
        let producer = settings
            .producer_config()
            .create()
            .map_err(|e| bus_error("creating the producer", &e))?;
        Ok(KafkaPublisher { producer })
    }

    /// Waits up to `timeout` for every message handed to the producer to be
    /// delivered; for a clean shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.producer
            .flush(timeout)
            .map_err(|e| bus_error("flushing the producer", &e))
    }

    /// Hands one message to the producer's queue, waiting while the queue
    /// is full; returns the future of its delivery.
    async fn enqueue(&self, message: &Message) -> Result<DeliveryFuture, BusError> {
        let payload = message.payload.to_bytes();
        let mut record = FutureRecord::to(&message.topic)
            .key(&message.key)
            .payload(payload.as_ref())
            .headers(headers(message, &payload));
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, _)) => return Err(bus_error("enqueueing a message", &error)),
            }
        }
    }
}

#[async_trait]
impl Publisher for KafkaPublisher {
    /// Enqueues every message first, so the batch travels together (in as
    /// few requests as `linger` allows), then waits for each delivery. The
    /// producer is idempotent with at most five requests in flight per
    /// partition, so one key's messages land in the order given. Returns
    /// only once the broker confirmed every message (`acks=all`); the relay
    /// acknowledges its outbox records only then.
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut failure = None;
        for message in messages {
            match self.enqueue(message).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(e) => {
                    // What was enqueued still goes out; wait for it so no
                    // delivery outlives this call unobserved.
                    failure = Some(e);
                    break;
                }
            }
        }
        for delivery in deliveries {
            let outcome = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => bus_error("delivering a message", &error),
                Err(_) => BusError("delivering a message: the producer was dropped".into()),
            };
            failure.get_or_insert(outcome);
        }
        match failure {
            None => Ok(()),
            Some(error) => {
                tracing::warn!(%error, messages = messages.len(), "publish failed; the batch will be retried");
                Err(error)
            }
        }
    }
}

/// A broker error as the ports report it.
pub(crate) fn bus_error(doing: &str, error: &KafkaError) -> BusError {
    BusError(format!("{doing}: {error}"))
}
