//! Crashes on real parts. While a stream of transfers goes through the
//! gateway, processes are killed (SIGKILL): each service in turn and then
//! the broker, restarted each time. Once quiet, every accepted transfer is
//! terminal, no wallet keeps a reservation, and `walletctl audit` finds the
//! three databases consistent.

use std::time::Duration;

use serde_json::json;
use wallet_e2e::stack::{SESSION_TIMEOUT, Stack, call};

/// A stream of transfers among `wallets` until `stop` says so; returns
/// what was accepted (202). Answers while a service is down (502, 503,
/// timeouts) are not acceptances; the audit covers whatever they left.
fn stream(
    stack: &Stack,
    wallets: Vec<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let (http, base) = (stack.http.clone(), stack.base.clone());
    tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut n = 0usize;
        while !*stop.borrow_and_update() {
            let (a, b) = (&wallets[n % 4], &wallets[(n / 4 + n + 1) % 4]);
            n += 1;
            if a == b {
                continue;
            }
            let body = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "1.00"});
            let request = http
                .post(format!("{base}/v1/transfers"))
                .header("Idempotency-Key", format!("stream-{n}"))
                .json(&body);
            if let Some((202, transfer)) = call(request).await {
                accepted.push(transfer["id"].as_str().unwrap().to_owned());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        accepted
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_each_service_and_the_broker_loses_no_money_and_leaves_nothing_stuck() {
    let mut stack = Stack::start(1).await;
    let wallets = stack.funded_wallets(4, "1000.00").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sender = stream(&stack, wallets.clone(), stopped);

    let pause = |d: u64| tokio::time::sleep(Duration::from_secs(d));
    pause(2).await;
    for service in stack.services.iter_mut().flatten() {
        service.process.kill();
        tokio::time::sleep(SESSION_TIMEOUT).await;
        service.restart();
        pause(2).await;
    }
    stack.restart_broker();
    pause(3).await;
    stop.send(true).unwrap();
    let accepted = sender.await.unwrap();
    assert!(
        accepted.len() > 50,
        "the stream went on: {} accepted",
        accepted.len()
    );
    let within = Duration::from_secs(120);
    println!(
        "{}",
        stack.assert_consistent(&accepted, &wallets, within).await
    );
    stack.stop();
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
    let mut stack = Stack::start(1).await;
    let wallets = stack.funded_wallets(4, "1000.00").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sender = stream(&stack, wallets.clone(), stopped);

    let pause = |d: u64| tokio::time::sleep(Duration::from_secs(d));
    pause(3).await;
    for service in stack.services.iter_mut().flatten() {
        service.process.kill();
        pause(2).await;
        service.restart();
        pause(3).await;
    }
    stop.send(true).unwrap();
    let accepted = sender.await.unwrap();
    assert!(
        accepted.len() > 50,
        "the stream went on: {} accepted",
        accepted.len()
    );
    let within = SESSION_TIMEOUT + Duration::from_secs(45);
    println!(
        "{}",
        stack.assert_consistent(&accepted, &wallets, within).await
    );
    stack.stop();
}
