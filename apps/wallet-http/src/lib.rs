//! Shared HTTP plumbing of the wallet services.
//!
//! Every service answers errors in one JSON shape ([`ApiError`]), reads JSON
//! bodies through [`Json`] (whose rejections use that shape), limits request
//! bodies to [`MAX_BODY_BYTES`] ([`limit_body`]), and gets `/healthz`, a 404
//! fallback and request tracing from [`service_router`]. [`serve`] runs a
//! router until Ctrl-C or SIGTERM, [`serve_until`] until a future of the
//! caller's resolves, on a plain listener or a [`TlsListener`].
//!
//! | status | code | when |
//! | --- | --- | --- |
//! | 400 | `malformed_request` | the body is not JSON, or not the expected fields and types |
//! | 400 | `invalid_id` | a path id is not a uuid |
//! | 400 | `invalid_query` | a query parameter is missing its type or range |
//! | 401 | `unauthorized` | an internal route without the caller's [`ServiceToken`] |
//! | 404 | `not_found` | no such route |
//! | 405 | `method_not_allowed` | the route exists, the method does not |
//! | 413 | `body_too_large` | the body exceeds [`MAX_BODY_BYTES`] |
//! | 415 | `unsupported_media_type` | the body is not declared `application/json` |
//! | 422 | `invalid_amount`, `unknown_currency` | money that breaks the currency's rules |
//! | 500 | `internal` | a bug or a storage integrity error |
//! | 503 | `unavailable` | storage or a peer service is down; retry |
//!
//! Each service adds its own codes (`wallet_not_found`, ...). 409 and 503
//! answers carry `Retry-After: 1`.

mod error;
mod extract;
pub mod openapi;
mod routes;
#[cfg(feature = "test-util")]
pub mod testing;
mod tls;
mod token;
pub mod trace;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use extract::{Json, Path, Query, is_uuid, page_limit, uuid};
pub use routes::{
    MAX_BODY_BYTES, healthz, limit_body, limit_body_to, method_not_allowed, not_found, serve,
    serve_until, service_router, shutdown_signal,
};
pub use tls::{ServerTls, TlsListener, TlsSetupError};
pub use token::{ServiceToken, TokenError};
