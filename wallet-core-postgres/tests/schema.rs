//! What the schemas themselves enforce, whatever the adapter does: the
//! migrations, append-only entries, balanced postings, one hold and one
//! posting per transfer, no negative user balance; and that a posting into
//! a system account holds nothing another posting waits for.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Schema, one_posting, pool_of, settings};
use wallet_core::contract::data::TestData;
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::money::Currency;
use wallet_core::ports::{LedgerReads, LedgerStore, StoreError};
use wallet_core_postgres::{
    LEDGER_MIGRATIONS, TRANSACTION_MIGRATIONS, WALLET_MIGRATIONS, migrate_ledger_db,
    migrate_transaction_db, migrate_wallet_db,
};

/// Every table, column, constraint, index and trigger of the public schema,
/// as text: what a second migration run must leave unchanged.
async fn schema_of(pool: &sqlx::PgPool) -> String {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s.%s %s %s', table_name, column_name, data_type, is_nullable)
           FROM information_schema.columns WHERE table_schema = 'public'
         UNION ALL SELECT format('constraint %s %s', conname, pg_get_constraintdef(oid))
           FROM pg_constraint WHERE connamespace = 'public'::regnamespace
         UNION ALL SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
         UNION ALL SELECT format('trigger %s %s', tgname, tgenabled)
           FROM pg_trigger WHERE NOT tgisinternal
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("reading the schema");
    rows.join("\n")
}

#[tokio::test]
async fn migrations_apply_to_an_empty_database_and_again_without_change() {
    for (kind, migrator) in [
        (Schema::Transaction, &TRANSACTION_MIGRATIONS),
        (Schema::Wallet, &WALLET_MIGRATIONS),
        (Schema::Ledger, &LEDGER_MIGRATIONS),
    ] {
        let (db, pool) = pool_of(kind).await;
        let first = schema_of(&pool).await;
        assert!(
            first.contains("outbox.seq"),
            "{kind:?}: no outbox in\n{first}"
        );
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(applied as usize, migrator.iter().count(), "{kind:?}");
        match kind {
            Schema::Transaction => migrate_transaction_db(&pool).await,
            Schema::Wallet => migrate_wallet_db(&pool).await,
            Schema::Ledger => migrate_ledger_db(&pool).await,
        }
        .unwrap_or_else(|e| panic!("{kind:?}: second run on {}: {e}", db.name()));
        assert_eq!(
            schema_of(&pool).await,
            first,
            "{kind:?}: the second run changed the schema"
        );
    }
}

