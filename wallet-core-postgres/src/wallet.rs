//! The wallet service's store: user wallets, reservations (holds) keyed by
//! transfer, inbox, and an outbox of `WalletReserved` and dead letters.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use sqlx::Postgres;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Row};
use wallet_core::event::Envelope;
use wallet_core::event::{Inbound, Outgoing, StampedReserve, decide_stamped_reserves};
use wallet_core::ids::{CorrelationId, TransferId, WalletId};
use wallet_core::outcome::{LedgerOutcome, ReserveOutcome};
use wallet_core::ports::{Refusal, StoreError, WalletReads, WalletStore};
use wallet_core::time::Timestamp;
use wallet_core::wallet::{
    HoldRelease, HoldState, Reservation, ReservationState, ReserveBatch, ReserveRequest, Wallet,
    WalletChange, decide_finalize, decide_release,
};

use crate::codec;
use crate::error::{Db, corrupt};
use crate::outbox::pg_outbox;
use crate::transfer::inbox_new;
use crate::{Base, PgSettings, in_key_order};

macro_rules! wallet_columns {
    () => {
        "id, currency, available, reserved, created_at, updated_at"
    };
}

macro_rules! reservation_columns {
    () => {
        "transfer_id, correlation_id, kind, sender_wallet_id, receiver_wallet_id, amount, \
         currency, state, reason, created_at, updated_at, expires_at, hold_id, captured_by"
    };
}

/// The wallet service's store on its PostgreSQL database. Clones share the
/// pool.
#[derive(Debug, Clone)]
pub struct PgWalletStore {
    base: Base,
}

