//! The shop's own HTTP API: its orders, and just enough of the wallets to
//! try it (open one, deposit into it, read it).
//!
//! | route | what |
//! | --- | --- |
//! | `POST /wallets` `{"currency": "USD"}` | opens a wallet |
//! | `GET /wallets/{id}` | the wallet's balances |
//! | `POST /wallets/{id}/deposits` `{"amount": "100.00", "key": "..."}` | a deposit, idempotent by `key` |
//! | `POST /orders` `{"buyer": id, "seller": id, "amount": "30.25"}` | places an order and pays it |
//! | `GET /orders/{id}` | the order and its transfer |

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;
use wallet_core::service::{CreateError, Parties, TransferRequest};
use wallet_core::{Currency, IdempotencyKey, WalletId};

use crate::wallets::WalletSystem;
use crate::{Shop, ShopError};

/// What the handlers share.
#[derive(Clone)]
struct App {
    shop: Shop,
    system: Arc<WalletSystem>,
}

/// The shop's router.
pub fn router(shop: Shop, system: Arc<WalletSystem>) -> Router {
    Router::new()
        .route("/wallets", post(open_wallet))
        .route("/wallets/{id}", get(wallet))
        .route("/wallets/{id}/deposits", post(deposit))
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(order))
        .with_state(App { shop, system })
}

/// An error answer: `{"error": "..."}` with its status.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<ShopError> for Failure {
    fn from(error: ShopError) -> Failure {
        let status = match &error {
            ShopError::Transfer(CreateError::WalletNotFound(_)) => StatusCode::NOT_FOUND,
            ShopError::Transfer(
                CreateError::InvalidAmount(_)
                | CreateError::SameWallet
                | CreateError::CurrencyMismatch(_)
                | CreateError::KeyReused,
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            ShopError::Transfer(CreateError::InFlight) => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Failure(status, error.to_string())
    }
}

fn unavailable(error: impl std::fmt::Display) -> Failure {
    Failure(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

#[derive(Deserialize)]
struct NewWallet {
    currency: String,
}

async fn open_wallet(
    State(app): State<App>,
    Json(body): Json<NewWallet>,
) -> Result<Response, Failure> {
    let currency = Currency::parse(&body.currency)
        .map_err(|e| Failure(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let wallet = app
        .system
        .wallets
        .open(currency)
        .await
        .map_err(unavailable)?;
    Ok((StatusCode::CREATED, Json(wallet)).into_response())
}

async fn wallet(State(app): State<App>, Path(id): Path<Uuid>) -> Result<Response, Failure> {
    match app.system.wallets.wallet(WalletId::from_uuid(id)).await {
        Ok(Some(wallet)) => Ok(Json(wallet).into_response()),
        Ok(None) => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("wallet {id} not found"),
        )),
        Err(error) => Err(unavailable(error)),
    }
}

#[derive(Deserialize)]
struct Deposit {
    amount: Decimal,
    key: String,
}

async fn deposit(
    State(app): State<App>,
    Path(id): Path<Uuid>,
    Json(body): Json<Deposit>,
) -> Result<Response, Failure> {
    let key = IdempotencyKey::new(body.key)
        .map_err(|e| Failure(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let request = TransferRequest {
        tags: Default::default(),
        key,
        parties: Parties::Deposit(WalletId::from_uuid(id)),
        amount: body.amount,
        currency: None,
    };
    let created = app
        .system
        .transactions
        .create(request)
        .await
        .map_err(|e| Failure::from(ShopError::from(e)))?;
    Ok((StatusCode::ACCEPTED, Json(created.transfer)).into_response())
}

#[derive(Deserialize)]
struct NewOrder {
    buyer: WalletId,
    seller: WalletId,
    amount: Decimal,
}

async fn place_order(
    State(app): State<App>,
    Json(body): Json<NewOrder>,
) -> Result<Response, Failure> {
    let (order, transfer) = app
        .shop
        .place_order(body.buyer, body.seller, body.amount)
        .await?;
    let body = json!({ "order": order, "transfer": transfer });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn order(State(app): State<App>, Path(id): Path<Uuid>) -> Result<Response, Failure> {
    let Some(order) = app.shop.orders().get(id).await.map_err(ShopError::from)? else {
        return Err(Failure(
            StatusCode::NOT_FOUND,
            format!("order {id} not found"),
        ));
    };
    let transfer = match order.transfer {
        Some(transfer) => app.shop.transfer(transfer).await?,
        None => None,
    };
    Ok(Json(json!({ "order": order, "transfer": transfer })).into_response())
}
