//! Holds on the whole in-memory system: authorize, then capture, void or
//! let expire; each end decided once, by the wallet service.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::audit::Scope;
use crate::ids::{IdempotencyKey, TransferId, WalletId};
use crate::memory::{Embedded, EmbeddedConfig, MemoryTransactionService};
use crate::money::{Balance, Currency};
use crate::outcome::FailureReason;
use crate::ports::WalletGateway;
use crate::service::{
    CaptureRequest, CreateError, HoldRequest, Parties, TransactionService, TransferRequest,
    VoidError,
};
use crate::transfer::{HoldEnd, Transfer, TransferKind, TransferStatus};
use crate::wallet::{HoldRelease, HoldState};

use super::fixtures::{CountingIds, FakeClock, bal, dec, t0};

struct World {
    system: Embedded,
    clock: Arc<FakeClock>,
    alice: WalletId,
    bob: WalletId,
    keys: u32,
}

impl World {
    /// Alice with 100 USD, Bob with nothing, the clock stopped.
    async fn new() -> World {
        let clock = Arc::new(FakeClock::at(t0()));
        let system = Embedded::new(EmbeddedConfig {
            clock: clock.clone(),
            ids: Arc::new(CountingIds::default()),
            ..EmbeddedConfig::default()
        });
        let alice = system.wallets.open(Currency::USD).await.unwrap().id;
        let bob = system.wallets.open(Currency::USD).await.unwrap().id;
        let mut world = World {
            system,
            clock,
            alice,
            bob,
            keys: 0,
        };
        let key = world.key();
        let deposit = world
            .system
            .transactions
            .create(TransferRequest {
                tags: Default::default(),
                key,
                parties: Parties::Deposit(alice),
                amount: dec("100"),
                currency: None,
            })
            .await
            .unwrap();
        world.system.drain().await;
        assert_eq!(
            world.status(deposit.transfer.id).await,
            TransferStatus::Succeeded
        );
        world
    }

    fn key(&mut self) -> IdempotencyKey {
        self.keys += 1;
        IdempotencyKey::new(format!("key-{}", self.keys)).unwrap()
    }

    fn transactions(&self) -> &Arc<MemoryTransactionService> {
        &self.system.transactions
    }

    async fn hold(&mut self, amount: &str, receiver: Option<WalletId>) -> Transfer {
        let request = HoldRequest {
            tags: Default::default(),
            key: self.key(),
            wallet: self.alice,
            receiver,
            amount: dec(amount),
            currency: None,
            expires_in: Some(Duration::from_secs(60)),
        };
        self.transactions().hold(request).await.unwrap().transfer
    }

    async fn capture(&mut self, hold: TransferId, amount: Option<&str>) -> Transfer {
        let request = CaptureRequest {
            tags: Default::default(),
            key: self.key(),
            hold,
            amount: amount.map(dec),
            receiver: None,
        };
        self.transactions().capture(request).await.unwrap().transfer
    }

    async fn get(&self, id: TransferId) -> Transfer {
        self.transactions().transfer(id).await.unwrap().unwrap()
    }

    async fn status(&self, id: TransferId) -> TransferStatus {
        self.get(id).await.status
    }

    /// Alice's available and reserved funds, Bob's available funds.
    async fn balances(&self) -> (Balance, Balance, Balance) {
        let wallet = |id| async move { self.system.wallets.wallet(id).await.unwrap().unwrap() };
        let (alice, bob) = (wallet(self.alice).await, wallet(self.bob).await);
        (alice.available, alice.reserved, bob.available)
    }

    async fn assert_clean(&self) {
        let report = self.system.audit(Scope::Quiet).await;
        assert_eq!(report.violations, vec![], "the audit should be clean");
    }
}

fn balances(alice: &str, reserved: &str, bob: &str) -> (Balance, Balance, Balance) {
    (bal(alice), bal(reserved), bal(bob))
}

#[tokio::test]
async fn a_hold_reserves_and_a_partial_capture_pays_the_receiver_and_releases_the_rest() {
    let mut world = World::new().await;
    let hold = world.hold("30", Some(world.bob)).await;
    assert_eq!(
        (hold.kind, hold.status),
        (TransferKind::Hold, TransferStatus::Held)
    );
    assert_eq!(hold.expires_at, Some(t0() + chrono::Duration::seconds(60)));
    world.system.drain().await;
    assert_eq!(world.balances().await, balances("70", "30", "0"));
    world.assert_clean().await;

    let capture = world.capture(hold.id, Some("20")).await;
    assert_eq!(capture.status, TransferStatus::Reserved);
    assert_eq!(
        (
            capture.hold_id,
            capture.receiver_wallet_id,
            capture.amount.value()
        ),
        (Some(hold.id), world.bob, dec("20.00"))
    );
    let hold = world.get(hold.id).await;
    assert_eq!(hold.status, TransferStatus::Captured);
    assert_eq!(hold.captured_by, Some(capture.id));
    assert_eq!(world.balances().await, balances("80", "20", "0"));

    world.system.drain().await;
    assert_eq!(world.status(capture.id).await, TransferStatus::Succeeded);
    assert_eq!(world.balances().await, balances("80", "0", "20"));
    world.assert_clean().await;
}

