//! Scenarios of [`TransferStore`] and [`TransferReads`], and of the
//! transfer store's [`Outbox`], which carries dead letters only.

use crate::contract::Fixture;
use crate::contract::data::{TestData, assert_page_after, at, outbox_items};
use crate::contract::outbox::{self, TransferFeed};
use crate::event::Outgoing;
use crate::history::HistoryQuery;
use crate::idempotency::{Fingerprint, IdempotencyRecord};
use crate::ids::{IdGenerator, TransferId, WalletId};
use crate::outcome::{FailureReason, LedgerOutcome, ReserveOutcome};
use crate::ports::{Begin, Claim, Outbox, ReserveAttempt, TransferReads, TransferStore};
use crate::tags::{Metadata, Reference, Tags};
use crate::time::Timestamp;
use crate::transfer::{
    HoldEnd, RefundRejection, Transfer, TransferKind, TransferStatus, Unfinished,
};
use crate::wallet::ReserveRequest;

crate::__contract_scenarios!(transfer_store => __contract_names());

/// Stores `transfer` and asserts it was created.
async fn begin<S: TransferStore>(store: &S, transfer: &Transfer, fingerprint: &Fingerprint) {
    let begun = store
        .begin(transfer, fingerprint)
        .await
        .unwrap_or_else(|e| panic!("begin failed: {e}"));
    assert_eq!(
        begun,
        Begin::Created,
        "begin of a new key should create transfer {}",
        transfer.id
    );
}

/// A new transfer created at `created_at`, stored.
async fn begun<S: TransferStore>(store: &S, data: &TestData, created_at: Timestamp) -> Transfer {
    let (transfer, fingerprint) = data.transfer(created_at);
    begin(store, &transfer, &fingerprint).await;
    transfer
}

async fn record<S: TransferStore>(
    store: &S,
    id: TransferId,
    attempt: ReserveAttempt,
    now: Timestamp,
) -> Transfer {
    store
        .record_reserve(id, attempt, now)
        .await
        .unwrap_or_else(|e| panic!("record_reserve({attempt:?}) failed: {e}"))
}

async fn stored<S: TransferReads>(store: &S, id: TransferId) -> Transfer {
    store
        .transfer(id)
        .await
        .unwrap_or_else(|e| panic!("transfer({id}) failed: {e}"))
        .unwrap_or_else(|| panic!("transfer {id} is missing"))
}

/// The key record of `transfer`, read the only way the ports allow: `begin`
/// again under the same key, which must write nothing.
async fn key_record<S: TransferStore>(
    store: &S,
    data: &TestData,
    transfer: &Transfer,
) -> (IdempotencyRecord, Transfer) {
    let (mut probe, fingerprint) = data.transfer(transfer.created_at);
    probe.idempotency_key = transfer.idempotency_key.clone();
    match store
        .begin(&probe, &fingerprint)
        .await
        .unwrap_or_else(|e| panic!("begin failed: {e}"))
    {
        Begin::Existing { record, current } => (*record, *current),
        other => panic!(
            "begin under the key of transfer {} answered {other:?}",
            transfer.id
        ),
    }
}

/// One batch of begins: new keys are stored, a key stored before answers
/// with its record, and a key that comes twice in the batch is stored for
/// its first transfer only, the second answered with the first's record
/// (not yet answered: a repeat of a request in flight).
pub async fn begin_batch_stores_new_keys_and_answers_the_rest_in_order<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let before = begun(&store, &data, at(1)).await;
    let (first, first_fp) = data.transfer(at(2));
    let (second, second_fp) = data.transfer(at(2));
    let (mut twice, twice_fp) = data.transfer(at(2));
    twice.idempotency_key = first.idempotency_key.clone();
    let (mut again, again_fp) = data.transfer(at(2));
    again.idempotency_key = before.idempotency_key.clone();
    let batch = [
        (first.clone(), first_fp.clone()),
        (second.clone(), second_fp),
        (twice.clone(), twice_fp),
        (again.clone(), again_fp),
    ];
    let begun = store
        .begin_batch(&batch)
        .await
        .unwrap_or_else(|e| panic!("begin_batch failed: {e}"));
    assert_eq!(begun.len(), 4, "one answer per transfer: {begun:?}");
    assert_eq!((&begun[0], &begun[1]), (&Begin::Created, &Begin::Created));
    let Begin::Existing { record, current } = &begun[2] else {
        panic!("a key twice in one batch should answer the second with the first: {begun:?}");
    };
    assert_eq!(
        (record.transfer_id, &record.fingerprint, &record.response),
        (first.id, &first_fp, &None),
        "the key's record is the first transfer's, unanswered"
    );
    assert_eq!(**current, first, "and points to the first transfer");
    let Begin::Existing { record, current } = &begun[3] else {
        panic!("a key stored before should answer with its record: {begun:?}");
    };
    assert_eq!((record.transfer_id, current.id), (before.id, before.id));
    assert_eq!(stored(&store, first.id).await, first);
    assert_eq!(stored(&store, second.id).await, second);
    for skipped in [&twice, &again] {
        let found = store.transfer(skipped.id).await.unwrap();
        assert_eq!(found, None, "a transfer whose key existed is not stored");
    }
}

/// One batch of reserve answers, in order: each moves its transfer as the
/// earlier ones left it, and each key keeps its first response.
pub async fn record_reserves_records_a_batch_in_order<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let (a, b, c) = (
        begun(&store, &data, at(1)).await,
        begun(&store, &data, at(1)).await,
        begun(&store, &data, at(1)).await,
    );
    let reserved = ReserveAttempt::Definite(ReserveOutcome::Reserved);
    let short =
        ReserveAttempt::Definite(ReserveOutcome::Rejected(FailureReason::InsufficientFunds));
    let attempts = [
        (a.id, ReserveAttempt::Ambiguous),
        (b.id, short),
        (a.id, reserved),
        (c.id, reserved),
        (b.id, reserved),
    ];
    let recorded = store
        .record_reserves(&attempts, at(2))
        .await
        .unwrap_or_else(|e| panic!("record_reserves failed: {e}"));
    let statuses: Vec<(TransferId, TransferStatus)> =
        recorded.iter().map(|t| (t.id, t.status)).collect();
    assert_eq!(
        statuses,
        [
            (a.id, TransferStatus::Initiated),
            (b.id, TransferStatus::Failed),
            (a.id, TransferStatus::Reserved),
            (c.id, TransferStatus::Reserved),
            (b.id, TransferStatus::Failed),
        ],
        "each attempt on the transfer as the earlier ones left it"
    );
    assert_eq!(stored(&store, a.id).await, recorded[2]);
    assert_eq!(stored(&store, b.id).await, recorded[1]);
    assert_eq!(
        stored(&store, b.id).await.failure_reason,
        Some(FailureReason::InsufficientFunds),
        "a later contradictory answer does not move a FAILED transfer"
    );
    let (record_a, _) = key_record(&store, &data, &a).await;
    assert_eq!(
        record_a.response.as_ref(),
        Some(&recorded[0]),
        "the key's first response is the transfer as its first attempt left it"
    );
    let (record_b, _) = key_record(&store, &data, &b).await;
    assert_eq!(record_b.response.as_ref(), Some(&recorded[1]));
}

