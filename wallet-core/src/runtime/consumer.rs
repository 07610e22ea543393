//! The event consumer runner: at least once, dedupe by event id, bounded
//! retries with backoff for transient errors, dead-letter for poison.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::event::Envelope;
use crate::ids::EventId;
use crate::ports::{
    BusError, Delivery, Inbound, Message, Publisher, Refusal, StoreError, Subscription,
};

/// What a handler did with a batch, beyond what it applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handled {
    /// Events it will never apply; the runner dead-letters them.
    pub refused: Vec<Refusal>,
}

impl Handled {
    /// Splits a batch into the events a handler takes, with the body `body`
    /// reads from each, and a refusal (`reason`) of every event it cannot
    /// read one from.
    pub fn accept<T>(
        batch: &[Envelope],
        body: impl Fn(&Envelope) -> Option<T>,
        reason: &str,
    ) -> (Vec<Inbound<T>>, Handled) {
        let mut handled = Handled::default();
        let mut inbound = Vec::with_capacity(batch.len());
        for envelope in batch {
            match body(envelope) {
                Some(b) => inbound.push(Inbound::from_envelope(envelope, b)),
                None => handled.refuse(envelope, reason),
            }
        }
        (inbound, handled)
    }

    /// Refuses one event of the batch.
    pub fn refuse(&mut self, envelope: &Envelope, reason: &str) {
        self.refused.push(Refusal {
            event_id: envelope.event_id,
            reason: reason.to_owned(),
        });
    }
}

/// A failure that may pass: the runner retries the whole batch, then, if it
/// keeps failing, rewinds so the batch is delivered again later. Never turned
/// into a business outcome or a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transient failure: {0}")]
pub struct HandleError(pub String);

impl From<StoreError> for HandleError {
    fn from(e: StoreError) -> Self {
        HandleError(e.to_string())
    }
}

/// Applies a batch of events. Must be idempotent by event id: the runner
/// delivers at least once.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Applies `batch` (in topic order per key) in as few units as it can.
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError>;
}

#[async_trait]
impl<H: EventHandler + ?Sized> EventHandler for std::sync::Arc<H> {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        (**self).handle(batch).await
    }
}

/// Limits of a consumer runner.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Messages per batch at most. Default 500.
    pub batch_size: usize,
    /// How long a poll waits for messages. Default 100 ms.
    pub poll_wait: Duration,
    /// Retries of a failing batch before it is rewound. Default 5.
    pub max_retries: u32,
    /// First backoff; doubled each retry. Default 20 ms.
    pub backoff_initial: Duration,
    /// Backoff ceiling. Default 2 s.
    pub backoff_max: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            batch_size: 500,
            poll_wait: Duration::from_millis(100),
            max_retries: 5,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(2),
        }
    }
}

impl ConsumerConfig {
    /// The wait before retry number `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_initial
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.backoff_max)
    }
}

/// What one batch came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Messages read.
    pub delivered: usize,
    /// Messages given to the handler (after dropping repeats within the batch).
    pub handled: usize,
    /// Messages dead-lettered (poison or refused).
    pub dead_lettered: usize,
}

/// Why a batch was not committed. It will be delivered again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerError {
    /// The broker failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The handler kept failing after every retry.
    #[error(transparent)]
    Handler(#[from] HandleError),
}

/// A dead letter: the original bytes and why they were set aside.
#[derive(Serialize)]
struct DeadLetter<'a> {
    source_topic: &'a str,
    partition: u32,
    offset: u64,
    group: &'a str,
    reason: &'a str,
    payload: String,
}

/// The dead-letter topic of a consumer group.
pub fn dead_letter_topic(group: &str) -> String {
    format!("{group}.dlq")
}

/// Reads one subscription and feeds a handler.
pub struct ConsumerRunner<S, H, P> {
    subscription: S,
    handler: H,
    dead_letters: P,
    group: String,
    config: ConsumerConfig,
}

impl<S: Subscription, H: EventHandler, P: Publisher> ConsumerRunner<S, H, P> {
    /// A runner for consumer group `group`; dead letters go to
    /// [`dead_letter_topic`] through `dead_letters`.
    pub fn new(
        subscription: S,
        handler: H,
        dead_letters: P,
        group: impl Into<String>,
        config: ConsumerConfig,
    ) -> Self {
        ConsumerRunner {
            subscription,
            handler,
            dead_letters,
            group: group.into(),
            config,
        }
    }

