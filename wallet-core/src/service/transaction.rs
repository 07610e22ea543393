//! The transaction service: API entry point and saga coordinator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use tokio::sync::Notify;

use crate::event::{Envelope, groups};
use crate::idempotency::{self, Fingerprint, IdempotencyCheck};
use crate::ids::{IdGenerator, IdempotencyKey, TransferId, WalletId, WorkerId};
use crate::metrics::{self, DeadLetteredBy};
use crate::money::{Amount, Currency, MoneyError};
use crate::outcome::LedgerOutcome;
use crate::ports::{
    Begin, Claim, GatewayError, ReserveAttempt, StoreError, TransferReads, TransferStore,
    WalletGateway,
};
use crate::runtime::{EventHandler, HandleError, Handled};
use crate::time::Clock;
use crate::transfer::{Transfer, TransferKind, TransferStatus};
use crate::wallet::ReserveRequest;

/// Limits of the transaction service.
#[derive(Debug, Clone)]
pub struct TransactionConfig {
    /// A first request that has not answered within this time is taken to
    /// have died; repeats of its key then get the transfer's current state
    /// instead of 409. Default 30 s.
    pub idempotency_lease: Duration,
    /// The retrier leaves INITIATED transfers younger than this to the
    /// request that created them. Default 1 s.
    pub retry_min_age: Duration,
    /// Transfers one retrier pass handles at most. Default 100.
    pub retry_batch: usize,
    /// How long a retrier pass holds the transfers it claimed: another
    /// instance's retrier leaves them alone meanwhile, and a transfer whose
    /// reserve stayed ambiguous is tried again after it. Default 2 s.
    pub retry_lease: Duration,
    /// Wallet currencies remembered at most; the cache is emptied when full.
    /// Default 100,000.
    pub currency_cache: usize,
    /// Longest `wait_for` accepted. Default 30 s.
    pub max_wait: Duration,
    /// How often a `wait_for` reads its transfer again when nothing woke
    /// it. This process wakes the waits on the transfers it moves; a change
    /// made elsewhere (another instance's consumer) is seen at the next
    /// read, unless it is announced through
    /// [`TransactionService::transfers_changed`]. Default 250 ms.
    pub wait_poll: Duration,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            idempotency_lease: Duration::from_secs(30),
            retry_min_age: Duration::from_secs(1),
            retry_batch: 100,
            retry_lease: Duration::from_secs(2),
            currency_cache: 100_000,
            max_wait: Duration::from_secs(30),
            wait_poll: Duration::from_millis(250),
        }
    }
}

/// Who pays whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parties {
    /// Wallet to wallet.
    Transfer {
        /// Debited.
        sender: WalletId,
        /// Credited.
        receiver: WalletId,
    },
    /// Money in from the currency's system account.
    Deposit(WalletId),
    /// Money out to the currency's system account.
    Withdrawal(WalletId),
}

/// A client's request to move money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    /// The client's idempotency key.
    pub key: IdempotencyKey,
    /// Who pays whom.
    pub parties: Parties,
    /// How much, not yet checked against the currency.
    pub amount: Decimal,
    /// The currency, if the client named it; it must match the wallets'.
    pub currency: Option<Currency>,
}

/// The answer to a transfer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The transfer: RESERVED, FAILED (definite refusal) or INITIATED (the
    /// reserve had no definite answer; the retrier finishes it).
    pub transfer: Transfer,
    /// True when this is the stored answer to an earlier request with the
    /// same key.
    pub replayed: bool,
}

/// Why a transfer request was refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The amount is not valid for the currency. HTTP 422 `invalid_amount`.
    #[error(transparent)]
    InvalidAmount(#[from] MoneyError),
    /// No such wallet. HTTP 404 `wallet_not_found`.
    #[error("wallet {0} not found")]
    WalletNotFound(WalletId),
    /// Sender and receiver are one wallet. HTTP 422 `same_wallet`.
    #[error("sender and receiver are the same wallet")]
    SameWallet,
    /// The wallets, or the request, disagree on the currency. HTTP 422
    /// `currency_mismatch`.
    #[error("currency mismatch: {0}")]
    CurrencyMismatch(String),
    /// The key was first used with another request. HTTP 422
    /// `idempotency_key_reused`; do not retry.
    #[error("idempotency key was used with a different request")]
    KeyReused,
    /// The first request with this key is still being answered. HTTP 409;
    /// retry later.
    #[error("a request with this idempotency key is in flight")]
    InFlight,
    /// The wallet service could not be asked for a currency. HTTP 503; retry.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// Storage failed. HTTP 503; retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one retrier pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// INITIATED transfers claimed and retried: all claimed, unless the
    /// claim's lease ran short (see [`TransactionService::retry_pending`]).
    pub attempted: usize,
    /// Of those, how many got a definite answer.
    pub answered: usize,
}