#[tokio::test]
async fn a_hold_short_of_funds_fails_and_holds_nothing() {
    let mut world = World::new().await;
    let hold = world.hold("100.01", None).await;
    assert_eq!(hold.status, TransferStatus::Failed);
    assert_eq!(hold.failure_reason, Some(FailureReason::InsufficientFunds));
    assert_eq!(world.balances().await, balances("100", "0", "0"));
    let key = world.key();
    let capture = world
        .transactions()
        .capture(CaptureRequest {
            tags: Default::default(),
            key,
            hold: hold.id,
            amount: None,
            receiver: Some(world.bob),
        })
        .await;
    assert_eq!(capture.unwrap_err(), CreateError::HoldFailed(hold.id));
    world.assert_clean().await;
}

#[tokio::test]
async fn a_void_releases_the_hold_once_and_a_capture_after_it_fails() {
    let mut world = World::new().await;
    let hold = world.hold("30", Some(world.bob)).await;
    let voided = world.transactions().void(hold.id).await.unwrap();
    assert_eq!(voided.status, TransferStatus::Voided);
    assert_eq!(world.balances().await, balances("100", "0", "0"));
    let again = world.transactions().void(hold.id).await.unwrap();
    assert_eq!(again.status, TransferStatus::Voided, "a void repeats");
    assert_eq!(world.balances().await, balances("100", "0", "0"));

    let capture = world.capture(hold.id, None).await;
    assert_eq!(capture.status, TransferStatus::Failed);
    assert_eq!(capture.failure_reason, Some(FailureReason::HoldVoided));
    world.system.drain().await;
    assert_eq!(world.balances().await, balances("100", "0", "0"));
    world.assert_clean().await;
}

#[tokio::test]
async fn a_void_of_a_captured_hold_is_refused_with_the_hold() {
    let mut world = World::new().await;
    let hold = world.hold("30", Some(world.bob)).await;
    let capture = world.capture(hold.id, None).await;
    let Err(VoidError::Ended(ended)) = world.transactions().void(hold.id).await else {
        panic!("a captured hold should not be voided");
    };
    assert_eq!(ended.status, TransferStatus::Captured);
    assert_eq!(ended.captured_by, Some(capture.id));
    world.system.drain().await;
    assert_eq!(world.balances().await, balances("70", "0", "30"));
    world.assert_clean().await;
}

#[tokio::test]
async fn a_capture_beyond_the_hold_is_refused_and_the_hold_stays_held() {
    let mut world = World::new().await;
    let hold = world.hold("30", Some(world.bob)).await;
    let over = world.capture(hold.id, Some("30.01")).await;
    assert_eq!(over.failure_reason, Some(FailureReason::ExceedsHold));
    assert_eq!(world.status(hold.id).await, TransferStatus::Held);
    assert_eq!(world.balances().await, balances("70", "30", "0"));
    let capture = world.capture(hold.id, None).await;
    assert_eq!(capture.status, TransferStatus::Reserved);
    let second = world.capture(hold.id, None).await;
    assert_eq!(second.failure_reason, Some(FailureReason::HoldCaptured));
    world.system.drain().await;
    assert_eq!(world.balances().await, balances("70", "0", "30"));
    world.assert_clean().await;
}

#[tokio::test]
async fn a_hold_without_a_receiver_needs_one_at_capture() {
    let mut world = World::new().await;
    let hold = world.hold("30", None).await;
    assert_eq!(hold.status, TransferStatus::Held);
    assert_eq!(hold.hold_receiver(), None);
    let key = world.key();
    let nobody = world
        .transactions()
        .capture(CaptureRequest {
            tags: Default::default(),
            key,
            hold: hold.id,
            amount: None,
            receiver: None,
        })
        .await;
    assert_eq!(nobody.unwrap_err(), CreateError::ReceiverRequired);
    let key = world.key();
    let capture = world
        .transactions()
        .capture(CaptureRequest {
            tags: Default::default(),
            key,
            hold: hold.id,
            amount: None,
            receiver: Some(world.bob),
        })
        .await
        .unwrap()
        .transfer;
    assert_eq!(capture.receiver_wallet_id, world.bob);
    world.system.drain().await;
    assert_eq!(world.balances().await, balances("70", "0", "30"));
    world.assert_clean().await;
}

