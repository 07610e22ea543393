//! Deliberately broken components, to prove the simulator catches the bugs
//! it exists for. Only [`crate::SimConfig::planted_bug`] turns them on.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use wallet_core::ids::{EventId, TransferId, WalletId};
use wallet_core::ledger::{AccountBalance, Entry, LedgerOutcome, Posting, PostingRequest};
use wallet_core::memory::MemoryLedgerStore;
use wallet_core::ports::{EventStamp, Inbound, LedgerStore, Outbox, OutboxRecord, StoreError};

use crate::faults::lock;

/// A bug to plant in the simulated system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlantedBug {
    /// The ledger consumer skips its dedupe: a redelivered `WalletReserved`
    /// of a transfer it already posted is posted again.
    DoublePosting,
    /// The transaction service's gateway client takes a reserve timeout for
    /// a definite refusal and marks the transfer FAILED, though the
    /// reservation may have committed (the seed design's bug).
    FailOnTimeout,
}

/// A ledger store the simulator can audit.
pub(crate) trait SimLedger: LedgerStore + Clone + Default {
    /// Every entry, as the ledger table holds them.
    fn audit_entries(&self) -> Vec<Entry>;
    /// Every outcome.
    fn audit_outcomes(&self) -> HashMap<TransferId, LedgerOutcome>;
}

impl SimLedger for MemoryLedgerStore {
    fn audit_entries(&self) -> Vec<Entry> {
        self.all_entries()
    }
    fn audit_outcomes(&self) -> HashMap<TransferId, LedgerOutcome> {
        self.outcomes()
    }
}

/// The in-memory ledger with the dedupe bug of [`PlantedBug::DoublePosting`]:
/// the duplicate postings land in `extra`, which the audit reads as part of
/// the ledger table.
#[derive(Debug, Clone, Default)]
pub(crate) struct DoublePostingLedger {
    inner: MemoryLedgerStore,
    seen: Arc<Mutex<HashSet<EventId>>>,
    extra: Arc<Mutex<Vec<Entry>>>,
}

impl SimLedger for DoublePostingLedger {
    fn audit_entries(&self) -> Vec<Entry> {
        let mut entries = self.inner.all_entries();
        entries.extend(lock(&self.extra).iter().cloned());
        entries
    }
    fn audit_outcomes(&self) -> HashMap<TransferId, LedgerOutcome> {
        self.inner.outcomes()
    }
}

#[async_trait]
impl Outbox for DoublePostingLedger {
    async fn unsent(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.inner.unsent(limit).await
    }
    async fn mark_sent(&self, seqs: &[u64]) -> Result<(), StoreError> {
        self.inner.mark_sent(seqs).await
    }
}

#[async_trait]
impl LedgerStore for DoublePostingLedger {
    async fn post(
        &self,
        batch: &[Inbound<PostingRequest>],
        stamps: &[EventStamp],
    ) -> Result<usize, StoreError> {
        for (event, stamp) in batch.iter().zip(stamps) {
            let redelivered = !lock(&self.seen).insert(event.event_id);
            let posted = self.inner.outcome(event.transfer_id).await?;
            if redelivered && posted == Some(LedgerOutcome::Succeeded) {
                let r = &event.body;
                let posting = Posting {
                    transfer_id: r.transfer_id,
                    debit: r.sender_wallet_id,
                    credit: r.receiver_wallet_id,
                    amount: r.amount,
                    currency: r.currency,
                    posted_at: stamp.at,
                };
                lock(&self.extra).extend(posting.entries());
            }
        }
        self.inner.post(batch, stamps).await
    }

    async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.inner.entries(account, before, limit).await
    }

    async fn balances(&self) -> Result<Vec<AccountBalance>, StoreError> {
        self.inner.balances().await
    }

    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError> {
        self.inner.outcome(transfer).await
    }
}
