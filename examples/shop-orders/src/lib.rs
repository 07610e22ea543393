//! Someone else's service embedding the wallet system: a shop with its own
//! axum router and its own PostgreSQL table of orders, paying each order
//! with a transfer of the embedded wallet services (on PostgreSQL and
//! Kafka, through `wallet-core`, `wallet-core-postgres` and
//! `wallet-core-kafka`).
//!
//! The order and its transfer live in different databases, so no one
//! transaction spans them. They are kept consistent by the idempotency key
//! instead:
//!
//! 1. [`Shop::open_order`] writes the order, PENDING_PAYMENT, with a fresh
//!    idempotency key;
//! 2. [`Shop::pay`] starts the transfer with that key;
//! 3. [`Shop::record_payment`] records the transfer's id: the order is
//!    COMPLETED.
//!
//! A crash between 1 and 3 leaves the order PENDING_PAYMENT, with or
//! without a transfer. [`Shop::recover`] sends each such order's transfer
//! again with the same key and the same request: the transaction service
//! answers with the transfer it already has for the key (a replay), or
//! starts it if it never got the first request; never a second one. Then
//! it records it. See the example's README.

pub mod api;
pub mod orders;
pub mod wallets;

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_core::ports::StoreError;
use wallet_core::service::{CreateError, Parties, TransferRequest};
use wallet_core::transfer::Transfer;
use wallet_core::{TransferId, WalletId};

use crate::orders::{Order, OrderState, OrderStore};
use crate::wallets::Transactions;

/// Why a shop operation failed. Nothing is lost by a failure: an order
/// left PENDING_PAYMENT is finished by the next recovery pass.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// The shop's database failed.
    #[error("orders database: {0}")]
    Orders(#[from] sqlx::Error),
    /// The transaction service refused or could not take the transfer.
    #[error("transfer: {0}")]
    Transfer(#[from] CreateError),
    /// The transaction service's store failed.
    #[error("transfer store: {0}")]
    Store(#[from] StoreError),
}

/// What a recovery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Orders completed, each with its one transfer.
    pub completed: Vec<(Uuid, TransferId)>,
    /// Orders left PENDING_PAYMENT for the next pass, with why.
    pub left: Vec<(Uuid, String)>,
}

/// The shop: its orders, paid through the embedded transaction service.
#[derive(Clone)]
pub struct Shop {
    orders: OrderStore,
    transactions: Arc<Transactions>,
}

impl Shop {
    /// The shop over its order table and the embedded transaction service.
    pub fn new(orders: OrderStore, transactions: Arc<Transactions>) -> Shop {
        Shop {
            orders,
            transactions,
        }
    }

    /// The order table.
    pub fn orders(&self) -> &OrderStore {
        &self.orders
    }

    /// Places an order: its row, its transfer, the transfer recorded.
    pub async fn place_order(
        &self,
        buyer: WalletId,
        seller: WalletId,
        amount: Decimal,
    ) -> Result<(Order, Transfer), ShopError> {
        let order = self.open_order(buyer, seller, amount).await?;
        let transfer = self.pay(&order).await?;
        let order = self.record_payment(&order, transfer.id).await?;
        Ok((order, transfer))
    }

    /// The first write: the order, PENDING_PAYMENT, with a fresh key.
    pub async fn open_order(
        &self,
        buyer: WalletId,
        seller: WalletId,
        amount: Decimal,
    ) -> Result<Order, ShopError> {
        Ok(self.orders.insert(buyer, seller, amount).await?)
    }

    /// The transfer of `order`, started with its key. The request is made
    /// from the order row alone, so sending it again is the same request:
    /// the transaction service answers with the transfer it has for the
    /// key.
    pub async fn pay(&self, order: &Order) -> Result<Transfer, ShopError> {
        let request = TransferRequest {
            tags: Default::default(),
            key: order.key.clone(),
            parties: Parties::Transfer {
                sender: order.buyer,
                receiver: order.seller,
            },
            amount: order.amount,
            currency: None,
        };
        let created = self.transactions.create(request).await?;
        Ok(created.transfer)
    }

    /// The second write: the transfer's id on the order, COMPLETED.
    pub async fn record_payment(
        &self,
        order: &Order,
        transfer: TransferId,
    ) -> Result<Order, ShopError> {
        Ok(self.orders.complete(order.id, transfer).await?)
    }

    /// One recovery pass: every order PENDING_PAYMENT for longer than
    /// `older_than` (time for a request in flight to finish on its own)
    /// gets its transfer sent again with its key, and recorded. An order
    /// that fails now (the transaction service busy, a key still in
    /// flight) is left for the next pass.
    pub async fn recover(&self, older_than: Duration) -> Result<Recovered, ShopError> {
        let mut recovered = Recovered::default();
        for order in self.orders.pending(older_than, 100).await? {
            debug_assert_eq!(order.state, OrderState::PendingPayment);
            match self.pay(&order).await {
                Ok(transfer) => {
                    self.record_payment(&order, transfer.id).await?;
                    tracing::info!(order = %order.id, transfer = %transfer.id, "order recovered");
                    recovered.completed.push((order.id, transfer.id));
                }
                Err(error) => {
                    tracing::warn!(order = %order.id, %error, "order left for the next pass");
                    recovered.left.push((order.id, error.to_string()));
                }
            }
        }
        Ok(recovered)
    }

    /// A transfer of the embedded transaction service.
    pub async fn transfer(&self, id: TransferId) -> Result<Option<Transfer>, ShopError> {
        Ok(self.transactions.transfer(id).await?)
    }
}
