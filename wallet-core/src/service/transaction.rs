//! The transaction service: API entry point and saga coordinator.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;
use tokio::sync::{Notify, Semaphore, oneshot};

use crate::event::{Envelope, groups};
use crate::history::{HistoryPage, HistoryQuery};
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
use crate::tags::Tags;
use crate::time::Clock;
use crate::transfer::{
    HoldEnd, RefundRejection, Transfer, TransferKind, TransferStatus, Unfinished,
};
use crate::wallet::{HoldRelease, HoldState, ReserveRequest};

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
    /// it: a safety net, not the way changes are seen. This process wakes
    /// the waits on the transfers it moves, and a change made elsewhere
    /// (another instance's consumer or retrier) wakes them once announced
    /// through [`TransactionService::transfers_changed`], as the transaction
    /// service's process does for every change its database announces. The
    /// poll only bounds how late a wait sees a change whose announcement
    /// was lost (the announcing process died right after its commit).
    /// Each poll is a read of the store by every waiting request, so it is
    /// long. Default 5 s.
    pub wait_poll: Duration,
    /// New transfers stored, reserved and recorded together at most: the
    /// requests that arrive while a batch is in flight go together in the
    /// next one (no timer: a lone request goes at once). Default 256.
    pub batch_size: usize,
    /// Batches in flight at once at most. Default 2.
    pub batches_in_flight: usize,
    /// Requests waiting for a batch at most; one more is refused at once
    /// with [`CreateError::Busy`] rather than made to wait. Default 4,096.
    pub batch_queue: usize,
    /// A hold's expiry when its request names none. Default 7 days.
    pub hold_expiry: Duration,
    /// The longest expiry a hold may ask for. Default 30 days.
    pub max_hold_expiry: Duration,
    /// Expired holds one sweeper pass releases at most. Default 100.
    pub sweep_batch: usize,
    /// How long a sweeper pass holds the holds it claimed (as
    /// [`TransactionConfig::retry_lease`] for the retrier). Default 2 s.
    pub sweep_lease: Duration,
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
            wait_poll: Duration::from_secs(5),
            batch_size: 256,
            batches_in_flight: 2,
            batch_queue: 4096,
            hold_expiry: Duration::from_secs(7 * 24 * 3600),
            max_hold_expiry: Duration::from_secs(30 * 24 * 3600),
            sweep_batch: 100,
            sweep_lease: Duration::from_secs(2),
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
    /// The client's reference and metadata.
    pub tags: Tags,
}

/// A client's request to hold a wallet's funds for a later capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    /// The client's idempotency key.
    pub key: IdempotencyKey,
    /// Whose funds to hold.
    pub wallet: WalletId,
    /// Who a capture that names no receiver pays, if anyone.
    pub receiver: Option<WalletId>,
    /// How much, not yet checked against the currency.
    pub amount: Decimal,
    /// The currency, if the client named it; it must match the wallet's.
    pub currency: Option<Currency>,
    /// How long until the hold expires;
    /// [`TransactionConfig::hold_expiry`] when `None`.
    pub expires_in: Option<Duration>,
    /// The client's reference and metadata.
    pub tags: Tags,
}

/// A client's request to capture a hold: move up to what it holds to a
/// receiver through the ledger, releasing the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequest {
    /// The client's idempotency key.
    pub key: IdempotencyKey,
    /// The hold.
    pub hold: TransferId,
    /// How much; all the hold holds when `None`.
    pub amount: Option<Decimal>,
    /// Who is paid; the hold's receiver when `None`.
    pub receiver: Option<WalletId>,
    /// The client's reference and metadata for the capture.
    pub tags: Tags,
}

/// A client's request to send a SUCCEEDED transfer's money back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The client's idempotency key.
    pub key: IdempotencyKey,
    /// The transfer refunded.
    pub original: TransferId,
    /// How much; the original's whole amount when `None`.
    pub amount: Option<Decimal>,
    /// The client's reference and metadata for the refund.
    pub tags: Tags,
}