#[tokio::test]
async fn ledger_entries_cannot_be_updated_deleted_or_truncated() {
    let (_db, pool) = pool_of(Schema::Ledger).await;
    one_posting(&pool, &TestData::new()).await;
    for statement in [
        "UPDATE entries SET amount = amount + 1",
        "DELETE FROM entries",
        "TRUNCATE entries",
    ] {
        let error = sqlx::query(statement)
            .execute(&pool)
            .await
            .expect_err(statement);
        let message = error.to_string();
        assert!(message.contains("append-only"), "{statement}: {message}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 2, "both entries are still there");
}

#[tokio::test]
async fn unbalanced_or_unrecorded_postings_are_refused() {
    let (_db, pool) = pool_of(Schema::Ledger).await;
    let t = uuid::Uuid::new_v4();
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    sqlx::query("INSERT INTO outcomes VALUES ($1, 'succeeded', NULL, now())")
        .bind(t)
        .execute(&pool)
        .await
        .unwrap();
    let insert =
        "INSERT INTO entries (transfer_id, account, direction, amount, currency, posted_at)
                  SELECT $1, * FROM UNNEST($2::uuid[], $3::text[], $4::numeric[], $5::text[])
                      AS u, now()";
    // What is wrong, then per entry: direction, amount, currency.
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<&'a str>, Vec<&'a str>);
    let cases: [Case; 4] = [
        (
            "amounts differ",
            vec!["debit", "credit"],
            vec!["10.00", "9.00"],
            vec!["USD", "USD"],
        ),
        ("one side only", vec!["debit"], vec!["10.00"], vec!["USD"]),
        (
            "currencies differ",
            vec!["debit", "credit"],
            vec!["10.00", "10.00"],
            vec!["USD", "EUR"],
        ),
        (
            "two debits",
            vec!["debit", "debit"],
            vec!["10.00", "10.00"],
            vec!["USD", "USD"],
        ),
    ];
    for (what, directions, amounts, currencies) in cases {
        let amounts: Vec<rust_decimal::Decimal> =
            amounts.iter().map(|a| a.parse().unwrap()).collect();
        let accounts = vec![a, b][..directions.len()].to_vec();
        let result = sqlx::query(insert)
            .bind(t)
            .bind(accounts)
            .bind(directions)
            .bind(amounts)
            .bind(currencies)
            .execute(&pool)
            .await;
        assert!(result.is_err(), "{what}: accepted");
    }
    // Balanced, but for a transfer with no 'succeeded' outcome.
    let result = sqlx::query(insert)
        .bind(uuid::Uuid::new_v4())
        .bind(vec![a, b])
        .bind(vec!["debit", "credit"])
        .bind(vec![rust_decimal::Decimal::TEN, rust_decimal::Decimal::TEN])
        .bind(vec!["USD", "USD"])
        .execute(&pool)
        .await;
    assert!(
        result.is_err(),
        "a posting without its outcome was accepted"
    );
    // The same posting with its outcome is accepted, once.
    for attempt in 0..2 {
        let result = sqlx::query(insert)
            .bind(t)
            .bind(vec![a, b])
            .bind(vec!["debit", "credit"])
            .bind(vec![rust_decimal::Decimal::TEN, rust_decimal::Decimal::TEN])
            .bind(vec!["USD", "USD"])
            .execute(&pool)
            .await;
        assert_eq!(
            result.is_ok(),
            attempt == 0,
            "attempt {attempt}: {result:?}"
        );
    }
}

/// The balance check looks up each posted transfer's outcome by key: a
/// batch of postings reads no more of `outcomes` as the table grows.
#[tokio::test]
async fn the_balance_check_probes_outcomes_by_key_not_by_scanning() {
    let (_db, pool) = pool_of(Schema::Ledger).await;
    sqlx::query(
        "INSERT INTO outcomes
         SELECT gen_random_uuid(), 'succeeded', NULL, now() FROM generate_series(1, 20000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE outcomes")
        .execute(&pool)
        .await
        .unwrap();
    let transfers: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT transfer_id FROM outcomes ORDER BY transfer_id LIMIT 200")
            .fetch_all(&pool)
            .await
            .unwrap();
    // The backend's own scan counts, not yet reported (they may include
    // earlier statements of this connection): before and after.
    let scans =
        "SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'outcomes'";
    let mut tx = pool.begin().await.unwrap();
    let (seq, idx): (Option<i64>, Option<i64>) =
        sqlx::query_as(scans).fetch_one(&mut *tx).await.unwrap();
    sqlx::query(
        "INSERT INTO entries (transfer_id, account, direction, amount, currency, posted_at)
         SELECT t, gen_random_uuid(), d, 1.00, 'USD', now()
         FROM UNNEST($1::uuid[]) AS t, UNNEST(ARRAY['debit', 'credit']) AS d",
    )
    .bind(&transfers)
    .execute(&mut *tx)
    .await
    .expect("balanced postings of decided transfers");
    let (seq_after, idx_after): (Option<i64>, Option<i64>) =
        sqlx::query_as(scans).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(seq_after, seq, "the check scanned outcomes");
    let probes = idx_after.unwrap_or(0) - idx.unwrap_or(0);
    assert!(probes >= 200, "one probe per transfer: {probes}");
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn one_hold_per_transfer_and_no_negative_user_balance() {
    let (_db, pool) = pool_of(Schema::Wallet).await;
    let hold = "INSERT INTO reservations VALUES ($1, gen_random_uuid(), gen_random_uuid(),
                gen_random_uuid(), 5, 'USD', 'reserved', NULL, now(), now(), 'transfer')";
    let t = uuid::Uuid::new_v4();
    sqlx::query(hold).bind(t).execute(&pool).await.unwrap();
    let error = sqlx::query(hold).bind(t).execute(&pool).await.unwrap_err();
    assert!(error.to_string().contains("reservations_pkey"), "{error}");
    let error = sqlx::query(
        "INSERT INTO wallets VALUES (gen_random_uuid(), 'USD', -0.01, 0, now(), now())",
    )
    .execute(&pool)
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("wallets_available_check"),
        "{error}"
    );
}

/// A held reservation of 5 USD from `sender` to `receiver`, written as the
/// former build writes one: without a kind.
async fn hold(pool: &sqlx::PgPool, sender: uuid::Uuid, receiver: uuid::Uuid) -> uuid::Uuid {
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO reservations (transfer_id, correlation_id, sender_wallet_id,
             receiver_wallet_id, amount, currency, state, reason, created_at, updated_at)
         VALUES ($1, gen_random_uuid(), $2, $3, 5, 'USD', 'reserved', NULL, now(), now())",
    )
    .bind(id)
    .bind(sender)
    .bind(receiver)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// Reservations stored before requests said their kind are given the kind
/// their parties show when the column comes (wallet migration 5), and so
/// is one written without a kind afterwards, as an instance of the former
/// build still running during an upgrade writes it.
#[tokio::test]
async fn earlier_reservations_get_the_kind_their_parties_show() {
    use sqlx::Executor;
    let db = wallet_core_postgres::testdb::TestDatabase::create()
        .await
        .expect("a test database");
    let pool = settings().connect(db.url()).await.unwrap();
    let (before, from): (Vec<_>, Vec<_>) = Schema::Wallet
        .migrator()
        .iter()
        .partition(|m| m.version < 5);
    for migration in before {
        pool.execute(&*migration.sql).await.unwrap();
    }
    let (system, user) = (
        WalletId::system(Currency::USD).as_uuid(),
        uuid::Uuid::new_v4(),
    );
    let other = uuid::Uuid::new_v4();
    let mut expected = Vec::new();
    let parties = [
        (system, user, "deposit"),
        (user, system, "withdrawal"),
        (user, other, "transfer"),
    ];
    for (sender, receiver, kind) in parties {
        expected.push((hold(&pool, sender, receiver).await, kind.to_owned()));
    }
    for migration in from {
        pool.execute(&*migration.sql).await.unwrap();
    }
    for (sender, receiver, kind) in parties {
        expected.push((hold(&pool, sender, receiver).await, kind.to_owned()));
    }
    let mut kinds: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT transfer_id, kind FROM reservations")
            .fetch_all(&pool)
            .await
            .unwrap();
    kinds.sort();
    expected.sort();
    assert_eq!(kinds, expected);
}

/// 32 concurrent deposits into distinct wallets do not queue on one lock:
/// each posting is slowed by half a second while its unit holds every lock
/// it takes (a test trigger sleeps after the entries are appended), so
/// deposits that all wrote one row (the system account's) would take 16 s
/// one after the other; in parallel they take about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deposits_into_distinct_wallets_do_not_queue_on_one_lock() {
    const DEPOSITS: usize = 32;
    let (_db, pool) = pool_of(Schema::Ledger).await;
    sqlx::raw_sql(
        "CREATE FUNCTION slow_posting() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END; $$;
         CREATE TRIGGER slow_posting AFTER INSERT ON entries
             FOR EACH STATEMENT EXECUTE FUNCTION slow_posting();",
    )
    .execute(&pool)
    .await
    .unwrap();
    let settings = wallet_core_postgres::PgSettings {
        max_connections: DEPOSITS as u32,
        ..settings()
    };
    let pool = settings.connect(_db.url()).await.unwrap();
    let store = Arc::new(wallet_core_postgres::PgLedgerStore::new(pool, &settings));
    let data = Arc::new(TestData::new());
    let system = WalletId::system(Currency::USD);
    let start = Arc::new(tokio::sync::Barrier::new(DEPOSITS));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..DEPOSITS {
        let (store, data, start) = (store.clone(), data.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let request = data.reserve_request(system, data.wallet_id(), "1.00", Currency::USD);
            let event = data.wallet_reserved(&request);
            start.wait().await;
            store.post(&[event]).await
        }));
    }
    for task in tasks {
        let posted: Result<usize, StoreError> = task.await.unwrap();
        assert_eq!(posted.unwrap(), 1);
    }
    let elapsed = started.elapsed();
    println!("{DEPOSITS} concurrent deposits of 0.5 s each: {elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(8),
        "deposits queued on a shared lock: {elapsed:?} for {DEPOSITS} deposits of 0.5 s"
    );
    let balance = store
        .balances_page(None, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.account == system)
        .expect("the system account has a balance");
    assert_eq!(balance.balance.value().to_string(), "-32.00");
}

