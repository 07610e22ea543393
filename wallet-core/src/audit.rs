//! The system's invariants, checked through the three services' read ports
//! in pages, so the same audit runs on the in-memory stores (tests, the
//! simulator) and on databases with millions of rows (`walletctl audit`).
//!
//! The audit keeps one balance per ledger account and currency in memory,
//! nothing per transfer: entries are read ordered by transfer, and transfers
//! are merged with the ledger's outcomes, both ordered by transfer id.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use async_trait::async_trait;

use crate::ids::{TransferId, WalletId};
use crate::ledger::{AccountBalance, Entry};
use crate::money::{Balance, Currency};
use crate::outcome::LedgerOutcome;
use crate::ports::{EntryCursor, LedgerReads, StoreError, TransferReads, WalletReads};
use crate::time::Timestamp;
use crate::transfer::{Transfer, TransferKind, TransferStatus};
use crate::wallet::{Reservation, ReservationState, Wallet};

/// A broken invariant. The numbers are those of the invariants in the
/// architecture document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// 1. The ledger's accounts of a currency do not sum to zero.
    #[error("conservation: {currency} accounts sum to {sum}")]
    Unbalanced {
        /// The currency.
        currency: Currency,
        /// Their sum.
        sum: Balance,
    },
    /// 2. A wallet disagrees with the ledger.
    #[error("snapshot: wallet {wallet} has {wallet_total}, ledger implies {expected}")]
    SnapshotMismatch {
        /// The wallet.
        wallet: WalletId,
        /// Its available + reserved.
        wallet_total: Balance,
        /// What the ledger and the unfinalized reservations imply.
        expected: Balance,
    },
    /// 2. Funds still reserved once quiet, beyond the wallet's held holds.
    #[error("snapshot: wallet {0} has funds reserved beyond its holds")]
    StillReserved(WalletId),
    /// 7. Refunds exceed their transfer.
    ///
    /// Those not FAILED send back more than it moved, or it did not
    /// succeed.
    #[error("refund: transfer {transfer} is refunded {refunded}, beyond what it moved")]
    OverRefunded {
        /// The refunded transfer.
        transfer: TransferId,
        /// What its refunds send back.
        refunded: Balance,
    },
    /// 6. More than one capture took a hold's funds.
    #[error("hold: hold {0} was captured {1} times")]
    CapturedTwice(TransferId, usize),
    /// 6. A hold and its capture disagree.
    ///
    /// A converted hold no capture names, a capture of a hold not
    /// converted by it, or a capture of more than the hold held.
    #[error("hold: hold {hold} and its capture disagree: {what}")]
    HoldDisagrees {
        /// The hold.
        hold: TransferId,
        /// How.
        what: &'static str,
    },
    /// 3. A wallet went negative.
    #[error("negative: wallet {0} has a negative available balance")]
    NegativeAvailable(WalletId),
    /// 4. A transfer is not terminal once quiet.
    #[error("terminal: transfer {0} is still {1:?}")]
    NotTerminal(TransferId, TransferStatus),
    /// 4. A transfer not terminal for longer than the audit allows.
    #[error("stuck: transfer {transfer} is {status:?} since {since}")]
    Stuck {
        /// The transfer.
        transfer: TransferId,
        /// Its status.
        status: TransferStatus,
        /// When it was created.
        since: Timestamp,
    },
    /// 4. A transfer's status disagrees with the ledger.
    #[error("agreement: transfer {transfer} is {status:?} but posted = {posted}")]
    Disagrees {
        /// The transfer.
        transfer: TransferId,
        /// Its status.
        status: TransferStatus,
        /// Whether the ledger has its posting.
        posted: bool,
    },
    /// 5. A transfer has other than zero or two entries.
    #[error("double posting: transfer {0} has {1} entries")]
    PostedTwice(TransferId, usize),
}

/// What an audit checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The invariants that hold at every moment, even mid-saga:
    /// conservation, no negative available balance, at most one posting per
    /// transfer, every wallet equal to the ledger once unfinalized
    /// reservations are counted.
    Always,
    /// Every invariant of a quiet system (no event in flight, no pending
    /// reserve): those of [`Scope::Always`], nothing reserved, every
    /// transfer terminal and SUCCEEDED exactly when the ledger posted it.
    Quiet,
}

/// An audit's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// Which invariants.
    pub scope: Scope,
    /// Rows per read. Default 1,000.
    pub page_size: usize,
    /// Flag transfers that are not terminal and were created more than
    /// `.1` before `.0` (now), whatever the scope.
    pub stuck_after: Option<(Timestamp, Duration)>,
}

impl Audit {
    /// An audit of `scope` with the default page size.
    pub fn new(scope: Scope) -> Audit {
        Audit {
            scope,
            page_size: 1_000,
            stuck_after: None,
        }
    }
}

