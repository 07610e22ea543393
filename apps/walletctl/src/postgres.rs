//! `walletctl migrate` and `walletctl audit`: the services' PostgreSQL
//! databases, by URL.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;
use wallet_core::audit::{Audit, AuditReport, Scope};
use wallet_core::ids::RandomIds;
use wallet_core::ports::{Clock, SystemClock};
use wallet_core::recovery::restore_reservations;
use wallet_core::service::WalletService;
use wallet_core_postgres::{PgLedgerStore, PgSettings, PgTransferStore, PgWalletStore, Schema};

/// The three databases; each may be left out where the command allows it.
/// `migrate` needs a role that may create roles and act as the owner (a
/// superuser, or the database's owner with `CREATEROLE`); `audit` only
/// reads, so the runtime role will do.
#[derive(Debug, clap::Args)]
pub struct Databases {
    /// The transaction service's database URL.
    #[arg(long, env = "WALLET_TRANSACTION_DB")]
    transaction_db: Option<String>,
    /// The wallet service's database URL.
    #[arg(long, env = "WALLET_WALLET_DB")]
    wallet_db: Option<String>,
    /// The ledger service's database URL.
    #[arg(long, env = "WALLET_LEDGER_DB")]
    ledger_db: Option<String>,
}

/// What `walletctl audit` checks.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    databases: Databases,
    /// `quiet`: every invariant, for a system with nothing in flight
    /// (every transfer terminal, nothing reserved); `always`: those that
    /// hold mid-saga too, for a live system.
    #[arg(long, default_value = "quiet", value_parser = ["quiet", "always"])]
    scope: String,
    /// Flag transfers not terminal this many seconds after they were
    /// created (0: do not flag).
    #[arg(long, default_value_t = 300)]
    stuck_after_secs: u64,
    /// Rows per read.
    #[arg(long, default_value_t = 1_000)]
    page_size: usize,
}

/// `walletctl reservations ...`
#[derive(Debug, clap::Subcommand)]
pub enum ReservationsCommand {
    /// After the wallet database was restored from a backup older than the
    /// other two: opens again (empty) the wallets the transfers name and it
    /// lacks, and makes again, through the wallet service's reserve, the
    /// reservations the transaction database says were made and it lacks
    /// (RESERVED and SUCCEEDED transfers, FAILED ones the ledger decided),
    /// oldest first. A reservation the sender cannot cover yet is deferred:
    /// run again once the wallet service has applied the ledger's outcomes.
    /// Safe to repeat. Exits 2 when it deferred any.
    Restore {
        #[command(flatten)]
        databases: Databases,
        /// Rows per read, and reserves per unit.
        #[arg(long, default_value_t = 500)]
        page_size: usize,
    },
}

/// Runs a reservations command; `json` prints JSON instead of text.
pub async fn reservations(command: ReservationsCommand, json: bool) -> anyhow::Result<ExitCode> {
    let ReservationsCommand::Restore {
        databases,
        page_size,
    } = command;
    let url = |url: Option<String>, flag: &str| {
        url.with_context(|| format!("reservations restore needs {flag}"))
    };
    let transfers_url = url(databases.transaction_db, "--transaction-db")?;
    let wallets_url = url(databases.wallet_db, "--wallet-db")?;
    let ledger_url = url(databases.ledger_db, "--ledger-db")?;
    let settings = settings();
    let connect = |url: String, service: &'static str| {
        let settings = settings.clone();
        async move {
            settings
                .connect(&url)
                .await
                .with_context(|| format!("connecting to the {service} database"))
        }
    };
    let transfers = PgTransferStore::new(connect(transfers_url, "transaction").await?, &settings);
    let wallet_pool = connect(wallets_url, "wallet").await?;
    let ledger = PgLedgerStore::new(connect(ledger_url, "ledger").await?, &settings);
    // Its reserves write `WalletReserved` to the outbox, which the wallet
    // service's relay publishes once it runs.
    let mut writing = settings.clone();
    writing.announce_outbox = true;
    let wallets = WalletService::new(
        PgWalletStore::new(wallet_pool, &writing),
        Arc::new(SystemClock),
        Arc::new(RandomIds),
        Arc::new(Notify::new()),
    );
    let report = restore_reservations(
        &transfers,
        &wallets,
        &ledger,
        &SystemClock,
        page_size.max(1),
    )
    .await
    .context("restoring the reservations")?;
    if json {
        let ids = |ids: &[_]| -> Vec<String> { ids.iter().map(ToString::to_string).collect() };
        println!(
            "{}",
            serde_json::json!({
                "transfers": report.transfers,
                "reopened": report.reopened.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "restored": ids(&report.restored),
                "deferred": ids(&report.deferred),
            })
        );
    } else {
        println!("transfers read      {}", report.transfers);
        println!("wallets reopened    {}", report.reopened.len());
        for id in &report.reopened {
            println!("  reopened {id}");
        }
        println!("reservations made   {}", report.restored.len());
        println!("deferred            {}", report.deferred.len());
        for id in &report.deferred {
            println!("  deferred {id}: the sender cannot cover it yet");
        }
    }
    Ok(if report.deferred.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `walletctl outbox ...`
#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// The quarantined rows, oldest first: seq, transfer, when, why.
    Quarantined {
        /// The service database's URL.
        #[arg(long)]
        db: String,
    },
    /// Puts quarantined rows back in line for the relay; a row still
    /// unreadable is quarantined again at its next claim.
    Release {
        /// The service database's URL.
        #[arg(long)]
        db: String,
        /// The rows to release, by seq (repeat the flag).
        #[arg(long, required_unless_present = "all")]
        seq: Vec<i64>,
        /// Every quarantined row.
        #[arg(long, conflicts_with = "seq")]
        all: bool,
    },
}

