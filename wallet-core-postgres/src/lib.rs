#![doc = include_str!("../README.md")]
//!
//! ## The crate
//!
//! | store                | database    | ports                                      |
//! |----------------------|-------------|--------------------------------------------|
//! | [`PgTransferStore`]  | transaction | `TransferStore`, `TransferReads`, `Outbox` |
//! | [`PgWalletStore`]    | wallet      | `WalletStore`, `WalletReads`, `Outbox`     |
//! | [`PgLedgerStore`]    | ledger      | `LedgerStore`, `LedgerReads`, `Outbox`     |
//!
//! Each database has its own embedded migrations ([`migrate_transaction_db`],
//! [`migrate_wallet_db`], [`migrate_ledger_db`]), safe to apply again;
//! [`prepare`] applies them as the database's owner role and grants its
//! runtime role exactly what the store does, and [`check_schema`] is what a
//! service connected as the runtime role checks at start.
//! Relays of an outbox wake on `NOTIFY` through an [`OutboxWake`]; long
//! polls of the transaction service wake on the transfers its store
//! announces, through a [`TransferWake`].
//!
//! `docs/postgres.md` describes the schema, the units of work, the claims
//! and the settings.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod error;
mod ledger;
mod notify;
mod outbox;
mod roles;
mod settings;
#[cfg(feature = "test-util")]
pub mod testdb;
mod transfer;
mod wallet;

use sqlx::Transaction;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgPool, Postgres};

pub use ledger::{BALANCE_AS_OF, PgLedgerStore};
pub use outbox::{
    Backlog as OutboxBacklog, OUTBOX_CHANNEL, OutboxWake, Quarantined, outbox_backlog, prune_sent,
    quarantined, release_quarantined,
};
pub use roles::{Roles, Schema, SetupError, check_schema, prepare, unbounded_role};
pub use settings::PgSettings;
pub use transfer::{PgTransferStore, TRANSFERS_CHANNEL, TransferChanges, TransferWake};
pub use wallet::PgWalletStore;

/// The transaction service's schema.
pub static TRANSACTION_MIGRATIONS: Migrator = sqlx::migrate!("migrations/transaction");
/// The wallet service's schema.
pub static WALLET_MIGRATIONS: Migrator = sqlx::migrate!("migrations/wallet");
/// The ledger service's schema.
pub static LEDGER_MIGRATIONS: Migrator = sqlx::migrate!("migrations/ledger");

/// Brings the transaction service's database to this build's schema.
/// Applied migrations are skipped, so running it again changes nothing;
/// concurrent runs wait on each other.
pub async fn migrate_transaction_db(pool: &PgPool) -> Result<(), MigrateError> {
    TRANSACTION_MIGRATIONS.run(pool).await
}

/// Brings the wallet service's database to this build's schema; as
/// [`migrate_transaction_db`].
pub async fn migrate_wallet_db(pool: &PgPool) -> Result<(), MigrateError> {
    WALLET_MIGRATIONS.run(pool).await
}

/// Brings the ledger service's database to this build's schema; as
/// [`migrate_transaction_db`].
pub async fn migrate_ledger_db(pool: &PgPool) -> Result<(), MigrateError> {
    LEDGER_MIGRATIONS.run(pool).await
}

/// Sorts the rows of a multi-row insert by the key a unique index holds
/// them by, so every unit inserts overlapping keys in one order.
///
/// An insert that meets a key another open transaction inserted waits for
/// that transaction to end. Two batches inserting the same keys in opposite
/// orders (one inbox row each for events delivered to two consumers, or the
/// first posting of the same accounts) would each hold a key the other
/// waits for: a deadlock, which the server breaks only after
/// `deadlock_timeout` by failing one unit. In one order, the later unit
/// waits for the earlier and then finds its keys. An `INSERT ... SELECT FROM
/// UNNEST(...)` inserts its rows in the order of the arrays.
fn in_key_order<T, K: Ord>(rows: &mut [T], key: impl FnMut(&T) -> K) {
    rows.sort_unstable_by_key(key);
}

/// What every store holds: its pool, and the announcer of its outbox rows
/// when the settings ask for one.
#[derive(Debug, Clone)]
struct Base {
    pool: PgPool,
    announcer: Option<notify::Announcer>,
}

impl Base {
    fn new(pool: PgPool, settings: &PgSettings) -> Base {
        let announcer = settings
            .announce_outbox
            .then(|| notify::Announcer::start(pool.clone(), OUTBOX_CHANNEL));
        Base { pool, announcer }
    }

    /// Tells relays that a committed unit wrote outbox rows.
    fn announce(&self) {
        if let Some(announcer) = &self.announcer {
            announcer.announce(None);
        }
    }
}

/// Starts a unit of work's transaction on `pool`, safe against the unit
/// being dropped meanwhile. sqlx (0.8) counts a transaction as begun only
/// once PostgreSQL has answered its `BEGIN`: a unit dropped while that
/// answer is on its way (a request whose client hung up, a unit cut by a
/// timeout, both likely when the database is slow) leaves the session
/// inside a transaction nothing rolls back, and the pool hands the
/// connection out again. Later units on it then run inside that
/// transaction: single-statement writes are not committed until another
/// unit commits there, and are lost if the connection breaks first; their
/// locks are held meanwhile. Here the `BEGIN` runs in a task of its own,
/// which finishes whatever becomes of the unit; a unit gone by then drops
/// the transaction, and dropping it rolls it back.
pub(crate) async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        // The task panicked, or the runtime is stopping.
        .unwrap_or(Err(sqlx::Error::WorkerCrashed))
}
