//! Outbox to broker to consumer, on real parts: 10,000 reservations written
//! to a wallet database's outbox on PostgreSQL, published by the core's
//! relay through Kafka, consumed by the core's runner into a ledger
//! database on PostgreSQL. Every one is applied exactly once.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wallet_core::contract::data::TestData;
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::money::Currency;
use wallet_core::outcome::{LedgerOutcome, ReserveOutcome};
use wallet_core::ports::{LedgerReads, SystemClock, WalletStore};
use wallet_core::runtime::{
    ConsumerConfig, ConsumerRunner, Relay, RelayConfig, Route, dead_letter_topic,
};
use wallet_core::service::LedgerService;
use wallet_core_kafka::{KafkaPublisher, KafkaSubscription, create_topics};
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{PgLedgerStore, PgSettings, PgWalletStore, outbox_backlog};

use common::{bootstrap, settings, unique};

const EVENTS: usize = 10_000;
const WALLETS: usize = 100;
const WRITERS: usize = 16;

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_events_go_from_an_outbox_through_the_broker_into_a_database_once_each() {
    let kafka = settings(&bootstrap(), 4);
    let (topic, group) = (unique("e2e"), unique("e2e-ledger"));
    create_topics(&kafka, &[topic.clone(), dead_letter_topic(&group)])
        .await
        .expect("topics");
    let pg = PgSettings::default();
    let data = Arc::new(TestData::new());

    // The wallet side: 10,000 deposits reserved, each writing its event to
    // the outbox in its unit.
    let wallet_db = TestDatabase::create().await.expect("a test database");
    let pool = pg.connect(wallet_db.url()).await.expect("wallet database");
    wallet_core_postgres::migrate_wallet_db(&pool)
        .await
        .expect("migrations");
    let wallets = PgWalletStore::new(pool.clone(), &pg);
    let mut receivers = Vec::new();
    for _ in 0..WALLETS {
        let wallet = data.wallet(Currency::USD);
        wallets.open_wallet(&wallet).await.expect("open");
        receivers.push(wallet.id);
    }
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (wallets, data, receivers) = (wallets.clone(), data.clone(), receivers.clone());
        writers.push(tokio::spawn(async move {
            for i in (w..EVENTS).step_by(WRITERS) {
                let system = WalletId::system(Currency::USD);
                let request =
                    data.reserve_request(system, receivers[i % WALLETS], "1.00", Currency::USD);
                let outcome = wallets
                    .reserve(&request, data.stamp())
                    .await
                    .expect("reserve");
                assert_eq!(outcome, ReserveOutcome::Reserved);
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    // The ledger side, consuming; then the relay, publishing.
    let ledger_db = TestDatabase::create().await.expect("a test database");
    let ledger_pool = pg.connect(ledger_db.url()).await.expect("ledger database");
    wallet_core_postgres::migrate_ledger_db(&ledger_pool)
        .await
        .expect("migrations");
    let ledger = PgLedgerStore::new(ledger_pool, &pg);
    let service = Arc::new(LedgerService::new(
        ledger.clone(),
        Arc::new(SystemClock),
        data.clone(),
        Arc::new(Notify::new()),
    ));
    let publisher = KafkaPublisher::new(&kafka).expect("producer");
    let subscription = KafkaSubscription::new(&kafka, &group, &topic).expect("subscribe");
    let config = ConsumerConfig {
        batch_size: 500,
        ..ConsumerConfig::default()
    };
    let runner = ConsumerRunner::new(
        subscription,
        service,
        publisher.clone(),
        group.clone(),
        config,
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let consumer = tokio::spawn(runner.run_until(until(stopped.clone())));
    let relay = Relay::new(
        wallets.clone(),
        publisher,
        Route::new(Some(&topic), "wallet-service"),
        Arc::new(SystemClock),
        data.worker_id(),
        Arc::new(Notify::new()),
        RelayConfig::default(),
    );
    let relaying = tokio::spawn(relay.run_until(until(stopped)));

    let started = Instant::now();
    let outcomes = loop {
        let outcomes = all_outcomes(&ledger).await;
        if outcomes.len() >= EVENTS {
            break outcomes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} of {EVENTS} applied after 5 minutes",
            outcomes.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed();
    stop.send(true).expect("stop");
    assert!(
        consumer.await.expect("consumer").is_none(),
        "no integrity stop"
    );
    relaying.await.expect("relay");

    assert_eq!(outcomes.len(), EVENTS, "one outcome per event");
    assert!(outcomes.iter().all(|(_, o)| *o == LedgerOutcome::Succeeded));
    let mut entries = 0;
    let mut after = None;
    loop {
        let page = ledger.postings_page(after, 1_000).await.expect("entries");
        let Some(last) = page.last() else { break };
        after = Some(wallet_core::ports::EntryCursor {
            transfer_id: last.transfer_id,
            seq: last.seq,
        });
        entries += page.len();
    }
    assert_eq!(
        entries,
        2 * EVENTS,
        "one balanced posting of two entries per event"
    );
    let backlog = outbox_backlog(&pool).await.expect("backlog");
    assert_eq!(backlog.waiting, 0, "every outbox record acknowledged");
    println!("{EVENTS} events outbox to ledger in {elapsed:?}");
}

async fn all_outcomes(
    ledger: &PgLedgerStore,
) -> Vec<(wallet_core::ids::TransferId, LedgerOutcome)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = ledger.outcomes_page(after, 5_000).await.expect("outcomes");
        let Some(last) = page.last() else { return all };
        after = Some(last.0);
        all.extend(page);
    }
}
