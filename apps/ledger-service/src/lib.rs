//! The ledger service's HTTP API: read-only access to the entries.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v1/wallets/{id}/entries?limit=N&before=SEQ` | 200 [`EntriesPage`]; 404 `wallet_not_found`; 400 `invalid_id`, `invalid_query` |
//! | `GET /v1/wallets/{id}/balance[?as_of=T]` | 200 [`BalanceView`]; 404 `wallet_not_found`; 400 `invalid_id`, `invalid_query`; 503 `unavailable` |
//!
//! Entries come newest first. `limit` is 1 to [`MAX_PAGE`] (default
//! [`DEFAULT_PAGE`]); `before` returns entries with a smaller `seq` only. A
//! full page carries `next_before`, the `before` of the next page; the last
//! page carries `null`.
//!
//! The ledger keeps accounts, not wallets: which wallets exist is the
//! wallet service's to say. A page with entries needs no question (only
//! accounts that exist have entries); an empty page is answered 200 only if
//! the wallet service knows the wallet ([`WalletDirectory`]), 404
//! `wallet_not_found` otherwise, and 503 when it cannot be asked.
//!
//! The balance is the ledger's: credits minus debits of the account's
//! entries posted at or before `as_of` (an RFC 3339 time), and `position`,
//! the highest `seq` counted. `posted_at` is the clock of the ledger
//! instance that appended the posting, read once for the unit it was
//! written in; so an `as_of` further back than a unit takes is stable,
//! `seq` order and `posted_at` order may differ slightly between
//! instances, and an `as_of` in the future answers what is posted so far.
//! Without `as_of` it counts every entry and shows the wallet service's
//! balances of the wallet beside it ([`WalletDirectory::wallet`]), so a
//! reader sees how far the two are apart; that view needs the wallet
//! service and is 503 when it cannot be asked (ask with `as_of` for the
//! ledger alone). The same rule as the entries' decides 404: an account
//! the ledger has entries of needs no question.
//!
//! Errors use the shape of [`wallet_http::ApiError`].

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use wallet_core::Timestamp;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::ledger::{BalanceAsOf, Direction, Entry};
use wallet_core::money::{Amount, Balance, Currency};
use wallet_core::ports::{GatewayError, LedgerReads, LedgerStore, WalletGateway};
use wallet_core::service::LedgerService;
pub use wallet_core::service::ledger::MAX_PAGE;
use wallet_core::wallet::Wallet;
use wallet_http::openapi::{
    amount_schema, balance_schema, bounded_integer, currency_schema, signed_balance_schema,
    string_enum,
};
use wallet_http::{ApiError, ErrorBody, Json, Path, Query};

/// Entries per page when the client does not say.
pub const DEFAULT_PAGE: usize = 50;

/// One ledger entry of an account, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Entry)]
pub struct EntryResource {
    /// Position in the ledger; newer entries have larger numbers.
    pub seq: u64,
    /// The transfer that posted it.
    #[schema(value_type = uuid::Uuid)]
    pub transfer_id: TransferId,
    /// `debit` (money left the account) or `credit`.
    #[schema(schema_with = direction_schema)]
    pub direction: Direction,
    /// How much, as a decimal string.
    #[schema(schema_with = amount_schema)]
    pub amount: Amount,
    /// The account's currency.
    #[schema(schema_with = currency_schema)]
    pub currency: Currency,
    /// When it was posted.
    #[schema(value_type = String, format = DateTime)]
    pub posted_at: Timestamp,
}

impl From<Entry> for EntryResource {
    fn from(e: Entry) -> Self {
        EntryResource {
            seq: e.seq,
            transfer_id: e.transfer_id,
            direction: e.direction,
            amount: e.amount,
            currency: e.currency,
            posted_at: e.posted_at,
        }
    }
}

fn direction_schema() -> utoipa::openapi::schema::Object {
    string_enum(&["debit", "credit"], false)
}

/// One page of an account's entries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EntriesPage {
    /// The entries.
    pub entries: Vec<EntryResource>,
    /// Pass as `before` to get the next page; `null` when this page is not
    /// full (there is nothing older).
    pub next_before: Option<u64>,
}

