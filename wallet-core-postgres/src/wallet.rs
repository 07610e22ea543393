//! The wallet service's store: user wallets, reservations (holds) keyed by
//! transfer, inbox, and an outbox of `WalletReserved` and dead letters.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};
use wallet_core::event::{Envelope, EventStamp, Inbound, Outgoing};
use wallet_core::ids::{CorrelationId, TransferId, WalletId};
use wallet_core::outcome::{LedgerOutcome, ReserveOutcome};
use wallet_core::ports::{Refusal, StoreError, WalletReads, WalletStore};
use wallet_core::time::Timestamp;
use wallet_core::wallet::{
    Reservation, ReservationState, ReserveDecision, ReserveRequest, Wallet, WalletChange,
    decide_finalize, decide_reserve,
};

use crate::codec;
use crate::error::{Db, corrupt};
use crate::outbox::pg_outbox;
use crate::transfer::inbox_new;
use crate::{Base, PgSettings};

macro_rules! wallet_columns {
    () => {
        "id, currency, available, reserved, created_at, updated_at"
    };
}

macro_rules! reservation_columns {
    () => {
        "transfer_id, correlation_id, sender_wallet_id, receiver_wallet_id, amount, currency, \
         state, reason, created_at, updated_at"
    };
    (r) => {
        "r.transfer_id, r.correlation_id, r.sender_wallet_id, r.receiver_wallet_id, r.amount, \
         r.currency, r.state, r.reason, r.created_at, r.updated_at"
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

/// The wallet in the columns named `<prefix>id`, `<prefix>currency`, ...,
/// if there is one (the columns of a left join are NULL when not).
fn wallet_at(row: &PgRow, prefix: &str) -> Result<Option<Wallet>, StoreError> {
    let column = |name: &str| format!("{prefix}{name}");
    let Some(id) = row.try_get::<Option<uuid::Uuid>, _>(&*column("id")).db()? else {
        return Ok(None);
    };
    let currency = codec::currency(row.try_get(&*column("currency")).db()?)?;
    Ok(Some(Wallet {
        id: WalletId::from_uuid(id),
        currency,
        available: codec::balance(row.try_get(&*column("available")).db()?, currency),
        reserved: codec::balance(row.try_get(&*column("reserved")).db()?, currency),
        created_at: row.try_get(&*column("created_at")).db()?,
        updated_at: row.try_get(&*column("updated_at")).db()?,
    }))
}

fn reservation_of(row: &PgRow) -> Result<Reservation, StoreError> {
    let currency = codec::currency(row.try_get("currency").db()?)?;
    let reason: Option<String> = row.try_get("reason").db()?;
    let state = match (row.try_get::<&str, _>("state").db()?, reason) {
        ("reserved", None) => ReservationState::Reserved,
        ("captured", None) => ReservationState::Captured,
        ("released", None) => ReservationState::Released,
        ("rejected", Some(reason)) => ReservationState::Rejected(codec::parse_text(&reason)?),
        (state, reason) => return Err(corrupt(format!("reservation {state} {reason:?}"))),
    };
    Ok(Reservation {
        request: ReserveRequest {
            transfer_id: TransferId::from_uuid(row.try_get("transfer_id").db()?),
            correlation_id: CorrelationId::from_uuid(row.try_get("correlation_id").db()?),
            sender_wallet_id: WalletId::from_uuid(row.try_get("sender_wallet_id").db()?),
            receiver_wallet_id: WalletId::from_uuid(row.try_get("receiver_wallet_id").db()?),
            amount: codec::amount(row.try_get("amount").db()?, currency)?,
            currency,
        },
        state,
        created_at: row.try_get("created_at").db()?,
        updated_at: row.try_get("updated_at").db()?,
    })
}

/// The state column and its reason.
fn state_columns(state: ReservationState) -> (&'static str, Option<String>) {
    match state {
        ReservationState::Reserved => ("reserved", None),
        ReservationState::Captured => ("captured", None),
        ReservationState::Released => ("released", None),
        ReservationState::Rejected(reason) => ("rejected", Some(codec::text_of(&reason))),
    }
}

async fn reservation(
    conn: &mut PgConnection,
    transfer: TransferId,
) -> Result<Option<Reservation>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        reservation_columns!(),
        " FROM reservations WHERE transfer_id = $1"
    ))
    .bind(transfer.as_uuid())
    .fetch_optional(conn)
    .await
    .db()?;
    row.as_ref().map(reservation_of).transpose()
}

