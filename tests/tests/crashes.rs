//! Crashes on real parts. While a stream of transfers goes through the
//! gateway, processes are killed (SIGKILL): each service in turn and then
//! the broker, restarted each time. Once quiet, every accepted transfer is
//! terminal, no wallet keeps a reservation, and `walletctl audit` finds the
//! three databases consistent.

use std::time::Duration;

use wallet_e2e::stack::{SESSION_TIMEOUT, Stack, Stream};

/// A stack under a stream of transfers while each service in turn is
/// killed and started again `restart_after` later (and then, when
/// `broker`, the broker too); asserts that once the stream stops, within
/// `within`, every accepted transfer is terminal, nothing stays reserved
/// and the audit is clean.
async fn kill_each_under_a_stream(restart_after: Duration, broker: bool, within: Duration) {
    let mut stack = Stack::start(1).await;
    let wallets = stack.funded_wallets(4, "1000.00").await;
    let stream = Stream::start(&stack, &wallets, "stream");

    let pause = |d: u64| tokio::time::sleep(Duration::from_secs(d));
    pause(2).await;
    for service in stack.services.iter_mut().flatten() {
        service.process.kill();
        tokio::time::sleep(restart_after).await;
        service.restart();
        pause(3).await;
    }
    if broker {
        stack.restart_broker();
        pause(3).await;
    }
    let accepted = stream.stop().await;
    assert!(
        accepted.len() > 50,
        "the stream went on: {} accepted",
        accepted.len()
    );
    println!(
        "{}",
        stack.assert_consistent(&accepted, &wallets, within).await
    );
    stack.stop();
}

/// Each service restarted once the broker has dropped the dead member (after
/// the session timeout), then the broker.
#[tokio::test(flavor = "multi_thread")]
async fn killing_each_service_and_the_broker_loses_no_money_and_leaves_nothing_stuck() {
    kill_each_under_a_stream(SESSION_TIMEOUT, true, Duration::from_secs(120)).await;
}

/// Each service killed and started again 2 s later, well inside the
/// broker's session timeout, as a supervisor (systemd, Kubernetes) would:
/// the new process gets its partitions back, or finds it was never given
/// them and rejoins (`CONSUMER_STALL_MS`, 20 s by default), without a
/// second restart. Once quiet, within 45 s past the session timeout, every
/// accepted transfer is terminal, nothing stays reserved, and the audit is
/// clean.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_restarted_at_once_after_a_kill_gets_its_work_back() {
    let within = SESSION_TIMEOUT + Duration::from_secs(45);
    kill_each_under_a_stream(Duration::from_secs(2), false, within).await;
}
