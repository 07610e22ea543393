//! The saga's state machine: every (status, command) pair of
//! `Transfer::decide`, `apply` and `handle`.

use crate::outcome::{FailureReason, LedgerOutcome, ReserveOutcome};
use crate::transfer::{TransferCommand, TransferEvent, TransferRejection, TransferStatus};

use super::fixtures::{at, t0, transfer};
use super::gwt::given;

use TransferStatus::{Failed, Initiated, Reserved, Succeeded};

const RESERVED: TransferCommand = TransferCommand::RecordReserve(ReserveOutcome::Reserved);
const RESERVE_REFUSED: TransferCommand =
    TransferCommand::RecordReserve(ReserveOutcome::Rejected(FailureReason::InsufficientFunds));
const POSTED: TransferCommand = TransferCommand::RecordLedger(LedgerOutcome::Succeeded);
const LEDGER_REFUSED: TransferCommand =
    TransferCommand::RecordLedger(LedgerOutcome::Failed(FailureReason::CurrencyMismatch));

const ALL_COMMANDS: [TransferCommand; 4] = [RESERVED, RESERVE_REFUSED, POSTED, LEDGER_REFUSED];

#[test]
fn initiated_and_reserved_moves_to_reserved() {
    let t = given(transfer(Initiated))
        .when(RESERVED)
        .then_expect(TransferEvent::Reserved);
    assert_eq!((t.status, t.failure_reason), (Reserved, None));
    assert_eq!(t.updated_at, at(1));
}

#[test]
fn initiated_and_reserve_refused_fails_with_the_reason() {
    let t = given(transfer(Initiated))
        .when(RESERVE_REFUSED)
        .then_expect(TransferEvent::Failed(FailureReason::InsufficientFunds));
    assert_eq!(
        (t.status, t.failure_reason),
        (Failed, Some(FailureReason::InsufficientFunds))
    );
}

#[test]
fn initiated_and_ledger_succeeded_moves_to_succeeded_when_the_reserve_answer_was_lost() {
    let t = given(transfer(Initiated))
        .when(POSTED)
        .then_expect(TransferEvent::Succeeded);
    assert_eq!((t.status, t.failure_reason), (Succeeded, None));
}

#[test]
fn initiated_and_ledger_failed_fails_with_the_ledgers_reason() {
    let t = given(transfer(Initiated))
        .when(LEDGER_REFUSED)
        .then_expect(TransferEvent::Failed(FailureReason::CurrencyMismatch));
    assert_eq!(t.failure_reason, Some(FailureReason::CurrencyMismatch));
}

#[test]
fn reserved_and_a_second_reserved_answer_is_already_reserved() {
    let t = given(transfer(Initiated))
        .and([TransferEvent::Reserved])
        .when(RESERVED)
        .then_reject(TransferRejection::AlreadyReserved);
    assert_eq!(t.status, Reserved);
}

#[test]
fn reserved_and_a_refused_reserve_is_a_contradiction() {
    let t = given(transfer(Reserved))
        .when(RESERVE_REFUSED)
        .then_reject(TransferRejection::Contradiction);
    assert_eq!((t.status, t.failure_reason), (Reserved, None));
}

#[test]
fn reserved_and_ledger_succeeded_moves_to_succeeded() {
    let t = given(transfer(Initiated))
        .and([TransferEvent::Reserved])
        .when(POSTED)
        .then_expect(TransferEvent::Succeeded);
    assert_eq!(t.status, Succeeded);
}

#[test]
fn reserved_and_ledger_failed_fails() {
    let t = given(transfer(Reserved))
        .when(LEDGER_REFUSED)
        .then_expect(TransferEvent::Failed(FailureReason::CurrencyMismatch));
    assert_eq!(
        (t.status, t.failure_reason),
        (Failed, Some(FailureReason::CurrencyMismatch))
    );
}

