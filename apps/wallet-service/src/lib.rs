//! The wallet service's HTTP API.
//!
//! Public routes ([`api`]):
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /v1/wallets` `{"currency":"USD"}` | 201 [`WalletResource`]; 422 `unknown_currency` |
//! | `GET /v1/wallets/{id}` | 200 [`WalletResource`]; 404 `wallet_not_found`; 400 `invalid_id` |
//!
//! Internal routes ([`internal`]), called by the transaction and ledger
//! services' gateway only, served on their own listener and refused (401
//! `unauthorized`, counted in `wallet_internal_unauthorized_total`) without
//! `Authorization: Bearer <token>` for one of the accepted
//! [`ServiceToken`]s:
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /internal/v1/reserve` [`ReserveRequest`] | 200 [`ReserveOutcome`] (rejected `wallet_not_found` for a system account anywhere but as a deposit's sender or a withdrawal's receiver, whoever asks); 400 `malformed_request` without a `kind`; 503 when storage is down |
//! | `POST /internal/v1/reserve-batch` [`ReserveBatchBody`] | 200 [`ReserveBatchAnswer`]: one outcome per request, in order, decided in one database transaction (a refused request, such as a system account as a transfer's sender, gets its own rejection); 422 `batch_too_large` beyond [`MAX_RESERVE_BATCH`]; 503 when storage is down |
//! | `GET /internal/v1/wallets/{id}` | 200 [`WalletResource`], as the public route answers: the currency the transaction service needs, and the balances the ledger service shows beside its own; 404 `wallet_not_found` |
//! | `POST /internal/v1/release-holds` [`ReleaseHoldsBody`] | 200 [`ReleaseHoldsAnswer`]: voids or expires holds in one database transaction, each decided under its wallet's lock, one answer each (where the hold stands, `null` for no hold); 422 `batch_too_large` beyond [`MAX_RESERVE_BATCH`] |
//!
//! Errors use the shape of [`wallet_http::ApiError`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use wallet_core::Timestamp;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::money::{Balance, Currency};
use wallet_core::outcome::ReserveOutcome;
use wallet_core::ports::{WalletReads, WalletStore};
use wallet_core::service::WalletService;
use wallet_core::wallet::{HoldRelease, HoldState, ReserveRequest, Wallet};
use wallet_http::openapi::{balance_schema, currency_schema};
use wallet_http::{ApiError, ErrorBody, Json, Path, ServiceToken};

/// A wallet as the public API shows it. Amounts are decimal strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Wallet)]
pub struct WalletResource {
    /// Its id.
    #[schema(value_type = uuid::Uuid)]
    pub id: WalletId,
    /// Its only currency.
    #[schema(schema_with = currency_schema)]
    pub currency: Currency,
    /// Spendable now.
    #[schema(schema_with = balance_schema)]
    pub available: Balance,
    /// Reserved for transfers the ledger has not decided yet.
    #[schema(schema_with = balance_schema)]
    pub reserved: Balance,
    /// When it was opened.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When a balance last changed.
    #[schema(value_type = String, format = DateTime)]
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
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenWallet {
    /// An ISO 4217 code the system knows, upper case. Taken as text so an
    /// unknown code is a 422, not a malformed body.
    #[schema(schema_with = currency_schema)]
    pub currency: String,
}

/// Requests one `POST /internal/v1/reserve-batch` takes at most.
pub const MAX_RESERVE_BATCH: usize = 1000;

/// The largest body of `POST /internal/v1/reserve-batch`: room for
/// [`MAX_RESERVE_BATCH`] requests of about 300 bytes each, twice over.
pub const MAX_RESERVE_BATCH_BYTES: usize = 640 * 1024;

/// The body of `POST /internal/v1/reserve-batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveBatchBody {
    /// The reserves, decided in this order.
    pub requests: Vec<ReserveRequest>,
}

/// The body of `POST /internal/v1/release-holds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHoldsBody {
    /// The holds and what to do with each, in order.
    pub requests: Vec<ReleaseHold>,
}

/// One hold to void or expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHold {
    /// The hold's id.
    pub hold_id: TransferId,
    /// `void` or `expire`.
    pub release: HoldRelease,
}

/// The answer of `POST /internal/v1/release-holds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseHoldsAnswer {
    /// One per request, in order: where the hold stands, `None` for an id
    /// that is no hold.
    pub answers: Vec<Option<HoldState>>,
}

/// The answer of `POST /internal/v1/reserve-batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveBatchAnswer {
    /// One per request, in the order of the requests.
    pub outcomes: Vec<ReserveOutcome>,
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

