//! Two transfer stores on one database, as two transaction service
//! instances: what one store's units move reaches a `TransferWake` on the
//! other, by id, split over several notifications when the ids do not fit
//! in one; a unit that moves nothing announces nothing; and a listener
//! whose connection is lost says so, listens again and hears what follows.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Schema, pool_of, settings};
use tokio::sync::mpsc;
use wallet_core::contract::data::{TestData, at};
use wallet_core::ids::TransferId;
use wallet_core::outcome::{LedgerOutcome, ReserveOutcome};
use wallet_core::ports::{ReserveAttempt, TransferStore};
use wallet_core::transfer::Transfer;
use wallet_core::wallet::ReserveRequest;
use wallet_core_postgres::{PgTransferStore, TRANSFERS_CHANNEL, TransferChanges, TransferWake};

/// Longest a test waits for an announcement it expects.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long a test listens for an announcement it does not expect.
const QUIET: Duration = Duration::from_millis(500);

/// `n` new INITIATED transfers, stored by `store`.
async fn begun(store: &PgTransferStore, data: &TestData, n: usize) -> Vec<Transfer> {
    let batch: Vec<_> = (0..n).map(|_| data.transfer(at(10))).collect();
    store.begin_batch(&batch).await.expect("begin_batch");
    batch.into_iter().map(|(t, _)| t).collect()
}

fn ids(transfers: &[Transfer]) -> BTreeSet<TransferId> {
    transfers.iter().map(|t| t.id).collect()
}

/// Collects announced ids until `expected` have all come; fails on any id
/// outside `expected`, on a missed announcement, or after [`PATIENCE`].
/// Returns how many notifications brought them.
async fn announced(
    heard: &mut mpsc::UnboundedReceiver<TransferChanges>,
    expected: &BTreeSet<TransferId>,
) -> usize {
    let mut got = BTreeSet::new();
    let mut notifications = 0;
    while got != *expected {
        let changes = tokio::time::timeout(PATIENCE, heard.recv())
            .await
            .unwrap_or_else(|_| panic!("{} of {} ids announced", got.len(), expected.len()))
            .expect("the wake is alive");
        let TransferChanges::Moved(ids) = changes else {
            panic!("nothing was missed: {changes:?}");
        };
        for id in ids {
            assert!(expected.contains(&id), "{id} did not move");
            got.insert(id);
        }
        notifications += 1;
    }
    notifications
}

/// Store A writes; store B, on its own pool (another process), listens.
async fn two_stores() -> (
    PgTransferStore,
    PgTransferStore,
    TransferWake,
    mpsc::UnboundedReceiver<TransferChanges>,
) {
    let (db, pool_a) = pool_of(Schema::Transaction).await;
    let pool_b = settings().connect(db.url()).await.expect("a second pool");
    let (a, b) = (
        PgTransferStore::new(pool_a, &settings()),
        PgTransferStore::new(pool_b, &settings()),
    );
    let (tell, heard) = mpsc::unbounded_channel();
    let wake = TransferWake::listen(b.pool(), move |changes| {
        let _ = tell.send(changes);
    })
    .await
    .expect("listening");
    (a, b, wake, heard)
}

#[tokio::test]
async fn what_one_store_moves_is_announced_to_a_listener_on_another() {
    let (a, _b, _wake, mut heard) = two_stores().await;
    let data = TestData::new();
    // Enough transfers that their ids take more than one payload (37
    // bytes each, 8,000 at most per notification).
    let transfers = begun(&a, &data, 300).await;
    let reserved = ReserveAttempt::Definite(ReserveOutcome::Reserved);
    let attempts: Vec<_> = transfers.iter().map(|t| (t.id, reserved)).collect();
    a.record_reserves(&attempts, at(11)).await.unwrap();
    let notifications = announced(&mut heard, &ids(&transfers)).await;
    assert!(
        notifications >= 2,
        "300 ids in {notifications} notification"
    );

    let outcomes: Vec<_> = transfers[..3]
        .iter()
        .map(|t| data.ledger_outcome(&ReserveRequest::of(t), LedgerOutcome::Succeeded))
        .collect();
    let applied = a.apply_ledger_outcomes(&outcomes, at(20)).await.unwrap();
    assert_eq!(applied.changed.len(), 3);
    announced(&mut heard, &ids(&transfers[..3])).await;

    // The same events again move nothing, and nothing is announced.
    let applied = a.apply_ledger_outcomes(&outcomes, at(21)).await.unwrap();
    assert!(applied.changed.is_empty());
    let quiet = tokio::time::timeout(QUIET, heard.recv()).await;
    assert!(quiet.is_err(), "announced without a move: {quiet:?}");
}

#[tokio::test]
async fn a_listener_that_lost_its_connection_says_so_and_hears_what_follows() {
    let (a, b, _wake, mut heard) = two_stores().await;
    let data = TestData::new();
    let transfers = begun(&a, &data, 2).await;

    // The server ends the listening session, as a restart or a network
    // failure would.
    let listening: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND query LIKE $1",
    )
    .bind(format!("%{TRANSFERS_CHANNEL}%"))
    .fetch_all(b.pool())
    .await
    .unwrap();
    assert_eq!(listening.len(), 1, "one listening session");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(listening[0])
        .execute(a.pool())
        .await
        .unwrap();
    let said = tokio::time::timeout(PATIENCE, heard.recv()).await;
    assert_eq!(
        said.expect("the loss is told").expect("the wake is alive"),
        TransferChanges::MaybeMissed
    );

    // Listening again: a later move is heard.
    let outcome = data.ledger_outcome(&ReserveRequest::of(&transfers[1]), LedgerOutcome::Succeeded);
    a.apply_ledger_outcomes(&[outcome], at(20)).await.unwrap();
    announced(&mut heard, &ids(&transfers[1..])).await;
}

#[tokio::test]
async fn a_store_told_not_to_announce_moves_silently() {
    let (db, pool) = pool_of(Schema::Transaction).await;
    let quiet_settings = wallet_core_postgres::PgSettings {
        announce_transfers: false,
        ..settings()
    };
    let store = PgTransferStore::new(pool.clone(), &quiet_settings);
    let other = settings().connect(db.url()).await.unwrap();
    let (tell, mut heard) = mpsc::unbounded_channel();
    let _wake = TransferWake::listen(&other, move |changes| {
        let _ = tell.send(changes);
    })
    .await
    .unwrap();
    let data = TestData::new();
    let transfers = begun(&store, &data, 1).await;
    let outcome = data.ledger_outcome(&ReserveRequest::of(&transfers[0]), LedgerOutcome::Succeeded);
    let applied = store
        .apply_ledger_outcomes(&[outcome], at(20))
        .await
        .unwrap();
    assert_eq!(applied.changed, [transfers[0].id]);
    let quiet = tokio::time::timeout(QUIET, heard.recv()).await;
    assert!(quiet.is_err(), "announced: {quiet:?}");
}
