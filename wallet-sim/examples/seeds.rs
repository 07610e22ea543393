//! Runs a range of seeds and prints the summary table: the library's loop
//! without the CLI (`walletctl sim --seeds A..B` adds a progress bar).
//!
//! `cargo run --release -p wallet-sim --example seeds -- 0..1000 [transfers] [fault_rate]`

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let range = args.first().map_or("0..100", String::as_str);
    let (a, b) = range.split_once("..").expect("a range A..B");
    let (a, b): (u64, u64) = (a.parse().expect("A"), b.parse().expect("B"));
    let mut config = wallet_sim::SimConfig {
        trace_len: 100_000,
        ..wallet_sim::SimConfig::default()
    };
    if let Some(t) = args.get(1) {
        config.transfers = t.parse().expect("transfers");
    }
    if let Some(p) = args.get(2) {
        config.fault_rate = p.parse().expect("fault rate");
    }
    let started = Instant::now();
    let mut summary = wallet_sim::Summary::default();
    for seed in a..b {
        let report = wallet_sim::run(&wallet_sim::SimConfig {
            seed,
            ..config.clone()
        });
        if let Some(f) = &report.failure {
            println!("{f}");
            let shown = std::env::var("SIM_TRACE").map_or(12, |n| n.parse().unwrap_or(12));
            for line in report.trace.iter().rev().take(shown).rev() {
                println!("    {line}");
            }
        }
        summary.add(&report);
    }
    let secs = started.elapsed().as_secs_f64();
    print!("{summary}");
    println!(
        "wall time {secs:.2} s, {:.0} steps/s",
        summary.steps as f64 / secs
    );
}
