//! The invariant checks themselves: a quiet system and every mid-saga state
//! pass, and each kind of violation is reported.

use std::collections::HashMap;

use crate::audit::{Audit, Scope, Snapshot, Violation};
use crate::ids::{TransferId, WalletId};
use crate::ledger::{Entry, Posting};
use crate::money::Currency;
use crate::outcome::{FailureReason, LedgerOutcome};
use crate::transfer::{Transfer, TransferKind, TransferStatus};
use crate::wallet::{Reservation, ReservationState, Wallet};

use super::fixtures::{
    at, bal, now_or_never, reservation, reserve_request, tid, transfer, usd, user_wallet, wid,
};

const ALICE: u64 = 1;
const BOB: u64 = 2;

fn system() -> WalletId {
    WalletId::system(Currency::USD)
}

fn check(s: &Snapshot, scope: Scope) -> Vec<Violation> {
    now_or_never(Audit::new(scope).run(s, s, s))
        .expect("a snapshot does not fail")
        .violations
}

fn check_always(s: &Snapshot) -> Vec<Violation> {
    check(s, Scope::Always)
}

fn check_quiet(s: &Snapshot) -> Vec<Violation> {
    check(s, Scope::Quiet)
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
fn a_negative_wallet_is_reported_but_not_a_negative_system_account() {
    let mut s = quiet();
    let alice = wallet_mut(&mut s, wid(ALICE));
    alice.available = bal("-1");
    let violations = check_always(&s);
    assert!(violations.contains(&Violation::NegativeAvailable(wid(ALICE))));
    // The system account is 100 below zero in the ledger, and has no wallet.
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

/// Numbers the entries in order, as a store assigns seqs.
fn numbered(mut s: Snapshot) -> Snapshot {
    for (i, e) in s.entries.iter_mut().enumerate() {
        e.seq = i as u64 + 1;
    }
    s
}

#[test]
fn the_audit_reads_in_pages_of_any_size_and_finds_the_same() {
    let mut s = with_payment_held();
    s.entries.extend(posted(tid(4), wid(ALICE), wid(BOB), "20"));
    s.entries.extend(posted(tid(2), wid(ALICE), wid(BOB), "30"));
    s.outcomes.insert(tid(4), LedgerOutcome::Succeeded);
    let s = numbered(s);
    let whole = check_quiet(&s);
    assert!(
        whole.contains(&Violation::PostedTwice(tid(2), 4)),
        "{whole:?}"
    );
    for page_size in [1, 2, 3, 7] {
        let audit = Audit {
            page_size,
            ..Audit::new(Scope::Quiet)
        };
        let report = now_or_never(audit.run(&s, &s, &s)).unwrap();
        assert_eq!(report.violations, whole, "page size {page_size}");
        assert_eq!(report.entries, s.entries.len());
        assert_eq!(report.transfers, s.transfers.len());
    }
}

#[test]
fn a_transfer_not_terminal_for_too_long_is_flagged_even_mid_saga() {
    let s = with_payment_held();
    let created = s.transfers[3].created_at;
    let audit = |now| Audit {
        stuck_after: Some((now, std::time::Duration::from_secs(60))),
        ..Audit::new(Scope::Always)
    };
    let fresh = now_or_never(audit(created + chrono::Duration::seconds(60)).run(&s, &s, &s));
    assert_eq!(fresh.unwrap().violations, vec![]);
    let late = now_or_never(audit(created + chrono::Duration::seconds(61)).run(&s, &s, &s));
    assert_eq!(
        late.unwrap().violations,
        vec![Violation::Stuck {
            transfer: tid(4),
            status: TransferStatus::Reserved,
            since: created,
        }]
    );
}