/// Creates transfers, drives them through the saga and answers for them.
pub struct TransactionService<S, G> {
    store: S,
    gateway: G,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    config: TransactionConfig,
    worker: WorkerId,
    currencies: Mutex<HashMap<WalletId, Currency>>,
    waiters: Waiters,
}

/// The waits on transfers, by transfer: a change wakes the waits on that
/// transfer only, so a thousand long polls do not all read the store
/// whenever any transfer moves. Once `stopped`, every wait answers at once.
#[derive(Default)]
struct Waiters {
    waiting: Mutex<HashMap<TransferId, Arc<Notify>>>,
    stopped: AtomicBool,
}

/// One wait's registration; dropping it forgets the transfer once no other
/// wait is on it.
struct Waiting<'a> {
    waiters: &'a Waiters,
    id: TransferId,
    notify: Arc<Notify>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TransferId, Arc<Notify>>> {
        self.waiting.lock().expect("waiters lock")
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Stops every wait, present and future. A wait checks the flag after
    /// it made its wake-up, so it either sees the flag or is woken here.
    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for notify in self.lock().values() {
            notify.notify_waiters();
        }
    }

    fn wait_on(&self, id: TransferId) -> Waiting<'_> {
        let notify = self.lock().entry(id).or_default().clone();
        Waiting {
            waiters: self,
            id,
            notify,
        }
    }

    fn wake(&self, ids: impl IntoIterator<Item = TransferId>) {
        let waiting = self.lock();
        if waiting.is_empty() {
            return;
        }
        for id in ids {
            if let Some(notify) = waiting.get(&id) {
                notify.notify_waiters();
            }
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = self.waiters.lock();
        // The map's reference and this one: no other wait on the transfer.
        if Arc::strong_count(&self.notify) == 2 {
            waiting.remove(&self.id);
        }
    }
}

impl<S: TransferStore + TransferReads, G: WalletGateway> TransactionService<S, G> {
    /// Wires the service to its ports.
    pub fn new(
        store: S,
        gateway: G,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
        config: TransactionConfig,
    ) -> Self {
        TransactionService {
            worker: ids.worker_id(),
            store,
            gateway,
            clock,
            ids,
            config,
            currencies: Mutex::new(HashMap::new()),
            waiters: Waiters::default(),
        }
    }

    /// The store, for read-only use by routers and audits.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Step 1 and 2 of the saga: check, store INITIATED with the key, reserve
    /// synchronously, record the answer.
    pub async fn create(&self, request: TransferRequest) -> Result<Created, CreateError> {
        let (sender, receiver, currency) = self.resolve(request.parties, request.currency).await?;
        let amount = Amount::new(request.amount, currency)?;
        let kind = match request.parties {
            Parties::Transfer { .. } => TransferKind::Transfer,
            Parties::Deposit(_) => TransferKind::Deposit,
            Parties::Withdrawal(_) => TransferKind::Withdrawal,
        };
        let now = self.clock.now();
        let transfer = Transfer {
            id: self.ids.transfer_id(),
            kind,
            status: TransferStatus::Initiated,
            failure_reason: None,
            sender_wallet_id: sender,
            receiver_wallet_id: receiver,
            amount,
            currency,
            correlation_id: self.ids.correlation_id(),
            idempotency_key: request.key,
            created_at: now,
            updated_at: now,
        };
        let fingerprint = Fingerprint::of_transfer(kind, sender, receiver, amount, currency);
        if let Begin::Existing { record, current } =
            self.store.begin(&transfer, &fingerprint).await?
        {
            let lease = self.config.idempotency_lease;
            return match idempotency::check(&record, &current, &fingerprint, now, lease) {
                IdempotencyCheck::Replay(transfer) => Ok(Created {
                    transfer,
                    replayed: true,
                }),
                IdempotencyCheck::InFlight => Err(CreateError::InFlight),
                IdempotencyCheck::Reused => Err(CreateError::KeyReused),
            };
        }
        tracing::info!(transfer_id = %transfer.id, correlation_id = %transfer.correlation_id,
            %amount, %currency, ?kind, "saga: transfer INITIATED");
        let attempt = self.attempt_reserve(&transfer).await;
        let transfer = self
            .store
            .record_reserve(transfer.id, attempt, self.clock.now())
            .await?;
        metrics::saga_transition(transfer.status, 1);
        self.waiters.wake([transfer.id]);
        Ok(Created {
            transfer,
            replayed: false,
        })
    }

