//! In-memory stores of the three services. Each keeps its state behind one
//! mutex, so every operation is atomic exactly as a database transaction
//! would be; clones share the state, as connections share a database.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::event::{
    Envelope, EventStamp, Inbound, Outgoing, StampedReserve, decide_stamped_reserves,
};
use crate::history::{HistoryPage, HistoryQuery};
use crate::idempotency::{Fingerprint, IdempotencyRecord};
use crate::ids::{EventId, IdempotencyKey, TransferId, WalletId, WorkerId};
use crate::ledger::{
    AccountBalance, BalanceAsOf, Entry, PostingDecision, PostingRequest, decide_posting,
};
use crate::money::{Balance, Currency};
use crate::outcome::{LedgerOutcome, ReserveOutcome};
use crate::ports::{
    Applied, Begin, Claim, EntryCursor, LedgerReads, LedgerStore, Outbox, OutboxRecord, Refusal,
    ReserveAttempt, StoreError, TransferReads, TransferStore, WalletReads, WalletStore,
};
use crate::tags::Reference;
use crate::time::Timestamp;
use crate::transfer::{
    HoldEnd, RefundRejection, Transfer, TransferCommand, TransferStatus, decide_refund,
};
use crate::wallet::{HoldRelease, HoldState, Reservation, Wallet, decide_finalize, decide_release};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock means a broken invariant; the state is
    // not trusted after it.
    m.lock()
        .expect("store state poisoned by a failed invariant")
}

/// Who holds a record, and until when.
type Lease = (WorkerId, Timestamp);

/// True when `lease` belongs to a worker other than `claim`'s and has not
/// ended.
fn held_by_other(lease: Option<Lease>, claim: &Claim) -> bool {
    lease.is_some_and(|(worker, until)| worker != claim.worker && until > claim.now)
}

/// The first `limit` of `entries` after `after`, by key.
fn page<K: Ord + Copy, V: Clone>(map: &BTreeMap<K, V>, after: Option<K>, limit: usize) -> Vec<V> {
    use std::ops::Bound::{Excluded, Unbounded};
    let start = after.map_or(Unbounded, Excluded);
    map.range((start, Unbounded))
        .take(limit)
        .map(|(_, v)| v.clone())
        .collect()
}

#[derive(Debug)]
struct MemRecord {
    item: Outgoing,
    lease: Option<Lease>,
}

/// An outbox kept in memory.
#[derive(Debug, Default)]
struct MemOutbox {
    records: BTreeMap<u64, MemRecord>,
    next_seq: u64,
}

impl MemOutbox {
    fn push(&mut self, item: Outgoing) {
        self.next_seq += 1;
        self.records
            .insert(self.next_seq, MemRecord { item, lease: None });
    }

    fn dead_letter(&mut self, event: &Envelope, reason: String) -> Refusal {
        let refusal = Refusal {
            event_id: event.event_id,
            reason: reason.clone(),
        };
        self.push(Outgoing::DeadLetter {
            event: event.clone(),
            reason,
        });
        refusal
    }

    fn claim(&mut self, claim: &Claim, limit: usize) -> Vec<OutboxRecord> {
        // Transfers with an older record another worker holds: their later
        // records wait, so each transfer's records leave in order.
        let mut blocked = HashSet::new();
        let mut claimed = Vec::new();
        for (seq, record) in &mut self.records {
            if claimed.len() == limit {
                break;
            }
            let transfer = record.item.transfer_id();
            if held_by_other(record.lease, claim) {
                blocked.insert(transfer);
                continue;
            }
            if blocked.contains(&transfer) {
                continue;
            }
            record.lease = Some((claim.worker, claim.until));
            claimed.push(OutboxRecord {
                seq: *seq,
                item: record.item.clone(),
            });
        }
        claimed
    }

    fn acknowledge(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.records.remove(seq);
        }
    }
}

macro_rules! mem_outbox {
    ($store:ty) => {
        #[async_trait]
        impl Outbox for $store {
            async fn claim(
                &self,
                claim: &Claim,
                limit: usize,
            ) -> Result<Vec<OutboxRecord>, StoreError> {
                Ok(lock(&self.state).outbox.claim(claim, limit))
            }
            async fn acknowledge(&self, seqs: &[u64]) -> Result<(), StoreError> {
                lock(&self.state).outbox.acknowledge(seqs);
                Ok(())
            }
        }
    };
}

