//! The system's invariants, checked over a snapshot of the three services'
//! state. Used by tests, the simulator and `walletctl audit`.

use std::collections::{BTreeMap, HashMap};

use crate::ids::{TransferId, WalletId};
use crate::ledger::{Entry, LedgerOutcome};
use crate::money::{Balance, Currency};
use crate::transfer::{Transfer, TransferStatus};
use crate::wallet::{Reservation, ReservationState, Wallet, WalletKind};

/// Everything the invariants look at.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The wallet service's wallets, system accounts included.
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

/// A broken invariant.
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
        /// What the ledger and the unsettled reservations imply.
        expected: Balance,
    },
    /// 2. Funds still reserved once quiet.
    #[error("snapshot: wallet {0} still has funds reserved")]
    StillReserved(WalletId),
    /// 3. A user wallet went negative.
    #[error("negative: wallet {0} has a negative available balance")]
    NegativeAvailable(WalletId),
    /// 4. A transfer is not terminal once quiet.
    #[error("terminal: transfer {0} is still {1:?}")]
    NotTerminal(TransferId, TransferStatus),
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

/// The invariants that hold at every moment, even mid-saga: conservation,
/// no negative available balance, at most one posting per transfer, and
/// every wallet equal to the ledger once unsettled reservations are counted.
pub fn check_always(s: &Snapshot) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut per_account: HashMap<WalletId, Balance> = HashMap::new();
    let mut per_currency: BTreeMap<Currency, Balance> = BTreeMap::new();
    let mut per_transfer: HashMap<TransferId, usize> = HashMap::new();
    for e in &s.entries {
        let account = per_account.entry(e.account).or_default();
        *account = *account + e.signed();
        let currency = per_currency.entry(e.currency).or_default();
        *currency = *currency + e.signed();
        *per_transfer.entry(e.transfer_id).or_default() += 1;
    }
    for (currency, sum) in per_currency {
        if sum != Balance::ZERO {
            violations.push(Violation::Unbalanced { currency, sum });
        }
    }
    for (transfer, n) in per_transfer {
        if n != 2 {
            violations.push(Violation::PostedTwice(transfer, n));
        }
    }
    // What each wallet should add up to: its ledger balance, plus reservations the
    // ledger posted that the wallet has not captured yet (still reserved in
    // the sender), minus credits the ledger posted that the receiver has not
    // received yet.
    let mut expected = per_account;
    for h in s
        .reservations
        .iter()
        .filter(|h| h.state == ReservationState::Reserved)
    {
        if s.outcomes.get(&h.request.transfer_id) == Some(&LedgerOutcome::Succeeded) {
            let r = &h.request;
            let sender = expected.entry(r.sender_wallet_id).or_default();
            *sender = *sender + r.amount;
            let receiver = expected.entry(r.receiver_wallet_id).or_default();
            *receiver = *receiver - r.amount;
        }
    }
    for w in &s.wallets {
        if w.kind == WalletKind::User && w.available.is_negative() {
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
    }
    violations
}

/// Every invariant of a quiet system (no event in flight, no pending
/// reserve): [`check_always`], nothing reserved, every transfer terminal and
/// SUCCEEDED exactly when the ledger posted it.
pub fn check_quiet(s: &Snapshot) -> Vec<Violation> {
    let mut violations = check_always(s);
    for w in &s.wallets {
        if w.reserved != Balance::ZERO {
            violations.push(Violation::StillReserved(w.id));
        }
    }
    for t in &s.transfers {
        if !t.status.is_terminal() {
            violations.push(Violation::NotTerminal(t.id, t.status));
            continue;
        }
        let posted = s.outcomes.get(&t.id) == Some(&LedgerOutcome::Succeeded);
        if posted != (t.status == TransferStatus::Succeeded) {
            violations.push(Violation::Disagrees {
                transfer: t.id,
                status: t.status,
                posted,
            });
        }
    }
    violations
}
