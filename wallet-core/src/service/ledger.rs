//! The ledger service: the source of truth.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use crate::event::{Envelope, EventStamp};
use crate::ids::{IdGenerator, WalletId};
use crate::ledger::{BalanceAsOf, Entry};
use crate::ports::{LedgerReads, LedgerStore, StoreError};
use crate::runtime::{EventHandler, HandleError, Handled};
use crate::time::{Clock, Timestamp};

/// Most entries one page returns.
pub const MAX_PAGE: usize = 500;

/// Posts reserved transfers and answers for the ledger.
pub struct LedgerService<S> {
    store: S,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    outbox_written: Arc<Notify>,
}

impl<S: LedgerStore + LedgerReads> LedgerService<S> {
    /// Wires the service to its ports. `outbox_written` is notified after
    /// each write to the outbox, to wake the relay.
    pub fn new(
        store: S,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        outbox_written: Arc<Notify>,
    ) -> Self {
        LedgerService {
            store,
            clock,
            ids,
            outbox_written,
        }
    }

    /// The store, for the relay and audits.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// An account's entries, newest first; `limit` is capped at [`MAX_PAGE`].
    pub async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.store
            .entries(account, before, limit.min(MAX_PAGE))
            .await
    }

    /// An account's balance from its entries posted at or before `as_of`
    /// (all of them when `None`); `None` for an account without entries.
    pub async fn balance_as_of(
        &self,
        account: WalletId,
        as_of: Option<Timestamp>,
    ) -> Result<Option<BalanceAsOf>, StoreError> {
        self.store.balance_as_of(account, as_of).await
    }
}

/// Step 5 of the saga: post reserved transfers, one posting per transfer.
#[async_trait]
impl<S: LedgerStore + LedgerReads> EventHandler for LedgerService<S> {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        let (inbound, handled) = Handled::accept(
            batch,
            Envelope::posting_request,
            "not a WalletReserved event",
        );
        let now = self.clock.now();
        let batch: Vec<_> = inbound
            .into_iter()
            .map(|event| {
                // The outcome continues the trace of the event it answers.
                let stamp = EventStamp {
                    event_id: self.ids.event_id(),
                    at: now,
                    trace: event.envelope.trace,
                };
                (event, stamp)
            })
            .collect();
        let decided = self.store.post(&batch).await?;
        if decided > 0 {
            self.outbox_written.notify_one();
        }
        // Every transfer of the batch has its decision now: made by this
        // unit, or before it for a repeat.
        for (event, _) in &batch {
            let e = &event.envelope;
            tracing::info!(transfer_id = %e.transfer_id, correlation_id = %e.correlation_id,
                event_id = %e.event_id, "saga: ledger decided");
        }
        tracing::debug!(events = batch.len(), decided, "ledger batch posted");
        Ok(handled)
    }
}
