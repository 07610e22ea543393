//! The event consumer runner: at least once, dedupe by event id, bounded
//! retries with backoff for transient errors, dead letters for poison, and a
//! stop on integrity errors.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::event::{DecodeError, Envelope, Inbound};
use crate::ids::EventId;
use crate::metrics::{self, DeadLetteredBy};
use crate::ports::{
    Backlog, BusError, Delivery, Message, Publisher, Refusal, StoreError, Subscription,
};
use crate::runtime::supervisor::{LoopHandle, Place};

/// What a handler did with a batch, beyond what it applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handled {
    /// Events it will never apply and did not store anything for (the wrong
    /// type for this consumer); the runner dead-letters them before it
    /// commits. Refusals a store records go through its outbox instead.
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
                Some(body) => inbound.push(Inbound {
                    envelope: envelope.clone(),
                    body,
                }),
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

/// Why a handler did not apply a batch. Never turned into a business
/// outcome or a dead letter: the batch is not committed either way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// A failure that may pass (storage unavailable): the runner retries the
    /// batch with backoff, then rewinds so it is delivered again later.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A bug or corrupt data (a storage integrity error): retrying cannot
    /// help and skipping would lose the event, so the runner stops.
    #[error("integrity failure: {0}")]
    Integrity(String),
}

impl From<StoreError> for HandleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Integrity(_) => HandleError::Integrity(e.to_string()),
            _ => HandleError::Transient(e.to_string()),
        }
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
    /// How long a member may deliver nothing while its group is behind
    /// before it counts as stalled and rejoins: it owns partitions with
    /// messages waiting, or it owns none while the group's committed
    /// offsets stand still. Covers a broker that never hands a restarted
    /// member its partitions. Default 20 s.
    pub stall_after: Duration,
    /// Where an event that keeps failing alone goes: parked on the group's
    /// [`retry_topic`] (`true`), where a second runner retries it with
    /// backoff, so it holds back nothing; or held on its own partition
    /// (`false`, the default), retried at each delivery.
    pub park: bool,
    /// The newest event schema version it reads; an event of a newer one
    /// is held (see [`Holding::NewerVersion`]). Default
    /// [`SCHEMA_VERSION`](crate::event::SCHEMA_VERSION); one more rehearses
    /// the next build's reader.
    pub schema_version: u16,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            batch_size: 500,
            poll_wait: Duration::from_millis(100),
            max_retries: 5,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(2),
            stall_after: Duration::from_secs(20),
            park: false,
            schema_version: crate::event::SCHEMA_VERSION,
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Messages read.
    pub delivered: usize,
    /// Messages given to the handler (after dropping repeats within the batch).
    pub handled: usize,
    /// Messages dead-lettered (poison or refused).
    pub dead_lettered: usize,
    /// Events held back, at most one per partition: each holds back itself
    /// and what follows it on its partition, neither committed nor
    /// dead-lettered, while the rest of the batch is handled and committed.
    pub held: Vec<Held>,
    /// Events that kept failing alone, parked on the retry topic
    /// ([`ConsumerConfig::park`]).
    pub parked: usize,
}

/// An event held back, where it waits, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset: nothing from here on is committed.
    pub offset: u64,
    /// Why.
    pub why: Holding,
}

/// Why an event is held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// It was written in this schema version, newer than this build reads:
    /// it waits for a build that reads it.
    NewerVersion(u16),
    /// Handling it kept failing with this transient error after every
    /// retry, alone: the batch it came in was split until it stood alone,
    /// and the rest was handled.
    Failing(HandleError),
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]@{}: ", self.topic, self.partition, self.offset)?;
        match &self.why {
            Holding::NewerVersion(version) => write!(
                f,
                "schema version {version} is newer than this build reads; \
                 held until a build that reads it takes over"
            ),
            Holding::Failing(error) => write!(
                f,
                "the event keeps failing alone ({error}); its partition waits \
                 behind it, the rest of its batch was handled"
            ),
        }
    }
}

