//! A program that embeds a service process keeps what it installed for
//! itself: its tracing subscriber, its metrics recorder and its panic
//! hook, installed before the process starts through the library, still
//! receive the process's logs, metrics and panics after. A library that
//! installed its own would fail (`set_global_default` and
//! `set_global_recorder` refuse a second one, `init` panics) or take them
//! over.
//!
//! Needs PostgreSQL (`WALLET_TEST_DATABASE_URL`) and a broker
//! (`WALLET_TEST_KAFKA`); fails without them. One test: what it installs
//! is process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};
use wallet_core_postgres::testdb::TestDatabase;
use wallet_server::settings::Common;
use wallet_server::{Process, Schema};

/// The environment variable naming the broker's bootstrap servers.
const BROKER_ENV: &str = "WALLET_TEST_KAFKA";

/// The service flags, as a binary parses them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    common: Common,
}

/// The host's subscriber: it keeps the message of every event.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn contains(&self, text: &str) -> bool {
        self.0.lock().unwrap().iter().any(|m| m.contains(text))
    }
}

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Seen {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0.lock().unwrap().push(message);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_keeps_its_subscriber_recorder_and_panic_hook() {
    // The host installs its own three, first.
    let seen = Seen::default();
    tracing::subscriber::set_global_default(Registry::default().with(seen.clone()))
        .expect("the host's subscriber is the first");
    let recorder = PrometheusBuilder::new().build_recorder();
    let host_metrics = recorder.handle();
    metrics::set_global_recorder(recorder).expect("the host's recorder is the first");
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    std::panic::set_hook(Box::new(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    }));

    // Then it starts a service process through the library.
    let broker = std::env::var(BROKER_ENV).unwrap_or_else(|_| {
        panic!("{BROKER_ENV} is not set: start a broker (scripts/lib/broker.sh) and export it")
    });
    let db = TestDatabase::create().await.expect("a test database");
    let url = db.prepare(Schema::Ledger).await.expect("prepared");
    let cli = Cli::try_parse_from([
        "host",
        "--database-url",
        &url,
        "--kafka-bootstrap-servers",
        &broker,
    ])
    .expect("flags");
    let mut process = Process::start(cli.common, "ledger-service", Schema::Ledger, None)
        .await
        .expect("the process starts beside the host's telemetry");
    // A loop that panics on its first pass: its panic reaches the host's
    // hook, and its restart the host's recorder.
    process.spawn_every("host probe", Duration::from_millis(10), || async {
        panic!("a pass that panics")
    });

    let restarts = r#"wallet_loop_restarts_total{loop="host probe"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !host_metrics.render().contains(restarts)
        || panics.load(Ordering::SeqCst) == 0
        || !seen.contains("background loop ended")
    {
        assert!(
            Instant::now() < deadline,
            "after 10 s: {} panics seen by the host's hook, the host's metrics:\n{}",
            panics.load(Ordering::SeqCst),
            host_metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::panic::take_hook();

    for logged in [
        "started: database schema current, topics ready",
        "background loop ended; restarting it",
    ] {
        assert!(
            seen.contains(logged),
            "{logged:?} reached the host's subscriber: {:?}",
            seen.0.lock().unwrap()
        );
    }
    drop(process);
    db.drop_now().await.expect("dropped");
}
