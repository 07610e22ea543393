//! `walletctl dead-letters` refuses bad input with a clear error before it
//! reaches for the broker (none runs at the address given).

mod common;

use common::walletctl;

/// Runs `dead-letters` with `args` against a closed port; it must fail,
/// saying `expected`.
fn refused(args: &[&str], expected: &str) {
    let mut all = vec!["dead-letters"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--brokers", "127.0.0.1:1"]);
    common::refused(&all, expected);
}

#[test]
fn bad_input_gets_a_clear_error() {
    refused(
        &["list", "--group", "billing-service"],
        "invalid value 'billing-service' for '--group <GROUP>'",
    );
    refused(
        &["list", "--group", "billing-service"],
        "[possible values: ledger-service, wallet-service, transaction-service]",
    );
    refused(
        &["show", "--group", "wallet-service", "3"],
        "expected PARTITION:OFFSET, such as 0:12, not \"3\"",
    );
    refused(
        &["show", "--group", "wallet-service", "--event-id", "nope"],
        "invalid value 'nope' for '--event-id <EVENT_ID>'",
    );
    refused(
        &["show", "--group", "wallet-service"],
        "the following required arguments were not provided",
    );
    refused(
        &["replay", "--group", "wallet-service"],
        "the following required arguments were not provided",
    );
    refused(
        &["replay", "--group", "wallet-service", "--offset", "0:x"],
        "expected PARTITION:OFFSET, such as 0:12, not \"0:x\"",
    );
    refused(
        &["replay", "--group", "wallet-service", "--from", "0:1"],
        "--to <TO>",
    );
    refused(
        &[
            "replay",
            "--group",
            "wallet-service",
            "--all",
            "--offset",
            "0:1",
        ],
        "cannot be used with",
    );
    refused(
        &[
            "replay",
            "--group",
            "wallet-service",
            "--from",
            "0:1",
            "--to",
            "1:4",
        ],
        "--from 0:1 and --to 1:4 must name one partition",
    );
    refused(
        &[
            "replay",
            "--group",
            "wallet-service",
            "--from",
            "0:9",
            "--to",
            "0:4",
        ],
        "--from 0:9 comes after --to 0:4",
    );
    refused(
        &["parked", "--group", "ledger"],
        "invalid value 'ledger' for '--group <GROUP>'",
    );
    let output = walletctl(&["dead-letters", "list", "--group", "wallet-service"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("--brokers <BROKERS>"),
        "no broker named: {stderr}"
    );
}
