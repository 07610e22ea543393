//! `walletctl bench`: the measuring tool.
//!
//! Two modes, one report:
//!
//! - HTTP (`walletctl bench --url URL`): opens `--wallets` wallets, funds each
//!   with a deposit, sends `--transfers` operations from `--concurrency`
//!   workers over one pooled keep-alive client while `--pollers` tasks
//!   long-poll every accepted transfer (`GET /v1/transfers/{id}?wait_ms=N`)
//!   until it is terminal. Only loopback targets are accepted.
//! - Embedded (`walletctl bench --embedded`): the same operations straight
//!   into the library on the in-memory adapters, on a current-thread tokio
//!   runtime (so the figures are per core), creating `--batch` transfers and
//!   then pumping the relays and consumers until nothing moves.
//!
//! Measured per operation: the API latency (request sent to answer read, or
//! the `create` call in embedded mode) and, for accepted transfers, the time
//! to terminal (request sent to the first observation of SUCCEEDED or
//! FAILED; in embedded mode, to the end of the pump in which it became
//! terminal). Percentiles use the nearest-rank method over all samples.
//!
//! Everything is bounded: each HTTP request has a timeout, each transfer is
//! waited for at most `--max-wait-ms`, and no new operation starts after
//! `--time-limit-secs`. What did not finish in time is reported as not
//! completed.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use wallet_core::ids::{IdempotencyKey, TransferId, WalletId};
use wallet_core::memory::{Embedded, EmbeddedConfig};
use wallet_core::money::{Amount, Currency};
use wallet_core::service::{CreateError, Parties, TransferRequest};
use wallet_core::transfer::TransferStatus;

use crate::client::Target;

/// The share of operations that are deposits and withdrawals when `--mix`
/// is given without a value: 10 %.
pub const DEFAULT_MIX: &str = "0.1";

/// Options of `walletctl bench`. The target is the global `--url` (or
/// `WALLET_API_URL`); the global `--json` prints the report as one JSON
/// object.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Drive the library in-process on the in-memory adapters instead of an
    /// HTTP API.
    #[arg(long)]
    pub embedded: bool,
    /// Wallets opened and funded before the measured operations.
    #[arg(long, default_value_t = 100)]
    pub wallets: usize,
    /// Measured operations (transfers, and deposits and withdrawals under
    /// `--mix`).
    #[arg(long, default_value_t = 10_000)]
    pub transfers: usize,
    /// HTTP requests sending operations at once. Not used in embedded mode.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Tasks long-polling accepted transfers until terminal; default: 4 x
    /// the concurrency.
    #[arg(long)]
    pub pollers: Option<usize>,
    /// HTTP: send at this many operations per second at most, operation i
    /// not before i / RATE seconds into the run (a paced load, to measure
    /// latency below the peak); default: as fast as the senders go.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<f64>,
    /// Embedded mode: transfers created between two rounds of pumping.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Choose every pair among the first K wallets only (contention), instead
    /// of uniformly among all of them.
    #[arg(long, value_name = "K")]
    pub hot: Option<usize>,
    /// Make a share (0 to 1) of the operations deposits and withdrawals, half
    /// each; `--mix` alone means 0.1.
    #[arg(long, value_name = "SHARE", num_args = 0..=1,
        default_missing_value = DEFAULT_MIX, value_parser = parse_share)]
    pub mix: Option<f64>,
    /// Amount of each operation, as a decimal string.
    #[arg(long, default_value = "1.00")]
    pub amount: String,
    /// Deposit that funds each wallet before the run; default: the amount
    /// times the number of operations, so no sender runs dry.
    #[arg(long)]
    pub fund: Option<String>,
    /// Currency of every wallet.
    #[arg(long, default_value = "USD")]
    pub currency: String,
    /// Seed of the random choice of wallets.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Timeout of one HTTP request (a long poll gets its wait on top).
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Longest wait for one accepted transfer to be terminal, from its
    /// request; past it, it counts as not completed.
    #[arg(long, default_value_t = 60_000)]
    pub max_wait_ms: u64,
    /// No new operation starts after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub time_limit_secs: u64,
    /// HTTP: wait this long between the setup (wallets opened and funded)
    /// and the measured operations, so that the work the setup left behind
    /// is done when they start.
    #[arg(long, default_value_t = 0)]
    pub settle_ms: u64,
    /// HTTP: print `walletctl bench: measuring` on standard error when the
    /// measured operations start (after the setup and the settle) and
    /// `walletctl bench: measured` when the last one is over (before the
    /// report), for a tool that samples the system around them.
    #[arg(long)]
    pub mark_phases: bool,
}

/// The line `--mark-phases` prints when the measured operations start.
pub const MEASURING: &str = "walletctl bench: measuring";
/// The line `--mark-phases` prints when the last measured operation is over.
pub const MEASURED: &str = "walletctl bench: measured";

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("{text:?} is not a share between 0 and 1")),
    }
}

