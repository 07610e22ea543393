//! The ledger: append-only, balanced double entry, one posting per transfer.
//!
//! Each wallet id is also a ledger account. An account's balance is its
//! credits minus its debits, so a user wallet's ledger balance equals what the
//! wallet may spend, and a system account goes negative as money enters.

use serde::{Deserialize, Serialize};

use crate::ids::{TransferId, WalletId};
use crate::money::{Amount, Balance, Currency};
use crate::outcome::{FailureReason, LedgerOutcome};
use crate::tags::Tags;
use crate::time::Timestamp;

/// Debit or credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Money leaves the account.
    Debit,
    /// Money enters the account.
    Credit,
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the ledger, assigned by the store when appended; newer
    /// entries have larger numbers. Pages are cut by it.
    pub seq: u64,
    /// The transfer that caused it.
    pub transfer_id: TransferId,
    /// The account (wallet id).
    pub account: WalletId,
    /// Debit or credit.
    pub direction: Direction,
    /// How much.
    pub amount: Amount,
    /// Currency of the account and the posting.
    pub currency: Currency,
    /// When the posting was appended.
    pub posted_at: Timestamp,
}

impl Entry {
    /// The entry's effect on its account's balance.
    pub fn signed(&self) -> Balance {
        match self.direction {
            Direction::Credit => Balance::from(self.amount),
            Direction::Debit => -Balance::from(self.amount),
        }
    }
}

/// A balanced posting: one debit and one credit of the same amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// At most one posting per transfer.
    pub transfer_id: TransferId,
    /// Debited account (the sender).
    pub debit: WalletId,
    /// Credited account (the receiver).
    pub credit: WalletId,
    /// How much.
    pub amount: Amount,
    /// Currency of both accounts.
    pub currency: Currency,
    /// When it was appended.
    pub posted_at: Timestamp,
}

impl Posting {
    /// The two entries, debit first, with `seq` still zero.
    pub fn entries(&self) -> [Entry; 2] {
        let entry = |account, direction| Entry {
            seq: 0,
            transfer_id: self.transfer_id,
            account,
            direction,
            amount: self.amount,
            currency: self.currency,
            posted_at: self.posted_at,
        };
        let entries = [
            entry(self.debit, Direction::Debit),
            entry(self.credit, Direction::Credit),
        ];
        assert!(
            entries.iter().map(Entry::signed).sum::<Balance>() == Balance::ZERO,
            "unbalanced posting for {}",
            self.transfer_id
        );
        entries
    }
}

/// What the ledger was asked to post: the facts of a `WalletReserved` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostingRequest {
    /// The transfer.
    pub transfer_id: TransferId,
    /// The account to debit.
    pub sender_wallet_id: WalletId,
    /// The account to credit.
    pub receiver_wallet_id: WalletId,
    /// How much.
    pub amount: Amount,
    /// In which currency.
    pub currency: Currency,
    /// The transfer's reference and metadata, for its `LedgerSucceeded`
    /// event; the ledger decides nothing by them and stores none.
    #[serde(default, skip_serializing_if = "Tags::is_empty")]
    pub tags: Tags,
}

/// What to store for a posting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostingDecision {
    /// The ledger decided this transfer before: write nothing, emit nothing.
    AlreadyDecided(LedgerOutcome),
    /// Append this posting and emit `LedgerSucceeded`.
    Post(Posting),
    /// Record the refusal and emit `LedgerFailed`.
    Reject(FailureReason),
}

/// Every rule of posting. `previous` is the ledger's earlier outcome on the
/// transfer, if any; `debit_currency` and `credit_currency` are the stored
/// currencies of the accounts that have entries already (an account keeps
/// the currency of its first entry). A system account's currency is in its
/// id, so an adapter need not store or read anything for it.
pub fn decide_posting(
    request: &PostingRequest,
    previous: Option<LedgerOutcome>,
    debit_currency: Option<Currency>,
    credit_currency: Option<Currency>,
    now: Timestamp,
) -> PostingDecision {
    if let Some(outcome) = previous {
        return PostingDecision::AlreadyDecided(outcome);
    }
    if request.sender_wallet_id == request.receiver_wallet_id {
        return PostingDecision::Reject(FailureReason::SameWallet);
    }
    let fits = |id: WalletId, stored: Option<Currency>| {
        stored
            .or(id.system_currency())
            .is_none_or(|c| c == request.currency)
    };
    if !fits(request.sender_wallet_id, debit_currency)
        || !fits(request.receiver_wallet_id, credit_currency)
    {
        return PostingDecision::Reject(FailureReason::CurrencyMismatch);
    }
    if Amount::new(request.amount.value(), request.currency).is_err() {
        return PostingDecision::Reject(FailureReason::InvalidAmount);
    }
    PostingDecision::Post(Posting {
        transfer_id: request.transfer_id,
        debit: request.sender_wallet_id,
        credit: request.receiver_wallet_id,
        amount: request.amount,
        currency: request.currency,
        posted_at: now,
    })
}

/// An account's balance in one currency, as the ledger computes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    /// The account.
    pub account: WalletId,
    /// Its currency.
    pub currency: Currency,
    /// Credits minus debits.
    pub balance: Balance,
}

/// An account's balance at a point of the ledger: the sum of the entries
/// posted at or before a time, and the last of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceAsOf {
    /// The account.
    pub account: WalletId,
    /// Its currency.
    pub currency: Currency,
    /// Credits minus debits of the entries counted.
    pub balance: Balance,
    /// The highest `seq` counted; `None` when no entry was.
    pub position: Option<u64>,
}

impl BalanceAsOf {
    /// The balance of `entries` (all of one account, in any order) posted
    /// at or before `as_of` (every one when `None`); `None` when there are
    /// no entries at all, so the account's currency is unknown here.
    pub fn of<'a>(
        entries: impl IntoIterator<Item = &'a Entry>,
        as_of: Option<Timestamp>,
    ) -> Option<BalanceAsOf> {
        let mut sum: Option<BalanceAsOf> = None;
        for entry in entries {
            let sum = sum.get_or_insert_with(|| BalanceAsOf {
                account: entry.account,
                currency: entry.currency,
                balance: Balance::zero(entry.currency),
                position: None,
            });
            if as_of.is_none_or(|t| entry.posted_at <= t) {
                sum.balance = sum.balance + entry.signed();
                sum.position = sum.position.max(Some(entry.seq));
            }
        }
        sum
    }
}