impl PgWalletStore {
    /// A store on `pool`, whose database has the wallet schema
    /// ([`crate::migrate_wallet_db`]). Needs a tokio runtime when
    /// `settings.announce_outbox` is set.
    pub fn new(pool: PgPool, settings: &PgSettings) -> Self {
        PgWalletStore {
            base: Base::new(pool, settings),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.base.pool
    }
}

pg_outbox!(PgWalletStore);

/// Tries of a batch of reserves that meets concurrent reserves of its own
/// transfers (see [`PgWalletStore::try_reserve_batch`]).
const RESERVE_TRIES: usize = 3;

impl PgWalletStore {
    /// One unit of [`WalletStore::reserve_batch`]: lock the senders in id
    /// order and read the receivers (one statement), read the transfers'
    /// reservations when `read_existing`, decide, and write the new
    /// reservations, the senders and the events (one statement). `None`,
    /// with nothing written, when a reservation it inserts existed.
    async fn try_reserve_batch(
        &self,
        batch: &[StampedReserve],
        read_existing: bool,
    ) -> Result<Option<Vec<ReserveOutcome>>, StoreError> {
        let mut tx = crate::begin(self.pool()).await.db()?;
        let senders: BTreeSet<WalletId> = batch
            .iter()
            .map(|r| r.request.sender_wallet_id)
            .filter(|id| id.system_currency().is_none())
            .collect();
        let receivers: BTreeSet<WalletId> = batch
            .iter()
            .map(|r| r.request.receiver_wallet_id)
            .filter(|id| id.system_currency().is_none() && !senders.contains(id))
            .collect();
        // Receivers are only read, so opposite reserves never wait on each
        // other; senders are locked in id order, so batches never deadlock.
        let rows = sqlx::query(concat!(
            "WITH locked AS (SELECT ",
            wallet_columns!(),
            " FROM wallets WHERE id = ANY($1) ORDER BY id FOR UPDATE)
             SELECT * FROM locked
             UNION ALL SELECT ",
            wallet_columns!(),
            " FROM wallets WHERE id = ANY($2)"
        ))
        .bind(codec::wallet_uuids(senders.iter().copied()))
        .bind(codec::wallet_uuids(receivers.iter().copied()))
        .fetch_all(&mut *tx)
        .await
        .db()?;
        let mut wallets = HashMap::with_capacity(rows.len());
        for row in &rows {
            let wallet = wallet_of(row)?;
            wallets.insert(wallet.id, wallet);
        }
        // A capture's hold is read after its wallet (the capture's sender)
        // is locked: every change of a hold locks its wallet first, so this
        // unit sees the hold as the last one left it.
        let holds = batch.iter().filter_map(|r| r.request.hold_id);
        let existing = if read_existing {
            let transfers = batch.iter().map(|r| r.request.transfer_id);
            reservations_of(&mut tx, transfers.chain(holds)).await?
        } else if holds.clone().next().is_some() {
            reservations_of(&mut tx, holds).await?
        } else {
            HashMap::new()
        };
        let (mut decided, events) = decide_stamped_reserves(batch, wallets, existing);
        if decided.reservations.is_empty() {
            // Every answer is a replay: nothing to write.
            return Ok(Some(decided.outcomes));
        }
        in_key_order(&mut decided.reservations, |(_, r)| r.request.transfer_id);
        if !write_reserves(&mut tx, &decided, &events).await? {
            return Ok(None);
        }
        write_states(&mut tx, &decided.holds.iter().collect::<Vec<_>>()).await?;
        tx.commit().await.db()?;
        if !events.is_empty() {
            self.base.announce();
        }
        Ok(Some(decided.outcomes))
    }
}

fn wallet_of(row: &PgRow) -> Result<Wallet, StoreError> {
    let currency = codec::currency(row.try_get("currency").db()?)?;
    Ok(Wallet {
        id: WalletId::from_uuid(row.try_get("id").db()?),
        currency,
        available: codec::balance(row.try_get("available").db()?, currency),
        reserved: codec::balance(row.try_get("reserved").db()?, currency),
        created_at: row.try_get("created_at").db()?,
        updated_at: row.try_get("updated_at").db()?,
    })
}

fn reservation_of(row: &PgRow) -> Result<Reservation, StoreError> {
    let currency = codec::currency(row.try_get("currency").db()?)?;
    let reason: Option<String> = row.try_get("reason").db()?;
    let state = match (row.try_get::<&str, _>("state").db()?, reason) {
        ("reserved", None) => ReservationState::Reserved,
        ("captured", None) => ReservationState::Captured,
        ("released", None) => ReservationState::Released,
        ("held", None) => ReservationState::Held,
        ("converted", None) => ReservationState::Converted,
        ("voided", None) => ReservationState::Voided,
        ("expired", None) => ReservationState::Expired,
        ("rejected", Some(reason)) => ReservationState::Rejected(codec::parse_text(&reason)?),
        (state, reason) => return Err(corrupt(format!("reservation {state} {reason:?}"))),
    };
    Ok(Reservation {
        request: ReserveRequest {
            tags: Default::default(),
            transfer_id: TransferId::from_uuid(row.try_get("transfer_id").db()?),
            correlation_id: CorrelationId::from_uuid(row.try_get("correlation_id").db()?),
            kind: codec::parse_text(row.try_get("kind").db()?)?,
            sender_wallet_id: WalletId::from_uuid(row.try_get("sender_wallet_id").db()?),
            receiver_wallet_id: WalletId::from_uuid(row.try_get("receiver_wallet_id").db()?),
            amount: codec::amount(row.try_get("amount").db()?, currency)?,
            currency,
            expires_at: row.try_get("expires_at").db()?,
            hold_id: transfer_id_of(row, "hold_id")?,
        },
        state,
        captured_by: transfer_id_of(row, "captured_by")?,
        created_at: row.try_get("created_at").db()?,
        updated_at: row.try_get("updated_at").db()?,
    })
}

/// An optional transfer id column.
fn transfer_id_of(row: &PgRow, column: &str) -> Result<Option<TransferId>, StoreError> {
    let id: Option<uuid::Uuid> = row.try_get(column).db()?;
    Ok(id.map(TransferId::from_uuid))
}

/// The state column and its reason.
fn state_columns(state: ReservationState) -> (&'static str, Option<String>) {
    match state {
        ReservationState::Reserved => ("reserved", None),
        ReservationState::Captured => ("captured", None),
        ReservationState::Released => ("released", None),
        ReservationState::Held => ("held", None),
        ReservationState::Converted => ("converted", None),
        ReservationState::Voided => ("voided", None),
        ReservationState::Expired => ("expired", None),
        ReservationState::Rejected(reason) => ("rejected", Some(codec::text_of(&reason))),
    }
}

/// Binding the balances of wallets a unit writes back.
trait BindBalances<'q> {
    /// Binds four arrays, in the order of `wallets`: their ids, available
    /// and reserved funds, and update times, as a statement that writes
    /// them with `UPDATE wallets ... FROM UNNEST(...)` reads them.
    fn bind_balances<'w>(self, wallets: impl Iterator<Item = &'w Wallet> + Clone) -> Self;
}

