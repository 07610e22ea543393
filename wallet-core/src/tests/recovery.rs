//! `recovery::restore_reservations` on a wallet store that lost what a
//! restore from an older backup loses: reservations and a wallet.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::audit::Snapshot;
use crate::ids::{TransferId, WalletId};
use crate::memory::MemoryWalletStore;
use crate::money::Currency;
use crate::outcome::{FailureReason, LedgerOutcome};
use crate::ports::{WalletReads, WalletStore};
use crate::recovery::restore_reservations;
use crate::service::WalletService;
use crate::transfer::{Transfer, TransferKind, TransferStatus};
use crate::wallet::{ReservationState, Wallet};

use super::fixtures::{
    CountingIds, FakeClock, at, bal, now_or_never, reserve_request, t0, tid, transfer, usd,
    user_wallet, wid,
};

/// A transfer of `amount` USD from `from` to `to`, created at second `n`.
fn sent(n: u64, status: TransferStatus, from: WalletId, to: WalletId, amount: &str) -> Transfer {
    Transfer {
        id: tid(n),
        kind: TransferKind::between(from, to),
        status,
        failure_reason: (status == TransferStatus::Failed)
            .then_some(FailureReason::InsufficientFunds),
        sender_wallet_id: from,
        receiver_wallet_id: to,
        amount: usd(amount),
        created_at: at(n as i64),
        ..transfer(status)
    }
}

fn wallets(store: &MemoryWalletStore) -> WalletService<MemoryWalletStore> {
    WalletService::new(
        store.clone(),
        Arc::new(FakeClock::at(t0())),
        Arc::new(CountingIds::default()),
        Arc::new(Notify::new()),
    )
}

fn state(store: &MemoryWalletStore, transfer: TransferId) -> Option<ReservationState> {
    now_or_never(store.reservations_page(None, 100))
        .expect("reservations")
        .into_iter()
        .find(|r| r.request.transfer_id == transfer)
        .map(|r| r.state)
}

fn wallet(store: &MemoryWalletStore, id: WalletId) -> Wallet {
    now_or_never(store.wallet(id))
        .expect("a read")
        .expect("the wallet")
}

#[test]
fn the_reservations_a_restore_lost_are_made_again_and_the_rest_left_alone() {
    let (alice, bob, carol) = (wid(1), wid(2), wid(3));
    let system = WalletId::system(Currency::USD);
    let store = MemoryWalletStore::new();
    // The restored database: alice and bob, and the reservation of the
    // first payment, which the backup holds.
    for w in [
        user_wallet(alice, Currency::USD, "100"),
        user_wallet(bob, Currency::USD, "0"),
    ] {
        now_or_never(store.open_wallet(&w)).expect("open");
    }
    let kept = reserve_request(tid(1), alice, bob, usd("10"), Currency::USD);
    now_or_never(wallets(&store).reserve(&kept)).expect("reserve");
    let mut records = Snapshot {
        transfers: vec![
            // Kept by the backup.
            sent(1, TransferStatus::Succeeded, alice, bob, "10"),
            // Made after it: posted, held, failed by the ledger.
            sent(2, TransferStatus::Succeeded, alice, bob, "20"),
            sent(3, TransferStatus::Reserved, alice, carol, "5"),
            sent(4, TransferStatus::Failed, alice, bob, "7"),
            // Refused at the reserve: never held.
            sent(5, TransferStatus::Failed, alice, bob, "900"),
            // Left to the retrier.
            sent(6, TransferStatus::Initiated, alice, bob, "1"),
            // More than alice has until the outcomes credit her.
            sent(7, TransferStatus::Succeeded, alice, bob, "60"),
            // A deposit from the system account: no balance to check.
            sent(8, TransferStatus::Succeeded, system, carol, "50"),
        ],
        ..Snapshot::default()
    };
    records.outcomes.insert(
        tid(4),
        LedgerOutcome::Failed(FailureReason::CurrencyMismatch),
    );
    let clock = FakeClock::at(at(100));

    let report = now_or_never(restore_reservations(
        &records,
        &wallets(&store),
        &records,
        &clock,
        2,
    ))
    .expect("restored");

    assert_eq!(report.transfers, 8);
    assert_eq!(
        report.reopened,
        vec![carol],
        "carol was opened after the backup"
    );
    assert_eq!(report.restored, vec![tid(2), tid(3), tid(4), tid(8)]);
    assert_eq!(report.deferred, vec![tid(7)]);
    for id in [tid(1), tid(2), tid(3), tid(4), tid(8)] {
        assert_eq!(state(&store, id), Some(ReservationState::Reserved), "{id}");
    }
    for id in [tid(5), tid(6), tid(7)] {
        assert_eq!(state(&store, id), None, "{id}");
    }
    let alice = wallet(&store, alice);
    assert_eq!((alice.available, alice.reserved), (bal("58"), bal("42")));
    let carol = wallet(&store, carol);
    assert_eq!((carol.currency, carol.available), (Currency::USD, bal("0")));

    // Run again: nothing more is made; the deferred one stays deferred.
    let again = now_or_never(restore_reservations(
        &records,
        &wallets(&store),
        &records,
        &clock,
        100,
    ))
    .expect("restored");
    assert_eq!((again.reopened.len(), again.restored.len()), (0, 0));
    assert_eq!(again.deferred, vec![tid(7)]);
}