/// Inserts a new reservation and, when it was inserted, stores the sender
/// as decided and writes the event: one statement. Returns false when the
/// transfer had a reservation already (a concurrent repeat won the race):
/// then nothing was written.
async fn insert_reservation(
    conn: &mut PgConnection,
    reservation: &Reservation,
    sender: Option<&Wallet>,
    event: Option<&Envelope>,
) -> Result<bool, StoreError> {
    let r = &reservation.request;
    let (state, reason) = state_columns(reservation.state);
    let row = sqlx::query(
        "WITH r AS (
             INSERT INTO reservations (transfer_id, correlation_id, sender_wallet_id,
                 receiver_wallet_id, amount, currency, state, reason, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (transfer_id) DO NOTHING RETURNING transfer_id
         ), w AS (
             UPDATE wallets SET available = $12, reserved = $13, updated_at = $14
             WHERE id = $11 AND EXISTS (SELECT 1 FROM r) RETURNING id
         ), o AS (
             INSERT INTO outbox (transfer_id, envelope)
             SELECT transfer_id, $15::jsonb FROM r WHERE $15::text IS NOT NULL RETURNING seq
         )
         SELECT (SELECT count(*) FROM r) AS inserted, (SELECT count(*) FROM w) AS updated",
    )
    .bind(r.transfer_id.as_uuid())
    .bind(r.correlation_id.as_uuid())
    .bind(r.sender_wallet_id.as_uuid())
    .bind(r.receiver_wallet_id.as_uuid())
    .bind(r.amount.value())
    .bind(r.currency.code())
    .bind(state)
    .bind(reason)
    .bind(reservation.created_at)
    .bind(reservation.updated_at)
    .bind(sender.map(|w| w.id.as_uuid()))
    .bind(sender.map(|w| w.available.value()))
    .bind(sender.map(|w| w.reserved.value()))
    .bind(sender.map(|w| w.updated_at))
    .bind(event.map(codec::envelope_text))
    .fetch_one(conn)
    .await
    .db()?;
    let inserted: i64 = row.try_get("inserted").db()?;
    let updated: i64 = row.try_get("updated").db()?;
    if inserted == 1 && updated != i64::from(sender.is_some()) {
        return Err(StoreError::Integrity(format!(
            "sender {:?} of transfer {} not stored",
            sender.map(|w| w.id),
            r.transfer_id
        )));
    }
    Ok(inserted == 1)
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

    async fn reserve(
        &self,
        request: &ReserveRequest,
        stamp: EventStamp,
    ) -> Result<ReserveOutcome, StoreError> {
        let mut tx = crate::begin(self.pool()).await.db()?;
        // One statement reads what the decision needs: the sender, locked
        // (a system account has no row: nothing to lock), the receiver, only
        // read, so opposite reserves never wait on each other, and an
        // earlier reservation of the transfer. A concurrent repeat of the
        // transfer that committed while this waited for the sender is not
        // seen here; its reservation makes the insert below conflict, and
        // the unit then answers as the repeat did.
        let row = sqlx::query(concat!(
            "SELECT s.id AS s_id, s.currency AS s_currency, s.available AS s_available,
                 s.reserved AS s_reserved, s.created_at AS s_created_at,
                 s.updated_at AS s_updated_at,
                 v.id AS v_id, v.currency AS v_currency, v.available AS v_available,
                 v.reserved AS v_reserved, v.created_at AS v_created_at,
                 v.updated_at AS v_updated_at, ",
            reservation_columns!(r),
            " FROM (VALUES (1)) AS one (x)
             LEFT JOIN LATERAL (SELECT * FROM wallets WHERE id = $1 FOR UPDATE) s ON true
             LEFT JOIN wallets v ON v.id = $2 AND v.id <> $1
             LEFT JOIN reservations r ON r.transfer_id = $3"
        ))
        .bind(request.sender_wallet_id.as_uuid())
        .bind(request.receiver_wallet_id.as_uuid())
        .bind(request.transfer_id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let mut wallets = HashMap::with_capacity(2);
        for prefix in ["s_", "v_"] {
            if let Some(wallet) = wallet_at(&row, prefix)? {
                wallets.insert(wallet.id, wallet);
            }
        }
        let existing = match row.try_get::<Option<uuid::Uuid>, _>("transfer_id").db()? {
            Some(_) => Some(reservation_of(&row)?),
            None => None,
        };
        let decision = decide_reserve(
            request,
            existing.as_ref(),
            wallets.get(&request.sender_wallet_id),
            wallets.get(&request.receiver_wallet_id),
            stamp.at,
        );
        let (written, outcome) = match &decision {
            ReserveDecision::Replay(outcome) => return Ok(*outcome),
            ReserveDecision::Reject(reservation) => (
                insert_reservation(&mut tx, reservation, None, None).await?,
                reservation.outcome(),
            ),
            ReserveDecision::Reserve {
                reservation,
                sender,
            } => {
                let event = Envelope::wallet_reserved(reservation, stamp);
                let written =
                    insert_reservation(&mut tx, reservation, sender.as_ref(), Some(&event)).await?;
                (written, ReserveOutcome::Reserved)
            }
        };
        if !written {
            // A repeat of this transfer id committed first: answer as it did.
            drop(tx);
            let mut conn = self.pool().acquire().await.db()?;
            let first = reservation(&mut conn, request.transfer_id)
                .await?
                .ok_or_else(|| {
                    StoreError::Integrity(format!(
                        "reservation {} conflicted but is missing",
                        request.transfer_id
                    ))
                })?;
            return Ok(first.outcome());
        }
        tx.commit().await.db()?;
        if matches!(decision, ReserveDecision::Reserve { .. }) {
            self.base.announce();
        }
        Ok(outcome)
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
    let rows = sqlx::query(concat!(
        "SELECT ",
        wallet_columns!(),
        " FROM wallets WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(codec::wallet_uuids(ids.iter().copied()))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut wallets = HashMap::with_capacity(rows.len());
    for row in &rows {
        let wallet = wallet_of(row)?;
        wallets.insert(wallet.id, wallet);
    }
    for (id, change) in changes {
        // A reservation names only wallets that exist (system accounts get
        // no change), and wallets are never deleted.
        let wallet = wallets.get_mut(id).ok_or_else(|| {
            StoreError::Integrity(format!("wallet {id} of a reservation is missing"))
        })?;
        wallet.apply(*change, now);
    }
    let wallets: Vec<&Wallet> = ids.iter().map(|id| &wallets[id]).collect();
    sqlx::query(
        "UPDATE wallets SET available = u.available, reserved = u.reserved,
             updated_at = u.updated_at
         FROM UNNEST($1::uuid[], $2::numeric[], $3::numeric[], $4::timestamptz[])
             AS u(id, available, reserved, updated_at)
         WHERE wallets.id = u.id",
    )
    .bind(codec::wallet_uuids(wallets.iter().map(|w| w.id)))
    .bind(
        wallets
            .iter()
            .map(|w| w.available.value())
            .collect::<Vec<_>>(),
    )
    .bind(
        wallets
            .iter()
            .map(|w| w.reserved.value())
            .collect::<Vec<_>>(),
    )
    .bind(wallets.iter().map(|w| w.updated_at).collect::<Vec<_>>())
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
        "UPDATE reservations SET state = u.state, updated_at = u.updated_at
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS u(id, state, updated_at)
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