/// What an audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Every broken invariant.
    pub violations: Vec<Violation>,
    /// Wallets read.
    pub wallets: usize,
    /// Reservations read.
    pub reservations: usize,
    /// Ledger entries read.
    pub entries: usize,
    /// Transfers read (quiet scope or stuck check only).
    pub transfers: usize,
    /// The sum of the ledger's accounts per currency (zero when conserved).
    pub sums: BTreeMap<Currency, Balance>,
}

impl Audit {
    /// Runs the audit through the three read ports.
    pub async fn run(
        &self,
        transfers: &impl TransferReads,
        wallets: &impl WalletReads,
        ledger: &impl LedgerReads,
    ) -> Result<AuditReport, StoreError> {
        let mut report = AuditReport::default();
        let mut expected = self.ledger_pass(ledger, &mut report).await?;
        let held = self
            .reservations_pass(wallets, ledger, &mut expected, &mut report)
            .await?;
        self.wallets_pass(wallets, &expected, &held, &mut report)
            .await?;
        if self.scope == Scope::Quiet || self.stuck_after.is_some() {
            self.transfers_pass(transfers, ledger, &mut report).await?;
        }
        Ok(report)
    }

    /// Conservation and one posting per transfer; returns each account's
    /// ledger balance.
    async fn ledger_pass(
        &self,
        ledger: &impl LedgerReads,
        report: &mut AuditReport,
    ) -> Result<HashMap<WalletId, Balance>, StoreError> {
        let mut per_account: HashMap<WalletId, Balance> = HashMap::new();
        let mut current: Option<(TransferId, usize)> = None;
        let mut after = None;
        loop {
            let page = ledger.postings_page(after, self.page_size).await?;
            let Some(last) = page.last() else { break };
            after = Some(EntryCursor {
                transfer_id: last.transfer_id,
                seq: last.seq,
            });
            report.entries += page.len();
            for e in &page {
                add(per_account.entry(e.account).or_default(), e.signed());
                add(report.sums.entry(e.currency).or_default(), e.signed());
                current = match current {
                    Some((t, n)) if t == e.transfer_id => Some((t, n + 1)),
                    other => {
                        check_posting(other, &mut report.violations);
                        Some((e.transfer_id, 1))
                    }
                };
            }
        }
        check_posting(current, &mut report.violations);
        for (currency, sum) in &report.sums {
            if *sum != Balance::ZERO {
                report.violations.push(Violation::Unbalanced {
                    currency: *currency,
                    sum: *sum,
                });
            }
        }
        Ok(per_account)
    }