/// Runs `walletctl bench` and prints its report.
pub fn run(args: BenchArgs, target: &Target) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_args(&args, target)?;
    let progress = progress_bar(settings.operations as u64, target.json);
    let report = if args.embedded {
        // One thread: the embedded figures are per core.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(embedded(&settings, &progress))?
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(http(&settings, &progress))?
    };
    progress.finish_and_clear();
    if target.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(len: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{spinner} {msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
    )
    .expect("valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message("setting up");
    bar
}

/// The checked options both modes run from.
#[derive(Debug, Clone)]
struct Settings {
    mode: &'static str,
    target: Option<String>,
    wallets: usize,
    operations: usize,
    concurrency: usize,
    pollers: usize,
    rate: Option<f64>,
    batch: usize,
    hot: Option<usize>,
    mix: f64,
    amount: Decimal,
    fund: Decimal,
    currency: Currency,
    seed: u64,
    timeout: Duration,
    max_wait: Duration,
    time_limit: Duration,
    settle: Duration,
    mark_phases: bool,
}

impl Settings {
    fn from_args(args: &BenchArgs, target: &Target) -> anyhow::Result<Settings> {
        let currency = Currency::parse(&args.currency)?;
        let amount = Amount::parse(&args.amount, currency)
            .with_context(|| format!("--amount {}", args.amount))?
            .value();
        let fund = match &args.fund {
            Some(text) => Amount::parse(text, currency)
                .with_context(|| format!("--fund {text}"))?
                .value(),
            None => (amount * Decimal::from(args.transfers.max(1))).min(Amount::MAX),
        };
        ensure!(args.wallets >= 2, "--wallets must be at least 2");
        if let Some(hot) = args.hot {
            ensure!(
                (2..=args.wallets).contains(&hot),
                "--hot must be between 2 and --wallets ({})",
                args.wallets
            );
        }
        ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
        ensure!(args.batch >= 1, "--batch must be at least 1");
        if let Some(rate) = args.rate {
            ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number of operations per second"
            );
            ensure!(
                !args.embedded,
                "--rate paces HTTP requests: not with --embedded"
            );
        }
        ensure!(
            !args.embedded || (args.settle_ms == 0 && !args.mark_phases),
            "--settle-ms and --mark-phases are for HTTP runs: not with --embedded"
        );
        let target = match args.embedded {
            true => None,
            false => Some(loopback_base(&target.url)?),
        };
        Ok(Settings {
            mode: if args.embedded { "embedded" } else { "http" },
            target,
            wallets: args.wallets,
            operations: args.transfers,
            concurrency: if args.embedded { 1 } else { args.concurrency },
            pollers: args.pollers.unwrap_or(args.concurrency * 4).max(1),
            rate: args.rate,
            batch: args.batch,
            hot: args.hot,
            mix: args.mix.unwrap_or(0.0),
            amount,
            fund,
            currency,
            seed: args.seed,
            timeout: Duration::from_millis(args.timeout_ms.max(1)),
            max_wait: Duration::from_millis(args.max_wait_ms),
            time_limit: Duration::from_secs(args.time_limit_secs),
            settle: Duration::from_millis(args.settle_ms),
            mark_phases: args.mark_phases,
        })
    }
}

/// The base URL without a trailing slash, if its host is a loopback
/// address: the bench never sends load anywhere else.
fn loopback_base(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid URL {url:?}"))?;
    ensure!(
        parsed.scheme() == "http",
        "walletctl bench speaks plain http, not {}",
        parsed.scheme()
    );
    let host = parsed.host_str().context("the URL has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!(
            "walletctl bench only targets loopback addresses (127.0.0.0/8, [::1], localhost), not {host}"
        );
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// SplitMix64: a small, fast, seedable generator; plenty for choosing
/// wallets.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One measured operation, on wallet indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Transfer { from: usize, to: usize },
    Deposit(usize),
    Withdrawal(usize),
}

/// The operations of a run, all drawn before the clock starts: pairs of
/// distinct wallets among the first `pool`, and under `mix` a share of
/// deposits and withdrawals.
fn plan(operations: usize, pool: usize, mix: f64, seed: u64) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    (0..operations)
        .map(|_| {
            if mix > 0.0 && rng.unit() < mix {
                let wallet = rng.below(pool);
                return match rng.next_u64() & 1 {
                    0 => Op::Deposit(wallet),
                    _ => Op::Withdrawal(wallet),
                };
            }
            let from = rng.below(pool);
            let mut to = rng.below(pool - 1);
            if to >= from {
                to += 1;
            }
            Op::Transfer { from, to }
        })
        .collect()
}

/// What the operations of a run produced, merged from every worker.
#[derive(Debug, Clone, Default)]
struct Tally {
    attempted: usize,
    accepted: usize,
    /// Operations not accepted, by reason.
    failures: BTreeMap<String, usize>,
    api_latency: Vec<Duration>,
    time_to_terminal: Vec<Duration>,
    succeeded: usize,
    /// Accepted transfers that ended FAILED, by reason.
    failed_after_accept: BTreeMap<String, usize>,
    /// HTTP mode: from an accepted answer to its first status request.
    poll_lag: Vec<Duration>,
}

impl Tally {
    fn refused(&mut self, latency: Duration, reason: &str) {
        self.attempted += 1;
        self.api_latency.push(latency);
        *self.failures.entry(reason.to_owned()).or_default() += 1;
    }