async fn claim_initiated<S: TransferStore>(
    store: &S,
    claim: Claim,
    created_before: Timestamp,
    limit: usize,
) -> Vec<TransferId> {
    store
        .claim_initiated(&claim, created_before, limit)
        .await
        .unwrap_or_else(|e| panic!("claim_initiated failed: {e}"))
        .into_iter()
        .map(|t| t.id)
        .collect()
}

fn claim(worker: crate::ids::WorkerId, now: i64, until: i64) -> Claim {
    Claim {
        worker,
        now: at(now),
        until: at(until),
    }
}

/// `begin` of a new key stores the transfer as given, INITIATED.
pub async fn begin_stores_an_initiated_transfer<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let transfer = begun(&store, &data, at(10)).await;
    assert_eq!(
        stored(&store, transfer.id).await,
        transfer,
        "transfer(id) should return the transfer exactly as begun"
    );
    assert_eq!(
        transfer.status,
        TransferStatus::Initiated,
        "test data: a new transfer is INITIATED"
    );
    let page = store
        .transfers_page(None, 10)
        .await
        .expect("transfers_page");
    assert_eq!(
        page,
        vec![transfer],
        "transfers_page should hold the one transfer begun"
    );
}

/// `begin` under a key that exists returns the key's record and the
/// transfer it points to, and stores nothing: not the other transfer, not a
/// new record.
pub async fn begin_with_a_known_key_returns_the_record_and_writes_nothing<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let (first, first_fingerprint) = data.transfer(at(10));
    begin(&store, &first, &first_fingerprint).await;

    let (mut other, other_fingerprint) = data.transfer(at(20));
    other.idempotency_key = first.idempotency_key.clone();
    let begun = store
        .begin(&other, &other_fingerprint)
        .await
        .expect("begin under a used key");
    let Begin::Existing { record, current } = begun else {
        panic!("begin under a used key should return Begin::Existing, got {begun:?}");
    };
    assert_eq!(
        record.key, first.idempotency_key,
        "the record should be the key's"
    );
    assert_eq!(
        record.fingerprint, first_fingerprint,
        "the record should keep the first request's fingerprint"
    );
    assert_eq!(
        record.transfer_id, first.id,
        "the record should point to the first transfer"
    );
    assert_eq!(
        record.created_at, first.created_at,
        "the record's created_at should be when the first request arrived (the transfer's created_at)"
    );
    assert_eq!(
        record.response, None,
        "no response was recorded yet, so the record's response should be None"
    );
    assert_eq!(
        *current, first,
        "Existing.current should be the first transfer as stored"
    );
    assert_eq!(
        store.transfer(other.id).await.expect("transfer"),
        None,
        "the second transfer under a used key must not be stored"
    );
    let page = store
        .transfers_page(None, 10)
        .await
        .expect("transfers_page");
    assert_eq!(
        page,
        vec![first],
        "only the first transfer should be stored"
    );
}

/// A definite `Reserved` answer moves an INITIATED transfer to RESERVED.
pub async fn record_reserve_reserved_moves_to_reserved<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let transfer = begun(&store, &data, at(10)).await;
    let answer = ReserveAttempt::Definite(ReserveOutcome::Reserved);
    let returned = record(&store, transfer.id, answer, at(11)).await;
    assert_eq!(
        returned.status,
        TransferStatus::Reserved,
        "record_reserve(Reserved) should return the transfer RESERVED"
    );
    assert_eq!(
        returned.updated_at,
        at(11),
        "a transfer that moved should be updated at the answer's time"
    );
    assert_eq!(
        stored(&store, transfer.id).await,
        returned,
        "the stored transfer should be the one record_reserve returned"
    );
}

/// A definite rejection moves an INITIATED transfer to FAILED with the
/// rejection's reason.
pub async fn record_reserve_rejected_fails_with_the_reason<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let transfer = begun(&store, &data, at(10)).await;
    let answer =
        ReserveAttempt::Definite(ReserveOutcome::Rejected(FailureReason::InsufficientFunds));
    let returned = record(&store, transfer.id, answer, at(11)).await;
    assert_eq!(
        (returned.status, returned.failure_reason),
        (
            TransferStatus::Failed,
            Some(FailureReason::InsufficientFunds)
        ),
        "record_reserve(Rejected) should fail the transfer with the reason"
    );
    assert_eq!(
        stored(&store, transfer.id).await,
        returned,
        "the stored transfer should be the one record_reserve returned"
    );
}

/// An ambiguous attempt leaves the transfer INITIATED, for the retrier.
pub async fn record_reserve_ambiguous_leaves_initiated<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let transfer = begun(&store, &data, at(10)).await;
    let returned = record(&store, transfer.id, ReserveAttempt::Ambiguous, at(11)).await;
    assert_eq!(
        returned, transfer,
        "record_reserve(Ambiguous) should return the transfer unchanged"
    );
    assert_eq!(
        stored(&store, transfer.id).await,
        transfer,
        "record_reserve(Ambiguous) should leave the stored transfer unchanged"
    );
}

