//! The subscription: one consumer group member's reading of one topic,
//! behind wallet-core's [`Subscription`] port.
//!
//! Offsets are neither stored nor committed automatically: only
//! [`Subscription::commit`] commits them, and the consumer runner calls it
//! after the handler's store committed the batch's effects. A consumer that
//! dies before that leaves the offsets where they were, so the group's next
//! member reads those messages again and the store's inbox makes them
//! no-ops: at least once, never skipped.
//!
//! The subscription remembers, per partition it owns, the offset a rewind
//! returns to: the offset after the last one it committed, or else the
//! first offset it delivered (which is where the group's committed offset,
//! or `auto.offset.reset`, started it). A rebalance that takes a partition
//! away forgets it, drops what was polled from it but not yet returned, and
//! lets commits of it be skipped: the partition's new owner starts from the
//! group's committed offset and delivers those messages again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use wallet_core::ports::{Backlog, BusError, Delivery, Payload, Subscription};

use crate::publisher::bus_error;
use crate::settings::KafkaSettings;

/// What the subscription knows of one partition it owns.
#[derive(Debug, Clone, Copy)]
struct Position {
    /// The assignment it belongs to: a revoked and reassigned partition
    /// gets a new one, and deliveries of the old one are dropped.
    generation: u64,
    /// Where a rewind goes: the offset after the last commit, or the first
    /// offset delivered in this assignment. `None` until either happens.
    rewind_to: Option<i64>,
    /// The offset after the last one delivered.
    next: Option<i64>,
}

#[derive(Debug, Default)]
struct Partitions {
    /// Owned partitions, by number.
    owned: HashMap<i32, Position>,
    /// Counts assignments, to tell them apart.
    generations: u64,
}

/// Keeps [`Partitions`] current as the group rebalances. Its callbacks run
/// inside the consumer's poll, on the thread that polls.
struct GroupContext {
    topic: String,
    partitions: Arc<Mutex<Partitions>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut partitions = lock(&self.partitions);
            for element in list.elements_for_topic(&self.topic) {
                partitions.owned.remove(&element.partition());
            }
            tracing::info!(topic = %self.topic, revoked = list.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let mut partitions = lock(&self.partitions);
            partitions.generations += 1;
            let generation = partitions.generations;
            for element in list.elements_for_topic(&self.topic) {
                partitions.owned.insert(
                    element.partition(),
                    Position {
                        generation,
                        rewind_to: None,
                        next: None,
                    },
                );
            }
            tracing::info!(topic = %self.topic, assigned = list.count(), "partitions assigned");
        }
    }
}

fn lock(partitions: &Mutex<Partitions>) -> MutexGuard<'_, Partitions> {
    partitions.lock().expect("partition state poisoned")
}

/// A consumer group member reading one topic.
pub struct KafkaSubscription {
    /// `Some` until dropped (taken in `drop` to close it off the async
    /// threads), or while a rejoin failed.
    consumer: Option<Arc<BaseConsumer<GroupContext>>>,
    partitions: Arc<Mutex<Partitions>>,
    settings: KafkaSettings,
    topic: String,
    group: String,
    timeout: Duration,
}

/// A group member and the partitions it owns, kept by its callbacks.
type Member = (Arc<BaseConsumer<GroupContext>>, Arc<Mutex<Partitions>>);

/// A new member of `group` on `topic`, and the partitions it will own.
fn join(settings: &KafkaSettings, group: &str, topic: &str) -> Result<Member, BusError> {
    let partitions = Arc::new(Mutex::new(Partitions::default()));
    let context = GroupContext {
        topic: topic.to_owned(),
        partitions: partitions.clone(),
    };
    let consumer: BaseConsumer<GroupContext> = settings
        .consumer_config(group)
        .create_with_context(context)
        .map_err(|e| bus_error("creating the consumer", &e))?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| bus_error("subscribing", &e))?;
    Ok((Arc::new(consumer), partitions))
}

