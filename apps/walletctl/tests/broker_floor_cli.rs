//! `walletctl broker-floor` refuses bad input with a clear error before it
//! reaches for the broker (none runs at the addresses given), and on a
//! real broker ($WALLET_TEST_KAFKA, as scripts/test starts one) reports
//! the latency of every record it timed.

mod common;

use common::walletctl;

/// Runs `broker-floor` with `args`; it must fail, saying `expected`.
fn refused(args: &[&str], expected: &str) {
    let mut all = vec!["broker-floor"];
    all.extend_from_slice(args);
    common::refused(&all, expected);
}

#[test]
fn bad_input_gets_a_clear_error() {
    refused(&[], "--brokers <BROKERS>");
    for elsewhere in [
        "10.1.2.3:9092",
        "kafka:9092",
        "127.0.0.1:1,192.168.0.9:9092",
    ] {
        refused(
            &["--brokers", elsewhere],
            "only measures brokers on loopback addresses (127.0.0.0/8, [::1], localhost), not",
        );
    }
    refused(
        &["--brokers", "127.0.0.1"],
        "expected host:port in --brokers, not \"127.0.0.1\"",
    );
    refused(&["--brokers", " , "], "--brokers names no broker");
    refused(
        &["--brokers", "127.0.0.1:1", "--records", "0"],
        "--records must be at least 1",
    );
    refused(
        &["--brokers", "127.0.0.1:1", "--records", "many"],
        "invalid value 'many' for '--records <RECORDS>'",
    );
    refused(
        &["--brokers", "127.0.0.1:1", "--fetch-wait-ms", "soon"],
        "invalid value 'soon' for '--fetch-wait-ms <FETCH_WAIT_MS>'",
    );
    refused(
        &[
            "--brokers",
            "127.0.0.1:1",
            "--kafka-property",
            "fetch.min.bytes",
        ],
        "expected key=value, got \"fetch.min.bytes\"",
    );
    refused(
        &["--brokers", "127.0.0.1:1", "--timeout-ms", "0"],
        "--timeout-ms must be at least 1",
    );
}

/// A few records through the test broker: every one is timed, and the
/// percentiles are in order.
#[test]
fn measures_a_real_broker() {
    let broker = std::env::var("WALLET_TEST_KAFKA").expect(
        "WALLET_TEST_KAFKA is not set: start a broker (source scripts/lib/broker.sh; \
         start_broker) and export its bootstrap servers",
    );
    let output = walletctl(&[
        "broker-floor",
        "--brokers",
        &broker,
        "--records",
        "5",
        "--fetch-wait-ms",
        "20",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["measure"], "broker_floor");
    assert_eq!(report["records"], 5);
    assert_eq!(report["fetch_wait_ms"], 20);
    let latency = &report["latency_ms"];
    assert_eq!(latency["count"], 5);
    let ms = |p: &str| {
        latency[p]
            .as_f64()
            .unwrap_or_else(|| panic!("{p}: {report}"))
    };
    assert!(ms("p50") > 0.0, "{report}");
    assert!(ms("p50") <= ms("p99") && ms("p99") <= ms("max"), "{report}");
}