    fn accepted(&mut self, latency: Duration) {
        self.attempted += 1;
        self.accepted += 1;
        self.api_latency.push(latency);
    }

    fn completed(&mut self, after: Duration, succeeded: bool, reason: Option<&str>) {
        self.time_to_terminal.push(after);
        if succeeded {
            self.succeeded += 1;
        } else {
            let reason = reason.unwrap_or("unknown").to_owned();
            *self.failed_after_accept.entry(reason).or_default() += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        self.attempted += other.attempted;
        self.accepted += other.accepted;
        for (reason, n) in other.failures {
            *self.failures.entry(reason).or_default() += n;
        }
        self.api_latency.extend(other.api_latency);
        self.time_to_terminal.extend(other.time_to_terminal);
        self.succeeded += other.succeeded;
        self.poll_lag.extend(other.poll_lag);
        for (reason, n) in other.failed_after_accept {
            *self.failed_after_accept.entry(reason).or_default() += n;
        }
    }
}

/// Percentiles of a set of durations, in milliseconds; `null` when there
/// are no samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stats {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
}

impl Stats {
    /// The percentiles of `samples`.
    pub fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Stats {
            count: ms.len(),
            p50: percentile(&ms, 50),
            p95: percentile(&ms, 95),
            p99: percentile(&ms, 99),
            max: ms.last().copied(),
        }
    }

    /// The same, to the microsecond.
    pub fn rounded(self) -> Stats {
        Stats {
            p50: self.p50.map(round3),
            p95: self.p95.map(round3),
            p99: self.p99.map(round3),
            max: self.max.map(round3),
            ..self
        }
    }
}

/// The nearest-rank percentile `p` (1 to 100) of sorted samples: the
/// smallest sample with at least p % of the samples at or below it.
fn percentile(sorted: &[f64], p: usize) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (p * n).div_ceil(100).clamp(1, n);
    Some(sorted[rank - 1])
}

/// The report of one run; `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `http` or `embedded`.
    pub mode: &'static str,
    /// The base URL (HTTP mode), else null.
    pub target: Option<String>,
    /// Wallets opened and funded.
    pub wallets: usize,
    /// K of `--hot K`, else null.
    pub hot: Option<usize>,
    /// Share of deposits and withdrawals among the operations.
    pub mix: f64,
    /// Requests in flight at once (1 in embedded mode).
    pub concurrency: usize,
    /// Tasks long-polling accepted transfers (HTTP mode), else null.
    pub pollers: Option<usize>,
    /// Operations per second the senders were paced at (`--rate`), else
    /// null.
    pub rate: Option<f64>,
    /// Transfers created between two rounds of pumping (embedded mode),
    /// else null.
    pub batch: Option<usize>,
    /// Amount of each operation.
    pub amount: String,
    /// Currency of every wallet.
    pub currency: String,
    /// Seed of the choice of wallets.
    pub seed: u64,
    /// Operations sent.
    pub attempted: usize,
    /// Operations accepted (HTTP 202; in embedded mode, created and not
    /// FAILED).
    pub accepted: usize,
    /// Operations not accepted: the sum of `failures`.
    pub rejected: usize,
    /// Accepted transfers seen SUCCEEDED or FAILED within the max wait.
    pub completed: usize,
    /// Of those, SUCCEEDED.
    pub succeeded: usize,
    /// Accepted transfers not seen terminal within the max wait.
    pub not_completed: usize,
    /// First operation sent to the end of the run (the last terminal state
    /// seen, or the end of the wait), seconds.
    pub wall_time_s: f64,
    /// First operation sent to the last answer, seconds.
    pub send_time_s: f64,
    /// `accepted / send_time_s`.
    pub accepted_per_s: f64,
    /// `completed / wall_time_s`.
    pub completed_per_s: f64,
    /// Request sent to answer, every attempted operation, ms.
    pub api_latency_ms: Stats,
    /// Request sent to terminal state seen, every completed transfer, ms.
    pub time_to_terminal_ms: Stats,
    /// HTTP mode: accepted answer to the first status request about it, ms
    /// (empty in embedded mode). A transfer already terminal by then has its
    /// time to terminal overstated by up to this much.
    pub poll_lag_ms: Stats,
    /// Operations not accepted, by reason: the API's error code of a 422
    /// (`insufficient_funds`, ...), `http_<status>` for other statuses,
    /// `timeout` or `transport_error` when no answer came.
    pub failures: BTreeMap<String, usize>,
    /// Accepted transfers that ended FAILED, by failure reason.
    pub failed_after_accept: BTreeMap<String, usize>,
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn per_second(count: usize, time: Duration) -> f64 {
    match time.as_secs_f64() {
        secs if secs > 0.0 => round3(count as f64 / secs),
        _ => 0.0,
    }
}

