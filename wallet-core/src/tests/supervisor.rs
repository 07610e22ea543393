//! The supervisor of background loops: restarts after errors and panics,
//! with backoff; the states readiness reads; stalls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::runtime::{Loops, Place, SupervisorConfig};

fn loops() -> Loops {
    Loops::new(SupervisorConfig {
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        stall_after: Duration::from_secs(10),
    })
}

/// A loop that fails its first `failures` starts, by panicking or by
/// returning an error in turn, then runs for a minute (a step a stop lets
/// it finish) and stops; counts its starts.
async fn flaky(starts: Arc<AtomicU32>, failures: u32) -> Result<(), String> {
    let n = starts.fetch_add(1, Ordering::SeqCst);
    if n < failures {
        if n.is_multiple_of(2) {
            panic!("planted panic {n}");
        }
        return Err(format!("planted error {n}"));
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_panics_or_fails_is_started_again_with_backoff() {
    let loops = loops();
    let starts = Arc::new(AtomicU32::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let counted = starts.clone();
    let task = loops.supervise(
        "relay test",
        move |_| flaky(counted.clone(), 3),
        async move {
            let _ = stopped.await;
        },
    );
    // Backoffs of 100, 200 and 400 ms: three restarts within a second.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 1, "started once");
    let state = &loops.states()[0];
    assert!(!state.up, "down after the panic, until the backoff is over");
    assert!(
        state
            .failure
            .as_ref()
            .unwrap()
            .error
            .contains("planted panic 0"),
        "{state:?}"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 2, "restarted after 100 ms");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        4,
        "and again, with doubling waits"
    );
    let state = &loops.states()[0];
    assert_eq!((state.up, state.restarts, state.stalled), (true, 3, false));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_keeps_failing_is_stalled_until_a_good_pass() {
    let loops = loops();
    let handle = loops.handle("retrier");
    let place = Place {
        source: "outbox of wallet-service".into(),
        ..Place::default()
    };
    handle.failed("database down", place.clone());
    assert!(loops.unwell().is_empty(), "one failure is not a stall");
    tokio::time::sleep(Duration::from_secs(9)).await;
    handle.failed("database down still", place.clone());
    assert!(loops.unwell().is_empty(), "failing for 9 s of 10");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let unwell = loops.unwell();
    assert_eq!(unwell.len(), 1);
    let failure = unwell[0].failure.as_ref().unwrap();
    assert_eq!(
        (
            failure.error.as_str(),
            failure.place.source.as_str(),
            failure.failing_for_s
        ),
        ("database down still", "outbox of wallet-service", 11)
    );
    handle.ok();
    assert!(loops.unwell().is_empty(), "a good pass ends the stall");
}

#[tokio::test(start_paused = true)]
async fn a_loop_stopped_until_an_operator_acts_is_stalled_at_once() {
    let loops = loops();
    let handle = loops.handle("consumer ledger-service");
    handle.stalled("integrity failure: a constraint", Place::default());
    assert!(handle.is_stalled());
    assert_eq!(loops.unwell().len(), 1);
    let json = serde_json::to_value(loops.unwell()).unwrap();
    assert_eq!(json[0]["name"], "consumer ledger-service");
    assert_eq!(json[0]["stalled"], true);
    assert_eq!(
        json[0]["failure"]["error"],
        "integrity failure: a constraint"
    );
    handle.ok();
    assert!(!handle.is_stalled() && loops.unwell().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_ran_longer_than_the_longest_backoff_restarts_after_the_first() {
    let loops = loops();
    let starts = Arc::new(AtomicU32::new(0));
    let counted = starts.clone();
    // Fails at once three times (backoffs 100, 200, 400 ms), then runs for
    // two seconds, longer than the 1 s ceiling, before it fails again.
    let task = loops.supervise(
        "consumer test",
        move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 3 {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                if n <= 3 {
                    return Err(format!("planted error {n}"));
                }
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        },
        std::future::pending(),
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        3,
        "quick failures double the wait: started at 0, 100 and 300 ms"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 4, "and at 700 ms");
    // The fourth start fails 2 s later; a good run that long resets the
    // backoff, so the fifth start comes 100 ms after (not 800 ms).
    tokio::time::sleep(Duration::from_millis(2000 + 150)).await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        5,
        "restarted after the first backoff again"
    );
    task.abort();
}
