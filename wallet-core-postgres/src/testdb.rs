//! Fresh databases for tests and benchmarks, on the server named by
//! `WALLET_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`).
//!
//! Each [`TestDatabase::create`] makes a new database named
//! `wcpg_test_<unix seconds>_<random>`, so tests run in parallel without
//! sharing rows. Databases live on after the test (a store may outlive the
//! fixture that made it); the first creation in a process drops test
//! databases older than [`STALE_AFTER`], and [`drop_test_databases`] drops
//! them on demand. A missing server is a failure, never a skip: every
//! function returns it as a [`TestDbError`] saying what to do, for the test
//! to fail with (`.expect(...)`, `?`); nothing here panics.
//!
//! [`TestDatabase::prepare`] gives a database its owner and runtime roles
//! (`<name>_owner`, `<name>_app`), as `walletctl migrate` does. Roles
//! belong to the whole server, but their names are the database's, so
//! tests running in parallel never share one; they are dropped with their
//! database.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use crate::{Schema, SetupError};

/// The variable naming the test server.
pub const URL_VAR: &str = "WALLET_TEST_DATABASE_URL";
/// The server used when [`URL_VAR`] is not set.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The prefix of every test database's name.
pub const PREFIX: &str = "wcpg_test_";
/// Test databases older than this are dropped when a process creates its
/// first one: no test runs that long.
pub const STALE_AFTER: Duration = Duration::from_secs(60 * 60);

static CLEANED: AtomicBool = AtomicBool::new(false);

/// The test server's URL: [`URL_VAR`], or [`DEFAULT_URL`].
pub fn server_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Why a test database could not be made or prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestDbError {
    /// [`URL_VAR`] does not hold a PostgreSQL URL.
    #[error("{URL_VAR}={url} is not a PostgreSQL URL: {source}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why it does not parse.
        source: sqlx::Error,
    },
    /// No server answers at the URL.
    #[error(
        "no PostgreSQL answers at {url} ({source}); start it (scripts/lib/postgres.sh) \
         or set {URL_VAR}"
    )]
    Unreachable {
        /// The server's URL.
        url: String,
        /// The connection's failure.
        source: sqlx::Error,
    },
    /// A statement on the server failed.
    #[error("{doing}: {source}")]
    Statement {
        /// What it was doing, with the database or role it concerned.
        doing: String,
        /// The server's answer.
        source: sqlx::Error,
    },
    /// The database could not be given its roles and schema.
    #[error("preparing test database {name}: {source}")]
    Prepare {
        /// The database.
        name: String,
        /// Why.
        source: SetupError,
    },
}

/// A database made for one test.
#[derive(Debug, Clone)]
pub struct TestDatabase {
    name: String,
    url: String,
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The options of the server at `url`.
fn options_of(url: &str) -> Result<PgConnectOptions, TestDbError> {
    PgConnectOptions::from_str(url).map_err(|source| TestDbError::BadUrl {
        url: url.to_owned(),
        source,
    })
}

async fn connect_server(server: &str) -> Result<PgConnection, TestDbError> {
    options_of(server)?
        .connect()
        .await
        .map_err(|source| TestDbError::Unreachable {
            url: server.to_owned(),
            source,
        })
}

impl TestDatabase {
    /// Creates an empty database on the test server; when the server does
    /// not answer, the error says what to do.
    pub async fn create() -> Result<TestDatabase, TestDbError> {
        let server = server_url();
        let options = options_of(&server)?;
        let mut conn = connect_server(&server).await?;
        if !CLEANED.swap(true, Ordering::SeqCst)
            && let Err(error) = drop_stale(&mut conn, STALE_AFTER).await
        {
            tracing::warn!(%error, "dropping stale test databases failed");
        }
        let name = format!(
            "{PREFIX}{}_{}",
            now_seconds(),
            uuid::Uuid::new_v4().simple()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(|source| TestDbError::Statement {
                doing: format!("creating test database {name}"),
                source,
            })?;
        let _ = conn.close().await;
        let url = options.database(&name).to_url_lossy().to_string();
        Ok(TestDatabase { name, url })
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Prepares it for `schema` as `walletctl migrate` does
    /// ([`crate::prepare`]: roles, migrations as the owner, the runtime
    /// role's grants), gives the runtime role a random password, and
    /// returns that role's URL: what a service connects with.
    pub async fn prepare(&self, schema: Schema) -> Result<String, TestDbError> {
        let roles =
            crate::prepare(&self.url, schema)
                .await
                .map_err(|source| TestDbError::Prepare {
                    name: self.name.clone(),
                    source,
                })?;
        let password = uuid::Uuid::new_v4().simple().to_string();
        let mut conn = connect_server(&self.url).await?;
        // Both names are this module's (letters, digits, underscores).
        sqlx::query(&format!(
            "ALTER ROLE {} LOGIN PASSWORD '{password}'",
            roles.app
        ))
        .execute(&mut conn)
        .await
        .map_err(|source| TestDbError::Statement {
            doing: format!("setting the password of {}", roles.app),
            source,
        })?;
        let _ = conn.close().await;
        Ok(options_of(&self.url)?
            .username(&roles.app)
            .password(&password)
            .to_url_lossy()
            .to_string())
    }

    /// Drops it now, ending the connections still open on it, and its
    /// roles.
    pub async fn drop_now(self) -> Result<(), sqlx::Error> {
        let mut conn = PgConnectOptions::from_str(&server_url())?.connect().await?;
        drop_database(&mut conn, &self.name).await
    }
}

/// Drops the test database `name` (one this module made) and its roles.
async fn drop_database(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("DROP ROLE IF EXISTS {name}_app, {name}_owner"))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn drop_stale(conn: &mut PgConnection, older_than: Duration) -> Result<u64, sqlx::Error> {
    // The databases, and the roles of any whose database is gone already.
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1)
         UNION SELECT regexp_replace(rolname, '_(owner|app)$', '') FROM pg_roles
          WHERE starts_with(rolname, $1)",
    )
    .bind(PREFIX)
    .fetch_all(&mut *conn)
    .await?;
    let cutoff = now_seconds().saturating_sub(older_than.as_secs());
    let mut dropped = 0;
    for name in names {
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        // Only names this module made, checked character by character, are
        // put in the statement.
        let ours = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if ours && created.is_some_and(|c| c <= cutoff) {
            drop_database(conn, &name).await?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Drops the test databases on the server at `server` created more than
/// `older_than` ago (`Duration::ZERO`: all of them, connections ended);
/// returns how many.
pub async fn drop_test_databases(server: &str, older_than: Duration) -> Result<u64, sqlx::Error> {
    let mut conn = PgConnectOptions::from_str(server)?.connect().await?;
    drop_stale(&mut conn, older_than).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_server_that_does_not_answer_is_an_error_saying_what_to_do() {
        // Port 1 on loopback: nothing listens there.
        let url = "postgres://postgres@127.0.0.1:1/postgres";
        let error = connect_server(url).await.expect_err("nothing answers");
        assert!(
            matches!(error, TestDbError::Unreachable { .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains(url) && text.contains(URL_VAR), "{text}");
    }

    #[test]
    fn a_url_that_does_not_parse_is_an_error() {
        let error = options_of("postgres://127.0.0.1:port/postgres").expect_err("no port");
        assert!(matches!(error, TestDbError::BadUrl { .. }), "{error:?}");
    }
}