impl<'q> BindBalances<'q> for Query<'q, Postgres, PgArguments> {
    fn bind_balances<'w>(self, wallets: impl Iterator<Item = &'w Wallet> + Clone) -> Self {
        self.bind(codec::wallet_uuids(wallets.clone().map(|w| w.id)))
            .bind(
                wallets
                    .clone()
                    .map(|w| w.available.value())
                    .collect::<Vec<_>>(),
            )
            .bind(
                wallets
                    .clone()
                    .map(|w| w.reserved.value())
                    .collect::<Vec<_>>(),
            )
            .bind(wallets.map(|w| w.updated_at).collect::<Vec<_>>())
    }
}

/// The stored reservations of `transfers`.
async fn reservations_of(
    conn: &mut PgConnection,
    transfers: impl IntoIterator<Item = TransferId>,
) -> Result<HashMap<TransferId, Reservation>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        reservation_columns!(),
        " FROM reservations WHERE transfer_id = ANY($1)"
    ))
    .bind(codec::transfer_uuids(transfers))
    .fetch_all(conn)
    .await
    .db()?;
    let mut reservations = HashMap::with_capacity(rows.len());
    for row in &rows {
        let reservation = reservation_of(row)?;
        reservations.insert(reservation.request.transfer_id, reservation);
    }
    Ok(reservations)
}

