//! Embeds wallet-core with its in-memory adapters and runs a deposit and a
//! transfer through the whole saga, in one process, with no database or
//! broker.
//!
//! Run it with:
//!
//! ```sh
//! cargo run -p embedded-transfer
//! ```

use rust_decimal::Decimal;
use wallet_core::audit::Scope;
use wallet_core::memory::{Embedded, EmbeddedConfig};
use wallet_core::service::{Parties, TransferRequest};
use wallet_core::{Currency, IdempotencyKey};

fn request(key: &str, parties: Parties, amount: &str) -> TransferRequest {
    TransferRequest {
        tags: Default::default(),
        key: IdempotencyKey::new(key).expect("a valid key"),
        parties,
        amount: amount.parse::<Decimal>().expect("a decimal"),
        currency: Some(Currency::EUR),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Stepped mode: `drain` runs the relays and consumers until no event
    // moves, so the example is deterministic. `Embedded::spawn` runs the same
    // loops as background tasks instead, as `walletctl dev` does.
    let mut system = Embedded::new(EmbeddedConfig::default());
    let alice = system.wallets.open(Currency::EUR).await?;
    let bob = system.wallets.open(Currency::EUR).await?;

    system
        .transactions
        .create(request("top-up-1", Parties::Deposit(alice.id), "120.00"))
        .await?;
    system.drain().await;

    let parties = Parties::Transfer {
        sender: alice.id,
        receiver: bob.id,
    };
    let created = system
        .transactions
        .create(request("rent-2026-11", parties, "75.50"))
        .await?;
    println!(
        "accepted: transfer {} is {}",
        created.transfer.id,
        created.transfer.status.as_str()
    );
    system.drain().await;

    let transfer = system
        .transactions
        .transfer(created.transfer.id)
        .await?
        .expect("stored");
    println!("after the saga: {}", transfer.status.as_str());

    // The same key and body again: the first answer, no second transfer.
    let replay = system
        .transactions
        .create(request("rent-2026-11", parties, "75.5"))
        .await?;
    assert!(replay.replayed && replay.transfer.id == created.transfer.id);

    for wallet in [alice.id, bob.id] {
        let w = system.wallets.wallet(wallet).await?.expect("stored");
        println!(
            "wallet {}: available {} {}, reserved {}",
            w.id, w.available, w.currency, w.reserved
        );
    }
    for entry in system.ledger.entries(bob.id, None, 10).await? {
        println!(
            "ledger: #{} {:?} {} {}",
            entry.seq, entry.direction, entry.amount, entry.currency
        );
    }

    let violations = system.audit(Scope::Quiet).await.violations;
    assert!(violations.is_empty(), "invariants broken: {violations:?}");
    println!("all invariants hold");
    Ok(())
}
