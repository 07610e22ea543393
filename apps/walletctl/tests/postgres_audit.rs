//! `walletctl migrate` and `walletctl audit` on real PostgreSQL databases:
//! migrate makes each database's roles and can run again; the audit is
//! clean on databases the stores wrote, and fails naming the wallet on one
//! whose balance was changed behind the ledger's back.

use std::process::{Command, Output};

use sqlx::Connection;

use wallet_core::contract::data::TestData;
use wallet_core::event::Inbound;
use wallet_core::ids::{IdGenerator, WalletId};
use wallet_core::money::Currency;
use wallet_core::outcome::ReserveOutcome;
use wallet_core::ports::{LedgerReads, LedgerStore, ReserveAttempt, TransferStore, WalletStore};
use wallet_core::transfer::TransferKind;
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{PgLedgerStore, PgSettings, PgTransferStore, PgWalletStore};

fn walletctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walletctl"))
        .args(args)
        .output()
        .expect("running walletctl")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

struct Databases {
    transfers: TestDatabase,
    wallets: TestDatabase,
    ledger: TestDatabase,
}

impl Databases {
    async fn create() -> Databases {
        Databases {
            transfers: TestDatabase::create().await.expect("a test database"),
            wallets: TestDatabase::create().await.expect("a test database"),
            ledger: TestDatabase::create().await.expect("a test database"),
        }
    }

    fn args<'a>(&'a self, command: &'a str) -> Vec<&'a str> {
        vec![
            command,
            "--transaction-db",
            self.transfers.url(),
            "--wallet-db",
            self.wallets.url(),
            "--ledger-db",
            self.ledger.url(),
        ]
    }
}

