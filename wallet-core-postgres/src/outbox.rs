//! The outbox every service database has: writing records in a unit,
//! claiming them under a lease with `FOR UPDATE SKIP LOCKED`,
//! acknowledging, pruning, and the LISTEN/NOTIFY wake of relays (made of
//! `notify.rs`).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};
use tokio::sync::Notify;
use wallet_core::event::Outgoing;
use wallet_core::ports::{Claim, OutboxRecord, StoreError};

use crate::codec;
use crate::error::Db;
use crate::notify::{self, TaskGuard};

/// The channel on which stores announce new outbox rows and relays listen.
pub const OUTBOX_CHANNEL: &str = "wallet_core_outbox";

/// Appends `items` to the outbox in the caller's unit, in order, each with
/// the trace context it was written in.
pub(crate) async fn write(conn: &mut PgConnection, items: &[Outgoing]) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut transfers = Vec::with_capacity(items.len());
    let mut envelopes = Vec::with_capacity(items.len());
    let mut reasons: Vec<Option<String>> = Vec::with_capacity(items.len());
    let mut traces: Vec<Option<String>> = Vec::with_capacity(items.len());
    for item in items {
        transfers.push(item.transfer_id().as_uuid());
        traces.push(item.trace().map(|t| t.to_string()));
        match item {
            Outgoing::Event(envelope) => {
                envelopes.push(codec::envelope_text(envelope));
                reasons.push(None);
            }
            Outgoing::DeadLetter { event, reason } => {
                envelopes.push(codec::envelope_text(event));
                reasons.push(Some(reason.clone()));
            }
        }
    }
    sqlx::query(
        "INSERT INTO outbox (transfer_id, envelope, dead_letter, traceparent)
         SELECT t, e::jsonb, r, p
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[])
              WITH ORDINALITY AS u(t, e, r, p, n)
         ORDER BY n",
    )
    .bind(transfers)
    .bind(envelopes)
    .bind(reasons)
    .bind(traces)
    .execute(conn)
    .await
    .db()?;
    Ok(())
}

/// Claims up to `limit` records as the [`wallet_core::ports::Outbox`] doc
/// promises.
///
/// The first step picks, oldest first, unsent records that no other
/// worker's live lease holds and that no older record of their transfer,
/// held by another worker, blocks; it locks them with `SKIP LOCKED`, so two
/// claimers never wait on each other. The second step drops a record whose
/// transfer has an older unsent record this claim did not pick: that one is
/// being claimed by a concurrent claimer right now (it was skipped as
/// locked), and its lease is not visible yet, so publishing the younger one
/// could overtake it.
///
/// Both checks are per-record probes of the `(transfer_id, seq)` index of
/// unsent rows (`OFFSET 0` keeps the planner from turning them into joins
/// over every unsent row), so a claim costs the same with a backlog of
/// millions as with an empty outbox.
///
/// A claimed row that cannot be read back as an envelope is quarantined
/// (see [`quarantine`]) and the rest of the claim is returned: one bad row
/// holds back only itself, and the later records of its own transfer,
/// which must not overtake it.
pub(crate) async fn claim(
    pool: &PgPool,
    claim: &Claim,
    limit: usize,
) -> Result<Vec<OutboxRecord>, StoreError> {
    let rows = sqlx::query(
        "WITH candidates AS (
             SELECT c.seq, c.transfer_id FROM outbox c
             WHERE c.sent_at IS NULL AND c.quarantined_at IS NULL
               AND (c.lease_until IS NULL OR c.lease_until <= $2 OR c.lease_worker = $1)
               AND NOT EXISTS (
                   SELECT 1 FROM outbox o
                   WHERE o.transfer_id = c.transfer_id AND o.seq < c.seq
                     AND o.sent_at IS NULL
                     AND o.lease_until > $2 AND o.lease_worker <> $1
                   OFFSET 0)
             ORDER BY c.seq
             LIMIT $4
             FOR UPDATE SKIP LOCKED
         ), picked AS (
             SELECT coalesce(array_agg(seq), '{}') AS seqs FROM candidates
         ), ready AS (
             SELECT c.seq FROM candidates c, picked p
             WHERE NOT EXISTS (
                 SELECT 1 FROM outbox o
                 WHERE o.transfer_id = c.transfer_id AND o.seq < c.seq
                   AND o.sent_at IS NULL
                   AND o.seq <> ALL (p.seqs)
                 OFFSET 0)
         )
         UPDATE outbox SET lease_worker = $1, lease_until = $3
         FROM ready WHERE outbox.seq = ready.seq
         RETURNING outbox.seq, outbox.transfer_id, outbox.envelope::text AS envelope,
                   outbox.dead_letter, outbox.traceparent",
    )
    .bind(claim.worker.as_uuid())
    .bind(claim.now)
    .bind(claim.until)
    .bind(codec::limit(limit))
    .fetch_all(pool)
    .await
    .db()?;
    let mut records = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for row in rows {
        let seq: i64 = row.try_get("seq").db()?;
        let event = match codec::envelope(row.try_get("envelope").db()?) {
            Ok(event) => event,
            Err(error) => {
                let transfer: uuid::Uuid = row.try_get("transfer_id").db()?;
                tracing::error!(seq, transfer_id = %transfer, %error,
                    "outbox row cannot be read: quarantined");
                unreadable.push((seq, error.to_string()));
                continue;
            }
        };
        // A context this build cannot read only loses the trace, never
        // the record.
        let trace = row.try_get::<Option<String>, _>("traceparent").db()?;
        let event = event.traced(trace.and_then(|t| t.parse().ok()));
        let item = match row.try_get::<Option<String>, _>("dead_letter").db()? {
            None => Outgoing::Event(event),
            Some(reason) => Outgoing::DeadLetter { event, reason },
        };
        records.push(OutboxRecord {
            seq: codec::seq(seq)?,
            item,
        });
    }
    quarantine(pool, &unreadable).await?;
    records.sort_unstable_by_key(|r| r.seq);
    Ok(records)
}