#[derive(Debug, Default)]
struct TransferState {
    transfers: BTreeMap<TransferId, Transfer>,
    keys: HashMap<IdempotencyKey, IdempotencyRecord>,
    /// The transfers' references, by the wallet each is unique in.
    references: HashMap<(WalletId, Reference), TransferId>,
    /// INITIATED transfers, oldest first, for the retrier.
    initiated: BTreeSet<(Timestamp, TransferId)>,
    /// The retrier's claims on INITIATED transfers.
    leases: HashMap<TransferId, Lease>,
    /// HELD holds, soonest expiry first, for the sweeper.
    held: BTreeSet<(Timestamp, TransferId)>,
    /// The sweeper's claims on HELD holds.
    sweeps: HashMap<TransferId, Lease>,
    inbox: HashSet<EventId>,
    outbox: MemOutbox,
}

impl TransferState {
    /// The key's record and its transfer as [`Begin::Existing`], if the key
    /// was used.
    fn existing(&self, key: &IdempotencyKey) -> Option<Begin> {
        let record = self.keys.get(key)?;
        Some(Begin::Existing {
            current: Box::new(self.transfers[&record.transfer_id].clone()),
            record: Box::new(record.clone()),
        })
    }

    /// Stores `transfer` INITIATED with its key, unless the key was used.
    fn begin(&mut self, transfer: &Transfer, fingerprint: &Fingerprint) -> Begin {
        if let Some(existing) = self.existing(&transfer.idempotency_key) {
            return existing;
        }
        if let Some(reference) = &transfer.tags.reference {
            let scope = (transfer.reference_wallet(), reference.clone());
            if let Some(taken) = self.references.get(&scope) {
                return Begin::ReferenceTaken(*taken);
            }
            self.references.insert(scope, transfer.id);
        }
        let record = IdempotencyRecord {
            key: transfer.idempotency_key.clone(),
            fingerprint: fingerprint.clone(),
            transfer_id: transfer.id,
            created_at: transfer.created_at,
            response: None,
        };
        self.keys.insert(record.key.clone(), record);
        self.transfers.insert(transfer.id, transfer.clone());
        self.initiated.insert((transfer.created_at, transfer.id));
        Begin::Created
    }

    /// Moves a transfer, and the hold it captures when the command tells
    /// the hold's end, keeping the INITIATED and HELD indexes true. Returns
    /// the transfer as it then is and whether it changed.
    fn handle(
        &mut self,
        id: TransferId,
        command: &TransferCommand,
        now: Timestamp,
    ) -> Option<(Transfer, bool)> {
        let transfer = self.transfers.get_mut(&id)?;
        let changed = transfer.handle(command, now);
        let transfer = transfer.clone();
        if transfer.status != TransferStatus::Initiated {
            self.initiated.remove(&(transfer.created_at, id));
            self.leases.remove(&id);
        }
        if let Some(expires_at) = transfer.expires_at {
            if transfer.status == TransferStatus::Held {
                self.held.insert((expires_at, id));
            } else {
                self.held.remove(&(expires_at, id));
                self.sweeps.remove(&id);
            }
        }
        if changed && let Some((hold, end)) = command.hold_end(&transfer) {
            self.handle(hold, &TransferCommand::EndHold(end), now);
        }
        Some((transfer, changed))
    }
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
}

mem_outbox!(MemoryTransferStore);

#[async_trait]
impl TransferStore for MemoryTransferStore {
    async fn begin_batch(
        &self,
        batch: &[(Transfer, Fingerprint)],
    ) -> Result<Vec<Begin>, StoreError> {
        let mut s = lock(&self.state);
        Ok(batch
            .iter()
            .map(|(transfer, fingerprint)| s.begin(transfer, fingerprint))
            .collect())
    }

