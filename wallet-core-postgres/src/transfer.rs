//! The transaction service's store: transfers, idempotency keys, inbox, and
//! an outbox of dead letters; and the announcements of the transfers its
//! units move, with the [`TransferWake`] that hears them.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use wallet_core::event::{Inbound, Outgoing};
use wallet_core::history::{HistoryPage, HistoryQuery};
use wallet_core::idempotency::{Fingerprint, IdempotencyRecord};
use wallet_core::ids::{CorrelationId, EventId, IdempotencyKey, TransferId, WalletId};
use wallet_core::outcome::LedgerOutcome;
use wallet_core::ports::{
    Applied, Begin, Claim, Refusal, ReserveAttempt, StoreError, TransferReads, TransferStore,
};
use wallet_core::tags::{Metadata, Reference, Tags};
use wallet_core::time::Timestamp;
use wallet_core::transfer::{
    AgeBucket, HoldEnd, RefundRejection, Transfer, TransferCommand, TransferStatus, Unfinished,
    decide_refund,
};

use crate::codec;
use crate::error::{Db, corrupt};
use crate::notify::{self, Announcer, TaskGuard};
use crate::outbox::pg_outbox;
use crate::{Base, PgSettings};

/// The channel on which transfer stores announce the transfers their units
/// moved, and transaction services listen ([`TransferWake`]). Each
/// notification's payload is the ids of moved transfers, separated by
/// commas; a unit that moved many sends several.
pub const TRANSFERS_CHANNEL: &str = "wallet_core_transfers";

/// The columns [`transfer_of`] reads, of `transfers t`.
macro_rules! columns {
    () => {
        "t.id, t.kind, t.status, t.failure_reason, t.sender_wallet_id, \
         t.receiver_wallet_id, t.amount, t.currency, t.correlation_id, t.idempotency_key, \
         t.created_at, t.updated_at, t.expires_at, t.hold_id, t.captured_by, t.refund_of, \
         t.reference, t.metadata::text AS metadata"
    };
}

/// The transaction service's store on its PostgreSQL database. Clones share
/// the pool.
#[derive(Debug, Clone)]
pub struct PgTransferStore {
    base: Base,
    /// Announces the transfers units moved on [`TRANSFERS_CHANNEL`], when
    /// the settings ask for it.
    moves: Option<Announcer>,
}

impl PgTransferStore {
    /// A store on `pool`, whose database has the transaction schema
    /// ([`crate::migrate_transaction_db`]). Needs a tokio runtime when
    /// `settings.announce_outbox` or `settings.announce_transfers` is set.
    pub fn new(pool: PgPool, settings: &PgSettings) -> Self {
        let moves = settings
            .announce_transfers
            .then(|| Announcer::start(pool.clone(), TRANSFERS_CHANNEL));
        PgTransferStore {
            base: Base::new(pool, settings),
            moves,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.base.pool
    }

    /// The plan PostgreSQL runs for a page of history, run and measured
    /// (`EXPLAIN (ANALYZE, BUFFERS)`), one line per row: for checking on
    /// a real database that each shape of query reads its index.
    pub async fn explain_history(&self, query: &HistoryQuery) -> Result<Vec<String>, StoreError> {
        history_statement("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ", query)
            .build_query_scalar()
            .fetch_all(self.pool())
            .await
            .db()
    }

    /// Tells the database's listeners which transfers a committed unit
    /// moved, so waits on them in any process read them again.
    fn announce_moved(&self, ids: impl IntoIterator<Item = TransferId>) {
        if let Some(moves) = &self.moves {
            moves.announce(ids.into_iter().map(|id| id.as_uuid().to_string()));
        }
    }
}

pg_outbox!(PgTransferStore);

fn transfer_of(row: &PgRow) -> Result<Transfer, StoreError> {
    let currency = codec::currency(row.try_get("currency").db()?)?;
    let reason: Option<String> = row.try_get("failure_reason").db()?;
    let key: String = row.try_get("idempotency_key").db()?;
    Ok(Transfer {
        id: TransferId::from_uuid(row.try_get("id").db()?),
        kind: codec::parse_text(row.try_get("kind").db()?)?,
        status: codec::parse_text(row.try_get("status").db()?)?,
        failure_reason: reason.as_deref().map(codec::parse_text).transpose()?,
        sender_wallet_id: WalletId::from_uuid(row.try_get("sender_wallet_id").db()?),
        receiver_wallet_id: WalletId::from_uuid(row.try_get("receiver_wallet_id").db()?),
        amount: codec::amount(row.try_get("amount").db()?, currency)?,
        currency,
        correlation_id: CorrelationId::from_uuid(row.try_get("correlation_id").db()?),
        idempotency_key: IdempotencyKey::new(key).map_err(corrupt)?,
        created_at: row.try_get("created_at").db()?,
        updated_at: row.try_get("updated_at").db()?,
        expires_at: row.try_get("expires_at").db()?,
        hold_id: row
            .try_get::<Option<uuid::Uuid>, _>("hold_id")
            .db()?
            .map(TransferId::from_uuid),
        captured_by: row
            .try_get::<Option<uuid::Uuid>, _>("captured_by")
            .db()?
            .map(TransferId::from_uuid),
        refund_of: row
            .try_get::<Option<uuid::Uuid>, _>("refund_of")
            .db()?
            .map(TransferId::from_uuid),
        tags: tags_of(row)?,
    })
}

fn tags_of(row: &PgRow) -> Result<Tags, StoreError> {
    let reference: Option<String> = row.try_get("reference").db()?;
    let metadata: Option<String> = row.try_get("metadata").db()?;
    let metadata = metadata
        .map(|text| {
            let value = serde_json::from_str(&text).map_err(corrupt)?;
            Metadata::new(value).map_err(corrupt)
        })
        .transpose()?;
    Ok(Tags {
        reference: reference.map(Reference::new).transpose().map_err(corrupt)?,
        metadata,
    })
}

fn json_of(transfer: &Transfer) -> String {
    serde_json::to_string(transfer).expect("transfers always serialize")
}

/// Writes the new status of transfers the core moved, in one statement.
async fn write_statuses(conn: &mut PgConnection, moved: &[&Transfer]) -> Result<(), StoreError> {
    if moved.is_empty() {
        return Ok(());
    }
    let ids = codec::transfer_uuids(moved.iter().map(|t| t.id));
    let statuses: Vec<String> = moved.iter().map(|t| codec::text_of(&t.status)).collect();
    let reasons: Vec<Option<String>> = moved
        .iter()
        .map(|t| t.failure_reason.as_ref().map(codec::text_of))
        .collect();
    let updated: Vec<Timestamp> = moved.iter().map(|t| t.updated_at).collect();
    let captured_by = codec::transfer_uuids_opt(moved.iter().map(|t| t.captured_by));
    // A transfer that leaves INITIATED leaves the retrier's queue, and a
    // hold that leaves HELD the sweeper's: their leases go with them.
    sqlx::query(
        "UPDATE transfers SET status = u.status, failure_reason = u.reason,
             updated_at = u.updated_at, captured_by = u.captured_by,
             lease_worker = NULL, lease_until = NULL, sweep_worker = NULL, sweep_until = NULL
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::uuid[])
             AS u(id, status, reason, updated_at, captured_by)
         WHERE transfers.id = u.id",
    )
    .bind(ids)
    .bind(statuses)
    .bind(reasons)
    .bind(updated)
    .bind(captured_by)
    .execute(conn)
    .await
    .db()?;
    Ok(())
}