/// The key's response is set by the first `record_reserve`, to the transfer
/// as it then was (INITIATED after an ambiguous attempt, RESERVED after a
/// definite one), and no later attempt changes it.
pub async fn record_reserve_keeps_the_keys_first_response<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();

    // A definite answer first: the response is the RESERVED transfer.
    let transfer = begun(&store, &data, at(10)).await;
    let reserved = ReserveAttempt::Definite(ReserveOutcome::Reserved);
    let first = record(&store, transfer.id, reserved, at(11)).await;
    let (record_now, _) = key_record(&store, &data, &transfer).await;
    assert_eq!(
        record_now.response.as_ref(),
        Some(&first),
        "after the first record_reserve the key's response should be the transfer it returned"
    );
    let rejected = ReserveAttempt::Definite(ReserveOutcome::Rejected(FailureReason::SameWallet));
    record(&store, transfer.id, rejected, at(12)).await;
    record(&store, transfer.id, ReserveAttempt::Ambiguous, at(13)).await;
    let (record_later, current) = key_record(&store, &data, &transfer).await;
    assert_eq!(
        record_later.response.as_ref(),
        Some(&first),
        "a later record_reserve must not change the key's first response"
    );
    assert_eq!(
        current, first,
        "a contradictory rejection after RESERVED must not move the transfer"
    );

    // An ambiguous attempt first: the response is the INITIATED transfer,
    // even after a definite answer moves the transfer on.
    let transfer = begun(&store, &data, at(20)).await;
    let initiated = record(&store, transfer.id, ReserveAttempt::Ambiguous, at(21)).await;
    let moved = record(&store, transfer.id, reserved, at(22)).await;
    assert_eq!(
        moved.status,
        TransferStatus::Reserved,
        "a definite answer after an ambiguous one should still move the transfer"
    );
    let (record_now, current) = key_record(&store, &data, &transfer).await;
    assert_eq!(
        record_now.response.as_ref(),
        Some(&initiated),
        "the response set by the first (ambiguous) attempt should stay the INITIATED transfer"
    );
    assert_eq!(
        current, moved,
        "Existing.current should be the transfer as stored now"
    );
}

/// Ledger outcomes finish transfers: `LedgerSucceeded` moves a RESERVED
/// transfer to SUCCEEDED, `LedgerFailed` to FAILED with the reason, and
/// both are reported as changed.
pub async fn ledger_outcomes_finish_transfers<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let reserved = ReserveAttempt::Definite(ReserveOutcome::Reserved);
    let to_succeed = begun(&store, &data, at(10)).await;
    let to_fail = begun(&store, &data, at(11)).await;
    // An INITIATED transfer whose reserve answer was lost still finishes.
    let unanswered = begun(&store, &data, at(12)).await;
    record(&store, to_succeed.id, reserved, at(13)).await;
    record(&store, to_fail.id, reserved, at(13)).await;

    let batch = [
        data.ledger_outcome(&ReserveRequest::of(&to_succeed), LedgerOutcome::Succeeded),
        data.ledger_outcome(
            &ReserveRequest::of(&to_fail),
            LedgerOutcome::Failed(FailureReason::CurrencyMismatch),
        ),
        data.ledger_outcome(&ReserveRequest::of(&unanswered), LedgerOutcome::Succeeded),
    ];
    let applied = store
        .apply_ledger_outcomes(&batch, at(20))
        .await
        .expect("apply_ledger_outcomes");
    let mut changed = applied.changed.clone();
    changed.sort();
    let mut expected = vec![to_succeed.id, to_fail.id, unanswered.id];
    expected.sort();
    assert_eq!(
        changed, expected,
        "every transfer the batch moved should be reported as changed"
    );
    assert!(
        applied.refused.is_empty(),
        "outcomes for known transfers must not be refused: {:?}",
        applied.refused
    );
    let succeeded = stored(&store, to_succeed.id).await;
    assert_eq!(
        (
            succeeded.status,
            succeeded.failure_reason,
            succeeded.updated_at
        ),
        (TransferStatus::Succeeded, None, at(20)),
        "LedgerSucceeded should move a RESERVED transfer to SUCCEEDED at the batch's time"
    );
    let failed = stored(&store, to_fail.id).await;
    assert_eq!(
        (failed.status, failed.failure_reason),
        (
            TransferStatus::Failed,
            Some(FailureReason::CurrencyMismatch)
        ),
        "LedgerFailed should move a RESERVED transfer to FAILED with the ledger's reason"
    );
    assert_eq!(
        stored(&store, unanswered.id).await.status,
        TransferStatus::Succeeded,
        "LedgerSucceeded should move an INITIATED transfer to SUCCEEDED"
    );
}

/// The inbox keeps each event id once: a second delivery of an event, in
/// the same batch or in a later call, does nothing, not even a second dead
/// letter for an event that was refused.
pub async fn ledger_outcomes_are_deduplicated_by_event_id<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let transfer = begun(&store, &data, at(10)).await;
    let succeeded = data.ledger_outcome(&ReserveRequest::of(&transfer), LedgerOutcome::Succeeded);
    // A transfer this store never saw: its refusal is the only trace the
    // ports show of whether an event was applied again.
    let (stranger, _) = data.transfer(at(11));
    let unknown = data.ledger_outcome(&ReserveRequest::of(&stranger), LedgerOutcome::Succeeded);

    let first = store
        .apply_ledger_outcomes(
            &[succeeded.clone(), unknown.clone(), unknown.clone()],
            at(20),
        )
        .await
        .expect("apply_ledger_outcomes");
    assert_eq!(
        first.changed,
        vec![transfer.id],
        "the first delivery should change the transfer once"
    );
    assert_eq!(
        first.refused.len(),
        1,
        "an event repeated within one batch should be refused once: {:?}",
        first.refused
    );

    let again = store
        .apply_ledger_outcomes(&[succeeded, unknown], at(30))
        .await
        .expect("apply_ledger_outcomes");
    assert!(
        again.changed.is_empty() && again.refused.is_empty(),
        "a second call with the same event ids should do nothing, got {again:?}"
    );
    assert_eq!(
        stored(&store, transfer.id).await.updated_at,
        at(20),
        "a redelivered event must not touch the transfer"
    );
    let dead_letters = outbox_items(&store).await;
    assert_eq!(
        dead_letters.len(),
        1,
        "a refused event delivered three times should be dead-lettered once: {dead_letters:?}"
    );
}

