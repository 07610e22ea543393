//! A unit of work dropped while its `BEGIN` is on its way (a request whose
//! client hung up, a unit cut by a timeout) leaves no transaction open on
//! the pooled connection: the next unit on that connection runs, and
//! commits, on its own.

mod common;

use std::future::{Future, poll_fn};
use std::task::Poll;
use std::time::{Duration, Instant};

use common::Schema;
use sqlx::{Connection, PgConnection, PgPool};
use wallet_core::ports::{LedgerStore, TransferStore, WalletStore};
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{PgLedgerStore, PgSettings, PgTransferStore, PgWalletStore};

/// A pool of one connection on a new, migrated database, and a connection
/// of its own to watch that one's session.
async fn one_connection(schema: Schema) -> (PgSettings, PgPool, PgConnection, i32) {
    let db = TestDatabase::create().await.expect("a test database");
    let settings = PgSettings {
        max_connections: 1,
        ..PgSettings::default()
    };
    let pool = settings.connect(db.url()).await.expect("a pool");
    schema.migrator().run(&pool).await.expect("migrations");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("the session's pid");
    let watcher = PgConnection::connect(db.url()).await.expect("a watcher");
    (settings, pool, watcher, pid)
}

/// Polls `unit` until the session `pid` is inside a transaction (its
/// `BEGIN` ran), then drops it without polling it again.
async fn cut_after_begin(unit: impl Future, watcher: &mut PgConnection, pid: i32) {
    let mut unit = std::pin::pin!(unit);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ended = poll_fn(|cx| Poll::Ready(unit.as_mut().poll(cx).is_ready())).await;
        assert!(!ended, "the unit ended before it could be cut");
        for _ in 0..200 {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
                    .bind(pid)
                    .fetch_optional(&mut *watcher)
                    .await
                    .expect("the session's state")
                    .flatten();
            if state.as_deref() == Some("idle in transaction") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(Instant::now() < deadline, "the unit never began");
    }
}

/// Once the pool has the connection back and ran a statement on it, its
/// session is idle, not idle inside the cut unit's transaction.
async fn assert_no_transaction_left(pool: &PgPool, watcher: &mut PgConnection, pid: i32) {
    let again: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("a statement on the pool");
    assert_eq!(again, pid, "the pool's one connection");
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_optional(&mut *watcher)
            .await
            .expect("the session's state")
            .flatten();
    assert_eq!(
        state.as_deref(),
        Some("idle"),
        "the connection went back to the pool inside the cut unit's transaction"
    );
}

#[tokio::test]
async fn a_transfer_unit_cut_after_its_begin_leaves_no_transaction_open() {
    let (settings, pool, mut watcher, pid) = one_connection(Schema::Transaction).await;
    let store = PgTransferStore::new(pool.clone(), &settings);
    let unit = store.apply_ledger_outcomes(&[], chrono::Utc::now());
    cut_after_begin(unit, &mut watcher, pid).await;
    assert_no_transaction_left(&pool, &mut watcher, pid).await;
}

#[tokio::test]
async fn a_wallet_unit_cut_after_its_begin_leaves_no_transaction_open() {
    let (settings, pool, mut watcher, pid) = one_connection(Schema::Wallet).await;
    let store = PgWalletStore::new(pool.clone(), &settings);
    let unit = store.finalize(&[], chrono::Utc::now());
    cut_after_begin(unit, &mut watcher, pid).await;
    assert_no_transaction_left(&pool, &mut watcher, pid).await;
}

#[tokio::test]
async fn a_ledger_unit_cut_after_its_begin_leaves_no_transaction_open() {
    let (settings, pool, mut watcher, pid) = one_connection(Schema::Ledger).await;
    let store = PgLedgerStore::new(pool.clone(), &settings);
    let unit = store.post(&[]);
    cut_after_begin(unit, &mut watcher, pid).await;
    assert_no_transaction_left(&pool, &mut watcher, pid).await;
}