/// Locks the transfers `ids` in id order and returns them by id.
async fn lock_transfers(
    conn: &mut PgConnection,
    ids: impl IntoIterator<Item = TransferId>,
) -> Result<HashMap<TransferId, Transfer>, StoreError> {
    let ids: BTreeSet<TransferId> = ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM transfers t WHERE t.id = ANY($1) ORDER BY t.id FOR UPDATE"
    ))
    .bind(codec::transfer_uuids(ids))
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter()
        .map(|row| transfer_of(row).map(|t| (t.id, t)))
        .collect()
}

/// Applies holds' ends ([`TransferCommand::EndHold`]) in order, the holds
/// locked, and writes those that moved. Returns the holds as they then
/// are, by id.
async fn end_holds(
    conn: &mut PgConnection,
    ends: &[(TransferId, HoldEnd)],
    now: Timestamp,
) -> Result<(HashMap<TransferId, Transfer>, BTreeSet<TransferId>), StoreError> {
    let mut holds = lock_transfers(&mut *conn, ends.iter().map(|(id, _)| *id)).await?;
    let mut moved = BTreeSet::new();
    for (id, end) in ends {
        if let Some(hold) = holds.get_mut(id)
            && hold.handle(&TransferCommand::EndHold(*end), now)
        {
            moved.insert(*id);
        }
    }
    let written: Vec<&Transfer> = moved.iter().map(|id| &holds[id]).collect();
    write_statuses(conn, &written).await?;
    Ok((holds, moved))
}