/// Inserts a batch's new reservations and, when every one was inserted,
/// stores its senders as decided and writes its events to the outbox: one
/// statement. False when a transfer had a reservation already; the caller
/// then rolls the unit back.
async fn write_reserves(
    conn: &mut PgConnection,
    decided: &ReserveBatch,
    events: &[Envelope],
) -> Result<bool, StoreError> {
    let reservations = || decided.reservations.iter().map(|(_, r)| r);
    let requests = || reservations().map(|r| &r.request);
    let (states, reasons): (Vec<&str>, Vec<Option<String>>) =
        reservations().map(|r| state_columns(r.state)).unzip();
    let senders = &decided.senders;
    let row = sqlx::query(
        "WITH r AS (
             INSERT INTO reservations (transfer_id, correlation_id, sender_wallet_id,
                 receiver_wallet_id, amount, currency, state, reason, created_at, updated_at,
                 kind, expires_at, hold_id, captured_by)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[],
                 $5::numeric[], $6::text[], $7::text[], $8::text[], $9::timestamptz[],
                 $10::timestamptz[], $17::text[], $18::timestamptz[], $19::uuid[],
                 $21::uuid[])
             ON CONFLICT (transfer_id) DO NOTHING RETURNING transfer_id
         ), all_new AS (
             SELECT count(*) = cardinality($1::uuid[]) AS yes FROM r
         ), w AS (
             UPDATE wallets SET available = u.available, reserved = u.reserved,
                 updated_at = u.updated_at
             FROM UNNEST($11::uuid[], $12::numeric[], $13::numeric[], $14::timestamptz[])
                 AS u(id, available, reserved, updated_at), all_new
             WHERE wallets.id = u.id AND all_new.yes
             RETURNING wallets.id
         ), o AS (
             INSERT INTO outbox (transfer_id, envelope, traceparent)
             SELECT t, e::jsonb, p
             FROM UNNEST($15::uuid[], $16::text[], $20::text[])
                  WITH ORDINALITY AS u(t, e, p, n), all_new
             WHERE all_new.yes
             ORDER BY n
             RETURNING seq
         )
         SELECT (SELECT yes FROM all_new) AS all_new, (SELECT count(*) FROM w) AS updated",
    )
    .bind(codec::transfer_uuids(requests().map(|r| r.transfer_id)))
    .bind(
        requests()
            .map(|r| r.correlation_id.as_uuid())
            .collect::<Vec<_>>(),
    )
    .bind(codec::wallet_uuids(requests().map(|r| r.sender_wallet_id)))
    .bind(codec::wallet_uuids(
        requests().map(|r| r.receiver_wallet_id),
    ))
    .bind(requests().map(|r| r.amount.value()).collect::<Vec<_>>())
    .bind(requests().map(|r| r.currency.code()).collect::<Vec<_>>())
    .bind(states)
    .bind(reasons)
    .bind(reservations().map(|r| r.created_at).collect::<Vec<_>>())
    .bind(reservations().map(|r| r.updated_at).collect::<Vec<_>>())
    .bind_balances(senders.iter())
    .bind(codec::transfer_uuids(events.iter().map(|e| e.transfer_id)))
    .bind(events.iter().map(codec::envelope_text).collect::<Vec<_>>())
    .bind(
        requests()
            .map(|r| codec::text_of(&r.kind))
            .collect::<Vec<_>>(),
    )
    .bind(requests().map(|r| r.expires_at).collect::<Vec<_>>())
    .bind(codec::transfer_uuids_opt(requests().map(|r| r.hold_id)))
    .bind(
        events
            .iter()
            .map(|e| e.trace.map(|t| t.to_string()))
            .collect::<Vec<_>>(),
    )
    .bind(codec::transfer_uuids_opt(
        reservations().map(|r| r.captured_by),
    ))
    .fetch_one(conn)
    .await
    .db()?;
    let all_new: bool = row.try_get("all_new").db()?;
    let updated: i64 = row.try_get("updated").db()?;
    if all_new && updated != senders.len() as i64 {
        return Err(StoreError::Integrity(format!(
            "{} of {} senders of a reserve batch stored",
            updated,
            senders.len()
        )));
    }
    Ok(all_new)
}

