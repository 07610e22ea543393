//! Deliberately broken components, to prove the simulator catches the bugs
//! it exists for. Only [`crate::SimConfig::planted_bug`] turns them on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use wallet_core::event::{EventStamp, Inbound, Outgoing, StampedReserve};
use wallet_core::ids::{EventId, TransferId, WalletId};
use wallet_core::ledger::{AccountBalance, Entry, Posting, PostingRequest};
use wallet_core::memory::{
    MemoryBus, MemoryLedgerStore, MemorySubscription, MemoryTransferStore, MemoryWalletStore,
    groups,
};
use wallet_core::outcome::{LedgerOutcome, ReserveOutcome};
use wallet_core::ports::{
    Claim, EntryCursor, LedgerReads, LedgerStore, Message, Outbox, OutboxRecord, Publisher,
    Refusal, StoreError, WalletReads, WalletStore,
};
use wallet_core::runtime::{DeadLetter, dead_letter_topic};
use wallet_core::time::Timestamp;
use wallet_core::wallet::{HoldRelease, HoldState, Reservation, Wallet};

use crate::adapters::{Adapters, MemoryAdapters};
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
    /// The wallet store's refusals are dead-lettered as the old design did:
    /// published by the consumer after the store's unit committed, instead
    /// of written to the store's outbox in the unit. A crash or a failed
    /// publish between the two loses the dead letter (the redelivered event
    /// is then skipped by the inbox).
    DeadLetterOutsideUnit,
    /// The hold sweeper's gateway client takes every expiry as done
    /// without asking the wallet service, which decides a hold's end: the
    /// transaction service records holds EXPIRED whose funds stay held, or
    /// that a capture took first.
    ExpireWithoutWallet,
}

/// The in-memory adapters with the ledger of [`PlantedBug::DoublePosting`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DoublePostingAdapters;

impl Adapters for DoublePostingAdapters {
    type Transfers = MemoryTransferStore;
    type Wallets = MemoryWalletStore;
    type Ledger = DoublePostingLedger;
    type Bus = MemoryBus;
    type Subscription = MemorySubscription;

    fn transfer_store(&self) -> MemoryTransferStore {
        MemoryTransferStore::new()
    }

    fn wallet_store(&self) -> MemoryWalletStore {
        MemoryWalletStore::new()
    }

    fn ledger_store(&self) -> DoublePostingLedger {
        DoublePostingLedger::default()
    }

    fn bus(&self, partitions: u32) -> MemoryBus {
        MemoryAdapters.bus(partitions)
    }

    fn subscribe(&self, bus: &MemoryBus, group: &str, topic: &str) -> MemorySubscription {
        MemoryAdapters.subscribe(bus, group, topic)
    }
}

/// The in-memory ledger with the dedupe bug of [`PlantedBug::DoublePosting`]:
/// the duplicate postings land in `extra`, which its read port shows as part
/// of the ledger table.
#[derive(Debug, Clone, Default)]
pub(crate) struct DoublePostingLedger {
    inner: MemoryLedgerStore,
    seen: Arc<Mutex<HashSet<EventId>>>,
    extra: Arc<Mutex<Vec<Entry>>>,
}

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

/// The wallet store as the service and its relays see it: with
/// [`PlantedBug::DeadLetterOutsideUnit`] planted, its refusals leave through
/// `publisher` after the unit (and never through the outbox); otherwise it
/// passes everything through.
#[derive(Clone)]
pub(crate) struct OutsideUnit<S, P> {
    inner: S,
    publisher: P,
    planted: bool,
}

impl<S, P> OutsideUnit<S, P> {
    pub fn new(inner: S, publisher: P, planted: bool) -> Self {
        OutsideUnit {
            inner,
            publisher,
            planted,
        }
    }
}

#[async_trait]
impl<S: Outbox, P: Publisher + Clone> Outbox for OutsideUnit<S, P> {
    async fn claim(&self, claim: &Claim, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let records = self.inner.claim(claim, limit).await?;
        if !self.planted {
            return Ok(records);
        }
        // The old design wrote no dead letter to the outbox: drop them.
        let (letters, events): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|r| matches!(r.item, Outgoing::DeadLetter { .. }));
        if !letters.is_empty() {
            let seqs: Vec<u64> = letters.iter().map(|r| r.seq).collect();
            self.inner.acknowledge(&seqs).await?;
        }
        Ok(events)
    }

    async fn acknowledge(&self, seqs: &[u64]) -> Result<(), StoreError> {
        self.inner.acknowledge(seqs).await
    }
}

#[async_trait]
impl<S: WalletStore, P: Publisher + Clone> WalletStore for OutsideUnit<S, P> {
    async fn open_wallet(&self, wallet: &Wallet) -> Result<(), StoreError> {
        self.inner.open_wallet(wallet).await
    }

    async fn reserve_batch(
        &self,
        batch: &[StampedReserve],
    ) -> Result<Vec<ReserveOutcome>, StoreError> {
        self.inner.reserve_batch(batch).await
    }

    async fn finalize(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<Refusal>, StoreError> {
        let refused = self.inner.finalize(batch, now).await?;
        if !self.planted || refused.is_empty() {
            return Ok(refused);
        }
        let group = groups::WALLET;
        let letters: Vec<Message> = refused
            .iter()
            .filter_map(|r| {
                let event = batch.iter().find(|e| e.event_id() == r.event_id)?;
                Some((event, r))
            })
            .map(|(event, r)| Message {
                topic: dead_letter_topic(group),
                key: event.transfer_id().to_string().into_bytes(),
                payload: DeadLetter::refused(group, &event.envelope, &r.reason)
                    .encode()
                    .into(),
            })
            .collect();
        self.publisher
            .publish(&letters)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(refused)
    }

    async fn release_holds(
        &self,
        batch: &[(TransferId, HoldRelease)],
        now: Timestamp,
    ) -> Result<Vec<Option<HoldState>>, StoreError> {
        self.inner.release_holds(batch, now).await
    }
}

#[async_trait]
impl<S: WalletReads, P: Publisher + Clone> WalletReads for OutsideUnit<S, P> {
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