/// A SUCCEEDED or FAILED transfer never moves again: not by a contradictory
/// ledger outcome under a new event id, not by a late reserve answer. Such
/// events are not refusals either: nothing is dead-lettered.
pub async fn a_terminal_transfer_never_moves<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let succeeded = begun(&store, &data, at(10)).await;
    let failed = begun(&store, &data, at(11)).await;
    let batch = [
        data.ledger_outcome(&ReserveRequest::of(&succeeded), LedgerOutcome::Succeeded),
        data.ledger_outcome(
            &ReserveRequest::of(&failed),
            LedgerOutcome::Failed(FailureReason::SameWallet),
        ),
    ];
    store
        .apply_ledger_outcomes(&batch, at(20))
        .await
        .expect("apply_ledger_outcomes");
    let before = (
        stored(&store, succeeded.id).await,
        stored(&store, failed.id).await,
    );

    let late = [
        data.ledger_outcome(
            &ReserveRequest::of(&succeeded),
            LedgerOutcome::Failed(FailureReason::InsufficientFunds),
        ),
        data.ledger_outcome(&ReserveRequest::of(&failed), LedgerOutcome::Succeeded),
    ];
    let applied = store
        .apply_ledger_outcomes(&late, at(30))
        .await
        .expect("apply_ledger_outcomes");
    assert!(
        applied.changed.is_empty(),
        "no terminal transfer may change: {:?}",
        applied.changed
    );
    assert!(
        applied.refused.is_empty(),
        "late outcomes on known terminal transfers are no-ops, not refusals: {:?}",
        applied.refused
    );
    for id in [succeeded.id, failed.id] {
        record(
            &store,
            id,
            ReserveAttempt::Definite(ReserveOutcome::Reserved),
            at(31),
        )
        .await;
    }
    let after = (
        stored(&store, succeeded.id).await,
        stored(&store, failed.id).await,
    );
    assert_eq!(
        after, before,
        "terminal transfers must stay exactly as they were"
    );
    assert!(
        outbox_items(&store).await.is_empty(),
        "nothing should be dead-lettered for late events on known transfers"
    );
}

/// An outcome for a transfer the store does not know is refused: returned
/// in `Applied::refused` and written to the outbox as a dead letter holding
/// the event as received.
pub async fn an_outcome_for_an_unknown_transfer_is_dead_lettered<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads + Outbox,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let (stranger, _) = data.transfer(at(10));
    let event = data.ledger_outcome(&ReserveRequest::of(&stranger), LedgerOutcome::Succeeded);
    let applied = store
        .apply_ledger_outcomes(std::slice::from_ref(&event), at(20))
        .await
        .expect("apply_ledger_outcomes");
    assert!(
        applied.changed.is_empty(),
        "nothing should change: {applied:?}"
    );
    assert_eq!(
        applied
            .refused
            .iter()
            .map(|r| r.event_id)
            .collect::<Vec<_>>(),
        vec![event.event_id()],
        "the outcome for an unknown transfer should be refused"
    );
    assert!(
        !applied.refused[0].reason.is_empty(),
        "a refusal should say why"
    );
    assert_eq!(
        store.transfer(stranger.id).await.expect("transfer"),
        None,
        "a refused outcome must not create a transfer"
    );
    let items = outbox_items(&store).await;
    assert_eq!(
        items.len(),
        1,
        "exactly one dead letter should be in the outbox: {items:?}"
    );
    match &items[0] {
        Outgoing::DeadLetter {
            event: letter,
            reason,
        } => {
            assert_eq!(
                letter, &event.envelope,
                "the dead letter should hold the refused event as received"
            );
            assert_eq!(
                reason, &applied.refused[0].reason,
                "the dead letter's reason should be the refusal's"
            );
        }
        other => panic!("the outbox should hold a dead letter, got {other:?}"),
    }
}

/// `claim_initiated` returns INITIATED transfers created strictly before
/// the cutoff, oldest first, up to the limit, and skips what another
/// worker's live lease holds.
pub async fn claim_initiated_returns_old_initiated_transfers_oldest_first<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    // Begun out of order, so "oldest first" is by creation time, not by
    // the order of writing or of ids.
    let c = begun(&store, &data, at(30)).await;
    let a = begun(&store, &data, at(10)).await;
    let d = begun(&store, &data, at(40)).await;
    let b = begun(&store, &data, at(20)).await;
    let (one, two) = (data.worker_id(), data.worker_id());

    let first = claim_initiated(&store, claim(one, 100, 200), at(35), 2).await;
    assert_eq!(
        first,
        vec![a.id, b.id],
        "the two oldest INITIATED transfers created before the cutoff, oldest first"
    );
    let second = claim_initiated(&store, claim(two, 110, 210), at(35), 10).await;
    assert_eq!(
        second,
        vec![c.id],
        "another worker should get only what the first does not hold, and nothing created after the cutoff"
    );
    let all = claim_initiated(&store, claim(data.worker_id(), 300, 400), at(50), 10).await;
    assert_eq!(
        all,
        vec![a.id, b.id, c.id, d.id],
        "once every lease ended, every INITIATED transfer before the cutoff, oldest first"
    );
    let strict = claim_initiated(&store, claim(data.worker_id(), 500, 600), at(30), 10).await;
    assert_eq!(
        strict,
        vec![a.id, b.id],
        "a transfer created exactly at the cutoff is not created before it"
    );
}

/// A transfer claimed by one worker is not returned to another until the
/// lease ends; the holder itself gets it again at once.
pub async fn claim_initiated_respects_other_workers_leases<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let transfer = begun(&store, &data, at(10)).await;
    let (holder, other) = (data.worker_id(), data.worker_id());

    let held = claim_initiated(&store, claim(holder, 100, 200), at(50), 10).await;
    assert_eq!(held, vec![transfer.id], "the first claim gets the transfer");
    let blocked = claim_initiated(&store, claim(other, 150, 250), at(50), 10).await;
    assert!(
        blocked.is_empty(),
        "another worker must not get a transfer under a live lease, got {blocked:?}"
    );
    let again = claim_initiated(&store, claim(holder, 160, 260), at(50), 10).await;
    assert_eq!(
        again,
        vec![transfer.id],
        "the worker holding the lease gets its transfer again"
    );
    let after = claim_initiated(&store, claim(other, 300, 400), at(50), 10).await;
    assert_eq!(
        after,
        vec![transfer.id],
        "once the lease ended another worker gets the transfer"
    );
}

