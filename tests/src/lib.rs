//! Helpers of the workspace-level end-to-end tests: finding and starting the
//! reference binaries as real processes.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The path of a workspace binary built next to the running test, e.g.
/// `target/debug/walletctl`. `./scripts/test` builds every binary before the
/// tests run; a missing one is reported with the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test runs from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (./scripts/test does)",
        path.display()
    );
    path
}

/// A child process that is killed when dropped, so a failing test leaves no
/// server behind.
pub struct Server {
    child: Child,
    /// The base URL it announced, e.g. `http://127.0.0.1:40123`.
    pub url: String,
}

impl Server {
    /// Starts `walletctl dev` on a free loopback port and waits for it to
    /// announce its address on stdout.
    pub fn walletctl_dev() -> Server {
        let mut child = Command::new(binary("walletctl"))
            .args(["dev", "--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("walletctl starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("walletctl prints its address");
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http://127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
