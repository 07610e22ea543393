//! Scenarios of [`WalletStore`] and [`WalletReads`], of the wallet store's
//! [`Outbox`] (`WalletReserved` events and dead letters), and of the wallet
//! store under concurrent use.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinHandle;

use crate::contract::Fixture;
use crate::contract::data::at;
use crate::contract::data::{
    TestData, assert_funds, assert_page_after, balance, deposit, facts, open_wallet, outbox_items,
    outbox_of, retrying, wallet_now,
};
use crate::contract::outbox::{self, WalletFeed};
use crate::event::{Envelope, Event, EventStamp, Inbound, Outgoing, StampedReserve, producer};
use crate::ids::{IdGenerator, TransferId, WalletId};
use crate::money::{Balance, Currency};
use crate::outcome::{FailureReason, LedgerOutcome, ReserveOutcome};
use crate::ports::{Outbox, Refusal, StoreError, WalletReads, WalletStore};
use crate::transfer::HoldEnd;
use crate::wallet::{
    HoldRelease, HoldState, Reservation, ReservationState, ReserveRequest, Wallet,
};

crate::__contract_scenarios!(wallet_store => __contract_names());

async fn reserve<S: WalletStore>(
    store: &S,
    request: &ReserveRequest,
    stamp: EventStamp,
) -> ReserveOutcome {
    store
        .reserve(request, stamp)
        .await
        .unwrap_or_else(|e| panic!("reserve of transfer {} failed: {e}", request.transfer_id))
}

async fn finalize<S: WalletStore>(
    store: &S,
    data: &TestData,
    batch: &[Inbound<LedgerOutcome>],
) -> Vec<Refusal> {
    store
        .finalize(batch, data.now())
        .await
        .unwrap_or_else(|e| panic!("finalize failed: {e}"))
}

fn rejected(reason: FailureReason) -> ReserveOutcome {
    ReserveOutcome::Rejected(reason)
}

/// The `WalletReserved` event a reservation of `request` stamped `stamp`
/// must write, built field by field from the request.
fn expected_wallet_reserved(request: &ReserveRequest, stamp: EventStamp) -> Outgoing {
    Outgoing::Event(
        Envelope::new(
            stamp.event_id,
            Event::WalletReserved(facts(request)),
            request.transfer_id,
            request.correlation_id,
            None,
            stamp.at,
            producer::WALLET,
        )
        .traced(stamp.trace),
    )
}

/// Every reservation, read page by page.
async fn all_reservations<S: WalletReads>(store: &S) -> Vec<Reservation> {
    let mut all: Vec<Reservation> = Vec::new();
    loop {
        let after = all.last().map(|r| r.request.transfer_id);
        let page = store
            .reservations_page(after, 100)
            .await
            .unwrap_or_else(|e| panic!("reservations_page failed: {e}"));
        assert_page_after(
            "reservations_page",
            after,
            page.iter().map(|r| r.request.transfer_id),
        );
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

async fn reservation_state<S: WalletReads>(
    store: &S,
    transfer: TransferId,
) -> Option<ReservationState> {
    all_reservations(store)
        .await
        .into_iter()
        .find(|r| r.request.transfer_id == transfer)
        .map(|r| r.state)
}

/// Asserts that a refused reserve left no trace but its rejection: no
/// outbox record.
async fn assert_no_outbox_record<S: Outbox>(store: &S, transfer: TransferId, context: &str) {
    let items = outbox_of(store, transfer).await;
    assert!(
        items.is_empty(),
        "{context}: a rejected reserve must write nothing to the outbox, got {items:?}"
    );
}

/// Waits for a spawned task, passing on its panic so the scenario fails
/// with the task's message.
async fn joined<T>(handle: JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("a scenario task was cancelled: {error}"),
    }
}

/// `open_wallet` stores a wallet that `wallet` then returns as opened;
/// an id never opened reads as `None`.
pub async fn open_wallet_then_read_it<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let usd = data.wallet(Currency::USD);
    let jpy = data.wallet(Currency::JPY);
    for wallet in [&usd, &jpy] {
        store
            .open_wallet(wallet)
            .await
            .unwrap_or_else(|e| panic!("open_wallet of a new id failed: {e}"));
    }
    for wallet in [&usd, &jpy] {
        assert_eq!(
            &wallet_now(&store, wallet.id).await,
            wallet,
            "wallet(id) should return the wallet exactly as opened"
        );
    }
    assert_eq!(
        store.wallet(data.wallet_id()).await.expect("wallet"),
        None,
        "wallet(id) of an id never opened should be None"
    );
}

/// Opening an id that exists is an integrity error and changes nothing.
pub async fn opening_an_existing_id_is_an_integrity_error<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let wallet = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &wallet, "10.00").await;
    let before = wallet_now(&store, wallet.id).await;

    let again = Wallet::open(wallet.id, Currency::EUR, data.now());
    let result = store.open_wallet(&again).await;
    assert!(
        matches!(result, Err(StoreError::Integrity(_))),
        "opening an existing id should be StoreError::Integrity, got {result:?}"
    );
    assert_eq!(
        wallet_now(&store, wallet.id).await,
        before,
        "a refused open must not change the existing wallet"
    );
    let page = store.wallets_page(None, 10).await.expect("wallets_page");
    assert_eq!(page.len(), 1, "still one wallet, got {page:?}");
}

/// A deposit (sender: the currency's system account) and a withdrawal
/// (receiver: the system account) work without a stored system wallet; the
/// system account never becomes a wallet.
pub async fn a_deposit_needs_no_stored_system_wallet<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let wallet = open_wallet(&store, &data, Currency::USD).await;
    let system = WalletId::system(Currency::USD);

    let request = data.reserve_request(system, wallet.id, "25.00", Currency::USD);
    let stamp = data.stamp();
    assert_eq!(
        reserve(&store, &request, stamp).await,
        ReserveOutcome::Reserved,
        "a deposit from the system account should be reserved without a stored system wallet"
    );
    assert_eq!(
        outbox_of(&store, request.transfer_id).await,
        vec![expected_wallet_reserved(&request, stamp)],
        "a deposit's reserve should write its WalletReserved"
    );
    let refused = finalize(
        &store,
        &data,
        &[data.ledger_outcome(&request, LedgerOutcome::Succeeded)],
    )
    .await;
    assert!(
        refused.is_empty(),
        "capturing a deposit was refused: {refused:?}"
    );
    assert_funds(&store, wallet.id, "25.00", "0", "after a deposit").await;

    let withdrawal = data.reserve_request(wallet.id, system, "5.00", Currency::USD);
    assert_eq!(
        reserve(&store, &withdrawal, data.stamp()).await,
        ReserveOutcome::Reserved,
        "a withdrawal to the system account should be reserved"
    );
    assert_funds(
        &store,
        wallet.id,
        "20.00",
        "5.00",
        "after reserving a withdrawal",
    )
    .await;
    let refused = finalize(
        &store,
        &data,
        &[data.ledger_outcome(&withdrawal, LedgerOutcome::Succeeded)],
    )
    .await;
    assert!(
        refused.is_empty(),
        "capturing a withdrawal was refused: {refused:?}"
    );
    assert_funds(&store, wallet.id, "20.00", "0", "after a withdrawal").await;

    assert_eq!(
        store.wallet(system).await.expect("wallet"),
        None,
        "the system account must never be stored as a wallet"
    );
    let ids: Vec<WalletId> = store
        .wallets_page(None, 10)
        .await
        .expect("wallets_page")
        .into_iter()
        .map(|w| w.id)
        .collect();
    assert_eq!(
        ids,
        vec![wallet.id],
        "wallets_page should hold the user wallet only"
    );
}

