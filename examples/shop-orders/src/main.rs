//! The shop as a process: its own subscriber, its router, the wallet
//! system embedded, and a recovery pass at start and every few seconds.
//!
//! ```sh
//! SHOP_DATABASE_URL=postgres://postgres@127.0.0.1/shop \
//! TRANSACTION_DATABASE_URL=postgres://postgres@127.0.0.1/transaction \
//! WALLET_DATABASE_URL=postgres://postgres@127.0.0.1/wallet \
//! LEDGER_DATABASE_URL=postgres://postgres@127.0.0.1/ledger \
//! KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 \
//! cargo run -p shop-orders
//! ```

use std::sync::Arc;
use std::time::Duration;

use shop_orders::orders::OrderStore;
use shop_orders::wallets::{Databases, Names, WalletSystem};
use shop_orders::{Shop, api};
use wallet_core_kafka::KafkaSettings;
use wallet_core_postgres::PgSettings;

/// How long an order may stay PENDING_PAYMENT before the recovery pass
/// takes it: longer than a request takes, so it does not race one.
const RECOVER_AFTER: Duration = Duration::from_secs(30);

fn setting(name: &str) -> Result<String, Box<dyn std::error::Error>> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The host's own subscriber: the wallet crates log to whatever the
    // program installed, and install nothing themselves.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let databases = Databases {
        transaction: setting("TRANSACTION_DATABASE_URL")?,
        wallet: setting("WALLET_DATABASE_URL")?,
        ledger: setting("LEDGER_DATABASE_URL")?,
    };
    let kafka = KafkaSettings::new(setting("KAFKA_BOOTSTRAP_SERVERS")?);
    let system = WalletSystem::start(&databases, &kafka, &Names::prefixed("")).await?;
    let pool = PgSettings::default()
        .connect(&setting("SHOP_DATABASE_URL")?)
        .await?;
    let orders = OrderStore::new(pool);
    orders.migrate().await?;
    let shop = Shop::new(orders, system.transactions.clone());

    // Orders a crash left PENDING_PAYMENT, then every few seconds.
    let recovery = shop.clone();
    tokio::spawn(async move {
        loop {
            if let Err(error) = recovery.recover(RECOVER_AFTER).await {
                tracing::warn!(%error, "recovery pass failed");
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });

    let system = Arc::new(system);
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("shop listening on http://{}", listener.local_addr()?);
    axum::serve(listener, api::router(shop, system.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    if let Ok(system) = Arc::try_unwrap(system) {
        system.stop().await;
    }
    Ok(())
}
