//! The broker stops and starts again mid-stream, on the same port and
//! SQLite file. The test runs its own tansu process (`WALLET_TANSU_BIN`,
//! else `tansu` on `PATH`), so the shared test broker is not disturbed.
//!
//! Events the wallet service reserves while the broker is down wait in its
//! outbox; the relay publishes them once it is back. The ledger's consumer
//! group resumes from its committed offsets: nothing is lost and nothing
//! committed is delivered again.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use wallet_core::contract::data::TestData;
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::memory::MemoryWalletStore;
use wallet_core::money::Currency;
use wallet_core::ports::{RandomIds, SystemClock, WalletStore};
use wallet_core::runtime::{
    ConsumerConfig, ConsumerRunner, Relay, RelayConfig, Route, dead_letter_topic,
};
use wallet_core::service::WalletService;
use wallet_core_kafka::{KafkaPublisher, KafkaSettings, KafkaSubscription, create_topics};

use common::{Counting, counts, decisions, ledger, settings, unique};

const PATIENCE: Duration = Duration::from_secs(90);

/// The tansu binary: `WALLET_TANSU_BIN`, else the first `tansu` on `PATH`.
fn tansu() -> PathBuf {
    if let Some(bin) = std::env::var_os("WALLET_TANSU_BIN") {
        return PathBuf::from(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("tansu"))
        .find(|p| p.is_file())
        .expect("tansu not found: set WALLET_TANSU_BIN or put tansu on PATH (scripts/lib/broker.sh installs it)")
}

/// A tansu broker of this test's own: one port, one SQLite file.
struct Broker {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn new() -> Broker {
        let dir = std::env::temp_dir().join(unique("wallet-restart-broker"));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Broker {
            dir,
            port,
            child: None,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn start(&mut self) {
        let url = format!("tcp://{}", self.address());
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .expect("log");
        let child = Command::new(tansu())
            .arg("broker")
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // A sqlite:// path is read relative to the working directory.
            .args(["--storage-engine", "sqlite://broker.db"])
            .current_dir(&self.dir)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        wait_until_listening(&self.address(), &self.dir).await;
    }

    /// Kills the broker, as a crash would.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill tansu");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("broker log ({}), last lines:", self.dir.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn wait_until_listening(address: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(address).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {address}: {}",
            std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The wallet service reserves `count` deposits: each writes a
/// `WalletReserved` event to its outbox.
async fn reserve(wallets: &WalletService<MemoryWalletStore>, data: &TestData, count: usize) {
    for _ in 0..count {
        let receiver = data.wallet(Currency::USD);
        wallets.store().open_wallet(&receiver).await.expect("open");
        let request = data.reserve_request(
            WalletId::system(Currency::USD),
            receiver.id,
            "10.00",
            Currency::USD,
        );
        wallets.reserve(&request).await.expect("reserve");
    }
}

/// Runs the relay until the outbox is empty, retrying failed passes.
async fn drain(relay: &Relay<MemoryWalletStore, KafkaPublisher>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(
            Instant::now() < deadline,
            "the relay did not drain the outbox"
        );
        match relay.run_once().await {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                eprintln!("relay pass failed (will retry): {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_mid_stream_loses_nothing() {
    let mut broker = Broker::new();
    broker.start().await;
    let mut settings: KafkaSettings = settings(&broker.address(), 4);
    settings.delivery_timeout = Duration::from_secs(5);
    let (topic, group) = (unique("restart"), unique("restart-group"));
    create_topics(&settings, &[topic.clone(), dead_letter_topic(&group)])
        .await
        .expect("topics");

    let data = TestData::new();
    let wallets = Arc::new(WalletService::new(
        MemoryWalletStore::new(),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        Arc::default(),
    ));
    let publisher = KafkaPublisher::new(&settings).expect("producer");
    let relay = Relay::new(
        wallets.store().clone(),
        publisher.clone(),
        Route::new(Some(&topic), &group),
        Arc::new(SystemClock),
        RandomIds.worker_id(),
        Arc::default(),
        RelayConfig {
            lease: Duration::from_secs(2),
            ..RelayConfig::default()
        },
    );
    let handler = Counting::new(ledger());
    let consumer = |settings: &KafkaSettings| {
        ConsumerRunner::new(
            KafkaSubscription::new(settings, &group, &topic).expect("subscribe"),
            handler.clone(),
            publisher.clone(),
            group.clone(),
            ConsumerConfig::default(),
        )
    };

    // Before: 100 events published and consumed, offsets committed.
    reserve(&wallets, &data, 100).await;
    drain(&relay).await;
    let mut runner = consumer(&settings);
    let deadline = Instant::now() + PATIENCE;
    while decisions(&handler.inner).await < 100 {
        assert!(Instant::now() < deadline, "the first 100 were not consumed");
        runner
            .run_once(Duration::from_millis(200))
            .await
            .expect("run");
    }
    drop(runner);
    let before: Vec<_> = handler.seen();

    // Down: the broker dies; 100 more are reserved and wait in the outbox
    // while the relay fails to publish them.
    broker.kill().await;
    reserve(&wallets, &data, 100).await;
    let failed = tokio::time::timeout(Duration::from_secs(30), relay.run_once()).await;
    assert!(
        matches!(failed, Ok(Err(_))),
        "publishing to a dead broker should fail: {failed:?}"
    );

    // Back: same port, same file. The relay publishes what waited, and the
    // group resumes after its committed offsets.
    broker.start().await;
    drain(&relay).await;
    reserve(&wallets, &data, 100).await;
    drain(&relay).await;
    let mut runner = consumer(&settings);
    let deadline = Instant::now() + PATIENCE;
    while decisions(&handler.inner).await < 300 {
        assert!(
            Instant::now() < deadline,
            "after the restart only {} of 300 were decided",
            decisions(&handler.inner).await
        );
        // Reconnecting after a restart may fail a pass or two; the runner
        // rewinds and the next pass delivers the batch again.
        if let Err(e) = runner.run_once(Duration::from_millis(200)).await {
            eprintln!("consumer pass failed (will retry): {e}");
        }
    }
    let seen = counts(&handler.seen());
    for id in &before {
        assert_eq!(
            seen[id], 1,
            "an event committed before the restart was delivered again"
        );
    }
    assert_eq!(seen.len(), 300, "every event delivered");
    assert_eq!(
        decisions(&handler.inner).await,
        300,
        "each event decided once"
    );
}