impl Held {
    fn at(delivery: &Delivery, why: Holding) -> Held {
        Held {
            topic: delivery.topic.clone(),
            partition: delivery.partition,
            offset: delivery.offset,
            why,
        }
    }

    /// True when `delivery` is this event or comes after it on its
    /// partition.
    fn holds(&self, delivery: &Delivery) -> bool {
        delivery.topic == self.topic
            && delivery.partition == self.partition
            && delivery.offset >= self.offset
    }
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
    /// An event was held back ([`Holding`]): what came before it and the
    /// rest of the batch were handled and committed; it waits, with what
    /// follows it on its partition.
    #[error("{0}")]
    HeldBack(Held),
}

impl ConsumerError {
    /// True for an integrity failure: the runner must stop until an operator
    /// acts.
    pub fn is_integrity(&self) -> bool {
        matches!(self, ConsumerError::Handler(HandleError::Integrity(_)))
    }
}

/// Where a dead-lettered message was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
}

/// The payload of a dead-letter message: what was set aside, by whom and
/// why. Documented in the events reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The consumer group that set it aside.
    pub group: String,
    /// Why.
    pub reason: String,
    /// The event's id, when the message was an event.
    pub event_id: Option<EventId>,
    /// Where it was read, when the runner set it aside; `None` for a
    /// refusal a store recorded (the event id identifies it).
    pub source: Option<Source>,
    /// The message's bytes, as text (invalid UTF-8 replaced).
    pub payload: String,
}

impl DeadLetter {
    /// A message the runner cannot hand to the handler.
    pub fn undecodable(group: &str, delivery: &Delivery, reason: &str) -> DeadLetter {
        DeadLetter {
            group: group.to_owned(),
            reason: reason.to_owned(),
            event_id: None,
            source: Some(Source {
                topic: delivery.topic.clone(),
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            payload: String::from_utf8_lossy(&delivery.payload.to_bytes()).into_owned(),
        }
    }

    /// An event a handler or a store refused.
    pub fn refused(group: &str, event: &Envelope, reason: &str) -> DeadLetter {
        DeadLetter {
            group: group.to_owned(),
            reason: reason.to_owned(),
            event_id: Some(event.event_id),
            source: None,
            payload: String::from_utf8_lossy(&event.encode()).into_owned(),
        }
    }

    /// The JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("dead letters serialize")
    }
}

/// The dead-letter topic of a consumer group.
pub fn dead_letter_topic(group: &str) -> String {
    format!("{group}.dlq")
}

/// The retry topic of a consumer group: events that kept failing alone,
/// parked there (as received) to be retried by the group's retry runner.
/// That runner's own consumer group is the topic's name.
pub fn retry_topic(group: &str) -> String {
    format!("{group}.retry")
}

/// Reads one subscription and feeds a handler.
pub struct ConsumerRunner<S, H, P> {
    subscription: S,
    handler: H,
    dead_letters: P,
    group: String,
    config: ConsumerConfig,
    /// Set when a poll, commit or rewind failed: the subscription's
    /// position is then unknown, and the next step rejoins before it polls.
    lost: bool,
    /// The stall watch: since when nothing was delivered, and what the
    /// last look at the backlog found.
    idle: Idle,
    /// Where the runner reports its state (readiness, gauges).
    status: LoopHandle,
    /// A batch failed and none was handled since: an idle poll does not
    /// make the loop well again.
    failing: bool,
    /// Where the last step failed, for the status; set on failures only,
    /// so a good batch pays for no second decode.
    last: Option<Place>,
}

/// What the stall watch knows.
#[derive(Debug, Clone)]
struct Idle {
    /// The last delivery, or the last (re)join.
    since: Instant,
    /// The last backlog read, and when.
    seen: Option<(Instant, Backlog)>,
    /// Why the member is stalled, when the last read found it so.
    stalled: Option<String>,
}

impl Idle {
    fn new() -> Idle {
        Idle {
            since: Instant::now(),
            seen: None,
            stalled: None,
        }
    }
}

/// Why a member that delivers nothing is stalled, if it is: `before` is
/// the backlog read one stall period ago (or more), `now` the current one.
pub fn stalled(before: Option<&Backlog>, now: &Backlog) -> Option<String> {
    if now.owned > 0 && now.owned_lag > 0 {
        return Some(format!(
            "{} messages wait on the {} partitions it owns, and none was delivered",
            now.owned_lag, now.owned
        ));
    }
    let still = before.is_some_and(|b| b.committed == now.committed);
    if now.owned == 0 && now.group_lag > 0 && still {
        return Some(format!(
            "it owns no partition while its group is {} messages behind and makes no progress",
            now.group_lag
        ));
    }
    None
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
        let group = group.into();
        ConsumerRunner {
            subscription,
            handler,
            dead_letters,
            status: LoopHandle::detached(&group),
            group,
            config,
            lost: false,
            idle: Idle::new(),
            failing: false,
            last: None,
        }
    }

