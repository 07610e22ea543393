//! The shop's order and its transfer stay consistent across a crash
//! between the two writes: on real PostgreSQL databases (the shop's and
//! the three services') and a real broker. Needs `WALLET_TEST_DATABASE_URL`
//! (or the local server) and `WALLET_TEST_KAFKA`; fails without them.

use std::str::FromStr;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use shop_orders::orders::{OrderState, OrderStore};
use shop_orders::wallets::{Databases, Names, WalletSystem};
use shop_orders::{Recovered, Shop};
use wallet_core::money::Balance;
use wallet_core::service::{Parties, TransferRequest};
use wallet_core::transfer::TransferStatus;
use wallet_core::{Currency, IdempotencyKey, TransferId, WalletId};
use wallet_core_kafka::KafkaSettings;
use wallet_core_postgres::PgSettings;
use wallet_core_postgres::testdb::TestDatabase;

/// The environment variable naming the broker's bootstrap servers.
const BROKER_ENV: &str = "WALLET_TEST_KAFKA";
/// How long the saga may take to finish a transfer here.
const SETTLE: Duration = Duration::from_secs(60);

fn decimal(text: &str) -> Decimal {
    Decimal::from_str(text).expect("a decimal")
}

/// Broker settings for a test: few partitions, short timeouts.
fn kafka() -> KafkaSettings {
    let bootstrap = std::env::var(BROKER_ENV).unwrap_or_else(|_| {
        panic!("{BROKER_ENV} is not set: start a broker (scripts/lib/broker.sh) and export it")
    });
    let mut kafka = KafkaSettings::new(bootstrap);
    kafka.partitions = 2;
    kafka.replication_factor = 1;
    kafka.session_timeout = Duration::from_secs(6);
    kafka
}

async fn database() -> TestDatabase {
    TestDatabase::create().await.expect("a test database")
}

/// Waits until the transfer is terminal; it must have SUCCEEDED.
async fn succeeded(system: &WalletSystem, id: TransferId) {
    let transfer = system
        .transactions
        .wait_for(id, SETTLE)
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(transfer.status, TransferStatus::Succeeded, "{transfer:?}");
}

/// Waits until `wallet`'s available funds are `expected` and nothing is
/// reserved (the wallet service applies the ledger's outcome on its own
/// consumer, after the transaction service may have).
async fn funds_settle(system: &WalletSystem, wallet: WalletId, expected: &str) {
    let expected = Balance::from_decimal(decimal(expected));
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = system
            .wallets
            .wallet(wallet)
            .await
            .expect("read")
            .expect("open");
        if now.available == expected && now.reserved == Balance::from_decimal(Decimal::ZERO) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wallet {wallet}: {now:?}, expected {expected} available"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_the_two_writes_is_recovered_with_one_transfer_per_order() {
    let kafka = kafka();
    let dbs = [database().await, database().await, database().await];
    let shop_db = database().await;
    let databases = Databases {
        transaction: dbs[0].url().to_owned(),
        wallet: dbs[1].url().to_owned(),
        ledger: dbs[2].url().to_owned(),
    };
    let names = Names::prefixed(format!("shop-{}-", uuid::Uuid::new_v4().simple()));
    let system = WalletSystem::start(&databases, &kafka, &names)
        .await
        .expect("the wallet system starts");
    let pool = PgSettings::default()
        .connect(shop_db.url())
        .await
        .expect("the shop's database");
    let orders = OrderStore::new(pool);
    orders.migrate().await.expect("the shop's schema");
    let shop = Shop::new(orders.clone(), system.transactions.clone());

    // A buyer with 100.00, a seller with nothing.
    let buyer = system.wallets.open(Currency::USD).await.expect("open").id;
    let seller = system.wallets.open(Currency::USD).await.expect("open").id;
    let deposit = system
        .transactions
        .create(TransferRequest {
            tags: Default::default(),
            key: IdempotencyKey::new("shop-test-deposit").expect("key"),
            parties: Parties::Deposit(buyer),
            amount: decimal("100.00"),
            currency: None,
        })
        .await
        .expect("deposit");
    succeeded(&system, deposit.transfer.id).await;
    funds_settle(&system, buyer, "100.00").await;

    // Order A: the host crashes after the transfer call, before recording
    // it. Order B: before the call. Both are left PENDING_PAYMENT.
    let order_a = shop
        .open_order(buyer, seller, decimal("30.00"))
        .await
        .expect("order A");
    let paid_a = shop.pay(&order_a).await.expect("order A's transfer");
    let order_b = shop
        .open_order(buyer, seller, decimal("20.00"))
        .await
        .expect("order B");
    for order in [&order_a, &order_b] {
        let now = orders.get(order.id).await.expect("read").expect("stored");
        assert_eq!(now.state, OrderState::PendingPayment);
        assert_eq!(now.transfer, None);
    }

    // The recovery pass sends both again with their keys: A's answer is
    // the transfer it already has, B's a new one.
    let recovered = shop.recover(Duration::ZERO).await.expect("recovery");
    assert!(recovered.left.is_empty(), "{recovered:?}");
    let mut completed = recovered.completed.clone();
    completed.sort();
    let transfer_b = completed
        .iter()
        .find(|(order, _)| *order == order_b.id)
        .map(|(_, transfer)| *transfer)
        .expect("order B recovered");
    assert!(
        completed.contains(&(order_a.id, paid_a.id)),
        "order A recovered with the transfer it started: {recovered:?}"
    );
    assert_eq!(completed.len(), 2, "{recovered:?}");
    assert_ne!(transfer_b, paid_a.id);
    // A second pass finds nothing to do.
    assert_eq!(
        shop.recover(Duration::ZERO).await.expect("recovery"),
        Recovered::default()
    );

    for (order, transfer) in [(&order_a, paid_a.id), (&order_b, transfer_b)] {
        let now = orders.get(order.id).await.expect("read").expect("stored");
        assert_eq!(now.state, OrderState::Completed);
        assert_eq!(now.transfer, Some(transfer));
        succeeded(&system, transfer).await;
    }

    // Exactly one transfer per order's key in the transaction service's
    // database, and none other between the two wallets.
    let transactions = PgSettings::default()
        .connect(dbs[0].url())
        .await
        .expect("the transaction database");
    let per_key: Vec<(String, i64)> = sqlx::query_as(
        "SELECT idempotency_key, count(*) FROM transfers
          WHERE sender_wallet_id = $1 AND receiver_wallet_id = $2
          GROUP BY idempotency_key ORDER BY idempotency_key",
    )
    .bind(buyer.as_uuid())
    .bind(seller.as_uuid())
    .fetch_all(&transactions)
    .await
    .expect("count");
    let mut expected = vec![
        (order_a.key.as_str().to_owned(), 1),
        (order_b.key.as_str().to_owned(), 1),
    ];
    expected.sort();
    assert_eq!(per_key, expected);

    // The money moved once per order: 100 - 30 - 20, and 30 + 20.
    funds_settle(&system, buyer, "50.00").await;
    funds_settle(&system, seller, "50.00").await;

    system.stop().await;
    transactions.close().await;
    for db in dbs.into_iter().chain([shop_db]) {
        db.drop_now().await.expect("dropped");
    }
}