impl Report {
    fn new(settings: &Settings, tally: Tally, send_time: Duration, wall_time: Duration) -> Report {
        let completed = tally.time_to_terminal.len();
        Report {
            mode: settings.mode,
            target: settings.target.clone(),
            wallets: settings.wallets,
            hot: settings.hot,
            mix: settings.mix,
            concurrency: settings.concurrency,
            pollers: (settings.mode == "http").then_some(settings.pollers),
            rate: settings.rate,
            batch: (settings.mode == "embedded").then_some(settings.batch),
            amount: settings.amount.to_string(),
            currency: settings.currency.to_string(),
            seed: settings.seed,
            attempted: tally.attempted,
            accepted: tally.accepted,
            rejected: tally.failures.values().sum(),
            completed,
            succeeded: tally.succeeded,
            not_completed: tally.accepted.saturating_sub(completed),
            wall_time_s: round3(wall_time.as_secs_f64()),
            send_time_s: round3(send_time.as_secs_f64()),
            accepted_per_s: per_second(tally.accepted, send_time),
            completed_per_s: per_second(completed, wall_time),
            api_latency_ms: Stats::of(&tally.api_latency).rounded(),
            time_to_terminal_ms: Stats::of(&tally.time_to_terminal).rounded(),
            poll_lag_ms: Stats::of(&tally.poll_lag).rounded(),
            failures: tally.failures,
            failed_after_accept: tally.failed_after_accept,
        }
    }

    /// The human-readable form.
    fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("  {label:<18} {value}\n"));
        };
        let target = self
            .target
            .as_deref()
            .unwrap_or("in-process, memory adapters");
        let head = format!("walletctl bench: {} ({target})\n", self.mode);
        let wallets = match self.hot {
            Some(k) => format!("{} (pairs among {k} hot ones)", self.wallets),
            None => self.wallets.to_string(),
        };
        line("wallets", wallets);
        if self.mix > 0.0 {
            line(
                "mix",
                format!("{:.0} % deposits and withdrawals", self.mix * 100.0),
            );
        }
        line(
            "operations",
            format!("{} {} each, seed {}", self.amount, self.currency, self.seed),
        );
        match self.batch {
            Some(batch) => line("batch", batch.to_string()),
            None => line(
                "concurrency",
                format!(
                    "{} ({} pollers)",
                    self.concurrency,
                    self.pollers.unwrap_or_default()
                ),
            ),
        }
        line("attempted", self.attempted.to_string());
        line("accepted", self.accepted.to_string());
        line("rejected", self.rejected.to_string());
        line(
            "completed",
            format!(
                "{} (succeeded {}, failed {})",
                self.completed,
                self.succeeded,
                self.completed - self.succeeded
            ),
        );
        line("not completed", self.not_completed.to_string());
        line(
            "wall time",
            format!(
                "{:.3} s (sending {:.3} s)",
                self.wall_time_s, self.send_time_s
            ),
        );
        line("accepted/s", format!("{:.1}", self.accepted_per_s));
        line("completed/s", format!("{:.1}", self.completed_per_s));
        let mut text = head;
        text.push_str(&out);
        text.push_str(&format!(
            "\n  {:<18} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
            "ms", "p50", "p95", "p99", "max", "samples"
        ));
        let mut rows = vec![
            ("API latency", self.api_latency_ms),
            ("time to terminal", self.time_to_terminal_ms),
        ];
        if self.poll_lag_ms.count > 0 {
            rows.push(("poll lag", self.poll_lag_ms));
        }
        for (label, s) in rows {
            let cell = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
            text.push_str(&format!(
                "  {label:<18} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
                cell(s.p50),
                cell(s.p95),
                cell(s.p99),
                cell(s.max),
                s.count
            ));
        }
        for (title, map) in [
            ("failures", &self.failures),
            ("failed after accept", &self.failed_after_accept),
        ] {
            if !map.is_empty() {
                text.push_str(&format!("\n  {title}\n"));
                for (reason, n) in map {
                    text.push_str(&format!("    {reason:<24} {n}\n"));
                }
            }
        }
        text
    }
}

// ---------------------------------------------------------------- embedded

/// The API error code a refused request would get over HTTP.
fn create_error_code(error: &CreateError) -> &'static str {
    match error {
        CreateError::InvalidAmount(_) => "invalid_amount",
        CreateError::WalletNotFound(_) => "wallet_not_found",
        CreateError::SameWallet => "same_wallet",
        CreateError::CurrencyMismatch(_) => "currency_mismatch",
        CreateError::KeyReused => "idempotency_key_reused",
        CreateError::InFlight => "idempotency_key_in_flight",
        CreateError::Gateway(_) | CreateError::Store(_) => "unavailable",
        _ => "error",
    }
}

fn parties(op: Op, wallets: &[WalletId]) -> Parties {
    match op {
        Op::Transfer { from, to } => Parties::Transfer {
            sender: wallets[from],
            receiver: wallets[to],
        },
        Op::Deposit(w) => Parties::Deposit(wallets[w]),
        Op::Withdrawal(w) => Parties::Withdrawal(wallets[w]),
    }
}

