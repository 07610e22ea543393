//! The wallet service's internal routes over TLS: the three services as
//! real processes, the transaction and ledger services calling the wallet
//! service on `https://` with the test's certificate authority as the one
//! they trust; a transfer goes through, and a wallet known only to the
//! wallet service is found by the ledger. A client trusting another
//! authority (or only the built-in public ones) is refused at the
//! handshake, plain HTTP gets no answer from the TLS port, and settings
//! that cannot work stop a service at its start, naming the setting.
//! Then the same system with every link over TLS: the databases on a
//! PostgreSQL server of the test's own with `verify-full`, and the broker
//! behind a TLS terminator with SCRAM-SHA-512.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use transaction_service::{GatewaySetupError, HttpWalletGateway};
use wallet_core::ids::WalletId;
use wallet_core::money::Currency;
use wallet_core::ports::{GatewayError, WalletGateway};
use wallet_core_postgres::testdb::TestDatabase;
use wallet_core_postgres::{PgSettings, Schema, prepare};
use wallet_e2e::stack::{call, settled};
use wallet_e2e::tls::{Ca, Issued, Postgres, SCRAM_USERS, SecureBroker, sasl_ssl};
use wallet_e2e::{Process, free_port, start_broker, start_refused, start_service};
use wallet_http::ServiceToken;

const TOKEN: &str = "internal-tls-test-token";

/// Where the services' databases and broker are: URLs (with their TLS
/// parameters), and librdkafka properties for every service.
struct Backends {
    /// By service: transaction, wallet, ledger.
    databases: [String; 3],
    bootstrap: String,
    kafka_properties: Vec<(String, String)>,
}

/// A fresh database on the test server prepared for `schema`: its runtime
/// role's URL.
async fn prepared(schema: Schema) -> String {
    TestDatabase::create()
        .await
        .expect("a test database")
        .prepare(schema)
        .await
        .expect("a prepared test database")
}
impl Backends {
    /// Three fresh databases on the test server, prepared as `walletctl
    /// migrate` does (the services connect as their runtime roles), and a
    /// plain-text broker (kept by the caller).
    async fn plain(bootstrap: String) -> Backends {
        Backends {
            databases: [
                prepared(Schema::Transaction).await,
                prepared(Schema::Wallet).await,
                prepared(Schema::Ledger).await,
            ],
            bootstrap,
            kafka_properties: Vec::new(),
        }
    }
}

/// The three services, their public base URLs, and the wallet service's
/// internal one.
struct System {
    transaction: String,
    wallet: String,
    ledger: String,
    internal: String,
    http: reqwest::Client,
    _processes: Vec<Process>,
}

impl System {
    /// The services on `backends`, the wallet service serving its internal
    /// routes with `tls` (certificate and key files), the others trusting
    /// `ca_file`.
    fn start(tls: &Issued, ca_file: &Path, backends: &Backends) -> System {
        let internal = format!("127.0.0.1:{}", free_port());
        let properties = backends
            .kafka_properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let common = |database: &String| {
            let mut env = vec![
                ("DATABASE_URL", database.clone()),
                ("KAFKA_BOOTSTRAP_SERVERS", backends.bootstrap.clone()),
                ("KAFKA_PARTITIONS", "2".to_owned()),
                ("LISTEN", "127.0.0.1:0".to_owned()),
                ("DB_MAX_CONNECTIONS", "4".to_owned()),
            ];
            if !properties.is_empty() {
                env.push(("KAFKA_PROPERTIES", properties.clone()));
            }
            env
        };
        let [transaction_db, wallet_db, ledger_db] = &backends.databases;
        let mut wallet_env = common(wallet_db);
        wallet_env.extend([
            ("INTERNAL_LISTEN", internal.clone()),
            ("INTERNAL_TOKEN", TOKEN.to_owned()),
            ("INTERNAL_TLS_CERT", tls.cert_file.display().to_string()),
            ("INTERNAL_TLS_KEY", tls.key_file.display().to_string()),
        ]);
        let (wallet_process, wallet) = start_service("wallet-service", &wallet_env);
        let internal = format!("https://{internal}");
        let link = [
            ("WALLET_SERVICE_URL", internal.clone()),
            ("WALLET_SERVICE_TOKEN", TOKEN.to_owned()),
            ("WALLET_SERVICE_CA_FILE", ca_file.display().to_string()),
        ];
        let mut ledger_env = common(ledger_db);
        ledger_env.extend(link.clone());
        let (ledger_process, ledger) = start_service("ledger-service", &ledger_env);
        let mut transaction_env = common(transaction_db);
        transaction_env.extend(link);
        transaction_env.push(("RETRY_EVERY_MS", "200".to_owned()));
        let (transaction_process, transaction) =
            start_service("transaction-service", &transaction_env);
        System {
            transaction,
            wallet,
            ledger,
            internal,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
            _processes: vec![transaction_process, ledger_process, wallet_process],
        }
    }