/// Sets claimed rows aside with why each cannot be read: no relay claims
/// them again until [`release_quarantined`].
async fn quarantine(pool: &PgPool, rows: &[(i64, String)]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let (seqs, errors): (Vec<i64>, Vec<String>) = rows.iter().cloned().unzip();
    sqlx::query(
        "UPDATE outbox SET quarantined_at = now(), quarantine_error = u.error,
                           lease_worker = NULL, lease_until = NULL
         FROM UNNEST($1::bigint[], $2::text[]) AS u(seq, error)
         WHERE outbox.seq = u.seq",
    )
    .bind(seqs)
    .bind(errors)
    .execute(pool)
    .await
    .db()?;
    Ok(())
}

/// An outbox row set aside because it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Its place in the outbox.
    pub seq: i64,
    /// Its transfer.
    pub transfer_id: uuid::Uuid,
    /// When it was written.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When it was set aside.
    pub quarantined_at: chrono::DateTime<chrono::Utc>,
    /// Why.
    pub error: String,
    /// The row's envelope, as stored.
    pub envelope: String,
}

/// The quarantined rows of a service database's outbox, oldest first.
pub async fn quarantined(pool: &PgPool) -> Result<Vec<Quarantined>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, transfer_id, created_at, quarantined_at, quarantine_error,
                envelope::text AS envelope
         FROM outbox WHERE quarantined_at IS NOT NULL ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .db()?;
    rows.iter()
        .map(|row| {
            Ok(Quarantined {
                seq: row.try_get("seq").db()?,
                transfer_id: row.try_get("transfer_id").db()?,
                created_at: row.try_get("created_at").db()?,
                quarantined_at: row.try_get("quarantined_at").db()?,
                error: row.try_get("quarantine_error").db()?,
                envelope: row.try_get("envelope").db()?,
            })
        })
        .collect()
}

/// Puts quarantined rows back in line (all of them when `seqs` is `None`),
/// once their cause is fixed; returns how many. A row still unreadable is
/// quarantined again at its next claim.
pub async fn release_quarantined(pool: &PgPool, seqs: Option<&[i64]>) -> Result<u64, StoreError> {
    let released = sqlx::query(
        "UPDATE outbox SET quarantined_at = NULL, quarantine_error = NULL
         WHERE quarantined_at IS NOT NULL AND ($1::bigint[] IS NULL OR seq = ANY($1))",
    )
    .bind(seqs.map(<[i64]>::to_vec))
    .execute(pool)
    .await
    .db()?
    .rows_affected();
    Ok(released)
}

/// Marks records sent; they are never claimed again.
pub(crate) async fn acknowledge(pool: &PgPool, seqs: &[u64]) -> Result<(), StoreError> {
    if seqs.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = seqs.iter().copied().map(codec::seq_param).collect();
    sqlx::query(
        "UPDATE outbox SET sent_at = now(), lease_worker = NULL, lease_until = NULL
         WHERE seq = ANY($1) AND sent_at IS NULL",
    )
    .bind(seqs)
    .execute(pool)
    .await
    .db()?;
    Ok(())
}

