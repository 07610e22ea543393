//! The three wallet services, embedded: each on its own PostgreSQL
//! database through `wallet-core-postgres`, with its relay and consumer on
//! a Kafka-protocol broker through `wallet-core-kafka`, and the transaction
//! service's retrier; the transaction service reserves through the wallet
//! service in-process, with no HTTP between them.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use wallet_core::event::groups;
use wallet_core::ids::{IdGenerator, RandomIds};
use wallet_core::ports::{BusError, Outbox};
use wallet_core::runtime::{
    ConsumerConfig, ConsumerRunner, EventHandler, Relay, RelayConfig, Route, dead_letter_topic,
};
use wallet_core::service::{LedgerService, TransactionConfig, TransactionService, WalletService};
use wallet_core::time::{Clock, SystemClock};
use wallet_core_kafka::{KafkaPublisher, KafkaSettings, KafkaSubscription, create_topics};
use wallet_core_postgres::{PgLedgerStore, PgSettings, PgTransferStore, PgWalletStore};

/// The wallet service on PostgreSQL.
pub type Wallets = WalletService<PgWalletStore>;
/// The ledger service on PostgreSQL.
pub type Ledger = LedgerService<PgLedgerStore>;
/// The transaction service on PostgreSQL, reserving in-process.
pub type Transactions = TransactionService<PgTransferStore, Arc<Wallets>>;

/// The three services' databases.
#[derive(Debug, Clone)]
pub struct Databases {
    /// The transaction service's.
    pub transaction: String,
    /// The wallet service's.
    pub wallet: String,
    /// The ledger service's.
    pub ledger: String,
}

/// The names of the topics and consumer groups on the broker. A prefix
/// keeps several embedded systems (or test runs) apart on one broker; the
/// empty prefix gives the reference services' names.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Every name starts with `prefix`.
    pub fn prefixed(prefix: impl Into<String>) -> Names {
        Names {
            prefix: prefix.into(),
        }
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// The wallet service's events.
    pub fn wallet_events(&self) -> String {
        self.name("wallet.events")
    }

    /// The ledger's outcomes.
    pub fn ledger_events(&self) -> String {
        self.name("ledger.events")
    }

    /// The consumer group of each service: transaction, wallet, ledger.
    pub fn groups(&self) -> [String; 3] {
        [groups::TRANSACTION, groups::WALLET, groups::LEDGER].map(|g| self.name(g))
    }

    /// Every topic the system uses: the events and each group's dead
    /// letters.
    pub fn topics(&self) -> Vec<String> {
        let mut topics = vec![self.wallet_events(), self.ledger_events()];
        topics.extend(self.groups().iter().map(|g| dead_letter_topic(g)));
        topics
    }
}