#[test]
fn a_terminal_transfer_refuses_every_command() {
    for (history, status) in [
        (vec![TransferEvent::Succeeded], Succeeded),
        (
            vec![TransferEvent::Reserved, TransferEvent::Succeeded],
            Succeeded,
        ),
        (
            vec![TransferEvent::Failed(FailureReason::SameWallet)],
            Failed,
        ),
    ] {
        for command in ALL_COMMANDS {
            let t = given(transfer(Initiated))
                .and(history.clone())
                .when(command)
                .then_reject(TransferRejection::Terminal(status));
            assert_eq!(t.status, status);
        }
    }
}

#[test]
fn every_status_and_command_pair_is_decided_as_the_saga_says() {
    use TransferEvent as E;
    use TransferRejection as R;
    let failed_reserve = E::Failed(FailureReason::InsufficientFunds);
    let failed_ledger = E::Failed(FailureReason::CurrencyMismatch);
    let table: [(TransferStatus, [Result<E, R>; 4]); 4] = [
        (
            Initiated,
            [
                Ok(E::Reserved),
                Ok(failed_reserve),
                Ok(E::Succeeded),
                Ok(failed_ledger),
            ],
        ),
        (
            Reserved,
            [
                Err(R::AlreadyReserved),
                Err(R::Contradiction),
                Ok(E::Succeeded),
                Ok(failed_ledger),
            ],
        ),
        (Succeeded, [Err(R::Terminal(Succeeded)); 4]),
        (Failed, [Err(R::Terminal(Failed)); 4]),
    ];
    for (status, expected) in table {
        for (command, want) in ALL_COMMANDS.iter().zip(expected) {
            let got = given(transfer(status)).when(command.clone()).outcome();
            assert_eq!(got, want, "{status:?} + {command:?}");
        }
    }
}

#[test]
fn handle_applies_what_decide_accepts_and_reports_a_change() {
    let mut t = transfer(Initiated);
    assert!(t.handle(&RESERVED, at(3)));
    assert_eq!((t.status, t.updated_at), (Reserved, at(3)));
    assert!(t.handle(&POSTED, at(4)));
    assert_eq!((t.status, t.updated_at), (Succeeded, at(4)));
}

#[test]
fn handle_leaves_the_transfer_as_it_is_on_every_rejection() {
    let cases = [
        (Reserved, RESERVED),
        (Reserved, RESERVE_REFUSED),
        (Succeeded, LEDGER_REFUSED),
        (Succeeded, RESERVE_REFUSED),
        (Failed, POSTED),
        (Failed, RESERVED),
    ];
    for (status, command) in cases {
        let mut t = transfer(status);
        let before = t.clone();
        assert!(!t.handle(&command, at(9)), "{status:?} + {command:?}");
        assert_eq!(t, before, "{status:?} + {command:?} changed the transfer");
    }
}

#[test]
fn a_late_ledger_failure_never_undoes_a_success() {
    let mut t = transfer(Initiated);
    assert!(t.handle(&POSTED, at(1)));
    assert!(!t.handle(&LEDGER_REFUSED, at(2)));
    assert!(!t.handle(&RESERVE_REFUSED, at(3)));
    assert_eq!(
        (t.status, t.failure_reason, t.updated_at),
        (Succeeded, None, at(1))
    );
}

#[test]
#[should_panic(expected = "terminal transfer")]
fn applying_to_a_terminal_transfer_is_a_bug() {
    let mut t = transfer(Succeeded);
    t.apply(TransferEvent::Failed(FailureReason::SameWallet), t0());
}

#[test]
fn statuses_have_their_api_names_and_terminality() {
    let names: Vec<_> = [Initiated, Reserved, Succeeded, Failed]
        .iter()
        .map(|s| (s.as_str(), s.is_terminal()))
        .collect();
    assert_eq!(
        names,
        [
            ("INITIATED", false),
            ("RESERVED", false),
            ("SUCCEEDED", true),
            ("FAILED", true)
        ]
    );
    assert_eq!(serde_json::to_string(&Reserved).unwrap(), "\"RESERVED\"");
}
