//! Fresh stores on fresh databases, for every test of this crate.

#![allow(dead_code)]

use wallet_core::contract::Fixture;
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{
    PgLedgerStore, PgSettings, PgTransferStore, PgWalletStore, migrate_ledger_db,
    migrate_transaction_db, migrate_wallet_db,
};

/// A pool on a new, migrated database, with the test settings.
pub async fn pool_of(migrate: Migrate) -> (TestDatabase, sqlx::PgPool) {
    let db = TestDatabase::create().await;
    let pool = settings()
        .connect(db.url())
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", db.name()));
    match migrate {
        Migrate::Transaction => migrate_transaction_db(&pool).await,
        Migrate::Wallet => migrate_wallet_db(&pool).await,
        Migrate::Ledger => migrate_ledger_db(&pool).await,
    }
    .unwrap_or_else(|e| panic!("migrating {}: {e}", db.name()));
    (db, pool)
}

/// Which schema.
#[derive(Debug, Clone, Copy)]
pub enum Migrate {
    /// The transaction service's.
    Transaction,
    /// The wallet service's.
    Wallet,
    /// The ledger service's.
    Ledger,
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
    PgTransferStore::new(pool_of(Migrate::Transaction).await.1, &settings())
}

pub async fn wallet_store() -> PgWalletStore {
    PgWalletStore::new(pool_of(Migrate::Wallet).await.1, &settings())
}

pub async fn ledger_store() -> PgLedgerStore {
    PgLedgerStore::new(pool_of(Migrate::Ledger).await.1, &settings())
}

/// A fixture as a type, as the contract's doc suggests for a database.
pub struct FreshLedger;

impl Fixture for FreshLedger {
    type Store = PgLedgerStore;

    async fn fresh(&self) -> PgLedgerStore {
        ledger_store().await
    }
}
