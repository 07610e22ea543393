//! `walletctl sim`: the deterministic simulator of the saga under faults.
//!
//! One seed (`--seed S`) prints the run and, on a violation, the seed, the
//! invariant, the step and the last steps of the trace. A range
//! (`--seeds A..B`) runs every seed, on all cores, and prints totals.

use std::io::IsTerminal;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use wallet_sim::{FaultKind, PlantedBug, SimConfig, SimReport, Summary, write_coverage};

/// Options of `walletctl sim`.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["seed", "seeds"])))]
pub struct SimArgs {
    /// Run one seed; on a violation, print its trace.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run every seed of a range: `A..B` (B excluded) or `A..=B`.
    #[arg(long, value_parser = parse_seeds)]
    pub seeds: Option<Range<u64>>,
    /// Client requests per run.
    #[arg(long, default_value_t = 200)]
    pub transfers: usize,
    /// User wallets opened before the first request.
    #[arg(long, default_value_t = 8)]
    pub wallets: usize,
    /// Share of steps that inject a fault, 0 to 1.
    #[arg(long, default_value_t = 0.1, value_parser = parse_rate)]
    pub fault_rate: f64,
    /// Partitions per topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Largest batch of a consumer step or a relay pass.
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// Steps of the trace printed with a violation.
    #[arg(long, default_value_t = 40)]
    pub trace: usize,
    /// Print every step of a `--seed` run, not only on a violation.
    #[arg(long)]
    pub verbose: bool,
    /// Threads for `--seeds`; default: the available cores.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Plant a known bug, to see how the simulator reports one.
    #[arg(long, value_enum, hide = true)]
    pub planted_bug: Option<Planted>,
}

/// The bugs `--planted-bug` can plant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Planted {
    /// The ledger consumer posts a redelivered reservation again.
    DoublePosting,
    /// A reserve timeout is taken for a refusal.
    FailOnTimeout,
    /// The wallet store's refusals are published after its unit, as the
    /// old design did, instead of through its outbox.
    DeadLetterOutsideUnit,
    /// The hold sweeper takes every expiry as done without asking the
    /// wallet service.
    ExpireWithoutWallet,
}

/// Runs `walletctl sim`; the exit code is non-zero when a run broke an
/// invariant.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let config = SimConfig {
        transfers: args.transfers,
        wallets: args.wallets,
        fault_rate: args.fault_rate,
        partitions: args.partitions.max(1),
        max_batch: args.max_batch.max(1),
        trace_len: args.trace,
        planted_bug: args.planted_bug.map(|bug| match bug {
            Planted::DoublePosting => PlantedBug::DoublePosting,
            Planted::FailOnTimeout => PlantedBug::FailOnTimeout,
            Planted::DeadLetterOutsideUnit => PlantedBug::DeadLetterOutsideUnit,
            Planted::ExpireWithoutWallet => PlantedBug::ExpireWithoutWallet,
        }),
        ..SimConfig::default()
    };
    // The simulator reports a panic of the core as a violation, with its
    // message; the default hook would print it again over the progress bar.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let code = match (args.seed, args.seeds) {
        (Some(seed), _) => run_one(SimConfig { seed, ..config }, args.verbose),
        (None, Some(seeds)) => {
            let jobs = args.jobs.unwrap_or_else(available_cores).max(1);
            run_many(seeds, &config, jobs)
        }
        (None, None) => anyhow::bail!("give --seed S or --seeds A..B"),
    };
    std::panic::set_hook(hook);
    Ok(code)
}

/// One run, without the services' logs: the trace is the record.
fn simulate(config: &SimConfig) -> SimReport {
    let quiet = tracing::subscriber::NoSubscriber::default();
    tracing::subscriber::with_default(quiet, || wallet_sim::run(config))
}

fn run_one(mut config: SimConfig, verbose: bool) -> ExitCode {
    let shown = config.trace_len;
    if verbose {
        config.trace_len = usize::MAX;
    }
    let started = Instant::now();
    // On a thread of its own: the caller may be inside a tokio runtime, and
    // the simulator's executor must not meet tokio's cooperative budget.
    let report = std::thread::scope(|scope| scope.spawn(|| simulate(&config)).join())
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    let elapsed = started.elapsed();
    if verbose {
        report.trace.iter().for_each(|line| println!("{line}"));
    }
    println!(
        "seed {}: {}, {} steps, {} requests, {} transfers ({} succeeded), {} faults, trace hash {:016x}, {:.2} s",
        report.seed,
        if report.failure.is_some() {
            "FAILED"
        } else {
            "passed"
        },
        report.steps,
        report.requests.values().sum::<u64>(),
        report.transfers,
        report.succeeded,
        report.faults_total(),
        report.trace_hash,
        elapsed.as_secs_f64(),
    );
    println!("faults: {}", fault_counts(&report));
    let mut coverage = String::new();
    write_coverage(&mut coverage, &report.coverage).expect("writing to a string");
    print!("transitions reached\n{coverage}");
    let Some(failure) = &report.failure else {
        return ExitCode::SUCCESS;
    };
    println!("\n{failure}");
    if !verbose {
        let skip = report.trace.len().saturating_sub(shown);
        println!("last steps:");
        report.trace[skip..]
            .iter()
            .for_each(|line| println!("{line}"));
    }
    println!("\nreplay: {}", replay_command(&config));
    ExitCode::FAILURE
}

