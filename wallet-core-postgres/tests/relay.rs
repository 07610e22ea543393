//! Two relay instances drain one outbox of 10,000 records at once, woken by
//! LISTEN/NOTIFY: every event is published, none lost, none twice.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::{ledger_store, settings};
use wallet_core::contract::data::TestData;
use wallet_core::event::{LEDGER_EVENTS, producer};
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::money::Currency;
use wallet_core::ports::{BusError, LedgerStore, Message, Payload, Publisher, SystemClock};
use wallet_core::runtime::{Relay, Route};
use wallet_core_postgres::{OutboxWake, PgLedgerStore};

const RECORDS: usize = 10_000;
const BATCH: usize = 500;

/// Keeps what was published, by whom.
#[derive(Clone, Default)]
struct Recording {
    published: Arc<Mutex<Vec<(usize, String)>>>,
    relay: usize,
}

#[async_trait]
impl Publisher for Recording {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        let mut published = self.published.lock().unwrap();
        for message in messages {
            let Payload::Event(envelope) = &message.payload else {
                panic!("only events are in this outbox");
            };
            assert_eq!(message.topic, LEDGER_EVENTS);
            published.push((self.relay, envelope.event_id.to_string()));
        }
        Ok(())
    }
}

/// Writes `count` LedgerSucceeded records, `BATCH` per unit.
async fn fill(store: &PgLedgerStore, data: &TestData, count: usize) {
    let system = WalletId::system(Currency::USD);
    for _ in 0..count / BATCH {
        let batch: Vec<_> = (0..BATCH)
            .map(|_| {
                let request = data.reserve_request(system, data.wallet_id(), "1.00", Currency::USD);
                data.wallet_reserved(&request)
            })
            .collect();
        assert_eq!(store.post(&batch).await.unwrap(), BATCH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_drain_one_outbox_without_loss_or_duplicates() {
    let store = ledger_store().await;
    let data = TestData::new();
    // Half before the relays start, half while they run: the second half is
    // found through the wake.
    fill(&store, &data, RECORDS / 2).await;
    let wake = OutboxWake::listen(store.pool()).await.unwrap();
    let recording = Recording::default();
    let route = Route::new(Some(LEDGER_EVENTS), producer::LEDGER);
    let mut config = settings().relay_config();
    // A poll slower than the test: records written while the relays run
    // must be found by the wake.
    config.idle_poll = Duration::from_secs(60);
    let relays: Vec<_> = (0..2)
        .map(|i| {
            let relay = Relay::new(
                store.clone(),
                Recording {
                    relay: i,
                    ..recording.clone()
                },
                route.clone(),
                Arc::new(SystemClock),
                data.worker_id(),
                wake.notify(),
                config.clone(),
            );
            tokio::spawn(relay.run())
        })
        .collect();
    let started = Instant::now();
    fill(&store, &data, RECORDS / 2).await;
    loop {
        let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(store.pool())
            .await
            .unwrap();
        if unsent == 0 && recording.published.lock().unwrap().len() >= RECORDS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{unsent} records still unsent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    for relay in &relays {
        assert!(!relay.is_finished(), "a relay stopped");
    }
    let published = recording.published.lock().unwrap().clone();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut by_relay = [0; 2];
    for (relay, event) in &published {
        *seen.entry(event).or_default() += 1;
        by_relay[*relay] += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    assert_eq!(seen.len(), RECORDS, "every event published");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored as usize, RECORDS);
    println!("two relays: {by_relay:?} published in {elapsed:?}");
    assert!(
        by_relay.iter().all(|n| *n > 0),
        "both relays took part: {by_relay:?}"
    );
    for relay in relays {
        relay.abort();
    }
}

/// Sent rows go after the retention; unsent ones never do.
#[tokio::test]
async fn pruning_deletes_only_sent_rows_past_the_retention() {
    use wallet_core::ports::{Claim, Outbox};
    let store = ledger_store().await;
    let backlog = wallet_core_postgres::outbox_backlog(store.pool());
    assert_eq!(
        backlog.await.unwrap(),
        wallet_core_postgres::OutboxBacklog::default(),
        "an empty outbox"
    );
    let data = TestData::new();
    fill(&store, &data, BATCH).await;
    let claim = Claim::new(data.worker_id(), data.now(), Duration::from_secs(30));
    let claimed = store.claim(&claim, 100).await.unwrap();
    let seqs: Vec<u64> = claimed.iter().map(|r| r.seq).collect();
    store.acknowledge(&seqs).await.unwrap();
    let wallet_core_postgres::OutboxBacklog {
        waiting, oldest, ..
    } = wallet_core_postgres::outbox_backlog(store.pool())
        .await
        .unwrap();
    assert_eq!(
        waiting as usize,
        BATCH - 100,
        "claimed-and-sent rows are not waiting"
    );
    assert!(oldest.is_some(), "the oldest unsent row has an age");
    let pruned = wallet_core_postgres::prune_sent(store.pool(), Duration::from_secs(3600), 7)
        .await
        .unwrap();
    assert_eq!(pruned, 0, "nothing is past an hour's retention");
    let pruned = wallet_core_postgres::prune_sent(store.pool(), Duration::ZERO, 7)
        .await
        .unwrap();
    assert_eq!(pruned, 100, "every sent row, in batches of 7");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(left as usize, BATCH - 100);
}
