//! Wallets and reservations: `decide_reservation` / `apply`, `decide_reserve` and
//! `decide_finalize`, every transition and every refusal.

use crate::ids::WalletId;
use crate::money::Currency;
use crate::outcome::{FailureReason, LedgerOutcome, ReserveOutcome};
use crate::time::Timestamp;
use crate::transfer::TransferKind;
use crate::wallet::{
    Finalization, FinalizeError, Reservation, ReservationState, ReserveDecision, ReserveRequest,
    Wallet, WalletChange, WalletRejection, decide_finalize, decide_reserve,
};

use super::fixtures::{
    at, bal, reservation, reserve_request, t0, tid, unchecked_amount, usd, user_wallet, wid,
};
use super::gwt::{HoldFunds, given};

fn alice(available: &str) -> Wallet {
    user_wallet(wid(1), Currency::USD, available)
}

fn bob() -> Wallet {
    user_wallet(wid(2), Currency::USD, "0")
}

mod hold_and_apply {
    use super::*;

    #[test]
    fn a_user_wallet_with_enough_funds_holds_them() {
        let w = given(alice("0"))
            .and([WalletChange::Credited(usd("100"))])
            .when(HoldFunds(usd("30")))
            .then_expect(WalletChange::Reserved(usd("30")));
        assert_eq!((w.available, w.reserved), (bal("70"), bal("30")));
        assert_eq!(w.updated_at, at(1));
    }

    #[test]
    fn a_user_wallet_may_hold_exactly_its_available_balance() {
        let w = given(alice("25.50"))
            .when(HoldFunds(usd("25.50")))
            .then_expect(WalletChange::Reserved(usd("25.50")));
        assert_eq!((w.available, w.reserved), (bal("0"), bal("25.50")));
    }

    #[test]
    fn a_user_wallet_refuses_a_hold_above_its_available_balance() {
        let w = given(alice("30"))
            .and([WalletChange::Reserved(usd("20"))])
            .when(HoldFunds(usd("10.01")))
            .then_reject(WalletRejection::InsufficientFunds {
                available: bal("10"),
                requested: usd("10.01"),
            });
        assert_eq!((w.available, w.reserved), (bal("10"), bal("20")));
    }

    #[test]
    fn an_empty_user_wallet_refuses_the_smallest_hold() {
        given(alice("0")).when(HoldFunds(usd("0.01"))).then_reject(
            WalletRejection::InsufficientFunds {
                available: bal("0"),
                requested: usd("0.01"),
            },
        );
    }

    #[test]
    #[should_panic(expected = "system accounts have no wallet")]
    fn a_system_account_has_no_wallet() {
        let _ = Wallet::open(WalletId::system(Currency::USD), Currency::USD, t0());
    }

    #[test]
    fn captured_takes_the_funds_out_of_reserved() {
        let w = given(alice("100"))
            .and([
                WalletChange::Reserved(usd("40")),
                WalletChange::Captured(usd("40")),
            ])
            .state();
        assert_eq!((w.available, w.reserved), (bal("60"), bal("0")));
    }

    #[test]
    fn released_moves_reserved_back_to_available() {
        let w = given(alice("100"))
            .and([
                WalletChange::Reserved(usd("40")),
                WalletChange::Released(usd("15")),
            ])
            .state();
        assert_eq!((w.available, w.reserved), (bal("75"), bal("25")));
        let w = given(w).and([WalletChange::Released(usd("25"))]).state();
        assert_eq!((w.available, w.reserved), (bal("100"), bal("0")));
    }

    #[test]
    fn credited_adds_to_available_only() {
        let w = given(alice("1"))
            .and([
                WalletChange::Reserved(usd("1")),
                WalletChange::Credited(usd("9.99")),
            ])
            .state();
        assert_eq!((w.available, w.reserved), (bal("9.99"), bal("1")));
    }

