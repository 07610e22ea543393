//! The invariant checks themselves: a quiet system and every mid-saga state
//! pass, and each kind of violation is reported.

use std::collections::HashMap;

use crate::audit::{Snapshot, Violation, check_always, check_quiet};
use crate::ids::{TransferId, WalletId};
use crate::ledger::{Entry, LedgerOutcome, Posting};
use crate::money::Currency;
use crate::transfer::{FailureReason, Transfer, TransferKind, TransferStatus};
use crate::wallet::{Reservation, ReservationState, Wallet};

use super::fixtures::{
    at, bal, reservation, reserve_request, tid, transfer, usd, user_wallet, wid,
};

const ALICE: u64 = 1;
const BOB: u64 = 2;

fn system() -> WalletId {
    WalletId::system(Currency::USD)
}

fn posted(transfer: TransferId, debit: WalletId, credit: WalletId, amount: &str) -> [Entry; 2] {
    Posting {
        transfer_id: transfer,
        debit,
        credit,
        amount: usd(amount),
        currency: Currency::USD,
        posted_at: at(0),
    }
    .entries()
}

fn saga(
    id: TransferId,
    kind: TransferKind,
    from: WalletId,
    to: WalletId,
    amount: &str,
) -> Transfer {
    Transfer {
        id,
        kind,
        sender_wallet_id: from,
        receiver_wallet_id: to,
        amount: usd(amount),
        ..transfer(TransferStatus::Succeeded)
    }
}

fn held(
    id: TransferId,
    from: WalletId,
    to: WalletId,
    amount: &str,
    state: ReservationState,
) -> Reservation {
    reservation(
        reserve_request(id, from, to, usd(amount), Currency::USD),
        state,
    )
}

/// A quiet system: a deposit of 100 to alice, a payment of 30 to bob, and
/// a payment of 500 refused for insufficient funds.
fn quiet() -> Snapshot {
    let mut system_wallet = Wallet::system(Currency::USD, at(0));
    system_wallet.available = bal("-100");
    let entries = [
        posted(tid(1), system(), wid(ALICE), "100"),
        posted(tid(2), wid(ALICE), wid(BOB), "30"),
    ]
    .concat();
    let refused = Transfer {
        status: TransferStatus::Failed,
        failure_reason: Some(FailureReason::InsufficientFunds),
        ..saga(tid(3), TransferKind::Transfer, wid(ALICE), wid(BOB), "500")
    };
    Snapshot {
        wallets: vec![
            system_wallet,
            user_wallet(wid(ALICE), Currency::USD, "70"),
            user_wallet(wid(BOB), Currency::USD, "30"),
        ],
        reservations: vec![
            held(
                tid(1),
                system(),
                wid(ALICE),
                "100",
                ReservationState::Captured,
            ),
            held(
                tid(2),
                wid(ALICE),
                wid(BOB),
                "30",
                ReservationState::Captured,
            ),
            held(
                tid(3),
                wid(ALICE),
                wid(BOB),
                "500",
                ReservationState::Rejected(FailureReason::InsufficientFunds),
            ),
        ],
        transfers: vec![
            saga(tid(1), TransferKind::Deposit, system(), wid(ALICE), "100"),
            saga(tid(2), TransferKind::Transfer, wid(ALICE), wid(BOB), "30"),
            refused,
        ],
        entries,
        outcomes: HashMap::from([
            (tid(1), LedgerOutcome::Succeeded),
            (tid(2), LedgerOutcome::Succeeded),
        ]),
    }
}

fn wallet_mut(s: &mut Snapshot, id: WalletId) -> &mut Wallet {
    s.wallets.iter_mut().find(|w| w.id == id).unwrap()
}

/// `quiet()` plus a payment of 20 from alice to bob, held and RESERVED.
fn with_payment_held() -> Snapshot {
    let mut s = quiet();
    s.reservations.push(held(
        tid(4),
        wid(ALICE),
        wid(BOB),
        "20",
        ReservationState::Reserved,
    ));
    s.transfers.push(Transfer {
        status: TransferStatus::Reserved,
        ..saga(tid(4), TransferKind::Transfer, wid(ALICE), wid(BOB), "20")
    });
    let alice = wallet_mut(&mut s, wid(ALICE));
    alice.available = bal("50");
    alice.reserved = bal("20");
    s
}