async fn embedded(settings: &Settings, progress: &ProgressBar) -> anyhow::Result<Report> {
    let mut system = Embedded::new(EmbeddedConfig::default());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let request = |key: String, parties: Parties, amount: Decimal| -> anyhow::Result<_> {
        Ok(TransferRequest {
            tags: Default::default(),
            key: IdempotencyKey::new(key)?,
            parties,
            amount,
            currency: Some(settings.currency),
        })
    };

    let mut wallets = Vec::with_capacity(settings.wallets);
    for _ in 0..settings.wallets {
        wallets.push(system.wallets.open(settings.currency).await?.id);
    }
    for (i, wallet) in wallets.iter().enumerate() {
        let funding = request(
            format!("{run}-fund-{i}"),
            Parties::Deposit(*wallet),
            settings.fund,
        )?;
        let created = system.transactions.create(funding).await?;
        ensure!(
            created.transfer.status != TransferStatus::Failed,
            "funding deposit refused: {:?}",
            created.transfer.failure_reason
        );
    }
    system.drain().await;

    let pool = settings.hot.unwrap_or(settings.wallets);
    let ops = plan(settings.operations, pool, settings.mix, settings.seed);
    progress.set_message("sending");
    let mut tally = Tally::default();
    let mut pending: Vec<(TransferId, Instant)> = Vec::new();
    let start = Instant::now();
    let mut last_answer = start;
    for (b, chunk) in ops.chunks(settings.batch).enumerate() {
        if start.elapsed() >= settings.time_limit {
            break;
        }
        for (j, op) in chunk.iter().enumerate() {
            let i = b * settings.batch + j;
            let req = request(
                format!("{run}-{i}"),
                parties(*op, &wallets),
                settings.amount,
            )?;
            let sent = Instant::now();
            let result = system.transactions.create(req).await;
            let latency = sent.elapsed();
            match result {
                Ok(created) if created.transfer.status == TransferStatus::Failed => {
                    let reason = created.transfer.failure_reason.map(|r| r.code());
                    tally.refused(latency, reason.unwrap_or("transfer_failed"));
                }
                Ok(created) => {
                    tally.accepted(latency);
                    pending.push((created.transfer.id, sent));
                }
                Err(error) => tally.refused(latency, create_error_code(&error)),
            }
        }
        last_answer = Instant::now();
        pump_and_observe(&mut system, &mut pending, &mut tally).await?;
        progress.inc(chunk.len() as u64);
    }
    let send_time = last_answer - start;

    // Nothing should be left: the in-memory reserve always answers. Should
    // a transfer be INITIATED all the same, give the retrier its chance,
    // within the max wait.
    let deadline = Instant::now() + settings.max_wait;
    while !pending.is_empty() && Instant::now() < deadline {
        system.transactions.retry_pending().await?;
        if pump_and_observe(&mut system, &mut pending, &mut tally).await? == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let wall_time = start.elapsed();
    Ok(Report::new(settings, tally, send_time, wall_time))
}

/// Pumps until no event moves; after each pump that moved something, the
/// pending transfers that are now terminal are recorded with the end of
/// that pump as their terminal time. Returns the events moved.
async fn pump_and_observe(
    system: &mut Embedded,
    pending: &mut Vec<(TransferId, Instant)>,
    tally: &mut Tally,
) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let moved = system.pump().await;
        if moved == 0 {
            return Ok(total);
        }
        total += moved;
        let pumped = Instant::now();
        let mut i = 0;
        while i < pending.len() {
            let (id, sent) = pending[i];
            match system.transactions.transfer(id).await? {
                Some(t) if t.status.is_terminal() => {
                    let reason = t.failure_reason.map(|r| r.code());
                    tally.completed(pumped - sent, t.status == TransferStatus::Succeeded, reason);
                    pending.swap_remove(i);
                }
                _ => i += 1,
            }
        }
    }
}

// -------------------------------------------------------------------- http

/// An accepted transfer to watch until it is terminal.
struct Accepted {
    id: String,
    sent: Instant,
    answered: Instant,
}

/// What a terminal transfer looked like when first seen.
struct Terminal {
    succeeded: bool,
    reason: Option<String>,
    seen: Instant,
}

fn terminal(body: &Value, seen: Instant) -> Option<Terminal> {
    match body["status"].as_str()? {
        "SUCCEEDED" | "FAILED" => Some(Terminal {
            succeeded: body["status"] == "SUCCEEDED",
            reason: body["failure_reason"].as_str().map(str::to_owned),
            seen,
        }),
        _ => None,
    }
}

/// One shared, pooled keep-alive client; every request has a timeout.
struct Api {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
}