#[tokio::test]
async fn a_capture_repeats_by_its_key_and_refuses_its_key_for_another_amount() {
    let mut world = World::new().await;
    let hold = world.hold("30", Some(world.bob)).await;
    let key = world.key();
    let request = |amount: &str| CaptureRequest {
        tags: Default::default(),
        key: key.clone(),
        hold: hold.id,
        amount: Some(dec(amount)),
        receiver: None,
    };
    let first = world.transactions().capture(request("10")).await.unwrap();
    let again = world
        .transactions()
        .capture(request("10.00"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.transfer.id, first.transfer.id);
    let other = world.transactions().capture(request("11")).await;
    assert_eq!(other.unwrap_err(), CreateError::KeyReused);
    world.system.drain().await;
    assert_eq!(world.balances().await, balances("90", "0", "10"));
}

#[tokio::test]
async fn a_capture_after_the_expiry_fails_and_expires_the_hold() {
    let mut world = World::new().await;
    let hold = world.hold("30", Some(world.bob)).await;
    world.clock.advance(Duration::from_secs(60));
    let capture = world.capture(hold.id, None).await;
    assert_eq!(capture.failure_reason, Some(FailureReason::HoldExpired));
    assert_eq!(world.status(hold.id).await, TransferStatus::Expired);
    assert_eq!(world.balances().await, balances("100", "0", "0"));
    world.assert_clean().await;
}

#[tokio::test]
async fn two_sweepers_expire_a_hold_once() {
    let mut world = World::new().await;
    let hold = world.hold("30", Some(world.bob)).await;
    let early = world.transactions().sweep_expired().await.unwrap();
    assert_eq!(early.claimed, 0, "nothing is due before the expiry");
    world.clock.advance(Duration::from_secs(61));
    let other: TransactionService<_, _> = TransactionService::new(
        world.transactions().store().clone(),
        world.system.wallets.clone(),
        world.clock.clone(),
        Arc::new(CountingIds::default()),
        Default::default(),
    );
    let (one, two) = tokio::join!(world.transactions().sweep_expired(), other.sweep_expired());
    let (one, two) = (one.unwrap(), two.unwrap());
    assert_eq!(one.claimed + two.claimed, 1, "one sweeper claims the hold");
    assert_eq!(one.ended + two.ended, 1);
    assert_eq!(world.status(hold.id).await, TransferStatus::Expired);
    assert_eq!(world.balances().await, balances("100", "0", "0"));
    // Asked again, as a sweeper whose claim lapsed would: the wallet
    // service answers how the hold ended and releases nothing.
    let asked = world
        .system
        .wallets
        .release_holds(&[(hold.id, HoldRelease::Expire)])
        .await
        .unwrap();
    assert_eq!(asked, vec![Some(HoldState::Ended(HoldEnd::Expired))]);
    assert_eq!(world.balances().await, balances("100", "0", "0"));
    world.assert_clean().await;
}

#[tokio::test]
async fn a_capture_racing_a_void_leaves_exactly_one_winner() {
    let mut world = World::new().await;
    let mut winners = (0, 0);
    for round in 0..6 {
        let hold = world.hold("10", Some(world.bob)).await;
        let key = world.key();
        let capture = world.transactions().capture(CaptureRequest {
            tags: Default::default(),
            key,
            hold: hold.id,
            amount: None,
            receiver: None,
        });
        let void = world.transactions().void(hold.id);
        // Each side goes first in turn.
        let (capture, void) = if round % 2 == 0 {
            tokio::join!(capture, void)
        } else {
            let (void, capture) = tokio::join!(void, capture);
            (capture, void)
        };
        let capture = capture.unwrap().transfer;
        match (capture.status, void) {
            (TransferStatus::Reserved, Err(VoidError::Ended(hold))) => {
                assert_eq!(hold.captured_by, Some(capture.id));
                winners.0 += 1;
            }
            (TransferStatus::Failed, Ok(voided)) => {
                assert_eq!(capture.failure_reason, Some(FailureReason::HoldVoided));
                assert_eq!(voided.status, TransferStatus::Voided);
                winners.1 += 1;
            }
            (status, void) => panic!("both or neither won: capture {status:?}, void {void:?}"),
        }
        world.system.drain().await;
    }
    assert!(
        winners.0 > 0 && winners.1 > 0,
        "each side won a round: {winners:?}"
    );
    let (alice, reserved, bob) = world.balances().await;
    assert_eq!(reserved, bal("0"));
    assert_eq!(alice.value() + bob.value(), Decimal::from(100));
    assert_eq!(bob, bal(&(winners.0 * 10).to_string()));
    world.assert_clean().await;
}