/// Once a transfer is no longer INITIATED (a definite reserve answer or a
/// ledger outcome moved it) no worker claims it, even after its lease
/// ended; an ambiguous answer keeps it claimable.
pub async fn claim_initiated_skips_transfers_no_longer_initiated<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let reserved = begun(&store, &data, at(10)).await;
    let rejected = begun(&store, &data, at(11)).await;
    let ambiguous = begun(&store, &data, at(12)).await;
    let finished = begun(&store, &data, at(13)).await;
    let worker = data.worker_id();
    let held = claim_initiated(&store, claim(worker, 100, 200), at(50), 10).await;
    assert_eq!(
        held.len(),
        4,
        "the first claim should get all four transfers"
    );

    record(
        &store,
        reserved.id,
        ReserveAttempt::Definite(ReserveOutcome::Reserved),
        at(101),
    )
    .await;
    record(
        &store,
        rejected.id,
        ReserveAttempt::Definite(ReserveOutcome::Rejected(FailureReason::WalletNotFound)),
        at(101),
    )
    .await;
    record(&store, ambiguous.id, ReserveAttempt::Ambiguous, at(101)).await;
    store
        .apply_ledger_outcomes(
            &[data.ledger_outcome(&ReserveRequest::of(&finished), LedgerOutcome::Succeeded)],
            at(101),
        )
        .await
        .expect("apply_ledger_outcomes");

    let own = claim_initiated(&store, claim(worker, 110, 210), at(50), 10).await;
    assert_eq!(
        own,
        vec![ambiguous.id],
        "even the lease holder gets only what is still INITIATED"
    );
    let later = claim_initiated(&store, claim(data.worker_id(), 300, 400), at(50), 10).await;
    assert_eq!(
        later,
        vec![ambiguous.id],
        "after the lease ended only the still INITIATED transfer is claimable"
    );
}

/// `unfinished` counts the INITIATED and RESERVED transfers by the age
/// bucket their creation time falls in at `now` (a bound belongs to the
/// older bucket; a creation time after `now` is under a minute), and
/// leaves out every terminal transfer.
pub async fn unfinished_transfers_are_counted_by_status_and_age<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let now = 10_000;
    let empty = store.unfinished(at(now)).await.expect("unfinished");
    assert_eq!(empty, Unfinished::default(), "an empty store has none");
    for age in [0, 59, -10, 60, 299, 300, 3_599, 3_600, 86_400] {
        begun(&store, &data, at(now - age)).await;
    }
    for age in [120, 7_200] {
        let transfer = begun(&store, &data, at(now - age)).await;
        let reserved = ReserveAttempt::Definite(ReserveOutcome::Reserved);
        record(&store, transfer.id, reserved, at(now - 1)).await;
    }
    let rejected = begun(&store, &data, at(now - 7_200)).await;
    let refusal = ReserveOutcome::Rejected(FailureReason::InsufficientFunds);
    record(
        &store,
        rejected.id,
        ReserveAttempt::Definite(refusal),
        at(now - 1),
    )
    .await;
    let posted = begun(&store, &data, at(now - 30)).await;
    let outcome = data.ledger_outcome(&ReserveRequest::of(&posted), LedgerOutcome::Succeeded);
    store
        .apply_ledger_outcomes(&[outcome], at(now - 1))
        .await
        .expect("apply_ledger_outcomes");

    let counted = store.unfinished(at(now)).await.expect("unfinished");
    assert_eq!(
        counted,
        Unfinished {
            initiated: [3, 2, 2, 2],
            reserved: [0, 1, 0, 1],
        },
        "INITIATED aged 0, 59 and -10 s under a minute, 60 and 299 s under five, \
         300 and 3,599 s under an hour, 3,600 s and a day beyond; RESERVED aged 2 minutes \
         and 2 hours; the FAILED and the SUCCEEDED not at all"
    );
    let later = store.unfinished(at(now + 3_610)).await.expect("unfinished");
    assert_eq!(
        later,
        Unfinished {
            initiated: [0, 0, 0, 9],
            reserved: [0, 0, 0, 2],
        },
        "an hour and ten seconds later every unfinished transfer is an hour old or more"
    );
}

/// `transfer` reads one transfer by id (`None` for an unknown id), and
/// `transfers_page` returns transfers by id, after `after`, up to `limit`.
pub async fn transfers_are_read_by_id_and_paged_in_id_order<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let mut made: Vec<(Transfer, Fingerprint)> =
        (0..5).map(|i| data.transfer(at(10 + i))).collect();
    // Written in an order unlike the ids' order.
    for index in [3, 0, 4, 1, 2] {
        let (transfer, fingerprint) = &made[index];
        begin(&store, transfer, fingerprint).await;
    }
    made.sort_by_key(|(t, _)| t.id);
    let all: Vec<Transfer> = made.into_iter().map(|(t, _)| t).collect();

    for transfer in &all {
        assert_eq!(
            &stored(&store, transfer.id).await,
            transfer,
            "transfer(id) should return the stored transfer"
        );
    }
    assert_eq!(
        store.transfer(data.transfer_id()).await.expect("transfer"),
        None,
        "transfer(id) of an unknown id should be None"
    );

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .transfers_page(after, 2)
            .await
            .expect("transfers_page");
        assert!(page.len() <= 2, "a page must not exceed its limit");
        assert_page_after("transfers_page", after, page.iter().map(|t| t.id));
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        pages.push(page);
    }
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1],
        "five transfers in pages of two"
    );
    assert_eq!(
        pages.concat(),
        all,
        "pages should hold every transfer once, by id"
    );
    assert!(
        store
            .transfers_page(Some(all[4].id), 10)
            .await
            .expect("transfers_page")
            .is_empty(),
        "nothing comes after the largest id"
    );
    assert_eq!(
        store.transfers_page(None, 0).await.expect("transfers_page"),
        Vec::<Transfer>::new(),
        "a page of limit 0 is empty"
    );
}

/// The outbox's claims return the oldest records first, up to the limit;
/// here the records are dead letters of outcomes for unknown transfers.
pub async fn outbox_claims_oldest_first_up_to_limit<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads + Outbox,
{
    outbox::claims_oldest_first_up_to_limit(fixture, &TransferFeed).await;
}

/// Records under another worker's live lease are not claimed.
pub async fn outbox_leases_keep_records_from_other_workers<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads + Outbox,
{
    outbox::leases_keep_records_from_other_workers(fixture, &TransferFeed).await;
}

