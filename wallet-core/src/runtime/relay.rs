//! The outbox relay: publishes what a store's outbox holds, in order, at
//! least once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::ports::{BusError, Message, Outbox, Publisher, StoreError};

/// Limits of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events per publish at most. Default 500.
    pub batch_size: usize,
    /// How long an idle relay sleeps when nobody wakes it; bounds the delay of
    /// events written by other processes. Default 100 ms.
    pub idle_poll: Duration,
    /// Wait after a failed pass. Default 500 ms.
    pub error_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 500,
            idle_poll: Duration::from_millis(100),
            error_backoff: Duration::from_millis(500),
        }
    }
}

/// Why a relay pass stopped. Nothing is lost: unsent events stay unsent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Reading or marking the outbox failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Publishing failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Moves events from one outbox to one topic.
pub struct Relay<O, P> {
    outbox: O,
    publisher: P,
    topic: String,
    config: RelayConfig,
    wake: Arc<Notify>,
}

impl<O: Outbox, P: Publisher> Relay<O, P> {
    /// A relay of `outbox` to `topic`. `wake` is notified by whoever writes
    /// to the outbox, so events leave at once instead of at the next poll.
    pub fn new(
        outbox: O,
        publisher: P,
        topic: impl Into<String>,
        wake: Arc<Notify>,
        config: RelayConfig,
    ) -> Self {
        Relay {
            outbox,
            publisher,
            topic: topic.into(),
            config,
            wake,
        }
    }

    /// The unsent events as messages for the topic, with their outbox seqs.
    pub async fn pending(&self) -> Result<(Vec<u64>, Vec<Message>), RelayError> {
        let records = self.outbox.unsent(self.config.batch_size).await?;
        Ok(records
            .into_iter()
            .map(|r| {
                let message = Message {
                    topic: self.topic.clone(),
                    key: r.envelope.transfer_id.to_string().into_bytes(),
                    payload: r.envelope.encode(),
                };
                (r.seq, message)
            })
            .unzip())
    }

    /// Publishes one batch and marks it sent; returns how many went out.
    /// A crash between the two steps publishes the batch again next time;
    /// consumers dedupe by event id.
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        let (seqs, messages) = self.pending().await?;
        if messages.is_empty() {
            return Ok(0);
        }
        self.publisher.publish(&messages).await?;
        self.outbox.mark_sent(&seqs).await?;
        Ok(seqs.len())
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        loop {
            let woken = self.wake.notified();
            match self.run_once().await {
                Ok(n) if n >= self.config.batch_size => continue,
                Ok(_) => {
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep(self.config.idle_poll) => {}
                    }
                }
                Err(error) => {
                    tracing::error!(topic = %self.topic, %error, "relay pass failed");
                    tokio::time::sleep(self.config.error_backoff).await;
                }
            }
        }
    }
}