/// A `WalletReserved` goes to the outbox with the trace context of its
/// stamp, and comes back from a claim with it; one stamped without has none.
pub async fn wallet_reserved_keeps_the_trace_context_of_its_stamp<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = data.reserve_request(sender.id, receiver.id, "30.00", Currency::USD);
    let untraced = data.reserve_request(sender.id, receiver.id, "20.00", Currency::USD);
    let traced_stamp = EventStamp {
        trace: Some(trace.parse().expect("a valid traceparent")),
        ..data.stamp()
    };
    let batch = [
        StampedReserve {
            request: traced.clone(),
            stamp: traced_stamp,
        },
        StampedReserve {
            request: untraced.clone(),
            stamp: data.stamp(),
        },
    ];
    store
        .reserve_batch(&batch)
        .await
        .unwrap_or_else(|e| panic!("reserve_batch: {e}"));
    let written = outbox_of(&store, traced.transfer_id).await;
    assert_eq!(
        written,
        vec![expected_wallet_reserved(&traced, traced_stamp)],
        "the WalletReserved should be written with its stamp's trace context"
    );
    assert_eq!(
        written[0].trace().map(|t| t.to_string()).as_deref(),
        Some(trace),
        "the outbox should give the trace context back as written"
    );
    let written = outbox_of(&store, untraced.transfer_id).await;
    assert_eq!(
        written.iter().map(Outgoing::trace).collect::<Vec<_>>(),
        vec![None],
        "a WalletReserved written without a trace context has none"
    );
}

/// A reserve moves the amount from available to reserved, records the
/// reservation, and writes exactly one `WalletReserved` with the request's
/// facts, stamped as asked.
pub async fn reserve_moves_available_to_reserved_and_writes_wallet_reserved<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;

    let request = data.reserve_request(sender.id, receiver.id, "30.00", Currency::USD);
    let stamp = data.stamp();
    assert_eq!(
        reserve(&store, &request, stamp).await,
        ReserveOutcome::Reserved,
        "a funded reserve should be Reserved"
    );
    assert_funds(
        &store,
        sender.id,
        "70.00",
        "30.00",
        "sender after the reserve",
    )
    .await;
    assert_funds(&store, receiver.id, "0", "0", "receiver after the reserve").await;
    assert_eq!(
        outbox_of(&store, request.transfer_id).await,
        vec![expected_wallet_reserved(&request, stamp)],
        "the reserve should write exactly one WalletReserved with the request's facts and the stamp"
    );
    let reservation = all_reservations(&store)
        .await
        .into_iter()
        .find(|r| r.request.transfer_id == request.transfer_id);
    assert_eq!(
        reservation,
        Some(Reservation {
            request: request.clone(),
            state: ReservationState::Reserved,
            captured_by: None,
            created_at: stamp.at,
            updated_at: stamp.at,
        }),
        "the reservation should be recorded as requested, RESERVED, at the stamp's time"
    );
}

/// A transfer id is reserved at most once: a repeat, even with another
/// body, returns the first outcome, moves no funds and writes nothing.
pub async fn reserve_is_idempotent_by_transfer_id<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;

    let request = data.reserve_request(sender.id, receiver.id, "30.00", Currency::USD);
    let first = data.stamp();
    assert_eq!(
        reserve(&store, &request, first).await,
        ReserveOutcome::Reserved
    );
    assert_eq!(
        reserve(&store, &request, data.stamp()).await,
        ReserveOutcome::Reserved,
        "a repeat should return the first outcome"
    );
    let mut changed = request.clone();
    changed.amount = crate::contract::data::usd("50.00");
    assert_eq!(
        reserve(&store, &changed, data.stamp()).await,
        ReserveOutcome::Reserved,
        "a repeat of the transfer id with another amount should return the first outcome"
    );
    assert_funds(
        &store,
        sender.id,
        "70.00",
        "30.00",
        "after three reserves of one transfer",
    )
    .await;
    assert_eq!(
        outbox_of(&store, request.transfer_id).await,
        vec![expected_wallet_reserved(&request, first)],
        "only the first reserve writes WalletReserved"
    );
    let count = all_reservations(&store)
        .await
        .iter()
        .filter(|r| r.request.transfer_id == request.transfer_id)
        .count();
    assert_eq!(count, 1, "one reservation per transfer id");
}

/// A rejection is remembered: repeating a transfer refused for
/// insufficient funds after a deposit still returns the rejection and
/// holds nothing.
pub async fn a_refused_reserve_is_remembered<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    let request = data.reserve_request(sender.id, receiver.id, "10.00", Currency::USD);
    assert_eq!(
        reserve(&store, &request, data.stamp()).await,
        rejected(FailureReason::InsufficientFunds),
        "an empty wallet cannot reserve"
    );
    deposit(&store, &data, &sender, "100.00").await;
    assert_eq!(
        reserve(&store, &request, data.stamp()).await,
        rejected(FailureReason::InsufficientFunds),
        "a repeat after a deposit must still return the first outcome, the rejection"
    );
    assert_funds(
        &store,
        sender.id,
        "100.00",
        "0",
        "after a remembered rejection",
    )
    .await;
    assert_no_outbox_record(&store, request.transfer_id, "insufficient funds").await;
    assert_eq!(
        reservation_state(&store, request.transfer_id).await,
        Some(ReservationState::Rejected(FailureReason::InsufficientFunds)),
        "the rejection should be recorded, so a repeat gets the same answer"
    );
}

/// A reserve naming a wallet that does not exist, as sender or receiver,
/// is rejected with `WalletNotFound` and moves nothing.
pub async fn reserve_rejects_unknown_wallets<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let wallet = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &wallet, "100.00").await;
    let unknown = data.wallet_id();
    let system = WalletId::system(Currency::USD);
    for (sender, receiver, what) in [
        (wallet.id, unknown, "unknown receiver"),
        (unknown, wallet.id, "unknown sender"),
        (system, unknown, "deposit to an unknown wallet"),
    ] {
        let request = data.reserve_request(sender, receiver, "1.00", Currency::USD);
        assert_eq!(
            reserve(&store, &request, data.stamp()).await,
            rejected(FailureReason::WalletNotFound),
            "{what}: should be rejected with WalletNotFound"
        );
        assert_no_outbox_record(&store, request.transfer_id, what).await;
    }
    assert_funds(
        &store,
        wallet.id,
        "100.00",
        "0",
        "after rejections for unknown wallets",
    )
    .await;
    assert_eq!(
        store.wallet(unknown).await.expect("wallet"),
        None,
        "a rejected reserve must not create a wallet"
    );
}

/// A reserve from a wallet to itself is rejected with `SameWallet`.
pub async fn reserve_rejects_the_same_wallet<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let wallet = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &wallet, "100.00").await;
    let request = data.reserve_request(wallet.id, wallet.id, "1.00", Currency::USD);
    assert_eq!(
        reserve(&store, &request, data.stamp()).await,
        rejected(FailureReason::SameWallet),
        "a transfer to the same wallet should be rejected with SameWallet"
    );
    assert_funds(
        &store,
        wallet.id,
        "100.00",
        "0",
        "after a same-wallet rejection",
    )
    .await;
    assert_no_outbox_record(&store, request.transfer_id, "same wallet").await;
}