/// Runs an outbox command; `json` prints JSON instead of a table.
pub async fn outbox(command: OutboxCommand, json: bool) -> anyhow::Result<ExitCode> {
    match command {
        OutboxCommand::Quarantined { db } => {
            let pool = settings().connect(&db).await.context("connecting")?;
            let rows = wallet_core_postgres::quarantined(&pool).await?;
            if json {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "seq": r.seq,
                            "transfer_id": r.transfer_id,
                            "created_at": r.created_at,
                            "quarantined_at": r.quarantined_at,
                            "error": r.error,
                            "envelope": r.envelope,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::from(rows));
            } else if rows.is_empty() {
                println!("no quarantined outbox rows");
            } else {
                for r in rows {
                    println!(
                        "{}\t{}\t{}\t{}",
                        r.seq, r.transfer_id, r.quarantined_at, r.error
                    );
                }
            }
        }
        OutboxCommand::Release { db, seq, all } => {
            let pool = settings().connect(&db).await.context("connecting")?;
            let seqs = (!all).then_some(seq.as_slice());
            let released = wallet_core_postgres::release_quarantined(&pool, seqs).await?;
            if json {
                println!("{}", serde_json::json!({ "released": released }));
            } else {
                println!("{released} outbox rows released");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Settings for a command-line tool: a small pool, no announcements (it
/// writes no outbox rows and moves no transfers).
fn settings() -> PgSettings {
    PgSettings {
        max_connections: 2,
        announce_outbox: false,
        announce_transfers: false,
        ..PgSettings::default()
    }
}

/// Prepares each given database: its owner and runtime roles, its
/// migrations applied as the owner, the runtime role's grants
/// (`wallet_core_postgres::prepare`); at least one is needed.
pub async fn migrate(databases: Databases) -> anyhow::Result<ExitCode> {
    let targets = [
        (Schema::Transaction, databases.transaction_db),
        (Schema::Wallet, databases.wallet_db),
        (Schema::Ledger, databases.ledger_db),
    ];
    if targets.iter().all(|(_, url)| url.is_none()) {
        anyhow::bail!("name at least one of --transaction-db, --wallet-db, --ledger-db");
    }
    for (schema, url) in targets {
        let Some(url) = url else { continue };
        let roles = wallet_core_postgres::prepare(&url, schema)
            .await
            .with_context(|| format!("preparing the {schema} database"))?;
        println!(
            "{schema} database: migrated; owner role {}, runtime role {}",
            roles.owner, roles.app
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the core's audit over the three databases' read ports; prints the
/// report and fails when it found a violation.
pub async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let settings = settings();
    let url = |url: Option<String>, flag: &str| url.with_context(|| format!("audit needs {flag}"));
    let databases = args.databases;
    let transfers = url(databases.transaction_db, "--transaction-db")?;
    let wallets = url(databases.wallet_db, "--wallet-db")?;
    let ledger = url(databases.ledger_db, "--ledger-db")?;
    let connect = |url: String, service: &'static str| {
        let settings = settings.clone();
        async move {
            settings
                .connect(&url)
                .await
                .with_context(|| format!("connecting to the {service} database"))
        }
    };
    let transfers = PgTransferStore::new(connect(transfers, "transaction").await?, &settings);
    let wallets = PgWalletStore::new(connect(wallets, "wallet").await?, &settings);
    let ledger = PgLedgerStore::new(connect(ledger, "ledger").await?, &settings);
    let scope = if args.scope == "always" {
        Scope::Always
    } else {
        Scope::Quiet
    };
    let audit = Audit {
        scope,
        page_size: args.page_size.max(1),
        stuck_after: (args.stuck_after_secs > 0).then(|| {
            (
                SystemClock.now(),
                Duration::from_secs(args.stuck_after_secs),
            )
        }),
    };
    let report = audit
        .run(&transfers, &wallets, &ledger)
        .await
        .context("reading the databases")?;
    print!("{}", table(&args.scope, &report));
    Ok(if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The report as a table: what was read, the sums per currency, and one
/// line per violation naming its ids.
pub fn table(scope: &str, report: &AuditReport) -> String {
    let mut out = format!("walletctl audit (scope {scope})\n");
    let mut line = |label: &str, value: String| out.push_str(&format!("  {label:<18} {value}\n"));
    line("wallets", report.wallets.to_string());
    line("reservations", report.reservations.to_string());
    line("ledger entries", report.entries.to_string());
    line("transfers", report.transfers.to_string());
    for (currency, sum) in &report.sums {
        line(&format!("sum {currency}"), sum.value().to_string());
    }
    line("violations", report.violations.len().to_string());
    for violation in &report.violations {
        line("violation", violation.to_string());
    }
    line(
        "result",
        if report.violations.is_empty() {
            "clean"
        } else {
            "VIOLATED"
        }
        .to_owned(),
    );
    out
}
