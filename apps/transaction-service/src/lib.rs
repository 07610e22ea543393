//! The transaction service's HTTP API, and its HTTP line to the wallet
//! service ([`HttpWalletGateway`]).
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /v1/transfers` | 202 or 422, see below |
//! | `POST /v1/wallets/{id}/deposits` | as above; money from the currency's system account |
//! | `POST /v1/wallets/{id}/withdrawals` | as above; money to the currency's system account |
//! | `GET /v1/transfers/{id}?wait_ms=N` | 200 [`TransferResource`]; 404 `transfer_not_found` |
//! | `GET /v1/transfers?…`, `GET /v1/wallets/{id}/transfers?…` | 200 [`TransfersPage`]: the history, newest first (see the `history` module) |
//!
//! A transfer body is `{sender_wallet_id, receiver_wallet_id, amount,
//! currency?, reference?, metadata?}`, a deposit or withdrawal body
//! `{amount, currency?, reference?, metadata?}` (the client's reference
//! and notes: [`wallet_core::tags`]). Unknown
//! members, a member given twice and `null` for a member are refused (400
//! `malformed_request`). The amount is a decimal string of
//! [`wallet_core::money::Amount::PATTERN`] (`"10.50"`); other text, or a
//! JSON number, is 422 `invalid_amount`. The `Idempotency-Key` header is
//! required, once.
//!
//! Answers of the POST routes:
//!
//! | status | when |
//! | --- | --- |
//! | 202 [`TransferResource`] | accepted: RESERVED (the ledger will decide), INITIATED (the wallet service did not answer; the retrier finishes it) |
//! | 422 `insufficient_funds`, ... with `transfer_id` | the wallet service refused: the transfer is FAILED; its code is the failure reason |
//! | 400 `idempotency_key_required`, `invalid_idempotency_key`, `malformed_request`, `invalid_id` | |
//! | 404 `wallet_not_found` | a wallet does not exist (system accounts are not addressable) |
//! | 409 `idempotency_key_in_flight` | the first request with this key is still being answered; retry |
//! | 409 `reference_taken` with `transfer_id` | another transfer has the reference in the wallet: that one; nothing stored |
//! | 422 `invalid_amount`, `unknown_currency`, `same_wallet`, `currency_mismatch`, `invalid_reference`, `invalid_metadata` | nothing stored |
//! | 422 `idempotency_key_reused` | the key came with another request first; nothing stored |
//! | 503 `unavailable` | storage or the wallet service did not answer; nothing stored, or the transfer is INITIATED and will finish: retry with the same key |
//!
//! A repeat of a request with the same key gets exactly the first answer
//! (status and body), plus the header `Idempotent-Replayed: true`.
//!
//! `wait_ms` (0 to [`MAX_WAIT_MS`]) long-polls: the answer comes once the
//! transfer is SUCCEEDED or FAILED, or when the time is up, whichever is
//! first; once the service's waits are stopped
//! ([`TransactionService::stop_waits`], as a process shutting down does),
//! at once.

mod body;
mod gateway;
mod history;
mod holds;
mod resource;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tracing::Instrument;
use wallet_core::ids::{TransferId, WalletId};
use wallet_core::outcome::FailureReason;
use wallet_core::ports::{TransferReads, TransferStore, WalletGateway};
use wallet_core::service::{CreateError, Created, Parties, TransactionService};
use wallet_core::transfer::{RefundRejection, Transfer, TransferKind, TransferStatus};
use wallet_http::{ApiError, ErrorBody, Json, Path, Query};

pub use body::IDEMPOTENCY_KEY;
pub use gateway::{DEFAULT_TIMEOUT, GatewaySetupError, HttpWalletGateway};
pub use history::{HistoryParams, TransfersPage, WalletHistoryParams};
pub use resource::{HoldResource, TransferResource};

use body::{KeyHeader, MovementBody, RefundBody, TransferBody};

/// The header set on a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// The longest long-poll, in milliseconds: 30 s, the service's default
/// [`wallet_core::service::TransactionConfig::max_wait`].
pub const MAX_WAIT_MS: u64 = 30_000;

type Svc<S, G> = Arc<TransactionService<S, G>>;

/// The public routes, self-contained (body limit and error shape included)
/// so they can be merged with other services' routes in one process.
pub fn api<S: TransferStore + TransferReads, G: WalletGateway>(
    svc: Arc<TransactionService<S, G>>,
) -> Router {
    let routes = Router::new()
        .route(
            "/v1/transfers",
            post(create_transfer::<S, G>).get(history::transfers::<S, G>),
        )
        .route(
            "/v1/wallets/{id}/transfers",
            get(history::wallet_transfers::<S, G>),
        )
        .route("/v1/transfers/{id}", get(get_transfer::<S, G>))
        .route("/v1/wallets/{id}/deposits", post(deposit::<S, G>))
        .route("/v1/wallets/{id}/withdrawals", post(withdraw::<S, G>))
        .route(
            "/v1/transfers/{id}/refunds",
            post(refund::<S, G>).get(refunds::<S, G>),
        )
        .route("/v1/holds", post(holds::create_hold::<S, G>))
        .route("/v1/holds/{id}", get(holds::get_hold::<S, G>))
        .route("/v1/holds/{id}/capture", post(holds::capture_hold::<S, G>))
        .route("/v1/holds/{id}/void", post(holds::void_hold::<S, G>))
        .with_state(svc);
    wallet_http::limit_body(routes)
}

/// The whole service: [`api`], its description at `/openapi.json`,
/// `/healthz`, 404/405 in the error shape, and request tracing.
pub fn router<S: TransferStore + TransferReads, G: WalletGateway>(
    svc: Arc<TransactionService<S, G>>,
) -> Router {
    wallet_http::service_router(api(svc).merge(wallet_http::openapi::route(openapi())))
}

/// The OpenAPI description of [`api`]'s routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    wallet_http::openapi::with_shared_answers(<ApiDoc as utoipa::OpenApi>::openapi())
}

