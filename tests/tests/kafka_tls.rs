//! Kafka over TLS with SASL: a broker of the test's own that requires
//! authentication, behind a TLS terminator with a certificate of the
//! test's authority ([`SecureBroker`]). Every mechanism the services can
//! use reaches it and events go through; a wrong password, another
//! authority, plain text to the TLS port, TLS to the plain port and
//! properties librdkafka refuses each fail at once, saying why, and stop
//! a service at its start.

use std::time::{Duration, Instant};

use wallet_core::ports::{Message, Payload, Publisher, Subscription};
use wallet_core_kafka::{
    KafkaPublisher, KafkaSettings, KafkaSubscription, create_topics, reachable,
};
use wallet_core_postgres::Schema;
use wallet_core_postgres::testdb::TestDatabase;
use wallet_e2e::start_refused;
use wallet_e2e::tls::{Ca, SCRAM_USERS, SecureBroker, sasl_ssl};

fn settings(bootstrap: &str, properties: Vec<(String, String)>) -> KafkaSettings {
    let mut settings = KafkaSettings::new(bootstrap);
    settings.partitions = 1;
    settings.replication_factor = 1;
    // Bounds the waits for a broker that never answers.
    settings.request_timeout = Duration::from_secs(5);
    settings.properties.extend(properties);
    settings
}

/// What `reachable` says, expecting it to fail.
async fn refusal(settings: &KafkaSettings) -> String {
    match reachable(settings).await {
        Ok(()) => panic!("the broker was reached with {:?}", settings.properties),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_over_tls_carries_events_and_refuses_what_does_not_verify() {
    let ca = Ca::new("kafka");
    let broker = SecureBroker::start(&ca.issue("broker"), &SCRAM_USERS);
    let secure = |mechanism: &str, user: &str, password: &str| {
        settings(
            &broker.bootstrap,
            sasl_ssl(&ca.cert_file, mechanism, user, password),
        )
    };

    for (mechanism, user, password) in SCRAM_USERS {
        if let Err(error) = reachable(&secure(mechanism, user, password)).await {
            panic!("{mechanism} as {user}: {error}");
        }
    }
    // tansu 0.6.0 has SCRAM only: PLAIN reaches it, and its refusal ends
    // the wait at once, naming the mechanism.
    let error = refusal(&secure("PLAIN", "wallet-plain", "any")).await;
    assert!(
        error.contains("SASL PLAIN mechanism handshake failed"),
        "{error}"
    );

    // An event there and back, as SCRAM-SHA-512.
    let (mechanism, user, password) = SCRAM_USERS[1];
    let scram = secure(mechanism, user, password);
    let topic = format!("tls-{}", std::process::id());
    create_topics(&scram, std::slice::from_ref(&topic))
        .await
        .unwrap();
    let publisher = KafkaPublisher::new(&scram).unwrap();
    let message = Message {
        topic: topic.clone(),
        key: b"transfer".to_vec(),
        payload: Payload::Bytes(b"over TLS".to_vec()),
    };
    publisher.publish(&[message]).await.unwrap();
    let mut subscription = KafkaSubscription::new(&scram, "tls-reader", &topic).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let delivered = loop {
        let batch = subscription
            .poll(10, Duration::from_millis(500))
            .await
            .unwrap();
        if let Some(delivery) = batch.into_iter().next() {
            break delivery;
        }
        assert!(Instant::now() < deadline, "nothing delivered within 30 s");
    };
    assert_eq!(&*delivered.payload.to_bytes(), b"over TLS");

    // A wrong SCRAM password.
    let error = refusal(&secure(mechanism, user, "wrong")).await;
    assert!(error.contains("SASL authentication error"), "{error}");
    // A certificate of another authority.
    let other = Ca::new("other");
    let untrusted = sasl_ssl(&other.cert_file, mechanism, user, password);
    let error = refusal(&settings(&broker.bootstrap, untrusted)).await;
    assert!(error.contains("certificate verify failed"), "{error}");
    // Plain text to the TLS port.
    let error = refusal(&settings(&broker.bootstrap, Vec::new())).await;
    assert!(
        error.contains("no answer within 5s with security.protocol=plaintext"),
        "{error}"
    );
    // TLS to the plain port: tansu takes the handshake for the length of
    // a request and waits for the rest, so the client hears nothing.
    let trusted = sasl_ssl(&ca.cert_file, mechanism, user, password);
    let error = refusal(&settings(&broker.plain(), trusted)).await;
    assert!(
        error.contains("no answer within 5s with security.protocol=SASL_SSL"),
        "{error}"
    );
    // SCRAM without a username.
    let mut anonymous = sasl_ssl(&ca.cert_file, mechanism, user, password);
    anonymous.retain(|(key, _)| key != "sasl.username");
    let error = refusal(&settings(&broker.bootstrap, anonymous)).await;
    assert!(
        error.contains("sasl.username and sasl.password must be set"),
        "{error}"
    );
    // Properties librdkafka refuses when the client is made.
    let missing = ca.cert_file.with_file_name("missing.pem");
    let no_file = sasl_ssl(&missing, mechanism, user, password);
    let error = refusal(&settings(&broker.bootstrap, no_file)).await;
    assert!(
        error.contains("ssl.ca.location") && error.contains(&missing.display().to_string()),
        "{error}"
    );

    // A service given another authority stops at its start.
    let db = TestDatabase::create().await.expect("a test database");
    let properties = sasl_ssl(&other.cert_file, mechanism, user, password)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let env = [
        (
            "DATABASE_URL",
            db.prepare(Schema::Wallet)
                .await
                .expect("a prepared test database"),
        ),
        ("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap.clone()),
        ("KAFKA_PROPERTIES", properties),
        ("LISTEN", "127.0.0.1:0".to_owned()),
        ("INTERNAL_TOKEN", "kafka-tls-test".to_owned()),
    ];
    let stderr = start_refused("wallet-service", &env);
    assert!(
        stderr.contains("reaching the broker") && stderr.contains("certificate verify failed"),
        "{stderr}"
    );
}