/// The query of the entries route.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Entries wanted, 1 to 500; 50 when not given.
    #[param(schema_with = limit_schema)]
    pub limit: Option<usize>,
    /// Only entries with a smaller `seq`.
    #[param(schema_with = before_schema)]
    pub before: Option<u64>,
}

fn limit_schema() -> utoipa::openapi::schema::Object {
    let description = format!("Entries wanted; {DEFAULT_PAGE} when not given.");
    bounded_integer(1, MAX_PAGE as u64, &description)
}

fn before_schema() -> utoipa::openapi::schema::Object {
    bounded_integer(0, u64::MAX, "Only entries with a smaller `seq`.")
}

/// The query of the balance route.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// Count the entries posted at or before this time (RFC 3339, such as
    /// `2026-01-31T23:59:59Z`; a `+` of an offset is sent as `%2B`). When
    /// not given: every entry, and the wallet service's balances beside.
    #[param(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<Timestamp>,
}

/// A wallet's balance in the ledger, as of a time or now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BalanceView {
    /// The wallet (its ledger account).
    #[schema(value_type = uuid::Uuid)]
    pub wallet_id: WalletId,
    /// Its currency.
    #[schema(schema_with = currency_schema)]
    pub currency: Currency,
    /// The time asked for, as read; `null` when none was.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub as_of: Option<Timestamp>,
    /// Credits minus debits of the entries counted, as a decimal string.
    #[schema(schema_with = signed_balance_schema)]
    pub balance: Balance,
    /// The highest entry `seq` counted: the point of the ledger this
    /// balance reflects. `null` when no entry was.
    pub position: Option<u64>,
    /// The wallet service's balances, read just after the ledger's, when
    /// no `as_of` was given; `null` with `as_of`, and for an account the
    /// wallet service keeps no wallet of (a currency's system account).
    /// Once no transfer is in flight, `available + reserved` equals
    /// `balance`.
    pub wallet: Option<WalletSnapshot>,
}

/// A wallet's balances as the wallet service holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WalletSnapshot {
    /// Spendable now.
    #[schema(schema_with = balance_schema)]
    pub available: Balance,
    /// Reserved for transfers the ledger has not decided, or the wallet
    /// service has not finished.
    #[schema(schema_with = balance_schema)]
    pub reserved: Balance,
    /// When a balance last changed.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl From<Wallet> for WalletSnapshot {
    fn from(w: Wallet) -> Self {
        WalletSnapshot {
            available: w.available,
            reserved: w.reserved,
            updated_at: w.updated_at,
        }
    }
}

/// The wallets the wallet service keeps. Any [`WalletGateway`] is one: the
/// wallet service itself in one process, or its HTTP client.
#[async_trait]
pub trait WalletDirectory: Send + Sync + 'static {
    /// Wallet `id` as the wallet service holds it now, `None` if it does
    /// not exist.
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, GatewayError>;

    /// Whether wallet `id` exists.
    async fn exists(&self, id: WalletId) -> Result<bool, GatewayError> {
        Ok(self.wallet(id).await?.is_some())
    }
}

#[async_trait]
impl<G: WalletGateway> WalletDirectory for G {
    async fn wallet(&self, id: WalletId) -> Result<Option<Wallet>, GatewayError> {
        WalletGateway::wallet(self, id).await
    }

    /// By the currency alone, which any build of the wallet service answers.
    async fn exists(&self, id: WalletId) -> Result<bool, GatewayError> {
        Ok(self.wallet_currency(id).await?.is_some())
    }
}

/// What the routes share.
struct Ledger<S> {
    svc: Arc<LedgerService<S>>,
    wallets: Arc<dyn WalletDirectory>,
}

type Svc<S> = Arc<Ledger<S>>;

/// The public routes, self-contained (error shape included) so they can be
/// merged with other services' routes in one process.
pub fn api<S: LedgerStore + LedgerReads>(
    svc: Arc<LedgerService<S>>,
    wallets: impl WalletDirectory,
) -> Router {
    let state = Arc::new(Ledger {
        svc,
        wallets: Arc::new(wallets),
    });
    let routes = Router::new()
        .route("/v1/wallets/{id}/entries", get(entries::<S>))
        .route("/v1/wallets/{id}/balance", get(balance::<S>))
        .with_state(state);
    wallet_http::limit_body(routes)
}