    #[test]
    fn apply_stamps_the_time_of_the_change() {
        let mut w = alice("1");
        w.apply(WalletChange::Credited(usd("1")), at(42));
        assert_eq!((w.created_at, w.updated_at), (t0(), at(42)));
    }

    #[test]
    #[should_panic(expected = "reserved < 0")]
    fn capturing_more_than_is_reserved_is_a_bug() {
        let _ = given(alice("100")).and([
            WalletChange::Reserved(usd("10")),
            WalletChange::Captured(usd("10.01")),
        ]);
    }

    #[test]
    #[should_panic(expected = "reserved < 0")]
    fn releasing_what_was_never_reserved_is_a_bug() {
        let _ = given(alice("100")).and([WalletChange::Released(usd("1"))]);
    }

    #[test]
    #[should_panic(expected = "available < 0")]
    fn applying_a_hold_a_user_wallet_cannot_cover_is_a_bug() {
        let _ = given(alice("5")).and([WalletChange::Reserved(usd("5.01"))]);
    }
}

/// The stored state a reserve is decided on.
#[derive(Debug, Clone, Default)]
struct Stored {
    reservation: Option<Reservation>,
    sender: Option<Wallet>,
    receiver: Option<Wallet>,
}

fn stored(sender: Option<Wallet>, receiver: Option<Wallet>) -> Stored {
    Stored {
        reservation: None,
        sender,
        receiver,
    }
}

fn reserve(request: &ReserveRequest, now: Timestamp) -> impl FnOnce(&Stored) -> ReserveDecision {
    move |s| {
        decide_reserve(
            request,
            s.reservation.as_ref(),
            None,
            s.sender.as_ref(),
            s.receiver.as_ref(),
            now,
        )
    }
}

fn alice_to_bob(amount: &str) -> ReserveRequest {
    reserve_request(tid(1), wid(1), wid(2), usd(amount), Currency::USD)
}

fn rejected(request: &ReserveRequest, reason: FailureReason) -> ReserveDecision {
    ReserveDecision::Reject(Reservation {
        request: request.clone(),
        state: ReservationState::Rejected(reason),
        captured_by: None,
        created_at: at(5),
        updated_at: at(5),
    })
}

mod reserve {
    use super::*;

    #[test]
    fn reserves_the_senders_funds_and_records_the_reservation() {
        let request = alice_to_bob("30");
        let decision = given(stored(Some(alice("100")), Some(bob())))
            .when_decided(reserve(&request, at(5)))
            .outcome();
        let ReserveDecision::Reserve {
            reservation,
            sender: Some(sender),
            hold: None,
        } = decision
        else {
            panic!("expected a reservation of alice's funds, got {decision:?}");
        };
        assert_eq!(reservation.request, request);
        assert_eq!(reservation.state, ReservationState::Reserved);
        assert_eq!(
            (reservation.created_at, reservation.updated_at),
            (at(5), at(5))
        );
        assert_eq!(reservation.outcome(), ReserveOutcome::Reserved);
        assert_eq!(sender.id, wid(1));
        assert_eq!((sender.available, sender.reserved), (bal("70"), bal("30")));
        assert_eq!(sender.updated_at, at(5));
    }

    #[test]
    fn a_recorded_reservation_is_replayed_and_nothing_is_decided_again() {
        let request = alice_to_bob("30");
        let mut s = stored(Some(alice("0")), Some(bob()));
        for state in [
            ReservationState::Reserved,
            ReservationState::Captured,
            ReservationState::Released,
        ] {
            s.reservation = Some(reservation(request.clone(), state));
            // The sender is empty now: deciding afresh would refuse.
            given(s.clone())
                .when_decided(reserve(&request, at(5)))
                .then_decides(ReserveDecision::Replay(ReserveOutcome::Reserved));
        }
    }

