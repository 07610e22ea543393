//! The shop's orders, in its own PostgreSQL database: a table the wallet
//! services know nothing of.

use std::time::Duration;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};
use uuid::Uuid;
use wallet_core::{IdempotencyKey, TransferId, WalletId};

/// The shop's schema.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderState {
    /// Written, with its key; its transfer may or may not exist yet.
    PendingPayment,
    /// Its transfer is recorded: the order and the money are linked.
    Completed,
}

impl OrderState {
    fn as_str(self) -> &'static str {
        match self {
            OrderState::PendingPayment => "PENDING_PAYMENT",
            OrderState::Completed => "COMPLETED",
        }
    }

    fn parse(text: &str) -> Result<OrderState, sqlx::Error> {
        match text {
            "PENDING_PAYMENT" => Ok(OrderState::PendingPayment),
            "COMPLETED" => Ok(OrderState::Completed),
            other => Err(sqlx::Error::Decode(
                format!("unknown order state {other:?}").into(),
            )),
        }
    }
}

/// One order: the buyer pays the seller `amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    /// Its id.
    pub id: Uuid,
    /// Who pays.
    pub buyer: WalletId,
    /// Who is paid.
    pub seller: WalletId,
    /// How much, in the wallets' currency.
    pub amount: Decimal,
    /// The key its transfer is (or will be) started with; fresh per order.
    pub key: IdempotencyKey,
    /// Where it stands.
    pub state: OrderState,
    /// Its transfer, once recorded.
    pub transfer: Option<TransferId>,
}

/// The order table.
#[derive(Debug, Clone)]
pub struct OrderStore {
    pool: PgPool,
}

type Row = (Uuid, Uuid, Uuid, Decimal, String, String, Option<Uuid>);

const COLUMNS: &str =
    "id, buyer_wallet_id, seller_wallet_id, amount, idempotency_key, state, transfer_id";

fn order_of(row: Row) -> Result<Order, sqlx::Error> {
    let (id, buyer, seller, amount, key, state, transfer) = row;
    Ok(Order {
        id,
        buyer: WalletId::from_uuid(buyer),
        seller: WalletId::from_uuid(seller),
        amount,
        key: IdempotencyKey::new(key).map_err(|e| sqlx::Error::Decode(e.into()))?,
        state: OrderState::parse(&state)?,
        transfer: transfer.map(TransferId::from_uuid),
    })
}

impl OrderStore {
    /// The table in `pool`'s database.
    pub fn new(pool: PgPool) -> OrderStore {
        OrderStore { pool }
    }

    /// Brings the shop's database to this build's schema.
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        MIGRATIONS.run(&self.pool).await
    }

    /// Writes a new order, PENDING_PAYMENT, with a fresh idempotency key:
    /// the first of the two writes.
    pub async fn insert(
        &self,
        buyer: WalletId,
        seller: WalletId,
        amount: Decimal,
    ) -> Result<Order, sqlx::Error> {
        let id = Uuid::now_v7();
        // A key no other order (nor any other client of the wallet
        // services) uses.
        let key = format!("shop-order-{id}");
        let row: Row = sqlx::query_as(&format!(
            "INSERT INTO orders (id, buyer_wallet_id, seller_wallet_id, amount, idempotency_key, state)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(buyer.as_uuid())
        .bind(seller.as_uuid())
        .bind(amount)
        .bind(&key)
        .bind(OrderState::PendingPayment.as_str())
        .fetch_one(&self.pool)
        .await?;
        order_of(row)
    }

    /// Records the order's transfer and completes it: the second write.
    /// Writing the same transfer again changes nothing; the order as it
    /// now is comes back.
    pub async fn complete(&self, id: Uuid, transfer: TransferId) -> Result<Order, sqlx::Error> {
        let row: Row = sqlx::query_as(&format!(
            "UPDATE orders SET state = $3, transfer_id = $2
              WHERE id = $1 AND (transfer_id IS NULL OR transfer_id = $2)
             RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(transfer.as_uuid())
        .bind(OrderState::Completed.as_str())
        .fetch_one(&self.pool)
        .await?;
        order_of(row)
    }

    /// An order by id.
    pub async fn get(&self, id: Uuid) -> Result<Option<Order>, sqlx::Error> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM orders WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(order_of).transpose()
    }

    /// The orders still PENDING_PAYMENT written more than `older_than`
    /// ago, oldest first, at most `limit`.
    pub async fn pending(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<Order>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM orders
              WHERE state = $1 AND created_at <= now() - make_interval(secs => $2)
              ORDER BY created_at LIMIT $3"
        ))
        .bind(OrderState::PendingPayment.as_str())
        .bind(older_than.as_secs_f64())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(order_of).collect()
    }
}
