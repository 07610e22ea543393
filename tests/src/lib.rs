//! Helpers of the workspace-level end-to-end tests: finding and starting the
//! reference binaries as real processes.

pub mod proxy;
pub mod stack;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        let mut command = Command::new(binary("walletctl"));
        command.args(["dev", "--listen", "127.0.0.1:0"]);
        let (child, url) = spawn_announcing(&mut command, "walletctl", "http://127.0.0.1:");
        Server { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `command` (logging at warn, stderr inherited) and reads the
/// address it announces as the last word of its first line on stdout,
/// which must start with `prefix`.
fn spawn_announcing(command: &mut Command, what: &str, prefix: &str) -> (Child, String) {
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} starts: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what} prints its address: {e}"));
    let url = line
        .trim()
        .rsplit(' ')
        .next()
        .filter(|u| u.starts_with(prefix))
        .unwrap_or_else(|| panic!("{what} did not start; its first line: {line:?}"))
        .to_owned();
    (child, url)
}

/// Starts service binary `name` with `env`, expecting it to refuse to
/// start: waits for it to exit (killing it and failing after 60 s if it
/// does not), checks that it failed, and returns what it wrote on stderr.
pub fn start_refused(name: &str, env: &[(&str, String)]) -> String {
    use std::io::Read;
    let mut child = Command::new(binary(name))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the service") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} was expected to refuse to start, and still runs after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("reading its stderr");
    assert!(!status.success(), "{name} exited successfully: {stderr}");
    stderr
}

/// A free TCP port on 127.0.0.1 (free when asked; taken by the caller next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Waits until something accepts connections on `port`, or panics after
/// `seconds`.
pub fn wait_for_port(port: u16, seconds: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within {seconds}s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when dropped, with the directory it keeps its
/// files in, if any (a broker's data, nginx's configuration and logs),
/// removed after it unless a test fails.
pub struct Process {
    child: Child,
    _dir: Option<Arc<TempDir>>,
}

impl Process {
    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks it to stop (SIGTERM), as a deploy does, and waits for it; kills
    /// it if it is still up after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        self.ask_to_stop();
        self.wait_exit(grace);
        self.kill();
    }

    /// Sends it SIGTERM and goes on.
    pub fn ask_to_stop(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `within` for it to exit: how it exited, or `None` if it
    /// still runs.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => return None,
            }
        }
    }

    /// Kills it at once (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tansu broker of its own on a free loopback port, with SQLite storage
/// in a new temporary directory, and its address.
pub fn start_broker() -> (Process, String) {
    let port = free_port();
    let broker = start_broker_advertising(port, port, Arc::new(TempDir::new("broker")));
    (broker.process, format!("127.0.0.1:{port}"))
}

/// A broker process and where it listens.
pub struct Broker {
    /// The process (its directory holds the data).
    pub process: Process,
    /// Its loopback port.
    pub port: u16,
}

/// tansu on `port` with its SQLite data in `dir`: a new broker, or the same
/// one again after a kill; its storage indexed by `scripts/lib/tansu-index`.
/// It tells clients (in its metadata) to reach it at `advertised` on
/// 127.0.0.1: its own port, or for instance a proxy in front of `port`,
/// where every connection after the bootstrap then goes.
pub fn start_broker_advertising(port: u16, advertised: u16, dir: Arc<TempDir>) -> Broker {
    start_tansu(port, advertised, dir, &[])
}

/// The tansu binary: `$WALLET_TANSU_BIN` (`./scripts/test` sets it), or
/// `tansu` on the path.
pub fn tansu_bin() -> String {
    std::env::var("WALLET_TANSU_BIN").unwrap_or_else(|_| "tansu".to_owned())
}