    #[test]
    fn a_recorded_refusal_is_replayed_even_if_it_would_now_pass() {
        let request = alice_to_bob("30");
        let s = Stored {
            reservation: Some(reservation(
                request.clone(),
                ReservationState::Rejected(FailureReason::InsufficientFunds),
            )),
            ..stored(Some(alice("1000")), Some(bob()))
        };
        given(s)
            .when_decided(reserve(&request, at(5)))
            .then_decides(ReserveDecision::Replay(ReserveOutcome::Rejected(
                FailureReason::InsufficientFunds,
            )));
    }

    #[test]
    fn refuses_the_same_wallet_on_both_sides() {
        let request = reserve_request(tid(1), wid(1), wid(1), usd("1"), Currency::USD);
        given(stored(Some(alice("100")), Some(alice("100"))))
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::SameWallet));
    }

    #[test]
    fn refuses_an_unknown_sender() {
        let request = alice_to_bob("1");
        given(stored(None, Some(bob())))
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::WalletNotFound));
    }

    #[test]
    fn refuses_an_unknown_receiver() {
        let request = alice_to_bob("1");
        given(stored(Some(alice("100")), None))
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::WalletNotFound));
    }

    #[test]
    fn a_system_sender_is_neither_checked_nor_written() {
        let system = WalletId::system(Currency::USD);
        let request = reserve_request(tid(1), system, wid(2), usd("250"), Currency::USD);
        let decision = given(stored(None, Some(bob())))
            .when_decided(reserve(&request, at(5)))
            .outcome();
        let ReserveDecision::Reserve {
            reservation,
            sender: None,
            hold: None,
        } = decision
        else {
            panic!("expected a reservation with no sender to write, got {decision:?}");
        };
        assert_eq!(reservation.state, ReservationState::Reserved);
        assert_eq!(reservation.request, request);
    }

    #[test]
    fn a_system_receiver_needs_no_wallet_and_only_the_sender_is_written() {
        let system = WalletId::system(Currency::USD);
        let request = reserve_request(tid(1), wid(1), system, usd("40"), Currency::USD);
        let decision = given(stored(Some(alice("100")), None))
            .when_decided(reserve(&request, at(5)))
            .outcome();
        let ReserveDecision::Reserve {
            sender: Some(sender),
            ..
        } = decision
        else {
            panic!("expected a reservation, got {decision:?}");
        };
        assert_eq!(sender.id, wid(1));
        assert_eq!(sender.available, bal("60"));
    }

    #[test]
    fn a_system_account_takes_part_only_as_the_sender_of_a_deposit_or_receiver_of_a_withdrawal() {
        let system = WalletId::system(Currency::USD);
        // The stored wallets of the parties: alice and bob have theirs.
        let of = |id: WalletId| [alice("1000"), bob()].into_iter().find(|w| w.id == id);
        // Whoever asks: the kind the request says decides which side a
        // system account may take, and a wallet-to-wallet transfer it
        // takes none, so it cannot mint money into a wallet.
        for (kind, sender, receiver) in [
            (TransferKind::Transfer, system, wid(2)),
            (TransferKind::Transfer, wid(1), system),
            (TransferKind::Withdrawal, system, wid(2)),
            (TransferKind::Deposit, wid(1), system),
            (TransferKind::Deposit, wid(1), wid(2)),
            (TransferKind::Withdrawal, wid(1), wid(2)),
        ] {
            let request = ReserveRequest {
                kind,
                ..reserve_request(tid(1), sender, receiver, usd("250"), Currency::USD)
            };
            given(stored(of(sender), of(receiver)))
                .when_decided(reserve(&request, at(5)))
                .then_decides(rejected(&request, FailureReason::WalletNotFound));
        }
        for (kind, sender, receiver) in [
            (TransferKind::Deposit, system, wid(2)),
            (TransferKind::Withdrawal, wid(1), system),
            (TransferKind::Transfer, wid(1), wid(2)),
        ] {
            let request = ReserveRequest {
                kind,
                ..reserve_request(tid(1), sender, receiver, usd("250"), Currency::USD)
            };
            let decision = given(stored(of(sender), of(receiver)))
                .when_decided(reserve(&request, at(5)))
                .outcome();
            assert!(
                matches!(decision, ReserveDecision::Reserve { .. }),
                "{kind:?}: {decision:?}"
            );
        }
    }

    #[test]
    fn a_system_account_of_another_currency_is_a_currency_mismatch() {
        let eur_system = WalletId::system(Currency::EUR);
        let request = reserve_request(tid(1), wid(1), eur_system, usd("40"), Currency::USD);
        given(stored(Some(alice("100")), None))
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::CurrencyMismatch));
    }

    #[test]
    fn refuses_a_sender_in_another_currency() {
        let request = alice_to_bob("1");
        let eur_alice = user_wallet(wid(1), Currency::EUR, "100");
        given(stored(Some(eur_alice), Some(bob())))
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::CurrencyMismatch));
    }

    #[test]
    fn refuses_a_receiver_in_another_currency() {
        let request = alice_to_bob("1");
        let eur_bob = user_wallet(wid(2), Currency::EUR, "0");
        given(stored(Some(alice("100")), Some(eur_bob)))
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::CurrencyMismatch));
    }

    #[test]
    fn refuses_the_system_account_of_another_currency() {
        let eur_system = WalletId::system(Currency::EUR);
        let request = reserve_request(tid(1), eur_system, wid(2), usd("1"), Currency::USD);
        given(stored(None, Some(bob())))
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::CurrencyMismatch));
    }

    #[test]
    fn refuses_an_amount_with_more_decimals_than_the_currency_has() {
        // 1.50 is a fine USD amount but not a JPY one.
        let request = reserve_request(tid(1), wid(1), wid(2), usd("1.50"), Currency::JPY);
        let s = stored(
            Some(user_wallet(wid(1), Currency::JPY, "100")),
            Some(user_wallet(wid(2), Currency::JPY, "0")),
        );
        given(s)
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::InvalidAmount));
        let request = reserve_request(
            tid(1),
            wid(1),
            wid(2),
            unchecked_amount("0.001"),
            Currency::USD,
        );
        given(stored(Some(alice("100")), Some(bob())))
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::InvalidAmount));
    }

    #[test]
    fn refuses_zero_and_negative_amounts_that_slipped_past_the_api() {
        for text in ["0", "-5"] {
            let request = reserve_request(
                tid(1),
                wid(1),
                wid(2),
                unchecked_amount(text),
                Currency::USD,
            );
            given(stored(Some(alice("100")), Some(bob())))
                .when_decided(reserve(&request, at(5)))
                .then_decides(rejected(&request, FailureReason::InvalidAmount));
        }
    }

    #[test]
    fn refuses_more_than_the_senders_available_balance() {
        let request = alice_to_bob("100.01");
        let mut sender = alice("150");
        sender.apply(WalletChange::Reserved(usd("50")), t0());
        given(stored(Some(sender), Some(bob())))
            .when_decided(reserve(&request, at(5)))
            .then_decides(rejected(&request, FailureReason::InsufficientFunds));
    }
}

