//! The outbox relay: claims what a store's outbox holds, publishes it in
//! order, at least once, and acknowledges it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::event::{Outgoing, SCHEMA_VERSION};
use crate::ids::WorkerId;
use crate::ports::{
    BusError, Claim, Message, Outbox, OutboxRecord, Payload, Publisher, StoreError,
};
use crate::runtime::consumer::{DeadLetter, dead_letter_topic};
use crate::runtime::supervisor::{LoopHandle, Place};
use crate::time::Clock;

/// Limits of a relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Records per claim and publish at most. Default 500.
    pub batch_size: usize,
    /// How long a claim holds its records. A relay that dies mid-batch
    /// delays that batch by at most this long, until another relay claims
    /// it; a publish must finish well within it, or another relay publishes
    /// the same records too (consumers dedupe). Default 30 s.
    pub lease: Duration,
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
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(100),
            error_backoff: Duration::from_millis(500),
        }
    }
}

/// Where a relay publishes: the service's event topic, and the dead-letter
/// topic of the consumer group whose refusals the store records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The topic of the service's events; `None` for a store that writes
    /// only dead letters.
    pub events: Option<String>,
    /// The consumer group of the service; its refusals go to
    /// [`dead_letter_topic`] of it.
    pub group: String,
    /// The schema version its events go out in: [`SCHEMA_VERSION`] (what
    /// the store wrote), or the next one while rehearsing an upgrade
    /// ([`Route::writing`]).
    pub schema_version: u16,
}

impl Route {
    /// Events to `events`, dead letters of `group` to its dead-letter topic.
    pub fn new(events: Option<&str>, group: &str) -> Route {
        Route {
            events: events.map(str::to_owned),
            group: group.to_owned(),
            schema_version: SCHEMA_VERSION,
        }
    }

    /// The same route, its events stamped with `schema_version`: a process
    /// acting as the next build (one that writes an additive new version)
    /// does this, so an upgrade can be rehearsed end to end. See
    /// docs/events.md, "Compatibility".
    pub fn writing(self, schema_version: u16) -> Route {
        Route {
            schema_version,
            ..self
        }
    }

    /// The message a record is published as.
    pub fn message(&self, item: Outgoing) -> Message {
        let mut key = [0; uuid::fmt::Hyphenated::LENGTH];
        let key = item
            .transfer_id()
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut key)
            .as_bytes()
            .to_vec();
        match item {
            Outgoing::Event(mut envelope) => {
                envelope.schema_version = self.schema_version;
                Message {
                    topic: self
                        .events
                        .clone()
                        .expect("a store without an event topic wrote an event"),
                    key,
                    payload: Payload::Event(Arc::new(envelope)),
                }
            }
            Outgoing::DeadLetter { event, reason } => Message {
                topic: dead_letter_topic(&self.group),
                key,
                payload: DeadLetter::refused(&self.group, &event, &reason)
                    .encode()
                    .into(),
            },
        }
    }
}

/// Why a relay pass stopped. Nothing is lost: unacknowledged records are
/// claimed again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Claiming or acknowledging failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Publishing failed.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Moves records from one outbox to their topics. Several relays, in one
/// process or many, may drain one outbox: each claims its own batches.
pub struct Relay<O, P> {
    outbox: O,
    publisher: P,
    route: Route,
    clock: Arc<dyn Clock>,
    worker: WorkerId,
    config: RelayConfig,
    wake: Arc<Notify>,
    status: LoopHandle,
}

impl<O: Outbox, P: Publisher> Relay<O, P> {
    /// A relay of `outbox` along `route`, claiming as `worker`. `wake` is
    /// notified by whoever writes to the outbox, so records leave at once
    /// instead of at the next poll.
    pub fn new(
        outbox: O,
        publisher: P,
        route: Route,
        clock: Arc<dyn Clock>,
        worker: WorkerId,
        wake: Arc<Notify>,
        config: RelayConfig,
    ) -> Self {
        Relay {
            outbox,
            publisher,
            route,
            clock,
            worker,
            config,
            wake,
            status: LoopHandle::detached("relay"),
        }
    }

    /// Reports the relay's state through `status` (by default, to nobody).
    pub fn reporting_to(mut self, status: LoopHandle) -> Self {
        self.status = status;
        self
    }

    /// Claims the next batch for this relay.
    pub async fn claim(&self) -> Result<Vec<OutboxRecord>, RelayError> {
        let claim = Claim::new(self.worker, self.clock.now(), self.config.lease);
        Ok(self.outbox.claim(&claim, self.config.batch_size).await?)
    }

    /// Publishes a claimed batch and acknowledges it; returns how many went
    /// out. A crash between the two steps publishes the batch again once
    /// the lease ends; consumers dedupe by event id.
    pub async fn publish(&self, records: Vec<OutboxRecord>) -> Result<usize, RelayError> {
        if records.is_empty() {
            return Ok(0);
        }
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        let messages: Vec<Message> = records
            .into_iter()
            .map(|r| self.route.message(r.item))
            .collect();
        self.publisher.publish(&messages).await?;
        self.outbox.acknowledge(&seqs).await?;
        crate::metrics::relay_published(&self.route.group, seqs.len());
        Ok(seqs.len())
    }

    /// Claims, publishes and acknowledges one batch.
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        let records = self.claim().await?;
        self.publish(records).await
    }

    /// Runs until the task is dropped.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// Runs until `stop` resolves. `stop` is heeded between batches only:
    /// a batch claimed is published and acknowledged first, so a graceful
    /// stop leaves no claim to wait out.
    pub async fn run_until(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let woken = self.wake.notified();
            let result = self.run_once().await;
            match &result {
                Ok(_) => self.status.ok(),
                Err(error) => {
                    let place = Place {
                        source: format!("outbox of {}", self.route.group),
                        ..Place::default()
                    };
                    self.status.failed(&error.to_string(), place);
                }
            }
            match result {
                // A full batch: more may be waiting.
                Ok(n) if n >= self.config.batch_size => tokio::select! {
                    biased;
                    () = &mut stop => return,
                    () = std::future::ready(()) => {}
                },
                Ok(_) => tokio::select! {
                    biased;
                    () = &mut stop => return,
                    () = woken => {}
                    () = tokio::time::sleep(self.config.idle_poll) => {}
                },
                Err(error) => {
                    tracing::error!(group = %self.route.group, %error, "relay pass failed");
                    tokio::select! {
                        biased;
                        () = &mut stop => return,
                        () = tokio::time::sleep(self.config.error_backoff) => {}
                    }
                }
            }
        }
    }
}