    /// A transfer by id.
    pub async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        self.store.transfer(id).await
    }

    /// Waits until the transfer is terminal or `wait` (capped at
    /// [`TransactionConfig::max_wait`]) has passed, then returns it as it is.
    /// Woken by this process's changes to the transfer; reads it again every
    /// [`TransactionConfig::wait_poll`] otherwise. After
    /// [`TransactionService::stop_waits`] it returns the transfer as it is
    /// at once.
    pub async fn wait_for(
        &self,
        id: TransferId,
        wait: Duration,
    ) -> Result<Option<Transfer>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait.min(self.config.max_wait);
        let waiting = self.waiters.wait_on(id);
        loop {
            // Made before the read, so a change after it is not missed.
            let notified = waiting.notify.notified();
            let transfer = self.store.transfer(id).await?;
            let done = transfer.as_ref().is_none_or(|t| t.status.is_terminal());
            if done || self.waiters.stopped() || tokio::time::Instant::now() >= deadline {
                return Ok(transfer);
            }
            let poll = deadline.min(tokio::time::Instant::now() + self.config.wait_poll);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(poll) => {}
            }
        }
    }

    /// Ends every wait ([`TransactionService::wait_for`]), those under way
    /// and those to come, with the transfer as it is: for a process
    /// shutting down, whose long polls would otherwise hold it for their
    /// whole wait. Nothing else of the service changes.
    pub fn stop_waits(&self) {
        self.waiters.stop();
    }

    /// Wakes the waits ([`TransactionService::wait_for`]) on these
    /// transfers, so they read them again now: for changes this process
    /// learns of from elsewhere, such as another instance's consumer. The
    /// process's own changes wake them already.
    pub fn transfers_changed(&self, ids: impl IntoIterator<Item = TransferId>) {
        self.waiters.wake(ids);
    }

    /// One retrier pass: claims INITIATED transfers older than
    /// [`TransactionConfig::retry_min_age`] that no other instance holds,
    /// repeats their reserve and records definite answers.
    ///
    /// A pass keeps within its claim. Once the claim's lease
    /// ([`TransactionConfig::retry_lease`]) has ended, another instance may
    /// claim the same transfers, and a pass still going would reserve them
    /// at the same moment. So a pass starts a reserve only while the lease
    /// has room for one more call, taking a call to last as long as the
    /// longest of the pass so far, and stops there. The transfers it leaves
    /// keep its lease until the lease ends; then the next pass, of any
    /// instance, claims them. (Renewing the lease per transfer would keep
    /// the pass going, at the cost of a store write per transfer.) A call
    /// already started is not cut short: a lease at least as long as the
    /// wallet gateway's timeout keeps even a slow first call within it.
    pub async fn retry_pending(&self) -> Result<RetryReport, StoreError> {
        let now = self.clock.now();
        let min_age = chrono::Duration::from_std(self.config.retry_min_age).unwrap_or_default();
        let claim = Claim::new(self.worker, now, self.config.retry_lease);
        let pending = self
            .store
            .claim_initiated(&claim, now - min_age, self.config.retry_batch)
            .await?;
        let mut report = RetryReport::default();
        let mut moved = Vec::new();
        let mut longest = chrono::Duration::zero();
        for transfer in &pending {
            let started = self.clock.now();
            if started + longest >= claim.until {
                tracing::info!(
                    left = pending.len() - report.attempted,
                    "retrier pass: lease ending, the rest is left to the next pass"
                );
                break;
            }
            report.attempted += 1;
            metrics::reserve_retries(1);
            let attempt = self.attempt_reserve(transfer).await;
            longest = longest.max(self.clock.now() - started);
            if let ReserveAttempt::Definite(_) = attempt {
                let now = self
                    .store
                    .record_reserve(transfer.id, attempt, self.clock.now())
                    .await?;
                metrics::saga_transition(now.status, 1);
                moved.push(now.id);
                report.answered += 1;
            }
        }
        self.waiters.wake(moved);
        Ok(report)
    }

    async fn attempt_reserve(&self, transfer: &Transfer) -> ReserveAttempt {
        let request = ReserveRequest {
            transfer_id: transfer.id,
            correlation_id: transfer.correlation_id,
            sender_wallet_id: transfer.sender_wallet_id,
            receiver_wallet_id: transfer.receiver_wallet_id,
            amount: transfer.amount,
            currency: transfer.currency,
        };
        match self.gateway.reserve(&request).await {
            Ok(outcome) => {
                tracing::info!(transfer_id = %transfer.id, correlation_id = %transfer.correlation_id,
                    ?outcome, "saga: reserve answered");
                ReserveAttempt::Definite(outcome)
            }
            Err(error) => {
                tracing::warn!(transfer_id = %transfer.id, correlation_id = %transfer.correlation_id,
                    %error, "saga: reserve ambiguous, left INITIATED for the retrier");
                metrics::reserve_ambiguous();
                ReserveAttempt::Ambiguous
            }
        }
    }

    /// Finds sender, receiver and currency, refusing what can be refused
    /// before anything is stored.
    async fn resolve(
        &self,
        parties: Parties,
        requested: Option<Currency>,
    ) -> Result<(WalletId, WalletId, Currency), CreateError> {
        let (sender, receiver, currency) = match parties {
            Parties::Transfer { sender, receiver } => {
                if sender == receiver {
                    return Err(CreateError::SameWallet);
                }
                let (s, r) = (
                    self.currency_of(sender).await?,
                    self.currency_of(receiver).await?,
                );
                if s != r {
                    return Err(CreateError::CurrencyMismatch(format!(
                        "sender holds {s}, receiver holds {r}"
                    )));
                }
                (sender, receiver, s)
            }
            Parties::Deposit(wallet) => {
                let c = self.currency_of(wallet).await?;
                (WalletId::system(c), wallet, c)
            }
            Parties::Withdrawal(wallet) => {
                let c = self.currency_of(wallet).await?;
                (wallet, WalletId::system(c), c)
            }
        };
        match requested {
            Some(r) if r != currency => Err(CreateError::CurrencyMismatch(format!(
                "request says {r}, wallets hold {currency}"
            ))),
            _ => Ok((sender, receiver, currency)),
        }
    }

    /// A user wallet's currency, cached. System accounts are not addressable
    /// by clients.
    async fn currency_of(&self, wallet: WalletId) -> Result<Currency, CreateError> {
        if wallet.system_currency().is_some() {
            return Err(CreateError::WalletNotFound(wallet));
        }
        if let Some(c) = self.currencies.lock().expect("cache lock").get(&wallet) {
            return Ok(*c);
        }
        let currency = self
            .gateway
            .wallet_currency(wallet)
            .await?
            .ok_or(CreateError::WalletNotFound(wallet))?;
        let mut cache = self.currencies.lock().expect("cache lock");
        if cache.len() >= self.config.currency_cache {
            cache.clear();
        }
        cache.insert(wallet, currency);
        Ok(currency)
    }

    /// Forgets everything not in the store (the currency cache), as a restart
    /// would.
    pub fn forget_caches(&self) {
        self.currencies.lock().expect("cache lock").clear();
    }
}