#[test]
fn a_quiet_consistent_system_has_no_violation() {
    assert_eq!(check_quiet(&quiet()), vec![]);
}

#[test]
fn every_mid_saga_state_passes_the_always_checks() {
    // Held, ledger not asked yet.
    let mut s = with_payment_held();
    assert_eq!(check_always(&s), vec![]);
    // Posted, the wallets have not heard of it.
    s.entries.extend(posted(tid(4), wid(ALICE), wid(BOB), "20"));
    s.outcomes.insert(tid(4), LedgerOutcome::Succeeded);
    assert_eq!(check_always(&s), vec![]);
    // ...but the system is not quiet.
    assert_eq!(
        check_quiet(&s),
        vec![
            Violation::StillReserved(wid(ALICE)),
            Violation::NotTerminal(tid(4), TransferStatus::Reserved),
        ]
    );
    // Refused by the ledger, the reservation not released yet.
    let mut s = with_payment_held();
    s.outcomes.insert(
        tid(4),
        LedgerOutcome::Failed(FailureReason::CurrencyMismatch),
    );
    assert_eq!(check_always(&s), vec![]);
}

#[test]
fn a_posted_hold_counts_for_the_sender_and_not_yet_for_the_receiver() {
    let mut s = with_payment_held();
    s.entries.extend(posted(tid(4), wid(ALICE), wid(BOB), "20"));
    s.outcomes.insert(tid(4), LedgerOutcome::Succeeded);
    // Bob credited before alice's reservation was captured: the wallets of one
    // finalization change together, so this is a mismatch for bob.
    wallet_mut(&mut s, wid(BOB)).available = bal("50");
    assert_eq!(
        check_always(&s),
        vec![Violation::SnapshotMismatch {
            wallet: wid(BOB),
            wallet_total: bal("50"),
            expected: bal("30"),
        }]
    );
}

#[test]
fn a_lone_entry_breaks_conservation_and_the_posting_rule() {
    let mut s = quiet();
    let [debit, _credit] = posted(tid(5), wid(ALICE), wid(BOB), "1");
    s.entries.push(debit);
    let violations = check_always(&s);
    assert!(violations.contains(&Violation::Unbalanced {
        currency: Currency::USD,
        sum: bal("-1"),
    }));
    assert!(violations.contains(&Violation::PostedTwice(tid(5), 1)));
}

#[test]
fn a_transfer_posted_twice_is_reported() {
    let mut s = quiet();
    s.entries.extend(posted(tid(2), wid(ALICE), wid(BOB), "30"));
    let violations = check_always(&s);
    assert!(
        violations.contains(&Violation::PostedTwice(tid(2), 4)),
        "{violations:?}"
    );
    assert!(violations.contains(&Violation::SnapshotMismatch {
        wallet: wid(ALICE),
        wallet_total: bal("70"),
        expected: bal("40"),
    }));
}

#[test]
fn a_negative_user_wallet_is_reported_but_not_a_negative_system_account() {
    let mut s = quiet();
    let alice = wallet_mut(&mut s, wid(ALICE));
    alice.available = bal("-1");
    let violations = check_always(&s);
    assert!(violations.contains(&Violation::NegativeAvailable(wid(ALICE))));
    assert!(!violations.contains(&Violation::NegativeAvailable(system())));
}

#[test]
fn a_terminal_state_that_disagrees_with_the_ledger_is_reported() {
    let mut s = quiet();
    s.transfers[1].status = TransferStatus::Failed;
    s.transfers[2].status = TransferStatus::Succeeded;
    assert_eq!(
        check_quiet(&s),
        vec![
            Violation::Disagrees {
                transfer: tid(2),
                status: TransferStatus::Failed,
                posted: true,
            },
            Violation::Disagrees {
                transfer: tid(3),
                status: TransferStatus::Succeeded,
                posted: false,
            },
        ]
    );
}
