//! Fault wrappers of the ports the runtime calls: the three stores (with
//! their outboxes), the publisher and the subscriptions. The services,
//! relays and consumer runners of `wallet-core` run unchanged over them;
//! every fault is a port answering as a real database or broker may.
//!
//! Each call has two await points, `before <port>.<call>` and `after
//! <port>.<call>`. An armed crash makes one of them return `Pending` once
//! (a yield); the simulator's driver then stops polling and drops the
//! step's future, so the step dies exactly there, as a process would.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use wallet_core::event::{EventStamp, Inbound, StampedReserve};
use wallet_core::idempotency::Fingerprint;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::ledger::{AccountBalance, Entry, PostingRequest};
use wallet_core::money::{Amount, Currency};
use wallet_core::outcome::LedgerOutcome;
use wallet_core::outcome::ReserveOutcome;
use wallet_core::ports::{
    Applied, Backlog, Begin, BusError, Claim, Delivery, EntryCursor, LedgerReads, LedgerStore,
    Message, Outbox, OutboxRecord, Publisher, Refusal, ReserveAttempt, StoreError, Subscription,
    TransferReads, TransferStore, WalletReads, WalletStore,
};
use wallet_core::time::Timestamp;
use wallet_core::transfer::{HoldEnd, RefundRejection, Transfer};
use wallet_core::wallet::{HoldRelease, HoldState, Reservation, Wallet};

use crate::faults::{
    BeginSeen, FaultKind, Faults, SharedFaults, Skew, StoreFault, StorePort, SubscriptionFault,
    lock,
};

/// `Pending` once, then `Ready`: an await point where a step can die.
#[derive(Debug, Default)]
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// An await point: yields once when the armed crash strikes here.
async fn point(faults: &SharedFaults, when: &str, what: &str) {
    let strikes = lock(faults).point(when, what);
    if strikes {
        YieldOnce::default().await;
    }
}

/// A store whose write units fail or lose their answer when the simulator
/// arms it. Its read ports pass through untouched.
#[derive(Clone)]
pub(crate) struct FaultyStore<S> {
    inner: S,
    port: StorePort,
    faults: SharedFaults,
}

impl<S> FaultyStore<S> {
    pub fn new(inner: S, port: StorePort, faults: SharedFaults) -> Self {
        FaultyStore {
            inner,
            port,
            faults,
        }
    }

    /// The error of a unit that applies nothing, if `fault` is one.
    fn refused(&self, fault: Option<StoreFault>, what: &str) -> Option<StoreError> {
        let (kind, error) = match fault? {
            StoreFault::Unavailable => (
                FaultKind::StoreUnavailable,
                StoreError::Unavailable(format!("injected: {what} down")),
            ),
            StoreFault::Integrity => (
                FaultKind::StoreIntegrity,
                StoreError::Integrity(format!("injected: {what} broke a constraint")),
            ),
            StoreFault::AckLost => return None,
        };
        lock(&self.faults).record_with(kind, what.to_owned());
        Some(error)
    }

    /// One write unit: its await points and its armed fault.
    async fn unit<T>(
        &self,
        call: &'static str,
        unit: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.unit_seen(call, unit, |_, _| {}).await
    }

    /// One write unit, whose answer `seen` looks at as the store gave it
    /// (before an armed fault loses it).
    async fn unit_seen<T>(
        &self,
        call: &'static str,
        unit: impl Future<Output = Result<T, StoreError>>,
        seen: impl FnOnce(&mut Faults, &T),
    ) -> Result<T, StoreError> {
        let what = format!("{}.{call}", self.port.name());
        point(&self.faults, "before", &what).await;
        let fault = {
            let mut faults = lock(&self.faults);
            if !call.starts_with("claim") {
                faults.observed.writes += 1;
            }
            faults.store_fault(self.port)
        };
        if let Some(refused) = self.refused(fault, &what) {
            return Err(refused);
        }
        let result = unit.await;
        if let Ok(value) = &result {
            seen(&mut lock(&self.faults), value);
        }
        point(&self.faults, "after", &what).await;
        if fault == Some(StoreFault::AckLost) && result.is_ok() {
            lock(&self.faults).record_with(FaultKind::StoreAckLost, what.clone());
            return Err(StoreError::Unavailable(format!(
                "injected: {what} committed, answer lost"
            )));
        }
        result
    }
}

