//! `walletctl bench` as a real process: over HTTP against a started
//! `walletctl dev`, and embedded. Asserts the report's counts, never its
//! timings.

use std::process::Command;

use serde_json::Value;
use wallet_e2e::{Server, binary};

fn bench(args: &[&str]) -> Value {
    let out = Command::new(binary("walletctl"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("walletctl runs");
    assert!(
        out.status.success(),
        "walletctl bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json prints one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a count: {report}"))
}

fn ms(report: &Value, stats: &str, field: &str) -> f64 {
    report[stats][field]
        .as_f64()
        .unwrap_or_else(|| panic!("{stats}.{field} is a number: {report}"))
}

#[test]
fn bench_over_http_accounts_for_every_transfer() {
    let server = Server::walletctl_dev();
    let report = bench(&[
        "--url",
        &server.url,
        "--wallets",
        "5",
        "--transfers",
        "200",
        "--concurrency",
        "8",
    ]);

    assert_eq!(report["mode"], "http", "{report}");
    assert_eq!(report["target"].as_str(), Some(server.url.as_str()));
    assert_eq!(count(&report, "wallets"), 5);
    assert_eq!(count(&report, "attempted"), 200, "{report}");
    let failures: u64 = report["failures"]
        .as_object()
        .expect("failures is a map")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum();
    assert_eq!(count(&report, "rejected"), failures);
    let accepted = count(&report, "accepted");
    assert_eq!(accepted + failures, 200, "{report}");
    // Each wallet is funded for every transfer: none is refused.
    assert_eq!(accepted, 200, "{report}");
    assert_eq!(count(&report, "completed"), accepted, "{report}");
    assert_eq!(count(&report, "not_completed"), 0);
    assert_eq!(count(&report, "succeeded"), accepted, "{report}");

    for stats in ["api_latency_ms", "time_to_terminal_ms"] {
        let (p50, p95, p99, max) = (
            ms(&report, stats, "p50"),
            ms(&report, stats, "p95"),
            ms(&report, stats, "p99"),
            ms(&report, stats, "max"),
        );
        assert!(
            0.0 <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max,
            "{stats}: {report}"
        );
    }
    assert_eq!(count(&report["api_latency_ms"], "count"), 200);
    assert_eq!(count(&report["time_to_terminal_ms"], "count"), accepted);
    assert!(count(&report["poll_lag_ms"], "count") <= accepted);
    assert_eq!(count(&report, "pollers"), 32, "4 x the concurrency");
    // Terminal comes after the answer, for the same requests.
    assert!(ms(&report, "time_to_terminal_ms", "max") >= ms(&report, "api_latency_ms", "p50"));
    assert!(report["accepted_per_s"].as_f64().expect("a rate") > 0.0);
}

#[test]
fn bench_over_http_reports_refusals_by_reason() {
    let server = Server::walletctl_dev();
    // Each wallet is funded for one transfer only: most are refused.
    let report = bench(&[
        "--url",
        &server.url,
        "--wallets",
        "3",
        "--transfers",
        "60",
        "--concurrency",
        "4",
        "--fund",
        "1.00",
        "--hot",
        "2",
    ]);
    assert_eq!(count(&report, "attempted"), 60, "{report}");
    let refused = report["failures"]["insufficient_funds"]
        .as_u64()
        .unwrap_or(0);
    assert!(refused > 0, "{report}");
    assert_eq!(
        count(&report, "accepted") + count(&report, "rejected"),
        60,
        "{report}"
    );
    assert_eq!(count(&report, "completed"), count(&report, "accepted"));
}

#[test]
fn bench_paced_by_rate_sends_no_faster() {
    let server = Server::walletctl_dev();
    // 40 operations at 100 per second: the last one is not sent before
    // 0.39 s into the run, however fast the server answers.
    let args = ["--url", &server.url, "--wallets", "4", "--transfers", "40"];
    let report = bench(&[&args[..], &["--concurrency", "4", "--rate", "100"]].concat());
    assert_eq!(report["rate"].as_f64(), Some(100.0), "{report}");
    assert_eq!(count(&report, "accepted"), 40, "{report}");
    assert_eq!(count(&report, "completed"), 40, "{report}");
    let send_time = report["send_time_s"].as_f64().expect("a time");
    assert!(send_time >= 0.39, "paced: {report}");
    let unpaced = bench(&args);
    assert_eq!(unpaced["rate"], Value::Null, "{unpaced}");

    for bad in ["0", "-5", "fast"] {
        let out = Command::new(binary("walletctl"))
            .args(["bench", "--url", &server.url, "--rate", bad])
            .output()
            .expect("walletctl runs");
        assert!(!out.status.success(), "--rate {bad} is refused");
    }
}

#[test]
fn bench_refuses_a_target_off_this_machine() {
    let out = Command::new(binary("walletctl"))
        .args([
            "bench",
            "--url",
            "http://192.0.2.1:8080",
            "--transfers",
            "1",
        ])
        .output()
        .expect("walletctl runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn bench_embedded_completes_every_accepted_transfer() {
    let report = bench(&["--embedded", "--transfers", "2000"]);
    assert_eq!(report["mode"], "embedded", "{report}");
    assert_eq!(count(&report, "attempted"), 2000, "{report}");
    let accepted = count(&report, "accepted");
    assert!(accepted > 0, "{report}");
    assert_eq!(count(&report, "completed"), accepted, "{report}");
    assert_eq!(accepted + count(&report, "rejected"), 2000);
    assert!(ms(&report, "time_to_terminal_ms", "p99") >= ms(&report, "time_to_terminal_ms", "p50"));

    let mixed = bench(&[
        "--embedded",
        "--transfers",
        "500",
        "--wallets",
        "10",
        "--hot",
        "3",
        "--mix",
        "--batch",
        "64",
    ]);
    assert_eq!(mixed["mix"].as_f64(), Some(0.1), "{mixed}");
    assert_eq!(mixed["hot"].as_u64(), Some(3));
    assert_eq!(count(&mixed, "completed"), count(&mixed, "accepted"));
    assert_eq!(count(&mixed, "accepted") + count(&mixed, "rejected"), 500);
}