#[async_trait]
impl WalletStore for PgWalletStore {
    async fn open_wallet(&self, wallet: &Wallet) -> Result<(), StoreError> {
        let inserted = sqlx::query(concat!(
            "INSERT INTO wallets (",
            wallet_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING"
        ))
        .bind(wallet.id.as_uuid())
        .bind(wallet.currency.code())
        .bind(wallet.available.value())
        .bind(wallet.reserved.value())
        .bind(wallet.created_at)
        .bind(wallet.updated_at)
        .execute(self.pool())
        .await
        .db()?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Integrity(format!(
                "wallet {} exists",
                wallet.id
            )));
        }
        Ok(())
    }

    async fn reserve_batch(
        &self,
        batch: &[StampedReserve],
    ) -> Result<Vec<ReserveOutcome>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The first try takes every transfer to be new, which nearly all
        // are, and so reads no reservation. If one had a reservation
        // already (a retried reserve), or a concurrent unit stores one
        // between this unit's read and its insert, the insert skips it:
        // the unit is rolled back and tried again with the transfers'
        // reservations read, so it answers as the first reserve did.
        let mut read_existing = false;
        for _ in 0..RESERVE_TRIES {
            if let Some(outcomes) = self.try_reserve_batch(batch, read_existing).await? {
                return Ok(outcomes);
            }
            read_existing = true;
        }
        Err(StoreError::Unavailable(format!(
            "a batch of {} reserves kept meeting concurrent reserves of its transfers",
            batch.len()
        )))
    }

    async fn finalize(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<Refusal>, StoreError> {
        let mut tx = crate::begin(self.pool()).await.db()?;
        let mut fresh = inbox_new(&mut tx, batch.iter().map(Inbound::event_id)).await?;
        let mut reservations = lock_reservations(&mut tx, batch, &fresh).await?;
        let mut refused = Vec::new();
        let mut dead_letters = Vec::new();
        let mut changes: Vec<(WalletId, WalletChange)> = Vec::new();
        let mut finalized = BTreeSet::new();
        for event in batch {
            if !fresh.remove(&event.event_id()) {
                continue;
            }
            let transfer = event.transfer_id();
            match decide_finalize(reservations.get(&transfer), transfer, event.body) {
                Ok(Some(finalization)) => {
                    changes.extend(finalization.changes);
                    let reservation = reservations
                        .get_mut(&transfer)
                        .expect("decided on this reservation");
                    reservation.state = finalization.state;
                    reservation.updated_at = now;
                    finalized.insert(transfer);
                }
                Ok(None) => {}
                Err(error) => {
                    let reason = error.to_string();
                    refused.push(Refusal {
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
        apply_changes(&mut tx, &changes, now).await?;
        let finalized: Vec<&Reservation> = finalized.iter().map(|t| &reservations[t]).collect();
        write_states(&mut tx, &finalized).await?;
        crate::outbox::write(&mut tx, &dead_letters).await?;
        tx.commit().await.db()?;
        if !dead_letters.is_empty() {
            self.base.announce();
        }
        Ok(refused)
    }

    async fn release_holds(
        &self,
        batch: &[(TransferId, HoldRelease)],
        now: Timestamp,
    ) -> Result<Vec<Option<HoldState>>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = crate::begin(self.pool()).await.db()?;
        let mut holds = reservations_of(&mut tx, batch.iter().map(|(id, _)| *id)).await?;
        // Every change of a hold locks its wallet first (a capture locks
        // its sender), then reads the hold: the wallets, in id order, then
        // the holds again as the last unit left them.
        let wallet_ids: BTreeSet<WalletId> =
            holds.values().map(|h| h.request.sender_wallet_id).collect();
        let mut wallets = lock_wallets(&mut tx, &wallet_ids).await?;
        if !holds.is_empty() {
            holds = reservations_of(&mut tx, batch.iter().map(|(id, _)| *id)).await?;
        }
        let mut answers = Vec::with_capacity(batch.len());
        let mut moved_holds = BTreeSet::new();
        let mut moved_wallets = BTreeSet::new();
        for &(id, release) in batch {
            let hold = holds.get(&id);
            let wallet = hold.and_then(|h| wallets.get(&h.request.sender_wallet_id));
            let Some((state, released)) = decide_release(hold, wallet, release, now) else {
                answers.push(None);
                continue;
            };
            if let Some(released) = released {
                moved_wallets.insert(released.wallet.id);
                wallets.insert(released.wallet.id, released.wallet);
                moved_holds.insert(id);
                holds.insert(id, released.hold);
            }
            answers.push(Some(state));
        }
        let written: Vec<&Reservation> = moved_holds.iter().map(|id| &holds[id]).collect();
        write_states(&mut tx, &written).await?;
        if !moved_wallets.is_empty() {
            write_wallets(&mut tx, moved_wallets.iter().map(|id| &wallets[id])).await?;
        }
        tx.commit().await.db()?;
        Ok(answers)
    }
}

/// Locks the reservations the new events of `batch` concern, in transfer id
/// order.
async fn lock_reservations(
    conn: &mut PgConnection,
    batch: &[Inbound<LedgerOutcome>],
    fresh: &std::collections::HashSet<wallet_core::ids::EventId>,
) -> Result<HashMap<TransferId, Reservation>, StoreError> {
    let mut ids: Vec<TransferId> = batch
        .iter()
        .filter(|e| fresh.contains(&e.event_id()))
        .map(Inbound::transfer_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(concat!(
        "SELECT ",
        reservation_columns!(),
        " FROM reservations WHERE transfer_id = ANY($1) ORDER BY transfer_id FOR UPDATE"
    ))
    .bind(codec::transfer_uuids(ids))
    .fetch_all(conn)
    .await
    .db()?;
    let mut reservations = HashMap::with_capacity(rows.len());
    for row in &rows {
        let reservation = reservation_of(row)?;
        reservations.insert(reservation.request.transfer_id, reservation);
    }
    Ok(reservations)
}

/// Locks the wallets `changes` touch in wallet id order (so opposite
/// transfers never deadlock), applies the changes in order through the
/// core's [`Wallet::apply`], and writes the wallets back in one statement.
async fn apply_changes(
    conn: &mut PgConnection,
    changes: &[(WalletId, WalletChange)],
    now: Timestamp,
) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: BTreeSet<WalletId> = changes.iter().map(|(id, _)| *id).collect();
    let mut wallets = lock_wallets(&mut *conn, &ids).await?;
    for (id, change) in changes {
        // A reservation names only wallets that exist (system accounts get
        // no change), and wallets are never deleted.
        let wallet = wallets.get_mut(id).ok_or_else(|| {
            StoreError::Integrity(format!("wallet {id} of a reservation is missing"))
        })?;
        wallet.apply(*change, now);
    }
    write_wallets(conn, ids.iter().map(|id| &wallets[id])).await
}

/// Locks the wallets `ids` in id order (so units never wait on each other
/// in a cycle) and returns them by id.
async fn lock_wallets(
    conn: &mut PgConnection,
    ids: &BTreeSet<WalletId>,
) -> Result<HashMap<WalletId, Wallet>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        wallet_columns!(),
        " FROM wallets WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(codec::wallet_uuids(ids.iter().copied()))
    .fetch_all(conn)
    .await
    .db()?;
    rows.iter()
        .map(|row| wallet_of(row).map(|w| (w.id, w)))
        .collect()
}

/// Writes wallets' balances back, in one statement.
async fn write_wallets<'w>(
    conn: &mut PgConnection,
    wallets: impl Iterator<Item = &'w Wallet> + Clone,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE wallets SET available = u.available, reserved = u.reserved,
             updated_at = u.updated_at
         FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::timestamptz[])
             AS u(id, available, reserved, updated_at)
         WHERE wallets.id = u.id",
    )
    .bind_balances(wallets)
    .execute(conn)
    .await
    .db()?;
    Ok(())
}

