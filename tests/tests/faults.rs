//! Faults on real parts, with no process restarted. The services reach
//! each database and the broker through a fault proxy
//! (`Stack::start_with_proxies`). While a stream of transfers goes through
//! the gateway, one proxy at a time resets its connections, stalls, or
//! drops everything; each fault is followed by quiet, and then every
//! transfer accepted during it must be terminal, no wallet may keep a
//! reservation, and `walletctl audit` must find the three databases
//! consistent.
//!
//! What bounds the wait for quiet ([`WITHIN`]): after a fault the slowest
//! way back is a consumer that lost its group member: the broker waits out
//! the old member's session (10 s) before it hands the partitions over,
//! and a consumer left without them rejoins after `CONSUMER_STALL_MS`
//! (20 s). Everything else comes back within seconds: a pool connection
//! is replaced at once, an outbox claim is taken over after its lease
//! (`OUTBOX_LEASE_MS`, 3 s here), the retrier looks every 200 ms, and a
//! producer gives a message up after 10 s and the relay publishes it
//! again. 90 s covers those one after the other with room for a loaded
//! machine.

use std::time::{Duration, Instant};

use wallet_e2e::proxy::Proxy;
use wallet_e2e::stack::{LEDGER, NAMES, Stack, Stream, TRANSACTION, WALLET};

/// How long a stall or a blackhole lasts.
const OUTAGE: Duration = Duration::from_secs(5);
/// The wait for quiet after each fault; see the module's documentation.
const WITHIN: Duration = Duration::from_secs(90);

/// A fault a proxy applies.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Reset,
    Stall,
    Blackhole,
}

/// Runs `fault` on `proxy` while a stream of transfers goes on (2 s
/// before, 3 s after), then waits for quiet and checks the stack's
/// consistency; prints what happened and how long each part took.
async fn scenario(stack: &Stack, wallets: &[String], name: &str, proxy: &Proxy, fault: Fault) {
    let started = Instant::now();
    let stream = Stream::start(stack, wallets, name);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let open = proxy.connections();
    assert!(open > 0, "{name}: no connection goes through the proxy");
    match fault {
        Fault::Reset => proxy.reset(),
        Fault::Stall => proxy.stall(OUTAGE).await,
        Fault::Blackhole => proxy.blackhole(OUTAGE).await,
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let accepted = stream.stop().await;
    assert!(
        accepted.len() > 20,
        "{name}: the stream went on: {} accepted",
        accepted.len()
    );
    let quiet = Instant::now();
    let report = stack.assert_consistent(&accepted, wallets, WITHIN).await;
    println!(
        "{name} ({fault:?} of {open} connections to {}): consistent {:.1?} after the stream \
         stopped, {:.1?} in all; {}",
        proxy.target(),
        quiet.elapsed(),
        started.elapsed(),
        report.lines().next().unwrap_or_default()
    );
}

/// Every fault on one stack, one after the other: resets of each
/// database's connections and of the broker's, a blackhole of the broker,
/// a stall of each database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resets_stalls_and_a_broker_blackhole_leave_nothing_stuck() {
    let stack = Stack::start_with_proxies(1).await;
    let wallets = stack.funded_wallets(4, "1000.00").await;
    let proxies = stack.proxies.as_ref().expect("a stack with proxies");
    let databases = [TRANSACTION, WALLET, LEDGER];
    for s in databases {
        let name = format!("reset-db-{}", NAMES[s]);
        scenario(&stack, &wallets, &name, &proxies.databases[s], Fault::Reset).await;
    }
    scenario(
        &stack,
        &wallets,
        "reset-broker",
        &proxies.broker,
        Fault::Reset,
    )
    .await;
    let broker = &proxies.broker;
    scenario(
        &stack,
        &wallets,
        "blackhole-broker",
        broker,
        Fault::Blackhole,
    )
    .await;
    for s in databases {
        let name = format!("stall-db-{}", NAMES[s]);
        scenario(&stack, &wallets, &name, &proxies.databases[s], Fault::Stall).await;
    }
    stack.stop();
}