#[derive(utoipa::OpenApi)]
#[openapi(paths(
    create_transfer,
    get_transfer,
    history::transfers,
    history::wallet_transfers,
    deposit,
    withdraw,
    refund,
    refunds,
    holds::create_hold,
    holds::get_hold,
    holds::capture_hold,
    holds::void_hold
))]
struct ApiDoc;

/// The answers of the routes that create a transfer, deposit or withdrawal.
/// A repeat with the same key gets the first answer again, with the header
/// `Idempotent-Replayed: true`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers, never built
enum SubmitAnswers {
    /// Accepted: RESERVED (the ledger will decide), or INITIATED (the wallet
    /// service did not answer; the retrier finishes it). `Location` names
    /// the transfer.
    #[response(status = 202)]
    Accepted(TransferResource),
    /// `malformed_request` (not a JSON object of the documented members:
    /// one missing, unknown, given twice, `null`, or of the wrong JSON
    /// type), `idempotency_key_required`, `invalid_idempotency_key`,
    /// `invalid_id` (the wallet in the path is not a uuid).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `wallet_not_found`.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `idempotency_key_in_flight`: the first request with this key is still
    /// being answered; retry. `reference_taken`: another transfer has the
    /// reference in the wallet, `transfer_id` names it; nothing stored.
    #[response(status = 409)]
    InFlight(ErrorBody),
    /// Nothing stored: `invalid_amount` (not of the documented form, or
    /// more decimals than the wallet's currency has), `unknown_currency`,
    /// `same_wallet`, `currency_mismatch`, `invalid_reference`,
    /// `invalid_metadata`, `idempotency_key_reused`. Or the wallet service
    /// refused: the transfer is FAILED, `transfer_id` names it, and the code
    /// is its reason: `insufficient_funds`, `wallet_not_found`,
    /// `same_wallet`, `currency_mismatch`, `invalid_amount`.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// `unavailable`: storage or the wallet service did not answer. Nothing
    /// was stored, or the transfer was stored and is INITIATED (it will
    /// finish): retry with the same idempotency key, never a new one.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Moves money from one wallet to another.
#[utoipa::path(
    post,
    path = "/v1/transfers",
    tag = "transfers",
    params(KeyHeader),
    request_body = TransferBody,
    responses(SubmitAnswers)
)]
async fn create_transfer<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    headers: HeaderMap,
    Json(body): Json<TransferBody>,
) -> Result<Response, ApiError> {
    let request = body.request(&headers)?;
    submit(&svc, request).await
}

/// Puts money into a wallet, from the currency's system account.
#[utoipa::path(
    post,
    path = "/v1/wallets/{id}/deposits",
    tag = "transfers",
    params(
        ("id" = uuid::Uuid, Path, description = "The wallet credited"),
        KeyHeader
    ),
    request_body = MovementBody,
    responses(SubmitAnswers)
)]
async fn deposit<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Path(wallet): Path<WalletId>,
    headers: HeaderMap,
    Json(body): Json<MovementBody>,
) -> Result<Response, ApiError> {
    let request = body.request(&headers, Parties::Deposit(wallet))?;
    submit(&svc, request).await
}

/// Takes money out of a wallet, to the currency's system account.
#[utoipa::path(
    post,
    path = "/v1/wallets/{id}/withdrawals",
    tag = "transfers",
    params(
        ("id" = uuid::Uuid, Path, description = "The wallet debited"),
        KeyHeader
    ),
    request_body = MovementBody,
    responses(SubmitAnswers)
)]
async fn withdraw<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Path(wallet): Path<WalletId>,
    headers: HeaderMap,
    Json(body): Json<MovementBody>,
) -> Result<Response, ApiError> {
    let request = body.request(&headers, Parties::Withdrawal(wallet))?;
    submit(&svc, request).await
}

