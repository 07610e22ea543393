//! The simulator over a fixed set of seeds, its determinism, and proof that
//! it catches planted bugs.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use wallet_sim::{
    Coverage, FaultKind, MemoryAdapters, PlantedBug, RequestKind, SimConfig, SimReport, Transition,
    run, run_on,
};

/// The fixed seeds' configuration: realistic request counts, one step in
/// ten a fault.
fn config(seed: u64) -> SimConfig {
    SimConfig {
        transfers: 200,
        fault_rate: 0.1,
        ..SimConfig::new(seed)
    }
}

fn assert_passes(report: &SimReport) {
    if let Some(failure) = &report.failure {
        panic!("{failure}\nlast steps:\n{}", report.trace.join("\n"));
    }
}

/// The reports of seeds 0..40, run once for the tests that read them, on
/// every core.
fn fixed_seeds() -> &'static [SimReport] {
    static REPORTS: OnceLock<Vec<SimReport>> = OnceLock::new();
    REPORTS.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, usize::from) as u64;
        let mut reports: Vec<SimReport> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let seeds = (0..40).filter(move |seed| seed % threads == t);
                    scope.spawn(move || seeds.map(|seed| run(&config(seed))).collect::<Vec<_>>())
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("simulator thread"))
                .collect()
        });
        reports.sort_by_key(|r| r.seed);
        reports
    })
}

#[test]
fn seeds_0_to_40_keep_every_invariant() {
    let failures: Vec<String> = fixed_seeds()
        .iter()
        .filter_map(|r| r.failure.as_ref())
        .map(ToString::to_string)
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
    for report in fixed_seeds() {
        assert_passes(report);
    }
}

#[test]
fn the_fixed_seeds_inject_every_fault_and_send_every_request_kind() {
    let reports = fixed_seeds();
    let faults: BTreeSet<FaultKind> = reports
        .iter()
        .flat_map(|r| r.faults.keys().copied())
        .collect();
    for kind in FaultKind::ALL {
        assert!(faults.contains(&kind), "no {kind} in seeds 0..40");
    }
    let outcomes: BTreeSet<(RequestKind, String)> = reports
        .iter()
        .flat_map(|r| r.requests.keys().cloned())
        .collect();
    for wanted in [
        (RequestKind::RepeatSame, "replayed"),
        (RequestKind::RepeatSame, "in_flight"),
        (RequestKind::RepeatDifferent, "key_reused"),
        (RequestKind::Transfer, "initiated"),
        (RequestKind::Transfer, "crashed"),
        (RequestKind::Transfer, "reserved"),
        (RequestKind::Transfer, "failed:insufficient_funds"),
        (RequestKind::Transfer, "lost_in_flight"),
        (RequestKind::Deposit, "succeeded"),
        (RequestKind::Deposit, "unavailable"),
        (RequestKind::BadAmount, "invalid_amount"),
        (RequestKind::UnknownWallet, "wallet_not_found"),
        (RequestKind::CrossCurrency, "currency_mismatch"),
        (RequestKind::SameWallet, "same_wallet"),
        (RequestKind::InternalReserve, "rejected:wallet_not_found"),
        (RequestKind::InternalReserve, "rejected:same_wallet"),
        (RequestKind::InternalReserve, "rejected:currency_mismatch"),
        (RequestKind::InternalReserve, "rejected:invalid_amount"),
        (RequestKind::InternalReserve, "rejected:insufficient_funds"),
        (RequestKind::Hold, "held"),
        (RequestKind::Hold, "failed:insufficient_funds"),
        (RequestKind::Hold, "initiated"),
        (RequestKind::HoldInsufficient, "failed:insufficient_funds"),
        (RequestKind::HoldInvalid, "invalid_expiry"),
        (RequestKind::HoldInvalid, "same_wallet"),
        (RequestKind::Capture, "reserved"),
        (RequestKind::Capture, "failed:hold_expired"),
        (RequestKind::Capture, "failed:hold_voided"),
        (RequestKind::Capture, "failed:hold_captured"),
        (RequestKind::CaptureInvalid, "failed:exceeds_hold"),
        (RequestKind::CaptureInvalid, "hold_not_found"),
        (RequestKind::CaptureInvalid, "receiver_required"),
        (RequestKind::Void, "voided"),
        (RequestKind::Void, "ended:captured"),
        (RequestKind::Void, "ended:expired"),
        (RequestKind::Void, "hold_not_found"),
        (RequestKind::Void, "unavailable"),
        (RequestKind::Refund, "reserved"),
        (RequestKind::Refund, "failed:insufficient_funds"),
        (RequestKind::RefundInvalid, "exceeds_refundable"),
        (RequestKind::RefundInvalid, "transfer_not_succeeded"),
        (RequestKind::RefundInvalid, "not_refundable"),
        (RequestKind::RefundInvalid, "transfer_not_found"),
        (RequestKind::RepeatOpSame, "replayed"),
        (RequestKind::RepeatOpDifferent, "key_reused"),
    ] {
        let wanted = (wanted.0, wanted.1.to_owned());
        assert!(outcomes.contains(&wanted), "never saw {wanted:?}");
    }
}