/// One transfer through every store, as the services run it, with the
/// ledger's event carried to the wallet and transaction stores by hand.
async fn saga(
    stores: &(PgTransferStore, PgWalletStore, PgLedgerStore),
    data: &TestData,
    from: WalletId,
    to: WalletId,
    amount: &str,
) {
    let (transfers, wallets, ledger) = stores;
    let (mut transfer, fingerprint) = data.transfer(data.now());
    let request = data.reserve_request(from, to, amount, Currency::USD);
    transfer.id = request.transfer_id;
    transfer.correlation_id = request.correlation_id;
    transfer.sender_wallet_id = from;
    transfer.receiver_wallet_id = to;
    transfer.amount = request.amount;
    transfer.kind = if from.system_currency().is_some() {
        TransferKind::Deposit
    } else {
        TransferKind::Transfer
    };
    transfers.begin(&transfer, &fingerprint).await.unwrap();
    let outcome = wallets.reserve(&request, data.stamp()).await.unwrap();
    transfers
        .record_reserve(transfer.id, ReserveAttempt::Definite(outcome), data.now())
        .await
        .unwrap();
    if outcome != ReserveOutcome::Reserved {
        return;
    }
    ledger
        .post(&[data.wallet_reserved(&request)])
        .await
        .unwrap();
    let decided = ledger.outcome(transfer.id).await.unwrap().unwrap();
    let event: Inbound<_> = data.ledger_outcome(&request, decided);
    assert!(
        wallets
            .finalize(std::slice::from_ref(&event), data.now())
            .await
            .unwrap()
            .is_empty()
    );
    transfers
        .apply_ledger_outcomes(&[event], data.now())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_then_audit_clean_then_corrupted() {
    let dbs = Databases::create().await;
    // Twice: the second run finds the roles and the migrations in place.
    for _ in 0..2 {
        let migrated = walletctl(&dbs.args("migrate"));
        let said = text(&migrated);
        assert!(migrated.status.success(), "{said}");
        assert_eq!(said.matches("migrated").count(), 3, "{said}");
        for db in [&dbs.transfers, &dbs.wallets, &dbs.ledger] {
            let roles = format!("owner role {0}_owner, runtime role {0}_app", db.name());
            assert!(said.contains(&roles), "{said}");
        }
    }
    let mut admin = sqlx::PgConnection::connect(dbs.ledger.url()).await.unwrap();
    let (owner, app_may_update): (String, bool) = sqlx::query_as(
        "SELECT pg_get_userbyid(relowner)::text,
                has_table_privilege($1, 'entries', 'UPDATE')
           FROM pg_class WHERE relname = 'entries'",
    )
    .bind(format!("{}_app", dbs.ledger.name()))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(owner, format!("{}_owner", dbs.ledger.name()));
    assert!(!app_may_update, "the runtime role may not change entries");
    let settings = PgSettings::default();
    let connect = |url: &str| {
        let (settings, url) = (settings.clone(), url.to_owned());
        async move { settings.connect(&url).await.unwrap() }
    };
    let stores = (
        PgTransferStore::new(connect(dbs.transfers.url()).await, &settings),
        PgWalletStore::new(connect(dbs.wallets.url()).await, &settings),
        PgLedgerStore::new(connect(dbs.ledger.url()).await, &settings),
    );
    let data = TestData::new();
    let (alice, bob) = (data.wallet(Currency::USD), data.wallet(Currency::USD));
    stores.1.open_wallet(&alice).await.unwrap();
    stores.1.open_wallet(&bob).await.unwrap();
    let system = WalletId::system(Currency::USD);
    saga(&stores, &data, system, alice.id, "50.00").await;
    saga(&stores, &data, alice.id, bob.id, "20.00").await;
    saga(&stores, &data, bob.id, alice.id, "999.00").await; // refused: no funds

    let clean = walletctl(&dbs.args("audit"));
    let report = text(&clean);
    println!("{report}");
    assert!(clean.status.success(), "{report}");
    assert!(report.contains("violations         0"), "{report}");
    assert!(report.contains("transfers          3"), "{report}");

    sqlx::query("UPDATE wallets SET available = available + 1 WHERE id = $1")
        .bind(bob.id.as_uuid())
        .execute(stores.1.pool())
        .await
        .unwrap();
    let corrupted = walletctl(&dbs.args("audit"));
    let report = text(&corrupted);
    println!("{report}");
    assert!(!corrupted.status.success(), "{report}");
    assert!(
        report.contains(&bob.id.to_string()),
        "the wallet is named:\n{report}"
    );
    assert!(
        !report.contains(&alice.id.to_string()),
        "only bob is wrong:\n{report}"
    );
}

#[test]
fn migrate_needs_a_database_and_audit_needs_all_three() {
    let migrated = walletctl(&["migrate"]);
    assert!(!migrated.status.success());
    assert!(
        text(&migrated).contains("at least one"),
        "{}",
        text(&migrated)
    );
    let audited = walletctl(&["audit", "--wallet-db", "postgres://nobody@127.0.0.1:1/x"]);
    assert!(!audited.status.success());
    assert!(
        text(&audited).contains("--transaction-db"),
        "{}",
        text(&audited)
    );
}

/// `walletctl outbox quarantined` lists a row set aside as unreadable, and
/// `walletctl outbox release` puts it back in line.
#[tokio::test(flavor = "multi_thread")]
async fn outbox_quarantined_lists_and_release_puts_back() {
    use wallet_core::ports::{Claim, Outbox};
    let db = TestDatabase::create().await.expect("a test database");
    let settings = PgSettings::default();
    let pool = settings.connect(db.url()).await.unwrap();
    wallet_core_postgres::migrate_ledger_db(&pool)
        .await
        .unwrap();
    let ledger = PgLedgerStore::new(pool.clone(), &settings);
    let data = TestData::new();
    let system = WalletId::system(Currency::USD);
    let request = data.reserve_request(system, data.wallet_id(), "1.00", Currency::USD);
    ledger
        .post(&[data.wallet_reserved(&request)])
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET envelope = '{\"schema_version\": 1}'")
        .execute(&pool)
        .await
        .unwrap();
    let claim = Claim::new(
        data.worker_id(),
        data.now(),
        std::time::Duration::from_secs(1),
    );
    assert!(ledger.claim(&claim, 10).await.unwrap().is_empty());

    let listed = walletctl(&["--json", "outbox", "quarantined", "--db", db.url()]);
    assert!(listed.status.success(), "{}", text(&listed));
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert_eq!(rows[0]["transfer_id"], request.transfer_id.to_string());
    assert!(
        rows[0]["error"].as_str().unwrap().contains("malformed"),
        "{rows}"
    );
    let seq = rows[0]["seq"].to_string();

    let released = walletctl(&[
        "--json",
        "outbox",
        "release",
        "--db",
        db.url(),
        "--seq",
        &seq,
    ]);
    assert!(released.status.success(), "{}", text(&released));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&released.stdout).unwrap()["released"],
        1
    );
    let left = walletctl(&["outbox", "quarantined", "--db", db.url()]);
    assert!(
        text(&left).contains("no quarantined outbox rows"),
        "{}",
        text(&left)
    );
}