/// Writes the new states of finalized reservations in one statement.
async fn write_states(
    conn: &mut PgConnection,
    reservations: &[&Reservation],
) -> Result<(), StoreError> {
    if reservations.is_empty() {
        return Ok(());
    }
    let states: Vec<&str> = reservations
        .iter()
        .map(|r| state_columns(r.state).0)
        .collect();
    sqlx::query(
        "UPDATE reservations SET state = u.state, updated_at = u.updated_at,
             captured_by = u.captured_by
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::uuid[])
             AS u(id, state, updated_at, captured_by)
         WHERE reservations.transfer_id = u.id",
    )
    .bind(codec::transfer_uuids(
        reservations.iter().map(|r| r.request.transfer_id),
    ))
    .bind(states)
    .bind(
        reservations
            .iter()
            .map(|r| r.updated_at)
            .collect::<Vec<_>>(),
    )
    .bind(codec::transfer_uuids_opt(
        reservations.iter().map(|r| r.captured_by),
    ))
    .execute(conn)
    .await
    .db()?;
    Ok(())
}

#[async_trait]
impl WalletReads for PgWalletStore {
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            wallet_columns!(),
            " FROM wallets WHERE id = $1"
        ))
        .bind(id.as_uuid())
        .fetch_optional(self.pool())
        .await
        .db()?;
        row.as_ref().map(wallet_of).transpose()
    }

    async fn wallets_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<Wallet>, StoreError> {
        let sql = concat!(
            "SELECT ",
            wallet_columns!(),
            " FROM wallets WHERE id > $1 ORDER BY id LIMIT $2"
        );
        let after = after.map(|id| id.as_uuid());
        codec::uuid_page(self.pool(), sql, after, limit, wallet_of).await
    }

    async fn reservations_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Reservation>, StoreError> {
        let sql = concat!(
            "SELECT ",
            reservation_columns!(),
            " FROM reservations WHERE transfer_id > $1 ORDER BY transfer_id LIMIT $2"
        );
        let after = after.map(|id| id.as_uuid());
        codec::uuid_page(self.pool(), sql, after, limit, reservation_of).await
    }
}