#[async_trait]
impl<S: Outbox> Outbox for FaultyStore<S> {
    async fn claim(&self, claim: &Claim, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let port = self.port;
        let claimed = self.inner.claim(claim, limit);
        self.unit_seen("claim", claimed, |faults, records| {
            if !records.is_empty() {
                faults.observed.writes += 1;
            }
            faults.outbox_claimed(port, claim, limit, records);
        })
        .await
    }

    async fn acknowledge(&self, seqs: &[u64]) -> Result<(), StoreError> {
        lock(&self.faults).outbox_acknowledged(self.port, seqs);
        self.unit("acknowledge", self.inner.acknowledge(seqs)).await
    }
}

#[async_trait]
impl<S: TransferStore> TransferStore for FaultyStore<S> {
    async fn begin_batch(
        &self,
        batch: &[(Transfer, Fingerprint)],
    ) -> Result<Vec<Begin>, StoreError> {
        let begun = self.inner.begin_batch(batch);
        let result = self.unit("begin", begun).await;
        if let (Ok(begun), Some((transfer, _))) = (&result, batch.last()) {
            // The simulator sends one request at a time: what it saw of
            // the batch's last request is what it saw of its request.
            // The simulator's requests carry no references.
            lock(&self.faults).observed.begin = begun.last().and_then(|begin| match begin {
                Begin::Created => Some(BeginSeen::Created),
                Begin::Existing { record, .. } => Some(BeginSeen::Existing {
                    answered: record.response.is_some(),
                    age: transfer.created_at - record.created_at,
                }),
                Begin::ReferenceTaken(_) => None,
            });
        }
        result
    }