/// Why a void was not done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VoidError {
    /// No such hold. HTTP 404 `hold_not_found`.
    #[error("hold {0} not found")]
    NotFound(TransferId),
    /// The hold's reserve has no definite answer yet. HTTP 409
    /// `hold_pending`; retry.
    #[error("hold {0} is not decided yet")]
    Pending(TransferId),
    /// The hold ended otherwise (captured, expired or failed). HTTP 409
    /// with the hold.
    #[error("hold ended {:?}", .0.status)]
    Ended(Box<Transfer>),
    /// The wallet service could not be asked. HTTP 503; retry.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// Storage failed. HTTP 503; retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a page of history was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The query names a wallet the wallet service does not know. HTTP 404
    /// `wallet_not_found`.
    #[error("wallet {0} not found")]
    WalletNotFound(WalletId),
    /// The wallet service could not be asked. HTTP 503; retry.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// Storage failed. HTTP 503; retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one sweeper pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired HELD holds claimed.
    pub claimed: usize,
    /// Of those, how many the wallet service released (or found ended
    /// otherwise), recorded.
    pub ended: usize,
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
    /// Too many requests wait for a batch ([`TransactionConfig::batch_queue`]):
    /// nothing stored. HTTP 503; retry after a moment.
    #[error("too many transfer requests waiting; retry")]
    Busy,
    /// The batch this request was in was cut short (its caller was
    /// cancelled): the transfer may be stored INITIATED, and then it
    /// finishes through the retrier. HTTP 503; retry with the same key.
    #[error("the request's batch was interrupted; retry with the same key")]
    Interrupted,
    /// A capture named no hold this service knows. HTTP 404
    /// `hold_not_found`.
    #[error("hold {0} not found")]
    HoldNotFound(TransferId),
    /// A capture came while its hold's reserve has no definite answer.
    /// HTTP 409 `hold_pending`; retry.
    #[error("hold {0} is not decided yet")]
    HoldPending(TransferId),
    /// A capture came for a hold that was refused (FAILED): it never held
    /// anything. HTTP 409 `hold_failed`.
    #[error("hold {0} failed; it holds nothing")]
    HoldFailed(TransferId),
    /// A capture names no receiver, and neither does its hold. HTTP 422
    /// `receiver_required`.
    #[error("the hold names no receiver: the capture must")]
    ReceiverRequired,
    /// A refund named no transfer this service knows. HTTP 404
    /// `transfer_not_found`.
    #[error("transfer {0} not found")]
    TransferNotFound(TransferId),
    /// The refund was refused: the original is not SUCCEEDED (HTTP 409
    /// `transfer_not_succeeded`), is a hold or a refund (HTTP 422
    /// `not_refundable`), or the refunds would exceed it (HTTP 422
    /// `exceeds_refundable`).
    #[error(transparent)]
    Refund(RefundRejection),
    /// Another transfer has the request's reference in its wallet
    /// ([`Transfer::reference_wallet`]): this one. Nothing was stored. HTTP
    /// 409 `reference_taken` naming it.
    #[error("the reference is taken by transfer {0}")]
    ReferenceTaken(TransferId),
    /// A hold's expiry is zero or beyond
    /// [`TransactionConfig::max_hold_expiry`]. HTTP 422 `invalid_expiry`.
    #[error("a hold expires after 1 s to {max_s} s")]
    InvalidExpiry {
        /// The longest expiry accepted, in seconds.
        max_s: u64,
    },
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
    batches: Batches,
}

/// A transfer checked and waiting for its batch, and where its answer goes.
struct Pending {
    transfer: Transfer,
    fingerprint: Fingerprint,
    reply: oneshot::Sender<Result<Created, CreateError>>,
}

