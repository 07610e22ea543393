//! The whole saga on the PostgreSQL stores: transfers per second from
//! request to terminal state, with the three services of `wallet-core`,
//! their relays (woken by LISTEN/NOTIFY) and consumers in one process, each
//! service on a database of its own, and the in-memory bus between them.
//!
//! ```text
//! cargo run --release -p wallet-core-postgres --example saga_bench -- --transfers 5000 --concurrency 64 --wallets 1000
//! ```
//!
//! Makes three fresh databases on the server named by
//! `WALLET_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), opens `--wallets` wallets
//! and funds them (not timed), with `--pool` connections per database
//! (default 16) and relay and consumer batches of `--batch` (default 500),
//! relays woken by NOTIFY (`--notify 1`, the default) or by the services
//! in process (`--notify 0`, no NOTIFY sent), then sends `--transfers` transfers of 1.00
//! between random pairs, `--concurrency` at a time, and times until every
//! one is terminal. Then the core's audit runs over the three databases.
//! Prints one JSON line; drops the databases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use tokio::sync::{Notify, Semaphore};
use wallet_core::audit::{Audit, Scope};
use wallet_core::event::{LEDGER_EVENTS, WALLET_EVENTS};
use wallet_core::ids::{IdGenerator, IdempotencyKey, RandomIds};
use wallet_core::memory::{DEFAULT_PARTITIONS, MemoryBus, groups};
use wallet_core::money::Currency;
use wallet_core::ports::{Clock, SystemClock};
use wallet_core::runtime::{ConsumerConfig, ConsumerRunner, Relay, Route};
use wallet_core::service::{
    LedgerService, Parties, TransactionConfig, TransactionService, TransferRequest, WalletService,
};
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{
    OutboxWake, PgLedgerStore, PgSettings, PgTransferStore, PgWalletStore, migrate_ledger_db,
    migrate_transaction_db, migrate_wallet_db,
};

struct Args {
    transfers: usize,
    concurrency: usize,
    wallets: usize,
    pool: usize,
    batch: usize,
    notify: bool,
}

fn args() -> Args {
    let mut args = Args {
        transfers: 5_000,
        concurrency: 64,
        wallets: 1_000,
        pool: 16,
        batch: 500,
        notify: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        let number: usize = value
            .parse()
            .unwrap_or_else(|_| panic!("{flag} needs a number, got {value:?}"));
        match flag.as_str() {
            "--transfers" => args.transfers = number,
            "--concurrency" => args.concurrency = number.max(1),
            "--wallets" => args.wallets = number.max(2),
            "--pool" => args.pool = number.max(1),
            "--batch" => args.batch = number.max(1),
            "--notify" => args.notify = number != 0,
            other => panic!(
                "unknown flag {other}; use --transfers, --concurrency, --wallets, --pool, --batch, --notify"
            ),
        }
    }
    args
}