/// A reserve whose wallets, or whose request, are in different currencies
/// is rejected with `CurrencyMismatch`.
pub async fn reserve_rejects_a_currency_mismatch<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let dollars = open_wallet(&store, &data, Currency::USD).await;
    let more_dollars = open_wallet(&store, &data, Currency::USD).await;
    let euros = open_wallet(&store, &data, Currency::EUR).await;
    deposit(&store, &data, &dollars, "100.00").await;
    for (sender, receiver, currency, what) in [
        (
            dollars.id,
            euros.id,
            Currency::USD,
            "USD wallet to EUR wallet",
        ),
        (
            dollars.id,
            more_dollars.id,
            Currency::EUR,
            "EUR request between USD wallets",
        ),
        (
            WalletId::system(Currency::EUR),
            dollars.id,
            Currency::EUR,
            "EUR deposit into a USD wallet",
        ),
    ] {
        let request = data.reserve_request(sender, receiver, "1.00", currency);
        assert_eq!(
            reserve(&store, &request, data.stamp()).await,
            rejected(FailureReason::CurrencyMismatch),
            "{what}: should be rejected with CurrencyMismatch"
        );
        assert_no_outbox_record(&store, request.transfer_id, what).await;
    }
    assert_funds(
        &store,
        dollars.id,
        "100.00",
        "0",
        "after currency mismatches",
    )
    .await;
    assert_funds(
        &store,
        euros.id,
        "0",
        "0",
        "EUR wallet after currency mismatches",
    )
    .await;
}

/// A reserve above the available funds is rejected with
/// `InsufficientFunds`; exactly the available amount is reserved; funds
/// already reserved are not available.
pub async fn reserve_rejects_insufficient_funds<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "10.00").await;

    let too_much = data.reserve_request(sender.id, receiver.id, "10.01", Currency::USD);
    assert_eq!(
        reserve(&store, &too_much, data.stamp()).await,
        rejected(FailureReason::InsufficientFunds),
        "a reserve one cent above the available funds should be rejected"
    );
    assert_funds(
        &store,
        sender.id,
        "10.00",
        "0",
        "after an insufficient-funds rejection",
    )
    .await;
    assert_no_outbox_record(&store, too_much.transfer_id, "insufficient funds").await;

    let all = data.reserve_request(sender.id, receiver.id, "10.00", Currency::USD);
    assert_eq!(
        reserve(&store, &all, data.stamp()).await,
        ReserveOutcome::Reserved,
        "a reserve of exactly the available funds should succeed"
    );
    let more = data.reserve_request(sender.id, receiver.id, "0.01", Currency::USD);
    assert_eq!(
        reserve(&store, &more, data.stamp()).await,
        rejected(FailureReason::InsufficientFunds),
        "reserved funds are not available to another reserve"
    );
    assert_funds(
        &store,
        sender.id,
        "0",
        "10.00",
        "after reserving everything",
    )
    .await;
}

/// `LedgerSucceeded` captures a reservation: the sender's reserved funds
/// leave, the receiver's available funds grow.
pub async fn finalize_captures_on_ledger_succeeded<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;
    let request = data.reserve_request(sender.id, receiver.id, "30.00", Currency::USD);
    reserve(&store, &request, data.stamp()).await;

    let refused = finalize(
        &store,
        &data,
        &[data.ledger_outcome(&request, LedgerOutcome::Succeeded)],
    )
    .await;
    assert!(
        refused.is_empty(),
        "a capture must not be refused: {refused:?}"
    );
    assert_funds(&store, sender.id, "70.00", "0", "sender after the capture").await;
    assert_funds(
        &store,
        receiver.id,
        "30.00",
        "0",
        "receiver after the capture",
    )
    .await;
    assert_eq!(
        reservation_state(&store, request.transfer_id).await,
        Some(ReservationState::Captured),
        "the reservation should be CAPTURED"
    );
}

/// `LedgerFailed` releases a reservation: the sender's reserved funds go
/// back to available; the receiver gets nothing.
pub async fn finalize_releases_on_ledger_failed<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;
    let request = data.reserve_request(sender.id, receiver.id, "30.00", Currency::USD);
    reserve(&store, &request, data.stamp()).await;

    let failed = LedgerOutcome::Failed(FailureReason::CurrencyMismatch);
    let refused = finalize(&store, &data, &[data.ledger_outcome(&request, failed)]).await;
    assert!(
        refused.is_empty(),
        "a release must not be refused: {refused:?}"
    );
    assert_funds(&store, sender.id, "100.00", "0", "sender after the release").await;
    assert_funds(&store, receiver.id, "0", "0", "receiver after the release").await;
    assert_eq!(
        reservation_state(&store, request.transfer_id).await,
        Some(ReservationState::Released),
        "the reservation should be RELEASED"
    );
}

/// The inbox keeps each event id once: a redelivered event, in a later
/// call or twice in one batch, does nothing, not even a second dead letter
/// for an event that was refused.
pub async fn finalize_ignores_a_duplicate_event_id<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;
    let request = data.reserve_request(sender.id, receiver.id, "30.00", Currency::USD);
    reserve(&store, &request, data.stamp()).await;
    let capture = data.ledger_outcome(&request, LedgerOutcome::Succeeded);
    finalize(&store, &data, std::slice::from_ref(&capture)).await;
    let refused = finalize(&store, &data, &[capture.clone(), capture]).await;
    assert!(
        refused.is_empty(),
        "a duplicate must not be refused: {refused:?}"
    );
    assert_funds(
        &store,
        sender.id,
        "70.00",
        "0",
        "sender after a duplicate capture",
    )
    .await;
    assert_funds(
        &store,
        receiver.id,
        "30.00",
        "0",
        "receiver after a duplicate capture",
    )
    .await;

    // A refused event is in the inbox too: its redelivery is not refused
    // (and dead-lettered) again.
    let stranger = data.reserve_request(sender.id, receiver.id, "1.00", Currency::USD);
    let unknown = data.ledger_outcome(&stranger, LedgerOutcome::Succeeded);
    let first = finalize(&store, &data, &[unknown.clone(), unknown.clone()]).await;
    assert_eq!(
        first.len(),
        1,
        "an event twice in one batch should be refused once: {first:?}"
    );
    let again = finalize(&store, &data, &[unknown]).await;
    assert!(
        again.is_empty(),
        "a redelivered, already refused event must not be refused again: {again:?}"
    );
    assert_eq!(
        outbox_of(&store, stranger.transfer_id).await.len(),
        1,
        "one dead letter for an event delivered three times"
    );
}