/// The pool's connections start with the settings' timeouts.
#[tokio::test]
async fn connections_carry_the_statement_and_lock_timeouts() {
    let (db, _) = pool_of(Schema::Wallet).await;
    let settings = wallet_core_postgres::PgSettings {
        statement_timeout: Duration::from_millis(300),
        lock_timeout: Duration::from_millis(100),
        ..settings()
    };
    let pool = settings.connect(db.url()).await.unwrap();
    let statement: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    let lock: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((statement.as_str(), lock.as_str()), ("300ms", "100ms"));
    let error = sqlx::query("SELECT pg_sleep(2)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("statement timeout"), "{error}");
    // One round trip per unit, not two: the pool checks connections as
    // they come back only.
    assert!(!pool.options().get_test_before_acquire());
}

/// Every connection of a pool plans each statement when it runs: a plan
/// kept for the connection's life would be the one costed while the tables
/// were empty (scans of whole tables once they have grown, with no ANALYZE
/// in between; see docs/postgres.md).
#[tokio::test]
async fn pooled_connections_plan_each_run_of_a_statement() {
    let (_db, pool) = pool_of(Schema::Transaction).await;
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "force_custom_plan");
}

/// A ledger of 50,000 deposits (100,000 entries) over a year, one every
/// ten minutes, into 100 accounts in turn, all from one system account.
async fn seeded_ledger(pool: &sqlx::PgPool) {
    let seed = "
        CREATE TEMP TABLE seed AS
            SELECT g, gen_random_uuid() AS t FROM generate_series(1, 50000) AS g;
        INSERT INTO outcomes SELECT t, 'succeeded', NULL, now() FROM seed;
        INSERT INTO entries (transfer_id, account, direction, amount, currency, posted_at)
            SELECT t,
                   CASE d WHEN 'debit' THEN '00000000-0000-0000-0000-000000000001'::uuid
                          ELSE md5('account ' || g % 100)::uuid END,
                   d, 1.00, 'USD',
                   '2026-01-01T00:00:00Z'::timestamptz + g * interval '10 minutes'
            FROM seed, UNNEST(ARRAY['debit', 'credit']) AS d
            ORDER BY g, d DESC;
        DROP TABLE seed;";
    sqlx::raw_sql(seed).execute(pool).await.expect("seeding");
    // Alone: VACUUM runs outside a transaction block. It marks the pages
    // all-visible, as autovacuum does on a live ledger.
    sqlx::raw_sql("VACUUM ANALYZE entries")
        .execute(pool)
        .await
        .expect("vacuuming");
}

