//! Relay throughput on PostgreSQL: how many outbox records per second one or
//! more relay instances claim, publish and acknowledge.
//!
//! ```text
//! cargo run --release -p wallet-core-postgres --example relay_bench -- --events 20000 --relays 2
//! ```
//!
//! Makes a fresh database on the server named by `WALLET_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), writes `--events`
//! ledger outcome records through the ledger store (not timed), then starts
//! `--relays` relays at once, publishing to a publisher that only counts, and
//! times until every record is acknowledged. Prints one JSON line; drops the
//! database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use wallet_core::contract::data::TestData;
use wallet_core::event::{LEDGER_EVENTS, producer};
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::money::Currency;
use wallet_core::ports::{BusError, LedgerStore, Message, Publisher, SystemClock};
use wallet_core::runtime::{Relay, Route};
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{OutboxWake, PgLedgerStore, PgSettings, migrate_ledger_db};

/// Counts what it is given, as a broker that answers at once would.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicU64>);

#[async_trait]
impl Publisher for Counting {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        self.0.fetch_add(messages.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

struct Args {
    events: usize,
    relays: usize,
    batch: usize,
}

fn args() -> Args {
    let mut args = Args {
        events: 20_000,
        relays: 1,
        batch: 500,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        let number: usize = value
            .parse()
            .unwrap_or_else(|_| panic!("{flag} needs a number, got {value:?}"));
        match flag.as_str() {
            "--events" => args.events = number,
            "--relays" => args.relays = number.max(1),
            "--batch" => args.batch = number.max(1),
            other => panic!("unknown flag {other}; use --events N --relays N --batch N"),
        }
    }
    args
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = args();
    let db = TestDatabase::create().await.expect("a test database");
    let settings = PgSettings::default();
    let pool = settings.connect(db.url()).await.expect("connecting");
    migrate_ledger_db(&pool).await.expect("migrating");
    let store = PgLedgerStore::new(pool, &settings);
    let data = TestData::new();
    let system = WalletId::system(Currency::USD);
    let mut written = 0;
    while written < args.events {
        let n = 1_000.min(args.events - written);
        let batch: Vec<_> = (0..n)
            .map(|_| {
                let request = data.reserve_request(system, data.wallet_id(), "1.00", Currency::USD);
                data.wallet_reserved(&request)
            })
            .collect();
        written += store.post(&batch).await.expect("filling the outbox");
    }
    let wake = OutboxWake::listen(store.pool()).await.expect("listening");
    let published = Counting::default();
    let mut config = settings.relay_config();
    config.batch_size = args.batch;
    let started = Instant::now();
    let relays: Vec<_> = (0..args.relays)
        .map(|_| {
            tokio::spawn(
                Relay::new(
                    store.clone(),
                    published.clone(),
                    Route::new(Some(LEDGER_EVENTS), producer::LEDGER),
                    Arc::new(SystemClock),
                    data.worker_id(),
                    wake.notify(),
                    config.clone(),
                )
                .run(),
            )
        })
        .collect();
    loop {
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(store.pool())
            .await
            .expect("counting");
        if unsent == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    for relay in relays {
        relay.abort();
    }
    let count = published.0.load(Ordering::Relaxed);
    println!(
        "{{\"events\": {}, \"relays\": {}, \"batch_size\": {}, \"published\": {count}, \
         \"seconds\": {seconds:.3}, \"events_per_second\": {:.0}}}",
        args.events,
        args.relays,
        args.batch,
        count as f64 / seconds
    );
    drop(store);
    db.drop_now().await.expect("dropping the database");
}