    async fn begin_refund(
        &self,
        refund: &Transfer,
        fingerprint: &Fingerprint,
    ) -> Result<Result<Begin, RefundRejection>, StoreError> {
        let mut s = lock(&self.state);
        if let Some(existing) = s.existing(&refund.idempotency_key) {
            return Ok(Ok(existing));
        }
        let original = refund
            .refund_of
            .and_then(|id| s.transfers.get(&id))
            .ok_or_else(|| StoreError::Integrity(format!("refund {} of no transfer", refund.id)))?;
        let refunds: Vec<Transfer> = s
            .transfers
            .values()
            .filter(|t| t.refund_of == Some(original.id))
            .cloned()
            .collect();
        if let Err(rejection) = decide_refund(original, &refunds, refund.amount) {
            return Ok(Err(rejection));
        }
        Ok(Ok(s.begin(refund, fingerprint)))
    }

    async fn record_reserves(
        &self,
        attempts: &[(TransferId, ReserveAttempt)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError> {
        let mut s = lock(&self.state);
        // Checked first, so a unit that fails writes nothing.
        for (id, _) in attempts {
            let key = s.transfers.get(id).map(|t| &t.idempotency_key);
            if !key.is_some_and(|k| s.keys.contains_key(k)) {
                return Err(StoreError::Integrity(format!(
                    "no transfer {id} with a key record"
                )));
            }
        }
        let mut recorded = Vec::with_capacity(attempts.len());
        for &(id, attempt) in attempts {
            let snapshot = match attempt {
                ReserveAttempt::Definite(outcome) => s
                    .handle(id, &TransferCommand::RecordReserve(outcome), now)
                    .map(|(t, _)| t),
                ReserveAttempt::Ambiguous => s.transfers.get(&id).cloned(),
            }
            .ok_or_else(|| StoreError::Integrity(format!("no transfer {id}")))?;
            let record = s
                .keys
                .get_mut(&snapshot.idempotency_key)
                .ok_or_else(|| StoreError::Integrity(format!("no key record for {id}")))?;
            record.response.get_or_insert_with(|| snapshot.clone());
            recorded.push(snapshot);
        }
        Ok(recorded)
    }

    async fn apply_ledger_outcomes(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Applied, StoreError> {
        let mut s = lock(&self.state);
        let mut applied = Applied::default();
        for event in batch {
            if !s.inbox.insert(event.event_id()) {
                continue;
            }
            let command = TransferCommand::RecordLedger(event.body);
            match s.handle(event.transfer_id(), &command, now) {
                Some((transfer, true)) => applied.changed.push(transfer.id),
                Some((_, false)) => {}
                None => {
                    let reason = format!(
                        "ledger outcome for unknown transfer {}",
                        event.transfer_id()
                    );
                    let refusal = s.outbox.dead_letter(&event.envelope, reason);
                    applied.refused.push(refusal);
                }
            }
        }
        Ok(applied)
    }

    async fn claim_initiated(
        &self,
        claim: &Claim,
        created_before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        let mut s = lock(&self.state);
        let free: Vec<TransferId> = s
            .initiated
            .iter()
            .take_while(|(created, _)| *created < created_before)
            .map(|(_, id)| *id)
            .filter(|id| !held_by_other(s.leases.get(id).copied(), claim))
            .take(limit)
            .collect();
        let mut claimed = Vec::with_capacity(free.len());
        for id in free {
            s.leases.insert(id, (claim.worker, claim.until));
            claimed.push(s.transfers[&id].clone());
        }
        Ok(claimed)
    }

    async fn record_hold_ends(
        &self,
        ends: &[(TransferId, HoldEnd)],
        now: Timestamp,
    ) -> Result<Vec<Transfer>, StoreError> {
        let mut s = lock(&self.state);
        if let Some((id, _)) = ends.iter().find(|(id, _)| !s.transfers.contains_key(id)) {
            return Err(StoreError::Integrity(format!("no hold {id}")));
        }
        Ok(ends
            .iter()
            .filter_map(|(id, end)| s.handle(*id, &TransferCommand::EndHold(*end), now))
            .map(|(hold, _)| hold)
            .collect())
    }

    async fn claim_expired_holds(
        &self,
        claim: &Claim,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        let mut s = lock(&self.state);
        let due: Vec<TransferId> = s
            .held
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= claim.now)
            .map(|(_, id)| *id)
            .filter(|id| !held_by_other(s.sweeps.get(id).copied(), claim))
            .take(limit)
            .collect();
        let mut claimed = Vec::with_capacity(due.len());
        for id in due {
            s.sweeps.insert(id, (claim.worker, claim.until));
            claimed.push(s.transfers[&id].clone());
        }
        Ok(claimed)
    }
}

#[async_trait]
impl TransferReads for MemoryTransferStore {
    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        Ok(lock(&self.state).transfers.get(&id).cloned())
    }

    async fn transfers_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        Ok(page(&lock(&self.state).transfers, after, limit))
    }

