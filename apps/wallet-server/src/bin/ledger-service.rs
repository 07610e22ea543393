//! The ledger service: postings and their outcomes, on its own PostgreSQL
//! database, reading reservations from Kafka; it asks the wallet service
//! whether a wallet without entries exists.

mod install;

use std::sync::Arc;

use clap::Parser;
use wallet_core::event::{LEDGER_EVENTS, WALLET_EVENTS, groups};
use wallet_core::runtime::Route;
use wallet_core::service::LedgerService;
use wallet_core_postgres::PgLedgerStore;
use wallet_server::settings::{Common, WalletLink};
use wallet_server::{Process, Schema};

/// The ledger service. Every flag can also be set by the environment
/// variable named in its help.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    wallet: WalletLink,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { common, wallet } = Args::parse();
    let wallets = wallet.gateway()?;
    let (metrics, traces) = install::telemetry(common.log_json, groups::LEDGER)?;
    let mut process = Process::start(common, groups::LEDGER, Schema::Ledger, Some(metrics))
        .await?
        .with_traces(traces);
    let store = PgLedgerStore::new(process.pool.clone(), &process.pg);
    let service = Arc::new(LedgerService::new(
        store.clone(),
        process.clock.clone(),
        process.ids.clone(),
        process.outbox_written.clone(),
    ));
    process.spawn_relay(store, Route::new(Some(LEDGER_EVENTS), groups::LEDGER));
    process.spawn_consumer(service.clone(), groups::LEDGER, WALLET_EVENTS)?;
    let api = ledger_service::api(service, wallets);
    process
        .serve(
            api,
            ledger_service::openapi(),
            8083,
            None,
            wallet_http::shutdown_signal(),
        )
        .await
}