impl std::fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KafkaSubscription {
    /// Joins consumer group `group` on `topic`, configured by
    /// [`KafkaSettings::consumer_config`]. Partitions are assigned during
    /// the first polls.
    pub fn new(
        settings: &KafkaSettings,
        group: &str,
        topic: &str,
    ) -> Result<KafkaSubscription, BusError> {
        let (consumer, partitions) = join(settings, group, topic)?;
        Ok(KafkaSubscription {
            consumer: Some(consumer),
            partitions,
            settings: settings.clone(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            timeout: settings.request_timeout,
        })
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Runs a blocking consumer call off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&BaseConsumer<GroupContext>, &Mutex<Partitions>) -> T + Send + 'static,
    ) -> Result<T, BusError> {
        let consumer = self.consumer.clone().ok_or_else(|| {
            BusError("not a member of the group since a failed rejoin: rejoin first".into())
        })?;
        let partitions = self.partitions.clone();
        tokio::task::spawn_blocking(move || call(&consumer, &partitions))
            .await
            .map_err(|e| BusError(format!("consumer call did not finish: {e}")))
    }
}

/// Closing a consumer leaves the group (so its partitions move at once,
/// not after the session timeout) and blocks until the broker answered:
/// done on a blocking thread when a runtime is at hand.
impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn_blocking(move || drop(consumer));
        }
    }
}

/// A delivery and the assignment it was read in.
type Polled = (Delivery, u64);

/// Polls up to `max` messages, waiting up to `wait` for the first. Runs on
/// a blocking thread.
fn poll_batch(
    consumer: &BaseConsumer<GroupContext>,
    partitions: &Mutex<Partitions>,
    max: usize,
    wait: Duration,
) -> Result<Vec<Delivery>, BusError> {
    let deadline = Instant::now() + wait;
    let mut polled: Vec<Polled> = Vec::new();
    while polled.len() < max {
        let left = deadline.saturating_duration_since(Instant::now());
        // Wait only for the first message; then take what is already here.
        let timeout = if polled.is_empty() {
            left
        } else {
            Duration::ZERO
        };
        match consumer.poll(timeout) {
            Some(Ok(message)) => {
                let mut state = lock(partitions);
                let Some(position) = state.owned.get_mut(&message.partition()) else {
                    // Not (or no longer) ours: its owner delivers it.
                    continue;
                };
                position.rewind_to.get_or_insert(message.offset());
                position.next = Some(message.offset() + 1);
                polled.push((owned_delivery(&message), position.generation));
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(error)) if polled.is_empty() => {
                return Err(bus_error("polling", &error));
            }
            Some(Err(error)) => {
                // What was taken from the queue must be returned, or it
                // would be skipped until the next rewind.
                tracing::warn!(%error, "consumer error after a partial batch");
                break;
            }
            None if polled.is_empty() && !left.is_zero() => {}
            None => break,
        }
    }
    // A rebalance during this poll may have taken partitions away: their
    // new owner delivers those messages from the committed offsets.
    let state = lock(partitions);
    Ok(polled
        .into_iter()
        .filter(|(d, generation)| {
            state
                .owned
                .get(&(d.partition as i32))
                .is_some_and(|p| p.generation == *generation)
        })
        .map(|(d, _)| d)
        .collect())
}

fn owned_delivery(message: &rdkafka::message::BorrowedMessage<'_>) -> Delivery {
    Delivery {
        topic: message.topic().to_owned(),
        partition: u32::try_from(message.partition()).expect("partitions are not negative"),
        offset: u64::try_from(message.offset()).expect("delivered offsets are not negative"),
        key: message.key().unwrap_or_default().to_vec(),
        payload: Payload::Bytes(message.payload().unwrap_or_default().to_vec()),
        trace: crate::headers::trace(message),
    }
}