async fn submit<S: TransferStore + TransferReads, G: WalletGateway>(
    svc: &Svc<S, G>,
    request: wallet_core::service::TransferRequest,
) -> Result<Response, ApiError> {
    // The task goes on in the request's span, which names the transfer.
    let created = run(svc, move |svc| {
        async move { svc.create(request).await }.in_current_span()
    })
    .await
    .map_err(create_error)?;
    let transfer = &created.transfer;
    wallet_http::trace::record_transfer(transfer.id, transfer.correlation_id);
    Ok(created_response(created))
}

/// Runs a service call in a task of its own: the request may be running a
/// batch for others too, which a client that hangs up must not cut short.
/// A task that did not finish is [`CreateError::Interrupted`].
pub(crate) async fn run<S, G, T, E, F, Fut>(svc: &Svc<S, G>, call: F) -> Result<T, E>
where
    S: TransferStore + TransferReads,
    G: WalletGateway,
    F: FnOnce(Svc<S, G>) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<CreateError> + Send + 'static,
{
    tokio::spawn(call(svc.clone()))
        .await
        .unwrap_or_else(|_| Err(CreateError::Interrupted.into()))
}

/// The answer to a created (or replayed) transfer, hold or capture: a hold
/// shown as a hold, anything else as a transfer. It depends on the transfer
/// alone, so a replay of the stored first answer is byte for byte the first
/// answer.
pub(crate) fn created_response(created: Created) -> Response {
    let transfer = created.transfer;
    let location = match transfer.kind {
        TransferKind::Hold => format!("/v1/holds/{}", transfer.id),
        _ => format!("/v1/transfers/{}", transfer.id),
    };
    let mut response = if transfer.status == TransferStatus::Failed {
        failed(&transfer).into_response()
    } else if transfer.kind == TransferKind::Hold {
        match HoldResource::of(transfer) {
            Some(hold) => (StatusCode::ACCEPTED, Json(hold)).into_response(),
            None => ApiError::internal("a hold without an expiry").into_response(),
        }
    } else {
        let resource = Json(TransferResource::from(transfer));
        (StatusCode::ACCEPTED, resource).into_response()
    };
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, location);
    }
    if created.replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// A FAILED transfer as an error whose code is the failure reason: 422, or
/// 409 for a capture whose hold ended first.
fn failed(transfer: &Transfer) -> ApiError {
    let (code, message) = match transfer.failure_reason {
        Some(reason) => (reason.code(), format!("transfer failed: {reason}")),
        None => ("transfer_failed", "transfer failed".to_owned()),
    };
    let status = match transfer.failure_reason {
        Some(
            FailureReason::HoldVoided | FailureReason::HoldExpired | FailureReason::HoldCaptured,
        ) => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, code, message).with_transfer_id(transfer.id)
}

pub(crate) fn create_error(error: CreateError) -> ApiError {
    if let Some(hold) = holds::hold_error(&error) {
        return hold;
    }
    let message = error.to_string();
    match error {
        CreateError::InvalidAmount(money) => money.into(),
        CreateError::WalletNotFound(_) => ApiError::not_found("wallet_not_found", message),
        CreateError::SameWallet => ApiError::unprocessable("same_wallet", message),
        CreateError::CurrencyMismatch(_) => ApiError::unprocessable("currency_mismatch", message),
        CreateError::KeyReused => ApiError::unprocessable("idempotency_key_reused", message),
        CreateError::InFlight => ApiError::conflict("idempotency_key_in_flight", message),
        CreateError::Gateway(gateway) => gateway.into(),
        CreateError::Store(store) => store.into(),
        CreateError::Busy | CreateError::Interrupted => ApiError::unavailable(message),
        CreateError::ReceiverRequired => ApiError::unprocessable("receiver_required", message),
        CreateError::TransferNotFound(_) => ApiError::not_found("transfer_not_found", message),
        CreateError::Refund(RefundRejection::NotSucceeded(_)) => {
            ApiError::new(StatusCode::CONFLICT, "transfer_not_succeeded", message)
        }
        CreateError::Refund(RefundRejection::Hold | RefundRejection::Refund) => {
            ApiError::unprocessable("not_refundable", message)
        }
        CreateError::Refund(RefundRejection::Exceeds { .. }) => {
            ApiError::unprocessable("exceeds_refundable", message)
        }
        CreateError::InvalidExpiry { .. } => ApiError::unprocessable("invalid_expiry", message),
        CreateError::ReferenceTaken(owner) => {
            ApiError::conflict("reference_taken", message).with_transfer_id(owner)
        }
        other => ApiError::internal(other),
    }
}

