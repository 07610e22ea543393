//! The wallet service: wallets, reservations and their capture or release,
//! on its own PostgreSQL database, reading ledger outcomes from Kafka. Its
//! internal routes (reserves, for the transaction and ledger services) are
//! served on a second address and require the services' token.

mod install;

use std::sync::Arc;

use clap::Parser;
use wallet_core::event::{LEDGER_EVENTS, WALLET_EVENTS, groups};
use wallet_core::runtime::Route;
use wallet_core::service::WalletService;
use wallet_core_postgres::PgWalletStore;
use wallet_server::settings::{Common, Internal};
use wallet_server::{InternalRoutes, Process, Schema};

/// The public port on 127.0.0.1 when `LISTEN` is not set.
const PORT: u16 = 8082;

/// The wallet service. Every flag can also be set by the environment
/// variable named in its help.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    internal: Internal,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Refuse to start without a credential, or with a TLS identity that
    // does not do, before anything else.
    let accepted = args.internal.tokens()?;
    let tls = args.internal.tls()?;
    let internal_listen = args.internal.listen_or(args.common.listen_or(PORT));
    let (metrics, traces) = install::telemetry(args.common.log_json, groups::WALLET)?;
    let mut process = Process::start(args.common, groups::WALLET, Schema::Wallet, Some(metrics))
        .await?
        .with_traces(traces);
    let store = PgWalletStore::new(process.pool.clone(), &process.pg);
    let service = Arc::new(WalletService::new(
        store.clone(),
        process.clock.clone(),
        process.ids.clone(),
        process.outbox_written.clone(),
    ));
    process.spawn_relay(store, Route::new(Some(WALLET_EVENTS), groups::WALLET));
    process.spawn_consumer(service.clone(), groups::WALLET, LEDGER_EVENTS)?;
    let internal = InternalRoutes {
        routes: wallet_service::internal(service.clone(), accepted),
        doc: wallet_service::internal_openapi(),
        listen: internal_listen,
        tls,
    };
    let api = wallet_service::api(service);
    process
        .serve(
            api,
            wallet_service::openapi(),
            PORT,
            Some(internal),
            wallet_http::shutdown_signal(),
        )
        .await
}
