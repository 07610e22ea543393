//! The read ports as the checks use them, each answer checked against its
//! port's promises: a page holds at most `limit` rows, strictly after the
//! cursor, in key order (entries newest first, all of the account asked
//! for). A broken promise is noted and answered with an empty page, so a
//! paging loop over a broken port ends instead of spinning.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::ledger::{AccountBalance, Entry};
use wallet_core::outcome::LedgerOutcome;
use wallet_core::ports::{EntryCursor, LedgerReads, StoreError, TransferReads, WalletReads};
use wallet_core::transfer::Transfer;
use wallet_core::wallet::{Reservation, Wallet};

use crate::faults::lock;

/// Broken promises of the read ports, shared by the wrappers of one check.
pub(crate) type Notes = Arc<Mutex<Vec<String>>>;

/// A read port whose answers are checked.
#[derive(Clone)]
pub(crate) struct Checked<R> {
    inner: R,
    notes: Notes,
}

impl<R> Checked<R> {
    pub fn new(inner: R, notes: Notes) -> Self {
        Checked { inner, notes }
    }
}

/// `page` if its keys are strictly increasing, after `after` and at most
/// `limit`; otherwise a note and an empty page.
fn checked_page<T, K: Ord + Copy + std::fmt::Debug>(
    notes: &Notes,
    what: &str,
    page: Vec<T>,
    after: Option<K>,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> Vec<T> {
    let keys: Vec<K> = page.iter().map(&key).collect();
    let ordered = keys.windows(2).all(|w| w[0] < w[1]);
    let past = match (after, keys.first()) {
        (Some(a), Some(first)) => *first > a,
        _ => true,
    };
    if page.len() <= limit && ordered && past {
        return page;
    }
    lock(notes).push(format!(
        "{what}(after {after:?}, limit {limit}) answered {} rows, keys {:?}",
        page.len(),
        keys.iter().take(4).collect::<Vec<_>>()
    ));
    Vec::new()
}

#[async_trait]
impl<R: TransferReads + Clone> TransferReads for Checked<R> {
    async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        let transfer = self.inner.transfer(id).await?;
        if transfer.as_ref().is_some_and(|t| t.id != id) {
            lock(&self.notes).push(format!("transfer({id}) answered another transfer"));
        }
        Ok(transfer)
    }

    async fn transfers_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Transfer>, StoreError> {
        let page = self.inner.transfers_page(after, limit).await?;
        let what = "transfers_page";
        Ok(checked_page(&self.notes, what, page, after, limit, |t| {
            t.id
        }))
    }
}

#[async_trait]
impl<R: WalletReads + Clone> WalletReads for Checked<R> {
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, StoreError> {
        self.inner.wallet(id).await
    }

    async fn wallets_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<Wallet>, StoreError> {
        let page = self.inner.wallets_page(after, limit).await?;
        Ok(checked_page(
            &self.notes,
            "wallets_page",
            page,
            after,
            limit,
            |w| w.id,
        ))
    }

    async fn reservations_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<Reservation>, StoreError> {
        let page = self.inner.reservations_page(after, limit).await?;
        let what = "reservations_page";
        Ok(checked_page(&self.notes, what, page, after, limit, |r| {
            r.request.transfer_id
        }))
    }
}

#[async_trait]
impl<R: LedgerReads + Clone> LedgerReads for Checked<R> {
    async fn entries(
        &self,
        account: WalletId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let page = self.inner.entries(account, before, limit).await?;
        // Newest first: seqs strictly decreasing, all below `before`.
        let seqs: Vec<u64> = page.iter().map(|e| e.seq).collect();
        let ordered = seqs.windows(2).all(|w| w[0] > w[1]);
        let below = before.is_none_or(|b| seqs.iter().all(|s| *s < b));
        let own = page.iter().all(|e| e.account == account);
        if page.len() <= limit && ordered && below && own {
            return Ok(page);
        }
        lock(&self.notes).push(format!(
            "entries({account}, before {before:?}, limit {limit}) answered seqs {:?}",
            seqs.iter().take(4).collect::<Vec<_>>()
        ));
        Ok(Vec::new())
    }

    async fn postings_page(
        &self,
        after: Option<EntryCursor>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let page = self.inner.postings_page(after, limit).await?;
        let after = after.map(|c| (c.transfer_id, c.seq));
        Ok(checked_page(
            &self.notes,
            "postings_page",
            page,
            after,
            limit,
            |e| (e.transfer_id, e.seq),
        ))
    }

    async fn outcome(&self, transfer: TransferId) -> Result<Option<LedgerOutcome>, StoreError> {
        self.inner.outcome(transfer).await
    }

    async fn outcomes_page(
        &self,
        after: Option<TransferId>,
        limit: usize,
    ) -> Result<Vec<(TransferId, LedgerOutcome)>, StoreError> {
        let page = self.inner.outcomes_page(after, limit).await?;
        let what = "outcomes_page";
        Ok(checked_page(
            &self.notes,
            what,
            page,
            after,
            limit,
            |(t, _)| *t,
        ))
    }

    async fn balances_page(
        &self,
        after: Option<WalletId>,
        limit: usize,
    ) -> Result<Vec<AccountBalance>, StoreError> {
        let page = self.inner.balances_page(after, limit).await?;
        let what = "balances_page";
        Ok(checked_page(&self.notes, what, page, after, limit, |b| {
            b.account
        }))
    }
}