/// Inserts each transfer of `batch` with its key record, unless its key
/// exists: one statement. Returns the transfers inserted.
async fn insert_rows(
    conn: &mut PgConnection,
    batch: &[&(Transfer, Fingerprint)],
) -> Result<HashSet<TransferId>, sqlx::Error> {
    if batch.is_empty() {
        return Ok(HashSet::new());
    }
    // Inserted in key order, so two batches that share keys never wait
    // on each other in a cycle; a stable sort keeps a key's first
    // request of the batch first, and it is the one that wins.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by(|&a, &b| batch[a].0.idempotency_key.cmp(&batch[b].0.idempotency_key));
    let rows = || order.iter().map(|&i| batch[i]);
    let transfers = || rows().map(|(t, _)| t);
    // One statement, so one unit: each key is inserted unless it
    // exists, and its transfer only with it.
    let created: Vec<uuid::Uuid> = sqlx::query_scalar(
        "WITH u AS (
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[],
                     $5::uuid[], $6::uuid[], $7::numeric[], $8::text[], $9::uuid[],
                     $10::text[], $11::timestamptz[], $12::timestamptz[], $13::text[],
                     $14::timestamptz[], $15::uuid[], $16::uuid[], $17::text[], $18::uuid[],
                     $19::text[])
                     WITH ORDINALITY AS u(id, kind, status, failure_reason, sender_wallet_id,
                         receiver_wallet_id, amount, currency, correlation_id,
                         idempotency_key, created_at, updated_at, fingerprint, expires_at,
                         hold_id, refund_of, reference, reference_wallet, metadata, n)
             ), k AS (
                 INSERT INTO idempotency_keys (key, fingerprint, transfer_id, created_at)
                 SELECT idempotency_key, fingerprint, id, created_at FROM u ORDER BY n
                 ON CONFLICT (key) DO NOTHING RETURNING key, transfer_id
             )
             INSERT INTO transfers (id, kind, status, failure_reason, sender_wallet_id,
                 receiver_wallet_id, amount, currency, correlation_id, idempotency_key,
                 created_at, updated_at, expires_at, hold_id, refund_of, reference,
                 reference_wallet, metadata)
             SELECT u.id, u.kind, u.status, u.failure_reason, u.sender_wallet_id,
                 u.receiver_wallet_id, u.amount, u.currency, u.correlation_id, k.key,
                 u.created_at, u.updated_at, u.expires_at, u.hold_id, u.refund_of,
                 u.reference, u.reference_wallet, u.metadata::jsonb
             FROM u JOIN k ON k.transfer_id = u.id ORDER BY u.n
             RETURNING id",
    )
    .bind(codec::transfer_uuids(transfers().map(|t| t.id)))
    .bind(
        transfers()
            .map(|t| codec::text_of(&t.kind))
            .collect::<Vec<_>>(),
    )
    .bind(
        transfers()
            .map(|t| codec::text_of(&t.status))
            .collect::<Vec<_>>(),
    )
    .bind(
        transfers()
            .map(|t| t.failure_reason.as_ref().map(codec::text_of))
            .collect::<Vec<_>>(),
    )
    .bind(codec::wallet_uuids(transfers().map(|t| t.sender_wallet_id)))
    .bind(codec::wallet_uuids(
        transfers().map(|t| t.receiver_wallet_id),
    ))
    .bind(transfers().map(|t| t.amount.value()).collect::<Vec<_>>())
    .bind(transfers().map(|t| t.currency.code()).collect::<Vec<_>>())
    .bind(
        transfers()
            .map(|t| t.correlation_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(
        transfers()
            .map(|t| t.idempotency_key.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(transfers().map(|t| t.created_at).collect::<Vec<_>>())
    .bind(transfers().map(|t| t.updated_at).collect::<Vec<_>>())
    .bind(rows().map(|(_, f)| f.as_str()).collect::<Vec<_>>())
    .bind(transfers().map(|t| t.expires_at).collect::<Vec<_>>())
    .bind(codec::transfer_uuids_opt(transfers().map(|t| t.hold_id)))
    .bind(codec::transfer_uuids_opt(transfers().map(|t| t.refund_of)))
    .bind(
        transfers()
            .map(|t| t.tags.reference.as_ref().map(Reference::as_str))
            .collect::<Vec<_>>(),
    )
    .bind(codec::wallet_uuids_opt(transfers().map(|t| {
        t.tags.reference.as_ref().map(|_| t.reference_wallet())
    })))
    .bind(
        transfers()
            .map(|t| t.tags.metadata.as_ref().map(Metadata::canonical))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(created.into_iter().map(TransferId::from_uuid).collect())
}

/// What inserting a batch did: the transfers stored, and those left out
/// because another transfer has their reference in their wallet, with that
/// transfer.
#[derive(Debug, Default)]
struct Inserted {
    created: HashSet<TransferId>,
    taken: HashMap<TransferId, TransferId>,
}

/// How many times a batch is tried again when a unit committed one of its
/// references between its check and its insert.
const REFERENCE_RACES: usize = 8;

/// Stores the batch's new transfers with their keys, in one statement, as
/// [`TransferStore::begin_batch`] says. A batch without references is that
/// statement alone. One with references first leaves out the transfers
/// whose reference is taken, by a stored transfer or one earlier in the
/// batch; the insert then runs under a savepoint, and when another unit
/// stored one of its references meanwhile (the unique index refuses it,
/// once that unit committed) the batch is checked and inserted again.
async fn insert_new(
    conn: &mut PgConnection,
    batch: &[(Transfer, Fingerprint)],
) -> Result<Inserted, StoreError> {
    if batch.iter().all(|(t, _)| t.tags.reference.is_none()) {
        let created = insert_rows(conn, &batch.iter().collect::<Vec<_>>())
            .await
            .db()?;
        return Ok(Inserted {
            created,
            taken: HashMap::new(),
        });
    }
    for _ in 0..REFERENCE_RACES {
        let taken = references_taken(conn, batch).await?;
        let rows: Vec<&(Transfer, Fingerprint)> = batch
            .iter()
            .filter(|(t, _)| !taken.contains_key(&t.id))
            .collect();
        let mut savepoint = sqlx::Connection::begin(&mut *conn).await.db()?;
        match insert_rows(&mut savepoint, &rows).await {
            Ok(created) => {
                savepoint.commit().await.db()?;
                return Ok(Inserted { created, taken });
            }
            Err(sqlx::Error::Database(e)) if e.constraint() == Some("transfers_reference") => {
                savepoint.rollback().await.db()?;
            }
            Err(e) => return Err(e).db(),
        }
    }
    Err(StoreError::Unavailable(
        "references of the batch kept being taken by other units; retry".into(),
    ))
}

/// The batch's transfers whose reference is taken, each with the transfer
/// that has it: stored, or earlier in the batch. A transfer whose key was
/// used before is not among them: its key answers for it.
async fn references_taken(
    conn: &mut PgConnection,
    batch: &[(Transfer, Fingerprint)],
) -> Result<HashMap<TransferId, TransferId>, StoreError> {
    let referenced: Vec<&Transfer> = batch
        .iter()
        .map(|(t, _)| t)
        .filter(|t| t.tags.reference.is_some())
        .collect();
    let used_keys: HashSet<String> =
        sqlx::query_scalar("SELECT key FROM idempotency_keys WHERE key = ANY($1)")
            .bind(
                referenced
                    .iter()
                    .map(|t| t.idempotency_key.as_str())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *conn)
            .await
            .db()?
            .into_iter()
            .collect();
    let stored = sqlx::query(
        "SELECT t.reference, t.reference_wallet, t.id FROM transfers t
         JOIN UNNEST($1::text[], $2::uuid[]) AS r(reference, wallet)
             ON t.reference = r.reference AND t.reference_wallet = r.wallet",
    )
    .bind(
        referenced
            .iter()
            .filter_map(|t| t.tags.reference.as_ref().map(Reference::as_str))
            .collect::<Vec<_>>(),
    )
    .bind(codec::wallet_uuids(
        referenced.iter().map(|t| t.reference_wallet()),
    ))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut owners: HashMap<(WalletId, String), TransferId> = HashMap::new();
    for row in &stored {
        let scope = (
            WalletId::from_uuid(row.try_get("reference_wallet").db()?),
            row.try_get("reference").db()?,
        );
        owners.insert(scope, TransferId::from_uuid(row.try_get("id").db()?));
    }
    let mut taken = HashMap::new();
    let mut keys: HashSet<&str> = HashSet::new();
    for (transfer, _) in batch {
        let key = transfer.idempotency_key.as_str();
        if used_keys.contains(key) || keys.contains(key) {
            continue;
        }
        if let Some(reference) = &transfer.tags.reference {
            let scope = (transfer.reference_wallet(), reference.as_str().to_owned());
            if let Some(owner) = owners.get(&scope) {
                taken.insert(transfer.id, *owner);
                continue;
            }
            owners.insert(scope, transfer.id);
        }
        keys.insert(key);
    }
    Ok(taken)
}

/// The statement of a history page, after `prefix`. A wallet's page is
/// two scans merged, each in the order of its index (the transfers it
/// sends, those it receives from another wallet) and each cut at the
/// page's size; without a wallet, one scan of the order, or of the
/// reference when the query names one. Only the filters a query has are in
/// its statement, so each shape gets a plan of its own.
fn history_statement<'a>(prefix: &str, query: &'a HistoryQuery) -> QueryBuilder<'a, Postgres> {
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let mut sql = QueryBuilder::new(prefix);
    match query.wallet {
        Some(wallet) => {
            let wallet = wallet.as_uuid();
            sql.push("SELECT * FROM ((SELECT ");
            sql.push(columns!());
            sql.push(" FROM transfers t WHERE t.sender_wallet_id = ")
                .push_bind(wallet);
            history_filters(&mut sql, query, limit);
            sql.push(") UNION ALL (SELECT ");
            sql.push(columns!());
            sql.push(" FROM transfers t WHERE t.receiver_wallet_id = ")
                .push_bind(wallet);
            sql.push(" AND t.sender_wallet_id <> ").push_bind(wallet);
            history_filters(&mut sql, query, limit);
            sql.push(")) t ORDER BY t.created_at DESC, t.id DESC LIMIT ")
                .push_bind(limit);
        }
        None => {
            sql.push("SELECT ");
            sql.push(columns!());
            sql.push(" FROM transfers t WHERE TRUE");
            history_filters(&mut sql, query, limit);
        }
    }
    sql
}

/// The conditions of a history query other than its wallet, its order
/// and its size, on `transfers t`.
fn history_filters(sql: &mut QueryBuilder<'_, Postgres>, query: &HistoryQuery, limit: i64) {
    if let Some(status) = query.status {
        sql.push(" AND t.status = ").push_bind(status.as_str());
    }
    if let Some(kind) = query.kind {
        sql.push(" AND t.kind = ").push_bind(codec::text_of(&kind));
    }
    if let Some(reference) = &query.reference {
        sql.push(" AND t.reference = ")
            .push_bind(reference.as_str().to_owned());
    }
    if let Some(since) = query.since {
        sql.push(" AND t.created_at >= ").push_bind(since);
    }
    if let Some(until) = query.until {
        sql.push(" AND t.created_at < ").push_bind(until);
    }
    if let Some(after) = query.after {
        sql.push(" AND (t.created_at, t.id) < (")
            .push_bind(after.created_at);
        sql.push(", ").push_bind(after.id.as_uuid()).push(")");
    }
    sql.push(" ORDER BY t.created_at DESC, t.id DESC LIMIT ")
        .push_bind(limit);
}

/// The refunds of `original`, oldest first, by the `transfers_refunds`
/// index.
async fn refunds_of<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    original: TransferId,
) -> Result<Vec<Transfer>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM transfers t WHERE t.refund_of = $1 ORDER BY t.created_at, t.id"
    ))
    .bind(original.as_uuid())
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter().map(transfer_of).collect()
}

