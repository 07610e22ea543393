//! The hold routes: authorize funds now, capture, void or let them expire
//! later.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /v1/holds` `{wallet_id, amount, currency?, expires_in_s?, receiver_wallet_id?, reference?, metadata?}` | 202 [`HoldResource`] HELD (or INITIATED: the wallet service did not answer, the retrier finishes it); 422 `insufficient_funds`, ... with `transfer_id`: the hold is FAILED |
//! | `GET /v1/holds/{id}` | 200 [`HoldResource`]; 404 `hold_not_found` |
//! | `POST /v1/holds/{id}/capture` `{amount?, receiver_wallet_id?, reference?, metadata?}` | 202 [`TransferResource`]: the capture, a transfer from the hold's wallet whose `hold_id` is the hold; 409 `hold_voided`, `hold_expired`, `hold_captured` with the FAILED capture's `transfer_id` when the hold ended first; 409 `hold_failed` for a refused hold; 409 `hold_pending` while the hold is INITIATED; 422 `exceeds_hold`, `receiver_required` |
//! | `POST /v1/holds/{id}/void` | 200 [`HoldResource`] VOIDED (again on a repeat); 409 `hold_captured`, `hold_expired`, `hold_failed` when it ended otherwise; 409 `hold_pending` |
//!
//! Creating and capturing need an `Idempotency-Key` and replay as transfers
//! do. A void needs none: voiding a voided hold answers it again.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use wallet_core::ids::TransferId;
use wallet_core::ports::{TransferReads, TransferStore, WalletGateway};
use wallet_core::service::{CreateError, VoidError};
use wallet_core::transfer::{Transfer, TransferStatus};
use wallet_http::{ApiError, ErrorBody, Json, Path};

use crate::body::{CaptureBody, HoldBody, KeyHeader};
use crate::resource::HoldResource;
use crate::{Svc, create_error, created_response, run};

/// The answers of `POST /v1/holds`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers, never built
enum HoldAnswers {
    /// Accepted: HELD, or INITIATED (the wallet service did not answer;
    /// the retrier finishes it). `Location` names the hold.
    #[response(status = 202)]
    Accepted(HoldResource),
    /// `malformed_request`, `idempotency_key_required`,
    /// `invalid_idempotency_key`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `wallet_not_found`.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `idempotency_key_in_flight`: retry. `reference_taken`: another
    /// transfer or hold has the reference in the wallet, `transfer_id`
    /// names it; nothing stored.
    #[response(status = 409)]
    InFlight(ErrorBody),
    /// Nothing stored: `invalid_amount`, `unknown_currency`, `same_wallet`,
    /// `currency_mismatch`, `invalid_expiry`, `invalid_reference`,
    /// `invalid_metadata`, `idempotency_key_reused`. Or
    /// the wallet service refused: the hold is FAILED, `transfer_id` names
    /// it, and the code is its reason: `insufficient_funds`,
    /// `wallet_not_found`, `currency_mismatch`, `invalid_amount`,
    /// `hold_expired`.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// `unavailable`: retry with the same idempotency key.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// The answers of `POST /v1/holds/{id}/capture`.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // describes answers, never built
enum CaptureAnswers {
    /// Accepted: the capture, RESERVED (the ledger will decide) or
    /// INITIATED (the retrier finishes it). `Location` names it.
    #[response(status = 202)]
    Accepted(crate::TransferResource),
    /// `malformed_request`, `idempotency_key_required`,
    /// `invalid_idempotency_key`, `invalid_id`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// `hold_not_found`, `wallet_not_found` (the receiver).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The hold ended first: `hold_voided`, `hold_expired`,
    /// `hold_captured`, with the FAILED capture's `transfer_id`; or it was
    /// refused and holds nothing: `hold_failed`. Or `hold_pending` (the
    /// hold is not decided yet) and `idempotency_key_in_flight`: retry.
    /// `reference_taken`, with the `transfer_id` that has it.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// Nothing stored: `invalid_amount`, `same_wallet`,
    /// `currency_mismatch`, `receiver_required`, `invalid_reference`,
    /// `invalid_metadata`, `idempotency_key_reused`.
    /// Or the capture is FAILED (`transfer_id`): `exceeds_hold`,
    /// `wallet_not_found`, `currency_mismatch`, `invalid_amount`.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
    /// `unavailable`: retry with the same idempotency key.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Holds a wallet's funds for a later capture, void or expiry.
#[utoipa::path(
    post,
    path = "/v1/holds",
    tag = "holds",
    params(KeyHeader),
    request_body = HoldBody,
    responses(HoldAnswers)
)]
pub(crate) async fn create_hold<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    headers: HeaderMap,
    Json(body): Json<HoldBody>,
) -> Result<Response, ApiError> {
    let request = body.request(&headers)?;
    let created = run(&svc, move |svc| async move { svc.hold(request).await })
        .await
        .map_err(create_error)?;
    Ok(created_response(created))
}

