//! The wallet service's internal routes over TLS: the three services as
//! real processes, the transaction and ledger services calling the wallet
//! service on `https://` with the test's certificate authority as the one
//! they trust; a transfer goes through, and a wallet known only to the
//! wallet service is found by the ledger. A client trusting another
//! authority (or only the built-in public ones) is refused at the
//! handshake, plain HTTP gets no answer from the TLS port, and settings
//! that cannot work stop a service at its start, naming the setting.

use std::time::Duration;

use serde_json::{Value, json};
use transaction_service::{GatewaySetupError, HttpWalletGateway};
use wallet_core::ids::WalletId;
use wallet_core::money::Currency;
use wallet_core::ports::{GatewayError, WalletGateway};
use wallet_core_postgres::testdb::TestDatabase;
use wallet_e2e::stack::{call, settled};
use wallet_e2e::tls::Ca;
use wallet_e2e::{Process, free_port, start_broker, start_refused, start_service};
use wallet_http::ServiceToken;

const TOKEN: &str = "internal-tls-test-token";

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
    /// The services on fresh databases and a broker of their own, the
    /// wallet service serving its internal routes with `tls` (certificate
    /// and key files), the others trusting `ca_file`.
    async fn start(tls: (&str, &str), ca_file: &str) -> System {
        let (broker, bootstrap) = start_broker();
        let internal = format!("127.0.0.1:{}", free_port());
        let common = |db: &TestDatabase| {
            vec![
                ("DATABASE_URL", db.url().to_owned()),
                ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.clone()),
                ("KAFKA_PARTITIONS", "2".to_owned()),
                ("LISTEN", "127.0.0.1:0".to_owned()),
                ("DB_MAX_CONNECTIONS", "4".to_owned()),
            ]
        };
        let mut wallet_env = common(&TestDatabase::create().await);
        wallet_env.extend([
            ("INTERNAL_LISTEN", internal.clone()),
            ("INTERNAL_TOKEN", TOKEN.to_owned()),
            ("INTERNAL_TLS_CERT", tls.0.to_owned()),
            ("INTERNAL_TLS_KEY", tls.1.to_owned()),
        ]);
        let (wallet_process, wallet) = start_service("wallet-service", &wallet_env);
        let internal = format!("https://{internal}");
        let link = [
            ("WALLET_SERVICE_URL", internal.clone()),
            ("WALLET_SERVICE_TOKEN", TOKEN.to_owned()),
            ("WALLET_SERVICE_CA_FILE", ca_file.to_owned()),
        ];
        let mut ledger_env = common(&TestDatabase::create().await);
        ledger_env.extend(link.clone());
        let (ledger_process, ledger) = start_service("ledger-service", &ledger_env);
        let mut transaction_env = common(&TestDatabase::create().await);
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
            // Services first: they stop before the broker.
            _processes: vec![transaction_process, ledger_process, wallet_process, broker],
        }
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
    let issued = ca.issue("wallet-service");
    let (cert, key) = (issued.cert_file.display(), issued.key_file.display());
    let ca_file = ca.cert_file.display().to_string();
    let system = System::start((&cert.to_string(), &key.to_string()), &ca_file).await;

    let (a, b) = (system.open().await, system.open().await);
    let deposits = format!("{}/v1/wallets/{a}/deposits", system.transaction);
    let (status, deposit) = system
        .post(deposits, "d-1", json!({"amount": "100.00"}))
        .await;
    assert_eq!(status, 202, "{deposit}");
    assert_eq!(system.terminal(&deposit).await["status"], "SUCCEEDED");
    // The wallet service credits the deposit once it reads the ledger's
    // outcome, a moment after the transfer shows SUCCEEDED.
    let within = Duration::from_secs(30);
    settled(&system.http, &system.wallet, &a, "100.00", within).await;
    let transfers = format!("{}/v1/transfers", system.transaction);
    let body = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "30.25"});
    let (status, transfer) = system.post(transfers, "t-1", body).await;
    assert_eq!(status, 202, "{transfer}");
    assert_eq!(system.terminal(&transfer).await["status"], "SUCCEEDED");
    settled(&system.http, &system.wallet, &b, "30.25", within).await;
    // A wallet without entries: the ledger asks the wallet service, over
    // TLS, whether it exists.
    let c = system.open().await;
    let entries = system
        .http
        .get(format!("{}/v1/wallets/{c}/entries", system.ledger));
    let (status, page) = call(entries).await.expect("an answer");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["entries"], json!([]));

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