fn fault_counts(report: &SimReport) -> String {
    let counts: Vec<String> = FaultKind::ALL
        .iter()
        .filter_map(|k| report.faults.get(k).map(|n| format!("{k} {n}")))
        .collect();
    if counts.is_empty() {
        "none".to_owned()
    } else {
        counts.join(", ")
    }
}

fn run_many(seeds: Range<u64>, config: &SimConfig, jobs: usize) -> ExitCode {
    let bar = progress(seeds.end - seeds.start);
    let next = AtomicU64::new(seeds.start);
    let summary = Mutex::new(Summary::default());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= seeds.end {
                        break;
                    }
                    let report = simulate(&SimConfig {
                        seed,
                        ..config.clone()
                    });
                    let mut summary = summary.lock().expect("summary lock");
                    summary.add(&report);
                    bar.set_message(format!("{} failed", summary.failures.len()));
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let summary = summary.into_inner().expect("summary lock");
    print_summary(&summary, &seeds, config, jobs, started.elapsed());
    if summary.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_summary(
    summary: &Summary,
    seeds: &Range<u64>,
    config: &SimConfig,
    jobs: usize,
    elapsed: Duration,
) {
    println!(
        "seeds {}..{}: {} requests per run, {} wallets, fault rate {}, {} partitions, max batch {}",
        seeds.start,
        seeds.end,
        config.transfers,
        config.wallets,
        config.fault_rate,
        config.partitions,
        config.max_batch
    );
    print!("{summary}");
    let secs = elapsed.as_secs_f64();
    println!("time");
    println!("  {:<56} {:>10.2}", "wall seconds", secs);
    println!("  {:<56} {:>10}", "threads", jobs);
    println!(
        "  {:<56} {:>10.0}",
        "steps per second",
        summary.steps as f64 / secs
    );
    if summary.failures.is_empty() {
        return;
    }
    println!("\nfailing seeds:");
    for failure in &summary.failures {
        println!("  {failure}");
        let replay = SimConfig {
            seed: failure.seed,
            ..config.clone()
        };
        println!("    replay: {}", replay_command(&replay));
    }
}

/// A bar on stderr when it is a terminal; hidden otherwise, so logs and
/// pipes get only the summary.
fn progress(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {msg} ({per_sec}, eta {eta})",
    )
    .expect("valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// The command that replays `config`.
fn replay_command(config: &SimConfig) -> String {
    let planted = match config.planted_bug {
        Some(PlantedBug::DoublePosting) => " --planted-bug double-posting",
        Some(PlantedBug::FailOnTimeout) => " --planted-bug fail-on-timeout",
        Some(PlantedBug::DeadLetterOutsideUnit) => " --planted-bug dead-letter-outside-unit",
        Some(PlantedBug::ExpireWithoutWallet) => " --planted-bug expire-without-wallet",
        _ => "",
    };
    format!(
        "walletctl sim --seed {} --transfers {} --wallets {} --fault-rate {} --partitions {} --max-batch {}{planted}",
        config.seed,
        config.transfers,
        config.wallets,
        config.fault_rate,
        config.partitions,
        config.max_batch
    )
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `A..B` or `A..=B`, not empty.
fn parse_seeds(text: &str) -> Result<Range<u64>, String> {
    let parse = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("{s:?}: {e}"));
    let range = if let Some((a, b)) = text.split_once("..=") {
        parse(a)?..parse(b)?.checked_add(1).ok_or("range end too large")?
    } else if let Some((a, b)) = text.split_once("..") {
        parse(a)?..parse(b)?
    } else {
        return Err(format!("{text:?} is not a range A..B"));
    };
    if range.is_empty() {
        return Err(format!("{text:?} is an empty range"));
    }
    Ok(range)
}

/// A probability.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_with_or_without_the_end() {
        assert_eq!(parse_seeds("0..1000"), Ok(0..1000));
        assert_eq!(parse_seeds("5..=7"), Ok(5..8));
        assert!(parse_seeds("7..7").is_err());
        assert!(parse_seeds("7").is_err());
        assert!(parse_rate("1.5").is_err());
        assert_eq!(parse_rate("0.25"), Ok(0.25));
    }
}