    /// Reports the runner's state through `status` (by default, to nobody).
    /// A runner started again after a stall starts stalled: only a batch
    /// handled makes it well.
    pub fn reporting_to(mut self, status: LoopHandle) -> Self {
        self.failing = status.is_stalled();
        self.status = status;
        self
    }

    /// The subscription, for fault injection by the simulator.
    pub fn subscription_mut(&mut self) -> &mut S {
        &mut self.subscription
    }

    /// Polls once (waiting up to `wait`) and handles what came.
    ///
    /// Nothing is ever committed past an event that was not handled: after
    /// any failure of the subscription (a poll, a commit, or the rewind of
    /// a batch that failed, which may have moved some partitions back and
    /// not others), the next call first rejoins, so delivery starts again
    /// at the group's committed offset of every partition.
    pub async fn run_once(&mut self, wait: Duration) -> Result<BatchReport, ConsumerError> {
        if self.lost {
            self.rejoin("a poll, commit or rewind failed").await?;
        }
        let deliveries = self
            .subscription
            .poll(self.config.batch_size, wait)
            .await
            .inspect_err(|_| self.lost = true)?;
        if deliveries.is_empty() {
            self.watch_for_stall().await?;
            return Ok(BatchReport::default());
        }
        self.idle = Idle::new();
        match self.process(&deliveries).await {
            Ok(report) if report.held.is_empty() => {
                if let Err(error) = self.subscription.commit(&deliveries).await {
                    self.lost = true;
                    self.last = Some(self.place(&deliveries));
                    return Err(error.into());
                }
                Ok(report)
            }
            Ok(report) => self.hold(&deliveries, report).await,
            Err(e) => {
                self.last = Some(self.place(&deliveries));
                if let Err(error) = self.subscription.rewind().await {
                    tracing::error!(group = %self.group, %error, "rewind failed; rejoining before the next poll");
                    self.lost = true;
                }
                Err(e)
            }
        }
    }

    /// Commits what was handled ahead of the held events, and goes back to
    /// them, so they are delivered again until a build that reads them
    /// takes over.
    async fn hold(
        &mut self,
        deliveries: &[Delivery],
        report: BatchReport,
    ) -> Result<BatchReport, ConsumerError> {
        let handled: Vec<Delivery> = deliveries
            .iter()
            .filter(|d| !report.held.iter().any(|h| h.holds(d)))
            .cloned()
            .collect();
        let held = report.held[0].clone();
        let first = deliveries.iter().find(|d| held.holds(d));
        self.last = Some(self.place(first.map(std::slice::from_ref).unwrap_or_default()));
        self.subscription
            .commit(&handled)
            .await
            .inspect_err(|_| self.lost = true)?;
        if self.subscription.rewind().await.is_err() {
            self.lost = true;
        }
        tracing::warn!(group = %self.group, %held, "event held back");
        metrics::events_held(&self.group, report.held.len());
        Err(ConsumerError::HeldBack(held))
    }

