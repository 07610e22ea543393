//! Two instances of each service behind the gateway, and hot wallets:
//! 1,000 transfers among 4 wallets, in both directions of every pair, 32
//! at a time, while one instance of each service is killed (SIGKILL); the
//! transaction service's reserves pass over the dead wallet instance, and
//! the survivors' relays take over the dead ones' claimed outbox rows. The
//! killed instances come back after the broker's session timeout, as an
//! orchestrator would restart them: on the test broker a member killed
//! while it led its group keeps its partitions until a member joins (see
//! docs/kafka.md). Once quiet: every accepted transfer is terminal, every
//! refusal was a definite one, no money appeared or vanished, nothing is
//! reserved, and `walletctl audit` finds the databases consistent.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::json;
use wallet_e2e::stack::{LEDGER, SESSION_TIMEOUT, Stack, TRANSACTION, WALLET, call};

const TRANSFERS: usize = 1_000;
const CONCURRENCY: usize = 32;
const FUNDS: &str = "500.00";

/// What came back from the transfers sent.
#[derive(Default)]
struct Answers {
    accepted: Vec<String>,
    insufficient: usize,
    /// Anything else: the status and body, to report.
    other: Vec<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_of_each_service_move_hot_wallets_and_survive_losing_one() {
    let mut stack = Stack::start(2).await;
    let wallets = Arc::new(stack.funded_wallets(4, FUNDS).await);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, base) = (stack.http.clone(), stack.base.clone());
        let (wallets, next) = (wallets.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut answers = Answers::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= TRANSFERS {
                    return answers;
                }
                // The 12 ordered pairs of 4 wallets in turn: a→b and b→a
                // alike, so locks are taken in both orders.
                let (from, step) = (n % 4, 1 + (n / 4) % 3);
                let (a, b) = (&wallets[from], &wallets[(from + step) % 4]);
                let amount = format!("{}.00", 1 + n % 9);
                let body =
                    json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": amount});
                let request = http
                    .post(format!("{base}/v1/transfers"))
                    .header("Idempotency-Key", format!("hot-{n}"))
                    .json(&body);
                match call(request).await {
                    Some((202, transfer)) => {
                        answers
                            .accepted
                            .push(transfer["id"].as_str().unwrap().to_owned());
                    }
                    Some((422, e)) if e["error"]["code"] == "insufficient_funds" => {
                        answers.insufficient += 1;
                    }
                    other => answers.other.push(format!("{other:?}")),
                }
            }
        }));
    }
    // A third of the way in, one instance of each service dies: the
    // wallet service's first (the one every caller tries first on its
    // turn), the others' second.
    while next.load(Ordering::Relaxed) < TRANSFERS / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = [(WALLET, 0), (TRANSACTION, 1), (LEDGER, 1)];
    for (service, instance) in killed {
        stack.services[service][instance].process.kill();
    }

    let mut answers = Answers::default();
    for worker in workers {
        let a = worker.await.unwrap();
        answers.accepted.extend(a.accepted);
        answers.insufficient += a.insufficient;
        answers.other.extend(a.other);
    }
    tokio::time::sleep(SESSION_TIMEOUT).await;
    for (service, instance) in killed {
        stack.services[service][instance].restart();
    }
    println!(
        "{} accepted, {} insufficient funds, other answers: {:?}",
        answers.accepted.len(),
        answers.insufficient,
        answers.other
    );
    // A request in flight at a dead instance gets no answer or a 502 from
    // the gateway: not accepted, and the audit covers whatever it left.
    assert!(
        answers.other.len() <= CONCURRENCY,
        "only requests caught by the kills may fail: {:?}",
        answers.other
    );
    assert!(
        answers.accepted.len() >= TRANSFERS / 4,
        "the transfers went on through the kills: {} accepted",
        answers.accepted.len()
    );
    println!(
        "{}",
        stack
            .assert_consistent(&answers.accepted, &wallets, Duration::from_secs(120))
            .await
    );
    // Transfers move money between the four wallets; none is made or lost.
    let mut total = Decimal::ZERO;
    for wallet in wallets.iter() {
        let (available, _) = stack.balances(wallet).await.expect("a balance");
        total += Decimal::from_str(&available).unwrap();
    }
    assert_eq!(total, Decimal::from_str(FUNDS).unwrap() * Decimal::from(4));
    stack.stop();
}
