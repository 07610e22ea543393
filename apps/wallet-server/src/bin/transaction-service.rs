//! The transaction service: the public transfer API, idempotency and the
//! saga's first and last steps, on its own PostgreSQL database; it reserves
//! through the wallet service over HTTP and reads ledger outcomes from
//! Kafka. A retrier finishes transfers whose reserve got no answer.

mod install;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use wallet_core::event::{LEDGER_EVENTS, groups};
use wallet_core::runtime::Route;
use wallet_core::service::TransactionService;
use wallet_core_postgres::{PgTransferStore, TransferChanges, TransferWake};
use wallet_server::settings::{Common, Transaction, WalletLink};
use wallet_server::{GAUGE_EVERY, Process, Schema};

/// The transaction service. Every flag can also be set by the environment
/// variable named in its help.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    wallet: WalletLink,
    #[command(flatten)]
    transaction: Transaction,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        common,
        wallet,
        transaction,
    } = Args::parse();
    // A wallet service link that cannot work stops the start before
    // anything else.
    let gateway = wallet.gateway()?;
    let (metrics, traces) = install::telemetry(common.log_json, groups::TRANSACTION)?;
    let mut process = Process::start(
        common,
        groups::TRANSACTION,
        Schema::Transaction,
        Some(metrics),
    )
    .await?
    .with_traces(traces);
    let store = PgTransferStore::new(process.pool.clone(), &process.pg);
    let service = Arc::new(TransactionService::new(
        store.clone(),
        gateway,
        process.clock.clone(),
        process.ids.clone(),
        transaction.config(),
    ));
    // Long polls wake on the transfers any instance's units move, as the
    // stores announce them on the database; this process's own changes come
    // back that way too. Waits read again after a lost connection, since
    // announcements made meanwhile did not reach it.
    let woken = service.clone();
    let _transfer_wake = TransferWake::listen(&process.pool, move |changes| match changes {
        TransferChanges::Moved(ids) => woken.transfers_changed(ids),
        TransferChanges::MaybeMissed => woken.any_transfer_changed(),
    })
    .await
    .context("listening for moved transfers")?;
    // Its outbox holds only dead letters.
    process.spawn_relay(store, Route::new(None, groups::TRANSACTION));
    process.spawn_consumer(service.clone(), groups::TRANSACTION, LEDGER_EVENTS)?;
    // A long poll answers at once when the process stops taking requests,
    // rather than holding the shutdown for its whole wait.
    let draining = process.draining();
    let waits = service.clone();
    tokio::spawn(async move {
        draining.await;
        waits.stop_waits();
    });
    let retrier = service.clone();
    process.spawn_every(
        "retrier",
        Duration::from_millis(transaction.retry_every_ms),
        move || {
            let retrier = retrier.clone();
            async move {
                let report = retrier.retry_pending().await.map_err(|e| e.to_string())?;
                if report.attempted > 0 {
                    tracing::info!(
                        attempted = report.attempted,
                        answered = report.answered,
                        "retrier pass"
                    );
                }
                Ok(())
            }
        },
    );
    // Holds past their expiry, released by the wallet service; claimed, so
    // instances never sweep one hold at once.
    let sweeper = service.clone();
    process.spawn_every(
        "hold sweeper",
        Duration::from_millis(transaction.retry_every_ms),
        move || {
            let sweeper = sweeper.clone();
            async move {
                let report = sweeper.sweep_expired().await.map_err(|e| e.to_string())?;
                if report.claimed > 0 {
                    tracing::info!(
                        claimed = report.claimed,
                        ended = report.ended,
                        "hold sweeper pass"
                    );
                }
                Ok(())
            }
        },
    );
    let gauge = service.clone();
    process.spawn_every("unfinished transfers gauge", GAUGE_EVERY, move || {
        let gauge = gauge.clone();
        async move {
            if let Err(error) = gauge.gauge_unfinished().await {
                tracing::warn!(%error, "cannot count the unfinished transfers");
            }
            Ok(())
        }
    });
    process
        .serve(
            transaction_service::api(service),
            transaction_service::openapi(),
            8081,
            None,
            wallet_http::shutdown_signal(),
        )
        .await
}
