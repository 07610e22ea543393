//! The publisher: an idempotent rdkafka producer behind wallet-core's
//! [`Publisher`] port.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
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
///
/// After a failed delivery the producer is replaced by a new one (a new
/// producer id), so the records the relay publishes again start a fresh
/// idempotence session: a producer whose messages timed out no longer
/// knows which of them the broker wrote, and a broker that lost its state
/// (a restart) could otherwise refuse the old session for good. Consumers
/// dedupe by event id what both sessions wrote.
#[derive(Clone)]
pub struct KafkaPublisher {
    shared: Arc<Shared>,
}

struct Shared {
    config: ClientConfig,
    /// The producer in use, and how many were made before it.
    current: Mutex<(u64, FutureProducer)>,
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
        let config = settings.producer_config();
        let producer = create(&config)?;
        Ok(KafkaPublisher {
            shared: Arc::new(Shared {
                config,
                current: Mutex::new((0, producer)),
            }),
        })
    }

    fn current(&self) -> (u64, FutureProducer) {
        self.shared.current.lock().expect("producer lock").clone()
    }

    /// Replaces producer number `generation`, unless another publish did
    /// already. The old one is closed off the async threads: closing
    /// purges and waits briefly for its delivery reports.
    fn renew(&self, generation: u64) {
        let mut current = self.shared.current.lock().expect("producer lock");
        if current.0 != generation {
            return;
        }
        match create(&self.shared.config) {
            Ok(producer) => {
                let old = std::mem::replace(&mut *current, (generation + 1, producer));
                drop(current);
                tracing::warn!(
                    generation = generation + 1,
                    "producer replaced after a failed delivery"
                );
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => drop(runtime.spawn_blocking(move || drop(old))),
                    Err(_) => drop(old),
                }
            }
            Err(error) => tracing::error!(%error, "could not replace the producer"),
        }
    }

    /// Waits up to `timeout` for every message handed to the producer to be
    /// delivered; for a clean shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.current()
            .1
            .flush(timeout)
            .map_err(|e| bus_error("flushing the producer", &e))
    }

    /// Hands one message to the producer's queue, waiting while the queue
    /// is full; returns the future of its delivery.
    async fn enqueue(
        producer: &FutureProducer,
        message: &Message,
    ) -> Result<DeliveryFuture, BusError> {
        let payload = message.payload.to_bytes();
        let mut record = FutureRecord::to(&message.topic)
            .key(&message.key)
            .payload(payload.as_ref())
            .headers(headers(message, &payload));
        loop {
            match producer.send_result(record) {
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
        let (generation, producer) = self.current();
        let mut deliveries = Vec::with_capacity(messages.len());
        let mut failure = None;
        for message in messages {
            match Self::enqueue(&producer, message).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(e) => {
                    // What was enqueued still goes out; wait for it so no
                    // delivery outlives this call unobserved.
                    failure = Some(e);
                    break;
                }
            }
        }
        let mut undelivered = false;
        for delivery in deliveries {
            let outcome = match delivery.await {
                Ok(Ok(_)) => continue,
                Ok(Err((error, _))) => bus_error("delivering a message", &error),
                Err(_) => BusError("delivering a message: the producer was dropped".into()),
            };
            undelivered = true;
            failure.get_or_insert(outcome);
        }
        if undelivered {
            self.renew(generation);
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

fn create(config: &ClientConfig) -> Result<FutureProducer, BusError> {
    config
        .create()
        .map_err(|e| bus_error("creating the producer", &e))
}