fn held(amount: &str, state: ReservationState) -> Reservation {
    reservation(alice_to_bob(amount), state)
}

fn finalize(
    outcome: LedgerOutcome,
) -> impl FnOnce(&Option<Reservation>) -> Result<Option<Finalization>, FinalizeError> {
    move |h| decide_finalize(h.as_ref(), tid(1), outcome)
}

const FAILED: LedgerOutcome = LedgerOutcome::Failed(FailureReason::CurrencyMismatch);

mod finalization {
    use super::*;

    #[test]
    fn a_posted_transfer_captures_the_sender_and_credits_the_receiver() {
        given(Some(held("30", ReservationState::Reserved)))
            .when_decided(finalize(LedgerOutcome::Succeeded))
            .then_ok(Some(Finalization {
                state: ReservationState::Captured,
                changes: vec![
                    (wid(1), WalletChange::Captured(usd("30"))),
                    (wid(2), WalletChange::Credited(usd("30"))),
                ],
            }));
    }

    #[test]
    fn a_refused_transfer_releases_the_reservation() {
        given(Some(held("30", ReservationState::Reserved)))
            .when_decided(finalize(FAILED))
            .then_ok(Some(Finalization {
                state: ReservationState::Released,
                changes: vec![(wid(1), WalletChange::Released(usd("30")))],
            }));
    }