#[test]
fn the_fixed_seeds_reach_every_transition_of_every_state_machine() {
    let mut coverage = Coverage::new();
    for report in fixed_seeds() {
        for (transition, n) in &report.coverage {
            *coverage.entry(*transition).or_default() += n;
        }
    }
    let missing: Vec<String> = Transition::ALL
        .iter()
        .filter(|t| coverage.get(t).copied().unwrap_or(0) == 0)
        .map(ToString::to_string)
        .collect();
    assert!(
        missing.is_empty(),
        "never reached in seeds 0..40: {missing:#?}"
    );
}

#[test]
fn the_generic_world_on_memory_adapters_is_the_default_run() {
    let config = SimConfig {
        transfers: 60,
        ..config(11)
    };
    assert_eq!(run_on(MemoryAdapters, &config), run(&config));
}

#[test]
fn runs_without_faults_and_under_heavy_faults_keep_every_invariant() {
    for seed in 0..4 {
        let calm = run(&SimConfig {
            fault_rate: 0.0,
            ..config(seed)
        });
        assert_passes(&calm);
        assert!(calm.faults.is_empty(), "{:?}", calm.faults);
        assert!(calm.succeeded > 0);
        let stormy = run(&SimConfig {
            fault_rate: 0.6,
            ..config(seed)
        });
        assert_passes(&stormy);
    }
}

#[test]
fn odd_shapes_keep_every_invariant() {
    for (wallets, partitions, max_batch) in [(1, 1, 1), (2, 1, 32), (3, 16, 2), (30, 2, 4)] {
        let report = run(&SimConfig {
            wallets,
            partitions,
            max_batch,
            ..config(9)
        });
        assert_passes(&report);
    }
}

#[test]
fn a_seed_replays_step_for_step() {
    let first = run(&config(42));
    let second = run(&config(42));
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first, second);
    let other = run(&config(43));
    assert_ne!(first.trace_hash, other.trace_hash);
    // The trace is bounded; the hash covers every step.
    assert_eq!(first.trace.len(), 64);
    assert!(first.steps > 64);
}

/// Finds a failing seed of a planted bug, then checks that the failure is
/// reported with its seed and replays identically.
fn catches(bug: PlantedBug, invariants: &[&str]) {
    let planted = |seed| SimConfig {
        planted_bug: Some(bug),
        ..config(seed)
    };
    let (seed, report) = (0..20)
        .map(|seed| (seed, run(&planted(seed))))
        .find(|(_, report)| report.failure.is_some())
        .unwrap_or_else(|| panic!("{bug:?} went unnoticed in seeds 0..20"));
    let failure = report.failure.clone().expect("found failing");
    assert_eq!(failure.seed, seed);
    assert!(
        invariants.contains(&failure.invariant.as_str()),
        "{bug:?}: {failure}"
    );
    assert!(failure.step < report.steps);
    let replay = run(&planted(seed));
    assert_eq!(replay.failure, Some(failure));
    assert_eq!(replay.trace_hash, report.trace_hash);
    assert_eq!(replay, report);
    // The bug, not the seed, fails the run.
    assert_passes(&run(&config(seed)));
}

#[test]
fn a_ledger_consumer_that_posts_redeliveries_again_is_caught_and_replayed() {
    catches(PlantedBug::DoublePosting, &["double_posting", "snapshot"]);
}

#[test]
fn dead_letters_published_after_the_unit_are_lost_and_caught() {
    catches(PlantedBug::DeadLetterOutsideUnit, &["dead_letter"]);
}

#[test]
fn a_gateway_client_that_fails_transfers_on_timeout_is_caught_and_replayed() {
    catches(
        PlantedBug::FailOnTimeout,
        &["contract", "agreement", "outcome"],
    );
}

#[test]
fn a_sweeper_that_expires_holds_without_the_wallet_service_is_caught_and_replayed() {
    catches(
        PlantedBug::ExpireWithoutWallet,
        &["hold_once", "held_funds"],
    );
}
