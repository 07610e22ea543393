//! The history's statements read their indexes: on a database of 100,000
//! transfers among 1,000 wallets over a month, each shape of history query
//! (a wallet's page, its next page from a cursor, every wallet's page, a
//! reference, a wallet's FAILED transfers, a day) is planned as index scans
//! cut at the page's size, never a scan of the table. The plans print with
//! `--nocapture`; docs/postgres.md shows them.

mod common;

use common::{Schema, pool_of, settings};
use wallet_core::history::HistoryQuery;
use wallet_core::ids::WalletId;
use wallet_core::ports::TransferReads;
use wallet_core::tags::Reference;
use wallet_core::transfer::TransferStatus;
use wallet_core_postgres::PgTransferStore;

const TRANSFERS: i64 = 100_000;

/// 100,000 transfers, one every 25 s back from now, wallet `g % 1000`
/// paying wallet `(7g + 1) % 1000`; every 20th FAILED, every 10th with a
/// reference.
const SEED: [&str; 3] = [
    "INSERT INTO idempotency_keys (key, fingerprint, transfer_id, created_at)
     SELECT 'k' || g, 'v1:seed', md5('t' || g)::uuid, now() - g * interval '25 seconds'
     FROM generate_series(1, $1) g",
    "INSERT INTO transfers (id, kind, status, failure_reason, sender_wallet_id,
         receiver_wallet_id, amount, currency, correlation_id, idempotency_key, created_at,
         updated_at, reference, reference_wallet)
     SELECT md5('t' || g)::uuid, 'transfer',
         CASE WHEN g % 20 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,
         CASE WHEN g % 20 = 0 THEN 'insufficient_funds' END,
         md5('w' || g % 1000)::uuid, md5('w' || (7 * g + 1) % 1000)::uuid, 1 + g % 50, 'USD',
         md5('c' || g)::uuid, 'k' || g, now() - g * interval '25 seconds',
         now() - g * interval '25 seconds',
         CASE WHEN g % 10 = 0 THEN 'order-' || g END,
         CASE WHEN g % 10 = 0 THEN md5('w' || g % 1000)::uuid END
     FROM generate_series(1, $1) g",
    "ANALYZE transfers",
];

#[tokio::test(flavor = "multi_thread")]
async fn each_history_query_reads_its_indexes() {
    let (db, pool) = pool_of(Schema::Transaction).await;
    // The seed takes longer than a store's statement timeout allows.
    let seeder = sqlx::PgPool::connect(db.url()).await.expect("a connection");
    for statement in SEED {
        let query = sqlx::query(statement);
        let query = if statement.contains("$1") {
            query.bind(TRANSFERS)
        } else {
            query
        };
        query.execute(&seeder).await.expect("seeding");
    }
    seeder.close().await;
    let busiest: uuid::Uuid = sqlx::query_scalar("SELECT md5('w20')::uuid")
        .fetch_one(&pool)
        .await
        .unwrap();
    let store = PgTransferStore::new(pool, &settings());
    let w = Some(WalletId::from_uuid(busiest));
    let day = chrono::Utc::now() - chrono::Duration::days(2);
    let first = store
        .history(&HistoryQuery {
            wallet: w,
            ..HistoryQuery::all(50)
        })
        .await
        .unwrap();
    assert_eq!(first.transfers.len(), 50);
    let queries = [
        (
            "a wallet's first page",
            HistoryQuery {
                wallet: w,
                ..HistoryQuery::all(50)
            },
        ),
        (
            "its next page, from the cursor",
            HistoryQuery {
                wallet: w,
                after: first.next,
                ..HistoryQuery::all(50)
            },
        ),
        ("every wallet's first page", HistoryQuery::all(50)),
        (
            "a reference",
            HistoryQuery {
                reference: Some(Reference::new("order-5000").unwrap()),
                ..HistoryQuery::all(50)
            },
        ),
        (
            "a wallet's FAILED transfers",
            HistoryQuery {
                wallet: w,
                status: Some(TransferStatus::Failed),
                ..HistoryQuery::all(50)
            },
        ),
        (
            "one day of every wallet",
            HistoryQuery {
                since: Some(day),
                until: Some(day + chrono::Duration::days(1)),
                ..HistoryQuery::all(50)
            },
        ),
    ];
    for (name, query) in queries {
        let plan = store.explain_history(&query).await.unwrap();
        println!("-- {name}\n{}\n", plan.join("\n"));
        assert!(
            !plan.iter().any(|line| line.contains("Seq Scan")),
            "{name} scans the table:\n{}",
            plan.join("\n")
        );
        let indexes = [
            "transfers_sent",
            "transfers_received",
            "transfers_created",
            "transfers_reference",
        ];
        assert!(
            plan.iter()
                .any(|line| indexes.iter().any(|index| line.contains(index))),
            "{name} reads none of the history's indexes:\n{}",
            plan.join("\n")
        );
        let page = store.history(&query).await.unwrap();
        assert!(!page.transfers.is_empty(), "{name} found nothing");
    }
}