    async fn rejoin(&mut self, why: &str) -> Result<(), BusError> {
        self.subscription.rejoin().await?;
        self.lost = false;
        self.idle = Idle::new();
        tracing::warn!(group = %self.group, why, "rejoined: delivering again from the committed offsets");
        metrics::consumer_rejoin(&self.group);
        Ok(())
    }

    /// After [`ConsumerConfig::stall_after`] without a delivery, reads the
    /// backlog once per period and rejoins when [`stalled`] says so.
    async fn watch_for_stall(&mut self) -> Result<(), BusError> {
        let period = self.config.stall_after;
        let now = Instant::now();
        let due = |at: Instant| now.duration_since(at) >= period;
        if !due(self.idle.since) || self.idle.seen.is_some_and(|(at, _)| !due(at)) {
            return Ok(());
        }
        let backlog = self.subscription.backlog().await?;
        let before = self.idle.seen.map(|(_, b)| b);
        self.idle.seen = Some((now, backlog));
        self.idle.stalled = stalled(before.as_ref(), &backlog);
        if let Some(why) = self.idle.stalled.clone() {
            tracing::warn!(group = %self.group, idle = ?now.duration_since(self.idle.since), %why,
                "consumer stalled; leaving the group and joining again");
            metrics::consumer_stall(&self.group);
            self.rejoin(&why).await?;
            // Stalled until a delivery or a backlog read says otherwise.
            self.idle.since = now;
            self.idle.stalled = Some(why);
        }
        Ok(())
    }

    /// Where a failure of this batch is reported: its first delivery.
    fn place(&self, deliveries: &[Delivery]) -> Place {
        let Some(first) = deliveries.first() else {
            return Place {
                source: format!("group {}", self.group),
                ..Place::default()
            };
        };
        let event = first.payload.envelope().ok();
        let more = match deliveries.len() {
            1 => String::new(),
            n => format!(" (first of a batch of {n})"),
        };
        Place {
            source: format!(
                "{}[{}]@{}{more}",
                first.topic, first.partition, first.offset
            ),
            event_id: event.as_ref().map(|e| e.event_id),
            transfer_id: event.as_ref().map(|e| e.transfer_id),
        }
    }

    /// Reports a step's result to the loop's status; `place` is where it
    /// failed, if the step knew (the group otherwise).
    fn report(&mut self, result: &Result<BatchReport, ConsumerError>, place: Option<Place>) {
        let healthy = result.is_ok() && self.idle.stalled.is_none();
        let place = match place {
            Some(place) => place,
            None if healthy => Place::default(),
            None => self.place(&[]),
        };
        match result {
            Ok(_) if self.idle.stalled.is_some() => {
                let why = self.idle.stalled.as_deref().unwrap_or_default();
                self.status.stalled(why, place);
            }
            Ok(report) if report.delivered > 0 || !self.failing => {
                self.failing = false;
                self.status.ok();
            }
            Ok(_) => {}
            // Neither passes by itself: an operator or a newer build acts.
            Err(
                error @ ConsumerError::HeldBack(Held {
                    why: Holding::NewerVersion(_),
                    ..
                }),
            ) => {
                self.failing = true;
                self.status.stalled(&error.to_string(), place);
            }
            Err(error) if error.is_integrity() => {
                self.failing = true;
                self.status.stalled(&error.to_string(), place);
            }
            Err(error @ (ConsumerError::Handler(_) | ConsumerError::HeldBack(_))) => {
                self.failing = true;
                self.status.failed(&error.to_string(), place);
            }
            Err(error) => self.status.failed(&error.to_string(), place),
        }
    }

    /// Handles polled deliveries (dead-lettering poison) without committing
    /// them: the middle of [`ConsumerRunner::run_once`]. Public so the
    /// simulator can poll with [`ConsumerRunner::subscription_mut`], handle,
    /// and then commit, rewind or handle again, as a crash or a duplicate
    /// delivery would.
    pub async fn process(&self, deliveries: &[Delivery]) -> Result<BatchReport, ConsumerError> {
        let span = tracing::info_span!("consumer.batch", group = %self.group,
            messages = deliveries.len());
        self.process_batch(deliveries).instrument(span).await
    }