impl Api {
    fn new(base: String, settings: &Settings) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .pool_max_idle_per_host(settings.concurrency * 2 + 4)
            .tcp_nodelay(true)
            .build()?;
        Ok(Api {
            http,
            base,
            timeout: settings.timeout,
        })
    }

    /// POSTs `body`; the status and JSON body, or why nothing came back.
    async fn post(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> Result<(u16, Value), &'static str> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        read(request.send().await).await
    }

    /// Polls a wallet until it shows `available` (as the API writes it) or
    /// `deadline` passes; whether it did.
    async fn wait_available(&self, id: &str, available: &str, deadline: Instant) -> bool {
        let url = format!("{}/v1/wallets/{id}", self.base);
        loop {
            if let Ok((200, wallet)) = read(self.http.get(&url).send().await).await {
                let shown = wallet["available"]
                    .as_str()
                    .and_then(|a| a.parse::<Decimal>().ok());
                if shown.is_some_and(|a| Some(a) == available.parse::<Decimal>().ok()) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Long-polls a transfer until it is terminal or `deadline` passes.
    async fn wait_terminal(&self, id: &str, deadline: Instant) -> Option<Terminal> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait_ms = (left.as_millis() as u64).min(transaction_service::MAX_WAIT_MS);
            let url = format!("{}/v1/transfers/{id}?wait_ms={wait_ms}", self.base);
            let request = self
                .http
                .get(url)
                .timeout(Duration::from_millis(wait_ms) + self.timeout);
            let answer = read(request.send().await).await;
            let seen = Instant::now();
            let failed = match answer {
                Ok((200, body)) => match terminal(&body, seen) {
                    Some(done) => return Some(done),
                    None => false,
                },
                _ => true,
            };
            if Instant::now() >= deadline {
                return None;
            }
            if failed {
                // Not a long poll: do not spin on an error.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn read(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<(u16, Value), &'static str> {
    let response = sent.map_err(transport_reason)?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

fn transport_reason(error: reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else {
        "transport_error"
    }
}

/// The reason an answer other than 202 is counted under.
fn refusal_reason(status: u16, body: &Value) -> String {
    match (status, body["error"]["code"].as_str()) {
        (422, Some(code)) => code.to_owned(),
        _ => format!("http_{status}"),
    }
}

fn op_request(op: Op, wallets: &[String], amount: &str) -> (String, Value) {
    match op {
        Op::Transfer { from, to } => (
            "/v1/transfers".to_owned(),
            json!({
                "sender_wallet_id": wallets[from],
                "receiver_wallet_id": wallets[to],
                "amount": amount,
            }),
        ),
        Op::Deposit(w) => (
            format!("/v1/wallets/{}/deposits", wallets[w]),
            json!({ "amount": amount }),
        ),
        Op::Withdrawal(w) => (
            format!("/v1/wallets/{}/withdrawals", wallets[w]),
            json!({ "amount": amount }),
        ),
    }
}

async fn http(settings: &Settings, progress: &ProgressBar) -> anyhow::Result<Report> {
    let base = settings.target.clone().context("no target")?;
    let api = Arc::new(Api::new(base.clone(), settings)?);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let wallets = Arc::new(setup_wallets(&api, settings, &run).await?);

    let pool = settings.hot.unwrap_or(settings.wallets);
    let ops = Arc::new(plan(settings.operations, pool, settings.mix, settings.seed));
    let amount: Arc<str> = settings.amount.to_string().into();
    let next = Arc::new(AtomicUsize::new(0));
    let (accepted_tx, accepted_rx) = mpsc::unbounded_channel::<Accepted>();
    let accepted_rx = Arc::new(Mutex::new(accepted_rx));
    if !settings.settle.is_zero() {
        progress.set_message("settling");
        tokio::time::sleep(settings.settle).await;
    }
    if settings.mark_phases {
        eprintln!("{MEASURING}");
    }
    progress.set_message("sending");
    let start = Instant::now();
    let stop_sending = start + settings.time_limit;

    // Senders: C workers take the next operation until none is left.
    let mut senders = Vec::with_capacity(settings.concurrency);
    for _ in 0..settings.concurrency {
        let (api, wallets, ops, amount, next) = (
            api.clone(),
            wallets.clone(),
            ops.clone(),
            amount.clone(),
            next.clone(),
        );
        let (accepted_tx, progress, run) = (accepted_tx.clone(), progress.clone(), run.clone());
        let rate = settings.rate;
        senders.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut last_answer = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops.len() || Instant::now() >= stop_sending {
                    return (tally, last_answer);
                }
                if let Some(rate) = rate {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let (path, body) = op_request(ops[i], &wallets, &amount);
                let key = format!("{run}-{i}");
                let sent = Instant::now();
                let answer = api.post(&path, Some(&key), &body).await;
                let answered = Instant::now();
                let latency = answered - sent;
                last_answer = Some(answered);
                match answer {
                    Ok((202, body)) => {
                        tally.accepted(latency);
                        if let Some(done) = terminal(&body, answered) {
                            tally.completed(latency, done.succeeded, done.reason.as_deref());
                        } else if let Some(id) = body["id"].as_str() {
                            let id = id.to_owned();
                            // The waiters outlive the senders: a send cannot fail.
                            let _ = accepted_tx.send(Accepted { id, sent, answered });
                        }
                    }
                    Ok((status, body)) => tally.refused(latency, &refusal_reason(status, &body)),
                    Err(reason) => tally.refused(latency, reason),
                }
                progress.inc(1);
            }
        }));
    }
    drop(accepted_tx);

    // Pollers long-poll accepted transfers, in the order they were accepted,
    // while the senders go on. Too few of them and accepted transfers queue
    // here, overstating the time to terminal: the report's poll lag shows
    // by how much at most.
    let mut waiters = Vec::with_capacity(settings.pollers);
    for _ in 0..settings.pollers {
        let (api, accepted_rx, max_wait) = (api.clone(), accepted_rx.clone(), settings.max_wait);
        waiters.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let next = accepted_rx.lock().await.recv().await;
                let Some(Accepted { id, sent, answered }) = next else {
                    return tally;
                };
                tally.poll_lag.push(answered.elapsed());
                if let Some(done) = api.wait_terminal(&id, sent + max_wait).await {
                    let after = done.seen - sent;
                    tally.completed(after, done.succeeded, done.reason.as_deref());
                }
            }
        }));
    }

    let mut tally = Tally::default();
    let mut last_answer = start;
    for sender in senders {
        let (part, last) = sender.await?;
        tally.merge(part);
        last_answer = last_answer.max(last.unwrap_or(start));
    }
    progress.set_message("waiting for terminal states");
    for waiter in waiters {
        tally.merge(waiter.await?);
    }
    let wall_time = start.elapsed();
    if settings.mark_phases {
        eprintln!("{MEASURED}");
    }
    Ok(Report::new(settings, tally, last_answer - start, wall_time))
}