/// A second, different event with an outcome already applied is a no-op:
/// the receiver is not credited twice, the sender not released twice, and
/// nothing is refused.
pub async fn finalize_ignores_a_second_event_with_the_same_outcome<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;
    let captured = data.reserve_request(sender.id, receiver.id, "30.00", Currency::USD);
    let released = data.reserve_request(sender.id, receiver.id, "20.00", Currency::USD);
    reserve(&store, &captured, data.stamp()).await;
    reserve(&store, &released, data.stamp()).await;
    let failed = LedgerOutcome::Failed(FailureReason::CurrencyMismatch);
    finalize(
        &store,
        &data,
        &[
            data.ledger_outcome(&captured, LedgerOutcome::Succeeded),
            data.ledger_outcome(&released, failed),
        ],
    )
    .await;
    let refused = finalize(
        &store,
        &data,
        &[
            data.ledger_outcome(&captured, LedgerOutcome::Succeeded),
            data.ledger_outcome(&released, failed),
        ],
    )
    .await;
    assert!(
        refused.is_empty(),
        "a second event with the outcome already applied is a no-op, not a refusal: {refused:?}"
    );
    assert_funds(
        &store,
        sender.id,
        "70.00",
        "0",
        "sender after repeated outcomes",
    )
    .await;
    assert_funds(
        &store,
        receiver.id,
        "30.00",
        "0",
        "receiver after a repeated capture",
    )
    .await;
    for transfer in [captured.transfer_id, released.transfer_id] {
        let items = outbox_of(&store, transfer).await;
        assert_eq!(
            items.len(),
            1,
            "only the WalletReserved of transfer {transfer}, no dead letter: {items:?}"
        );
    }
}

/// An outcome that contradicts the reservation (`LedgerFailed` after a
/// capture, `LedgerSucceeded` after a release, any outcome on a rejected
/// reserve) is refused: returned, recorded, dead-lettered with the event as
/// received, and no balance moves.
pub async fn finalize_refuses_a_contradictory_outcome<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;
    let failed = LedgerOutcome::Failed(FailureReason::CurrencyMismatch);

    let captured = data.reserve_request(sender.id, receiver.id, "30.00", Currency::USD);
    let released = data.reserve_request(sender.id, receiver.id, "20.00", Currency::USD);
    let refused_reserve = data.reserve_request(sender.id, receiver.id, "500.00", Currency::USD);
    reserve(&store, &captured, data.stamp()).await;
    reserve(&store, &released, data.stamp()).await;
    assert_eq!(
        reserve(&store, &refused_reserve, data.stamp()).await,
        rejected(FailureReason::InsufficientFunds)
    );
    finalize(
        &store,
        &data,
        &[
            data.ledger_outcome(&captured, LedgerOutcome::Succeeded),
            data.ledger_outcome(&released, failed),
        ],
    )
    .await;

    let contradictions = [
        (
            &captured,
            data.ledger_outcome(&captured, failed),
            ReservationState::Captured,
        ),
        (
            &released,
            data.ledger_outcome(&released, LedgerOutcome::Succeeded),
            ReservationState::Released,
        ),
        (
            &refused_reserve,
            data.ledger_outcome(&refused_reserve, LedgerOutcome::Succeeded),
            ReservationState::Rejected(FailureReason::InsufficientFunds),
        ),
    ];
    for (request, event, state) in contradictions {
        let refused = finalize(&store, &data, std::slice::from_ref(&event)).await;
        assert_eq!(
            refused.iter().map(|r| r.event_id).collect::<Vec<_>>(),
            vec![event.event_id()],
            "{:?} on a {state:?} reservation should be refused",
            event.body
        );
        assert_eq!(
            reservation_state(&store, request.transfer_id).await,
            Some(state),
            "a refused outcome must not change the reservation"
        );
        let dead = outbox_of(&store, request.transfer_id)
            .await
            .into_iter()
            .filter(|item| matches!(item, Outgoing::DeadLetter { .. }))
            .collect::<Vec<_>>();
        assert_eq!(
            dead,
            vec![Outgoing::DeadLetter {
                event: event.envelope.clone(),
                reason: refused[0].reason.clone(),
            }],
            "the refused event should be dead-lettered as received, with the refusal's reason"
        );
        assert_funds(
            &store,
            sender.id,
            "70.00",
            "0",
            "sender after a contradiction",
        )
        .await;
        assert_funds(
            &store,
            receiver.id,
            "30.00",
            "0",
            "receiver after a contradiction",
        )
        .await;
    }
}

/// An outcome for a transfer with no reservation is refused and
/// dead-lettered; the rest of its batch is applied.
pub async fn finalize_refuses_an_outcome_for_an_unknown_reservation<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;
    let known = data.reserve_request(sender.id, receiver.id, "30.00", Currency::USD);
    reserve(&store, &known, data.stamp()).await;
    let never_reserved = data.reserve_request(sender.id, receiver.id, "10.00", Currency::USD);

    let unknown = data.ledger_outcome(&never_reserved, LedgerOutcome::Succeeded);
    let batch = [
        unknown.clone(),
        data.ledger_outcome(&known, LedgerOutcome::Succeeded),
    ];
    let refused = finalize(&store, &data, &batch).await;
    assert_eq!(
        refused.iter().map(|r| r.event_id).collect::<Vec<_>>(),
        vec![unknown.event_id()],
        "only the outcome for an unknown reservation should be refused"
    );
    assert!(!refused[0].reason.is_empty(), "a refusal should say why");
    assert_funds(
        &store,
        sender.id,
        "70.00",
        "0",
        "sender: the known transfer is captured",
    )
    .await;
    assert_funds(
        &store,
        receiver.id,
        "30.00",
        "0",
        "receiver: credited once, for the known transfer",
    )
    .await;
    assert_eq!(
        outbox_of(&store, never_reserved.transfer_id).await,
        vec![Outgoing::DeadLetter {
            event: unknown.envelope,
            reason: refused[0].reason.clone(),
        }],
        "the refused event should be dead-lettered as received"
    );
    assert_eq!(
        reservation_state(&store, never_reserved.transfer_id).await,
        None,
        "a refused outcome must not create a reservation"
    );
}

/// `wallets_page` returns wallets by id, after `after`, up to `limit`.
pub async fn wallets_are_paged_in_id_order<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let mut wallets: Vec<Wallet> = (0..5).map(|_| data.wallet(Currency::USD)).collect();
    for index in [3, 0, 4, 1, 2] {
        store
            .open_wallet(&wallets[index])
            .await
            .expect("open_wallet");
    }
    wallets.sort_by_key(|w| w.id);
    let mut pages: Vec<Vec<Wallet>> = Vec::new();
    let mut after = None;
    loop {
        let page = store.wallets_page(after, 2).await.expect("wallets_page");
        assert!(page.len() <= 2, "a page must not exceed its limit");
        assert_page_after("wallets_page", after, page.iter().map(|w| w.id));
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        pages.push(page);
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1],
        "five wallets in pages of two"
    );
    assert_eq!(
        pages.concat(),
        wallets,
        "pages should hold every wallet once, by id"
    );
    assert!(
        store
            .wallets_page(None, 0)
            .await
            .expect("wallets_page")
            .is_empty(),
        "a page of limit 0 is empty"
    );
}

