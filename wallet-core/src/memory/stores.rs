//! In-memory stores of the three services. Each keeps its state behind one
//! mutex, so every operation is atomic exactly as a database transaction
//! would be; clones share the state, as connections share a database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::Timestamp;
use crate::event::Envelope;
use crate::idempotency::{Fingerprint, IdempotencyRecord};
use crate::ids::{EventId, IdempotencyKey, TransferId, WalletId};
use crate::ledger::{
    AccountBalance, Entry, LedgerOutcome, PostingDecision, PostingRequest, decide_posting,
};
use crate::money::{Balance, Currency};
use crate::ports::{
    Begin, EventStamp, Inbound, LedgerStore, Outbox, OutboxRecord, Refusal, ReserveAttempt,
    StoreError, TransferStore, WalletStore,
};
use crate::transfer::{Transfer, TransferCommand, TransferStatus};
use crate::wallet::{
    Reservation, ReserveDecision, ReserveOutcome, ReserveRequest, Wallet, decide_finalize,
    decide_reserve,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock means a broken invariant; the state is
    // not trusted after it.
    m.lock()
        .expect("store state poisoned by a failed invariant")
}

/// An outbox kept in memory.
#[derive(Debug, Default)]
struct MemOutbox {
    unsent: BTreeMap<u64, Envelope>,
    next_seq: u64,
}

impl MemOutbox {
    fn push(&mut self, envelope: Envelope) {
        self.next_seq += 1;
        self.unsent.insert(self.next_seq, envelope);
    }

    fn unsent(&self, limit: usize) -> Vec<OutboxRecord> {
        self.unsent
            .iter()
            .take(limit)
            .map(|(seq, envelope)| OutboxRecord {
                seq: *seq,
                envelope: envelope.clone(),
            })
            .collect()
    }

    fn mark_sent(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.unsent.remove(seq);
        }
    }
}

macro_rules! mem_outbox {
    ($store:ty) => {
        #[async_trait]
        impl Outbox for $store {
            async fn unsent(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
                Ok(lock(&self.state).outbox.unsent(limit))
            }
            async fn mark_sent(&self, seqs: &[u64]) -> Result<(), StoreError> {
                lock(&self.state).outbox.mark_sent(seqs);
                Ok(())
            }
        }
    };
}

#[derive(Debug, Default)]
struct TransferState {
    transfers: HashMap<TransferId, Transfer>,
    keys: HashMap<IdempotencyKey, IdempotencyRecord>,
    inbox: HashSet<EventId>,
}

/// The transaction service's store, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryTransferStore {
    state: Arc<Mutex<TransferState>>,
}

impl MemoryTransferStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every transfer, for audits.
    pub fn all(&self) -> Vec<Transfer> {
        lock(&self.state).transfers.values().cloned().collect()
    }
}

#[async_trait]
impl TransferStore for MemoryTransferStore {
    async fn begin(
        &self,
        transfer: &Transfer,
        fingerprint: &Fingerprint,
    ) -> Result<Begin, StoreError> {
        let mut s = lock(&self.state);
        if let Some(record) = s.keys.get(&transfer.idempotency_key) {
            let current = Box::new(s.transfers[&record.transfer_id].clone());
            let record = Box::new(record.clone());
            return Ok(Begin::Existing { record, current });
        }
        let record = IdempotencyRecord {
            key: transfer.idempotency_key.clone(),
            fingerprint: fingerprint.clone(),
            transfer_id: transfer.id,
            created_at: transfer.created_at,
            response: None,
        };
        s.keys.insert(record.key.clone(), record);
        s.transfers.insert(transfer.id, transfer.clone());
        Ok(Begin::Created)
    }

    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        Ok(lock(&self.state).transfers.get(&id).cloned())
    }

    async fn record_reserve(
        &self,
        id: TransferId,
        attempt: ReserveAttempt,
        now: Timestamp,
    ) -> Result<Transfer, StoreError> {
        let mut s = lock(&self.state);
        let transfer = s
            .transfers
            .get_mut(&id)
            .ok_or_else(|| StoreError::Integrity(format!("no transfer {id}")))?;
        if let ReserveAttempt::Definite(outcome) = attempt {
            transfer.handle(&TransferCommand::RecordReserve(outcome), now);
        }
        let snapshot = transfer.clone();
        let record = s
            .keys
            .get_mut(&snapshot.idempotency_key)
            .ok_or_else(|| StoreError::Integrity(format!("no key record for {id}")))?;
        record.response.get_or_insert_with(|| snapshot.clone());
        Ok(snapshot)
    }

    async fn apply_ledger_outcomes(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<TransferId>, StoreError> {
        let mut s = lock(&self.state);
        let mut changed = Vec::new();
        for event in batch {
            if !s.inbox.insert(event.event_id) {
                continue;
            }
            let Some(transfer) = s.transfers.get_mut(&event.transfer_id) else {
                tracing::error!(transfer_id = %event.transfer_id, "ledger outcome for unknown transfer");
                continue;
            };
            if transfer.handle(&TransferCommand::RecordLedger(event.body), now) {
                changed.push(transfer.id);
            }
        }
        Ok(changed)
    }

    async fn pending_reserves(
        &self,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        let s = lock(&self.state);
        let mut pending: Vec<Transfer> = s
            .transfers
            .values()
            .filter(|t| t.status == TransferStatus::Initiated && t.created_at < created_before)
            .cloned()
            .collect();
        pending.sort_by_key(|t| (t.created_at, t.id));
        pending.truncate(limit);
        Ok(pending)
    }
}