/// The requests waiting for a batch, and the turns to run one. No task of
/// its own: a waiting caller that gets a turn takes what has gathered and
/// runs it, for itself and the others.
struct Batches {
    queue: Mutex<VecDeque<Pending>>,
    turns: Semaphore,
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
        self.wake_all();
    }

    /// Wakes every wait, whatever its transfer.
    fn wake_all(&self) {
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
            batches: Batches {
                queue: Mutex::new(VecDeque::new()),
                turns: Semaphore::new(config.batches_in_flight.max(1)),
            },
            currencies: Mutex::new(HashMap::new()),
            waiters: Waiters::default(),
            config,
        }
    }

    /// The store, for read-only use by routers and audits.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Steps 1 and 2 of the saga: check the request, store it INITIATED
    /// with its key, reserve synchronously, record the answer.
    ///
    /// Checked requests are batched (natural batching: no timer). A caller
    /// queues its transfer and waits; whenever fewer than
    /// [`TransactionConfig::batches_in_flight`] batches run, a waiting
    /// caller takes up to [`TransactionConfig::batch_size`] queued
    /// transfers and runs them as one batch: their transfers and keys in
    /// one store unit, one reserve call for those new, their answers in one
    /// store unit. A lone request is a batch of one at once; under load,
    /// what arrives while batches are in flight goes together in the next.
    /// Requests of a batch are decided in arrival order.
    ///
    /// A caller cancelled while it runs a batch leaves that batch's other
    /// requests [`CreateError::Interrupted`], so a server runs each request
    /// in a task of its own that outlives the client's connection.
    pub async fn create(&self, request: TransferRequest) -> Result<Created, CreateError> {
        let (transfer, fingerprint) = self.check(request).await?;
        self.submit(transfer, fingerprint).await
    }

    /// Holds a wallet's funds: a transfer of kind [`TransferKind::Hold`],
    /// stored and reserved as [`TransactionService::create`] does (batched
    /// with the transfers), HELD once the wallet service has reserved it.
    pub async fn hold(&self, request: HoldRequest) -> Result<Created, CreateError> {
        let expires_in = request.expires_in.unwrap_or(self.config.hold_expiry);
        if expires_in.is_zero() || expires_in > self.config.max_hold_expiry {
            return Err(CreateError::InvalidExpiry {
                max_s: self.config.max_hold_expiry.as_secs(),
            });
        }
        let currency = self.currency_of(request.wallet).await?;
        let receiver = match request.receiver {
            None => request.wallet,
            Some(receiver) => {
                self.check_receiver(request.wallet, receiver, currency)
                    .await?;
                receiver
            }
        };
        if let Some(requested) = request.currency.filter(|c| *c != currency) {
            return Err(CreateError::CurrencyMismatch(format!(
                "request says {requested}, the wallet holds {currency}"
            )));
        }
        let amount = Amount::new(request.amount, currency)?;
        let now = self.clock.now();
        let mut transfer = self.new_transfer(
            TransferKind::Hold,
            (request.wallet, receiver, amount, currency),
            request.key,
        );
        let lease = chrono::Duration::from_std(expires_in).unwrap_or(chrono::Duration::MAX);
        transfer.expires_at = Some(now.checked_add_signed(lease).unwrap_or(now));
        let fingerprint = Fingerprint::of_hold(
            request.wallet,
            request.receiver,
            amount,
            currency,
            expires_in.as_secs(),
        )
        .tagged(&request.tags);
        transfer.tags = request.tags;
        self.submit(transfer, fingerprint).await
    }

    /// Captures a hold: a transfer from the hold's wallet (its `hold_id`
    /// the hold) whose reserve takes its funds from the hold. The wallet
    /// service decides, under the hold's lock, whether the capture or the
    /// hold's void or expiry comes first: a capture that comes second is
    /// FAILED with [`FailureReason::HoldVoided`],
    /// [`FailureReason::HoldExpired`] or [`FailureReason::HoldCaptured`].
    ///
    /// [`FailureReason::HoldVoided`]: crate::outcome::FailureReason::HoldVoided
    /// [`FailureReason::HoldExpired`]: crate::outcome::FailureReason::HoldExpired
    /// [`FailureReason::HoldCaptured`]: crate::outcome::FailureReason::HoldCaptured
    pub async fn capture(&self, request: CaptureRequest) -> Result<Created, CreateError> {
        let hold = self
            .store
            .transfer(request.hold)
            .await?
            .filter(|t| t.kind == TransferKind::Hold)
            .ok_or(CreateError::HoldNotFound(request.hold))?;
        match hold.status {
            TransferStatus::Initiated => return Err(CreateError::HoldPending(hold.id)),
            TransferStatus::Failed => return Err(CreateError::HoldFailed(hold.id)),
            _ => {}
        }
        let receiver = request
            .receiver
            .or(hold.hold_receiver())
            .ok_or(CreateError::ReceiverRequired)?;
        self.check_receiver(hold.sender_wallet_id, receiver, hold.currency)
            .await?;
        let amount = match request.amount {
            Some(amount) => Amount::new(amount, hold.currency)?,
            None => hold.amount,
        };
        let mut transfer = self.new_transfer(
            TransferKind::Transfer,
            (hold.sender_wallet_id, receiver, amount, hold.currency),
            request.key,
        );
        transfer.correlation_id = hold.correlation_id;
        transfer.hold_id = Some(hold.id);
        let fingerprint =
            Fingerprint::of_capture(hold.id, receiver, amount, hold.currency).tagged(&request.tags);
        transfer.tags = request.tags;
        self.submit(transfer, fingerprint).await
    }

    /// Refunds a SUCCEEDED transfer, in whole or in part: a new transfer
    /// (its `refund_of` the original) from the original's receiver back to
    /// its sender, of the reversed kind (a deposit's refund is a
    /// withdrawal), reserved and posted as any transfer; FAILED
    /// `insufficient_funds` when the receiver lacks the money. The store
    /// decides, under a lock on the original, that the refunds not FAILED
    /// stay within its amount ([`crate::transfer::decide_refund`]), so
    /// refunds racing each other never exceed it.
    pub async fn refund(&self, request: RefundRequest) -> Result<Created, CreateError> {
        let original = self
            .store
            .transfer(request.original)
            .await?
            .ok_or(CreateError::TransferNotFound(request.original))?;
        let kind = original
            .kind
            .reversed()
            .ok_or(CreateError::Refund(RefundRejection::Hold))?;
        let amount = match request.amount {
            Some(amount) => Amount::new(amount, original.currency)?,
            None => original.amount,
        };
        let back = (
            original.receiver_wallet_id,
            original.sender_wallet_id,
            amount,
            original.currency,
        );
        let mut refund = self.new_transfer(kind, back, request.key);
        refund.correlation_id = original.correlation_id;
        refund.refund_of = Some(original.id);
        let fingerprint =
            Fingerprint::of_refund(original.id, amount, original.currency).tagged(&request.tags);
        refund.tags = request.tags;
        let begun = self
            .store
            .begin_refund(&refund, &fingerprint)
            .await?
            .map_err(CreateError::Refund)?;
        if begun == Begin::Created {
            tracing::info!(transfer_id = %refund.id, correlation_id = %refund.correlation_id,
                refund_of = %original.id, amount = %refund.amount, "saga: refund INITIATED");
        }
        let mut answers = self
            .reserve_begun(vec![(refund, fingerprint)], vec![begun])
            .await;
        answers.pop().expect("one answer per refund")
    }

    /// One page of history: the transfers `query` matches, newest first
    /// ([`crate::history`]). An empty page of a wallet is
    /// [`HistoryError::WalletNotFound`] when the wallet service knows no
    /// such wallet (a page with transfers needs no question).
    pub async fn history(&self, query: &HistoryQuery) -> Result<HistoryPage, HistoryError> {
        let page = self.store.history(query).await?;
        if let Some(wallet) = query.wallet.filter(|_| page.transfers.is_empty()) {
            match self.currency_of(wallet).await {
                Ok(_) => {}
                Err(CreateError::Gateway(e)) => return Err(HistoryError::Gateway(e)),
                Err(_) => return Err(HistoryError::WalletNotFound(wallet)),
            }
        }
        Ok(page)
    }

    /// The refunds of a transfer, oldest first.
    pub async fn refunds_of(&self, original: TransferId) -> Result<Vec<Transfer>, StoreError> {
        self.store.refunds_of(original).await
    }

    /// Voids a HELD hold: the wallet service releases its funds, unless a
    /// capture took them or its expiry passed first. A hold voided before
    /// answers as it is, so a void may be repeated.
    pub async fn void(&self, hold: TransferId) -> Result<Transfer, VoidError> {
        let hold = self
            .store
            .transfer(hold)
            .await?
            .filter(|t| t.kind == TransferKind::Hold)
            .ok_or(VoidError::NotFound(hold))?;
        let hold = match hold.status {
            TransferStatus::Initiated => return Err(VoidError::Pending(hold.id)),
            TransferStatus::Held => {
                let mut ended = self.release(&[&hold], HoldRelease::Void).await?;
                ended.pop().unwrap_or(hold)
            }
            _ => hold,
        };
        match hold.status {
            TransferStatus::Voided => Ok(hold),
            // The wallet service found its expiry not passed and left it
            // held: not for a void, which releases at once.
            TransferStatus::Held => Err(VoidError::Store(StoreError::Integrity(format!(
                "hold {} still held after its void",
                hold.id
            )))),
            _ => Err(VoidError::Ended(Box::new(hold))),
        }
    }

    /// One sweeper pass: claims HELD holds whose expiry has passed that no
    /// other instance holds ([`TransactionConfig::sweep_lease`]), asks the
    /// wallet service to expire them in one call, and records how each
    /// ended. The wallet service decides each end by its own clock and its
    /// lock on the hold, so two sweepers, or a sweeper and a capture, never
    /// release a hold twice. A failed call leaves the holds to a later pass.
    pub async fn sweep_expired(&self) -> Result<SweepReport, StoreError> {
        let claim = Claim::new(self.worker, self.clock.now(), self.config.sweep_lease);
        let due = self
            .store
            .claim_expired_holds(&claim, self.config.sweep_batch)
            .await?;
        if due.is_empty() {
            return Ok(SweepReport::default());
        }
        let holds: Vec<&Transfer> = due.iter().collect();
        let ended = match self.release(&holds, HoldRelease::Expire).await {
            Ok(ended) => ended.iter().filter(|t| t.status.is_terminal()).count(),
            Err(VoidError::Store(error)) => return Err(error),
            Err(error) => {
                tracing::warn!(holds = due.len(), %error,
                    "saga: expired holds not released, left for the next pass");
                0
            }
        };
        Ok(SweepReport {
            claimed: due.len(),
            ended,
        })
    }

    /// Asks the wallet service to release `holds` and records each end it
    /// answers; returns the holds as recorded (those the wallet service
    /// left held are not returned).
    async fn release(
        &self,
        holds: &[&Transfer],
        release: HoldRelease,
    ) -> Result<Vec<Transfer>, VoidError> {
        let requests: Vec<(TransferId, HoldRelease)> =
            holds.iter().map(|h| (h.id, release)).collect();
        let answers = self.gateway.release_holds(&requests).await?;
        let mut ends: Vec<(TransferId, HoldEnd)> = Vec::with_capacity(holds.len());
        for (hold, answer) in holds.iter().zip(answers) {
            match answer {
                Some(HoldState::Ended(end)) => {
                    tracing::info!(transfer_id = %hold.id, correlation_id = %hold.correlation_id,
                        ?end, ?release, "saga: hold ended");
                    ends.push((hold.id, end));
                }
                Some(HoldState::Held) => {}
                None => tracing::error!(transfer_id = %hold.id,
                    correlation_id = %hold.correlation_id,
                    "saga: the wallet service knows no hold this service holds"),
            }
        }
        let recorded = self.store.record_hold_ends(&ends, self.clock.now()).await?;
        for hold in &recorded {
            metrics::saga_transition(hold.status, 1);
        }
        self.waiters.wake(recorded.iter().map(|t| t.id));
        Ok(recorded)
    }

    /// Refuses a receiver that is the paying wallet itself, or holds
    /// another currency than the funds it is to get.
    async fn check_receiver(
        &self,
        payer: WalletId,
        receiver: WalletId,
        currency: Currency,
    ) -> Result<(), CreateError> {
        if receiver == payer {
            return Err(CreateError::SameWallet);
        }
        let theirs = self.currency_of(receiver).await?;
        if theirs != currency {
            return Err(CreateError::CurrencyMismatch(format!(
                "the funds are in {currency}, the receiver holds {theirs}"
            )));
        }
        Ok(())
    }

    /// Queues a checked transfer for a batch and waits for its answer.
    async fn submit(
        &self,
        transfer: Transfer,
        fingerprint: Fingerprint,
    ) -> Result<Created, CreateError> {
        // Nothing waits and a turn is free: a batch of one, at once, with
        // no queue to go through.
        if let Ok(_turn) = self.batches.turns.try_acquire()
            && self
                .batches
                .queue
                .lock()
                .expect("batch queue lock")
                .is_empty()
        {
            metrics::transfer_batch(1);
            let mut answers = self.create_batch(vec![(transfer, fingerprint)]).await;
            return answers.pop().expect("one answer per request");
        }
        let (reply, mut answer) = oneshot::channel();
        {
            let mut queue = self.batches.queue.lock().expect("batch queue lock");
            if queue.len() >= self.config.batch_queue {
                metrics::transfer_requests_refused_busy();
                return Err(CreateError::Busy);
            }
            queue.push_back(Pending {
                transfer,
                fingerprint,
                reply,
            });
        }
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => return answer.unwrap_or(Err(CreateError::Interrupted)),
                turn = self.batches.turns.acquire() => {
                    let _turn = turn.expect("the turns are never closed");
                    let batch: Vec<Pending> = {
                        let mut queue = self.batches.queue.lock().expect("batch queue lock");
                        let n = queue.len().min(self.config.batch_size.max(1));
                        queue.drain(..n).collect()
                    };
                    if batch.is_empty() {
                        // This request is in a batch another caller runs.
                        return answer.await.unwrap_or(Err(CreateError::Interrupted));
                    }
                    self.run_batch(batch).await;
                }
            }
        }
    }

    /// Checks a request against what can be refused before anything is
    /// stored, and makes its INITIATED transfer and fingerprint.
    async fn check(
        &self,
        request: TransferRequest,
    ) -> Result<(Transfer, Fingerprint), CreateError> {
        let (sender, receiver, currency) = self.resolve(request.parties, request.currency).await?;
        let amount = Amount::new(request.amount, currency)?;
        let kind = match request.parties {
            Parties::Transfer { .. } => TransferKind::Transfer,
            Parties::Deposit(_) => TransferKind::Deposit,
            Parties::Withdrawal(_) => TransferKind::Withdrawal,
        };
        let mut transfer =
            self.new_transfer(kind, (sender, receiver, amount, currency), request.key);
        let fingerprint = Fingerprint::of_transfer(kind, sender, receiver, amount, currency)
            .tagged(&request.tags);
        transfer.tags = request.tags;
        Ok((transfer, fingerprint))
    }

    /// A new INITIATED transfer of `kind` from sender to receiver, now.
    fn new_transfer(
        &self,
        kind: TransferKind,
        (sender, receiver, amount, currency): (WalletId, WalletId, Amount, Currency),
        key: IdempotencyKey,
    ) -> Transfer {
        let now = self.clock.now();
        Transfer {
            id: self.ids.transfer_id(),
            kind,
            status: TransferStatus::Initiated,
            failure_reason: None,
            sender_wallet_id: sender,
            receiver_wallet_id: receiver,
            amount,
            currency,
            correlation_id: self.ids.correlation_id(),
            idempotency_key: key,
            created_at: now,
            updated_at: now,
            expires_at: None,
            hold_id: None,
            captured_by: None,
            refund_of: None,
            tags: Tags::default(),
        }
    }

    /// Runs one batch and sends each request its answer.
    async fn run_batch(&self, batch: Vec<Pending>) {
        metrics::transfer_batch(batch.len());
        let (items, replies): (Vec<(Transfer, Fingerprint)>, Vec<_>) = batch
            .into_iter()
            .map(|p| ((p.transfer, p.fingerprint), p.reply))
            .unzip();
        for (answer, reply) in self.create_batch(items).await.into_iter().zip(replies) {
            // A caller that went away no longer needs its answer.
            let _ = reply.send(answer);
        }
    }

    /// One batch of checked requests, in order: their transfers and keys
    /// in one store unit, one reserve call for the new ones, the answers
    /// in one store unit. One answer per request.
    async fn create_batch(
        &self,
        items: Vec<(Transfer, Fingerprint)>,
    ) -> Vec<Result<Created, CreateError>> {
        let begun = match self.store.begin_batch(&items).await {
            Ok(begun) => begun,
            Err(error) => return items.iter().map(|_| Err(error.clone().into())).collect(),
        };
        self.reserve_begun(items, begun).await
    }

    /// Transfers their store unit began, in order: a key used before
    /// answers as [`idempotency::check`] says; the new ones are reserved in
    /// one call and their answers recorded in one store unit. One answer
    /// per transfer.
    async fn reserve_begun(
        &self,
        items: Vec<(Transfer, Fingerprint)>,
        begun: Vec<Begin>,
    ) -> Vec<Result<Created, CreateError>> {
        let now = self.clock.now();
        let lease = self.config.idempotency_lease;
        let mut answers: Vec<Option<Result<Created, CreateError>>> =
            Vec::with_capacity(items.len());
        let mut new = Vec::new();
        for ((transfer, fingerprint), begin) in items.into_iter().zip(begun) {
            let answer = match begin {
                Begin::Existing { record, current } => Some(
                    match idempotency::check(&record, &current, &fingerprint, now, lease) {
                        IdempotencyCheck::Replay(transfer) => Ok(Created {
                            transfer: *transfer,
                            replayed: true,
                        }),
                        IdempotencyCheck::InFlight => Err(CreateError::InFlight),
                        IdempotencyCheck::Reused => Err(CreateError::KeyReused),
                    },
                ),
                Begin::ReferenceTaken(taken) => Some(Err(CreateError::ReferenceTaken(taken))),
                Begin::Created => {
                    tracing::info!(transfer_id = %transfer.id,
                        correlation_id = %transfer.correlation_id, amount = %transfer.amount,
                        currency = %transfer.currency, kind = ?transfer.kind,
                        "saga: transfer INITIATED");
                    new.push((answers.len(), transfer));
                    None
                }
            };
            answers.push(answer);
        }
        if !new.is_empty() {
            let transfers: Vec<&Transfer> = new.iter().map(|(_, t)| t).collect();
            let attempts = self.attempt_reserves(&transfers).await;
            match self
                .store
                .record_reserves(&attempts, self.clock.now())
                .await
            {
                Ok(recorded) => {
                    for transfer in &recorded {
                        metrics::saga_transition(transfer.status, 1);
                    }
                    self.waiters.wake(recorded.iter().map(|t| t.id));
                    for ((at, _), transfer) in new.iter().zip(recorded) {
                        answers[*at] = Some(Ok(Created {
                            transfer,
                            replayed: false,
                        }));
                    }
                }
                Err(error) => {
                    for (at, _) in &new {
                        answers[*at] = Some(Err(error.clone().into()));
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| a.expect("every request of the batch is answered"))
            .collect()
    }

    /// A transfer by id.
    pub async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, StoreError> {
        self.store.transfer(id).await
    }

    /// Waits until the transfer is terminal or `wait` (capped at
    /// [`TransactionConfig::max_wait`]) has passed, then returns it as it is.
    /// Reads the transfer when it starts and again each time it is woken:
    /// by this process's changes to the transfer, by changes announced
    /// through [`TransactionService::transfers_changed`] or
    /// [`TransactionService::any_transfer_changed`], and, failing those,
    /// every [`TransactionConfig::wait_poll`]. Each read counts in
    /// `wallet_transfer_wait_reads_total`. After
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
            metrics::transfer_wait_read();
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

    /// Wakes every wait ([`TransactionService::wait_for`]), so each reads
    /// its transfer again now: for when changes made elsewhere may have gone
    /// unannounced, such as while the connection that hears announcements
    /// was lost. Costs one read per waiting request.
    pub fn any_transfer_changed(&self) {
        self.waiters.wake_all();
    }

    /// One retrier pass: claims INITIATED transfers older than
    /// [`TransactionConfig::retry_min_age`] that no other instance holds,
    /// repeats their reserve in one call and records the definite answers.
    ///
    /// A pass keeps within its claim: it makes one reserve call, which the
    /// wallet gateway's timeout bounds, so a claim's lease
    /// ([`TransactionConfig::retry_lease`]) at least as long as that
    /// timeout outlasts the call. Another instance claims the same
    /// transfers only after the lease, and never reserves them while this
    /// pass does.
    pub async fn retry_pending(&self) -> Result<RetryReport, StoreError> {
        let now = self.clock.now();
        let min_age = chrono::Duration::from_std(self.config.retry_min_age).unwrap_or_default();
        let claim = Claim::new(self.worker, now, self.config.retry_lease);
        let pending = self
            .store
            .claim_initiated(&claim, now - min_age, self.config.retry_batch)
            .await?;
        if pending.is_empty() {
            return Ok(RetryReport::default());
        }
        metrics::reserve_retries(pending.len());
        let transfers: Vec<&Transfer> = pending.iter().collect();
        let attempts: Vec<(TransferId, ReserveAttempt)> = self
            .attempt_reserves(&transfers)
            .await
            .into_iter()
            .filter(|(_, attempt)| matches!(attempt, ReserveAttempt::Definite(_)))
            .collect();
        let recorded = self
            .store
            .record_reserves(&attempts, self.clock.now())
            .await?;
        for transfer in &recorded {
            metrics::saga_transition(transfer.status, 1);
        }
        self.waiters.wake(recorded.iter().map(|t| t.id));
        Ok(RetryReport {
            attempted: pending.len(),
            answered: recorded.len(),
        })
    }

    /// Counts the transfers not terminal by status and age, now, and sets
    /// the `wallet_transfers_unfinished` gauge to the counts (every status
    /// and bucket, zeros included, so an alert clears once they finish).
    pub async fn gauge_unfinished(&self) -> Result<Unfinished, StoreError> {
        let unfinished = self.store.unfinished(self.clock.now()).await?;
        metrics::unfinished_transfers(&unfinished);
        Ok(unfinished)
    }

    /// One reserve call for `transfers`: a definite answer for each, or,
    /// when the call fails, each ambiguous.
    async fn attempt_reserves(&self, transfers: &[&Transfer]) -> Vec<(TransferId, ReserveAttempt)> {
        let requests: Vec<ReserveRequest> =
            transfers.iter().map(|t| ReserveRequest::of(t)).collect();
        let outcomes = match self.gateway.reserve_batch(&requests).await {
            Ok(outcomes) if outcomes.len() == requests.len() => outcomes,
            Ok(outcomes) => {
                let error = GatewayError::Unavailable(format!(
                    "{} answers to {} reserves",
                    outcomes.len(),
                    requests.len()
                ));
                return self.ambiguous(transfers, &error);
            }
            Err(error) => return self.ambiguous(transfers, &error),
        };
        transfers
            .iter()
            .zip(outcomes)
            .map(|(t, outcome)| {
                tracing::info!(transfer_id = %t.id, correlation_id = %t.correlation_id,
                    ?outcome, "saga: reserve answered");
                (t.id, ReserveAttempt::Definite(outcome))
            })
            .collect()
    }

    /// Every transfer of a failed reserve call, left INITIATED for the
    /// retrier.
    fn ambiguous(
        &self,
        transfers: &[&Transfer],
        error: &GatewayError,
    ) -> Vec<(TransferId, ReserveAttempt)> {
        metrics::reserve_ambiguous(transfers.len());
        transfers
            .iter()
            .map(|t| {
                tracing::warn!(transfer_id = %t.id, correlation_id = %t.correlation_id,
                    %error, "saga: reserve ambiguous, left INITIATED for the retrier");
                (t.id, ReserveAttempt::Ambiguous)
            })
            .collect()
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
            match batch.iter().find(|e| e.event_id == r.event_id) {
                Some(e) => tracing::error!(transfer_id = %e.transfer_id,
                    correlation_id = %e.correlation_id, event_id = %r.event_id, reason = %r.reason,
                    "saga: ledger outcome refused, dead-lettered through the outbox"),
                None => tracing::error!(event_id = %r.event_id, reason = %r.reason,
                    "ledger outcome refused, dead-lettered through the outbox"),
            }
        }
        self.waiters.wake(applied.changed.iter().copied());
        Ok(handled)
    }
}
