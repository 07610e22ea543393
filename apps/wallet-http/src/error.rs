//! The one error shape of every service.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use wallet_core::TransferId;
use wallet_core::money::MoneyError;
use wallet_core::ports::{GatewayError, StoreError};
use wallet_core::tags::TagError;

/// An error answer: a status and `{"error":{"code":"...","message":"..."}}`.
///
/// `code` is stable and meant for programs; `message` is for people and may
/// change. A refused transfer also carries the id of the FAILED transfer it
/// left behind (`"transfer_id"` inside the error object).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    transfer_id: Option<TransferId>,
}

/// The JSON body of an error answer, for servers and clients alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The object inside [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case, for programs.
    pub code: String,
    /// For people.
    pub message: String,
    /// The FAILED transfer a refused transfer request created; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub transfer_id: Option<TransferId>,
}

impl ApiError {
    /// Any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            transfer_id: None,
        }
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `malformed_request`: the body is not the JSON the route expects.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::bad_request("malformed_request", message)
    }

    /// 401 `unauthorized`: the request lacks a credential the route
    /// accepts. Answered with `WWW-Authenticate: Bearer`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs the caller's service credential",
        )
    }

    /// 404 with a specific code (`wallet_not_found`, ...).
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// 409 with a specific code: retry later.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 413 `body_too_large`, for a route whose bodies take `max` bytes at
    /// most.
    pub fn body_too_large(max: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body exceeds {max} bytes"),
        )
    }

    /// 415 `unsupported_media_type`.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a body with Content-Type: application/json",
        )
    }

    /// 422 with a specific code: a business rule refused the request; do not
    /// retry it unchanged.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 500 `internal`. The detail goes to the log, not to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// 503 `unavailable`: a dependency is down; retry. The detail goes to the
    /// log, not to the client.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::warn!(%detail, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "service temporarily unavailable, retry later",
        )
    }

    /// Attaches the id of the transfer the error is about.
    pub fn with_transfer_id(mut self, id: TransferId) -> Self {
        self.transfer_id = Some(id);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The transfer the error is about, if any.
    pub fn transfer_id(&self) -> Option<TransferId> {
        self.transfer_id
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                transfer_id: self.transfer_id,
            },
        }
    }
}

/// 409 and 503 also carry `Retry-After: 1`: both mean "the same request
/// may succeed shortly". 401 carries `WWW-Authenticate: Bearer`.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if matches!(
            self.status,
            StatusCode::CONFLICT | StatusCode::SERVICE_UNAVAILABLE
        ) {
            let one = HeaderValue::from_static("1");
            response.headers_mut().insert(header::RETRY_AFTER, one);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let bearer = HeaderValue::from_static("Bearer");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, bearer);
        }
        response
    }
}

/// `Unavailable` -> 503 `unavailable` (retry); `Integrity` and anything newer
/// -> 500 `internal`.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => ApiError::unavailable(error),
            _ => ApiError::internal(error),
        }
    }
}

/// Every gateway error is ambiguous and transient: 503 `unavailable`.
impl From<GatewayError> for ApiError {
    fn from(error: GatewayError) -> Self {
        ApiError::unavailable(error)
    }
}

/// An unknown currency -> 422 `unknown_currency`; any other money error
/// (not a number, zero or negative, too many decimals, too large) -> 422
/// `invalid_amount`.
impl From<MoneyError> for ApiError {
    fn from(error: MoneyError) -> Self {
        let code = match error {
            MoneyError::UnknownCurrency(_) => "unknown_currency",
            _ => "invalid_amount",
        };
        ApiError::unprocessable(code, error.to_string())
    }
}

impl From<TagError> for ApiError {
    fn from(error: TagError) -> Self {
        let code = match error.is_reference() {
            true => "invalid_reference",
            false => "invalid_metadata",
        };
        ApiError::unprocessable(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn json_of(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn errors_have_one_shape_and_carry_a_transfer_id_when_given() {
        let (status, body) = json_of(ApiError::malformed("bad")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "malformed_request", "message": "bad"}})
        );
        let id: TransferId = "00000000-0000-0000-0000-000000000007".parse().unwrap();
        let error = ApiError::unprocessable("insufficient_funds", "no").with_transfer_id(id);
        let (status, body) = json_of(error).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["error"]["transfer_id"], id.to_string());
    }

    #[test]
    fn core_errors_map_to_their_statuses() {
        let unavailable = ApiError::from(StoreError::Unavailable("db down".into()));
        assert_eq!(
            (unavailable.status(), unavailable.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert!(
            !unavailable.message().contains("db down"),
            "detail is logged only"
        );
        let integrity = ApiError::from(StoreError::Integrity("dup".into()));
        assert_eq!(
            (integrity.status(), integrity.code()),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
        let amount = ApiError::from(MoneyError::NotPositive);
        assert_eq!(
            (amount.status(), amount.code()),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount")
        );
        let currency = ApiError::from(MoneyError::UnknownCurrency("XXX".into()));
        assert_eq!(currency.code(), "unknown_currency");
        let gateway = ApiError::from(GatewayError::Timeout);
        assert_eq!(gateway.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