    /// [`ConsumerRunner::process`], in the batch's span.
    async fn process_batch(&self, deliveries: &[Delivery]) -> Result<BatchReport, ConsumerError> {
        let mut report = BatchReport {
            delivered: deliveries.len(),
            ..BatchReport::default()
        };
        let mut seen = HashSet::with_capacity(deliveries.len());
        // The envelopes handed to the handler, and where each came from.
        let mut envelopes = Vec::with_capacity(deliveries.len());
        let mut sources = Vec::with_capacity(deliveries.len());
        let mut poison = Vec::new();
        let mut parked = Vec::new();
        for d in deliveries {
            if report.held.iter().any(|h| h.holds(d)) {
                continue;
            }
            match d.payload.envelope_up_to(self.config.schema_version) {
                Ok(e) if seen.insert(e.event_id) => {
                    let trace = e.trace.or(d.trace);
                    envelopes.push(e.traced(trace));
                    sources.push(d);
                }
                Ok(_) => {}
                Err(DecodeError::NewerVersion(version)) => {
                    report
                        .held
                        .push(Held::at(d, Holding::NewerVersion(version)));
                }
                Err(error) => {
                    let letter = DeadLetter::undecodable(&self.group, d, &error.to_string());
                    poison.push(self.dead_letter(d, letter));
                }
            }
        }
        report.handled = envelopes.len();
        metrics::events_handled(&self.group, envelopes.len());
        let handled = match self.handle_with_retries(&envelopes).await {
            Ok(handled) => handled,
            Err(error @ HandleError::Transient(_)) if envelopes.len() > 1 => {
                tracing::warn!(group = %self.group, %error, events = envelopes.len(),
                    "batch keeps failing; splitting it to find the events that fail alone");
                let (handled, failing) = self.isolate(&envelopes).await?;
                for (i, error) in failing {
                    if self.config.park {
                        parked.push(self.park(sources[i], &envelopes[i], &error));
                    } else {
                        report
                            .held
                            .push(Held::at(sources[i], Holding::Failing(error)));
                    }
                }
                handled
            }
            Err(error) => return Err(error.into()),
        };
        let refused: HashSet<EventId> = handled.refused.iter().map(|r| r.event_id).collect();
        for r in &handled.refused {
            let event = envelopes.iter().find(|e| e.event_id == r.event_id);
            tracing::error!(group = %self.group, event_id = %r.event_id,
                transfer_id = %event.map(|e| e.transfer_id.to_string()).unwrap_or_default(),
                correlation_id = %event.map(|e| e.correlation_id.to_string()).unwrap_or_default(),
                reason = %r.reason, "event refused, dead-lettered");
        }
        for (envelope, delivery) in envelopes.iter().zip(sources) {
            if refused.contains(&envelope.event_id) {
                let reason = handled
                    .refused
                    .iter()
                    .find(|r| r.event_id == envelope.event_id)
                    .map_or("refused", |r| r.reason.as_str());
                let letter = DeadLetter::refused(&self.group, envelope, reason);
                poison.push(self.dead_letter(delivery, letter));
            }
        }
        report.dead_lettered = poison.len();
        report.parked = parked.len();
        if !parked.is_empty() {
            // Before the commit: a parked event is handled once it is on
            // the retry topic, and only then.
            self.dead_letters.publish(&parked).await?;
            metrics::events_parked(&self.group, parked.len());
        }
        if !poison.is_empty() {
            self.dead_letters.publish(&poison).await?;
            metrics::dead_letters(&self.group, DeadLetteredBy::Runner, poison.len());
        }
        Ok(report)
    }