/// `reservations_page` returns reservations, rejected ones included, by
/// transfer id, after `after`, up to `limit`.
pub async fn reservations_are_paged_in_transfer_id_order<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    let funding = deposit(&store, &data, &sender, "100.00").await;
    let requests: Vec<ReserveRequest> = (0..5)
        .map(|_| data.reserve_request(sender.id, receiver.id, "1.00", Currency::USD))
        .collect();
    let mut expected = vec![(funding.transfer_id, ReservationState::Captured)];
    for index in [3, 0, 4, 1, 2] {
        let mut request = requests[index].clone();
        // One of them names a wallet that does not exist: its rejection is
        // recorded too.
        if index == 4 {
            request.receiver_wallet_id = data.wallet_id();
        }
        let outcome = reserve(&store, &request, data.stamp()).await;
        let state = match outcome {
            ReserveOutcome::Reserved => ReservationState::Reserved,
            ReserveOutcome::Rejected(reason) => ReservationState::Rejected(reason),
        };
        expected.push((request.transfer_id, state));
    }
    expected.sort_by_key(|(id, _)| *id);

    let mut pages: Vec<Vec<Reservation>> = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .reservations_page(after, 2)
            .await
            .expect("reservations_page");
        assert!(page.len() <= 2, "a page must not exceed its limit");
        assert_page_after(
            "reservations_page",
            after,
            page.iter().map(|r| r.request.transfer_id),
        );
        let Some(last) = page.last() else { break };
        after = Some(last.request.transfer_id);
        pages.push(page);
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 2],
        "six reservations in pages of two"
    );
    let seen: Vec<(TransferId, ReservationState)> = pages
        .concat()
        .into_iter()
        .map(|r| (r.request.transfer_id, r.state))
        .collect();
    assert_eq!(
        seen, expected,
        "pages should hold every reservation once, by transfer id, with its state"
    );
}

async fn reserve_batch<S: WalletStore>(store: &S, batch: &[StampedReserve]) -> Vec<ReserveOutcome> {
    store
        .reserve_batch(batch)
        .await
        .unwrap_or_else(|e| panic!("a batch of {} reserves failed: {e}", batch.len()))
}

fn stamped(data: &TestData, request: &ReserveRequest) -> StampedReserve {
    StampedReserve {
        request: request.clone(),
        stamp: data.stamp(),
    }
}

/// One batch: each reserve is decided in order against the balances the
/// earlier ones left, so a hot sender's reserves are taken in arrival
/// order and one that does not fit is refused alone; refusals of every
/// kind sit beside reservations; one answer per request, in order; one
/// `WalletReserved` per reservation, in the batch's order, each with its
/// own stamp.
pub async fn a_batch_of_reserves_is_decided_in_order_with_mixed_outcomes<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let hot = open_wallet(&store, &data, Currency::USD).await;
    let other = open_wallet(&store, &data, Currency::USD).await;
    let euros = open_wallet(&store, &data, Currency::EUR).await;
    deposit(&store, &data, &hot, "10.00").await;
    let usd = |from: WalletId, to: WalletId, amount: &str| {
        data.reserve_request(from, to, amount, Currency::USD)
    };
    let requests = [
        usd(hot.id, other.id, "4.00"),
        usd(hot.id, other.id, "5.00"),
        usd(hot.id, other.id, "2.00"),
        usd(hot.id, other.id, "1.00"),
        usd(data.wallet_id(), other.id, "1.00"),
        usd(other.id, other.id, "1.00"),
        usd(other.id, euros.id, "1.00"),
        usd(WalletId::system(Currency::USD), other.id, "7.00"),
    ];
    let batch: Vec<StampedReserve> = requests.iter().map(|r| stamped(&data, r)).collect();
    assert_eq!(
        reserve_batch(&store, &batch).await,
        vec![
            ReserveOutcome::Reserved,
            ReserveOutcome::Reserved,
            rejected(FailureReason::InsufficientFunds),
            ReserveOutcome::Reserved,
            rejected(FailureReason::WalletNotFound),
            rejected(FailureReason::SameWallet),
            rejected(FailureReason::CurrencyMismatch),
            ReserveOutcome::Reserved,
        ],
        "one answer per request, in order, each against what the earlier ones left"
    );
    assert_funds(
        &store,
        hot.id,
        "0.00",
        "10.00",
        "the hot sender after the batch",
    )
    .await;
    assert_funds(&store, other.id, "0", "0", "the receiver after the batch").await;
    let events: Vec<Outgoing> = outbox_items(&store)
        .await
        .into_iter()
        .filter(|item| requests.iter().any(|r| r.transfer_id == item.transfer_id()))
        .collect();
    let expected: Vec<Outgoing> = [0, 1, 3, 7]
        .iter()
        .map(|&i| expected_wallet_reserved(&batch[i].request, batch[i].stamp))
        .collect();
    assert_eq!(
        events, expected,
        "one WalletReserved per reservation, in the batch's order, with its stamp"
    );
    // Every answer is remembered: the batch again answers the same and
    // writes nothing more.
    let again: Vec<StampedReserve> = requests.iter().map(|r| stamped(&data, r)).collect();
    assert_eq!(
        reserve_batch(&store, &again).await,
        reserve_batch(&store, &batch).await,
        "a repeated batch answers as the first"
    );
    assert_funds(
        &store,
        hot.id,
        "0.00",
        "10.00",
        "the hot sender after repeats",
    )
    .await;
    assert_eq!(
        outbox_items(&store).await.len(),
        5,
        "the deposit's and the batch's four"
    );
}

/// A transfer that comes twice in one batch, and one reserved before that
/// comes again in it, are each reserved once: every copy gets the first
/// answer, funds move once, and one event is written.
pub async fn a_transfer_twice_in_one_batch_is_reserved_once<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "10.00").await;
    let earlier = data.reserve_request(sender.id, receiver.id, "3.00", Currency::USD);
    reserve(&store, &earlier, data.stamp()).await;
    let twice = data.reserve_request(sender.id, receiver.id, "4.00", Currency::USD);
    let short = data.reserve_request(sender.id, receiver.id, "50.00", Currency::USD);
    let batch = [
        stamped(&data, &twice),
        stamped(&data, &earlier),
        stamped(&data, &short),
        stamped(&data, &twice),
        stamped(&data, &short),
    ];
    assert_eq!(
        reserve_batch(&store, &batch).await,
        vec![
            ReserveOutcome::Reserved,
            ReserveOutcome::Reserved,
            rejected(FailureReason::InsufficientFunds),
            ReserveOutcome::Reserved,
            rejected(FailureReason::InsufficientFunds),
        ],
        "each copy answers as the transfer's first reserve"
    );
    assert_funds(
        &store,
        sender.id,
        "3.00",
        "7.00",
        "funds moved once per transfer",
    )
    .await;
    assert_eq!(
        outbox_of(&store, twice.transfer_id).await,
        vec![expected_wallet_reserved(&twice, batch[0].stamp)],
        "one event, stamped by the first copy"
    );
    assert_no_outbox_record(&store, short.transfer_id, "a refused reserve").await;
    assert_eq!(
        reservation_state(&store, short.transfer_id).await,
        Some(ReservationState::Rejected(FailureReason::InsufficientFunds)),
        "the refusal is remembered once"
    );
}