    async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        Ok(query.page(lock(&self.state).transfers.values()))
    }
}

#[derive(Debug, Default)]
struct WalletState {
    wallets: BTreeMap<WalletId, Wallet>,
    reservations: BTreeMap<TransferId, Reservation>,
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

    async fn reserve_batch(
        &self,
        batch: &[StampedReserve],
    ) -> Result<Vec<ReserveOutcome>, StoreError> {
        let mut s = lock(&self.state);
        let mut wallets = HashMap::new();
        let mut existing = HashMap::new();
        for StampedReserve { request, .. } in batch {
            for id in [request.sender_wallet_id, request.receiver_wallet_id] {
                if let Some(wallet) = s.wallets.get(&id) {
                    wallets.insert(id, wallet.clone());
                }
            }
            for id in std::iter::once(request.transfer_id).chain(request.hold_id) {
                if let Some(reservation) = s.reservations.get(&id) {
                    existing.insert(id, reservation.clone());
                }
            }
        }
        let (decided, events) = decide_stamped_reserves(batch, wallets, existing);
        for wallet in decided.senders {
            s.wallets.insert(wallet.id, wallet);
        }
        for hold in decided.holds {
            s.reservations.insert(hold.request.transfer_id, hold);
        }
        for event in events {
            s.outbox.push(Outgoing::Event(event));
        }
        for (_, reservation) in decided.reservations {
            s.reservations
                .insert(reservation.request.transfer_id, reservation);
        }
        Ok(decided.outcomes)
    }

    async fn finalize(
        &self,
        batch: &[Inbound<LedgerOutcome>],
        now: Timestamp,
    ) -> Result<Vec<Refusal>, StoreError> {
        let mut s = lock(&self.state);
        let mut refused = Vec::new();
        for event in batch {
            if !s.inbox.insert(event.event_id()) {
                continue;
            }
            let transfer = event.transfer_id();
            let finalization =
                match decide_finalize(s.reservations.get(&transfer), transfer, event.body) {
                    Ok(Some(finalization)) => finalization,
                    Ok(None) => continue,
                    Err(error) => {
                        refused.push(s.outbox.dead_letter(&event.envelope, error.to_string()));
                        continue;
                    }
                };
            for (id, change) in finalization.changes {
                // A reservation names only wallets that exist (or system
                // accounts, which get no change), and wallets are never
                // deleted, so a missing one is a broken invariant.
                let wallet = s
                    .wallets
                    .get_mut(&id)
                    .expect("wallets of a reservation exist");
                wallet.apply(change, now);
            }
            let reservation = s
                .reservations
                .get_mut(&transfer)
                .expect("decided on this reservation");
            reservation.state = finalization.state;
            reservation.updated_at = now;
        }
        Ok(refused)
    }

    async fn release_holds(
        &self,
        batch: &[(TransferId, HoldRelease)],
        now: Timestamp,
    ) -> Result<Vec<Option<HoldState>>, StoreError> {
        let mut s = lock(&self.state);
        let mut answers = Vec::with_capacity(batch.len());
        for &(id, release) in batch {
            let hold = s.reservations.get(&id);
            let wallet = hold.and_then(|h| s.wallets.get(&h.request.sender_wallet_id));
            let Some((state, released)) = decide_release(hold, wallet, release, now) else {
                answers.push(None);
                continue;
            };
            if let Some(released) = released {
                s.wallets.insert(released.wallet.id, released.wallet);
                s.reservations.insert(id, released.hold);
            }
            answers.push(Some(state));
        }
        Ok(answers)
    }
}

