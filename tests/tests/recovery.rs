//! The backup and recovery drill of docs/operations.md ("Backup and
//! recovery"), on the real stack ([`Stack`](wallet_e2e::stack::Stack)):
//! under a stream of transfers the wallet database is dumped with
//! `pg_dump`, the stream goes on (the wallet service reserves, and applies
//! the ledger's outcomes, past the dump), then the wallet service is
//! stopped, the database restored from the dump, and the documented steps
//! run as an operator runs them: `walletctl migrate`, `walletctl
//! reservations restore`, `walletctl offsets reset`, the service started
//! again. Once quiet, every accepted transfer is terminal, nothing stays
//! reserved, nothing was dead-lettered, and `walletctl audit` is clean.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection;
use wallet_e2e::stack::{LEDGER, Stack, Stream, TRANSACTION, WALLET};
use wallet_e2e::{TempDir, binary};

/// Runs `program` with `args`; it must succeed.
fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `walletctl ... --json` and reads its JSON answer; it must succeed.
fn walletctl_json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let output = run(binary("walletctl").to_str().expect("a path"), &args);
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "walletctl {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// `url` as libpq's tools take it: without the parameters only sqlx
/// knows (the test databases' URLs carry `statement-cache-capacity`).
fn libpq(url: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let kept: Vec<&str> = query.split('&').filter(|p| p.starts_with("ssl")).collect();
    if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// `url` with its database replaced by `postgres`, the maintenance
/// database an operator connects to while restoring.
fn maintenance(url: &str) -> String {
    let url = libpq(url);
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let (server, _) = base.rsplit_once('/').expect("a database URL");
    match query {
        "" => format!("{server}/postgres"),
        query => format!("{server}/postgres?{query}"),
    }
}

/// Rows of `table` in the database at `url`.
async fn count(url: &str, table: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wallet_database_restored_from_a_dump_taken_mid_stream_recovers_clean() {
    let mut stack = Stack::start(1).await;
    let wallets = stack.funded_wallets(4, "1000.00").await;
    let wallet_db = stack.database_url(WALLET).to_owned();
    let brokers = stack.bootstrap();
    let dir = TempDir::new("recovery");
    let dump = dir.path().join("wallet.dump");
    let dump = dump.to_str().expect("a path");
    let stream = Stream::start(&stack, &wallets, "drill");
    let pause = |seconds: u64| tokio::time::sleep(Duration::from_secs(seconds));

    // The backup, mid-stream, as a nightly job takes it.
    pause(3).await;
    run(
        "pg_dump",
        &["--format=custom", "--file", dump, &libpq(&wallet_db)],
    );
    let in_dump = count(&wallet_db, "reservations").await;
    // The stream goes on past it: reserves, and outcomes applied.
    pause(5).await;

    // 1. Stop the wallet service.
    stack.services[WALLET][0]
        .process
        .terminate(Duration::from_secs(30));
    let before_restore = (
        count(&wallet_db, "reservations").await,
        count(&wallet_db, "inbox").await,
    );

    // 2. Restore the dump in place of the database.
    restore(dump, &wallet_db);
    let after_restore = (
        count(&wallet_db, "reservations").await,
        count(&wallet_db, "inbox").await,
    );
    assert!(
        after_restore.0 < before_restore.0 && after_restore.1 < before_restore.1,
        "the restore lost reservations and inbox rows: {before_restore:?} before, \
         {after_restore:?} after (the dump held {in_dump} reservations)"
    );

    // 3. Its roles, migrations and grants, as at a deploy.
    run(
        binary("walletctl").to_str().unwrap(),
        &["migrate", "--wallet-db", &wallet_db],
    );

    // 4. The reservations the restore lost, made again.
    let restored = walletctl_json(&[
        "reservations",
        "restore",
        "--transaction-db",
        stack.database_url(TRANSACTION),
        "--wallet-db",
        &wallet_db,
        "--ledger-db",
        stack.database_url(LEDGER),
    ]);
    let made = restored["restored"].as_array().expect("restored").len();
    assert!(made > 0, "nothing to restore: {restored}");
    assert_eq!(restored["deferred"], serde_json::json!([]), "{restored}");

    // 5. The wallet service's group rewound on ledger.events.
    let reset = walletctl_json(&[
        "offsets",
        "reset",
        "--group",
        "wallet-service",
        "--to-earliest",
        "--brokers",
        &brokers,
    ]);
    let partitions = reset.as_array().expect("partitions");
    assert!(!partitions.is_empty(), "{reset}");
    assert!(
        partitions
            .iter()
            .all(|p| p["after"].as_i64() <= p["before"].as_i64()),
        "moved back: {reset}"
    );

    // 6. The wallet service started again; the stream stops a moment later.
    stack.services[WALLET][0].restart();
    pause(3).await;
    let accepted = stream.stop().await;
    println!(
        "{made} reservations made again, offsets {reset}\n{}",
        stack
            .assert_consistent(&accepted, &wallets, Duration::from_secs(90))
            .await
    );
    let letters = walletctl_json(&[
        "dead-letters",
        "list",
        "--group",
        "wallet-service",
        "--brokers",
        &brokers,
    ]);
    assert_eq!(letters, serde_json::json!([]), "nothing refused");
    stack.stop();
}

/// Step 2 as docs/operations.md says it: the database dropped and made
/// again from the dump (`pg_restore --clean --create`, through the
/// maintenance database).
fn restore(dump: &str, url: &str) {
    assert!(Path::new(dump).exists(), "{dump}");
    run(
        "pg_restore",
        &[
            "--clean",
            "--if-exists",
            "--create",
            "--exit-on-error",
            "--dbname",
            &maintenance(url),
            dump,
        ],
    );
}