impl PgTransferStore {
    /// The answers to a begun `batch`: [`Begin::Created`] for those
    /// created, [`Begin::ReferenceTaken`] for those whose reference was
    /// taken, the key's record and transfer for the others.
    async fn begun(
        &self,
        batch: &[(Transfer, Fingerprint)],
        inserted: &Inserted,
    ) -> Result<Vec<Begin>, StoreError> {
        let Inserted { created, taken } = inserted;
        let existing: Vec<&str> = batch
            .iter()
            .filter(|(t, _)| !created.contains(&t.id) && !taken.contains_key(&t.id))
            .map(|(t, _)| t.idempotency_key.as_str())
            .collect();
        let records = if existing.is_empty() {
            HashMap::new()
        } else {
            self.key_records(&existing).await?
        };
        batch
            .iter()
            .map(|(transfer, _)| {
                if created.contains(&transfer.id) {
                    return Ok(Begin::Created);
                }
                if let Some(owner) = taken.get(&transfer.id) {
                    return Ok(Begin::ReferenceTaken(*owner));
                }
                let key = &transfer.idempotency_key;
                let (record, current) = records.get(key.as_str()).cloned().ok_or_else(|| {
                    StoreError::Integrity(format!("key {key} neither inserted nor found"))
                })?;
                Ok(Begin::Existing {
                    record: Box::new(record),
                    current: Box::new(current),
                })
            })
            .collect()
    }
}