/// The internal routes, for the transaction and ledger services' gateway.
///
/// They trust their caller (a reserve moves money), so each request must
/// carry `Authorization: Bearer <token>` for one of `accepted` (two during a
/// rotation); any other is answered 401 `unauthorized` before its body is
/// read. Serve them on their own, cluster-internal address, never next to
/// [`api`] on the public one.
pub fn internal<S: WalletStore + WalletReads>(
    svc: Arc<WalletService<S>>,
    accepted: Arc<[ServiceToken]>,
) -> Router {
    let routes = Router::new()
        .route("/internal/v1/reserve", post(reserve::<S>))
        .route("/internal/v1/wallets/{id}", get(internal_wallet::<S>))
        .with_state(svc.clone());
    let batch = Router::new()
        .route("/internal/v1/reserve-batch", post(reserve_batch::<S>))
        .route("/internal/v1/release-holds", post(release_holds::<S>))
        .with_state(svc);
    wallet_http::limit_body(routes)
        .merge(wallet_http::limit_body_to(batch, MAX_RESERVE_BATCH_BYTES))
        .route_layer(axum::middleware::from_fn(move |request, next| {
            authorized(accepted.clone(), request, next)
        }))
}

/// Describes the metrics this crate records to the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "wallet_internal_unauthorized_total",
        metrics::Unit::Count,
        "Requests to the internal routes refused 401: no token, or not one this service accepts."
    );
}

/// Lets `request` through if it carries an accepted token; otherwise 401,
/// counted and logged (never with what the caller sent).
async fn authorized(accepted: Arc<[ServiceToken]>, request: Request, next: Next) -> Response {
    if ServiceToken::authorizes(&accepted, request.headers()) {
        return next.run(request).await;
    }
    metrics::counter!("wallet_internal_unauthorized_total").increment(1);
    tracing::warn!(
        path = request.uri().path(),
        "internal request refused: no accepted service credential"
    );
    ApiError::unauthorized().into_response()
}

/// The whole service in one router, for tests and embedding: [`api`],
/// [`internal`] (guarded by `accepted`), the description of both at
/// `/openapi.json`, `/healthz`, 404/405 in the error shape, and request
/// tracing. The service process serves the two on separate listeners
/// instead.
pub fn router<S: WalletStore + WalletReads>(
    svc: Arc<WalletService<S>>,
    accepted: Arc<[ServiceToken]>,
) -> Router {
    let mut doc = openapi();
    doc.merge(internal_openapi());
    let routes = api(svc.clone()).merge(internal(svc, accepted));
    wallet_http::service_router(routes.merge(wallet_http::openapi::route(doc)))
}

/// The OpenAPI description of [`api`]'s routes (the public ones).
pub fn openapi() -> utoipa::openapi::OpenApi {
    wallet_http::openapi::with_shared_answers(<ApiDoc as utoipa::OpenApi>::openapi())
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(open_wallet, get_wallet))]
struct ApiDoc;

/// The OpenAPI description of [`internal`]'s routes.
pub fn internal_openapi() -> utoipa::openapi::OpenApi {
    wallet_http::openapi::with_shared_answers(<InternalDoc as utoipa::OpenApi>::openapi())
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(reserve, reserve_batch, release_holds, internal_wallet))]
struct InternalDoc;

fn wallet_not_found(id: WalletId) -> ApiError {
    ApiError::not_found("wallet_not_found", format!("wallet {id} not found"))
}