    /// The subscription, for fault injection by the simulator.
    pub fn subscription_mut(&mut self) -> &mut S {
        &mut self.subscription
    }

    /// Polls once (waiting up to `wait`) and handles what came.
    pub async fn run_once(&mut self, wait: Duration) -> Result<BatchReport, ConsumerError> {
        let deliveries = self.subscription.poll(self.config.batch_size, wait).await?;
        if deliveries.is_empty() {
            return Ok(BatchReport::default());
        }
        match self.process(&deliveries).await {
            Ok(report) => {
                self.subscription.commit(&deliveries).await?;
                Ok(report)
            }
            Err(e) => {
                self.subscription.rewind().await?;
                Err(e)
            }
        }
    }

    /// Handles polled deliveries (dead-lettering poison) without committing
    /// them: the middle of [`ConsumerRunner::run_once`]. Public so the
    /// simulator can poll with [`ConsumerRunner::subscription_mut`], handle,
    /// and then commit, rewind or handle again, as a crash or a duplicate
    /// delivery would.
    pub async fn process(&self, deliveries: &[Delivery]) -> Result<BatchReport, ConsumerError> {
        let mut report = BatchReport {
            delivered: deliveries.len(),
            ..BatchReport::default()
        };
        let mut seen = HashSet::new();
        let mut batch = Vec::with_capacity(deliveries.len());
        let mut poison = Vec::new();
        for d in deliveries {
            match Envelope::decode(&d.payload) {
                Ok(e) if seen.insert(e.event_id) => batch.push((e, d)),
                Ok(_) => {}
                Err(error) => poison.push(self.dead_letter(d, &error.to_string())),
            }
        }
        let envelopes: Vec<Envelope> = batch.iter().map(|(e, _)| e.clone()).collect();
        report.handled = envelopes.len();
        let handled = self.handle_with_retries(&envelopes).await?;
        let refused: HashSet<EventId> = handled.refused.iter().map(|r| r.event_id).collect();
        for r in &handled.refused {
            tracing::error!(group = %self.group, event_id = %r.event_id, reason = %r.reason,
                "event refused, dead-lettered");
        }
        for (envelope, delivery) in &batch {
            if refused.contains(&envelope.event_id) {
                let reason = handled
                    .refused
                    .iter()
                    .find(|r| r.event_id == envelope.event_id)
                    .map_or("refused", |r| r.reason.as_str());
                poison.push(self.dead_letter(delivery, reason));
            }
        }
        report.dead_lettered = poison.len();
        if !poison.is_empty() {
            self.dead_letters.publish(&poison).await?;
        }
        Ok(report)
    }

    async fn handle_with_retries(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        if batch.is_empty() {
            return Ok(Handled::default());
        }
        let mut attempt = 0;
        loop {
            match self.handler.handle(batch).await {
                Ok(handled) => return Ok(handled),
                Err(e) if attempt >= self.config.max_retries => return Err(e),
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, attempt, "batch failed, retrying");
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Message {
        tracing::error!(group = %self.group, topic = %delivery.topic, partition = delivery.partition,
            offset = delivery.offset, reason, "dead-lettering message");
        let letter = DeadLetter {
            source_topic: &delivery.topic,
            partition: delivery.partition,
            offset: delivery.offset,
            group: &self.group,
            reason,
            payload: String::from_utf8_lossy(&delivery.payload).into_owned(),
        };
        Message {
            topic: dead_letter_topic(&self.group),
            key: delivery.key.clone(),
            payload: serde_json::to_vec(&letter).expect("dead letters serialize"),
        }
    }

    /// Runs until the task is dropped. A batch that keeps failing is rewound
    /// and tried again after the backoff ceiling, so no event is skipped.
    pub async fn run(mut self) {
        loop {
            if let Err(error) = self.run_once(self.config.poll_wait).await {
                tracing::error!(group = %self.group, %error, "batch not committed; will be redelivered");
                tokio::time::sleep(self.config.backoff_max).await;
            }
        }
    }
}
