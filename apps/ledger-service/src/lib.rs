//! The ledger service's HTTP API: read-only access to the entries.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v1/wallets/{id}/entries?limit=N&before=SEQ` | 200 [`EntriesPage`]; 400 `invalid_id`, `invalid_query` |
//!
//! Entries come newest first. `limit` is 1 to [`MAX_PAGE`] (default
//! [`DEFAULT_PAGE`]); `before` returns entries with a smaller `seq` only. A
//! full page carries `next_before`, the `before` of the next page; the last
//! page carries `null`. The ledger does not know wallets, so an id without
//! entries gets an empty page, not a 404.
//!
//! Errors use the shape of [`wallet_http::ApiError`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use wallet_core::Timestamp;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::ledger::{Direction, Entry};
use wallet_core::money::{Amount, Currency};
use wallet_core::ports::{LedgerReads, LedgerStore};
use wallet_core::service::LedgerService;
pub use wallet_core::service::ledger::MAX_PAGE;
use wallet_http::{ApiError, Json, Path, Query};

/// Entries per page when the client does not say.
pub const DEFAULT_PAGE: usize = 50;

/// One ledger entry of an account, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResource {
    /// Position in the ledger; newer entries have larger numbers.
    pub seq: u64,
    /// The transfer that posted it.
    pub transfer_id: TransferId,
    /// `debit` (money left the account) or `credit`.
    pub direction: Direction,
    /// How much, as a decimal string.
    pub amount: Amount,
    /// The account's currency.
    pub currency: Currency,
    /// When it was posted.
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

/// One page of an account's entries, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesPage {
    /// The entries.
    pub entries: Vec<EntryResource>,
    /// Pass as `before` to get the next page; `null` when this page is not
    /// full (there is nothing older).
    pub next_before: Option<u64>,
}

/// The query of the entries route.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Entries wanted, 1 to [`MAX_PAGE`].
    pub limit: Option<usize>,
    /// Only entries with a smaller `seq`.
    pub before: Option<u64>,
}

type Svc<S> = Arc<LedgerService<S>>;

/// The public routes, self-contained (error shape included) so they can be
/// merged with other services' routes in one process.
pub fn api<S: LedgerStore + LedgerReads>(svc: Arc<LedgerService<S>>) -> Router {
    let routes = Router::new()
        .route("/v1/wallets/{id}/entries", get(entries::<S>))
        .with_state(svc);
    wallet_http::limit_body(routes)
}

/// The whole service: [`api`], `/healthz`, 404/405 in the error shape, and
/// request tracing.
pub fn router<S: LedgerStore + LedgerReads>(svc: Arc<LedgerService<S>>) -> Router {
    wallet_http::service_router(api(svc))
}

async fn entries<S: LedgerStore + LedgerReads>(
    State(svc): State<Svc<S>>,
    Path(account): Path<WalletId>,
    Query(query): Query<PageQuery>,
) -> Result<Json<EntriesPage>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        let message = format!("limit must be 1 to {MAX_PAGE}");
        return Err(ApiError::bad_request("invalid_query", message));
    }
    let entries = svc.entries(account, query.before, limit).await?;
    let next_before = match entries.last() {
        Some(last) if entries.len() == limit => Some(last.seq),
        _ => None,
    };
    Ok(Json(EntriesPage {
        entries: entries.into_iter().map(EntryResource::from).collect(),
        next_before,
    }))
}