    async fn record_reserves(
        &self,
        attempts: &[(TransferId, ReserveAttempt)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError> {
        let recorded = self.inner.record_reserves(attempts, now);
        self.unit("record_reserve", recorded).await
    }

    async fn apply_ledger_outcomes(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Applied, StoreError> {
        let applied = self.inner.apply_ledger_outcomes(batch, now);
        self.unit("apply_ledger_outcomes", applied).await
    }

    async fn claim_initiated(
        &self,
        claim: &Claim,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        let claimed = self.inner.claim_initiated(claim, created_before, limit);
        self.unit_seen("claim_initiated", claimed, |faults, transfers| {
            if !transfers.is_empty() {
                faults.observed.writes += 1;
            }
            faults.initiated_claimed(claim, created_before, transfers);
        })
        .await
    }

    async fn begin_refund(
        &self,
        refund: &Transfer,
        fingerprint: &Fingerprint,
    ) -> Result<Result<Begin, RefundRejection>, StoreError> {
        let begun = self.inner.begin_refund(refund, fingerprint);
        self.unit("begin_refund", begun).await
    }

    async fn record_hold_ends(
        &self,
        ends: &[(TransferId, HoldEnd)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError> {
        let recorded = self.inner.record_hold_ends(ends, now);
        self.unit("record_hold_ends", recorded).await
    }

    async fn claim_expired_holds(
        &self,
        claim: &Claim,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        let claimed = self.inner.claim_expired_holds(claim, limit);
        self.unit_seen("claim_expired_holds", claimed, |faults, holds| {
            if !holds.is_empty() {
                faults.observed.writes += 1;
            }
        })
        .await
    }
}

#[async_trait]
impl<S: TransferReads> TransferReads for FaultyStore<S> {
    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        self.inner.transfer(id).await
    }

    async fn transfers_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        self.inner.transfers_page(after, limit).await
    }
}

#[async_trait]
impl<S: WalletStore> WalletStore for FaultyStore<S> {
    async fn open_wallet(&self, wallet: &Wallet) -> Result<(), StoreError> {
        self.unit("open_wallet", self.inner.open_wallet(wallet))
            .await
    }

    async fn reserve_batch(
        &self,
        batch: &[StampedReserve],
    ) -> Result<Vec<ReserveOutcome>, StoreError> {
        self.unit("reserve", self.inner.reserve_batch(batch)).await
    }

    async fn finalize(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<Refusal>, StoreError> {
        self.unit("finalize", self.inner.finalize(batch, now)).await
    }

    async fn release_holds(
        &self,
        batch: &[(TransferId, HoldRelease)],
        now: Timestamp,
    ) -> Result<Vec<Option<HoldState>>, StoreError> {
        self.unit("release_holds", self.inner.release_holds(batch, now))
            .await
    }
}

#[async_trait]
impl<S: WalletReads> WalletReads for FaultyStore<S> {
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError> {
        self.inner.wallet(id).await
    }

    async fn wallets_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<Wallet>, StoreError> {
        self.inner.wallets_page(after, limit).await
    }

    async fn reservations_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Reservation>, StoreError> {
        self.inner.reservations_page(after, limit).await
    }
}

/// A posting request as a skewed ledger sees it.
fn skewed(request: &PostingRequest, skew: Skew) -> PostingRequest {
    let mut seen = request.clone();
    match skew {
        Skew::Currency => {
            seen.currency = if request.currency == Currency::USD {
                Currency::EUR
            } else {
                Currency::USD
            };
        }
        Skew::SameWallet => seen.receiver_wallet_id = request.sender_wallet_id,
        Skew::Amount => {
            // One more decimal than any currency has: no `Amount::new`
            // accepts it, so it is built the way a reader from outside
            // would get it, by deserializing.
            let value = request.amount.value() + Decimal::new(1, 4);
            let text = serde_json::Value::String(value.to_string());
            seen.amount = serde_json::from_value::<Amount>(text).expect("a plain decimal");
        }
    }
    seen
}

#[async_trait]
impl<S: LedgerStore> LedgerStore for FaultyStore<S> {
    async fn post(
        &self,
        batch: &[(Inbound<PostingRequest>, EventStamp)],
    ) -> Result<usize, StoreError> {
        let what = format!("{}.post", self.port.name());
        point(&self.faults, "before", &what).await;
        let (fault, batch) = {
            let mut faults = lock(&self.faults);
            faults.observed.writes += 1;
            let fault = faults.store_fault(self.port);
            let mut seen = batch.to_vec();
            if matches!(fault, None | Some(StoreFault::AckLost)) {
                for (event, _) in &mut seen {
                    if let Some(skew) = faults.skews.remove(&event.transfer_id()) {
                        event.body = skewed(&event.body, skew);
                        faults.skewed.insert(event.transfer_id(), skew.reason());
                        let detail = format!("{skew:?} for {}", event.transfer_id());
                        faults.record_with(FaultKind::LedgerSkew, detail);
                    }
                }
            }
            (fault, seen)
        };
        if let Some(refused) = self.refused(fault, &what) {
            return Err(refused);
        }
        let result = self.inner.post(&batch).await;
        if let Ok(decided) = &result {
            let skipped = batch.len().saturating_sub(*decided) as u64;
            let mut faults = lock(&self.faults);
            faults.observed.ledger_skipped += skipped;
            faults.observed.ledger_decided += *decided as u64;
        }
        point(&self.faults, "after", &what).await;
        if fault == Some(StoreFault::AckLost) && result.is_ok() {
            lock(&self.faults).record_with(FaultKind::StoreAckLost, what.clone());
            return Err(StoreError::Unavailable(format!(
                "injected: {what} committed, answer lost"
            )));
        }
        result
    }
}

#[async_trait]
impl<S: LedgerReads> LedgerReads for FaultyStore<S> {
    async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.inner.entries(account, before, limit).await
    }

    async fn postings_page(
        &self,
        after: Option<EntryCursor>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.inner.postings_page(after, limit).await
    }

    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError> {
        self.inner.outcome(transfer).await
    }

    async fn outcomes_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<(TransferId, LedgerOutcome)>, StoreError> {
        self.inner.outcomes_page(after, limit).await
    }

    async fn balances_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        self.inner.balances_page(after, limit).await
    }
}

/// A publisher whose publishes fail part-way or lose their answer when the
/// simulator arms it.
#[derive(Clone)]
pub(crate) struct FaultyPublisher<P> {
    inner: P,
    faults: SharedFaults,
}

impl<P> FaultyPublisher<P> {
    pub fn new(inner: P, faults: SharedFaults) -> Self {
        FaultyPublisher { inner, faults }
    }
}

#[async_trait]
impl<P: Publisher> Publisher for FaultyPublisher<P> {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        point(&self.faults, "before", "publisher.publish").await;
        let fault = lock(&self.faults).publish_fault(messages.len());
        let sent = fault.unwrap_or(messages.len());
        if sent > 0 {
            self.inner.publish(&messages[..sent]).await?;
        }
        if let Some(n) = fault {
            return Err(BusError(format!(
                "injected: {n} of {} messages published, then the broker failed",
                messages.len()
            )));
        }
        point(&self.faults, "after", "publisher.publish").await;
        Ok(())
    }
}

/// A subscription whose polls may deliver a batch twice and whose commits
/// may fail or lose their answer, and whose batches the simulator sizes.
pub(crate) struct FaultySubscription<S> {
    inner: S,
    faults: SharedFaults,
    /// A batch the next poll delivers again.
    again: Vec<Delivery>,
}

impl<S> FaultySubscription<S> {
    pub fn new(inner: S, faults: SharedFaults) -> Self {
        FaultySubscription {
            inner,
            faults,
            again: Vec::new(),
        }
    }
}

#[async_trait]
impl<S: Subscription> Subscription for FaultySubscription<S> {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BusError> {
        point(&self.faults, "before", "subscription.poll").await;
        if !self.again.is_empty() {
            let again = std::mem::take(&mut self.again);
            point(&self.faults, "after", "subscription.poll").await;
            return Ok(again);
        }
        let max = lock(&self.faults).poll_limit.map_or(max, |l| l.min(max));
        let fault = lock(&self.faults).poll_fault();
        if fault == Some(SubscriptionFault::PollFails) {
            lock(&self.faults).record(FaultKind::PollFailure);
            return Err(BusError("injected: poll failed".into()));
        }
        let mut deliveries = self.inner.poll(max, wait).await?;
        if !deliveries.is_empty() {
            match fault {
                Some(SubscriptionFault::Redeliver) => {
                    self.again = deliveries.clone();
                    let detail = format!("{} messages, again at the next poll", deliveries.len());
                    lock(&self.faults).record_with(FaultKind::DuplicateDelivery, detail);
                }
                Some(SubscriptionFault::Doubled) => {
                    let detail = format!("{} messages, each twice", deliveries.len());
                    deliveries.extend(deliveries.clone());
                    lock(&self.faults).record_with(FaultKind::DuplicateDelivery, detail);
                }
                _ => {}
            }
        }
        point(&self.faults, "after", "subscription.poll").await;
        Ok(deliveries)
    }

