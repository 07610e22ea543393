//! TLS to PostgreSQL, on servers of the test's own: `sslmode=verify-full`
//! with the authority that signed the server's certificate connects over
//! TLS; another authority, a missing certificate file, and `require`
//! against a server without TLS each stop a service at its start with a
//! message naming the problem.

use wallet_core_postgres::PgSettings;
use wallet_e2e::start_refused;
use wallet_e2e::tls::{Ca, Postgres};

/// What a wallet service needs to get as far as its database.
fn wallet_service_env(database_url: String) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url),
        // Never reached: the database comes first.
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1".to_owned()),
        ("LISTEN", "127.0.0.1:0".to_owned()),
        ("INTERNAL_TOKEN", "postgres-tls-test".to_owned()),
    ]
}

#[tokio::test]
async fn verify_full_connects_over_tls_with_the_servers_authority_only() {
    let ca = Ca::new("postgres");
    let server = Postgres::start(Some(&ca.issue("postgres")));
    let trusted = format!("sslmode=verify-full&sslrootcert={}", ca.cert_file.display());

    let pool = PgSettings::default()
        .connect(&server.url(&trusted))
        .await
        .expect("verify-full with the server's authority connects");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl, "the session is not encrypted");
    pool.close().await;

    let other = Ca::new("other");
    let untrusted = format!(
        "sslmode=verify-full&sslrootcert={}",
        other.cert_file.display()
    );
    let error = PgSettings::default()
        .connect(&server.url(&untrusted))
        .await
        .expect_err("a certificate of another authority is refused")
        .to_string();
    assert!(
        error.contains("invalid peer certificate") && error.contains("sslmode=verify-full"),
        "{error}"
    );

    let stderr = start_refused(
        "wallet-service",
        &wallet_service_env(server.url(&untrusted)),
    );
    assert!(stderr.contains("connecting to the database"), "{stderr}");
    assert!(stderr.contains("invalid peer certificate"), "{stderr}");
    assert!(
        stderr.contains(&other.cert_file.display().to_string()),
        "{stderr}"
    );

    let missing = ca.cert_file.with_file_name("missing.pem");
    let missing_query = format!("sslmode=verify-full&sslrootcert={}", missing.display());
    let stderr = start_refused(
        "wallet-service",
        &wallet_service_env(server.url(&missing_query)),
    );
    assert!(
        stderr.contains(&format!("sslrootcert {}", missing.display())),
        "{stderr}"
    );
}

#[tokio::test]
async fn require_refuses_a_server_without_tls() {
    let server = Postgres::start(None);
    // The server answers without TLS.
    let pool = PgSettings::default()
        .connect(&server.url("sslmode=disable"))
        .await
        .expect("the server answers without TLS");
    pool.close().await;

    let error = PgSettings::default()
        .connect(&server.url("sslmode=require"))
        .await
        .expect_err("require needs TLS")
        .to_string();
    assert!(
        error.contains("server does not support TLS") && error.contains("sslmode=require"),
        "{error}"
    );
    let stderr = start_refused(
        "wallet-service",
        &wallet_service_env(server.url("sslmode=require")),
    );
    assert!(stderr.contains("server does not support TLS"), "{stderr}");
}
