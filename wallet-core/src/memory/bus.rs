//! An in-memory event bus with Kafka's semantics where the saga relies on
//! them: topics split into partitions by key (so one transfer's events stay
//! in order), consumer groups with committed offsets, and redelivery of what
//! a group polled but did not commit.
//!
//! By default a topic keeps every message, so tests and the simulator can
//! inspect and re-publish them. A long-running process builds the bus with
//! [`MemoryBus::dropping_consumed`]: a message every consumer group of its
//! topic has committed is then dropped, and memory stays bounded by the lag.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::ports::{Backlog, BusError, Delivery, Message, Payload, Publisher, Subscription};

/// Partitions per topic unless configured otherwise.
pub const DEFAULT_PARTITIONS: u32 = 8;

/// A partition's retained messages: (key, payload), in offset order; the
/// first one has offset `base`. Events stay events: nothing is encoded.
#[derive(Debug, Clone, Default)]
struct Partition {
    base: u64,
    messages: VecDeque<(Vec<u8>, Payload)>,
}

impl Partition {
    /// The offset the next message gets.
    fn end(&self) -> u64 {
        self.base + self.messages.len() as u64
    }

    fn get(&self, offset: u64) -> Option<&(Vec<u8>, Payload)> {
        let index = offset.checked_sub(self.base)?;
        self.messages.get(usize::try_from(index).ok()?)
    }

    /// Drops the messages below `offset`.
    fn trim_to(&mut self, offset: u64) {
        while self.base < offset && self.messages.pop_front().is_some() {
            self.base += 1;
        }
    }
}

#[derive(Debug, Default)]
struct BusState {
    /// topic -> partitions.
    topics: HashMap<String, Vec<Partition>>,
    /// (group, topic) -> committed offset per partition.
    committed: HashMap<(String, String), Vec<u64>>,
}

/// The bus. Clones share it.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    state: Arc<Mutex<BusState>>,
    published: Arc<Notify>,
    partitions: u32,
    drop_consumed: bool,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::new(DEFAULT_PARTITIONS)
    }
}

/// FNV-1a: stable across builds and platforms, so partitioning (and the
/// simulator's runs) are reproducible.
fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % u64::from(partitions)) as u32
}

impl MemoryBus {
    /// A bus whose topics have `partitions` partitions each.
    pub fn new(partitions: u32) -> Self {
        assert!(partitions > 0, "a topic needs a partition");
        MemoryBus {
            state: Arc::default(),
            published: Arc::new(Notify::new()),
            partitions,
            drop_consumed: false,
        }
    }

    /// Drops each message once every consumer group of its topic has
    /// committed it, as Kafka's retention would eventually. Topics nobody
    /// reads (dead-letter topics) keep everything.
    pub fn dropping_consumed(mut self) -> Self {
        self.drop_consumed = true;
        self
    }

    fn lock(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().expect("bus state poisoned")
    }

    /// Reads `topic` as consumer group `group`, from the group's committed
    /// offsets. One subscription per group and topic at a time.
    pub fn subscribe(&self, group: &str, topic: &str) -> MemorySubscription {
        let committed = self
            .lock()
            .committed
            .entry((group.to_owned(), topic.to_owned()))
            .or_insert_with(|| vec![0; self.partitions as usize])
            .clone();
        MemorySubscription {
            bus: self.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            position: committed,
        }
    }

    /// How many messages were ever published to `topic`, all partitions
    /// together (dropped ones included).
    pub fn len(&self, topic: &str) -> usize {
        self.lock()
            .topics
            .get(topic)
            .map_or(0, |ps| ps.iter().map(|p| p.end() as usize).sum())
    }

    /// True when nothing was ever published to `topic`.
    pub fn is_empty(&self, topic: &str) -> bool {
        self.len(topic) == 0
    }