    async fn commit(&mut self, deliveries: &[Delivery]) -> Result<(), BusError> {
        point(&self.faults, "before", "subscription.commit").await;
        let fault = lock(&self.faults).commit_fault();
        if fault == Some(SubscriptionFault::CommitFails) {
            lock(&self.faults).record(FaultKind::CommitFailure);
            return Err(BusError("injected: offset commit failed".into()));
        }
        self.inner.commit(deliveries).await?;
        point(&self.faults, "after", "subscription.commit").await;
        if fault == Some(SubscriptionFault::CommitLost) {
            lock(&self.faults).record(FaultKind::CommitLost);
            return Err(BusError("injected: offsets stored, answer lost".into()));
        }
        Ok(())
    }

    async fn rewind(&mut self) -> Result<(), BusError> {
        point(&self.faults, "before", "subscription.rewind").await;
        self.again.clear();
        if lock(&self.faults).rewind_fails() {
            // Its position stays past the batch that was not handled.
            lock(&self.faults).record(FaultKind::RewindFailure);
            return Err(BusError("injected: rewind failed".into()));
        }
        self.inner.rewind().await
    }

    async fn rejoin(&mut self) -> Result<(), BusError> {
        point(&self.faults, "before", "subscription.rejoin").await;
        self.again.clear();
        self.inner.rejoin().await
    }

    async fn backlog(&mut self) -> Result<Backlog, BusError> {
        self.inner.backlog().await
    }
}