/// Opens and funds the wallets (not measured), waiting for every funding
/// deposit to succeed.
async fn setup_wallets(
    api: &Arc<Api>,
    settings: &Settings,
    run: &str,
) -> anyhow::Result<Vec<String>> {
    let limit = Arc::new(tokio::sync::Semaphore::new(settings.concurrency));
    let mut tasks = Vec::with_capacity(settings.wallets);
    for i in 0..settings.wallets {
        let (api, limit) = (api.clone(), limit.clone());
        let key = format!("{run}-fund-{i}");
        let (currency, fund) = (settings.currency.to_string(), settings.fund.to_string());
        let max_wait = settings.max_wait;
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await?;
            let opened = api
                .post("/v1/wallets", None, &json!({ "currency": currency }))
                .await;
            let id = match opened {
                Ok((201, body)) => body["id"].as_str().context("wallet without id")?.to_owned(),
                Ok((status, body)) => bail!("opening a wallet: HTTP {status}: {body}"),
                Err(reason) => bail!("opening a wallet at {}: {reason}", api.base),
            };
            let path = format!("/v1/wallets/{id}/deposits");
            let sent = Instant::now();
            let deposit = match api
                .post(&path, Some(&key), &json!({ "amount": fund }))
                .await
            {
                Ok((202, body)) => body,
                Ok((status, body)) => bail!("funding wallet {id}: HTTP {status}: {body}"),
                Err(reason) => bail!("funding wallet {id}: {reason}"),
            };
            let deposit_id = deposit["id"].as_str().context("deposit without id")?;
            match api.wait_terminal(deposit_id, sent + max_wait).await {
                Some(done) if done.succeeded => {}
                Some(done) => bail!("funding wallet {id} failed: {:?}", done.reason),
                None => bail!("funding wallet {id} did not finish in {max_wait:?}"),
            }
            // SUCCEEDED means posted; the wallet service credits the wallet
            // when it applies the same outcome, a moment later. Measured
            // transfers must not meet a wallet not credited yet.
            if !api.wait_available(&id, &fund, sent + max_wait).await {
                bail!("wallet {id} did not show its funding in {max_wait:?}");
            }
            Ok(id)
        }));
    }
    let mut wallets = Vec::with_capacity(tasks.len());
    for task in tasks {
        wallets.push(task.await??);
    }
    Ok(wallets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        // 1..=100 ms, shuffled: the p-th percentile is p ms.
        let mut samples: Vec<Duration> = (1..=100).map(ms).collect();
        samples.reverse();
        samples.swap(3, 70);
        let s = Stats::of(&samples);
        assert_eq!(s.count, 100);
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max),
            (Some(50.0), Some(95.0), Some(99.0), Some(100.0))
        );

        // Ten samples: p50 is the 5th, p95 and p99 round up to the 10th.
        let ten: Vec<Duration> = [7, 1, 9, 3, 5, 2, 8, 10, 4, 6].map(ms).to_vec();
        let s = Stats::of(&ten);
        assert_eq!(
            (s.p50, s.p95, s.p99, s.max),
            (Some(5.0), Some(10.0), Some(10.0), Some(10.0))
        );

        let one = Stats::of(&[Duration::from_micros(1500)]);
        assert_eq!(
            (one.p50, one.p99, one.max),
            (Some(1.5), Some(1.5), Some(1.5))
        );

        let none = Stats::of(&[]);
        assert_eq!((none.count, none.p50, none.max), (0, None, None));
        assert_eq!(percentile(&[], 99), None);
    }

    fn settings() -> Settings {
        Settings {
            mode: "embedded",
            target: None,
            wallets: 4,
            operations: 6,
            concurrency: 1,
            pollers: 1,
            rate: None,
            batch: 500,
            hot: None,
            mix: 0.0,
            amount: Decimal::new(100, 2),
            fund: Decimal::new(600, 2),
            currency: Currency::parse("USD").unwrap(),
            seed: 1,
            timeout: ms(1),
            max_wait: ms(1),
            time_limit: ms(1),
            settle: Duration::ZERO,
            mark_phases: false,
        }
    }

    #[test]
    fn the_report_adds_up_the_tally() {
        let mut tally = Tally::default();
        for latency in [1, 2, 3, 4] {
            tally.accepted(ms(latency));
        }
        tally.refused(ms(5), "insufficient_funds");
        let mut other = Tally::default();
        other.refused(ms(6), "http_503");
        other.refused(ms(7), "insufficient_funds");
        other.completed(ms(10), true, None);
        other.completed(ms(30), false, Some("insufficient_funds"));
        tally.completed(ms(20), true, None);
        tally.merge(other);

        let report = Report::new(&settings(), tally, ms(2_000), ms(4_000));
        assert_eq!(report.attempted, 7);
        assert_eq!(report.accepted, 4);
        assert_eq!(report.rejected, 3);
        assert_eq!(report.accepted + report.rejected, report.attempted);
        assert_eq!(
            (report.completed, report.succeeded, report.not_completed),
            (3, 2, 1)
        );
        assert_eq!(report.accepted_per_s, 2.0);
        assert_eq!(report.completed_per_s, 0.75);
        assert_eq!((report.wall_time_s, report.send_time_s), (4.0, 2.0));
        assert_eq!(report.api_latency_ms.p50, Some(4.0));
        assert_eq!(report.api_latency_ms.max, Some(7.0));
        assert_eq!(report.time_to_terminal_ms.p50, Some(20.0));
        assert_eq!(report.time_to_terminal_ms.p99, Some(30.0));
        let failures: Vec<_> = report
            .failures
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(failures, [("http_503", 1), ("insufficient_funds", 2)]);
        assert_eq!(report.failed_after_accept["insufficient_funds"], 1);
        assert_eq!((report.amount.as_str(), report.batch), ("1.00", Some(500)));

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["time_to_terminal_ms"]["p95"], 30.0);
        assert_eq!(json["failures"]["insufficient_funds"], 2);
        assert_eq!(json["hot"], Value::Null);
        let table = report.table();
        assert!(table.contains("insufficient_funds"), "{table}");
        assert!(table.contains("not completed"), "{table}");
    }

    #[test]
    fn the_plan_is_seeded_and_stays_in_the_pool() {
        let a = plan(2_000, 10, 0.0, 7);
        assert_eq!(a, plan(2_000, 10, 0.0, 7));
        assert_ne!(a, plan(2_000, 10, 0.0, 8));
        for op in &a {
            let Op::Transfer { from, to } = *op else {
                panic!("no mix asked, got {op:?}");
            };
            assert!(from < 10 && to < 10 && from != to, "{op:?}");
        }
        // Every wallet of the pool is used, as sender and as receiver.
        for w in 0..10 {
            assert!(
                a.iter()
                    .any(|op| matches!(op, Op::Transfer { from, .. } if *from == w))
            );
            assert!(
                a.iter()
                    .any(|op| matches!(op, Op::Transfer { to, .. } if *to == w))
            );
        }

        let mixed = plan(10_000, 3, 0.1, 1);
        let movements = mixed
            .iter()
            .filter(|op| !matches!(op, Op::Transfer { .. }))
            .count();
        assert!((800..1_200).contains(&movements), "{movements}");
        assert!(
            mixed
                .iter()
                .any(|op| matches!(op, Op::Deposit(w) if *w < 3))
        );
        assert!(
            mixed
                .iter()
                .any(|op| matches!(op, Op::Withdrawal(w) if *w < 3))
        );
    }

    #[test]
    fn only_loopback_targets_are_accepted() {
        for ok in [
            "http://127.0.0.1:8080/",
            "http://127.3.4.5:1",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert!(loopback_base(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            loopback_base("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        for refused in [
            "http://10.0.0.1:8080",
            "http://192.168.1.2",
            "http://example.invalid",
            "https://127.0.0.1",
            "not a url",
        ] {
            assert!(loopback_base(refused).is_err(), "{refused}");
        }
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn mix_alone_means_the_default_share() {
        use clap::Parser;
        let mix = |args: &[&str]| Cli::parse_from(args).bench.mix;
        assert_eq!(mix(&["bench"]), None);
        assert_eq!(mix(&["bench", "--mix"]), Some(0.1));
        assert_eq!(mix(&["bench", "--mix", "0.3"]), Some(0.3));
        assert!(Cli::try_parse_from(["bench", "--mix", "2"]).is_err());
    }

    #[test]
    fn settle_and_marks_are_for_http_runs() {
        use clap::Parser;
        let target = Target {
            url: "http://127.0.0.1:8080".to_owned(),
            json: true,
        };
        let settings = |args: &[&str]| Settings::from_args(&Cli::parse_from(args).bench, &target);
        let http = settings(&["bench", "--settle-ms", "1500", "--mark-phases"]).unwrap();
        assert_eq!(http.settle, Duration::from_millis(1500));
        assert!(http.mark_phases);
        for embedded in [
            &["bench", "--embedded", "--settle-ms", "1"][..],
            &["bench", "--embedded", "--mark-phases"][..],
        ] {
            let error = settings(embedded).unwrap_err().to_string();
            assert!(error.contains("not with --embedded"), "{error}");
        }
    }

    #[test]
    fn a_mix_share_is_between_zero_and_one() {
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("-0.1").is_err());
        assert!(parse_share("x").is_err());
    }
}
