//! The API fuzzer, Schemathesis, against docs/openapi.json: every check
//! (`--checks all`), every phase (examples, coverage, fuzzing, and the
//! stateful phase, which follows the document's links from a created
//! wallet to its deposits, withdrawals and transfers, and from a created
//! transfer to its reading), a fixed seed and a bounded number of examples
//! per operation. Once against `walletctl dev`, once against the whole
//! system behind the gateway ([`Stack`]), after which every transfer the
//! fuzzer made is terminal, no wallet keeps a reservation and `walletctl
//! audit` finds the three databases consistent.
//!
//! `$WALLET_SCHEMATHESIS` is the `st` of Schemathesis 4.32.5
//! (`./scripts/test` installs it in a virtual environment and sets it);
//! without it the tests fail. `$WALLET_FUZZ_EXAMPLES` (default 25) and
//! `$WALLET_FUZZ_SEEDS` (comma-separated, default 7) make a longer run.
//! The settings beyond the command line are in tests/fuzz/.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sqlx::Connection;
use wallet_e2e::Server;
use wallet_e2e::stack::{Stack, TRANSACTION, WALLET, call};

/// The version the settings and the hooks are written for.
const VERSION: &str = "4.32.5";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schemathesis() -> PathBuf {
    let st = std::env::var_os("WALLET_SCHEMATHESIS").map(PathBuf::from);
    let st = st.unwrap_or_else(|| {
        panic!(
            "set WALLET_SCHEMATHESIS to the `st` of Schemathesis {VERSION} \
             (./scripts/test installs it: scripts/lib/schemathesis.sh)"
        )
    });
    let version = Command::new(&st)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", st.display()));
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.trim().ends_with(VERSION),
        "{} is {version}, not Schemathesis {VERSION}",
        st.display()
    );
    st
}

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
        Err(_) => default,
    }
}

/// Runs the fuzzer against `base` once per seed; panics with its report
/// on any failure.
fn fuzz(base: &str, what: &str) {
    let st = schemathesis();
    let examples: u32 = setting("WALLET_FUZZ_EXAMPLES", 25);
    let seeds = std::env::var("WALLET_FUZZ_SEEDS").unwrap_or_else(|_| "7".to_owned());
    let repo = repo();
    let work = wallet_e2e::TempDir::new("schemathesis");
    for seed in seeds.split(',').map(str::trim) {
        let seed: u64 = seed
            .parse()
            .unwrap_or_else(|_| panic!("WALLET_FUZZ_SEEDS: {seed:?} is not a number"));
        let started = std::time::Instant::now();
        let output = Command::new(&st)
            .arg("--config-file")
            .arg(repo.join("tests/fuzz/schemathesis.toml"))
            .arg("--no-color")
            .arg("run")
            .arg(repo.join("docs/openapi.json"))
            .args(["--url", base, "--checks", "all", "--workers", "1"])
            .args(["-n", &examples.to_string(), "--seed", &seed.to_string()])
            .env("SCHEMATHESIS_HOOKS", repo.join("tests/fuzz/hooks.py"))
            .current_dir(work.path())
            .output()
            .unwrap_or_else(|e| panic!("{} runs: {e}", st.display()));
        let report = String::from_utf8_lossy(&output.stdout);
        let errors = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "Schemathesis against {what} (seed {seed}, {examples} examples) failed:\n{report}\n{errors}"
        );
        for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
            assert!(
                report.contains(phase),
                "no {phase} phase against {what}:\n{report}"
            );
        }
        eprintln!(
            "Schemathesis against {what}, seed {seed}, {examples} examples: passed in {:.1} s\n{}",
            started.elapsed().as_secs_f64(),
            summary(&report)
        );
    }
}

/// The run's closing lines (test cases, failures, time), for the log.
fn summary(report: &str) -> String {
    let lines: Vec<&str> = report.lines().collect();
    let start = lines.len().saturating_sub(12);
    lines[start..].join("\n")
}

#[test]
fn the_fuzzer_finds_nothing_against_walletctl_dev() {
    let server = Server::walletctl_dev();
    fuzz(&server.url, "walletctl dev");
}

/// The ids of `table` in the database at `url`.
async fn ids(url: &str, table: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let query = format!("SELECT id::text FROM {table}");
    sqlx::query_scalar(&query)
        .fetch_all(&mut conn)
        .await
        .expect("read the ids")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fuzzer_finds_nothing_against_the_gateway_and_leaves_it_consistent() {
    let stack = Stack::start(1).await;
    let base = stack.base.clone();
    tokio::task::spawn_blocking(move || fuzz(&base, "the gateway"))
        .await
        .expect("the fuzzer's run");
    // The holds the fuzzer left held keep their funds by design: voided
    // through the gateway, so that the system is quiet.
    for hold in ids(
        stack.database_url(TRANSACTION),
        "transfers WHERE status = 'HELD'",
    )
    .await
    {
        let void = stack
            .http
            .post(format!("{}/v1/holds/{hold}/void", stack.base));
        let voided = call(void).await;
        assert_eq!(
            voided.as_ref().map(|(status, _)| *status),
            Some(200),
            "{voided:?}"
        );
    }
    let transfers = ids(stack.database_url(TRANSACTION), "transfers").await;
    let wallets = ids(stack.database_url(WALLET), "wallets").await;
    assert!(
        !transfers.is_empty() && !wallets.is_empty(),
        "the fuzzer made no transfer or no wallet: {} transfers, {} wallets",
        transfers.len(),
        wallets.len()
    );
    let report = stack
        .assert_consistent(&transfers, &wallets, Duration::from_secs(90))
        .await;
    eprintln!("{} wallets; {report}", wallets.len());
    stack.stop();
}
