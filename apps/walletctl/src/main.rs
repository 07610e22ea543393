//! `walletctl`: run the wallet system embedded, drive its API, simulate it
//! under faults.

mod bench;
mod broker_floor;
mod client;
mod dead_letters;
mod dev;
mod offsets;
mod postgres;
mod sim;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use client::{Client, HoldCommand, Movement, TagArgs, Target, TransfersCommand, WalletCommand};

#[derive(Debug, Parser)]
#[command(name = "walletctl", version, about)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the three services, their relays and consumers in this process on
    /// the in-memory adapters, serving every public route on one address.
    Dev {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Open, show and list wallets.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// Move money into a wallet from outside.
    Deposit {
        /// Wallet id.
        wallet: String,
        #[command(flatten)]
        movement: Movement,
    },
    /// Move money out of a wallet.
    Withdraw {
        /// Wallet id.
        wallet: String,
        #[command(flatten)]
        movement: Movement,
    },
    /// Move money between two wallets.
    Transfer {
        /// Sender wallet id.
        #[arg(long)]
        from: String,
        /// Receiver wallet id.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        movement: Movement,
    },
    /// Hold funds now; capture, void or let them expire later.
    #[command(subcommand)]
    Hold(HoldCommand),
    /// Send a SUCCEEDED transfer's money back, in whole or in part.
    Refund {
        /// The transfer refunded.
        id: String,
        /// Amount as a decimal string; the transfer's whole amount when
        /// absent.
        #[arg(long)]
        amount: Option<String>,
        /// Idempotency key; a fresh one is made when absent.
        #[arg(long)]
        key: Option<String>,
        /// Wait up to this many milliseconds for the refund to finish.
        #[arg(long, default_value_t = 5_000)]
        wait_ms: u64,
        #[command(flatten)]
        tags: TagArgs,
    },
    /// List transfers, newest first, with filters.
    #[command(subcommand)]
    Transfers(TransfersCommand),
    /// Show a transfer, waiting for it to finish.
    Status {
        /// Transfer id.
        id: String,
        /// Wait up to this many milliseconds for a terminal status.
        #[arg(long, default_value_t = 0)]
        wait_ms: u64,
    },
    /// Simulate the whole saga under faults, deterministically, from seeds.
    Sim(sim::SimArgs),
    /// Measure throughput and latency: over HTTP against `--url` (loopback
    /// only), or in-process with `--embedded`.
    Bench(bench::BenchArgs),
    /// Measure the broker's own produce-to-consume latency, one record at a
    /// time, with the services' client settings (loopback brokers only).
    BrokerFloor(broker_floor::BrokerFloorArgs),
    /// Prepare the services' PostgreSQL databases (any of the three): create
    /// or check their owner and runtime roles (`<db>_owner`, `<db>_app`),
    /// apply the migrations as the owner (applied ones are skipped), and
    /// grant the runtime role exactly what its service does. Safe to repeat.
    Migrate(postgres::Databases),
    /// Check the system's invariants on the three PostgreSQL databases, in
    /// pages; exits non-zero, naming the ids, on any violation.
    Audit(postgres::AuditArgs),
    /// A service database's outbox rows set aside as unreadable: list them,
    /// or put them back in line once their cause is fixed.
    #[command(subcommand)]
    Outbox(postgres::OutboxCommand),
    /// A consumer group's dead letters (`<group>.dlq` on the broker): list
    /// them, show one, or publish their events again once their cause is
    /// fixed.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLettersCommand),
    /// A consumer group's committed offsets: moved back, after its
    /// service's database was restored from a backup, so that what it had
    /// applied since is delivered again.
    #[command(subcommand)]
    Offsets(offsets::OffsetsCommand),
    /// The wallet database's reservations: made again from the transaction
    /// database after a restore from a backup lost some.
    #[command(subcommand)]
    Reservations(postgres::ReservationsCommand),
}

fn main() -> ExitCode {
    let Cli { target, command } = Cli::parse();
    let result = match command {
        // The bench picks its own runtime: one thread in embedded mode.
        Command::Bench(args) => bench::run(args, &target),
        command => {
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            runtime.block_on(run(target, command))
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(target: Target, command: Command) -> anyhow::Result<ExitCode> {
    let client = Client::new(target);
    match command {
        Command::Dev { listen } => dev::run(listen).await?,
        Command::Wallet(command) => client.wallet(command).await?,
        Command::Deposit { wallet, movement } => {
            client.movement(&wallet, "deposits", movement).await?
        }
        Command::Withdraw { wallet, movement } => {
            client.movement(&wallet, "withdrawals", movement).await?
        }
        Command::Transfer { from, to, movement } => client.transfer(&from, &to, movement).await?,
        Command::Status { id, wait_ms } => client.status(&id, wait_ms).await?,
        Command::Hold(command) => client.hold(command).await?,
        Command::Transfers(command) => client.transfers(command).await?,
        Command::Refund {
            id,
            amount,
            key,
            wait_ms,
            tags,
        } => client.refund(&id, amount, key, wait_ms, tags).await?,
        Command::Sim(args) => return sim::run(args),
        Command::Migrate(databases) => return postgres::migrate(databases).await,
        Command::Audit(args) => return postgres::audit(args).await,
        Command::Outbox(command) => return postgres::outbox(command, client.json()).await,
        Command::DeadLetters(command) => return dead_letters::run(command, client.json()).await,
        Command::Offsets(command) => return offsets::run(command, client.json()).await,
        Command::Reservations(command) => {
            return postgres::reservations(command, client.json()).await;
        }
        Command::BrokerFloor(args) => return broker_floor::run(args, client.json()).await,
        Command::Bench(_) => unreachable!("main runs the bench"),
    }
    Ok(ExitCode::SUCCESS)
}