/// Acknowledged records are never claimed again; acknowledging twice, or
/// an unknown seq, is ignored.
pub async fn outbox_acknowledged_records_never_return<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads + Outbox,
{
    outbox::acknowledged_records_never_return(fixture, &TransferFeed).await;
}

/// Unacknowledged records whose lease ended go to the next worker.
pub async fn outbox_records_return_when_the_lease_ends<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads + Outbox,
{
    outbox::records_return_when_the_lease_ends(fixture, &TransferFeed).await;
}

/// A worker claiming again gets its own unacknowledged records again, and
/// its lease moves to the new claim's end.
pub async fn outbox_a_worker_reclaims_its_own_records<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads + Outbox,
{
    outbox::a_worker_reclaims_its_own_records(fixture, &TransferFeed).await;
}

/// While one worker holds a transfer's older record, no other worker gets
/// its newer record. The transfer's two records are the dead letters of two
/// outcomes for the same unknown transfer.
pub async fn outbox_keeps_each_transfers_records_in_order<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads + Outbox,
{
    outbox::keeps_each_transfers_records_in_order(fixture, &TransferFeed).await;
}

/// A new hold created at `created_at` expiring at `expires_at`, stored and
/// HELD.
async fn held<S: TransferStore>(
    store: &S,
    data: &TestData,
    created_at: i64,
    expires_at: i64,
) -> Transfer {
    let (hold, fingerprint) = data.hold(at(created_at), at(expires_at));
    begin(store, &hold, &fingerprint).await;
    let answer = ReserveAttempt::Definite(ReserveOutcome::Reserved);
    let hold = record(store, hold.id, answer, at(created_at + 1)).await;
    assert_eq!(
        hold.status,
        TransferStatus::Held,
        "a reserved hold should be HELD"
    );
    hold
}

async fn claim_expired<S: TransferStore>(store: &S, claim: Claim, limit: usize) -> Vec<TransferId> {
    store
        .claim_expired_holds(&claim, limit)
        .await
        .unwrap_or_else(|e| panic!("claim_expired_holds failed: {e}"))
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// The sweeper's claim: HELD holds whose expiry is at or before now,
/// soonest first, each to one worker until its lease ends or the hold
/// ends.
pub async fn claim_expired_holds_leases_due_holds_soonest_first<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let later = held(&store, &data, 10, 60).await;
    let sooner = held(&store, &data, 11, 50).await;
    let not_due = held(&store, &data, 12, 500).await;
    let (one, two) = (data.worker_id(), data.worker_id());
    assert_eq!(claim_expired(&store, claim(one, 49, 100), 10).await, vec![]);
    assert_eq!(
        claim_expired(&store, claim(one, 60, 100), 10).await,
        vec![sooner.id, later.id],
        "due holds, soonest expiry first, the expiry itself due"
    );
    assert_eq!(
        claim_expired(&store, claim(two, 70, 170), 10).await,
        vec![],
        "holds another worker's live lease holds are skipped"
    );
    let ended = store
        .record_hold_ends(&[(sooner.id, HoldEnd::Expired)], at(71))
        .await
        .unwrap_or_else(|e| panic!("record_hold_ends failed: {e}"));
    assert_eq!(ended.len(), 1);
    assert_eq!(
        (ended[0].status, ended[0].updated_at),
        (TransferStatus::Expired, at(71))
    );
    assert_eq!(
        claim_expired(&store, claim(two, 100, 200), 10).await,
        vec![later.id],
        "after the lease, only the hold still HELD"
    );
    assert_eq!(
        stored(&store, not_due.id).await.status,
        TransferStatus::Held
    );
}

/// A hold's end is recorded once: a HELD hold moves, a hold that ended
/// stays as it ended.
pub async fn record_hold_ends_moves_held_holds_only<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let hold = held(&store, &data, 10, 500).await;
    let capture = data.transfer_id();
    let first = store
        .record_hold_ends(&[(hold.id, HoldEnd::Captured(capture))], at(20))
        .await
        .unwrap_or_else(|e| panic!("record_hold_ends failed: {e}"));
    assert_eq!(
        (first[0].status, first[0].captured_by),
        (TransferStatus::Captured, Some(capture))
    );
    let again = store
        .record_hold_ends(&[(hold.id, HoldEnd::Voided)], at(30))
        .await
        .unwrap_or_else(|e| panic!("record_hold_ends failed: {e}"));
    assert_eq!(again, first, "a hold that ended stays as it ended");
    assert_eq!(stored(&store, hold.id).await, first[0]);
}

/// A capture's reserve answer ends its hold in the same unit: reserved,
/// the hold is CAPTURED by it; rejected because the hold was voided, the
/// hold is VOIDED; rejected for another reason, the hold stays HELD.
pub async fn a_captures_answer_ends_its_hold<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let taken = held(&store, &data, 10, 500).await;
    let voided = held(&store, &data, 11, 500).await;
    let over = held(&store, &data, 12, 500).await;
    let mut captures = Vec::new();
    for (hold, outcome) in [
        (&taken, ReserveOutcome::Reserved),
        (&voided, ReserveOutcome::Rejected(FailureReason::HoldVoided)),
        (&over, ReserveOutcome::Rejected(FailureReason::ExceedsHold)),
    ] {
        let (capture, fingerprint) = data.capture(hold, at(20));
        begin(&store, &capture, &fingerprint).await;
        captures.push((capture.id, ReserveAttempt::Definite(outcome)));
    }
    store
        .record_reserves(&captures, at(21))
        .await
        .unwrap_or_else(|e| panic!("record_reserves failed: {e}"));
    let taken = stored(&store, taken.id).await;
    assert_eq!(
        (taken.status, taken.captured_by),
        (TransferStatus::Captured, Some(captures[0].0))
    );
    assert_eq!(
        stored(&store, voided.id).await.status,
        TransferStatus::Voided
    );
    assert_eq!(stored(&store, over.id).await.status, TransferStatus::Held);
}

/// A SUCCEEDED transfer, stored and moved through the saga's answers.
async fn succeeded<S: TransferStore + TransferReads>(
    store: &S,
    data: &TestData,
    created_at: i64,
) -> Transfer {
    let (transfer, fingerprint) = data.transfer(at(created_at));
    begin(store, &transfer, &fingerprint).await;
    let reserved = ReserveAttempt::Definite(ReserveOutcome::Reserved);
    record(store, transfer.id, reserved, at(created_at + 1)).await;
    let outcome = data.ledger_outcome(&ReserveRequest::of(&transfer), LedgerOutcome::Succeeded);
    store
        .apply_ledger_outcomes(&[outcome], at(created_at + 2))
        .await
        .unwrap_or_else(|e| panic!("apply_ledger_outcomes failed: {e}"));
    stored(store, transfer.id).await
}

