//! Who may do what in a service database.
//!
//! Each database has two roles, named after it: `<database>_owner`, which
//! owns the schema and runs the migrations (it cannot log in), and
//! `<database>_app`, the runtime role the service connects as, granted
//! exactly the statements its store runs ([`Schema::grants`]): no DDL, no
//! `TRUNCATE`, and on the ledger's entries, outcomes and accounts nothing
//! but `SELECT` and `INSERT`. [`prepare`] creates or checks them, brings the
//! schema to this build's as the owner and grants the runtime role its
//! privileges; a service only checks, at start, that the schema is this
//! build's ([`check_schema`]).

use std::fmt;
use std::str::FromStr;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::{LEDGER_MIGRATIONS, TRANSACTION_MIGRATIONS, WALLET_MIGRATIONS};

/// One service's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// The transaction service's.
    Transaction,
    /// The wallet service's.
    Wallet,
    /// The ledger service's.
    Ledger,
}

/// What the store of every database does with its outbox: append, claim,
/// acknowledge, quarantine and release (`UPDATE`), prune sent rows
/// (`DELETE`).
const OUTBOX: &str = "SELECT, INSERT, UPDATE, DELETE";
/// Read by [`check_schema`] as the service starts.
const MIGRATIONS_TABLE: (&str, &str) = ("_sqlx_migrations", "SELECT");

impl Schema {
    /// All three.
    pub const ALL: [Schema; 3] = [Schema::Transaction, Schema::Wallet, Schema::Ledger];

    /// `transaction`, `wallet` or `ledger`.
    pub fn name(self) -> &'static str {
        match self {
            Schema::Transaction => "transaction",
            Schema::Wallet => "wallet",
            Schema::Ledger => "ledger",
        }
    }

    /// Its embedded migrations.
    pub fn migrator(self) -> &'static Migrator {
        match self {
            Schema::Transaction => &TRANSACTION_MIGRATIONS,
            Schema::Wallet => &WALLET_MIGRATIONS,
            Schema::Ledger => &LEDGER_MIGRATIONS,
        }
    }

    /// Every table the runtime role may touch, with the privileges it gets
    /// on it: the statements the store runs, no more. (`SELECT ... FOR
    /// UPDATE` needs `UPDATE`; the ledger locks nothing.)
    pub fn grants(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Schema::Transaction => &[
                ("idempotency_keys", "SELECT, INSERT, UPDATE"),
                ("transfers", "SELECT, INSERT, UPDATE"),
                ("inbox", "SELECT, INSERT"),
                ("outbox", OUTBOX),
                MIGRATIONS_TABLE,
            ],
            Schema::Wallet => &[
                ("wallets", "SELECT, INSERT, UPDATE"),
                ("reservations", "SELECT, INSERT, UPDATE"),
                ("inbox", "SELECT, INSERT"),
                ("outbox", OUTBOX),
                MIGRATIONS_TABLE,
            ],
            Schema::Ledger => &[
                ("accounts", "SELECT, INSERT"),
                ("entries", "SELECT, INSERT"),
                ("outcomes", "SELECT, INSERT"),
                ("inbox", "SELECT, INSERT"),
                ("outbox", OUTBOX),
                MIGRATIONS_TABLE,
            ],
        }
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The two roles of one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Owns the schema's objects; the migrations run as it. Cannot log in.
    pub owner: String,
    /// The services' runtime role.
    pub app: String,
}

/// PostgreSQL's longest identifier, in bytes; a longer one is cut short
/// silently, so two names could become one.
const MAX_IDENTIFIER: usize = 63;

impl Roles {
    /// `<database>_owner` and `<database>_app`.
    pub fn of_database(database: &str) -> Result<Roles, SetupError> {
        let roles = Roles {
            owner: format!("{database}_owner"),
            app: format!("{database}_app"),
        };
        if roles.owner.len() > MAX_IDENTIFIER {
            return Err(SetupError::new(format!(
                "the database name {database:?} is too long for its role names \
                 (at most {} bytes)",
                MAX_IDENTIFIER - "_owner".len()
            )));
        }
        Ok(roles)
    }
}

/// Why a database could not be prepared or is not ready for this build.
#[derive(Debug)]
pub struct SetupError(String);

