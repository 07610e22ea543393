//! Fresh stores on fresh databases, for every test of this crate.

#![allow(dead_code)]

use wallet_core::contract::Fixture;
use wallet_core::contract::data::TestData;
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::money::Currency;
use wallet_core::ports::LedgerStore;
pub use wallet_core_postgres::Schema;
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{PgLedgerStore, PgSettings, PgTransferStore, PgWalletStore};

/// A pool on a new, migrated database, with the test settings, as the
/// server's administrator (who may do anything, as tests of the schema
/// itself need).
pub async fn pool_of(schema: Schema) -> (TestDatabase, sqlx::PgPool) {
    let db = TestDatabase::create().await.expect("a test database");
    let pool = settings()
        .connect(db.url())
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", db.name()));
    schema
        .migrator()
        .run(&pool)
        .await
        .unwrap_or_else(|e| panic!("migrating {}: {e}", db.name()));
    (db, pool)
}

/// A pool on a new database prepared as `walletctl migrate` does, as its
/// runtime role: what the services run as, so every store operation a
/// test runs shows the role's grants suffice.
pub async fn app_pool_of(schema: Schema) -> (TestDatabase, sqlx::PgPool) {
    let db = TestDatabase::create().await.expect("a test database");
    let url = db.prepare(schema).await.expect("a prepared test database");
    let pool = settings()
        .connect(&url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {} as its runtime role: {e}", db.name()));
    (db, pool)
}

/// The settings of every test store: the defaults, with a pool large enough
/// for the concurrency scenarios.
pub fn settings() -> PgSettings {
    PgSettings {
        max_connections: 24,
        ..PgSettings::default()
    }
}

pub async fn transfer_store() -> PgTransferStore {
    PgTransferStore::new(app_pool_of(Schema::Transaction).await.1, &settings())
}

pub async fn wallet_store() -> PgWalletStore {
    PgWalletStore::new(app_pool_of(Schema::Wallet).await.1, &settings())
}

pub async fn ledger_store() -> PgLedgerStore {
    PgLedgerStore::new(app_pool_of(Schema::Ledger).await.1, &settings())
}

/// A fixture as a type, as the contract's doc suggests for a database.
pub struct FreshLedger;

impl Fixture for FreshLedger {
    type Store = PgLedgerStore;

    async fn fresh(&self) -> PgLedgerStore {
        ledger_store().await
    }
}

/// One deposit posted by the ledger store as `pool`'s role: an outcome,
/// an account and two entries.
pub async fn one_posting(pool: &sqlx::PgPool, data: &TestData) {
    let store = PgLedgerStore::new(pool.clone(), &settings());
    let request = data.reserve_request(
        WalletId::system(Currency::USD),
        data.wallet_id(),
        "10.00",
        Currency::USD,
    );
    assert_eq!(
        store.post(&[data.wallet_reserved(&request)]).await.unwrap(),
        1
    );
}