/// A hold as it is now.
#[utoipa::path(
    get,
    path = "/v1/holds/{id}",
    tag = "holds",
    params(("id" = uuid::Uuid, Path, description = "The hold")),
    responses(
        (status = 200, description = "The hold", body = HoldResource),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 404, description = "`hold_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
pub(crate) async fn get_hold<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Path(id): Path<TransferId>,
) -> Result<Json<HoldResource>, ApiError> {
    let hold = svc.transfer(id).await?.and_then(HoldResource::of);
    Ok(Json(hold.ok_or_else(|| hold_not_found(id))?))
}

/// Captures a hold: moves up to what it holds to a receiver through the
/// ledger, releasing the rest.
#[utoipa::path(
    post,
    path = "/v1/holds/{id}/capture",
    tag = "holds",
    params(("id" = uuid::Uuid, Path, description = "The hold"), KeyHeader),
    request_body = CaptureBody,
    responses(CaptureAnswers)
)]
pub(crate) async fn capture_hold<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Path(hold): Path<TransferId>,
    headers: HeaderMap,
    Json(body): Json<CaptureBody>,
) -> Result<Response, ApiError> {
    let request = body.request(&headers, hold)?;
    let created = run(&svc, move |svc| async move { svc.capture(request).await })
        .await
        .map_err(create_error)?;
    Ok(created_response(created))
}

/// Voids a held hold: its funds go back to its wallet at once.
#[utoipa::path(
    post,
    path = "/v1/holds/{id}/void",
    tag = "holds",
    params(("id" = uuid::Uuid, Path, description = "The hold")),
    responses(
        (status = 200, description = "The hold, VOIDED (a repeat answers it again)", body = HoldResource),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 404, description = "`hold_not_found`", body = ErrorBody),
        (status = 409, description = "It ended otherwise: `hold_captured`, `hold_expired`, `hold_failed`; or `hold_pending` (not decided yet): retry", body = ErrorBody),
        (status = 503, description = "`unavailable`: retry", body = ErrorBody)
    )
)]
pub(crate) async fn void_hold<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Path(hold): Path<TransferId>,
) -> Result<Json<HoldResource>, ApiError> {
    match svc.void(hold).await {
        Ok(hold) => Ok(Json(hold_resource(hold)?)),
        Err(VoidError::NotFound(id)) => Err(hold_not_found(id)),
        Err(VoidError::Pending(id)) => Err(hold_pending(id)),
        Err(VoidError::Ended(hold)) => Err(ended(&hold)),
        Err(VoidError::Gateway(error)) => Err(error.into()),
        Err(VoidError::Store(error)) => Err(error.into()),
        Err(other) => Err(ApiError::internal(other)),
    }
}

fn hold_resource(hold: Transfer) -> Result<HoldResource, ApiError> {
    let id = hold.id;
    HoldResource::of(hold).ok_or_else(|| ApiError::internal(format!("{id} is no hold")))
}

pub(crate) fn hold_not_found(id: TransferId) -> ApiError {
    ApiError::not_found("hold_not_found", format!("hold {id} not found"))
}

pub(crate) fn hold_pending(id: TransferId) -> ApiError {
    let message = format!("hold {id} is not decided yet; retry");
    ApiError::conflict("hold_pending", message)
}

/// 409 for a hold that ended otherwise than asked, its code its state.
fn ended(hold: &Transfer) -> ApiError {
    let code = match hold.status {
        TransferStatus::Captured => "hold_captured",
        TransferStatus::Expired => "hold_expired",
        TransferStatus::Voided => "hold_voided",
        _ => "hold_failed",
    };
    let message = format!("hold {} is {}", hold.id, hold.status.as_str());
    ApiError::new(StatusCode::CONFLICT, code, message)
}

/// Whether a CreateError is about a hold, as a 404 or 409.
pub(crate) fn hold_error(error: &CreateError) -> Option<ApiError> {
    match error {
        CreateError::HoldNotFound(id) => Some(hold_not_found(*id)),
        CreateError::HoldPending(id) => Some(hold_pending(*id)),
        CreateError::HoldFailed(id) => Some(ApiError::new(
            StatusCode::CONFLICT,
            "hold_failed",
            format!("hold {id} is FAILED: it holds nothing"),
        )),
        _ => None,
    }
}