impl SetupError {
    fn new(message: impl Into<String>) -> SetupError {
        SetupError(message.into())
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

impl From<sqlx::Error> for SetupError {
    fn from(error: sqlx::Error) -> Self {
        SetupError(error.to_string())
    }
}

impl From<MigrateError> for SetupError {
    fn from(error: MigrateError) -> Self {
        SetupError(format!("applying the migrations: {error}"))
    }
}

/// An identifier quoted for SQL.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs one statement as it is (no parameters, not prepared).
async fn run(conn: &mut PgConnection, statement: &str) -> Result<(), SetupError> {
    conn.execute(statement).await?;
    Ok(())
}

/// The key of the advisory lock that makes preparations of one database
/// wait for each other (the migrator takes its own as well).
const PREPARE_LOCK: i64 = 0x7761_6c6c_6574_0001;

/// Prepares the database at `admin_url` for `schema` and returns its roles:
///
/// 1. creates the owner and runtime roles when missing (another
///    preparation creating them at the same moment is fine), and checks
///    that the runtime role holds no power beyond its grants (superuser,
///    `CREATEROLE`, `CREATEDB`, `BYPASSRLS`, replication, membership of the
///    owner role);
/// 2. hands the schema's objects made before the roles existed to the
///    owner, and lets the owner (only) create objects in `public`;
/// 3. applies the migrations as the owner;
/// 4. revokes everything from the runtime role on the schema's tables and
///    grants it [`Schema::grants`], so a privilege a former build needed
///    does not linger.
///
/// `admin_url` names the database and a role that may create roles and
/// act as the owner: a superuser, or a role with `CREATEROLE` (it makes
/// itself a member of the owner role). Running it again changes nothing;
/// preparations of one database wait for each other. Passwords are left
/// alone: give the runtime role one (`ALTER ROLE ... PASSWORD`) or another
/// way to log in.
pub async fn prepare(admin_url: &str, schema: Schema) -> Result<Roles, SetupError> {
    let options = PgConnectOptions::from_str(admin_url)?;
    let database = options
        .get_database()
        .ok_or_else(|| SetupError::new("the database URL names no database"))?
        .to_owned();
    let roles = Roles::of_database(&database)?;
    let mut conn = options.connect().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PREPARE_LOCK)
        .execute(&mut conn)
        .await?;
    let prepared = prepare_locked(&mut conn, &database, &roles, schema).await;
    // Closing the session releases the lock, whatever the outcome.
    let _ = conn.close().await;
    prepared.map(|()| roles)
}

async fn prepare_locked(
    conn: &mut PgConnection,
    database: &str,
    roles: &Roles,
    schema: Schema,
) -> Result<(), SetupError> {
    let (owner, app) = (ident(&roles.owner), ident(&roles.app));
    create_role(conn, &roles.owner, "NOLOGIN").await?;
    create_role(conn, &roles.app, "LOGIN").await?;
    check_runtime_role(conn, roles).await?;
    let member: bool = sqlx::query_scalar("SELECT pg_has_role(current_user, $1, 'MEMBER')")
        .bind(&roles.owner)
        .fetch_one(&mut *conn)
        .await?;
    if !member {
        run(conn, &format!("GRANT {owner} TO CURRENT_USER")).await?;
    }
    let db = ident(database);
    for statement in [
        // Before PostgreSQL 15 every role could create objects in `public`.
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
        format!("REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC"),
        format!("GRANT CONNECT ON DATABASE {db} TO {app}"),
        format!("GRANT USAGE, CREATE ON SCHEMA public TO {owner}"),
        format!("GRANT USAGE ON SCHEMA public TO {app}"),
    ] {
        run(conn, &statement).await?;
    }
    hand_to_owner(conn, roles).await?;
    run(conn, &format!("SET ROLE {owner}")).await?;
    schema.migrator().run(&mut *conn).await?;
    let mut grants = vec![
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {app}"),
        format!("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {app}"),
    ];
    for (table, privileges) in schema.grants() {
        grants.push(format!("GRANT {privileges} ON {} TO {app}", ident(table)));
    }
    let mut tx = conn.begin().await?;
    for statement in grants {
        run(&mut tx, &statement).await?;
    }
    tx.commit().await?;
    run(conn, "RESET ROLE").await?;
    Ok(())
}

/// Creates `role` with `login` (`LOGIN` or `NOLOGIN`) unless it exists. Roles
/// belong to the whole server, so another preparation may create the same
/// one at the same moment: its duplicate is not an error.
async fn create_role(conn: &mut PgConnection, role: &str, login: &str) -> Result<(), SetupError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    if exists {
        return Ok(());
    }
    let create = format!(
        "DO $$ BEGIN CREATE ROLE {} {login}; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        ident(role)
    );
    run(conn, &create).await
}