/// A refund of `original` of `amount_text` USD under a fresh key.
fn refund_of(data: &TestData, original: &Transfer, amount_text: &str) -> (Transfer, Fingerprint) {
    let (template, _) = data.transfer(at(100));
    let amount = crate::contract::data::usd(amount_text);
    let refund = Transfer {
        sender_wallet_id: original.receiver_wallet_id,
        receiver_wallet_id: original.sender_wallet_id,
        amount,
        refund_of: Some(original.id),
        ..template
    };
    let fingerprint = Fingerprint::of_refund(original.id, amount, original.currency);
    (refund, fingerprint)
}

/// `begin_refund` stores refunds while they stay within the original,
/// counts those not FAILED, refuses the rest with what is left, and
/// answers a used key as `begin` does.
pub async fn begin_refund_keeps_refunds_within_the_original<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let original = succeeded(&store, &data, 10).await;
    let (first, fingerprint) = refund_of(&data, &original, "6.00");
    let begun = store.begin_refund(&first, &fingerprint).await.unwrap();
    assert_eq!(begun, Ok(Begin::Created));
    let again = store.begin_refund(&first, &fingerprint).await.unwrap();
    assert!(
        matches!(again, Ok(Begin::Existing { .. })),
        "a used key answers as begin does: {again:?}"
    );
    let (over, fingerprint) = refund_of(&data, &original, "4.01");
    assert_eq!(
        store.begin_refund(&over, &fingerprint).await.unwrap(),
        Err(RefundRejection::Exceeds {
            refundable: crate::contract::data::balance("4.00")
        }),
        "the first refund counts while it is not decided"
    );
    let refused =
        ReserveAttempt::Definite(ReserveOutcome::Rejected(FailureReason::InsufficientFunds));
    record(&store, first.id, refused, at(20)).await;
    let (all, fingerprint) = refund_of(&data, &original, "10.00");
    assert_eq!(
        store.begin_refund(&all, &fingerprint).await.unwrap(),
        Ok(Begin::Created),
        "a FAILED refund sent nothing back"
    );
    let refunds: Vec<TransferId> = store
        .refunds_of(original.id)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(refunds, vec![first.id, all.id]);
    let (unsucceeded, fingerprint) = data.transfer(at(30));
    begin(&store, &unsucceeded, &fingerprint).await;
    let (early, fingerprint) = refund_of(&data, &unsucceeded, "1.00");
    assert_eq!(
        store.begin_refund(&early, &fingerprint).await.unwrap(),
        Err(RefundRejection::NotSucceeded(TransferStatus::Initiated))
    );
}

/// Refunds of one transfer from many tasks at once: together they never
/// exceed it.
pub async fn concurrent_refunds_never_exceed_the_original<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    const TASKS: usize = 8;
    let store = std::sync::Arc::new(fixture.fresh().await);
    let data = std::sync::Arc::new(TestData::new());
    let original = succeeded(&*store, &data, 10).await;
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, data, start, original) =
            (store.clone(), data.clone(), start.clone(), original.clone());
        tasks.push(tokio::spawn(async move {
            let (refund, fingerprint) = refund_of(&data, &original, "3.00");
            start.wait().await;
            crate::contract::data::retrying(|| store.begin_refund(&refund, &fingerprint))
                .await
                .unwrap()
        }));
    }
    let mut stored_refunds = 0;
    for task in tasks {
        if task.await.expect("task panicked") == Ok(Begin::Created) {
            stored_refunds += 1;
        }
    }
    assert_eq!(
        stored_refunds, 3,
        "three refunds of 3.00 fit in 10.00, a fourth does not"
    );
    assert_eq!(store.refunds_of(original.id).await.unwrap().len(), 3);
}

/// A new transfer from `sender` to `receiver` created at `created_at`,
/// with `reference` when given and a metadata object.
fn tagged(
    data: &TestData,
    created_at: Timestamp,
    (sender, receiver): (WalletId, WalletId),
    reference: Option<&str>,
) -> (Transfer, Fingerprint) {
    let (mut transfer, _) = data.transfer(created_at);
    transfer.sender_wallet_id = sender;
    transfer.receiver_wallet_id = receiver;
    transfer.tags = Tags {
        reference: reference.map(|r| Reference::new(r).unwrap()),
        metadata: Some(Metadata::new(serde_json::json!({"order": {"lines": [1, 2]}})).unwrap()),
    };
    let fingerprint = Fingerprint::of_transfer(
        transfer.kind,
        sender,
        receiver,
        transfer.amount,
        transfer.currency,
    )
    .tagged(&transfer.tags);
    (transfer, fingerprint)
}

/// A reference is unique in its wallet: a second transfer with it under a
/// new key is refused with the first one's id and writes nothing (its key
/// stays free), whether the first was stored before or earlier in the same
/// batch; another wallet may use it; a repeat of the first's key answers
/// as a repeat. Tags are read back as stored.
pub async fn references_are_unique_per_wallet<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let (alice, bob) = (data.wallet_id(), data.wallet_id());
    let (first, fp) = tagged(&data, at(1), (alice, bob), Some("order-1"));
    begin(&store, &first, &fp).await;
    assert_eq!(
        stored(&store, first.id).await.tags,
        first.tags,
        "tags read back"
    );

    let (second, fp2) = tagged(&data, at(2), (alice, bob), Some("order-1"));
    let begun = store.begin(&second, &fp2).await.unwrap();
    assert_eq!(
        begun,
        Begin::ReferenceTaken(first.id),
        "taken in alice's wallet"
    );
    assert_eq!(
        store.transfer(second.id).await.unwrap(),
        None,
        "nothing written"
    );
    let (mut untagged, _) = tagged(&data, at(2), (alice, bob), None);
    untagged.idempotency_key = second.idempotency_key.clone();
    let fp_untagged = Fingerprint::of_transfer(
        untagged.kind,
        alice,
        bob,
        untagged.amount,
        untagged.currency,
    )
    .tagged(&untagged.tags);
    begin(&store, &untagged, &fp_untagged).await;

    let (bobs, fp3) = tagged(&data, at(3), (bob, alice), Some("order-1"));
    begin(&store, &bobs, &fp3).await;

    let (mut repeat, _) = tagged(&data, at(4), (alice, bob), Some("order-1"));
    repeat.idempotency_key = first.idempotency_key.clone();
    match store.begin(&repeat, &fp).await.unwrap() {
        Begin::Existing { current, .. } => assert_eq!(current.id, first.id),
        other => panic!("a repeat of the first key answered {other:?}"),
    }

    let (a, fa) = tagged(&data, at(5), (alice, bob), Some("order-2"));
    let (b, fb) = tagged(&data, at(5), (alice, bob), Some("order-2"));
    let begun = store
        .begin_batch(&[(a.clone(), fa), (b.clone(), fb)])
        .await
        .unwrap();
    assert_eq!(begun, vec![Begin::Created, Begin::ReferenceTaken(a.id)]);
    assert_eq!(store.transfer(b.id).await.unwrap(), None);
}

