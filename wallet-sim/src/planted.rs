//! Deliberately broken components, to prove the simulator catches the bugs
//! it exists for. Only [`crate::SimConfig::planted_bug`] turns them on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use wallet_core::event::{EventStamp, Inbound};
use wallet_core::ids::{EventId, TransferId, WalletId};
use wallet_core::ledger::{AccountBalance, Entry, Posting, PostingRequest};
use wallet_core::memory::MemoryLedgerStore;
use wallet_core::outcome::LedgerOutcome;
use wallet_core::ports::{
    Claim, EntryCursor, LedgerReads, LedgerStore, Outbox, OutboxRecord, StoreError,
};

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

/// A ledger store the simulator runs and audits through its ports.
pub(crate) trait SimLedger: LedgerStore + LedgerReads + Outbox + Clone + Default {}

impl SimLedger for MemoryLedgerStore {}

/// The in-memory ledger with the dedupe bug of [`PlantedBug::DoublePosting`]:
/// the duplicate postings land in `extra`, which its read port shows as part
/// of the ledger table.
#[derive(Debug, Clone, Default)]
pub(crate) struct DoublePostingLedger {
    inner: MemoryLedgerStore,
    seen: Arc<Mutex<HashSet<EventId>>>,
    extra: Arc<Mutex<Vec<Entry>>>,
}

impl SimLedger for DoublePostingLedger {}

#[async_trait]
impl Outbox for DoublePostingLedger {
    async fn claim(&self, claim: &Claim, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.inner.claim(claim, limit).await
    }
    async fn acknowledge(&self, seqs: &[u64]) -> Result<(), StoreError> {
        self.inner.acknowledge(seqs).await
    }
}

#[async_trait]
impl LedgerStore for DoublePostingLedger {
    async fn post(
        &self,
        batch: &[(Inbound<PostingRequest>, EventStamp)],
    ) -> Result<usize, StoreError> {
        for (event, stamp) in batch {
            let redelivered = !lock(&self.seen).insert(event.event_id());
            let posted = self.inner.outcome(event.transfer_id()).await?;
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
        self.inner.post(batch).await
    }
}

#[async_trait]
impl LedgerReads for DoublePostingLedger {
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
        // The duplicates are numbered after every real entry, as a table's
        // sequence would number them, and paged with the rest.
        let real = self.inner.postings_page(None, usize::MAX).await?;
        let first_extra = real.iter().map(|e| e.seq).max().unwrap_or(0) + 1;
        let extra: Vec<Entry> = lock(&self.extra)
            .iter()
            .enumerate()
            .map(|(i, e)| Entry {
                seq: first_extra + i as u64,
                ..e.clone()
            })
            .collect();
        let mut all: Vec<Entry> = real.into_iter().chain(extra).collect();
        all.sort_by_key(|e| (e.transfer_id, e.seq));
        Ok(all
            .into_iter()
            .filter(|e| after.is_none_or(|c| (e.transfer_id, e.seq) > (c.transfer_id, c.seq)))
            .take(limit)
            .collect())
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