/// Batches at once, in both directions between two wallets and over
/// shared transfers: none deadlocks, no wallet is overdrawn, every shared
/// transfer is reserved once and answered the same to every batch that
/// carried it, and each reservation has exactly one event.
pub async fn concurrent_batches_never_overdraw_and_share_transfers_safely<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    const TASKS: usize = 16;
    const PER_BATCH: usize = 4;
    let store = Arc::new(fixture.fresh().await);
    let data = Arc::new(TestData::new());
    let a = open_wallet(&*store, &data, Currency::USD).await;
    let b = open_wallet(&*store, &data, Currency::USD).await;
    deposit(&*store, &data, &a, "40.00").await;
    deposit(&*store, &data, &b, "40.00").await;
    // Transfers every pair of neighbouring tasks both carry.
    let shared: Vec<ReserveRequest> = (0..TASKS)
        .map(|i| {
            let (from, to) = if i % 2 == 0 {
                (a.id, b.id)
            } else {
                (b.id, a.id)
            };
            data.reserve_request(from, to, "1.00", Currency::USD)
        })
        .collect();
    let start = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::with_capacity(TASKS);
    for task in 0..TASKS {
        let mut requests = vec![shared[task].clone(), shared[(task + 1) % TASKS].clone()];
        for n in 0..PER_BATCH {
            let (from, to) = if (task + n) % 2 == 0 {
                (a.id, b.id)
            } else {
                (b.id, a.id)
            };
            requests.push(data.reserve_request(from, to, "1.00", Currency::USD));
        }
        let batch: Vec<StampedReserve> = requests.iter().map(|r| stamped(&data, r)).collect();
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let outcomes = retrying(|| store.reserve_batch(&batch))
                .await
                .unwrap_or_else(|e| panic!("a concurrent batch failed: {e}"));
            assert_eq!(outcomes.len(), batch.len(), "one answer per request");
            batch
                .iter()
                .map(|r| r.request.transfer_id)
                .zip(outcomes)
                .collect::<Vec<_>>()
        }));
    }
    let mut answers: HashMap<TransferId, Vec<ReserveOutcome>> = HashMap::new();
    for task in tasks {
        for (id, outcome) in joined(task).await {
            answers.entry(id).or_default().push(outcome);
        }
    }
    for request in &shared {
        let seen = &answers[&request.transfer_id];
        assert_eq!(seen.len(), 2, "a shared transfer is in two batches");
        assert_eq!(
            seen[0], seen[1],
            "both batches get the same answer: {seen:?}"
        );
    }
    let reserved: HashSet<TransferId> = answers
        .iter()
        .filter(|(_, o)| o[0] == ReserveOutcome::Reserved)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        reserved.len(),
        answers.len(),
        "80.00 in all covers every reserve of 1.00: none is refused"
    );
    for wallet in [&a, &b] {
        let now = wallet_now(&*store, wallet.id).await;
        assert!(
            !now.available.is_negative(),
            "wallet {} overdrawn: {now:?}",
            wallet.id
        );
        assert_eq!(now.available + now.reserved, balance("40.00"), "{now:?}");
    }
    let events: Vec<TransferId> = outbox_items(&*store)
        .await
        .into_iter()
        .filter(|item| matches!(item, Outgoing::Event(e) if matches!(e.event, Event::WalletReserved(_))))
        .map(|item| item.transfer_id())
        .filter(|id| answers.contains_key(id))
        .collect();
    let distinct: HashSet<TransferId> = events.iter().copied().collect();
    assert_eq!(
        (events.len(), distinct),
        (reserved.len(), reserved),
        "exactly one WalletReserved per reservation"
    );
}

/// 200 tasks reserve 1.00 each, at once, from a wallet holding 50.00:
/// exactly 50 are reserved, 150 rejected for insufficient funds, and no
/// read ever sees the wallet overdrawn or its funds not adding up.
pub async fn concurrent_reserves_never_overdraw<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    const TASKS: usize = 200;
    let store = Arc::new(fixture.fresh().await);
    let data = Arc::new(TestData::new());
    let sender = open_wallet(&*store, &data, Currency::USD).await;
    let receiver = open_wallet(&*store, &data, Currency::USD).await;
    deposit(&*store, &data, &sender, "50.00").await;

    let done = Arc::new(AtomicBool::new(false));
    let observer = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let total = balance("50.00");
            while !done.load(Ordering::Acquire) {
                let wallet = wallet_now(&*store, sender.id).await;
                assert!(
                    !wallet.available.is_negative() && !wallet.reserved.is_negative(),
                    "a read saw the wallet below zero: {wallet:?}"
                );
                assert_eq!(
                    wallet.available + wallet.reserved,
                    total,
                    "a read saw available + reserved differ from what was deposited: {wallet:?}"
                );
                tokio::task::yield_now().await;
            }
        })
    };

    let start = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let request = data.reserve_request(sender.id, receiver.id, "1.00", Currency::USD);
        let stamp = data.stamp();
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let outcome = retrying(|| store.reserve(&request, stamp))
                .await
                .unwrap_or_else(|e| panic!("concurrent reserve failed: {e}"));
            (request.transfer_id, outcome)
        }));
    }
    let mut outcomes = Vec::with_capacity(TASKS);
    for task in tasks {
        outcomes.push(joined(task).await);
    }
    done.store(true, Ordering::Release);
    joined(observer).await;

    let reserved: HashSet<TransferId> = outcomes
        .iter()
        .filter(|(_, o)| *o == ReserveOutcome::Reserved)
        .map(|(id, _)| *id)
        .collect();
    let short = outcomes
        .iter()
        .filter(|(_, o)| *o == rejected(FailureReason::InsufficientFunds))
        .count();
    assert_eq!(
        (reserved.len(), short),
        (50, 150),
        "of 200 reserves of 1.00 from 50.00, exactly 50 should be reserved and 150 rejected"
    );
    assert_funds(
        &*store,
        sender.id,
        "0.00",
        "50.00",
        "after 200 concurrent reserves",
    )
    .await;
    let events = outbox_items(&*store)
        .await
        .into_iter()
        .filter(|item| {
            matches!(item, Outgoing::Event(e) if matches!(e.event, Event::WalletReserved(_)))
                && reserved.contains(&item.transfer_id())
        })
        .count();
    let all_events = outbox_items(&*store)
        .await
        .into_iter()
        .filter(|item| outcomes.iter().any(|(id, _)| *id == item.transfer_id()))
        .count();
    assert_eq!(
        (events, all_events),
        (50, 50),
        "exactly one WalletReserved per successful reserve, and nothing for the rejected ones"
    );
}