/// Refuses a runtime role with powers its grants do not bound.
async fn check_runtime_role(conn: &mut PgConnection, roles: &Roles) -> Result<(), SetupError> {
    let (superuser, createrole, createdb, bypassrls, replication, owns): (
        bool,
        bool,
        bool,
        bool,
        bool,
        bool,
    ) = sqlx::query_as(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication,
                pg_has_role(rolname, $2, 'MEMBER')
           FROM pg_roles WHERE rolname = $1",
    )
    .bind(&roles.app)
    .bind(&roles.owner)
    .fetch_one(&mut *conn)
    .await?;
    let powers: Vec<&str> = [
        (superuser, "SUPERUSER"),
        (createrole, "CREATEROLE"),
        (createdb, "CREATEDB"),
        (bypassrls, "BYPASSRLS"),
        (replication, "REPLICATION"),
        (owns, "membership of the owner role"),
    ]
    .into_iter()
    .filter_map(|(has, power)| has.then_some(power))
    .collect();
    if powers.is_empty() {
        return Ok(());
    }
    Err(SetupError::new(format!(
        "the runtime role {} has {}: it must hold only its grants; take {} away \
         (ALTER ROLE, REVOKE) and run again",
        roles.app,
        powers.join(", "),
        if powers.len() == 1 { "it" } else { "them" },
    )))
}

/// Gives the owner role the tables, views and functions of `public` that
/// another role owns: those a former build's migrations made as whoever
/// ran them. (A table's sequences and indexes follow it.)
async fn hand_to_owner(conn: &mut PgConnection, roles: &Roles) -> Result<(), SetupError> {
    let objects: Vec<String> = sqlx::query_scalar(
        "SELECT format('ALTER TABLE %I OWNER TO %I', c.relname, $1::text)
           FROM pg_class c
          WHERE c.relnamespace = 'public'::regnamespace
            AND c.relkind IN ('r', 'p', 'v', 'm')
            AND pg_get_userbyid(c.relowner) <> $1
         UNION ALL
         SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, $1::text)
           FROM pg_proc p
          WHERE p.pronamespace = 'public'::regnamespace
            AND pg_get_userbyid(p.proowner) <> $1",
    )
    .bind(&roles.owner)
    .fetch_all(&mut *conn)
    .await?;
    for statement in objects {
        run(conn, &statement).await?;
    }
    Ok(())
}

/// Checks, as a service starts, that every migration of this build has
/// been applied to the database behind `pool` (a newer build's further
/// migrations are fine: a rolling upgrade migrates before the last old
/// instance stops). The error says what is missing and what to run.
pub async fn check_schema(pool: &PgPool, schema: Schema) -> Result<(), SetupError> {
    let applied: Vec<(i64, Vec<u8>)> =
        match sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(applied) => applied,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                return Err(SetupError::new(format!(
                    "the {schema} database has no schema yet: run `walletctl migrate \
                 --{schema}-db <owner or admin URL>` first"
                )));
            }
            Err(e) => {
                return Err(SetupError::new(format!(
                    "reading the applied migrations: {e}"
                )));
            }
        };
    for migration in schema.migrator().iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        let version = migration.version;
        match applied.iter().find(|(v, _)| *v == version) {
            None => {
                return Err(SetupError::new(format!(
                    "the {schema} database lacks migration {version} ({}): run \
                     `walletctl migrate --{schema}-db <owner or admin URL>` before \
                     starting this build",
                    migration.description
                )));
            }
            Some((_, checksum)) if checksum[..] != migration.checksum[..] => {
                return Err(SetupError::new(format!(
                    "migration {version} ({}) of the {schema} database differs from this \
                     build's: the database was migrated by another build",
                    migration.description
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Why the role behind `pool` is not bounded by the runtime role's grants,
/// if it is not: it is a superuser, or it owns the schema's tables (it
/// may then change or drop them, and disable the ledger's triggers). A
/// service logs this as a warning: it runs, but without its first line of
/// defence.
pub async fn unbounded_role(pool: &PgPool) -> Result<Option<String>, SetupError> {
    let (user, superuser, owns): (String, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, r.rolsuper,
                EXISTS (SELECT 1 FROM pg_class c
                         WHERE c.relnamespace = 'public'::regnamespace
                           AND c.relkind = 'r'
                           AND pg_has_role(current_user, c.relowner, 'USAGE'))
           FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    Ok(match (superuser, owns) {
        (true, _) => Some(format!("connected as {user}, a superuser")),
        (false, true) => Some(format!("connected as {user}, which owns the schema")),
        (false, false) => None,
    }
    .map(|why| {
        format!(
            "{why}: the runtime role's grants do not bound this service; connect as \
             the database's runtime role (<database>_app, made by walletctl migrate)"
        )
    }))
}
