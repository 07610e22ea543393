//! The history routes: transfers newest first, a page at a time.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v1/transfers?wallet_id=&status=&kind=&reference=&since=&until=&limit=&cursor=` | 200 [`TransfersPage`]; 400 `invalid_query`, `invalid_cursor`; 404 `wallet_not_found` |
//! | `GET /v1/wallets/{id}/transfers?status=&kind=&reference=&since=&until=&limit=&cursor=` | the same, of the wallet in the path; 400 `invalid_id` too |
//!
//! Every parameter is optional. A full page carries `next_cursor`, to pass
//! as `cursor` for the next (older) page; the last page carries `null`.
//! The order and what a cursor promises are [`wallet_core::history`]'s.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use wallet_core::Timestamp;
use wallet_core::history::{HistoryCursor, HistoryQuery, MAX_PAGE};
use wallet_core::ids::WalletId;
use wallet_core::ports::{TransferReads, TransferStore, WalletGateway};
use wallet_core::service::HistoryError;
use wallet_core::tags::Reference;
use wallet_core::transfer::{TransferKind, TransferStatus};
use wallet_http::openapi::{bounded_integer, string_enum};
use wallet_http::{ApiError, ErrorBody, Json, Path, Query};

use crate::{Svc, TransferResource};

/// Transfers per page when the client does not say.
pub const DEFAULT_PAGE: usize = 50;

/// One page of transfers, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TransfersPage {
    /// The transfers, deposits, withdrawals and holds, newest first.
    pub transfers: Vec<TransferResource>,
    /// Pass as `cursor` to get the next, older page; `null` when this page
    /// is not full (there is nothing older).
    pub next_cursor: Option<String>,
}

/// Declares the query of a history route: the filters and paging both
/// routes take, after the members given first.
macro_rules! history_params {
    ($(#[$meta:meta])* $name:ident { $($first:tt)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            $($first)*
            /// Only those in this status.
            #[param(schema_with = status_schema)]
            pub status: Option<TransferStatus>,
            /// Only those of this kind.
            #[param(schema_with = kind_schema)]
            pub kind: Option<TransferKind>,
            /// Only the one with this reference.
            #[param(value_type = Option<String>, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,128}$")]
            pub reference: Option<String>,
            /// Only those created at or after this RFC 3339 time (write `+`
            /// as `%2B`, or use `Z`).
            #[param(value_type = Option<String>, format = DateTime)]
            pub since: Option<Timestamp>,
            /// Only those created before this RFC 3339 time (none when it
            /// is not after `since`).
            #[param(value_type = Option<String>, format = DateTime)]
            pub until: Option<Timestamp>,
            /// Transfers wanted, 1 to 500; 50 when not given.
            #[param(schema_with = limit_schema)]
            pub limit: Option<usize>,
            /// The `next_cursor` of the page before.
            #[param(value_type = Option<String>, pattern = "^[0-7][0-9a-f]{47}$")]
            pub cursor: Option<String>,
        }

        impl $name {
            /// The query of these filters and paging, of `wallet`, or 400
            /// `invalid_query` / `invalid_cursor`.
            fn of_wallet(self, wallet: Option<WalletId>) -> Result<HistoryQuery, ApiError> {
                let invalid = |message: String| ApiError::bad_request("invalid_query", message);
                let limit = wallet_http::page_limit(self.limit, DEFAULT_PAGE, MAX_PAGE)?;
                let reference = self
                    .reference
                    .map(Reference::new)
                    .transpose()
                    .map_err(|e| invalid(format!("reference: {e}")))?;
                let after = self
                    .cursor
                    .as_deref()
                    .map(HistoryCursor::parse)
                    .transpose()
                    .map_err(|e| ApiError::bad_request("invalid_cursor", e.to_string()))?;
                Ok(HistoryQuery {
                    wallet,
                    status: self.status,
                    kind: self.kind,
                    reference,
                    since: self.since,
                    until: self.until,
                    after,
                    limit,
                })
            }
        }
    };
}

history_params!(
    /// The query of `GET /v1/transfers`.
    HistoryParams {
        /// Only the transfers this wallet sends or receives.
        #[param(value_type = Option<uuid::Uuid>)]
        pub wallet_id: Option<WalletId>,
    }
);

history_params!(
    /// The query of `GET /v1/wallets/{id}/transfers`: the wallet is the
    /// path's.
    WalletHistoryParams {}
);

fn status_schema() -> utoipa::openapi::schema::Object {
    string_enum(&crate::resource::STATUSES, false)
}

fn kind_schema() -> utoipa::openapi::schema::Object {
    string_enum(&crate::resource::KINDS, false)
}

fn limit_schema() -> utoipa::openapi::schema::Object {
    let description = format!("Transfers wanted; {DEFAULT_PAGE} when not given.");
    bounded_integer(1, MAX_PAGE as u64, &description)
}

/// Transfers, deposits, withdrawals and holds, newest first, one page at
/// a time; of one wallet with `wallet_id`.
#[utoipa::path(
    get,
    path = "/v1/transfers",
    tag = "transfers",
    params(HistoryParams),
    responses(
        (status = 200, description = "A page of transfers, newest first", body = TransfersPage),
        (status = 400, description = "`invalid_query`, `invalid_cursor`", body = ErrorBody),
        (status = 404, description = "`wallet_not_found`: `wallet_id` names no wallet", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
pub(crate) async fn transfers<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<TransfersPage>, ApiError> {
    let wallet = params.wallet_id;
    page(&svc, params.of_wallet(wallet)?).await
}

/// A wallet's transfers, deposits, withdrawals and holds, sent or
/// received, newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/wallets/{id}/transfers",
    tag = "transfers",
    params(("id" = uuid::Uuid, Path, description = "The wallet"), WalletHistoryParams),
    responses(
        (status = 200, description = "A page of the wallet's transfers, newest first", body = TransfersPage),
        (status = 400, description = "`invalid_id`, `invalid_query`, `invalid_cursor`", body = ErrorBody),
        (status = 404, description = "`wallet_not_found`", body = ErrorBody),
        (status = 503, description = "`unavailable`", body = ErrorBody)
    )
)]
pub(crate) async fn wallet_transfers<S: TransferStore + TransferReads, G: WalletGateway>(
    State(svc): State<Svc<S, G>>,
    Path(wallet): Path<WalletId>,
    Query(params): Query<WalletHistoryParams>,
) -> Result<Json<TransfersPage>, ApiError> {
    page(&svc, params.of_wallet(Some(wallet))?).await
}

async fn page<S: TransferStore + TransferReads, G: WalletGateway>(
    svc: &Svc<S, G>,
    query: HistoryQuery,
) -> Result<Json<TransfersPage>, ApiError> {
    let page = svc.history(&query).await.map_err(|error| match error {
        HistoryError::WalletNotFound(_) => {
            ApiError::not_found("wallet_not_found", error.to_string())
        }
        HistoryError::Gateway(e) => e.into(),
        HistoryError::Store(e) => e.into(),
        other => ApiError::internal(other),
    })?;
    Ok(Json(TransfersPage {
        transfers: page
            .transfers
            .into_iter()
            .map(TransferResource::from)
            .collect(),
        next_cursor: page.next.map(|c| c.token()),
    }))
}