/// Records `event_ids` in the inbox, in id order; returns those that were
/// not there.
pub(crate) async fn inbox_new(
    conn: &mut PgConnection,
    event_ids: impl Iterator<Item = EventId>,
) -> Result<HashSet<EventId>, StoreError> {
    let mut ids: Vec<uuid::Uuid> = event_ids.map(|id| id.as_uuid()).collect();
    crate::in_key_order(&mut ids, |id| *id);
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let fresh: Vec<uuid::Uuid> = sqlx::query_scalar(
        "INSERT INTO inbox (event_id) SELECT * FROM UNNEST($1::uuid[])
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(ids)
    .fetch_all(conn)
    .await
    .db()?;
    Ok(fresh.into_iter().map(EventId::from_uuid).collect())
}

impl PgTransferStore {
    /// The records of idempotency keys `keys`, each with the transfer it
    /// points to as stored now, by key.
    async fn key_records(
        &self,
        keys: &[&str],
    ) -> Result<HashMap<String, (IdempotencyRecord, Transfer)>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            ", k.key, k.fingerprint, k.transfer_id AS key_transfer,
                 k.created_at AS key_created_at, k.response::text AS response
             FROM idempotency_keys k JOIN transfers t ON t.id = k.transfer_id
             WHERE k.key = ANY($1)"
        ))
        .bind(keys)
        .fetch_all(self.pool())
        .await
        .db()?;
        let mut records = HashMap::with_capacity(rows.len());
        for row in &rows {
            let key: String = row.try_get("key").db()?;
            let response: Option<String> = row.try_get("response").db()?;
            let record = IdempotencyRecord {
                key: IdempotencyKey::new(key.clone()).map_err(corrupt)?,
                fingerprint: Fingerprint::from_stored(row.try_get("fingerprint").db()?),
                transfer_id: TransferId::from_uuid(row.try_get("key_transfer").db()?),
                created_at: row.try_get("key_created_at").db()?,
                response: response
                    .map(|text| serde_json::from_str(&text).map_err(corrupt))
                    .transpose()?,
            };
            records.insert(key, (record, transfer_of(row)?));
        }
        Ok(records)
    }
}

