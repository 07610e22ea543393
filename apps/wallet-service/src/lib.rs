//! The wallet service's HTTP API.
//!
//! Public routes ([`api`]):
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /v1/wallets` `{"currency":"USD"}` | 201 [`WalletResource`]; 422 `unknown_currency` |
//! | `GET /v1/wallets/{id}` | 200 [`WalletResource`]; 404 `wallet_not_found`; 400 `invalid_id` |
//!
//! Internal routes ([`internal`]), called by the transaction service's
//! gateway only:
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /internal/v1/reserve` [`ReserveRequest`] | 200 [`ReserveOutcome`]; 503 when storage is down |
//! | `GET /internal/v1/wallets/{id}` | 200 [`WalletCurrency`]; 404 `wallet_not_found` |
//!
//! Errors use the shape of [`wallet_http::ApiError`].

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use wallet_core::Timestamp;
use wallet_core::ids::WalletId;
use wallet_core::money::{Balance, Currency};
use wallet_core::outcome::ReserveOutcome;
use wallet_core::ports::{WalletReads, WalletStore};
use wallet_core::service::WalletService;
use wallet_core::wallet::{ReserveRequest, Wallet};
use wallet_http::{ApiError, Json, Path};

/// A wallet as the public API shows it. Amounts are decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletResource {
    /// Its id.
    pub id: WalletId,
    /// Its only currency.
    pub currency: Currency,
    /// Spendable now.
    pub available: Balance,
    /// Reserved for transfers the ledger has not decided yet.
    pub reserved: Balance,
    /// When it was opened.
    pub created_at: Timestamp,
    /// When a balance last changed.
    pub updated_at: Timestamp,
}

impl From<Wallet> for WalletResource {
    fn from(w: Wallet) -> Self {
        WalletResource {
            id: w.id,
            currency: w.currency,
            available: w.available,
            reserved: w.reserved,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// The body of `POST /v1/wallets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenWallet {
    /// An ISO 4217 code the system knows, upper case. Taken as text so an
    /// unknown code is a 422, not a malformed body.
    pub currency: String,
}

/// The answer of `GET /internal/v1/wallets/{id}`: all the gateway needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletCurrency {
    /// The wallet.
    pub id: WalletId,
    /// Its currency, which never changes.
    pub currency: Currency,
}

type Svc<S> = Arc<WalletService<S>>;

/// The public routes, self-contained (body limit and error shape included)
/// so they can be merged with other services' routes in one process.
pub fn api<S: WalletStore + WalletReads>(svc: Arc<WalletService<S>>) -> Router {
    let routes = Router::new()
        .route("/v1/wallets", post(open_wallet::<S>))
        .route("/v1/wallets/{id}", get(get_wallet::<S>))
        .with_state(svc);
    wallet_http::limit_body(routes)
}

/// The internal routes, for the transaction service's gateway.
///
/// They trust their caller (a reserve moves money), so a deployment must
/// never route them through the public gateway or ingress: expose them on
/// the service's cluster-internal address only.
pub fn internal<S: WalletStore + WalletReads>(svc: Arc<WalletService<S>>) -> Router {
    let routes = Router::new()
        .route("/internal/v1/reserve", post(reserve::<S>))
        .route("/internal/v1/wallets/{id}", get(wallet_currency::<S>))
        .with_state(svc);
    wallet_http::limit_body(routes)
}

/// The whole service: [`api`], [`internal`], `/healthz`, 404/405 in the
/// error shape, and request tracing.
pub fn router<S: WalletStore + WalletReads>(svc: Arc<WalletService<S>>) -> Router {
    wallet_http::service_router(api(svc.clone()).merge(internal(svc)))
}

fn wallet_not_found(id: WalletId) -> ApiError {
    ApiError::not_found("wallet_not_found", format!("wallet {id} not found"))
}

async fn open_wallet<S: WalletStore + WalletReads>(
    State(svc): State<Svc<S>>,
    Json(body): Json<OpenWallet>,
) -> Result<Response, ApiError> {
    let currency = Currency::parse(&body.currency)?;
    let wallet = svc.open(currency).await?;
    let location = format!("/v1/wallets/{}", wallet.id);
    let created = (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(WalletResource::from(wallet)),
    );
    Ok(created.into_response())
}

async fn get_wallet<S: WalletStore + WalletReads>(
    State(svc): State<Svc<S>>,
    Path(id): Path<WalletId>,
) -> Result<Json<WalletResource>, ApiError> {
    // System accounts have no wallet, so clients cannot address them.
    let wallet = svc.wallet(id).await?.ok_or_else(|| wallet_not_found(id))?;
    Ok(Json(wallet.into()))
}

async fn reserve<S: WalletStore + WalletReads>(
    State(svc): State<Svc<S>>,
    Json(request): Json<ReserveRequest>,
) -> Result<Json<ReserveOutcome>, ApiError> {
    Ok(Json(svc.reserve(&request).await?))
}

async fn wallet_currency<S: WalletStore + WalletReads>(
    State(svc): State<Svc<S>>,
    Path(id): Path<WalletId>,
) -> Result<Json<WalletCurrency>, ApiError> {
    let wallet = svc.wallet(id).await?.ok_or_else(|| wallet_not_found(id))?;
    Ok(Json(WalletCurrency {
        id,
        currency: wallet.currency,
    }))
}
