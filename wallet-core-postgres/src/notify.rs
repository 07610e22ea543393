//! LISTEN/NOTIFY, the way every announcement of a database goes: an
//! [`Announcer`] sends what committed units announce on a channel, and
//! [`listen`] hands what a channel carries to a callback, across lost
//! connections. The outbox wake of relays ([`crate::OutboxWake`]) and the
//! transfer wake of long polls ([`crate::TransferWake`]) are both made of
//! these.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use wallet_core::ports::StoreError;

use crate::error::Db;

/// The longest payload a notification may carry: PostgreSQL takes payloads
/// shorter than 8,000 bytes.
const MAX_PAYLOAD: usize = 7_999;

/// How long a listener that failed waits before it connects again.
const RELISTEN_AFTER: Duration = Duration::from_millis(500);

/// Aborts a background task when the last handle on it goes.
#[derive(Debug)]
pub(crate) struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `NOTIFY` on one channel after units committed, from its own task
/// and outside those units.
///
/// A `NOTIFY` inside the writing transaction would make every such
/// transaction take the server's notification-queue lock until its commit
/// is flushed, so all announcing commits of the database would queue behind
/// one another. Here the writer only adds what it announces to a pending
/// set and sets a permit; the task sends the whole set for however many
/// units committed while it was sending the previous one: one statement,
/// split into as many notifications as the payload limit needs. A unit
/// that announces no items (the outbox's) sends one empty notification.
///
/// An announcement is lost when its process dies between the commit and
/// the send, or when the send fails; listeners fall back on their poll.
#[derive(Debug, Clone)]
pub(crate) struct Announcer {
    /// What units announced since the last send; `None` when nothing was.
    pending: Arc<Mutex<Option<BTreeSet<String>>>>,
    signal: Arc<Notify>,
    _task: Arc<TaskGuard>,
}

impl Announcer {
    /// Starts announcing on `channel` of `pool`'s database. Needs a tokio
    /// runtime.
    pub(crate) fn start(pool: PgPool, channel: &'static str) -> Announcer {
        let pending: Arc<Mutex<Option<BTreeSet<String>>>> = Arc::default();
        let signal = Arc::new(Notify::new());
        let (waiting, taken) = (signal.clone(), pending.clone());
        let task = tokio::spawn(async move {
            loop {
                waiting.notified().await;
                // Taken before the send: what units announce meanwhile
                // sets the permit again and goes in the next one.
                let Some(items) = taken.lock().expect("announcer lock").take() else {
                    continue;
                };
                let sent = sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
                    .bind(channel)
                    .bind(payloads(&items))
                    .execute(&pool)
                    .await;
                if let Err(error) = sent {
                    // Listeners fall back on their poll; nothing is lost.
                    tracing::debug!(%error, channel, "announcement failed");
                }
            }
        });
        Announcer {
            pending,
            signal,
            _task: Arc::new(TaskGuard(task)),
        }
    }

    /// Records that a unit committed, and what it announces: `items` (no
    /// commas in them), none for a bare wake.
    pub(crate) fn announce(&self, items: impl IntoIterator<Item = String>) {
        self.pending
            .lock()
            .expect("announcer lock")
            .get_or_insert_default()
            .extend(items);
        self.signal.notify_one();
    }
}

/// `items` joined by commas into payloads within [`MAX_PAYLOAD`], in order;
/// one empty payload when there are none.
fn payloads(items: &BTreeSet<String>) -> Vec<String> {
    let mut payloads = vec![String::new()];
    for item in items {
        let last = payloads.last_mut().expect("never empty");
        if last.is_empty() {
            last.push_str(item);
        } else if last.len() + 1 + item.len() <= MAX_PAYLOAD {
            last.push(',');
            last.push_str(item);
        } else {
            payloads.push(item.clone());
        }
    }
    payloads
}

/// Listens on `channel` of `pool`'s database from a task of its own, on one
/// of the pool's connections, which it keeps (size the pool for it), and
/// calls `on` with each notification's payload, or with `None` once it
/// listens again after its connection was lost: whatever was announced
/// meanwhile did not reach it. When this returns the listener is
/// registered, so what is announced from then on reaches `on`. Needs a
/// tokio runtime; the task ends when the returned guard is dropped, or
/// when the pool is closed.
pub(crate) async fn listen<F>(
    pool: &PgPool,
    channel: &'static str,
    mut on: F,
) -> Result<TaskGuard, StoreError>
where
    F: FnMut(Option<&str>) + Send + 'static,
{
    let mut listener = listener(pool, channel).await.db()?;
    let pool = pool.clone();
    let task = tokio::spawn(async move {
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => on(Some(notification.payload())),
                // sqlx has connected again and listens again before it
                // tells of the loss.
                Ok(None) => on(None),
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    // The connection may be gone without sqlx having
                    // connected again: a new listener, then a look.
                    tracing::warn!(%error, channel, "listener failed; listening again");
                    match relisten(&pool, channel).await {
                        Some(new) => listener = new,
                        None => return,
                    }
                    on(None);
                }
            }
        }
    });
    Ok(TaskGuard(task))
}

/// A listener on `channel`, registered.
async fn listener(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// A new listener on `channel`, tried every [`RELISTEN_AFTER`] until one
/// listens; `None` once the pool is closed.
async fn relisten(pool: &PgPool, channel: &str) -> Option<PgListener> {
    loop {
        tokio::time::sleep(RELISTEN_AFTER).await;
        match listener(pool, channel).await {
            Ok(listener) => return Some(listener),
            Err(sqlx::Error::PoolClosed) => return None,
            Err(error) => tracing::debug!(%error, channel, "listening again failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_keep_within_the_limit_and_carry_every_item_once() {
        let items: BTreeSet<String> = (0..1_000)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let payloads = payloads(&items);
        assert!(payloads.len() > 1, "1,000 ids do not fit in one payload");
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        // Full payloads but the last: no room left for another id.
        assert!(
            payloads[..payloads.len() - 1]
                .iter()
                .all(|p| p.len() + 37 > MAX_PAYLOAD)
        );
        let carried: Vec<&str> = payloads.iter().flat_map(|p| p.split(',')).collect();
        assert_eq!(carried.len(), items.len());
        assert!(carried.iter().all(|id| items.contains(*id)));
    }

    #[test]
    fn no_items_make_one_empty_payload() {
        assert_eq!(payloads(&BTreeSet::new()), [""]);
        let one: BTreeSet<String> = ["a".to_owned()].into();
        assert_eq!(payloads(&one), ["a"]);
    }
}
