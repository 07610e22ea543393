//! `/readyz`: ready while the dependencies answer and every background
//! loop is up and well; 503 naming the loop, where it stopped and why, while
//! one is stalled; 503 `draining` once the process is stopping.

use std::time::Duration;

use tokio::sync::watch;
use wallet_core::runtime::{Loops, Place, SupervisorConfig};
use wallet_http::testing::{get, send};
use wallet_server::health::{check, readiness};

#[tokio::test]
async fn a_stalled_loop_makes_the_process_not_ready_and_names_it() {
    let loops = Loops::new(SupervisorConfig::default());
    let relay = loops.handle("relay wallet-service");
    let consumer = loops.handle("consumer wallet-service");
    let checks = vec![("database", check(|| async { Ok(()) }))];
    let (_draining, draining) = watch::channel(false);
    let router = readiness(checks, loops.clone(), Duration::from_secs(1), draining);

    let ready = send(&router, get("/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["checks"]["loops"], "ok");

    relay.ok();
    let place = Place {
        source: "ledger.events[3]@120".into(),
        event_id: None,
        transfer_id: None,
    };
    consumer.stalled("integrity failure: a constraint", place);
    let stalled = send(&router, get("/readyz")).await;
    assert_eq!(stalled.status, 503, "{}", stalled.body);
    assert_eq!(stalled.body["status"], "not_ready");
    assert_eq!(stalled.body["checks"]["database"], "ok");
    let unwell = stalled.body["checks"]["loops"].as_array().expect("a list");
    assert_eq!(unwell.len(), 1, "only the stalled loop: {unwell:?}");
    assert_eq!(unwell[0]["name"], "consumer wallet-service");
    assert_eq!(unwell[0]["failure"]["source"], "ledger.events[3]@120");
    assert_eq!(
        unwell[0]["failure"]["error"],
        "integrity failure: a constraint"
    );

    consumer.ok();
    assert_eq!(send(&router, get("/readyz")).await.status, 200);
}

#[tokio::test]
async fn a_draining_process_is_not_ready_whatever_its_checks_say() {
    let loops = Loops::new(SupervisorConfig::default());
    let checks = vec![("database", check(|| async { Ok(()) }))];
    let (draining, told) = watch::channel(false);
    let router = readiness(checks, loops, Duration::from_secs(1), told);
    assert_eq!(send(&router, get("/readyz")).await.status, 200);

    draining.send_replace(true);
    let answer = send(&router, get("/readyz")).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["status"], "draining");
}