/// As [`start_broker_advertising`], with `extra` arguments to `tansu
/// broker` (such as `--authentication`).
pub fn start_tansu(port: u16, advertised: u16, dir: Arc<TempDir>, extra: &[&str]) -> Broker {
    let tansu = tansu_bin();
    let child = Command::new(&tansu)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{advertised}"),
        ])
        .args(["--storage-engine", "sqlite://broker.db"])
        .args(extra)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start the broker {tansu} ({e}): set WALLET_TANSU_BIN (./scripts/test does)"
            )
        });
    wait_for_port(port, 30, "the broker");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/lib/tansu-index");
    let indexed = Command::new(&script)
        .arg(dir.path().join("broker.db"))
        .status()
        .unwrap_or_else(|e| panic!("{} runs (python3): {e}", script.display()));
    assert!(indexed.success(), "indexing the broker's storage failed");
    let process = Process {
        child,
        _dir: Some(dir),
    };
    Broker { process, port }
}

/// nginx with the repository's gateway configuration on a free loopback
/// port, in front of the instances of each service (`host:port` each).
pub fn start_gateway(
    transaction: &[String],
    wallet: &[String],
    ledger: &[String],
) -> (Process, String) {
    let deploy = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let limits = std::fs::read_to_string(deploy.join("limits.conf")).expect("deploy/limits.conf");
    start_gateway_limited(transaction, wallet, ledger, &limits)
}

/// [`start_gateway`] with `limits` as its `limits.conf` (the abuse limits
/// per client address) instead of deploy/limits.conf.
pub fn start_gateway_limited(
    transaction: &[String],
    wallet: &[String],
    ledger: &[String],
    limits: &str,
) -> (Process, String) {
    let temp = TempDir::new("gateway");
    let dir = temp.path();
    std::fs::create_dir_all(dir.join("tmp")).expect("nginx temp dir");
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx.conf");
    std::fs::copy(&config, dir.join("nginx.conf")).expect("copy deploy/nginx.conf");
    std::fs::write(dir.join("limits.conf"), limits).expect("limits.conf");
    let upstreams = [
        ("transaction", transaction),
        ("wallet", wallet),
        ("ledger", ledger),
    ]
    .iter()
    .map(|(name, addrs)| {
        let servers: String = addrs.iter().map(|a| format!("    server {a};\n")).collect();
        format!("upstream {name} {{\n{servers}    keepalive 8;\n}}\n")
    })
    .collect::<String>();
    std::fs::write(dir.join("upstreams.conf"), upstreams).expect("upstreams.conf");
    let port = free_port();
    std::fs::write(
        dir.join("listen.conf"),
        format!("listen 127.0.0.1:{port};\n"),
    )
    .expect("listen.conf");
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx starts (./scripts/test installs it)");
    let gateway = Process {
        child,
        _dir: Some(Arc::new(temp)),
    };
    wait_for_port(port, 10, "nginx");
    (gateway, format!("http://127.0.0.1:{port}"))
}

/// Starts service binary `name` with `env`, and waits for it to announce
/// its address on stdout (it listens where `LISTEN` says).
pub fn start_service(name: &str, env: &[(&str, String)]) -> (Process, String) {
    let mut command = Command::new(binary(name));
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let (child, url) = spawn_announcing(&mut command, name, "http://");
    (Process { child, _dir: None }, url)
}

/// A new directory under the system's temporary directory, removed when
/// dropped; kept, with its path printed, when dropped by a failing test
/// (while its thread panics), for a look at what the processes left.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// `wallet-e2e-<what>-<pid>-<nanos>` under the temporary directory.
    pub fn new(what: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("wallet-e2e-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir { path }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: kept {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("cannot remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TempDir;

    #[test]
    fn a_temporary_directory_is_removed_unless_its_test_fails() {
        let passed = TempDir::new("passed");
        let path = passed.path().to_owned();
        std::fs::write(path.join("file"), "x").unwrap();
        drop(passed);
        assert!(!path.exists(), "{} was left behind", path.display());

        let failed = std::thread::spawn(|| {
            let dir = TempDir::new("failed");
            std::fs::write(dir.path().join("log"), "what happened").unwrap();
            let path = dir.path().to_owned();
            std::panic::panic_any(path);
        })
        .join()
        .expect_err("the thread panics");
        let path = failed.downcast::<std::path::PathBuf>().unwrap();
        let kept = std::fs::read_to_string(path.join("log"));
        std::fs::remove_dir_all(&*path).unwrap();
        assert_eq!(kept.unwrap(), "what happened", "kept after a failure");
    }
}