/// Units that store one reference at once, under different keys, store it
/// once; the others are told which transfer has it.
pub async fn concurrent_begins_store_a_reference_once<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    const TASKS: usize = 8;
    let store = std::sync::Arc::new(fixture.fresh().await);
    let data = std::sync::Arc::new(TestData::new());
    let (alice, bob) = (data.wallet_id(), data.wallet_id());
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, data, start) = (store.clone(), data.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let (transfer, fingerprint) = tagged(&data, at(1), (alice, bob), Some("once"));
            start.wait().await;
            let begun = crate::contract::data::retrying(|| store.begin(&transfer, &fingerprint))
                .await
                .unwrap();
            (transfer.id, begun)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task panicked"));
    }
    let created: Vec<TransferId> = answers
        .iter()
        .filter(|(_, b)| *b == Begin::Created)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        created.len(),
        1,
        "one of {TASKS} stores the reference: {answers:?}"
    );
    for (id, begun) in &answers {
        if *id != created[0] {
            assert_eq!(*begun, Begin::ReferenceTaken(created[0]));
            assert_eq!(store.transfer(*id).await.unwrap(), None);
        }
    }
}

/// The history: newest first by creation time then id, the filters each
/// keep what they name, and paging by cursor sees every transfer once even
/// while newer ones are stored between pages.
pub async fn history_pages_newest_first_through_its_filters<F>(fixture: &F)
where
    F: Fixture,
    F::Store: TransferStore + TransferReads,
{
    let store = fixture.fresh().await;
    let data = TestData::new();
    let (alice, bob, carol) = (data.wallet_id(), data.wallet_id(), data.wallet_id());
    let pairs = [(alice, bob), (bob, alice), (bob, carol), (carol, alice)];
    let mut all = Vec::new();
    // Two transfers at each second, so ties on the time are ordered by id.
    for i in 0..12 {
        let reference = format!("ref-{i}");
        let (t, fp) = tagged(
            &data,
            at(10 + i / 2),
            pairs[i as usize % 4],
            Some(&reference),
        );
        begin(&store, &t, &fp).await;
        all.push(t);
    }
    let failed = record(
        &store,
        all[3].id,
        ReserveAttempt::Definite(ReserveOutcome::Rejected(FailureReason::InsufficientFunds)),
        at(30),
    )
    .await;
    all[3] = failed;
    let newest_first = |query: &HistoryQuery| -> Vec<TransferId> {
        let mut ids: Vec<&Transfer> = all.iter().filter(|t| query.matches(t)).collect();
        ids.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
        ids.into_iter().map(|t| t.id).collect()
    };
    let read_all = async |query: HistoryQuery| -> Vec<TransferId> {
        let mut ids = Vec::new();
        let mut query = query;
        loop {
            let page = store.history(&query).await.unwrap();
            assert!(page.transfers.len() <= query.limit);
            ids.extend(page.transfers.iter().map(|t| t.id));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return ids,
            }
        }
    };
    let everything = HistoryQuery::all(5);
    let ids = read_all(everything.clone()).await;
    assert_eq!(ids.len(), 12);
    assert_eq!(ids, newest_first(&everything), "newest first, ties by id");
    let queries = [
        HistoryQuery {
            wallet: Some(alice),
            ..HistoryQuery::all(2)
        },
        HistoryQuery {
            wallet: Some(carol),
            ..HistoryQuery::all(3)
        },
        HistoryQuery {
            status: Some(TransferStatus::Failed),
            ..HistoryQuery::all(5)
        },
        HistoryQuery {
            wallet: Some(bob),
            status: Some(TransferStatus::Initiated),
            ..HistoryQuery::all(2)
        },
        HistoryQuery {
            kind: Some(TransferKind::Deposit),
            ..HistoryQuery::all(5)
        },
        HistoryQuery {
            reference: Some(Reference::new("ref-7").unwrap()),
            ..HistoryQuery::all(5)
        },
        HistoryQuery {
            wallet: Some(alice),
            reference: Some(Reference::new("ref-7").unwrap()),
            ..HistoryQuery::all(5)
        },
        HistoryQuery {
            since: Some(at(12)),
            until: Some(at(14)),
            ..HistoryQuery::all(3)
        },
        HistoryQuery {
            wallet: Some(bob),
            since: Some(at(13)),
            ..HistoryQuery::all(1)
        },
    ];
    for query in queries {
        let expected = newest_first(&query);
        assert_eq!(read_all(query.clone()).await, expected, "{query:?}");
    }
    assert_eq!(
        newest_first(&HistoryQuery {
            wallet: Some(alice),
            ..HistoryQuery::all(2)
        })
        .len(),
        9
    );

    // A page read, then newer transfers stored: the next pages go on where
    // the first stopped.
    let first = store.history(&HistoryQuery::all(4)).await.unwrap();
    for i in 0..3 {
        let (t, fp) = tagged(&data, at(40 + i), (alice, bob), None);
        begin(&store, &t, &fp).await;
    }
    let rest = read_all(HistoryQuery {
        after: first.next,
        ..HistoryQuery::all(4)
    })
    .await;
    let mut seen: Vec<TransferId> = first.transfers.iter().map(|t| t.id).collect();
    seen.extend(rest);
    assert_eq!(seen, ids, "the pages after the first are as they were");
}