#[async_trait]
impl TransferStore for PgTransferStore {
    async fn begin_batch(
        &self,
        batch: &[(Transfer, Fingerprint)],
    ) -> Result<Vec<Begin>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.pool().acquire().await.db()?;
        let inserted = insert_new(&mut conn, batch).await?;
        drop(conn);
        self.begun(batch, &inserted).await
    }

    async fn begin_refund(
        &self,
        refund: &Transfer,
        fingerprint: &Fingerprint,
    ) -> Result<Result<Begin, RefundRejection>, StoreError> {
        let original = refund
            .refund_of
            .ok_or_else(|| StoreError::Integrity(format!("refund {} of no transfer", refund.id)))?;
        let mut tx = crate::begin(self.pool()).await.db()?;
        // The original locked: its refunds are decided one at a time.
        let original = lock_transfers(&mut tx, [original])
            .await?
            .remove(&original)
            .ok_or_else(|| StoreError::Integrity(format!("refund {} of no transfer", refund.id)))?;
        let batch = [(refund.clone(), fingerprint.clone())];
        let key = refund.idempotency_key.as_str();
        if self.key_records(&[key]).await?.is_empty() {
            let refunds = refunds_of(&mut *tx, original.id).await?;
            if let Err(rejection) = decide_refund(&original, &refunds, refund.amount) {
                return Ok(Err(rejection));
            }
        }
        let inserted = insert_new(&mut tx, &batch).await?;
        tx.commit().await.db()?;
        let mut begun = self.begun(&batch, &inserted).await?;
        Ok(Ok(begun.pop().expect("one answer")))
    }

    async fn record_reserves(
        &self,
        attempts: &[(TransferId, ReserveAttempt)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError> {
        if attempts.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = crate::begin(self.pool()).await.db()?;
        let mut ids: Vec<TransferId> = attempts.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let rows = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            ", k.response IS NULL AS unanswered
             FROM transfers t JOIN idempotency_keys k ON k.key = t.idempotency_key
             WHERE t.id = ANY($1) ORDER BY t.id FOR UPDATE OF t, k"
        ))
        .bind(codec::transfer_uuids(ids.iter().copied()))
        .fetch_all(&mut *tx)
        .await
        .db()?;
        let mut stored: HashMap<TransferId, (Transfer, bool)> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let transfer = transfer_of(row)?;
            stored.insert(transfer.id, (transfer, row.try_get("unanswered").db()?));
        }
        // Each attempt in order, on the transfer as the earlier ones left
        // it. A key unanswered so far gets the transfer as its first
        // attempt left it; a transfer that moved is written as the batch
        // leaves it.
        let mut recorded = Vec::with_capacity(attempts.len());
        let mut moved = BTreeSet::new();
        let mut first_responses: Vec<(String, String)> = Vec::new();
        let mut hold_ends = Vec::new();
        for &(id, attempt) in attempts {
            let (transfer, unanswered) = stored.get_mut(&id).ok_or_else(|| {
                StoreError::Integrity(format!("no transfer {id} with a key record"))
            })?;
            if let ReserveAttempt::Definite(outcome) = attempt {
                let command = TransferCommand::RecordReserve(outcome);
                if transfer.handle(&command, now) {
                    moved.insert(id);
                    hold_ends.extend(command.hold_end(transfer));
                }
            }
            if std::mem::take(unanswered) {
                first_responses.push((
                    transfer.idempotency_key.as_str().to_owned(),
                    json_of(transfer),
                ));
            }
            recorded.push(transfer.clone());
        }
        if !moved.is_empty() || !first_responses.is_empty() {
            let moved: Vec<&Transfer> = moved.iter().map(|id| &stored[id].0).collect();
            let (keys, responses): (Vec<String>, Vec<String>) = first_responses.into_iter().unzip();
            // One statement: the transfers that moved (one that leaves
            // INITIATED leaves the retrier's queue with its lease), and the
            // keys' first responses.
            sqlx::query(
                "WITH moved AS (
                     UPDATE transfers SET status = u.status, failure_reason = u.reason,
                         updated_at = u.updated_at, lease_worker = NULL, lease_until = NULL
                     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
                         AS u(id, status, reason, updated_at)
                     WHERE transfers.id = u.id
                 )
                 UPDATE idempotency_keys SET response = a.response::jsonb
                 FROM UNNEST($5::text[], $6::text[]) AS a(key, response)
                 WHERE idempotency_keys.key = a.key AND idempotency_keys.response IS NULL",
            )
            .bind(codec::transfer_uuids(moved.iter().map(|t| t.id)))
            .bind(
                moved
                    .iter()
                    .map(|t| codec::text_of(&t.status))
                    .collect::<Vec<_>>(),
            )
            .bind(
                moved
                    .iter()
                    .map(|t| t.failure_reason.as_ref().map(codec::text_of))
                    .collect::<Vec<_>>(),
            )
            .bind(moved.iter().map(|t| t.updated_at).collect::<Vec<_>>())
            .bind(keys)
            .bind(responses)
            .execute(&mut *tx)
            .await
            .db()?;
        }
        let (_, holds_moved) = end_holds(&mut tx, &hold_ends, now).await?;
        tx.commit().await.db()?;
        if !moved.is_empty() {
            self.announce_moved(moved.into_iter().chain(holds_moved));
        }
        Ok(recorded)
    }

    async fn apply_ledger_outcomes(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Applied, StoreError> {
        let mut tx = crate::begin(self.pool()).await.db()?;
        let mut fresh = inbox_new(&mut tx, batch.iter().map(Inbound::event_id)).await?;
        // The transfers the new events concern, locked in id order so two
        // batches never wait on each other in a cycle.
        let mut ids: Vec<TransferId> = batch
            .iter()
            .filter(|e| fresh.contains(&e.event_id()))
            .map(Inbound::transfer_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut transfers = HashMap::with_capacity(ids.len());
        if !ids.is_empty() {
            let rows = sqlx::query(concat!(
                "SELECT ",
                columns!(),
                " FROM transfers t WHERE t.id = ANY($1) ORDER BY t.id FOR UPDATE"
            ))
            .bind(codec::transfer_uuids(ids))
            .fetch_all(&mut *tx)
            .await
            .db()?;
            for row in &rows {
                let transfer = transfer_of(row)?;
                transfers.insert(transfer.id, transfer);
            }
        }
        let mut applied = Applied::default();
        let mut dead_letters = Vec::new();
        let mut moved = HashSet::new();
        let mut hold_ends = Vec::new();
        for event in batch {
            // `remove`: a second copy of one event in the batch is a duplicate.
            if !fresh.remove(&event.event_id()) {
                continue;
            }
            let command = TransferCommand::RecordLedger(event.body);
            match transfers.get_mut(&event.transfer_id()) {
                Some(transfer) => {
                    if transfer.handle(&command, now) {
                        applied.changed.push(transfer.id);
                        moved.insert(transfer.id);
                        hold_ends.extend(command.hold_end(transfer));
                    }
                }
                None => {
                    let reason = format!(
                        "ledger outcome for unknown transfer {}",
                        event.transfer_id()
                    );
                    applied.refused.push(Refusal {
                        event_id: event.event_id(),
                        reason: reason.clone(),
                    });
                    dead_letters.push(Outgoing::DeadLetter {
                        event: event.envelope.clone(),
                        reason,
                    });
                }
            }
        }
        let moved: Vec<&Transfer> = moved.iter().map(|id| &transfers[id]).collect();
        write_statuses(&mut tx, &moved).await?;
        let (_, holds_moved) = end_holds(&mut tx, &hold_ends, now).await?;
        applied.changed.extend(holds_moved);
        crate::outbox::write(&mut tx, &dead_letters).await?;
        tx.commit().await.db()?;
        if !dead_letters.is_empty() {
            self.base.announce();
        }
        if !applied.changed.is_empty() {
            self.announce_moved(applied.changed.iter().copied());
        }
        Ok(applied)
    }

    async fn claim_initiated(
        &self,
        claim: &Claim,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        let rows = sqlx::query(concat!(
            "WITH free AS (
                 SELECT id FROM transfers
                 WHERE status = 'INITIATED' AND created_at < $3
                   AND (lease_until IS NULL OR lease_until <= $4 OR lease_worker = $1)
                 ORDER BY created_at, id
                 LIMIT $5
                 FOR UPDATE SKIP LOCKED)
             UPDATE transfers t SET lease_worker = $1, lease_until = $2
             FROM free WHERE t.id = free.id
             RETURNING ",
            columns!(),
            ""
        ))
        .bind(claim.worker.as_uuid())
        .bind(claim.until)
        .bind(created_before)
        .bind(claim.now)
        .bind(codec::limit(limit))
        .fetch_all(self.pool())
        .await
        .db()?;
        let mut claimed = rows
            .iter()
            .map(transfer_of)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_unstable_by_key(|t| (t.created_at, t.id));
        debug_assert!(
            claimed
                .iter()
                .all(|t| t.status == TransferStatus::Initiated)
        );
        Ok(claimed)
    }

    async fn record_hold_ends(
        &self,
        ends: &[(TransferId, HoldEnd)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError> {
        if ends.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = crate::begin(self.pool()).await.db()?;
        let (holds, moved) = end_holds(&mut tx, ends, now).await?;
        let recorded = ends
            .iter()
            .map(|(id, _)| {
                holds
                    .get(id)
                    .cloned()
                    .ok_or_else(|| StoreError::Integrity(format!("no hold {id}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.db()?;
        if !moved.is_empty() {
            self.announce_moved(moved);
        }
        Ok(recorded)
    }

    async fn claim_expired_holds(
        &self,
        claim: &Claim,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        let rows = sqlx::query(concat!(
            "WITH due AS (
                 SELECT id FROM transfers
                 WHERE status = 'HELD' AND expires_at <= $3
                   AND (sweep_until IS NULL OR sweep_until <= $3 OR sweep_worker = $1)
                 ORDER BY expires_at, id
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             UPDATE transfers t SET sweep_worker = $1, sweep_until = $2
             FROM due WHERE t.id = due.id
             RETURNING ",
            columns!(),
            ""
        ))
        .bind(claim.worker.as_uuid())
        .bind(claim.until)
        .bind(claim.now)
        .bind(codec::limit(limit))
        .fetch_all(self.pool())
        .await
        .db()?;
        let mut claimed = rows
            .iter()
            .map(transfer_of)
            .collect::<Result<Vec<_>, _>>()?;
        claimed.sort_unstable_by_key(|t| (t.expires_at, t.id));
        Ok(claimed)
    }
}

#[async_trait]
impl TransferReads for PgTransferStore {
    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(),
            " FROM transfers t WHERE t.id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(self.pool())
        .await
        .db()?;
        row.as_ref().map(transfer_of).transpose()
    }

    async fn transfers_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM transfers t WHERE t.id > $1 ORDER BY t.id LIMIT $2"
        );
        let after = after.map(|id| id.as_uuid());
        codec::uuid_page(self.pool(), sql, after, limit, transfer_of).await
    }

    async fn refunds_of(&self, original: TransferId) -> Result<Vec<Transfer>, StoreError> {
        refunds_of(self.pool(), original).await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let rows = history_statement("", query)
            .build()
            .fetch_all(self.pool())
            .await
            .db()?;
        let transfers = rows
            .iter()
            .map(transfer_of)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HistoryPage::of(transfers, query.limit))
    }

    /// One pass over the `transfers_unfinished` index: a count per status
    /// and bucket, the buckets cut at `now` less each one's lower bound.
    async fn unfinished(&self, now: Timestamp) -> Result<Unfinished, StoreError> {
        let [_, minute, five, hour] = AgeBucket::ALL.map(|bucket| now - bucket.lower_bound());
        let rows = sqlx::query(
            "SELECT status,
                    count(*) FILTER (WHERE created_at > $1),
                    count(*) FILTER (WHERE created_at <= $1 AND created_at > $2),
                    count(*) FILTER (WHERE created_at <= $2 AND created_at > $3),
                    count(*) FILTER (WHERE created_at <= $3)
             FROM transfers
             WHERE status IN ('INITIATED', 'RESERVED')
             GROUP BY status",
        )
        .bind(minute)
        .bind(five)
        .bind(hour)
        .fetch_all(self.pool())
        .await
        .db()?;
        let mut unfinished = Unfinished::default();
        for row in &rows {
            let status: String = row.try_get(0).db()?;
            let counts = match status.as_str() {
                "INITIATED" => &mut unfinished.initiated,
                "RESERVED" => &mut unfinished.reserved,
                other => return Err(corrupt(format!("unfinished transfer status {other:?}"))),
            };
            for (i, count) in counts.iter_mut().enumerate() {
                let n: i64 = row.try_get(i + 1).db()?;
                *count = u64::try_from(n).unwrap_or_default();
            }
        }
        Ok(unfinished)
    }
}

/// What a [`TransferWake`] tells its callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferChanges {
    /// A unit committed on the database moved these transfers.
    Moved(Vec<TransferId>),
    /// Announcements may have been missed: the listening connection was
    /// lost (and listens again), or a notification could not be read. Any
    /// transfer may have moved meanwhile.
    MaybeMissed,
}

/// Hears the transfers that transfer stores on a database announce
/// ([`TRANSFERS_CHANNEL`]), from every process using it, this one's
/// included: a task LISTENs and calls the callback with each
/// announcement. A transaction service hands [`TransferChanges::Moved`]
/// to `TransactionService::transfers_changed` and
/// [`TransferChanges::MaybeMissed`] to
/// `TransactionService::any_transfer_changed`, so a long poll reads its
/// transfer when it starts and when its transfer moved, whichever instance
/// moved it.
#[derive(Debug)]
pub struct TransferWake {
    _task: TaskGuard,
}

impl TransferWake {
    /// Listens on `pool`'s database, on one of the pool's connections, which
    /// it keeps (size the pool for it). When this returns the listener is
    /// registered, so transfers announced from then on reach `on_change`.
    /// Needs a tokio runtime; the task ends when the `TransferWake` is
    /// dropped.
    pub async fn listen<F>(pool: &PgPool, on_change: F) -> Result<TransferWake, StoreError>
    where
        F: Fn(TransferChanges) + Send + 'static,
    {
        let task = notify::listen(pool, TRANSFERS_CHANNEL, move |payload| {
            on_change(payload.map_or(TransferChanges::MaybeMissed, moved_in));
        })
        .await?;
        Ok(TransferWake { _task: task })
    }
}

/// The transfers a notification's payload names; a payload that is not a
/// list of ids (written by hand, or by another build) counts as missed.
fn moved_in(payload: &str) -> TransferChanges {
    let ids: Result<Vec<TransferId>, _> = payload
        .split(',')
        .map(|id| uuid::Uuid::parse_str(id.trim()).map(TransferId::from_uuid))
        .collect();
    match ids {
        Ok(ids) => TransferChanges::Moved(ids),
        Err(error) => {
            tracing::warn!(%error, payload, "unreadable transfer announcement: waking every wait");
            TransferChanges::MaybeMissed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_the_moved_transfers_and_anything_else_counts_as_missed() {
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        assert_eq!(
            moved_in(&format!("{a},{b}")),
            TransferChanges::Moved(vec![TransferId::from_uuid(a), TransferId::from_uuid(b)])
        );
        for unreadable in ["", "x", &format!("{a},"), &format!("{a};{b}")] {
            assert_eq!(
                moved_in(unreadable),
                TransferChanges::MaybeMissed,
                "{unreadable:?}"
            );
        }
    }
}
