//! The wallet service: balances, reservations and their finalization.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::event::{Envelope, EventStamp, StampedReserve, groups};
use crate::ids::{IdGenerator, TransferId, WalletId};
use crate::metrics::{self, DeadLetteredBy};
use crate::money::Currency;
use crate::outcome::ReserveOutcome;
use crate::ports::{GatewayError, StoreError, WalletGateway, WalletReads, WalletStore};
use crate::runtime::{EventHandler, HandleError, Handled};
use crate::time::Clock;
use crate::trace::TraceParent;
use crate::wallet::{HoldRelease, HoldState, ReserveRequest, Wallet};

/// Opens wallets, reserves funds and finalizes reservations.
pub struct WalletService<S> {
    store: S,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    outbox_written: Arc<Notify>,
}

impl<S: WalletStore + WalletReads> WalletService<S> {
    /// Wires the service to its ports. `outbox_written` is notified after
    /// each write to the outbox, to wake the relay.
    pub fn new(
        store: S,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        outbox_written: Arc<Notify>,
    ) -> Self {
        WalletService {
            store,
            clock,
            ids,
            outbox_written,
        }
    }

    /// The store, for the relay and read-only use.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Opens an empty wallet.
    pub async fn open(&self, currency: Currency) -> Result<Wallet, StoreError> {
        let wallet = Wallet::open(self.ids.wallet_id(), currency, self.clock.now());
        self.store.open_wallet(&wallet).await?;
        tracing::info!(wallet_id = %wallet.id, %currency, "wallet opened");
        Ok(wallet)
    }

    /// A wallet by id.
    pub async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError> {
        self.store.wallet(id).await
    }

    /// Step 3 of the saga: reserve the sender's funds, idempotent by transfer id.
    pub async fn reserve(&self, request: &ReserveRequest) -> Result<ReserveOutcome, StoreError> {
        let mut outcomes = self.reserve_batch(std::slice::from_ref(request)).await?;
        outcomes.pop().ok_or_else(|| {
            StoreError::Integrity(format!(
                "no answer to the reserve of transfer {}",
                request.transfer_id
            ))
        })
    }

    /// Step 3 for a batch, in one store unit: each request decided in
    /// order, against the balances the earlier ones left. One outcome per
    /// request, in order.
    pub async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, StoreError> {
        self.reserve_batch_traced(requests, None).await
    }

    /// [`WalletService::reserve_batch`] for a call made in trace context
    /// `trace`: each `WalletReserved` it writes continues that trace.
    pub async fn reserve_batch_traced(
        &self,
        requests: &[ReserveRequest],
        trace: Option<TraceParent>,
    ) -> Result<Vec<ReserveOutcome>, StoreError> {
        let batch: Vec<StampedReserve> = requests
            .iter()
            .map(|request| StampedReserve {
                request: request.clone(),
                stamp: EventStamp {
                    event_id: self.ids.event_id(),
                    at: self.clock.now(),
                    trace,
                },
            })
            .collect();
        let outcomes = self.store.reserve_batch(&batch).await?;
        if outcomes.contains(&ReserveOutcome::Reserved) {
            self.outbox_written.notify_one();
        }
        for (request, outcome) in requests.iter().zip(&outcomes) {
            let (sender, receiver) = (request.sender_wallet_id, request.receiver_wallet_id);
            if !request.kind.allows(sender, receiver) {
                tracing::warn!(transfer_id = %request.transfer_id,
                    correlation_id = %request.correlation_id, kind = ?request.kind,
                    %sender, %receiver, ?outcome,
                    "saga: reserve refused: a system account only sends deposits and \
                     receives withdrawals");
                continue;
            }
            tracing::info!(transfer_id = %request.transfer_id,
                correlation_id = %request.correlation_id, ?outcome, "saga: reserve decided");
        }
        Ok(outcomes)
    }

    /// Voids or expires holds, in one store unit: each decided under its
    /// lock ([`crate::wallet::decide_release`]), so a capture and a
    /// release of one hold never both take its funds. One answer per
    /// request, in order: where the hold stands after it, `None` for an id
    /// that is no hold.
    pub async fn release_holds(
        &self,
        requests: &[(TransferId, HoldRelease)],
    ) -> Result<Vec<Option<HoldState>>, StoreError> {
        let answers = self.store.release_holds(requests, self.clock.now()).await?;
        for ((id, release), answer) in requests.iter().zip(&answers) {
            tracing::info!(transfer_id = %id, ?release, ?answer, "saga: hold release decided");
        }
        Ok(answers)
    }
}

/// Step 7 of the saga: ledger outcomes capture or release reservations.
#[async_trait]
impl<S: WalletStore + WalletReads> EventHandler for WalletService<S> {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        let (inbound, handled) =
            Handled::accept(batch, |e| e.event.ledger_outcome(), "not a ledger outcome");
        let refused = self.store.finalize(&inbound, self.clock.now()).await?;
        for event in &inbound {
            let e = &event.envelope;
            match refused.iter().find(|r| r.event_id == e.event_id) {
                None => tracing::info!(transfer_id = %e.transfer_id,
                    correlation_id = %e.correlation_id, event_id = %e.event_id,
                    outcome = ?event.body, "saga: reservation finalized"),
                Some(r) => tracing::error!(transfer_id = %e.transfer_id,
                    correlation_id = %e.correlation_id, event_id = %e.event_id,
                    reason = %r.reason, "saga: ledger outcome refused, dead-lettered through the outbox"),
            }
        }
        metrics::dead_letters(groups::WALLET, DeadLetteredBy::Store, refused.len());
        if !refused.is_empty() {
            self.outbox_written.notify_one();
        }
        Ok(handled)
    }
}

/// The wallet gateway of a process that runs the wallet service itself: a
/// direct call, used by the embedded mode.
#[async_trait]
impl<S: WalletStore + WalletReads> WalletGateway for Arc<WalletService<S>> {
    async fn reserve_batch(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveOutcome>, GatewayError> {
        WalletService::reserve_batch(self, requests)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))
    }

    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, GatewayError> {
        WalletService::wallet(self, id)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))
    }

    async fn release_holds(
        &self,
        requests: &[(TransferId, HoldRelease)],
    ) -> Result<Vec<Option<HoldState>>, GatewayError> {
        WalletService::release_holds(self, requests)
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))
    }
}
