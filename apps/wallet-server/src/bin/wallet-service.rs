//! The wallet service: wallets, reservations and their capture or release,
//! on its own PostgreSQL database, reading ledger outcomes from Kafka.

use std::sync::Arc;

use clap::Parser;
use wallet_core::event::{LEDGER_EVENTS, WALLET_EVENTS, groups};
use wallet_core::runtime::Route;
use wallet_core::service::WalletService;
use wallet_core_postgres::PgWalletStore;
use wallet_server::settings::Common;
use wallet_server::{Database, Process};

/// The wallet service. Every flag can also be set by the environment
/// variable named in its help.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: Common,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut process = Process::start(args.common, groups::WALLET, Database::Wallet).await?;
    let store = PgWalletStore::new(process.pool.clone(), &process.pg);
    let service = Arc::new(WalletService::new(
        store.clone(),
        process.clock.clone(),
        process.ids.clone(),
        process.outbox_written.clone(),
    ));
    process.spawn_relay(store, Route::new(Some(WALLET_EVENTS), groups::WALLET));
    process.spawn_consumer(service.clone(), groups::WALLET, LEDGER_EVENTS)?;
    let api = wallet_service::api(service.clone()).merge(wallet_service::internal(service));
    let mut doc = wallet_service::openapi();
    doc.merge(wallet_service::internal_openapi());
    process.serve(api, doc, 8082).await
}