    /// Every retained message of `topic`, partition by partition, for
    /// inspection.
    pub fn messages(&self, topic: &str) -> Vec<Vec<u8>> {
        self.lock()
            .topics
            .get(topic)
            .map(|ps| {
                ps.iter()
                    .flat_map(|p| {
                        p.messages
                            .iter()
                            .map(|(_, payload)| payload.to_bytes().into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Messages of `topic` that `group` has not committed yet.
    pub fn lag(&self, group: &str, topic: &str) -> u64 {
        let s = self.lock();
        let Some(partitions) = s.topics.get(topic) else {
            return 0;
        };
        let zero = vec![0; partitions.len()];
        let committed = s
            .committed
            .get(&(group.to_owned(), topic.to_owned()))
            .unwrap_or(&zero);
        partitions
            .iter()
            .zip(committed)
            .map(|(p, c)| p.end() - c)
            .sum()
    }
}

#[async_trait]
impl Publisher for MemoryBus {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        let mut s = self.lock();
        for m in messages {
            if !s.topics.contains_key(&m.topic) {
                let partitions = vec![Partition::default(); self.partitions as usize];
                s.topics.insert(m.topic.clone(), partitions);
            }
            let partitions = s.topics.get_mut(&m.topic).expect("inserted above");
            let p = partition_of(&m.key, self.partitions) as usize;
            partitions[p]
                .messages
                .push_back((m.key.clone(), m.payload.clone()));
        }
        drop(s);
        self.published.notify_waiters();
        Ok(())
    }
}

/// A consumer group's reading of one topic.
#[derive(Debug)]
pub struct MemorySubscription {
    bus: MemoryBus,
    group: String,
    topic: String,
    position: Vec<u64>,
}

impl MemorySubscription {
    /// Takes up to `max` messages from the positions on, partition by
    /// partition in turn, one message at a time, so no partition starves.
    fn take(&mut self, max: usize) -> Vec<Delivery> {
        let s = self.bus.lock();
        let Some(partitions) = s.topics.get(&self.topic) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        loop {
            let before = out.len();
            for (p, messages) in partitions.iter().enumerate() {
                if out.len() == max {
                    return out;
                }
                // A group that starts below what was dropped starts at the
                // oldest retained message (Kafka's `earliest`).
                let offset = self.position[p].max(messages.base);
                if let Some((key, payload)) = messages.get(offset) {
                    out.push(Delivery {
                        topic: self.topic.clone(),
                        partition: p as u32,
                        offset,
                        key: key.clone(),
                        payload: payload.clone(),
                        trace: None,
                    });
                    self.position[p] = offset + 1;
                }
            }
            if out.len() == before {
                return out;
            }
        }
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        let published = self.bus.published.clone();
        let notified = published.notified();
        let taken = self.take(max);
        if !taken.is_empty() || wait.is_zero() {
            return Ok(taken);
        }
        let _ = tokio::time::timeout(wait, notified).await;
        Ok(self.take(max))
    }

    async fn commit(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
        let mut s = self.bus.lock();
        let committed = s
            .committed
            .get_mut(&(self.group.clone(), self.topic.clone()))
            .expect("subscribe registers the group");
        for d in deliveries {
            let p = d.partition as usize;
            committed[p] = committed[p].max(d.offset + 1);
        }
        if self.bus.drop_consumed {
            trim_consumed(&mut s, &self.topic);
        }
        Ok(())
    }

    async fn rewind(&mut self) -> Result<(), BusError> {
        let s = self.bus.lock();
        self.position = s.committed[&(self.group.clone(), self.topic.clone())].clone();
        Ok(())
    }

    /// The same as a rewind: one member per group holds nothing else.
    async fn rejoin(&mut self) -> Result<(), BusError> {
        self.rewind().await
    }

    /// The one member of its group owns every partition.
    async fn backlog(&mut self) -> Result<Backlog, BusError> {
        let lag = self.bus.lag(&self.group, &self.topic);
        let s = self.bus.lock();
        let committed = &s.committed[&(self.group.clone(), self.topic.clone())];
        Ok(Backlog {
            owned: committed.len(),
            owned_lag: lag,
            group_lag: lag,
            committed: committed.iter().sum(),
        })
    }
}

/// Drops the messages of `topic` that every group reading it has committed.
fn trim_consumed(s: &mut BusState, topic: &str) {
    let readers: Vec<&Vec<u64>> = s
        .committed
        .iter()
        .filter(|((_, t), _)| t == topic)
        .map(|(_, offsets)| offsets)
        .collect();
    let Some(first) = readers.first() else {
        return;
    };
    let floor: Vec<u64> = (0..first.len())
        .map(|p| readers.iter().map(|c| c[p]).min().unwrap_or(0))
        .collect();
    if let Some(partitions) = s.topics.get_mut(topic) {
        for (partition, offset) in partitions.iter_mut().zip(floor) {
            partition.trim_to(offset);
        }
    }
}
