//! One trace per transfer across the three services: the stack exports its
//! spans over OTLP/HTTP (protobuf) to a receiver this test runs, and one
//! transfer's spans, from all three services, share one trace id.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::json;
use wallet_e2e::stack::Stack;

/// One span as received, with its service.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: BTreeMap<String, String>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

type Spans = Arc<Mutex<Vec<Received>>>;

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// `POST /v1/traces`: an OTLP export request in protobuf, kept whole.
async fn export(State(spans): State<Spans>, body: Bytes) -> (axum::http::StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut received = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        let service = attributes(&resource.attributes)
            .remove("service.name")
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Received {
                    service: service.clone(),
                    name: span.name.clone(),
                    trace_id: span.trace_id.clone(),
                    span_id: span.span_id.clone(),
                    parent_span_id: span.parent_span_id.clone(),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    (axum::http::StatusCode::OK, answer)
}

/// A receiver on a free loopback port; its address and what it received.
async fn receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let app = Router::new()
        .route("/v1/traces", post(export))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port for the receiver");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

/// The spans of `transfer`'s trace once they hold everything `complete`
/// asks, within 30 s; the whole trace (and all received) on failure.
async fn trace_of(
    spans: &Spans,
    transfer: &str,
    complete: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let received = spans.lock().unwrap().clone();
        let root = received.iter().find(|s| {
            s.service == "transaction-service"
                && s.name == "POST /v1/transfers"
                && s.attribute("transfer_id") == Some(transfer)
        });
        let trace: Vec<Received> = root
            .map(|root| {
                received
                    .iter()
                    .filter(|s| s.trace_id == root.trace_id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if complete(&trace) {
            return trace;
        }
        if Instant::now() > deadline {
            let names: Vec<(&str, &str)> = received
                .iter()
                .map(|s| (s.service.as_str(), s.name.as_str()))
                .collect();
            panic!(
                "the trace of transfer {transfer} is incomplete after 30 s: {trace:#?}\n\
                 all spans received: {names:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A span of `service` named `name` about `transfer` in `trace`.
fn find<'a>(
    trace: &'a [Received],
    service: &str,
    name: &str,
    transfer: &str,
) -> Option<&'a Received> {
    trace.iter().find(|s| {
        s.service == service
            && s.name == name
            && s.attribute("transfer_id")
                .is_some_and(|ids| ids.split(',').any(|id| id == transfer))
    })
}

/// What one transfer's trace must hold: the request, its reserve call, the
/// wallet service's handling of it, each relay publish and each consumer
/// of the transfer's events.
const EXPECTED: [(&str, &str); 8] = [
    ("transaction-service", "POST /v1/transfers"),
    ("transaction-service", "wallet.reserve"),
    ("wallet-service", "relay.publish"),
    ("ledger-service", "consumer.event"),
    ("ledger-service", "relay.publish"),
    ("wallet-service", "consumer.event"),
    ("transaction-service", "consumer.event"),
    ("wallet-service", "POST /internal/v1/reserve-batch"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_transfer_is_one_trace_across_the_three_services() {
    let (collector, spans) = receiver().await;
    let stack = Stack::start_with_env(
        1,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ],
    )
    .await;
    let wallets = stack.funded_wallets(2, "50.00").await;
    let (status, transfer) = wallet_e2e::stack::call(
        stack
            .http
            .post(format!("{}/v1/transfers", stack.base))
            .header("Idempotency-Key", "traced-transfer")
            .json(&json!({
                "sender_wallet_id": wallets[0],
                "receiver_wallet_id": wallets[1],
                "amount": "12.50",
                "currency": "USD",
            })),
    )
    .await
    .expect("an answer");
    assert_eq!(status, 202, "{transfer}");
    let id = transfer["id"].as_str().expect("a transfer id").to_owned();
    let correlation = transfer["correlation_id"]
        .as_str()
        .expect("a correlation id")
        .to_owned();
    let statuses = stack
        .wait_terminal(std::slice::from_ref(&id), Duration::from_secs(30))
        .await;
    assert_eq!(statuses.get("SUCCEEDED"), Some(&1), "{statuses:?}");

    let trace = trace_of(&spans, &id, |trace| {
        EXPECTED.iter().all(|(service, name)| {
            trace
                .iter()
                .any(|s| s.service == *service && s.name == *name)
        })
    })
    .await;

    // Each step carries the transfer and its correlation id.
    for (service, name) in EXPECTED {
        if name == "POST /internal/v1/reserve-batch" {
            continue;
        }
        let span = find(&trace, service, name, &id)
            .unwrap_or_else(|| panic!("no {name} of {service} for transfer {id}: {trace:#?}"));
        assert!(
            span.attribute("correlation_id")
                .is_some_and(|ids| ids.split(',').any(|c| c == correlation)),
            "{name} of {service} lacks the correlation id: {span:#?}"
        );
    }
    // The events' spans name the events: the ledger consumed the wallet
    // service's WalletReserved, and the others the ledger's outcome.
    let event_of = |service, name| {
        let span = find(&trace, service, name, &id).expect("found above");
        (
            span.attribute("event_id").map(str::to_owned),
            span.attribute("event_type").map(str::to_owned),
        )
    };
    let reserved = event_of("wallet-service", "relay.publish");
    assert_eq!(reserved.1.as_deref(), Some("WalletReserved"));
    assert!(reserved.0.is_some(), "a publish span names its event");
    assert_eq!(event_of("ledger-service", "consumer.event"), reserved);
    let outcome = event_of("ledger-service", "relay.publish");
    assert_eq!(outcome.1.as_deref(), Some("LedgerSucceeded"));
    assert_eq!(event_of("wallet-service", "consumer.event"), outcome);
    assert_eq!(event_of("transaction-service", "consumer.event"), outcome);

    // One tree: every span but the request's has its parent in the trace,
    // and the request's is the root.
    let ids: Vec<&Vec<u8>> = trace.iter().map(|s| &s.span_id).collect();
    for span in &trace {
        if span.name == "POST /v1/transfers" && span.service == "transaction-service" {
            assert!(
                span.parent_span_id.is_empty(),
                "the request span is the root: {span:#?}"
            );
        } else {
            assert!(
                ids.contains(&&span.parent_span_id),
                "{} of {} has a parent outside the trace: {span:#?}",
                span.name,
                span.service
            );
        }
    }
    // The ledger's consumer continues the wallet service's publish, and
    // the wallet service's request continues the reserve call.
    let parent_of = |service, name| {
        let span = find(&trace, service, name, &id).expect("found above");
        trace
            .iter()
            .find(|s| s.span_id == span.parent_span_id)
            .map(|p| (p.service.clone(), p.name.clone()))
    };
    assert_eq!(
        parent_of("ledger-service", "consumer.event"),
        Some(("wallet-service".to_owned(), "relay.publish".to_owned()))
    );
    assert_eq!(
        parent_of("ledger-service", "relay.publish"),
        Some(("ledger-service".to_owned(), "consumer.event".to_owned()))
    );
    let reserve = trace
        .iter()
        .find(|s| s.service == "wallet-service" && s.name == "POST /internal/v1/reserve-batch")
        .expect("found above");
    let call = find(&trace, "transaction-service", "wallet.reserve", &id).expect("found above");
    assert_eq!(
        reserve.parent_span_id, call.span_id,
        "the reserve call's child"
    );

    let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for span in &trace {
        names.entry(&span.service).or_default().push(&span.name);
    }
    println!("the trace of transfer {id}: {names:#?}");
    stack.stop();
}