/// The balance as of a time reads the account's entries up to it from
/// `entries_account_posted_at` alone (an index-only scan of one range,
/// the table's pages untouched), for a user account and for the system
/// account every deposit debits. Run with `--nocapture` to see the plans
/// (docs/postgres.md shows them).
#[tokio::test]
async fn the_balance_as_of_a_time_reads_one_range_of_one_index() {
    let (_db, pool) = pool_of(Schema::Ledger).await;
    seeded_ledger(&pool).await;
    let mut conn = pool.acquire().await.unwrap();
    let prepare = format!(
        "PREPARE balance_as_of(uuid, timestamptz) AS {}",
        wallet_core_postgres::BALANCE_AS_OF
    );
    sqlx::raw_sql(&prepare).execute(&mut *conn).await.unwrap();
    let user = "md5('account 7')::uuid";
    let system = "'00000000-0000-0000-0000-000000000001'::uuid";
    for (account, counted) in [(user, 237_i64), (system, 23_616)] {
        let explain = format!(
            "EXPLAIN (ANALYZE, BUFFERS) \
             EXECUTE balance_as_of({account}, '2026-06-14T00:00:00Z')"
        );
        let plan: Vec<String> = sqlx::raw_sql(&explain)
            .fetch_all(&mut *conn)
            .await
            .unwrap()
            .iter()
            .map(|row| sqlx::Row::get(row, 0))
            .collect();
        let plan = plan.join("\n");
        eprintln!("{explain}\n{plan}\n");
        assert!(
            plan.contains("Index Only Scan using entries_account_posted_at on entries"),
            "{plan}"
        );
        assert!(plan.contains("Heap Fetches: 0"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(
            plan.contains(&format!("rows={counted} loops=1")),
            "the entries posted by then, and no more, are read: {plan}"
        );
    }
}
