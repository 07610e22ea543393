//! Refunds on the whole in-memory system: money sent back, in whole or in
//! part, never more than the original moved.

use std::sync::Arc;

use crate::audit::Scope;
use crate::ids::{IdempotencyKey, TransferId, WalletId};
use crate::memory::{Embedded, EmbeddedConfig};
use crate::money::{Balance, Currency};
use crate::outcome::FailureReason;
use crate::service::{CreateError, Created, Parties, RefundRequest, TransferRequest};
use crate::transfer::{RefundRejection, Transfer, TransferKind, TransferStatus};

use super::fixtures::{CountingIds, FakeClock, bal, dec, t0};

struct World {
    system: Embedded,
    alice: WalletId,
    bob: WalletId,
    keys: u32,
}

impl World {
    /// Alice with 100 USD, Bob with nothing.
    async fn new() -> World {
        let system = Embedded::new(EmbeddedConfig {
            clock: Arc::new(FakeClock::at(t0())),
            ids: Arc::new(CountingIds::default()),
            ..EmbeddedConfig::default()
        });
        let alice = system.wallets.open(Currency::USD).await.unwrap().id;
        let bob = system.wallets.open(Currency::USD).await.unwrap().id;
        let mut world = World {
            system,
            alice,
            bob,
            keys: 0,
        };
        world.moved(Parties::Deposit(alice), "100").await;
        world
    }

    fn key(&mut self) -> IdempotencyKey {
        self.keys += 1;
        IdempotencyKey::new(format!("key-{}", self.keys)).unwrap()
    }

    /// A transfer, deposit or withdrawal of `amount`, drained to its end.
    async fn moved(&mut self, parties: Parties, amount: &str) -> Transfer {
        let key = self.key();
        let request = TransferRequest {
            tags: Default::default(),
            key,
            parties,
            amount: dec(amount),
            currency: None,
        };
        let created = self.system.transactions.create(request).await.unwrap();
        self.system.drain().await;
        self.get(created.transfer.id).await
    }

    async fn refund(
        &mut self,
        original: TransferId,
        amount: Option<&str>,
    ) -> Result<Created, CreateError> {
        let key = self.key();
        let request = RefundRequest {
            tags: Default::default(),
            key,
            original,
            amount: amount.map(dec),
        };
        let refunded = self.system.transactions.refund(request).await;
        self.system.drain().await;
        refunded
    }

    async fn get(&self, id: TransferId) -> Transfer {
        self.system
            .transactions
            .transfer(id)
            .await
            .unwrap()
            .unwrap()
    }

    async fn available(&self, id: WalletId) -> Balance {
        self.system
            .wallets
            .wallet(id)
            .await
            .unwrap()
            .unwrap()
            .available
    }

    async fn assert_clean(&self) {
        let report = self.system.audit(Scope::Quiet).await;
        assert_eq!(report.violations, vec![], "the audit should be clean");
    }
}

#[tokio::test]
async fn partial_refunds_go_back_until_the_original_is_refunded_in_full() {
    let mut world = World::new().await;
    let (alice, bob) = (world.alice, world.bob);
    let paid = world
        .moved(
            Parties::Transfer {
                sender: alice,
                receiver: bob,
            },
            "30",
        )
        .await;
    assert_eq!(paid.status, TransferStatus::Succeeded);

    let first = world.refund(paid.id, Some("10")).await.unwrap().transfer;
    assert_eq!(
        (first.kind, first.sender_wallet_id, first.receiver_wallet_id),
        (TransferKind::Transfer, bob, alice),
        "a refund goes back from the receiver to the sender"
    );
    assert_eq!(first.refund_of, Some(paid.id));
    assert_eq!(world.get(first.id).await.status, TransferStatus::Succeeded);
    let over = world.refund(paid.id, Some("20.01")).await;
    assert_eq!(
        over.unwrap_err(),
        CreateError::Refund(RefundRejection::Exceeds {
            refundable: bal("20.00")
        })
    );
    let rest = world.refund(paid.id, Some("20")).await.unwrap().transfer;
    assert_eq!(world.get(rest.id).await.status, TransferStatus::Succeeded);
    let more = world.refund(paid.id, Some("0.01")).await;
    assert!(matches!(
        more,
        Err(CreateError::Refund(RefundRejection::Exceeds { .. }))
    ));
    assert_eq!(
        (world.available(alice).await, world.available(bob).await),
        (bal("100.00"), bal("0.00"))
    );
    let refunds = world.system.transactions.refunds_of(paid.id).await.unwrap();
    assert_eq!(
        refunds.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![first.id, rest.id],
        "the original lists its refunds, oldest first"
    );
    world.assert_clean().await;
}