#[derive(Debug, Default)]
struct WalletState {
    wallets: BTreeMap<WalletId, Wallet>,
    reservations: HashMap<TransferId, Reservation>,
    inbox: HashSet<EventId>,
    outbox: MemOutbox,
}

/// The wallet service's store, in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryWalletStore {
    state: Arc<Mutex<WalletState>>,
}

impl MemoryWalletStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every wallet, system accounts included, for audits.
    pub fn all(&self) -> Vec<Wallet> {
        lock(&self.state).wallets.values().cloned().collect()
    }

    /// Every reservation, for audits.
    pub fn reservations(&self) -> Vec<Reservation> {
        lock(&self.state).reservations.values().cloned().collect()
    }
}

mem_outbox!(MemoryWalletStore);

#[async_trait]
impl WalletStore for MemoryWalletStore {
    async fn open_wallet(&self, wallet: &Wallet) -> Result<(), StoreError> {
        let mut s = lock(&self.state);
        if s.wallets.contains_key(&wallet.id) {
            return Err(StoreError::Integrity(format!(
                "wallet {} exists",
                wallet.id
            )));
        }
        s.wallets.insert(wallet.id, wallet.clone());
        Ok(())
    }

    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError> {
        Ok(lock(&self.state).wallets.get(&id).cloned())
    }

    async fn reserve(
        &self,
        request: &ReserveRequest,
        stamp: EventStamp,
    ) -> Result<ReserveOutcome, StoreError> {
        let mut s = lock(&self.state);
        let decision = decide_reserve(
            request,
            s.reservations.get(&request.transfer_id),
            s.wallets.get(&request.sender_wallet_id),
            s.wallets.get(&request.receiver_wallet_id),
            stamp.at,
        );
        match decision {
            ReserveDecision::Replay(outcome) => Ok(outcome),
            ReserveDecision::Reject(reservation) => {
                let outcome = reservation.outcome();
                s.reservations.insert(request.transfer_id, reservation);
                Ok(outcome)
            }
            ReserveDecision::Reserve {
                reservation,
                wallets,
            } => {
                for wallet in wallets {
                    s.wallets.insert(wallet.id, wallet);
                }
                s.outbox
                    .push(Envelope::wallet_reserved(&reservation, stamp));
                s.reservations.insert(request.transfer_id, reservation);
                Ok(ReserveOutcome::Reserved)
            }
        }
    }

