//! The roles of a service database: `prepare` (what `walletctl migrate`
//! runs) makes the owner and runtime roles, gives the owner the schema and
//! the runtime role exactly its grants, and running it again changes
//! nothing; the runtime role can change neither the schema nor the
//! ledger's history; the ledger's triggers refuse changes to outcomes and
//! accounts even to the owner; over-scaled amounts are refused by the
//! schema; a service starts only on a schema with this build's migrations;
//! preparations started together wait for each other.

mod common;

use std::str::FromStr;

use common::{Schema, one_posting, pool_of, settings};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use wallet_core::contract::data::TestData;
use wallet_core::money::Currency;
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{Roles, check_schema, prepare, unbounded_role};

/// Every table privilege there is, in the order `Schema::grants` lists
/// them.
const PRIVILEGES: [&str; 7] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];

fn roles_of(db: &TestDatabase) -> Roles {
    Roles::of_database(db.name()).unwrap()
}

/// What `role` may do on each table of `public`, by table.
async fn privileges(pool: &PgPool, role: &str) -> Vec<(String, String)> {
    let mut tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text,
                array_to_string(ARRAY(SELECT p FROM unnest($2::text[]) WITH ORDINALITY AS u(p, n)
                                       WHERE has_table_privilege($1, c.oid, p) ORDER BY n), ', ')
           FROM pg_class c
          WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'",
    )
    .bind(role)
    .bind(&PRIVILEGES[..])
    .fetch_all(pool)
    .await
    .unwrap();
    tables.sort();
    tables
}

/// The SQLSTATE `result` failed with.
fn code<T: std::fmt::Debug>(result: Result<T, sqlx::Error>) -> String {
    let error = result.expect_err("refused");
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
        .unwrap_or_else(|| panic!("not a database error: {error}"))
}

/// A connection as the server's administrator acting as `role`.
async fn acting_as(db: &TestDatabase, role: &str) -> PgConnection {
    let mut conn = PgConnection::connect(db.url()).await.unwrap();
    sqlx::query(&format!("SET ROLE {role}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// A pool on `url`, with the test settings.
async fn pool_at(url: &str) -> PgPool {
    settings().connect(url).await.unwrap()
}

/// A balanced posting of `amount` in `currency` written by hand, with its
/// outcome, in one transaction.
async fn posting(conn: &mut PgConnection, amount: &str, currency: &str) -> Result<(), sqlx::Error> {
    let transfer = uuid::Uuid::new_v4();
    let mut tx = conn.begin().await?;
    sqlx::query("INSERT INTO outcomes VALUES ($1, 'succeeded', NULL, now())")
        .bind(transfer)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO entries (transfer_id, account, direction, amount, currency, posted_at)
         SELECT $1, gen_random_uuid(), d, {amount}, $2, now()
           FROM unnest(ARRAY['debit', 'credit']) d"
    ))
    .bind(transfer)
    .bind(currency)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn prepare_makes_the_roles_and_grants_exactly_the_stores_statements_twice_over() {
    for schema in Schema::ALL {
        let db = TestDatabase::create().await.expect("a test database");
        let roles = prepare(db.url(), schema).await.unwrap();
        assert_eq!(roles, roles_of(&db));
        let admin = pool_at(db.url()).await;
        let first = privileges(&admin, &roles.app).await;
        let again = prepare(db.url(), schema).await.unwrap();
        assert_eq!(again, roles, "{schema}");
        assert_eq!(privileges(&admin, &roles.app).await, first, "{schema}");

        let mut expected: Vec<(String, String)> = first
            .iter()
            .map(|(table, _)| {
                let granted = schema.grants().iter().find(|(t, _)| t == table);
                (table.clone(), granted.map_or("", |(_, p)| p).to_owned())
            })
            .collect();
        expected.sort();
        assert_eq!(first, expected, "{schema}: the runtime role's privileges");
        assert_eq!(
            first.len(),
            schema.grants().len(),
            "{schema}: every table is granted on purpose: {first:?}"
        );

        let (owner_login, app_login, app_super): (bool, bool, bool) = sqlx::query_as(
            "SELECT o.rolcanlogin, a.rolcanlogin, a.rolsuper
               FROM pg_roles o, pg_roles a WHERE o.rolname = $1 AND a.rolname = $2",
        )
        .bind(&roles.owner)
        .bind(&roles.app)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!((owner_login, app_login, app_super), (false, true, false));
        let others: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c
              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'S')
                AND pg_get_userbyid(c.relowner) <> $1
             UNION ALL
             SELECT p.proname::text FROM pg_proc p
              WHERE p.pronamespace = 'public'::regnamespace
                AND pg_get_userbyid(p.proowner) <> $1",
        )
        .bind(&roles.owner)
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(others.is_empty(), "{schema}: not the owner's: {others:?}");
    }
}

