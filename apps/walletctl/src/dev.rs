//! `walletctl dev`: the whole system in one process on the in-memory
//! adapters.

use std::net::SocketAddr;

use anyhow::Context;
use wallet_core::memory::{Embedded, EmbeddedConfig};

/// Serves every public route of the three services, and their OpenAPI
/// description at `/openapi.json`, on `listen` until Ctrl-C.
pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    init_tracing();
    let running = Embedded::new(EmbeddedConfig::default()).spawn();
    let doc = wallet_http::openapi::public([
        transaction_service::openapi(),
        wallet_service::openapi(),
        ledger_service::openapi(),
    ]);
    let app = wallet_http::service_router(
        axum::Router::new()
            .merge(transaction_service::api(running.transactions.clone()))
            .merge(wallet_service::api(running.wallets.clone()))
            .merge(ledger_service::api(
                running.ledger.clone(),
                running.wallets.clone(),
            ))
            .merge(wallet_http::openapi::route(doc)),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    // The first line on stdout is the address, for scripts and tests that
    // start the server on port 0.
    println!("walletctl dev listening on http://{addr}");
    tracing::info!(%addr, "in-memory wallet system serving");
    // Long polls answer at once on Ctrl-C instead of holding the shutdown.
    let transactions = running.transactions.clone();
    let shutdown = async move {
        wallet_http::shutdown_signal().await;
        transactions.stop_waits();
    };
    wallet_http::serve_until(listener, app, shutdown).await?;
    drop(running);
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