    /// Two wallets, a deposit of 100.00 into the first and a transfer of
    /// 30.25 to the second, each SUCCEEDED and credited; a third wallet,
    /// without entries, that the ledger finds through the wallet service,
    /// and whose balances it shows beside its own. Returns the first wallet.
    async fn transfer_goes_through(&self) -> String {
        let (a, b) = (self.open().await, self.open().await);
        let deposits = format!("{}/v1/wallets/{a}/deposits", self.transaction);
        let (status, deposit) = self
            .post(deposits, "d-1", json!({"amount": "100.00"}))
            .await;
        assert_eq!(status, 202, "{deposit}");
        assert_eq!(self.terminal(&deposit).await["status"], "SUCCEEDED");
        // The wallet service credits the deposit once it reads the ledger's
        // outcome, a moment after the transfer shows SUCCEEDED.
        let within = Duration::from_secs(30);
        settled(&self.http, &self.wallet, &a, "100.00", within).await;
        let transfers = format!("{}/v1/transfers", self.transaction);
        let body = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "30.25"});
        let (status, transfer) = self.post(transfers, "t-1", body).await;
        assert_eq!(status, 202, "{transfer}");
        assert_eq!(self.terminal(&transfer).await["status"], "SUCCEEDED");
        settled(&self.http, &self.wallet, &b, "30.25", within).await;
        let c = self.open().await;
        let entries = self
            .http
            .get(format!("{}/v1/wallets/{c}/entries", self.ledger));
        let (status, page) = call(entries).await.expect("an answer");
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["entries"], json!([]));
        // The wallet service's balances beside the ledger's, over the same line.
        let balance = self
            .http
            .get(format!("{}/v1/wallets/{c}/balance", self.ledger));
        let (status, view) = call(balance).await.expect("an answer");
        assert_eq!(status, 200, "{view}");
        assert_eq!(
            (&view["balance"], &view["wallet"]["available"]),
            (&json!("0.00"), &json!("0.00")),
            "{view}"
        );
        a
    }

    async fn post(&self, url: String, key: &str, body: Value) -> (u16, Value) {
        let request = self.http.post(url).header("Idempotency-Key", key);
        call(request.json(&body)).await.expect("an answer")
    }

    async fn open(&self) -> String {
        let url = format!("{}/v1/wallets", self.wallet);
        let (status, wallet) = self.post(url, "-", json!({"currency": "USD"})).await;
        assert_eq!(status, 201, "{wallet}");
        wallet["id"].as_str().unwrap().to_owned()
    }

    /// The transfer once SUCCEEDED or FAILED.
    async fn terminal(&self, transfer: &Value) -> Value {
        let id = transfer["id"].as_str().expect("a transfer id");
        for _ in 0..6 {
            let url = format!("{}/v1/transfers/{id}?wait_ms=10000", self.transaction);
            let (status, now) = call(self.http.get(url)).await.expect("an answer");
            assert_eq!(status, 200, "{now}");
            if now["status"] == "SUCCEEDED" || now["status"] == "FAILED" {
                return now;
            }
        }
        panic!("transfer {id} not terminal after a minute");
    }
}