/// Three instances' migrations started at once on an empty database (a
/// deploy that starts every instance together): each waits for the one
/// before, all succeed, and every migration is applied once.
#[tokio::test]
async fn preparations_started_together_wait_for_each_other() {
    let db = TestDatabase::create().await.expect("a test database");
    let schema = Schema::Transaction;
    let (a, b, c) = tokio::join!(
        prepare(db.url(), schema),
        prepare(db.url(), schema),
        prepare(db.url(), schema)
    );
    for roles in [a, b, c] {
        assert_eq!(roles.unwrap(), roles_of(&db));
    }
    let admin = pool_at(db.url()).await;
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&admin)
            .await
            .unwrap();
    let expected: Vec<i64> = schema.migrator().iter().map(|m| m.version).collect();
    assert_eq!(applied, expected, "each migration once, all of them");
}

#[tokio::test]
async fn a_database_migrated_before_the_roles_is_handed_to_the_owner() {
    let (db, admin) = pool_of(Schema::Ledger).await;
    let data = TestData::new();
    one_posting(&admin, &data).await;
    let roles = prepare(db.url(), Schema::Ledger).await.unwrap();
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT pg_get_userbyid(relowner)::text FROM pg_class
          WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(owners, [roles.owner]);
    let app = pool_at(
        &db.prepare(Schema::Ledger)
            .await
            .expect("a prepared test database"),
    )
    .await;
    one_posting(&app, &data).await;
    assert_eq!(count(&app, "entries").await, 4);
}

#[tokio::test]
async fn a_runtime_role_with_powers_beyond_its_grants_is_refused() {
    let db = TestDatabase::create().await.expect("a test database");
    let roles = roles_of(&db);
    let admin = pool_at(db.url()).await;
    sqlx::query(&format!("CREATE ROLE {} LOGIN CREATEDB", roles.app))
        .execute(&admin)
        .await
        .unwrap();
    let error = prepare(db.url(), Schema::Wallet).await.unwrap_err();
    assert!(error.to_string().contains("CREATEDB"), "{error}");
    sqlx::query(&format!("ALTER ROLE {} NOCREATEDB", roles.app))
        .execute(&admin)
        .await
        .unwrap();
    prepare(db.url(), Schema::Wallet).await.unwrap();
}

#[tokio::test]
async fn the_runtime_role_can_change_neither_the_schema_nor_the_ledgers_history() {
    let db = TestDatabase::create().await.expect("a test database");
    let app = pool_at(
        &db.prepare(Schema::Ledger)
            .await
            .expect("a prepared test database"),
    )
    .await;
    one_posting(&app, &TestData::new()).await;
    for statement in [
        "CREATE TABLE shadow (id int)",
        "CREATE TEMPORARY TABLE shadow (id int)",
        "CREATE INDEX entries_amount ON entries (amount)",
        "ALTER TABLE entries DISABLE TRIGGER entries_append_only",
        "ALTER TABLE outcomes DROP CONSTRAINT outcomes_check",
        "DROP TRIGGER entries_append_only ON entries",
        "DROP TRIGGER outcomes_append_only ON outcomes",
        "DROP TABLE outcomes",
        "TRUNCATE entries",
        "TRUNCATE outcomes",
        "TRUNCATE accounts",
        "TRUNCATE inbox",
        "TRUNCATE outbox",
        "UPDATE entries SET amount = amount + 1",
        "UPDATE outcomes SET outcome = 'failed', reason = 'invalid_amount'",
        "UPDATE accounts SET currency = 'EUR'",
        "DELETE FROM entries",
        "DELETE FROM outcomes",
        "DELETE FROM accounts",
        "DELETE FROM inbox",
        "DELETE FROM _sqlx_migrations",
    ] {
        assert_eq!(
            code(sqlx::query(statement).execute(&app).await),
            "42501",
            "{statement}: insufficient privilege"
        );
    }
    for (table, rows) in [("entries", 2), ("outcomes", 1), ("accounts", 1)] {
        assert_eq!(count(&app, table).await, rows, "{table}");
    }
    for schema in [Schema::Transaction, Schema::Wallet] {
        let db = TestDatabase::create().await.expect("a test database");
        let app = pool_at(&db.prepare(schema).await.expect("a prepared test database")).await;
        for statement in [
            "CREATE TABLE shadow (id int)",
            "ALTER TABLE outbox ADD COLUMN shadow int",
            "TRUNCATE outbox",
            "TRUNCATE inbox",
        ] {
            assert_eq!(
                code(sqlx::query(statement).execute(&app).await),
                "42501",
                "{schema}: {statement}"
            );
        }
    }
}

