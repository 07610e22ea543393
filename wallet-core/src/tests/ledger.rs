//! `decide_posting` and `Posting::entries`: one balanced posting per
//! transfer, every refusal.

use proptest::prelude::*;

use crate::ids::WalletId;
use crate::ledger::{Direction, Entry, Posting, PostingDecision, PostingRequest, decide_posting};
use crate::money::{Amount, Balance, Currency};
use crate::outcome::{FailureReason, LedgerOutcome};

use super::fixtures::{at, tid, unchecked_amount, usd, wid};
use super::gwt::given;

/// The ledger's knowledge when a request arrives: an earlier outcome and the
/// currencies of accounts that already have entries.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    previous: Option<LedgerOutcome>,
    debit: Option<Currency>,
    credit: Option<Currency>,
}

fn post(request: &PostingRequest) -> impl FnOnce(&Known) -> PostingDecision + '_ {
    move |k| decide_posting(request, k.previous, k.debit, k.credit, at(7))
}

fn request(amount: Amount, currency: Currency) -> PostingRequest {
    PostingRequest {
        tags: Default::default(),
        transfer_id: tid(1),
        sender_wallet_id: wid(1),
        receiver_wallet_id: wid(2),
        amount,
        currency,
    }
}

#[test]
fn posts_a_debit_of_the_sender_and_a_credit_of_the_receiver() {
    let r = request(usd("12.34"), Currency::USD);
    let known = Known {
        previous: None,
        debit: Some(Currency::USD),
        credit: None,
    };
    let posting = Posting {
        transfer_id: tid(1),
        debit: wid(1),
        credit: wid(2),
        amount: usd("12.34"),
        currency: Currency::USD,
        posted_at: at(7),
    };
    given(known)
        .when_decided(post(&r))
        .then_decides(PostingDecision::Post(posting.clone()));
    let [debit, credit] = posting.entries();
    let line = |e: &Entry| {
        (
            e.seq,
            e.transfer_id,
            e.account,
            e.direction,
            e.amount,
            e.currency,
            e.posted_at,
        )
    };
    assert_eq!(
        line(&debit),
        (
            0,
            tid(1),
            wid(1),
            Direction::Debit,
            usd("12.34"),
            Currency::USD,
            at(7)
        )
    );
    assert_eq!(
        line(&credit),
        (
            0,
            tid(1),
            wid(2),
            Direction::Credit,
            usd("12.34"),
            Currency::USD,
            at(7)
        )
    );
    assert_eq!(debit.signed(), Balance::ZERO - usd("12.34"));
    assert_eq!(credit.signed(), Balance::from(usd("12.34")));
}

#[test]
fn a_transfer_decided_before_is_not_decided_again() {
    let r = request(usd("1"), Currency::USD);
    for previous in [
        LedgerOutcome::Succeeded,
        LedgerOutcome::Failed(FailureReason::CurrencyMismatch),
    ] {
        // Even a request that would now be refused gets the old outcome.
        let known = Known {
            previous: Some(previous),
            debit: Some(Currency::EUR),
            credit: None,
        };
        given(known)
            .when_decided(post(&r))
            .then_decides(PostingDecision::AlreadyDecided(previous));
    }
}

#[test]
fn refuses_a_posting_from_an_account_to_itself() {
    let r = PostingRequest {
        receiver_wallet_id: wid(1),
        ..request(usd("1"), Currency::USD)
    };
    given(Known::default())
        .when_decided(post(&r))
        .then_decides(PostingDecision::Reject(FailureReason::SameWallet));
}

#[test]
fn refuses_a_debit_account_of_another_currency() {
    let r = request(usd("1"), Currency::USD);
    let known = Known {
        debit: Some(Currency::EUR),
        credit: Some(Currency::USD),
        ..Known::default()
    };
    given(known)
        .when_decided(post(&r))
        .then_decides(PostingDecision::Reject(FailureReason::CurrencyMismatch));
}

#[test]
fn refuses_a_credit_account_of_another_currency() {
    let r = request(usd("1"), Currency::USD);
    let known = Known {
        debit: None,
        credit: Some(Currency::GBP),
        ..Known::default()
    };
    given(known)
        .when_decided(post(&r))
        .then_decides(PostingDecision::Reject(FailureReason::CurrencyMismatch));
}

#[test]
fn refuses_amounts_that_are_not_valid_for_the_currency() {
    for (amount, currency) in [
        (unchecked_amount("1.5"), Currency::JPY),
        (unchecked_amount("0.001"), Currency::USD),
        (unchecked_amount("0"), Currency::USD),
        (unchecked_amount("-3"), Currency::USD),
        (unchecked_amount("1000000000000.01"), Currency::USD),
    ] {
        let r = request(amount, currency);
        given(Known::default())
            .when_decided(post(&r))
            .then_decides(PostingDecision::Reject(FailureReason::InvalidAmount));
    }
}

#[test]
fn a_system_account_with_history_accepts_postings_of_its_currency() {
    let r = PostingRequest {
        sender_wallet_id: WalletId::system(Currency::USD),
        ..request(usd("5"), Currency::USD)
    };
    let known = Known {
        debit: Some(Currency::USD),
        credit: Some(Currency::USD),
        ..Known::default()
    };
    let decision = given(known).when_decided(post(&r)).outcome();
    let PostingDecision::Post(posting) = decision else {
        panic!("expected a posting, got {decision:?}");
    };
    assert_eq!(posting.debit, WalletId::system(Currency::USD));
}

proptest! {
    #[test]
    fn every_posting_sums_to_zero(cents in 1i64..=100_000_000_000_000, ci in 0usize..Currency::ALL.len()) {
        let currency = Currency::ALL[ci];
        let value = rust_decimal::Decimal::new(cents, currency.scale()).min(Amount::MAX);
        let amount = Amount::new(value, currency).unwrap();
        let posting = Posting {
            transfer_id: tid(1),
            debit: wid(1),
            credit: wid(2),
            amount,
            currency,
            posted_at: at(0),
        };
        let entries = posting.entries();
        prop_assert_eq!(entries.iter().map(Entry::signed).sum::<Balance>(), Balance::ZERO);
        prop_assert_eq!(entries[0].direction, Direction::Debit);
        prop_assert_eq!(entries[1].direction, Direction::Credit);
        prop_assert_eq!(entries[0].amount, entries[1].amount);
    }
}
