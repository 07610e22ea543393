//! What the command-line tests share: `walletctl` run as a process, with
//! none of the broker settings of the environment, and the check that it
//! refuses an input with a clear error.

use std::process::{Command, Output};

/// Runs `walletctl` with `args`, taking no broker setting from the
/// environment.
pub fn walletctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walletctl"))
        .args(args)
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .env_remove("KAFKA_FETCH_WAIT_MS")
        .env_remove("KAFKA_PROPERTIES")
        .output()
        .expect("running walletctl")
}

/// Runs `walletctl` with `args`; it must fail, saying `expected`.
pub fn refused(args: &[&str], expected: &str) {
    let output = walletctl(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(stderr.contains(expected), "{args:?}: {stderr}");
}