#[tokio::test]
async fn outcomes_and_accounts_refuse_changes_even_to_the_owner() {
    let db = TestDatabase::create().await.expect("a test database");
    let app = pool_at(
        &db.prepare(Schema::Ledger)
            .await
            .expect("a prepared test database"),
    )
    .await;
    one_posting(&app, &TestData::new()).await;
    let mut owner = acting_as(&db, &roles_of(&db).owner).await;
    for statement in [
        "UPDATE outcomes SET outcome = 'failed', reason = 'invalid_amount'",
        "DELETE FROM outcomes",
        "TRUNCATE outcomes",
        "UPDATE accounts SET currency = 'EUR'",
        "DELETE FROM accounts",
        "TRUNCATE accounts",
        "UPDATE entries SET amount = amount + 1",
        "TRUNCATE entries",
    ] {
        let error = sqlx::query(statement)
            .execute(&mut owner)
            .await
            .expect_err(statement)
            .to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    for (table, rows) in [("entries", 2), ("outcomes", 1), ("accounts", 1)] {
        assert_eq!(count(&app, table).await, rows, "{table}");
    }
}

#[tokio::test]
async fn amounts_beyond_their_currencys_scale_are_refused_by_the_schema() {
    // Each database knows every currency's scale as the core does.
    for schema in Schema::ALL {
        let db = TestDatabase::create().await.expect("a test database");
        prepare(db.url(), schema).await.unwrap();
        let admin = pool_at(db.url()).await;
        for currency in Currency::ALL {
            let scale: i32 = sqlx::query_scalar("SELECT currency_scale($1)")
                .bind(currency.code())
                .fetch_one(&admin)
                .await
                .unwrap();
            assert_eq!(scale as u32, currency.scale(), "{schema}: {currency}");
        }
        let unknown: i32 = sqlx::query_scalar("SELECT currency_scale('XXX')")
            .fetch_one(&admin)
            .await
            .unwrap();
        assert_eq!(unknown, -1, "{schema}");
    }

    let db = TestDatabase::create().await.expect("a test database");
    prepare(db.url(), Schema::Ledger).await.unwrap();
    let mut owner = acting_as(&db, &roles_of(&db).owner).await;
    for (amount, currency) in [
        ("1.001", "USD"),
        ("5.5", "JPY"),
        ("1.0001", "KWD"),
        ("1", "XXX"),
    ] {
        let refused = posting(&mut owner, amount, currency).await.unwrap_err();
        assert!(
            refused.to_string().contains("entries_amount_scale"),
            "{amount} {currency}: {refused}"
        );
    }
    for (amount, currency) in [("1.00", "USD"), ("5", "JPY"), ("1.001", "KWD")] {
        posting(&mut owner, amount, currency)
            .await
            .unwrap_or_else(|e| panic!("{amount} {currency}: {e}"));
    }

    let db = TestDatabase::create().await.expect("a test database");
    prepare(db.url(), Schema::Wallet).await.unwrap();
    let mut owner = acting_as(&db, &roles_of(&db).owner).await;
    let wallet = "INSERT INTO wallets (id, currency, available, reserved, created_at, updated_at)
                  VALUES (gen_random_uuid(), 'USD', 0.001, 0, now(), now())";
    let refused = sqlx::query(wallet).execute(&mut owner).await.unwrap_err();
    assert!(
        refused.to_string().contains("wallets_balance_scale"),
        "{refused}"
    );
    let hold = |state: &str, reason: &str| {
        format!(
            "INSERT INTO reservations (transfer_id, correlation_id, kind, sender_wallet_id,
                 receiver_wallet_id, amount, currency, state, reason, created_at, updated_at)
             VALUES (gen_random_uuid(), gen_random_uuid(), 'transfer', gen_random_uuid(),
                 gen_random_uuid(), 1.001, 'USD', '{state}', {reason}, now(), now())"
        )
    };
    let refused = sqlx::query(&hold("reserved", "NULL"))
        .execute(&mut owner)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("reservations_amount_scale"),
        "{refused}"
    );
    // A rejection keeps the amount it was asked for: one reason to reject.
    sqlx::query(&hold("rejected", "'invalid_amount'"))
        .execute(&mut owner)
        .await
        .unwrap();

    let db = TestDatabase::create().await.expect("a test database");
    prepare(db.url(), Schema::Transaction).await.unwrap();
    let mut owner = acting_as(&db, &roles_of(&db).owner).await;
    let refused = sqlx::query(
        "WITH k AS (INSERT INTO idempotency_keys VALUES ('k', 'f', gen_random_uuid(), now())
                    RETURNING key, transfer_id)
         INSERT INTO transfers (id, kind, status, sender_wallet_id, receiver_wallet_id, amount,
                                currency, correlation_id, idempotency_key, created_at, updated_at)
         SELECT transfer_id, 'transfer', 'INITIATED', gen_random_uuid(), gen_random_uuid(), 1.001,
                'USD', gen_random_uuid(), key, now(), now() FROM k",
    )
    .execute(&mut owner)
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("transfers_amount_scale"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_service_starts_only_on_a_schema_with_this_builds_migrations() {
    let db = TestDatabase::create().await.expect("a test database");
    let admin = pool_at(db.url()).await;
    let empty = check_schema(&admin, Schema::Wallet).await.unwrap_err();
    assert!(
        empty.to_string().contains("walletctl migrate --wallet-db"),
        "{empty}"
    );
    let app = pool_at(
        &db.prepare(Schema::Wallet)
            .await
            .expect("a prepared test database"),
    )
    .await;
    check_schema(&app, Schema::Wallet).await.unwrap();
    assert_eq!(unbounded_role(&app).await.unwrap(), None);
    let warning = unbounded_role(&admin).await.unwrap().expect("a warning");
    assert!(warning.contains("superuser"), "{warning}");

    // A newer build's further migration does not stop this one.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'a later build', true, '\\x00', 0)",
    )
    .execute(&admin)
    .await
    .unwrap();
    check_schema(&app, Schema::Wallet).await.unwrap();

    let last = Schema::Wallet
        .migrator()
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = $1")
        .bind(last)
        .execute(&admin)
        .await
        .unwrap();
    let changed = check_schema(&app, Schema::Wallet).await.unwrap_err();
    assert!(changed.to_string().contains("differs"), "{changed}");
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(last)
        .execute(&admin)
        .await
        .unwrap();
    let behind = check_schema(&app, Schema::Wallet).await.unwrap_err();
    assert!(
        behind
            .to_string()
            .contains(&format!("lacks migration {last}")),
        "{behind}"
    );
}

/// The runtime role's URL names that role and no other.
#[tokio::test]
async fn the_runtime_url_logs_in_as_the_runtime_role() {
    let db = TestDatabase::create().await.expect("a test database");
    let url = db
        .prepare(Schema::Transaction)
        .await
        .expect("a prepared test database");
    let options = PgConnectOptions::from_str(&url).unwrap();
    assert_eq!(options.get_username(), roles_of(&db).app);
    let mut conn = options.connect().await.unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(user, roles_of(&db).app);
}