/// Why the embedded system did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A database did not answer or refused the migrations.
    #[error("{0}: {1}")]
    Database(&'static str, String),
    /// The broker did not answer or refused the topics.
    #[error("broker: {0}")]
    Broker(#[from] BusError),
}

/// The wallet system running inside the host's process.
pub struct WalletSystem {
    /// The transaction service: where the host starts transfers.
    pub transactions: Arc<Transactions>,
    /// The wallet service.
    pub wallets: Arc<Wallets>,
    /// The ledger service.
    pub ledger: Arc<Ledger>,
    publisher: KafkaPublisher,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// A pool on `url` with this build's schema applied. The example migrates
/// as it starts, connected as the databases' owner; a deployment runs
/// `walletctl migrate` first and connects as the runtime role
/// (`wallet_core_postgres::check_schema`).
async fn database<F, Fut>(
    which: &'static str,
    url: &str,
    pg: &PgSettings,
    migrate: F,
) -> Result<sqlx::PgPool, StartError>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: Future<Output = Result<(), sqlx::migrate::MigrateError>>,
{
    let fail = |e: &dyn std::fmt::Display| StartError::Database(which, e.to_string());
    let pool = pg.connect(url).await.map_err(|e| fail(&e))?;
    migrate(pool.clone()).await.map_err(|e| fail(&e))?;
    Ok(pool)
}

impl WalletSystem {
    /// Connects to the three databases (applying their migrations), makes
    /// the topics named by `names`, and starts the relays, consumers and
    /// retrier as tasks of the caller's runtime.
    pub async fn start(
        databases: &Databases,
        kafka: &KafkaSettings,
        names: &Names,
    ) -> Result<WalletSystem, StartError> {
        let pg = PgSettings::default();
        let transfer_pool = database(
            "transaction database",
            &databases.transaction,
            &pg,
            |p| async move { wallet_core_postgres::migrate_transaction_db(&p).await },
        )
        .await?;
        let wallet_pool = database("wallet database", &databases.wallet, &pg, |p| async move {
            wallet_core_postgres::migrate_wallet_db(&p).await
        })
        .await?;
        let ledger_pool = database("ledger database", &databases.ledger, &pg, |p| async move {
            wallet_core_postgres::migrate_ledger_db(&p).await
        })
        .await?;
        create_topics(kafka, &names.topics()).await?;
        let publisher = KafkaPublisher::new(kafka)?;

        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let ids = Arc::new(RandomIds);
        let (wallet_written, ledger_written) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let wallets = Arc::new(WalletService::new(
            PgWalletStore::new(wallet_pool, &pg),
            clock.clone(),
            ids.clone(),
            wallet_written.clone(),
        ));
        let ledger = Arc::new(LedgerService::new(
            PgLedgerStore::new(ledger_pool, &pg),
            clock.clone(),
            ids.clone(),
            ledger_written.clone(),
        ));
        let transactions = Arc::new(TransactionService::new(
            PgTransferStore::new(transfer_pool, &pg),
            wallets.clone(),
            clock.clone(),
            ids.clone(),
            TransactionConfig::default(),
        ));

        let (stop, _) = watch::channel(false);
        let mut system = WalletSystem {
            transactions: transactions.clone(),
            wallets: wallets.clone(),
            ledger: ledger.clone(),
            publisher,
            stop,
            tasks: Vec::new(),
        };
        let [transaction_group, wallet_group, ledger_group] = names.groups();
        let relay = pg.relay_config();
        system.relay(
            wallets.store().clone(),
            Route::new(Some(&names.wallet_events()), &wallet_group),
            wallet_written,
            relay.clone(),
        );
        system.relay(
            ledger.store().clone(),
            Route::new(Some(&names.ledger_events()), &ledger_group),
            ledger_written,
            relay.clone(),
        );
        // Its outbox holds only dead letters: no wake, it polls.
        system.relay(
            transactions.store().clone(),
            Route::new(None, &transaction_group),
            Arc::new(Notify::new()),
            relay,
        );
        system.consumer(kafka, ledger, &ledger_group, &names.wallet_events())?;
        system.consumer(kafka, wallets, &wallet_group, &names.ledger_events())?;
        system.consumer(
            kafka,
            transactions,
            &transaction_group,
            &names.ledger_events(),
        )?;
        system.retrier(Duration::from_millis(500));
        Ok(system)
    }

    /// Resolves once [`WalletSystem::stop`] is called.
    fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.subscribe();
        async move {
            let _ = stop.wait_for(|s| *s).await;
        }
    }

    fn relay<O: Outbox + 'static>(
        &mut self,
        outbox: O,
        route: Route,
        wake: Arc<Notify>,
        config: RelayConfig,
    ) {
        let relay = Relay::new(
            outbox,
            self.publisher.clone(),
            route,
            Arc::new(SystemClock),
            RandomIds.worker_id(),
            wake,
            config,
        );
        self.tasks
            .push(tokio::spawn(relay.run_until(self.stopping())));
    }

    fn consumer<H: EventHandler + 'static>(
        &mut self,
        kafka: &KafkaSettings,
        handler: H,
        group: &str,
        topic: &str,
    ) -> Result<(), StartError> {
        let subscription = KafkaSubscription::new(kafka, group, topic)?;
        let runner = ConsumerRunner::new(
            subscription,
            handler,
            self.publisher.clone(),
            group,
            ConsumerConfig::default(),
        );
        let stopping = self.stopping();
        let group = group.to_owned();
        self.tasks.push(tokio::spawn(async move {
            // An integrity failure stops the consumer; the host's
            // supervisor would restart it (wallet_core::runtime::Loops).
            if let Some(error) = runner.run_until(stopping).await {
                tracing::error!(%group, %error, "consumer stopped");
            }
        }));
        Ok(())
    }

    /// Finishes the transfers whose reserve got no definite answer.
    fn retrier(&mut self, every: Duration) {
        let transactions = self.transactions.clone();
        let stopping = self.stopping();
        self.tasks.push(tokio::spawn(async move {
            tokio::pin!(stopping);
            loop {
                tokio::select! {
                    () = &mut stopping => return,
                    () = tokio::time::sleep(every) => {
                        if let Err(error) = transactions.retry_pending().await {
                            tracing::warn!(%error, "retrier pass failed");
                        }
                    }
                }
            }
        }));
    }

    /// Stops the relays, consumers and retrier between their batches and
    /// waits for them.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        self.transactions.stop_waits();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for WalletSystem {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