fn gateway_error(result: Result<Option<Currency>, GatewayError>) -> String {
    match result {
        Err(GatewayError::Unavailable(message)) => message,
        other => panic!("expected no answer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_goes_through_https_and_only_the_right_authority_is_trusted() {
    let ca = Ca::new("internal");
    let (_broker, bootstrap) = start_broker();
    let backends = Backends::plain(bootstrap).await;
    let system = System::start(&ca.issue("wallet-service"), &ca.cert_file, &backends);
    let a = system.transfer_goes_through().await;

    let wallet: WalletId = a.parse().unwrap();
    let timeout = Duration::from_secs(5);
    let token = ServiceToken::new(TOKEN).unwrap();
    let trusting = |ca_file: &std::path::Path| {
        HttpWalletGateway::instances_trusting(&[&system.internal], timeout, ca_file)
            .unwrap()
            .with_token(token.clone())
    };
    let right = trusting(&ca.cert_file);
    assert_eq!(right.wallet_currency(wallet).await, Ok(Some(Currency::USD)));

    // Another authority, or the public ones built in: the handshake fails.
    let other = Ca::new("other");
    let error = gateway_error(trusting(&other.cert_file).wallet_currency(wallet).await);
    assert!(error.contains("invalid peer certificate"), "{error}");
    let public = HttpWalletGateway::instances(&[&system.internal], timeout).unwrap();
    let error = gateway_error(public.wallet_currency(wallet).await);
    assert!(error.contains("invalid peer certificate"), "{error}");

    // Plain HTTP to the TLS port gets no answer, and the port still
    // serves TLS afterwards.
    let plain_url = system.internal.replacen("https://", "http://", 1);
    let plain = HttpWalletGateway::instances(&[&plain_url], timeout)
        .unwrap()
        .with_token(token.clone());
    gateway_error(plain.wallet_currency(wallet).await);
    assert_eq!(right.wallet_currency(wallet).await, Ok(Some(Currency::USD)));

    // Authorities for a plain URL are refused when the gateway is made.
    let refused = HttpWalletGateway::instances_trusting(&[&plain_url], timeout, &ca.cert_file);
    assert!(
        matches!(refused, Err(GatewaySetupError::NotHttps(_))),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_link_over_tls() {
    let ca = Ca::new("everything");
    let postgres = Postgres::start(Some(&ca.issue("postgres")));
    let broker = SecureBroker::start(&ca.issue("broker"), &SCRAM_USERS[1..]);
    let verified = format!("sslmode=verify-full&sslrootcert={}", ca.cert_file.display());
    let server = PgSettings::default()
        .connect(&postgres.url(&verified))
        .await
        .unwrap();
    let names = ["transaction_db", "wallet_db", "ledger_db"];
    let schemas = [Schema::Transaction, Schema::Wallet, Schema::Ledger];
    let mut databases = Vec::new();
    for (name, schema) in names.into_iter().zip(schemas) {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&server)
            .await
            .unwrap();
        // Prepared over TLS too; the server trusts its local clients, so
        // the runtime role logs in without a password.
        let at = |role: &str| {
            let port = postgres.port;
            format!("postgres://{role}@127.0.0.1:{port}/{name}?{verified}")
        };
        let roles = prepare(&at("postgres"), schema).await.unwrap();
        databases.push(at(&roles.app));
    }
    let (mechanism, user, password) = SCRAM_USERS[1];
    let backends = Backends {
        databases: databases.try_into().expect("three databases"),
        bootstrap: broker.bootstrap.clone(),
        kafka_properties: sasl_ssl(&ca.cert_file, mechanism, user, password),
    };
    let system = System::start(&ca.issue("wallet-service"), &ca.cert_file, &backends);
    system.transfer_goes_through().await;

    // Every session of the services on the databases is encrypted.
    let (sessions, encrypted): (i64, bool) = sqlx::query_as(
        "SELECT count(*), bool_and(s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.datname = ANY($1)",
    )
    .bind(names)
    .fetch_one(&server)
    .await
    .unwrap();
    assert!(sessions >= 3, "{sessions} sessions");
    assert!(encrypted, "a service's session is not encrypted");
    drop(system);
}

#[test]
fn tls_settings_that_cannot_work_stop_the_start() {
    let ca = Ca::new("settings");
    let issued = ca.issue("wallet-service");
    let stray = ca.issue("stray");
    let missing = ca.cert_file.with_file_name("missing.pem");
    let base = || {
        vec![
            // Never reached: the settings are checked first.
            (
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/none".to_owned(),
            ),
            ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1".to_owned()),
            ("LISTEN", "127.0.0.1:0".to_owned()),
        ]
    };
    let wallet = |cert: &std::path::Path, key: &std::path::Path| {
        let mut env = base();
        env.extend([
            ("INTERNAL_TOKEN", TOKEN.to_owned()),
            ("INTERNAL_TLS_CERT", cert.display().to_string()),
            ("INTERNAL_TLS_KEY", key.display().to_string()),
        ]);
        start_refused("wallet-service", &env)
    };
    let stderr = wallet(&missing, &issued.key_file);
    assert!(
        stderr.contains("INTERNAL_TLS_CERT") && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
    let stderr = wallet(&issued.cert_file, &stray.key_file);
    assert!(stderr.contains("do not go together"), "{stderr}");
    let mut only_cert = base();
    only_cert.extend([
        ("INTERNAL_TOKEN", TOKEN.to_owned()),
        ("INTERNAL_TLS_CERT", issued.cert_file.display().to_string()),
    ]);
    let stderr = start_refused("wallet-service", &only_cert);
    assert!(stderr.contains("internal-tls-key"), "{stderr}");

    for service in ["transaction-service", "ledger-service"] {
        let caller = |url: &str, ca_file: &std::path::Path| {
            let mut env = base();
            env.extend([
                ("WALLET_SERVICE_URL", url.to_owned()),
                ("WALLET_SERVICE_TOKEN", TOKEN.to_owned()),
                ("WALLET_SERVICE_CA_FILE", ca_file.display().to_string()),
            ]);
            start_refused(service, &env)
        };
        let stderr = caller("https://127.0.0.1:9082", &missing);
        assert!(
            stderr.contains("WALLET_SERVICE_CA_FILE")
                && stderr.contains(&missing.display().to_string()),
            "{service}: {stderr}"
        );
        let stderr = caller("http://127.0.0.1:9082", &ca.cert_file);
        assert!(
            stderr.contains("WALLET_SERVICE_CA_FILE") && stderr.contains("not an https:// URL"),
            "{service}: {stderr}"
        );
    }
}