/// Many transfers A→B and B→A at once, each reserved then captured: all
/// finish (no deadlock), every reserve succeeds, and the total is
/// conserved.
pub async fn opposite_transfers_at_once_all_finish<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = Arc::new(fixture.fresh().await);
    let data = Arc::new(TestData::new());
    let a = open_wallet(&*store, &data, Currency::USD).await;
    let b = open_wallet(&*store, &data, Currency::USD).await;
    deposit(&*store, &data, &a, "100.00").await;
    deposit(&*store, &data, &b, "100.00").await;

    // 50 × 1.00 one way, 30 × 2.00 the other, interleaved: each wallet can
    // always afford its outflow, so every reserve must succeed.
    let mut plans: Vec<(WalletId, WalletId, &str)> = Vec::new();
    for i in 0..50 {
        plans.push((a.id, b.id, "1.00"));
        if i < 30 {
            plans.push((b.id, a.id, "2.00"));
        }
    }
    let start = Arc::new(Barrier::new(plans.len()));
    let mut tasks = Vec::with_capacity(plans.len());
    for (from, to, amount) in plans {
        let request = data.reserve_request(from, to, amount, Currency::USD);
        let stamp = data.stamp();
        let capture = data.ledger_outcome(&request, LedgerOutcome::Succeeded);
        let now = data.now();
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let outcome = retrying(|| store.reserve(&request, stamp))
                .await
                .unwrap_or_else(|e| panic!("concurrent reserve failed: {e}"));
            assert_eq!(
                outcome,
                ReserveOutcome::Reserved,
                "every reserve of the opposite transfers should succeed"
            );
            let batch = [capture];
            let refused = retrying(|| store.finalize(&batch, now))
                .await
                .unwrap_or_else(|e| panic!("concurrent finalize failed: {e}"));
            assert!(refused.is_empty(), "a capture was refused: {refused:?}");
        }));
    }
    let all = async {
        for task in tasks {
            joined(task).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .is_err()
    {
        panic!("opposite transfers did not all finish within 60 s: a deadlock?");
    }
    assert_funds(
        &*store,
        a.id,
        "110.00",
        "0",
        "A: 100 - 50 × 1.00 + 30 × 2.00",
    )
    .await;
    assert_funds(
        &*store,
        b.id,
        "90.00",
        "0",
        "B: 100 + 50 × 1.00 - 30 × 2.00",
    )
    .await;
    let total: Balance = [
        wallet_now(&*store, a.id).await,
        wallet_now(&*store, b.id).await,
    ]
    .iter()
    .map(|w| w.available + w.reserved)
    .sum();
    assert_eq!(
        total,
        balance("200.00"),
        "A + B should still hold what was deposited"
    );
}

/// One transfer id reserved by 50 tasks at once: one reservation, the
/// funds held once, one `WalletReserved`, and every task gets the same
/// outcome.
pub async fn one_transfer_reserved_from_many_tasks_at_once<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    const TASKS: usize = 50;
    let store = Arc::new(fixture.fresh().await);
    let data = Arc::new(TestData::new());
    let sender = open_wallet(&*store, &data, Currency::USD).await;
    let receiver = open_wallet(&*store, &data, Currency::USD).await;
    deposit(&*store, &data, &sender, "100.00").await;
    let request = Arc::new(data.reserve_request(sender.id, receiver.id, "10.00", Currency::USD));

    let start = Arc::new(Barrier::new(TASKS));
    let mut tasks = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        let stamp = data.stamp();
        let (store, start, request) = (store.clone(), start.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            retrying(|| store.reserve(&request, stamp))
                .await
                .unwrap_or_else(|e| panic!("concurrent reserve failed: {e}"))
        }));
    }
    let mut outcomes = Vec::with_capacity(TASKS);
    for task in tasks {
        outcomes.push(joined(task).await);
    }
    assert!(
        outcomes.iter().all(|o| *o == ReserveOutcome::Reserved),
        "every task should get the same outcome, Reserved: {outcomes:?}"
    );
    assert_funds(
        &*store,
        sender.id,
        "90.00",
        "10.00",
        "the funds should be reserved once",
    )
    .await;
    let count = all_reservations(&*store)
        .await
        .iter()
        .filter(|r| r.request.transfer_id == request.transfer_id)
        .count();
    assert_eq!(count, 1, "one reservation for the transfer id");
    let items = outbox_of(&*store, request.transfer_id).await;
    assert_eq!(
        items.len(),
        1,
        "one WalletReserved for the transfer, whoever won: {items:?}"
    );
}

/// The outbox's claims return the oldest records first, up to the limit;
/// here the records are `WalletReserved` events of deposits.
pub async fn outbox_claims_oldest_first_up_to_limit<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    outbox::claims_oldest_first_up_to_limit(fixture, &WalletFeed).await;
}

/// Records under another worker's live lease are not claimed.
pub async fn outbox_leases_keep_records_from_other_workers<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    outbox::leases_keep_records_from_other_workers(fixture, &WalletFeed).await;
}

/// Acknowledged records are never claimed again; acknowledging twice, or
/// an unknown seq, is ignored.
pub async fn outbox_acknowledged_records_never_return<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    outbox::acknowledged_records_never_return(fixture, &WalletFeed).await;
}

/// Unacknowledged records whose lease ended go to the next worker.
pub async fn outbox_records_return_when_the_lease_ends<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    outbox::records_return_when_the_lease_ends(fixture, &WalletFeed).await;
}

/// A worker claiming again gets its own unacknowledged records again, and
/// its lease moves to the new claim's end.
pub async fn outbox_a_worker_reclaims_its_own_records<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    outbox::a_worker_reclaims_its_own_records(fixture, &WalletFeed).await;
}

/// While one worker holds a transfer's older record, no other worker gets
/// its newer record. The transfer's two records are its `WalletReserved`
/// and the dead letter of a `LedgerFailed` that contradicts its capture.
pub async fn outbox_keeps_each_transfers_records_in_order<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    outbox::keeps_each_transfers_records_in_order(fixture, &WalletFeed).await;
}

/// A stored reservation that must exist.
async fn reservation_now<S: WalletReads>(store: &S, id: TransferId) -> Reservation {
    all_reservations(store)
        .await
        .into_iter()
        .find(|r| r.request.transfer_id == id)
        .unwrap_or_else(|| panic!("no reservation of {id}"))
}

async fn release<S: WalletStore>(
    store: &S,
    batch: &[(TransferId, HoldRelease)],
    now: i64,
) -> Vec<Option<HoldState>> {
    store
        .release_holds(batch, at(now))
        .await
        .unwrap_or_else(|e| panic!("release_holds failed: {e}"))
}

/// A hold reserves without writing an event; a capture takes part of it
/// (the rest back to available), writes its own `WalletReserved`, and
/// converts the hold, which no second capture can take.
pub async fn a_capture_converts_its_hold_once<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;

    let hold = data.hold_request(sender.id, "30.00", at(5_000));
    assert_eq!(
        reserve(&store, &hold, data.stamp()).await,
        ReserveOutcome::Reserved
    );
    assert_funds(&store, sender.id, "70.00", "30.00", "after the hold").await;
    assert_eq!(
        outbox_of(&store, hold.transfer_id).await,
        vec![],
        "a hold should publish nothing"
    );
    assert_eq!(
        reservation_now(&store, hold.transfer_id).await.state,
        ReservationState::Held
    );

    let capture = data.capture_request(&hold, receiver.id, "20.00");
    let stamp = data.stamp();
    assert_eq!(
        reserve(&store, &capture, stamp).await,
        ReserveOutcome::Reserved
    );
    assert_funds(&store, sender.id, "80.00", "20.00", "after the capture").await;
    assert_eq!(
        outbox_of(&store, capture.transfer_id).await,
        vec![expected_wallet_reserved(&capture, stamp)],
        "a capture should write its WalletReserved"
    );
    let converted = reservation_now(&store, hold.transfer_id).await;
    assert_eq!(
        (converted.state, converted.captured_by),
        (ReservationState::Converted, Some(capture.transfer_id)),
        "the hold should be converted by the capture"
    );
    let second = data.capture_request(&hold, receiver.id, "5.00");
    assert_eq!(
        reserve(&store, &second, data.stamp()).await,
        rejected(FailureReason::HoldCaptured)
    );
    assert_eq!(
        release(&store, &[(hold.transfer_id, HoldRelease::Void)], 1_500).await,
        vec![Some(HoldState::Ended(HoldEnd::Captured(
            capture.transfer_id
        )))],
        "a void of a converted hold should answer how it ended"
    );
    assert_funds(
        &store,
        sender.id,
        "80.00",
        "20.00",
        "after the refused capture and void",
    )
    .await;
}