/// Deletes outbox rows sent longer than `retention` ago (by the database's
/// clock), `batch` rows per statement, and returns how many went. Unsent
/// rows are never deleted. Run it now and then (every few minutes) on each
/// service database; [`crate::PgSettings::sent_retention`] is the documented
/// default retention.
pub async fn prune_sent(
    pool: &PgPool,
    retention: Duration,
    batch: usize,
) -> Result<u64, StoreError> {
    let millis = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut pruned = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM outbox WHERE seq IN (
                 SELECT seq FROM outbox
                 WHERE sent_at < now() - $1::bigint * interval '1 millisecond'
                 LIMIT $2)",
        )
        .bind(millis)
        .bind(codec::limit(batch.max(1)))
        .execute(pool)
        .await
        .db()?
        .rows_affected();
        pruned += deleted;
        if deleted < batch.max(1) as u64 {
            return Ok(pruned);
        }
    }
}

/// What waits in a database's outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Unsent records a relay can claim.
    pub waiting: u64,
    /// How long ago the oldest of them was written (by the database's
    /// clock); `None` when none waits.
    pub oldest: Option<Duration>,
    /// Records set aside as unreadable ([`quarantined`]).
    pub quarantined: u64,
}

/// What waits in a database's outbox, for the backlog gauges of a service:
/// a growing count or age means its relays are down or behind; any
/// quarantined row needs an operator.
pub async fn outbox_backlog(pool: &PgPool) -> Result<Backlog, StoreError> {
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE quarantined_at IS NULL) AS waiting,
                count(*) FILTER (WHERE quarantined_at IS NOT NULL) AS quarantined,
                extract(epoch FROM now() - min(created_at) FILTER (WHERE quarantined_at IS NULL))::float8
                    AS oldest
         FROM outbox WHERE sent_at IS NULL",
    )
    .fetch_one(pool)
    .await
    .db()?;
    let count = |name: &str| -> Result<u64, StoreError> {
        let n: i64 = row.try_get(name).db()?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let oldest: Option<f64> = row.try_get("oldest").db()?;
    Ok(Backlog {
        waiting: count("waiting")?,
        oldest: oldest.map(|secs| Duration::from_secs_f64(secs.max(0.0))),
        quarantined: count("quarantined")?,
    })
}

/// Wakes relays when a store of the database announces new outbox rows:
/// a task LISTENs on [`OUTBOX_CHANNEL`] and notifies every relay waiting on
/// [`OutboxWake::notify`], the `wake` that `wallet_core::runtime::Relay::new`
/// takes. A relay still polls every `idle_poll`, which covers writers that
/// do not announce and announcements that were lost.
#[derive(Debug)]
pub struct OutboxWake {
    notify: Arc<Notify>,
    _task: TaskGuard,
}

impl OutboxWake {
    /// Listens on `pool`'s database, on one of the pool's connections, which
    /// it keeps (size the pool for it). When this returns the listener is
    /// registered, so rows announced from then on wake the relays. Needs a
    /// tokio runtime; the task ends when the `OutboxWake` is dropped.
    pub async fn listen(pool: &PgPool) -> Result<OutboxWake, StoreError> {
        let notify = Arc::new(Notify::new());
        let wake = notify.clone();
        // An announcement, or a lost connection (back again): rows written
        // meanwhile were not announced to us, so look now either way.
        let task = notify::listen(pool, OUTBOX_CHANNEL, move |_| wake.notify_waiters()).await?;
        Ok(OutboxWake {
            notify,
            _task: task,
        })
    }

    /// The wake to hand to each relay of this database.
    pub fn notify(&self) -> Arc<Notify> {
        self.notify.clone()
    }
}

/// Implements [`wallet_core::ports::Outbox`] for a store with a `pool()`.
macro_rules! pg_outbox {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl wallet_core::ports::Outbox for $store {
            async fn claim(
                &self,
                claim: &wallet_core::ports::Claim,
                limit: usize,
            ) -> Result<Vec<wallet_core::ports::OutboxRecord>, wallet_core::ports::StoreError> {
                $crate::outbox::claim(self.pool(), claim, limit).await
            }

            async fn acknowledge(
                &self,
                seqs: &[u64],
            ) -> Result<(), wallet_core::ports::StoreError> {
                $crate::outbox::acknowledge(self.pool(), seqs).await
            }
        }
    };
}
pub(crate) use pg_outbox;