#[async_trait]
impl WalletReads for MemoryWalletStore {
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError> {
        Ok(lock(&self.state).wallets.get(&id).cloned())
    }

    async fn wallets_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<Wallet>, StoreError> {
        Ok(page(&lock(&self.state).wallets, after, limit))
    }

    async fn reservations_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Reservation>, StoreError> {
        Ok(page(&lock(&self.state).reservations, after, limit))
    }
}

#[derive(Debug, Default)]
struct LedgerState {
    entries: Vec<Entry>,
    by_account: HashMap<WalletId, Vec<usize>>,
    by_transfer: BTreeMap<TransferId, Vec<usize>>,
    accounts: BTreeMap<WalletId, AccountBalance>,
    outcomes: BTreeMap<TransferId, LedgerOutcome>,
    inbox: HashSet<EventId>,
    outbox: MemOutbox,
}

impl LedgerState {
    fn append(&mut self, entry: Entry) {
        let account = self
            .accounts
            .entry(entry.account)
            .or_insert(AccountBalance {
                account: entry.account,
                currency: entry.currency,
                balance: Balance::zero(entry.currency),
            });
        account.balance = account.balance + entry.signed();
        let index = self.entries.len();
        self.by_account
            .entry(entry.account)
            .or_default()
            .push(index);
        self.by_transfer
            .entry(entry.transfer_id)
            .or_default()
            .push(index);
        let seq = index as u64 + 1;
        self.entries.push(Entry { seq, ..entry });
    }

    fn currency(&self, account: WalletId) -> Option<Currency> {
        self.accounts.get(&account).map(|a| a.currency)
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
}

mem_outbox!(MemoryLedgerStore);

#[async_trait]
impl LedgerStore for MemoryLedgerStore {
    async fn post(
        &self,
        batch: &[(Inbound<PostingRequest>, EventStamp)],
    ) -> Result<usize, StoreError> {
        let mut s = lock(&self.state);
        let mut decided = 0;
        for (event, stamp) in batch {
            if !s.inbox.insert(event.event_id()) {
                continue;
            }
            let request = &event.body;
            let decision = decide_posting(
                request,
                s.outcomes.get(&request.transfer_id).copied(),
                s.currency(request.sender_wallet_id),
                s.currency(request.receiver_wallet_id),
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
            let event = Envelope::ledger_decided(event, outcome, *stamp);
            s.outbox.push(Outgoing::Event(event));
            decided += 1;
        }
        Ok(decided)
    }
}

#[async_trait]
impl LedgerReads for MemoryLedgerStore {
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

    async fn postings_page(
        &self,
        after: Option<EntryCursor>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        use std::ops::Bound::{Included, Unbounded};
        let s = lock(&self.state);
        let start = after.map_or(Unbounded, |c| Included(c.transfer_id));
        Ok(s.by_transfer
            .range((start, Unbounded))
            .flat_map(|(_, indexes)| indexes.iter().map(|&i| &s.entries[i]))
            .filter(|e| after.is_none_or(|c| (e.transfer_id, e.seq) > (c.transfer_id, c.seq)))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError> {
        Ok(lock(&self.state).outcomes.get(&transfer).copied())
    }

    async fn outcomes_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<(TransferId, LedgerOutcome)>, StoreError> {
        use std::ops::Bound::{Excluded, Unbounded};
        let s = lock(&self.state);
        let start = after.map_or(Unbounded, Excluded);
        Ok(s.outcomes
            .range((start, Unbounded))
            .take(limit)
            .map(|(t, o)| (*t, *o))
            .collect())
    }

    async fn balances_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        Ok(page(&lock(&self.state).accounts, after, limit))
    }

    async fn balance_as_of(
        &self,
        account: WalletId,
        as_of: Option<Timestamp>,
    ) -> Result<Option<BalanceAsOf>, StoreError> {
        let s = lock(&self.state);
        let indexes = s.by_account.get(&account).map_or(&[][..], Vec::as_slice);
        Ok(BalanceAsOf::of(
            indexes.iter().map(|&i| &s.entries[i]),
            as_of,
        ))
    }
}