    #[test]
    fn a_repeated_outcome_changes_nothing() {
        given(Some(held("30", ReservationState::Captured)))
            .when_decided(finalize(LedgerOutcome::Succeeded))
            .then_ok(None);
        given(Some(held("30", ReservationState::Released)))
            .when_decided(finalize(FAILED))
            .then_ok(None);
        // Another failure reason is still the same outcome.
        given(Some(held("30", ReservationState::Released)))
            .when_decided(finalize(LedgerOutcome::Failed(FailureReason::SameWallet)))
            .then_ok(None);
    }

    #[test]
    fn an_outcome_that_contradicts_the_reservation_is_refused() {
        let rejected = ReservationState::Rejected(FailureReason::InsufficientFunds);
        let cases = [
            (ReservationState::Captured, FAILED),
            (ReservationState::Released, LedgerOutcome::Succeeded),
            (rejected, LedgerOutcome::Succeeded),
            (rejected, FAILED),
        ];
        for (state, outcome) in cases {
            given(Some(held("30", state)))
                .when_decided(finalize(outcome))
                .then_reject(FinalizeError::Contradiction { state, outcome });
        }
    }

    #[test]
    fn an_outcome_for_an_unknown_reservation_is_refused() {
        for outcome in [LedgerOutcome::Succeeded, FAILED] {
            given(None)
                .when_decided(finalize(outcome))
                .then_reject(FinalizeError::UnknownReservation(tid(1)));
        }
    }

    #[test]
    fn changes_come_in_wallet_id_order_so_opposite_transfers_lock_alike() {
        let request = reserve_request(tid(1), wid(2), wid(1), usd("5"), Currency::USD);
        given(Some(reservation(request, ReservationState::Reserved)))
            .when_decided(finalize(LedgerOutcome::Succeeded))
            .then_ok(Some(Finalization {
                state: ReservationState::Captured,
                changes: vec![
                    (wid(1), WalletChange::Credited(usd("5"))),
                    (wid(2), WalletChange::Captured(usd("5"))),
                ],
            }));
    }

    #[test]
    fn a_system_account_gets_no_change() {
        let system = WalletId::system(Currency::USD);
        let deposit = reserve_request(tid(1), system, wid(2), usd("5"), Currency::USD);
        given(Some(reservation(deposit, ReservationState::Reserved)))
            .when_decided(finalize(LedgerOutcome::Succeeded))
            .then_ok(Some(Finalization {
                state: ReservationState::Captured,
                changes: vec![(wid(2), WalletChange::Credited(usd("5")))],
            }));
        let withdrawal = reserve_request(tid(1), wid(1), system, usd("5"), Currency::USD);
        given(Some(reservation(
            withdrawal.clone(),
            ReservationState::Reserved,
        )))
        .when_decided(finalize(LedgerOutcome::Succeeded))
        .then_ok(Some(Finalization {
            state: ReservationState::Captured,
            changes: vec![(wid(1), WalletChange::Captured(usd("5")))],
        }));
        let deposit = reserve_request(tid(1), system, wid(2), usd("5"), Currency::USD);
        given(Some(reservation(deposit, ReservationState::Reserved)))
            .when_decided(finalize(FAILED))
            .then_ok(Some(Finalization {
                state: ReservationState::Released,
                changes: vec![],
            }));
    }
}