/// Opens an empty wallet in one currency.
#[utoipa::path(
    post,
    path = "/v1/wallets",
    tag = "wallets",
    request_body = OpenWallet,
    responses(
        (status = 201, description = "Opened; `Location` names it", body = WalletResource),
        (status = 400, description = "`malformed_request`: not a JSON object of one member `currency` given once, a string", body = ErrorBody),
        (status = 422, description = "`unknown_currency`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
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

/// A wallet's balances.
#[utoipa::path(
    get,
    path = "/v1/wallets/{id}",
    tag = "wallets",
    params(("id" = uuid::Uuid, Path, description = "The wallet")),
    responses(
        (status = 200, description = "The wallet", body = WalletResource),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 404, description = "`wallet_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
async fn get_wallet<S: WalletStore + WalletReads>(
    State(svc): State<Svc<S>>,
    Path(id): Path<WalletId>,
) -> Result<Json<WalletResource>, ApiError> {
    // System accounts have no wallet, so clients cannot address them.
    let wallet = svc.wallet(id).await?.ok_or_else(|| wallet_not_found(id))?;
    Ok(Json(wallet.into()))
}

/// Reserves funds for a transfer; idempotent by transfer id. Internal.
#[utoipa::path(
    post,
    path = "/internal/v1/reserve",
    tag = "internal",
    request_body(content = Object, description = "A reserve request: transfer id, correlation id, kind (`transfer`, `deposit` or `withdrawal`), sender, receiver, amount, currency. A system account may only send a deposit and receive a withdrawal: as any other party it is refused `wallet_not_found`"),
    responses(
        (status = 401, description = "`unauthorized`: no accepted service credential", body = ErrorBody),
        (status = 200, description = "The outcome: reserved, or rejected with its reason", body = Object),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
async fn reserve<S: WalletStore + WalletReads>(
    State(svc): State<Svc<S>>,
    Json(request): Json<ReserveRequest>,
) -> Result<Json<ReserveOutcome>, ApiError> {
    Ok(Json(svc.reserve(&request).await?))
}

/// Reserves funds for a batch of transfers in one database transaction,
/// each decided in order against what the earlier ones left; idempotent by
/// transfer id. Internal.
#[utoipa::path(
    post,
    path = "/internal/v1/reserve-batch",
    tag = "internal",
    request_body(content = Object, description = "`{\"requests\": [reserve request, ...]}`, at most 1,000"),
    responses(
        (status = 401, description = "`unauthorized`: no accepted service credential", body = ErrorBody),
        (status = 200, description = "`{\"outcomes\": [...]}`: one outcome per request, in order", body = Object),
        (status = 422, description = "`batch_too_large`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
async fn reserve_batch<S: WalletStore + WalletReads>(
    State(svc): State<Svc<S>>,
    Json(body): Json<ReserveBatchBody>,
) -> Result<Json<ReserveBatchAnswer>, ApiError> {
    within_batch(body.requests.len())?;
    // Its `WalletReserved` events continue the caller's trace, through this
    // request's span.
    let trace = wallet_http::trace::current();
    let outcomes = svc.reserve_batch_traced(&body.requests, trace).await?;
    Ok(Json(ReserveBatchAnswer { outcomes }))
}

/// 422 `batch_too_large` beyond [`MAX_RESERVE_BATCH`] requests.
fn within_batch(n: usize) -> Result<(), ApiError> {
    if n > MAX_RESERVE_BATCH {
        return Err(ApiError::unprocessable(
            "batch_too_large",
            format!("{n} requests in one batch; at most {MAX_RESERVE_BATCH}"),
        ));
    }
    Ok(())
}

/// Voids or expires holds in one database transaction, each decided under
/// its wallet's lock, so a capture and a release of one hold never both
/// take its funds; idempotent (a hold that ended answers how). Internal.
#[utoipa::path(
    post,
    path = "/internal/v1/release-holds",
    tag = "internal",
    request_body(content = Object, description = "`{\"requests\": [{\"hold_id\": uuid, \"release\": \"void\" or \"expire\"}, ...]}`, at most 1,000"),
    responses(
        (status = 401, description = "`unauthorized`: no accepted service credential", body = ErrorBody),
        (status = 200, description = "`{\"answers\": [...]}`: one per request, in order: `{\"state\": \"held\"}`, `{\"state\": \"ended\", \"end\": \"voided\" | \"expired\" | \"captured\", \"by\": capture id}`, or `null` for an id that is no hold", body = Object),
        (status = 422, description = "`batch_too_large`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
async fn release_holds<S: WalletStore + WalletReads>(
    State(svc): State<Svc<S>>,
    Json(body): Json<ReleaseHoldsBody>,
) -> Result<Json<ReleaseHoldsAnswer>, ApiError> {
    within_batch(body.requests.len())?;
    let requests: Vec<_> = body
        .requests
        .iter()
        .map(|r| (r.hold_id, r.release))
        .collect();
    let answers = svc.release_holds(&requests).await?;
    Ok(Json(ReleaseHoldsAnswer { answers }))
}

/// A wallet: its currency, for the transaction service, and its balances
/// as they are now, for the ledger service's view beside its own. Internal.
#[utoipa::path(
    get,
    path = "/internal/v1/wallets/{id}",
    tag = "internal",
    params(("id" = uuid::Uuid, Path, description = "The wallet")),
    responses(
        (status = 401, description = "`unauthorized`: no accepted service credential", body = ErrorBody),
        (status = 200, description = "The wallet, as the public route answers it", body = WalletResource),
        (status = 404, description = "`wallet_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
async fn internal_wallet<S: WalletStore + WalletReads>(
    svc: State<Svc<S>>,
    id: Path<WalletId>,
) -> Result<Json<WalletResource>, ApiError> {
    get_wallet(svc, id).await
}
