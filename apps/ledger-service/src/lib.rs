//! The ledger service's HTTP API: read-only access to the entries.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v1/wallets/{id}/entries?limit=N&before=SEQ` | 200 [`EntriesPage`]; 404 `wallet_not_found`; 400 `invalid_id`, `invalid_query` |
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
//! Errors use the shape of [`wallet_http::ApiError`].

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use wallet_core::Timestamp;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::ledger::{Direction, Entry};
use wallet_core::money::{Amount, Currency};
use wallet_core::ports::{GatewayError, LedgerReads, LedgerStore, WalletGateway};
use wallet_core::service::LedgerService;
pub use wallet_core::service::ledger::MAX_PAGE;
use wallet_http::openapi::{amount_schema, bounded_integer, currency_schema, string_enum};
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

/// Which wallets exist. Any [`WalletGateway`] is one: the wallet service
/// itself in one process, or its HTTP client.
#[async_trait]
pub trait WalletDirectory: Send + Sync + 'static {
    /// Whether wallet `id` exists.
    async fn exists(&self, id: WalletId) -> Result<bool, GatewayError>;
}

#[async_trait]
impl<G: WalletGateway> WalletDirectory for G {
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
#[openapi(paths(entries))]
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
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        let message = format!("limit must be 1 to {MAX_PAGE}");
        return Err(ApiError::bad_request("invalid_query", message));
    }
    let entries = ledger.svc.entries(account, query.before, limit).await?;
    if entries.is_empty() && !ledger.wallets.exists(account).await? {
        let message = format!("wallet {account} not found");
        return Err(ApiError::not_found("wallet_not_found", message));
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