/// A small deterministic generator for the pairs.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn database(settings: &PgSettings) -> (TestDatabase, sqlx::PgPool) {
    let db = TestDatabase::create().await.expect("a test database");
    let pool = settings.connect(db.url()).await.expect("connecting");
    (db, pool)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = args();
    let settings = PgSettings {
        max_connections: u32::try_from(args.pool).unwrap_or(u32::MAX),
        announce_outbox: args.notify,
        announce_transfers: args.notify,
        ..PgSettings::default()
    };
    let (transfer_db, transfer_pool) = database(&settings).await;
    let (wallet_db, wallet_pool) = database(&settings).await;
    let (ledger_db, ledger_pool) = database(&settings).await;
    migrate_transaction_db(&transfer_pool)
        .await
        .expect("migrating");
    migrate_wallet_db(&wallet_pool).await.expect("migrating");
    migrate_ledger_db(&ledger_pool).await.expect("migrating");
    let wallet_wake = OutboxWake::listen(&wallet_pool).await.expect("listening");
    let ledger_wake = OutboxWake::listen(&ledger_pool).await.expect("listening");

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ids: Arc<dyn IdGenerator> = Arc::new(RandomIds);
    let bus = MemoryBus::new(DEFAULT_PARTITIONS).dropping_consumed();
    // With `--notify 1` (the default) the relays wake on NOTIFY from the
    // stores, as in separate processes; with `--notify 0` on the services'
    // in-process wake, as the embedded mode does, and no NOTIFY is sent.
    let (wallet_written, ledger_written) = if args.notify {
        (Arc::new(Notify::new()), Arc::new(Notify::new()))
    } else {
        (wallet_wake.notify(), ledger_wake.notify())
    };
    let wallets = Arc::new(WalletService::new(
        PgWalletStore::new(wallet_pool, &settings),
        clock.clone(),
        ids.clone(),
        wallet_written,
    ));
    let ledger = Arc::new(LedgerService::new(
        PgLedgerStore::new(ledger_pool, &settings),
        clock.clone(),
        ids.clone(),
        ledger_written,
    ));
    let transactions = Arc::new(TransactionService::new(
        PgTransferStore::new(transfer_pool, &settings),
        wallets.clone(),
        clock.clone(),
        ids.clone(),
        TransactionConfig::default(),
    ));
    let mut relay_config = settings.relay_config();
    relay_config.batch_size = args.batch;
    let consumer_config = ConsumerConfig {
        batch_size: args.batch,
        ..ConsumerConfig::default()
    };
    let mut tasks = vec![
        tokio::spawn(
            Relay::new(
                wallets.store().clone(),
                bus.clone(),
                Route::new(Some(WALLET_EVENTS), groups::WALLET),
                clock.clone(),
                ids.worker_id(),
                wallet_wake.notify(),
                relay_config.clone(),
            )
            .run(),
        ),
        tokio::spawn(
            Relay::new(
                ledger.store().clone(),
                bus.clone(),
                Route::new(Some(LEDGER_EVENTS), groups::LEDGER),
                clock.clone(),
                ids.worker_id(),
                ledger_wake.notify(),
                relay_config.clone(),
            )
            .run(),
        ),
    ];
    let ledger_consumer = ConsumerRunner::new(
        bus.subscribe(groups::LEDGER, WALLET_EVENTS),
        ledger.clone(),
        bus.clone(),
        groups::LEDGER,
        consumer_config.clone(),
    );
    let wallet_consumer = ConsumerRunner::new(
        bus.subscribe(groups::WALLET, LEDGER_EVENTS),
        wallets.clone(),
        bus.clone(),
        groups::WALLET,
        consumer_config.clone(),
    );
    let transaction_consumer = ConsumerRunner::new(
        bus.subscribe(groups::TRANSACTION, LEDGER_EVENTS),
        transactions.clone(),
        bus.clone(),
        groups::TRANSACTION,
        consumer_config,
    );
    tasks.push(tokio::spawn(
        async move { drop(ledger_consumer.run().await) },
    ));
    tasks.push(tokio::spawn(
        async move { drop(wallet_consumer.run().await) },
    ));
    tasks.push(tokio::spawn(async move {
        drop(transaction_consumer.run().await)
    }));

    // Funding, not timed.
    let mut opened = Vec::with_capacity(args.wallets);
    for _ in 0..args.wallets {
        let wallet = wallets.open(Currency::USD).await.expect("opening a wallet");
        let created = transactions
            .create(TransferRequest {
                tags: Default::default(),
                key: IdempotencyKey::new(ids.next_uuid().to_string()).expect("a key"),
                parties: Parties::Deposit(wallet.id),
                amount: Decimal::new(1_000_000, 0),
                currency: Some(Currency::USD),
            })
            .await
            .expect("funding");
        opened.push((wallet.id, created.transfer.id));
    }
    for (_, deposit) in &opened {
        transactions
            .wait_for(*deposit, Duration::from_secs(30))
            .await
            .expect("funded");
    }

    let permits = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut random = 0x2545_F491_4F6C_DD1D_u64;
    let mut sent = Vec::with_capacity(args.transfers);
    for _ in 0..args.transfers {
        let a = (next(&mut random) % opened.len() as u64) as usize;
        let b = (a + 1 + (next(&mut random) % (opened.len() as u64 - 1)) as usize) % opened.len();
        let request = TransferRequest {
            tags: Default::default(),
            key: IdempotencyKey::new(ids.next_uuid().to_string()).expect("a key"),
            parties: Parties::Transfer {
                sender: opened[a].0,
                receiver: opened[b].0,
            },
            amount: Decimal::ONE,
            currency: Some(Currency::USD),
        };
        let permit = permits.clone().acquire_owned().await.expect("permits");
        let transactions = transactions.clone();
        sent.push(tokio::spawn(async move {
            let created = transactions.create(request).await.expect("a transfer");
            drop(permit);
            created.transfer.id
        }));
    }
    let mut accepted = Vec::with_capacity(sent.len());
    for task in sent {
        accepted.push(task.await.expect("a request task"));
    }
    let api_seconds = started.elapsed().as_secs_f64();
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM transfers WHERE status IN ('INITIATED', 'RESERVED')",
        )
        .fetch_one(transactions.store().pool())
        .await
        .expect("counting");
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = Audit::new(Scope::Quiet)
        .run(transactions.store(), wallets.store(), ledger.store())
        .await
        .expect("auditing");
    for task in tasks {
        task.abort();
    }
    println!(
        "{{\"transfers\": {}, \"concurrency\": {}, \"wallets\": {}, \"pool\": {}, \"batch\": {}, \"notify\": {}, \"accepted_per_second\": {:.0}, \
         \"completed_per_second\": {:.0}, \"seconds\": {seconds:.3}, \"audit_violations\": {}}}",
        accepted.len(),
        args.concurrency,
        args.wallets,
        args.pool,
        args.batch,
        args.notify,
        accepted.len() as f64 / api_seconds,
        accepted.len() as f64 / seconds,
        report.violations.len()
    );
    drop((transactions, wallets, ledger));
    for db in [transfer_db, wallet_db, ledger_db] {
        db.drop_now().await.expect("dropping a database");
    }
}