/// A void releases a held hold at once; an expiry only once its time has
/// passed; a hold that ended answers how, and releases nothing again.
pub async fn holds_are_released_once_by_a_void_or_their_expiry<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;
    let voided = data.hold_request(sender.id, "10.00", at(5_000));
    let expiring = data.hold_request(sender.id, "20.00", at(5_000));
    for hold in [&voided, &expiring] {
        assert_eq!(
            reserve(&store, hold, data.stamp()).await,
            ReserveOutcome::Reserved
        );
    }
    let unknown = data.transfer_id();
    let answers = release(
        &store,
        &[
            (voided.transfer_id, HoldRelease::Void),
            (expiring.transfer_id, HoldRelease::Expire),
            (unknown, HoldRelease::Void),
        ],
        4_999,
    )
    .await;
    assert_eq!(
        answers,
        vec![
            Some(HoldState::Ended(HoldEnd::Voided)),
            Some(HoldState::Held),
            None
        ],
        "before the expiry: the void releases, the expiry waits, an unknown id is no hold"
    );
    assert_funds(&store, sender.id, "80.00", "20.00", "after the void").await;
    let answers = release(
        &store,
        &[
            (expiring.transfer_id, HoldRelease::Expire),
            (voided.transfer_id, HoldRelease::Void),
            (expiring.transfer_id, HoldRelease::Expire),
        ],
        5_000,
    )
    .await;
    let expired = Some(HoldState::Ended(HoldEnd::Expired));
    assert_eq!(
        answers,
        vec![expired, Some(HoldState::Ended(HoldEnd::Voided)), expired],
        "at the expiry the hold expires, once; the voided hold stays voided"
    );
    assert_funds(&store, sender.id, "100.00", "0.00", "every hold released").await;
    let late = data.capture_request(&expiring, receiver.id, "1.00");
    assert_eq!(
        reserve(&store, &late, data.stamp()).await,
        rejected(FailureReason::HoldExpired)
    );
}

/// A capture that comes at or after its hold's expiry, before any sweep,
/// is rejected and expires the hold in the same unit.
pub async fn a_capture_after_the_expiry_expires_the_hold<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "100.00").await;
    let hold = data.hold_request(sender.id, "30.00", at(5_000));
    assert_eq!(
        reserve(&store, &hold, data.stamp()).await,
        ReserveOutcome::Reserved
    );
    let capture = data.capture_request(&hold, receiver.id, "30.00");
    let late = EventStamp {
        event_id: data.event_id(),
        at: at(5_000),
        trace: None,
    };
    assert_eq!(
        reserve(&store, &capture, late).await,
        rejected(FailureReason::HoldExpired)
    );
    assert_eq!(
        reservation_now(&store, hold.transfer_id).await.state,
        ReservationState::Expired
    );
    assert_funds(
        &store,
        sender.id,
        "100.00",
        "0.00",
        "after the late capture",
    )
    .await;
    assert_eq!(outbox_of(&store, capture.transfer_id).await, vec![]);
}

/// Captures and voids of one hold, all at once from many tasks: exactly
/// one of them ends it, and the wallet's funds add up.
pub async fn concurrent_captures_and_voids_end_a_hold_once<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    const TASKS: usize = 8;
    let store = Arc::new(fixture.fresh().await);
    let data = Arc::new(TestData::new());
    let sender = open_wallet(&*store, &data, Currency::USD).await;
    let receiver = open_wallet(&*store, &data, Currency::USD).await;
    deposit(&*store, &data, &sender, "100.00").await;
    let hold = data.hold_request(sender.id, "30.00", at(5_000));
    assert_eq!(
        reserve(&*store, &hold, data.stamp()).await,
        ReserveOutcome::Reserved
    );
    let start = Arc::new(Barrier::new(TASKS));
    // Each task: a capture that was reserved (its id), or a void's answer.
    let mut tasks: Vec<JoinHandle<Result<Option<TransferId>, Option<HoldState>>>> =
        Vec::with_capacity(TASKS);
    for task in 0..TASKS {
        let (store, data, start, hold) = (store.clone(), data.clone(), start.clone(), hold.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            if task % 2 == 0 {
                let capture = data.capture_request(&hold, receiver.id, "25.00");
                let batch = [stamped(&data, &capture)];
                let outcome = retrying(|| store.reserve_batch(&batch)).await.unwrap();
                Ok((outcome == vec![ReserveOutcome::Reserved]).then_some(capture.transfer_id))
            } else {
                let batch = [(hold.transfer_id, HoldRelease::Void)];
                let mut answer = retrying(|| store.release_holds(&batch, at(1_500)))
                    .await
                    .unwrap();
                Err(answer.pop().flatten())
            }
        }));
    }
    let (mut captured, mut voids) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await.expect("task panicked") {
            Ok(capture) => captured.extend(capture),
            Err(answer) => voids.push(answer),
        }
    }
    let ended = reservation_now(&*store, hold.transfer_id).await;
    match captured.as_slice() {
        [capture] => {
            let end = Some(HoldState::Ended(HoldEnd::Captured(*capture)));
            assert!(
                voids.iter().all(|v| *v == end),
                "voids after the capture: {voids:?}"
            );
            assert_eq!(
                (ended.state, ended.captured_by),
                (ReservationState::Converted, Some(*capture))
            );
            assert_funds(&*store, sender.id, "75.00", "25.00", "the capture won").await;
        }
        [] => {
            let end = Some(HoldState::Ended(HoldEnd::Voided));
            assert!(voids.iter().all(|v| *v == end), "voids: {voids:?}");
            assert_eq!(ended.state, ReservationState::Voided);
            assert_funds(&*store, sender.id, "100.00", "0.00", "the void won").await;
        }
        many => panic!("{} captures took one hold: {many:?}", many.len()),
    }
}

/// A hold and its capture in one batch: the hold is stored as the capture
/// left it, converted, so a later void releases nothing.
pub async fn a_hold_and_its_capture_in_one_batch<F>(fixture: &F)
where
    F: Fixture,
    F::Store: WalletStore + WalletReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let sender = open_wallet(&store, &data, Currency::USD).await;
    let receiver = open_wallet(&store, &data, Currency::USD).await;
    deposit(&store, &data, &sender, "10.00").await;
    let hold = data.hold_request(sender.id, "4.00", at(5_000));
    let capture = data.capture_request(&hold, receiver.id, "3.00");
    let batch = [stamped(&data, &hold), stamped(&data, &capture)];
    let outcomes = retrying(|| store.reserve_batch(&batch)).await.unwrap();
    assert_eq!(outcomes, vec![ReserveOutcome::Reserved; 2]);
    let converted = reservation_now(&store, hold.transfer_id).await;
    assert_eq!(
        (converted.state, converted.captured_by),
        (ReservationState::Converted, Some(capture.transfer_id)),
        "the hold should be stored converted"
    );
    assert_funds(&store, sender.id, "7.00", "3.00", "after the batch").await;
    assert_eq!(
        release(&store, &[(hold.transfer_id, HoldRelease::Void)], 1_500).await,
        vec![Some(HoldState::Ended(HoldEnd::Captured(
            capture.transfer_id
        )))]
    );
    assert_funds(&store, sender.id, "7.00", "3.00", "after the void").await;
}
