//! Recovery of the wallet service's database after a restore from a
//! backup older than the other two: the reservations made after the
//! backup, and the wallets opened after it, are missing there, while the
//! transaction service moved their transfers on and the ledger may have
//! posted them. [`restore_reservations`] makes them again from the
//! transaction service's records, so that the ledger's outcomes, delivered
//! again once the wallet service's consumer group is rewound, find them.
//! docs/operations.md, "Backup and recovery", is the whole procedure.

use std::collections::{BTreeMap, HashMap, HashSet};

use rust_decimal::Decimal;

use crate::ids::{TransferId, WalletId};
use crate::money::Currency;
use crate::outcome::ReserveOutcome;
use crate::ports::{LedgerReads, StoreError, TransferReads, WalletReads, WalletStore};
use crate::service::WalletService;
use crate::time::Clock;
use crate::transfer::{Transfer, TransferStatus};
use crate::wallet::{ReserveRequest, Wallet};

/// What [`restore_reservations`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Transfers read from the transaction service's database.
    pub transfers: usize,
    /// Wallets a transfer names that the wallet database lacked, opened
    /// again, empty, in the currency of their transfers.
    pub reopened: Vec<WalletId>,
    /// Reservations made again, in the order of their transfers' creation.
    pub restored: Vec<TransferId>,
    /// Reservations not made again because the sender's available balance
    /// does not cover them yet (it spent funds it received after the
    /// backup, which the outcomes delivered again will credit): run again
    /// once the wallet service has applied them.
    pub deferred: Vec<TransferId>,
}

/// Whether the wallet service had reserved funds for `transfer`, as the
/// other services' records show: RESERVED and SUCCEEDED transfers were,
/// and a FAILED one was when the ledger decided it (a refused reserve
/// never reaches the ledger). INITIATED ones are left to the retrier,
/// whose reserve is answered as the first one was, or made afresh.
/// A HELD hold holds its funds still; a hold that ended holds nothing (a
/// captured one's funds are its capture's).
async fn was_reserved(transfer: &Transfer, ledger: &impl LedgerReads) -> Result<bool, StoreError> {
    Ok(match transfer.status {
        TransferStatus::Initiated => false,
        TransferStatus::Reserved | TransferStatus::Succeeded | TransferStatus::Held => true,
        TransferStatus::Failed => ledger.outcome(transfer.id).await?.is_some(),
        TransferStatus::Captured | TransferStatus::Voided | TransferStatus::Expired => false,
    })
}

/// The reserve that made `transfer`'s reservation. A capture's is made
/// again as a plain reserve of the sender's funds: its hold, which ended,
/// is not made again, and the capture's funds are the same either way.
fn reserve_of(transfer: &Transfer) -> ReserveRequest {
    ReserveRequest {
        hold_id: None,
        ..ReserveRequest::of(transfer)
    }
}

/// Makes again, through the wallet service's own reserve, every
/// reservation the transaction service's records say was made and the
/// wallet database lacks, after opening again (empty) every wallet a
/// transfer names and the wallet database lacks. Each reserve writes a
/// new `WalletReserved`, which the ledger takes as a no-op for a transfer
/// it already decided, and decides otherwise. A reservation whose sender
/// cannot cover it now is deferred, not refused: a refused reserve would
/// be recorded, and contradict the ledger's posting. Safe to repeat: what
/// exists is left as it is.
///
/// Run it with the wallet service stopped, before its consumer group is
/// rewound (docs/operations.md, "Backup and recovery"); again, with the
/// service running, for what it deferred.
pub async fn restore_reservations<T, W, L>(
    transfers: &T,
    wallets: &WalletService<W>,
    ledger: &L,
    clock: &dyn Clock,
    page_size: usize,
) -> Result<RestoreReport, StoreError>
where
    T: TransferReads,
    W: WalletStore + WalletReads,
    L: LedgerReads,
{
    let mut report = RestoreReport::default();
    let store = wallets.store();
    let kept = reservation_ids(store, page_size).await?;
    let mut lost = Vec::new();
    let mut named: BTreeMap<WalletId, Currency> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = transfers.transfers_page(after, page_size).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for transfer in page {
            report.transfers += 1;
            for id in [transfer.sender_wallet_id, transfer.receiver_wallet_id] {
                if id.system_currency().is_none() {
                    named.insert(id, transfer.currency);
                }
            }
            if !kept.contains(&transfer.id) && was_reserved(&transfer, ledger).await? {
                lost.push(transfer);
            }
        }
    }
    let mut available: HashMap<WalletId, Decimal> = HashMap::new();
    for (id, currency) in named {
        match store.wallet(id).await? {
            Some(wallet) => {
                available.insert(id, wallet.available.value());
            }
            None => {
                store
                    .open_wallet(&Wallet::open(id, currency, clock.now()))
                    .await?;
                tracing::warn!(wallet_id = %id, %currency, "recovery: wallet opened again");
                available.insert(id, Decimal::ZERO);
                report.reopened.push(id);
            }
        }
    }
    lost.sort_by_key(|t| (t.created_at, t.id));
    let mut requests = Vec::new();
    for transfer in &lost {
        let sender = transfer.sender_wallet_id;
        let amount = transfer.amount.value();
        // A system account sends without a balance.
        if let Some(left) = available.get_mut(&sender) {
            if *left < amount {
                tracing::warn!(transfer_id = %transfer.id, wallet_id = %sender,
                    "recovery: the sender cannot cover the reservation yet; deferred");
                report.deferred.push(transfer.id);
                continue;
            }
            *left -= amount;
        }
        requests.push(reserve_of(transfer));
    }
    for chunk in requests.chunks(page_size.max(1)) {
        let outcomes = wallets.reserve_batch(chunk).await?;
        for (request, outcome) in chunk.iter().zip(outcomes) {
            if let ReserveOutcome::Rejected(reason) = outcome {
                return Err(StoreError::Integrity(format!(
                    "the reservation of transfer {} was refused again ({reason:?}); \
                     the wallet database does not agree with the transaction database",
                    request.transfer_id
                )));
            }
            tracing::warn!(transfer_id = %request.transfer_id, "recovery: reservation made again");
            report.restored.push(request.transfer_id);
        }
    }
    Ok(report)
}

/// The transfer ids of every reservation the wallet database holds.
async fn reservation_ids(
    store: &impl WalletReads,
    page_size: usize,
) -> Result<HashSet<TransferId>, StoreError> {
    let mut ids = HashSet::new();
    let mut after = None;
    loop {
        let page = store.reservations_page(after, page_size).await?;
        let Some(last) = page.last() else {
            return Ok(ids);
        };
        after = Some(last.request.transfer_id);
        ids.extend(page.iter().map(|r| r.request.transfer_id));
    }
}