/// The whole service: [`api`], its description at `/openapi.json`,
/// `/healthz`, 404/405 in the error shape, and request tracing.
pub fn router<S: LedgerStore + LedgerReads>(
    svc: Arc<LedgerService<S>>,
    wallets: impl WalletDirectory,
) -> Router {
    let routes = api(svc, wallets).merge(wallet_http::openapi::route(openapi()));
    wallet_http::service_router(routes)
}

/// The OpenAPI description of [`api`]'s routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    wallet_http::openapi::with_shared_answers(<ApiDoc as utoipa::OpenApi>::openapi())
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(entries, balance))]
struct ApiDoc;

/// A wallet's ledger entries, newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/wallets/{id}/entries",
    tag = "ledger",
    params(("id" = uuid::Uuid, Path, description = "The wallet"), PageQuery),
    responses(
        (status = 200, description = "A page of entries, empty for a wallet without entries", body = EntriesPage),
        (status = 400, description = "`invalid_id`, `invalid_query`", body = ErrorBody),
        (status = 404, description = "`wallet_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
async fn entries<S: LedgerStore + LedgerReads>(
    State(ledger): State<Svc<S>>,
    Path(account): Path<WalletId>,
    Query(query): Query<PageQuery>,
) -> Result<Json<EntriesPage>, ApiError> {
    let limit = wallet_http::page_limit(query.limit, DEFAULT_PAGE, MAX_PAGE)?;
    let entries = ledger.svc.entries(account, query.before, limit).await?;
    if entries.is_empty() && !ledger.wallets.exists(account).await? {
        return Err(wallet_not_found(account));
    }
    let next_before = match entries.last() {
        Some(last) if entries.len() == limit => Some(last.seq),
        _ => None,
    };
    Ok(Json(EntriesPage {
        entries: entries.into_iter().map(EntryResource::from).collect(),
        next_before,
    }))
}

fn wallet_not_found(account: WalletId) -> ApiError {
    ApiError::not_found("wallet_not_found", format!("wallet {account} not found"))
}

/// A wallet's balance from the ledger's entries posted at or before
/// `as_of`; without it, from every entry, beside the wallet service's
/// balances.
#[utoipa::path(
    get,
    path = "/v1/wallets/{id}/balance",
    tag = "ledger",
    params(("id" = uuid::Uuid, Path, description = "The wallet"), BalanceQuery),
    responses(
        (status = 200, description = "The balance; zero at `position` `null` when no entry is that old", body = BalanceView),
        (status = 400, description = "`invalid_id`, `invalid_query`", body = ErrorBody),
        (status = 404, description = "`wallet_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`: the ledger's storage, or (to answer without `as_of`, or for a wallet without entries) the wallet service", body = ErrorBody)
    )
)]
async fn balance<S: LedgerStore + LedgerReads>(
    State(ledger): State<Svc<S>>,
    Path(account): Path<WalletId>,
    Query(query): Query<BalanceQuery>,
) -> Result<Json<BalanceView>, ApiError> {
    let counted = ledger.svc.balance_as_of(account, query.as_of).await?;
    // As of a time, an account with entries needs no question.
    let wallet = match (&counted, query.as_of) {
        (Some(_), Some(_)) => None,
        _ => ledger.wallets.wallet(account).await?,
    };
    let counted = match (counted, &wallet) {
        (Some(counted), _) => counted,
        (None, Some(wallet)) => BalanceAsOf {
            account,
            currency: wallet.currency,
            balance: Balance::zero(wallet.currency),
            position: None,
        },
        (None, None) => return Err(wallet_not_found(account)),
    };
    Ok(Json(BalanceView {
        wallet_id: account,
        currency: counted.currency,
        as_of: query.as_of,
        balance: counted.balance,
        position: counted.position,
        wallet: wallet
            .filter(|_| query.as_of.is_none())
            .map(WalletSnapshot::from),
    }))
}