    /// Handles `batch` by halves, each with its retries, down to single
    /// events: what the handler takes is handled (merged refusals), and
    /// each event that fails alone is returned with its error, by index.
    /// One event per transfer travels on a topic, so handling the events
    /// around a failing one reorders nothing within a transfer.
    async fn isolate(
        &self,
        batch: &[Envelope],
    ) -> Result<(Handled, Vec<(usize, HandleError)>), HandleError> {
        let mut handled = Handled::default();
        let mut failing = Vec::new();
        let mut parts = vec![(0, batch.len())];
        while let Some((start, end)) = parts.pop() {
            let mid = start + (end - start) / 2;
            for (from, to) in [(start, mid), (mid, end)] {
                if from == to {
                    continue;
                }
                match self.handle_with_retries(&batch[from..to]).await {
                    Ok(part) => handled.refused.extend(part.refused),
                    Err(e @ HandleError::Integrity(_)) => return Err(e),
                    Err(e) if to - from == 1 => failing.push((from, e)),
                    Err(_) => parts.push((from, to)),
                }
            }
        }
        failing.sort_by_key(|(i, _)| *i);
        Ok((handled, failing))
    }

    async fn handle_with_retries(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        if batch.is_empty() {
            return Ok(Handled::default());
        }
        let mut attempt = 0;
        loop {
            match self.handler.handle(batch).await {
                Ok(handled) => return Ok(handled),
                Err(e @ HandleError::Integrity(_)) => return Err(e),
                Err(e) if attempt >= self.config.max_retries => return Err(e),
                Err(e) => {
                    tracing::warn!(group = %self.group, error = %e, attempt, "batch failed, retrying");
                    metrics::consumer_retry(&self.group);
                    tokio::time::sleep(self.config.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// The message that parks `event` (as it was delivered) on the retry
    /// topic.
    fn park(&self, delivery: &Delivery, event: &Envelope, error: &HandleError) -> Message {
        tracing::warn!(group = %self.group, topic = %delivery.topic, partition = delivery.partition,
            offset = delivery.offset, event_id = %event.event_id, transfer_id = %event.transfer_id,
            correlation_id = %event.correlation_id, %error,
            "event keeps failing alone; parked on the retry topic");
        Message {
            topic: retry_topic(&self.group),
            key: delivery.key.clone(),
            payload: delivery.payload.clone(),
        }
    }

    fn dead_letter(&self, delivery: &Delivery, letter: DeadLetter) -> Message {
        tracing::error!(group = %self.group, topic = %delivery.topic, partition = delivery.partition,
            offset = delivery.offset, reason = %letter.reason, "dead-lettering message");
        Message {
            topic: dead_letter_topic(&self.group),
            key: delivery.key.clone(),
            payload: letter.encode().into(),
        }
    }

    /// Runs until an integrity failure, which it returns; the caller logs
    /// it, counts it and keeps the process up for an operator (nothing is
    /// committed past the failing batch). A batch that keeps failing
    /// transiently is rewound and tried again after the backoff ceiling, so
    /// no event is skipped.
    pub async fn run(self) -> ConsumerError {
        let stopped = self.run_until(std::future::pending()).await;
        stopped.unwrap_or_else(|| unreachable!("a pending stop never resolves"))
    }

    /// [`ConsumerRunner::run`] until `stop` resolves, heeded between
    /// batches: a batch polled is handled and committed first, so a
    /// graceful stop redelivers nothing. `None` when stopped.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Option<ConsumerError> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return None,
                () = std::future::ready(()) => {}
            }
            let result = self.run_once(self.config.poll_wait).await;
            let place = self.last.take();
            self.report(&result, place);
            match result {
                // A subscription that answers "nothing" without waiting
                // would otherwise keep this task from ever yielding.
                Ok(report) if report.delivered == 0 => tokio::task::yield_now().await,
                Ok(_) => {}
                Err(error) if error.is_integrity() => {
                    tracing::error!(group = %self.group, %error,
                        "integrity failure: consumer stopped until an operator acts");
                    metrics::integrity_stall(&self.group);
                    return Some(error);
                }
                Err(error) => {
                    tracing::error!(group = %self.group, %error,
                        "batch not committed; will be redelivered");
                    tokio::select! {
                        () = &mut stop => return None,
                        () = tokio::time::sleep(self.config.backoff_max) => {}
                    }
                }
            }
        }
    }
}