/// The answers of `POST /v1/transfers/{id}/refunds`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers, never built
enum RefundAnswers {
    /// Accepted: the refund, a transfer back from the original's receiver
    /// to its sender, RESERVED or INITIATED. `Location` names it.
    #[response(status = 202)]
    Accepted(TransferResource),
    /// `malformed_request`, `idempotency_key_required`,
    /// `invalid_idempotency_key`, `invalid_id`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `transfer_not_found`.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `transfer_not_succeeded`: only a SUCCEEDED transfer is refunded;
    /// `reference_taken` (with the `transfer_id` that has it);
    /// `idempotency_key_in_flight`: retry.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// Nothing stored: `invalid_amount`, `invalid_reference`,
    /// `invalid_metadata`, `not_refundable` (a hold or a
    /// refund), `exceeds_refundable` (the refunds not FAILED would send
    /// back more than it moved), `idempotency_key_reused`. Or the refund is
    /// FAILED (`transfer_id`): `insufficient_funds`, the receiver lacks the
    /// money.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// `unavailable`: retry with the same idempotency key.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Sends a SUCCEEDED transfer's money back, in whole or in part.
#[utoipa::path(
    post,
    path = "/v1/transfers/{id}/refunds",
    tag = "transfers",
    params(("id" = uuid::Uuid, Path, description = "The transfer refunded"), KeyHeader),
    request_body = RefundBody,
    responses(RefundAnswers)
)]
async fn refund<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Path(original): Path<TransferId>,
    headers: HeaderMap,
    Json(body): Json<RefundBody>,
) -> Result<Response, ApiError> {
    let request = body.request(&headers, original)?;
    let created = run(&svc, move |svc| async move { svc.refund(request).await })
        .await
        .map_err(create_error)?;
    Ok(created_response(created))
}

/// A transfer's refunds.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Refunds)]
pub struct RefundsResource {
    /// Its refunds, oldest first.
    pub refunds: Vec<TransferResource>,
}

/// A transfer's refunds, oldest first.
#[utoipa::path(
    get,
    path = "/v1/transfers/{id}/refunds",
    tag = "transfers",
    params(("id" = uuid::Uuid, Path, description = "The transfer")),
    responses(
        (status = 200, description = "Its refunds, oldest first", body = RefundsResource),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 404, description = "`transfer_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
async fn refunds<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Path(id): Path<TransferId>,
) -> Result<Json<RefundsResource>, ApiError> {
    if svc.transfer(id).await?.is_none() {
        return Err(ApiError::not_found(
            "transfer_not_found",
            format!("transfer {id} not found"),
        ));
    }
    let refunds = svc.refunds_of(id).await?;
    Ok(Json(RefundsResource {
        refunds: refunds.into_iter().map(TransferResource::from).collect(),
    }))
}

/// The query of `GET /v1/transfers/{id}`.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Wait up to this many milliseconds (0 to 30000) for the transfer to
    /// be SUCCEEDED or FAILED.
    #[param(schema_with = wait_ms_schema)]
    pub wait_ms: Option<u64>,
}

fn wait_ms_schema() -> utoipa::openapi::schema::Object {
    let description = "Wait up to this many milliseconds for the transfer to be SUCCEEDED or \
                       FAILED; 0, or none, answers at once.";
    wallet_http::openapi::bounded_integer(0, MAX_WAIT_MS, description)
}

/// A transfer as it is now, or once it is SUCCEEDED or FAILED.
#[utoipa::path(
    get,
    path = "/v1/transfers/{id}",
    tag = "transfers",
    params(("id" = uuid::Uuid, Path, description = "The transfer"), WaitQuery),
    responses(
        (status = 200, description = "The transfer", body = TransferResource),
        (status = 400, description = "`invalid_id`, `invalid_query`", body = ErrorBody),
        (status = 404, description = "`transfer_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
async fn get_transfer<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Path(id): Path<TransferId>,
    Query(query): Query<WaitQuery>,
) -> Result<Json<TransferResource>, ApiError> {
    let transfer = match query.wait_ms {
        None | Some(0) => svc.transfer(id).await?,
        Some(ms) if ms <= MAX_WAIT_MS => svc.wait_for(id, Duration::from_millis(ms)).await?,
        Some(_) => {
            let message = format!("wait_ms must be 0 to {MAX_WAIT_MS}");
            return Err(ApiError::bad_request("invalid_query", message));
        }
    };
    let transfer = transfer.ok_or_else(|| {
        ApiError::not_found("transfer_not_found", format!("transfer {id} not found"))
    })?;
    Ok(Json(transfer.into()))
}