/// Step 8 of the saga: ledger outcomes move transfers to their terminal state.
#[async_trait]
impl<S: TransferStore + TransferReads, G: WalletGateway> EventHandler for TransactionService<S, G> {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        let (inbound, handled) =
            Handled::accept(batch, |e| e.event.ledger_outcome(), "not a ledger outcome");
        let applied = self
            .store
            .apply_ledger_outcomes(&inbound, self.clock.now())
            .await?;
        for id in &applied.changed {
            let Some(cause) = inbound.iter().find(|i| i.envelope.transfer_id == *id) else {
                continue;
            };
            let to = match cause.body {
                LedgerOutcome::Succeeded => TransferStatus::Succeeded,
                LedgerOutcome::Failed(_) => TransferStatus::Failed,
            };
            tracing::info!(transfer_id = %id, correlation_id = %cause.envelope.correlation_id,
                status = ?to, "saga: transfer completed");
            metrics::saga_transition(to, 1);
        }
        metrics::dead_letters(
            groups::TRANSACTION,
            DeadLetteredBy::Store,
            applied.refused.len(),
        );
        for r in &applied.refused {
            tracing::error!(event_id = %r.event_id, reason = %r.reason,
                "ledger outcome refused, dead-lettered through the outbox");
        }
        self.waiters.wake(applied.changed.iter().copied());
        Ok(handled)
    }
}