    /// What each wallet should add up to: its ledger balance, plus
    /// reservations the ledger posted that the wallet has not captured yet
    /// (still reserved in the sender), minus credits the ledger posted that
    /// the receiver has not received yet. Also each hold against its
    /// captures. Returns what each wallet's held holds hold.
    async fn reservations_pass(
        &self,
        wallets: &impl WalletReads,
        ledger: &impl LedgerReads,
        expected: &mut HashMap<WalletId, Balance>,
        report: &mut AuditReport,
    ) -> Result<HashMap<WalletId, Balance>, StoreError> {
        let mut held: HashMap<WalletId, Balance> = HashMap::new();
        let mut holds = Holds::default();
        let mut after = None;
        loop {
            let page = wallets.reservations_page(after, self.page_size).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.request.transfer_id);
            report.reservations += page.len();
            for r in &page {
                holds.add(r);
                if r.state == ReservationState::Held {
                    add(
                        held.entry(r.request.sender_wallet_id).or_default(),
                        r.request.amount.into(),
                    );
                }
            }
            for r in page
                .iter()
                .filter(|r| r.state == ReservationState::Reserved)
            {
                let request = &r.request;
                if ledger.outcome(request.transfer_id).await? == Some(LedgerOutcome::Succeeded) {
                    add(
                        expected.entry(request.sender_wallet_id).or_default(),
                        request.amount.into(),
                    );
                    add(
                        expected.entry(request.receiver_wallet_id).or_default(),
                        -Balance::from(request.amount),
                    );
                }
            }
        }
        holds.check(&mut report.violations);
        Ok(held)
    }

    /// Every wallet against what the ledger implies.
    async fn wallets_pass(
        &self,
        wallets: &impl WalletReads,
        expected: &HashMap<WalletId, Balance>,
        held: &HashMap<WalletId, Balance>,
        report: &mut AuditReport,
    ) -> Result<(), StoreError> {
        let mut after = None;
        loop {
            let page = wallets.wallets_page(after, self.page_size).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            report.wallets += page.len();
            for w in &page {
                let held = held.get(&w.id).copied().unwrap_or_default();
                self.check_wallet(w, expected, held, &mut report.violations);
            }
        }
        Ok(())
    }

    fn check_wallet(
        &self,
        w: &Wallet,
        expected: &HashMap<WalletId, Balance>,
        held: Balance,
        violations: &mut Vec<Violation>,
    ) {
        if w.available.is_negative() {
            violations.push(Violation::NegativeAvailable(w.id));
        }
        let want = expected.get(&w.id).copied().unwrap_or_default();
        if w.available + w.reserved != want {
            violations.push(Violation::SnapshotMismatch {
                wallet: w.id,
                wallet_total: w.available + w.reserved,
                expected: want,
            });
        }
        if self.scope == Scope::Quiet && w.reserved != held {
            violations.push(Violation::StillReserved(w.id));
        }
    }

    /// Transfers merged with the ledger's outcomes, both by transfer id.
    async fn transfers_pass(
        &self,
        transfers: &impl TransferReads,
        ledger: &impl LedgerReads,
        report: &mut AuditReport,
    ) -> Result<(), StoreError> {
        let mut outcomes = Outcomes::default();
        // What the refunds not FAILED send back, by original: one entry per
        // refunded transfer.
        let mut refunded: HashMap<TransferId, Balance> = HashMap::new();
        let mut after = None;
        loop {
            let page = transfers.transfers_page(after, self.page_size).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id);
            report.transfers += page.len();
            for t in &page {
                let outcome = outcomes.of(t.id, ledger, self.page_size).await?;
                self.check_transfer(t, outcome, &mut report.violations);
                if let Some(original) = t.refund_of
                    && t.status != TransferStatus::Failed
                {
                    add(refunded.entry(original).or_default(), t.amount.into());
                }
            }
        }
        for (original, sum) in refunded {
            let moved = transfers.transfer(original).await?;
            let within = moved.as_ref().is_some_and(|o| {
                o.status == TransferStatus::Succeeded && sum <= Balance::from(o.amount)
            });
            if !within {
                report.violations.push(Violation::OverRefunded {
                    transfer: original,
                    refunded: sum,
                });
            }
        }
        Ok(())
    }

    fn check_transfer(
        &self,
        t: &Transfer,
        outcome: Option<LedgerOutcome>,
        violations: &mut Vec<Violation>,
    ) {
        if let Some((now, after)) = self.stuck_after {
            let age = (now - t.created_at).to_std().unwrap_or_default();
            if !t.status.is_terminal() && age > after {
                violations.push(Violation::Stuck {
                    transfer: t.id,
                    status: t.status,
                    since: t.created_at,
                });
            }
        }
        if self.scope != Scope::Quiet {
            return;
        }
        // A held hold waits for its client, by design.
        if !t.status.is_terminal() && t.status != TransferStatus::Held {
            violations.push(Violation::NotTerminal(t.id, t.status));
            return;
        }
        let posted = outcome == Some(LedgerOutcome::Succeeded);
        if posted != (t.status == TransferStatus::Succeeded) {
            violations.push(Violation::Disagrees {
                transfer: t.id,
                status: t.status,
                posted,
            });
        }
    }
}

/// The holds a reservations pass met, each with the captures that took its
/// funds (a capture the wallet service rejected took nothing). One entry
/// per hold, not per transfer.
#[derive(Default)]
struct Holds(HashMap<TransferId, HoldSeen>);

#[derive(Default)]
struct HoldSeen {
    /// The hold's reservation, once met.
    hold: Option<Reservation>,
    /// Its captures' ids and amounts.
    captures: Vec<(TransferId, Balance)>,
}

impl Holds {
    fn add(&mut self, r: &Reservation) {
        if r.request.kind == TransferKind::Hold {
            self.0.entry(r.request.transfer_id).or_default().hold = Some(r.clone());
        }
        if let Some(hold) = r.request.hold_id
            && !matches!(r.state, ReservationState::Rejected(_))
        {
            let seen = self.0.entry(hold).or_default();
            seen.captures
                .push((r.request.transfer_id, r.request.amount.into()));
        }
    }

    /// Invariant 6: a hold is captured at most once, by the capture it
    /// names, for no more than it held.
    fn check(self, violations: &mut Vec<Violation>) {
        for (id, seen) in self.0 {
            let disagrees = |what| Violation::HoldDisagrees { hold: id, what };
            let Some(hold) = seen.hold else {
                violations.push(disagrees("a capture names no hold"));
                continue;
            };
            let converted = hold.state == ReservationState::Converted;
            match seen.captures.as_slice() {
                [] if converted => violations.push(disagrees("converted, no capture")),
                [] => {}
                [(capture, amount)] => {
                    if !converted || hold.captured_by != Some(*capture) {
                        violations.push(disagrees("a capture the hold does not name"));
                    }
                    if *amount > Balance::from(hold.request.amount) {
                        violations.push(disagrees("the capture took more than the hold"));
                    }
                }
                many => violations.push(Violation::CapturedTwice(id, many.len())),
            }
        }
    }
}