/// The offset after the last of `deliveries`, per partition.
fn next_offsets(deliveries: &[Delivery]) -> HashMap<i32, i64> {
    let mut next: HashMap<i32, i64> = HashMap::new();
    for d in deliveries {
        let offset = i64::try_from(d.offset).expect("offsets fit i64") + 1;
        let entry = next.entry(d.partition as i32).or_insert(offset);
        *entry = (*entry).max(offset);
    }
    next
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.blocking(move |consumer, partitions| poll_batch(consumer, partitions, max, wait))
            .await?
    }

    /// Commits, synchronously, the offsets past `deliveries` of the
    /// partitions this member still owns. A partition taken away since its
    /// messages were polled is skipped: its new owner delivers them again
    /// and the inbox dedupes them, and committing it from here could move
    /// the new owner's offset backwards.
    async fn commit(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let next = next_offsets(deliveries);
        let topic = self.topic.clone();
        self.blocking(move |consumer, partitions| {
            let mut list = TopicPartitionList::new();
            {
                let state = lock(partitions);
                for (partition, offset) in &next {
                    if state.owned.contains_key(partition) {
                        list.add_partition_offset(&topic, *partition, Offset::Offset(*offset))
                            .expect("a valid offset");
                    }
                }
            }
            if list.count() == 0 {
                return Ok(());
            }
            consumer
                .commit(&list, CommitMode::Sync)
                .map_err(|e| bus_error("committing offsets", &e))?;
            let mut state = lock(partitions);
            for (partition, offset) in next {
                if let Some(position) = state.owned.get_mut(&partition) {
                    let to = position.rewind_to.map_or(offset, |r| r.max(offset));
                    position.rewind_to = Some(to);
                }
            }
            Ok(())
        })
        .await?
    }

    /// Closes this member (leaving the group, waiting up to the request
    /// timeout for the broker's answer) and joins again as a new one. The
    /// new member reads each partition it is given from the group's
    /// committed offset: whatever the old one had fetched, delivered or
    /// half rewound is gone with it.
    async fn rejoin(&mut self) -> Result<(), BusError> {
        if let Some(old) = self.consumer.take() {
            let closing = tokio::task::spawn_blocking(move || drop(old));
            if tokio::time::timeout(self.timeout, closing).await.is_err() {
                tracing::warn!(topic = %self.topic, group = %self.group,
                    "the old member did not leave the group in time; joining anyway");
            }
        }
        let (consumer, partitions) = join(&self.settings, &self.group, &self.topic)?;
        self.consumer = Some(consumer);
        self.partitions = partitions;
        Ok(())
    }

    /// The group's committed offsets and the high watermarks of every
    /// partition, asked of the broker through this member.
    async fn backlog(&mut self) -> Result<Backlog, BusError> {
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        self.blocking(move |consumer, partitions| {
            let lags = crate::probe::partition_lags(consumer, &topic, timeout)?;
            let owned = lock(partitions).owned.keys().copied().collect::<Vec<i32>>();
            let mut backlog = Backlog {
                owned: owned.len(),
                ..Backlog::default()
            };
            for (partition, (committed, lag)) in lags.iter().enumerate() {
                backlog.group_lag += lag;
                backlog.committed += committed;
                if owned.contains(&(partition as i32)) {
                    backlog.owned_lag += lag;
                }
            }
            Ok(backlog)
        })
        .await?
    }

    /// Seeks every owned partition that delivered past its rewind offset
    /// back to it. librdkafka drops what it had fetched beyond, so the next
    /// poll returns those messages again, in order.
    async fn rewind(&mut self) -> Result<(), BusError> {
        let topic = self.topic.clone();
        let timeout = self.timeout;
        self.blocking(move |consumer, partitions| {
            let mut state = lock(partitions);
            for (partition, position) in state.owned.iter_mut() {
                let (Some(to), Some(next)) = (position.rewind_to, position.next) else {
                    continue;
                };
                if next <= to {
                    continue;
                }
                consumer
                    .seek(&topic, *partition, Offset::Offset(to), timeout)
                    .map_err(|e| bus_error("seeking back", &e))?;
                position.next = Some(to);
            }
            Ok(())
        })
        .await?
    }
}