    async fn finalize(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<Refusal>, StoreError> {
        let mut s = lock(&self.state);
        let mut refused = Vec::new();
        for event in batch {
            if !s.inbox.insert(event.event_id) {
                continue;
            }
            let finalization = match decide_finalize(
                s.reservations.get(&event.transfer_id),
                event.transfer_id,
                event.body,
            ) {
                Ok(Some(finalization)) => finalization,
                Ok(None) => continue,
                Err(error) => {
                    refused.push(Refusal::finalize(event.event_id, &error));
                    continue;
                }
            };
            for (id, change) in finalization.changes {
                // Reserve stored both wallets of the reservation and wallets are
                // never deleted, so a missing one is a broken invariant.
                let wallet = s
                    .wallets
                    .get_mut(&id)
                    .expect("wallets of a reservation exist");
                wallet.apply(change, now);
            }
            let reservation = s
                .reservations
                .get_mut(&event.transfer_id)
                .expect("decided on this reservation");
            reservation.state = finalization.state;
            reservation.updated_at = now;
        }
        Ok(refused)
    }
}

#[derive(Debug, Default)]
struct LedgerState {
    entries: Vec<Entry>,
    by_account: HashMap<WalletId, Vec<usize>>,
    accounts: HashMap<WalletId, (Currency, Balance)>,
    outcomes: HashMap<TransferId, LedgerOutcome>,
    inbox: HashSet<EventId>,
    outbox: MemOutbox,
}

impl LedgerState {
    fn append(&mut self, entry: Entry) {
        let account = self
            .accounts
            .entry(entry.account)
            .or_insert((entry.currency, Balance::zero(entry.currency)));
        account.1 = account.1 + entry.signed();
        let seq = self.entries.len() as u64 + 1;
        self.by_account
            .entry(entry.account)
            .or_default()
            .push(self.entries.len());
        self.entries.push(Entry { seq, ..entry });
    }
}

/// The ledger service's store, in memory. Entries are only ever appended.
#[derive(Debug, Clone, Default)]
pub struct MemoryLedgerStore {
    state: Arc<Mutex<LedgerState>>,
}

impl MemoryLedgerStore {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry, oldest first, for audits.
    pub fn all_entries(&self) -> Vec<Entry> {
        lock(&self.state).entries.clone()
    }

    /// Every outcome, for audits.
    pub fn outcomes(&self) -> HashMap<TransferId, LedgerOutcome> {
        lock(&self.state).outcomes.clone()
    }
}

mem_outbox!(MemoryLedgerStore);

#[async_trait]
impl LedgerStore for MemoryLedgerStore {
    async fn post(
        &self,
        batch: &[Inbound<PostingRequest>],
        stamps: &[EventStamp],
    ) -> Result<usize, StoreError> {
        assert_eq!(batch.len(), stamps.len(), "one stamp per event");
        let mut s = lock(&self.state);
        let mut decided = 0;
        for (event, stamp) in batch.iter().zip(stamps) {
            if !s.inbox.insert(event.event_id) {
                continue;
            }
            let request = &event.body;
            let currency_of = |id| s.accounts.get(&id).map(|a: &(Currency, Balance)| a.0);
            let decision = decide_posting(
                request,
                s.outcomes.get(&request.transfer_id).copied(),
                currency_of(request.sender_wallet_id),
                currency_of(request.receiver_wallet_id),
                stamp.at,
            );
            let outcome = match decision {
                PostingDecision::AlreadyDecided(_) => continue,
                PostingDecision::Post(posting) => {
                    for entry in posting.entries() {
                        s.append(entry);
                    }
                    LedgerOutcome::Succeeded
                }
                PostingDecision::Reject(reason) => LedgerOutcome::Failed(reason),
            };
            s.outcomes.insert(request.transfer_id, outcome);
            s.outbox
                .push(Envelope::ledger_decided(event, outcome, *stamp));
            decided += 1;
        }
        Ok(decided)
    }

    async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let s = lock(&self.state);
        let Some(indexes) = s.by_account.get(&account) else {
            return Ok(Vec::new());
        };
        Ok(indexes
            .iter()
            .rev()
            .map(|&i| &s.entries[i])
            .filter(|e| before.is_none_or(|b| e.seq < b))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn balances(&self) -> Result<Vec<AccountBalance>, StoreError> {
        let s = lock(&self.state);
        let mut balances: Vec<AccountBalance> = s
            .accounts
            .iter()
            .map(|(id, (currency, balance))| AccountBalance {
                account: *id,
                currency: *currency,
                balance: *balance,
            })
            .collect();
        balances.sort_by_key(|b| b.account);
        Ok(balances)
    }

    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError> {
        Ok(lock(&self.state).outcomes.get(&transfer).copied())
    }
}