fn add(total: &mut Balance, amount: Balance) {
    *total = *total + amount;
}

/// A transfer's entries, once all are counted: zero or two.
fn check_posting(counted: Option<(TransferId, usize)>, violations: &mut Vec<Violation>) {
    if let Some((transfer, n)) = counted
        && n != 2
    {
        violations.push(Violation::PostedTwice(transfer, n));
    }
}

/// The ledger's outcomes read forward in pages, for a merge with transfers
/// asked in ascending id order.
#[derive(Default)]
struct Outcomes {
    buffer: VecDeque<(TransferId, LedgerOutcome)>,
    after: Option<TransferId>,
    done: bool,
}

impl Outcomes {
    async fn of(
        &mut self,
        transfer: TransferId,
        ledger: &impl LedgerReads,
        page_size: usize,
    ) -> Result<Option<LedgerOutcome>, StoreError> {
        loop {
            if self.buffer.is_empty() && !self.done {
                let page = ledger.outcomes_page(self.after, page_size).await?;
                self.done = page.is_empty();
                self.after = page.last().map(|(t, _)| *t).or(self.after);
                self.buffer.extend(page);
            }
            match self.buffer.front() {
                Some((t, _)) if *t < transfer => {
                    self.buffer.pop_front();
                }
                Some((t, outcome)) if *t == transfer => return Ok(Some(*outcome)),
                _ => return Ok(None),
            }
        }
    }
}

/// The three services' data held in plain vectors: a read model for tests
/// and tools that build a state by hand. It implements the read ports, so
/// [`Audit::run`] checks it like any store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The wallet service's wallets.
    pub wallets: Vec<Wallet>,
    /// The wallet service's reservations.
    pub reservations: Vec<Reservation>,
    /// The transaction service's transfers.
    pub transfers: Vec<Transfer>,
    /// The ledger's entries.
    pub entries: Vec<Entry>,
    /// The ledger's outcomes.
    pub outcomes: HashMap<TransferId, LedgerOutcome>,
}

/// The first `limit` items whose key is above `after`, by key.
fn snapshot_page<T: Clone, K: Ord + Copy>(
    items: &[T],
    key: impl Fn(&T) -> K,
    after: Option<K>,
    limit: usize,
) -> Vec<T> {
    let mut page: Vec<T> = items
        .iter()
        .filter(|i| after.is_none_or(|a| key(i) > a))
        .cloned()
        .collect();
    page.sort_by_key(&key);
    page.truncate(limit);
    page
}

#[async_trait]
impl TransferReads for Snapshot {
    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        Ok(self.transfers.iter().find(|t| t.id == id).cloned())
    }

    async fn transfers_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        Ok(snapshot_page(&self.transfers, |t| t.id, after, limit))
    }
}

#[async_trait]
impl WalletReads for Snapshot {
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError> {
        Ok(self.wallets.iter().find(|w| w.id == id).cloned())
    }

    async fn wallets_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<Wallet>, StoreError> {
        Ok(snapshot_page(&self.wallets, |w| w.id, after, limit))
    }

    async fn reservations_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Reservation>, StoreError> {
        let key = |r: &Reservation| r.request.transfer_id;
        Ok(snapshot_page(&self.reservations, key, after, limit))
    }
}

#[async_trait]
impl LedgerReads for Snapshot {
    async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut entries: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.account == account && before.is_none_or(|b| e.seq < b))
            .cloned()
            .collect();
        entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
        entries.truncate(limit);
        Ok(entries)
    }

    async fn postings_page(
        &self,
        after: Option<EntryCursor>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let key = |e: &Entry| EntryCursor {
            transfer_id: e.transfer_id,
            seq: e.seq,
        };
        Ok(snapshot_page(&self.entries, key, after, limit))
    }

    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError> {
        Ok(self.outcomes.get(&transfer).copied())
    }

    async fn outcomes_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<(TransferId, LedgerOutcome)>, StoreError> {
        let outcomes: Vec<_> = self.outcomes.iter().map(|(t, o)| (*t, *o)).collect();
        Ok(snapshot_page(&outcomes, |(t, _)| *t, after, limit))
    }

    async fn balances_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        let mut balances: BTreeMap<WalletId, AccountBalance> = BTreeMap::new();
        for e in &self.entries {
            let b = balances.entry(e.account).or_insert(AccountBalance {
                account: e.account,
                currency: e.currency,
                balance: Balance::zero(e.currency),
            });
            add(&mut b.balance, e.signed());
        }
        let balances: Vec<_> = balances.into_values().collect();
        Ok(snapshot_page(&balances, |b| b.account, after, limit))
    }
}