#[tokio::test]
async fn a_refund_the_receiver_cannot_pay_fails_and_does_not_count() {
    let mut world = World::new().await;
    let (alice, bob) = (world.alice, world.bob);
    let paid = world
        .moved(
            Parties::Transfer {
                sender: alice,
                receiver: bob,
            },
            "30",
        )
        .await;
    world.moved(Parties::Withdrawal(bob), "25").await;
    let short = world.refund(paid.id, None).await.unwrap().transfer;
    assert_eq!(short.status, TransferStatus::Failed);
    assert_eq!(short.failure_reason, Some(FailureReason::InsufficientFunds));
    let part = world.refund(paid.id, Some("5")).await.unwrap().transfer;
    assert_eq!(world.get(part.id).await.status, TransferStatus::Succeeded);
    assert_eq!(world.available(alice).await, bal("75.00"));
    world.assert_clean().await;
}

#[tokio::test]
async fn a_deposit_is_refunded_by_a_withdrawal_and_a_refund_repeats_by_its_key() {
    let mut world = World::new().await;
    let alice = world.alice;
    let deposit = world.moved(Parties::Deposit(alice), "10").await;
    let key = world.key();
    let request = RefundRequest {
        tags: Default::default(),
        key,
        original: deposit.id,
        amount: Some(dec("4")),
    };
    let first = world
        .system
        .transactions
        .refund(request.clone())
        .await
        .unwrap();
    assert_eq!(
        (first.transfer.kind, first.transfer.receiver_wallet_id),
        (TransferKind::Withdrawal, WalletId::system(Currency::USD))
    );
    let again = world
        .system
        .transactions
        .refund(request.clone())
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.transfer.id, first.transfer.id);
    let other = RefundRequest {
        amount: Some(dec("5")),
        ..request
    };
    let reused = world.system.transactions.refund(other).await;
    assert_eq!(reused.unwrap_err(), CreateError::KeyReused);
    world.system.drain().await;
    assert_eq!(world.available(alice).await, bal("106.00"));
    world.assert_clean().await;
}

#[tokio::test]
async fn only_succeeded_transfers_are_refunded() {
    let mut world = World::new().await;
    let (alice, bob) = (world.alice, world.bob);
    let failed = world
        .moved(
            Parties::Transfer {
                sender: alice,
                receiver: bob,
            },
            "1000",
        )
        .await;
    assert_eq!(failed.status, TransferStatus::Failed);
    assert_eq!(
        world.refund(failed.id, None).await.unwrap_err(),
        CreateError::Refund(RefundRejection::NotSucceeded(TransferStatus::Failed))
    );
    let paid = world
        .moved(
            Parties::Transfer {
                sender: alice,
                receiver: bob,
            },
            "10",
        )
        .await;
    let refund = world.refund(paid.id, None).await.unwrap().transfer;
    assert_eq!(
        world.refund(refund.id, None).await.unwrap_err(),
        CreateError::Refund(RefundRejection::Refund),
        "a refund is not refunded"
    );
    let missing = TransferId::from_uuid(uuid::Uuid::nil());
    assert_eq!(
        world.refund(missing, None).await.unwrap_err(),
        CreateError::TransferNotFound(missing)
    );
    world.assert_clean().await;
}
