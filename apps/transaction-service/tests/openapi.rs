//! The OpenAPI document stays true: `docs/openapi.json` is what the
//! handlers' annotations describe, every public route answers as described,
//! and every answer of a scenario through the routers is in the document:
//! its status listed for its route, its body valid against the schema, and
//! an error's code named in that status's description.
//!
//! After a change of the API, `UPDATE_OPENAPI=1 cargo test -p
//! transaction-service --test openapi` rewrites the file.

use std::collections::BTreeSet;
use std::path::PathBuf;

use axum::Router;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use wallet_core::ids::IdempotencyKey;
use wallet_core::memory::{Embedded, EmbeddedConfig};
use wallet_core::money::{Amount, Currency};
use wallet_http::MAX_BODY_BYTES;
use wallet_http::testing::{TestResponse, get, json as request, post_keyed, raw, send};

fn document() -> Value {
    let doc = wallet_http::openapi::public([
        transaction_service::openapi(),
        wallet_service::openapi(),
        ledger_service::openapi(),
    ]);
    serde_json::to_value(doc).expect("the document serializes")
}

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_checked_in_document_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&document()).unwrap() + "\n";
    let path = checked_in();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == generated,
        "docs/openapi.json differs from the handlers' annotations; rerun with UPDATE_OPENAPI=1 to rewrite it"
    );
}

#[test]
fn a_503_to_a_new_transfer_says_it_may_exist_and_to_retry_with_the_same_key() {
    // The file clients read; the test above keeps it the generated one.
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(checked_in()).unwrap()).unwrap();
    for path in [
        "/v1/transfers",
        "/v1/wallets/{id}/deposits",
        "/v1/wallets/{id}/withdrawals",
    ] {
        let description = stored["paths"][path]["post"]["responses"]["503"]["description"]
            .as_str()
            .unwrap_or_else(|| panic!("no 503 for POST {path}"))
            .replace('\n', " ");
        for said in ["`unavailable`", "INITIATED", "same idempotency key"] {
            assert!(
                description.contains(said),
                "the 503 of POST {path} does not say {said}: {description}"
            );
        }
    }
}

/// Resolves a `$ref` to a component schema.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/schemas/");
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "unresolved {reference}");
            resolve(doc, target)
        }
        None => schema,
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("schema type {other} not handled by this check"),
    }
}

/// The first way `value` breaks `schema`, as a path and a reason. Every
/// field of an object must be a documented property.
fn violation(doc: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    let schema = resolve(doc, schema);
    for key in ["oneOf", "anyOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let fits = options
                .iter()
                .any(|o| violation(doc, o, value, at).is_none());
            return (!fits).then(|| format!("{at}: {value} fits none of {key}"));
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        return all.iter().find_map(|s| violation(doc, s, value, at));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        return Some(format!("{at}: {value} is not of type {types:?}"));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Some(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        return values
            .iter()
            .enumerate()
            .find_map(|(i, v)| violation(doc, items, v, &format!("{at}[{i}]")));
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        for name in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(name) {
                return Some(format!("{at}: required field {name} missing"));
            }
        }
        let free_form = schema["additionalProperties"] == Value::Bool(true);
        for (name, field) in object {
            let Some(property) = properties.and_then(|p| p.get(name)) else {
                if free_form {
                    continue;
                }
                return Some(format!("{at}: field {name} is not documented"));
            };
            if let Some(v) = violation(doc, property, field, &format!("{at}.{name}")) {
                return Some(v);
            }
        }
    }
    None
}

/// The public routes as `walletctl dev` serves them, over one embedded
/// system whose events the test drains by hand.
fn system() -> (Embedded, Router) {
    let embedded = Embedded::new(EmbeddedConfig::default());
    let app = wallet_http::service_router(
        Router::new()
            .merge(transaction_service::api(embedded.transactions.clone()))
            .merge(wallet_service::api(embedded.wallets.clone()))
            .merge(ledger_service::api(
                embedded.ledger.clone(),
                embedded.wallets.clone(),
            )),
    );
    (embedded, app)
}

/// Checks answers against the document and remembers which operations
/// they covered.
struct Checker {
    doc: Value,
    covered: BTreeSet<(String, String)>,
}

impl Checker {
    fn check(&mut self, method: &str, template: &str, answer: &TestResponse) {
        let operation = &self.doc["paths"][template][method];
        assert!(
            !operation.is_null(),
            "{method} {template} is not documented"
        );
        self.covered
            .insert((template.to_owned(), method.to_owned()));
        let status = answer.status.as_u16().to_string();
        let response = &operation["responses"][&status];
        assert!(
            !response.is_null(),
            "{method} {template} answered {status}, which is not documented: {}",
            answer.body
        );
        if answer.status.is_client_error() || answer.status.is_server_error() {
            let code = answer.code();
            let description = response["description"].as_str().unwrap_or_default();
            assert!(
                description.contains(&format!("`{code}`")),
                "{method} {template} {status}: code {code} is not named in {description:?}"
            );
        }
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            !schema.is_null(),
            "{method} {template} {status} has no schema"
        );
        if let Some(v) = violation(&self.doc, schema, &answer.body, "body") {
            panic!("{method} {template} {status}: {v}");
        }
    }
}

#[tokio::test]
async fn every_answer_of_a_session_is_in_the_document() {
    let (mut embedded, app) = system();
    let mut checker = Checker {
        doc: document(),
        covered: BTreeSet::new(),
    };
    let c = &mut checker;

    // Wallets.
    let opened = send(
        &app,
        request(Method::POST, "/v1/wallets", &json!({"currency": "USD"})),
    )
    .await;
    assert_eq!(opened.status, StatusCode::CREATED);
    c.check("post", "/v1/wallets", &opened);
    let a = opened.body["id"].as_str().unwrap().to_owned();
    let other = send(
        &app,
        request(Method::POST, "/v1/wallets", &json!({"currency": "USD"})),
    )
    .await;
    let b = other.body["id"].as_str().unwrap().to_owned();
    let unknown = send(
        &app,
        request(Method::POST, "/v1/wallets", &json!({"currency": "XXX"})),
    )
    .await;
    c.check("post", "/v1/wallets", &unknown);
    let malformed = send(
        &app,
        request(Method::POST, "/v1/wallets", &json!({"cur": 1})),
    )
    .await;
    c.check("post", "/v1/wallets", &malformed);
    let untyped = raw(
        Method::POST,
        "/v1/wallets",
        Some("text/plain"),
        axum::body::Body::from(r#"{"currency":"USD"}"#),
    );
    c.check("post", "/v1/wallets", &send(&app, untyped).await);
    c.check(
        "get",
        "/v1/wallets/{id}",
        &send(&app, get(&format!("/v1/wallets/{a}"))).await,
    );
    let missing = uuid::Uuid::now_v7();
    let not_found = send(&app, get(&format!("/v1/wallets/{missing}"))).await;
    c.check("get", "/v1/wallets/{id}", &not_found);
    c.check(
        "get",
        "/v1/wallets/{id}",
        &send(&app, get("/v1/wallets/nope")).await,
    );

    // Deposits and withdrawals.
    let deposit = |key: &str| {
        post_keyed(
            &format!("/v1/wallets/{a}/deposits"),
            Some(key),
            &json!({"amount": "10.00"}),
        )
    };
    let deposited = send(&app, deposit("d1")).await;
    assert_eq!(deposited.status, StatusCode::ACCEPTED);
    c.check("post", "/v1/wallets/{id}/deposits", &deposited);
    embedded.drain().await;
    let unkeyed = post_keyed(
        &format!("/v1/wallets/{a}/deposits"),
        None,
        &json!({"amount": "1"}),
    );
    c.check(
        "post",
        "/v1/wallets/{id}/deposits",
        &send(&app, unkeyed).await,
    );
    let reused = post_keyed(
        &format!("/v1/wallets/{a}/deposits"),
        Some("d1"),
        &json!({"amount": "2.00"}),
    );
    c.check(
        "post",
        "/v1/wallets/{id}/deposits",
        &send(&app, reused).await,
    );
    let to_nobody = post_keyed(
        &format!("/v1/wallets/{missing}/deposits"),
        Some("d2"),
        &json!({"amount": "1"}),
    );
    c.check(
        "post",
        "/v1/wallets/{id}/deposits",
        &send(&app, to_nobody).await,
    );
    let too_much = post_keyed(
        &format!("/v1/wallets/{b}/withdrawals"),
        Some("w1"),
        &json!({"amount": "1.00"}),
    );
    let refused = send(&app, too_much).await;
    assert_eq!(refused.code(), "insufficient_funds");
    c.check("post", "/v1/wallets/{id}/withdrawals", &refused);
    let withdrawal = post_keyed(
        &format!("/v1/wallets/{a}/withdrawals"),
        Some("w2"),
        &json!({"amount": "1.00"}),
    );
    c.check(
        "post",
        "/v1/wallets/{id}/withdrawals",
        &send(&app, withdrawal).await,
    );

    // Transfers.
    let body = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "2.50"});
    let created = send(&app, post_keyed("/v1/transfers", Some("t1"), &body)).await;
    assert_eq!(created.status, StatusCode::ACCEPTED);
    c.check("post", "/v1/transfers", &created);
    embedded.drain().await;
    let replayed = send(&app, post_keyed("/v1/transfers", Some("t1"), &body)).await;
    c.check("post", "/v1/transfers", &replayed);
    let number = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": 2.5});
    c.check(
        "post",
        "/v1/transfers",
        &send(&app, post_keyed("/v1/transfers", Some("t2"), &number)).await,
    );
    let same = json!({"sender_wallet_id": a, "receiver_wallet_id": a, "amount": "1"});
    c.check(
        "post",
        "/v1/transfers",
        &send(&app, post_keyed("/v1/transfers", Some("t3"), &same)).await,
    );
    let big = "x".repeat(MAX_BODY_BYTES + 1);
    let too_large = raw(
        Method::POST,
        "/v1/transfers",
        Some("application/json"),
        axum::body::Body::from(big),
    );
    c.check("post", "/v1/transfers", &send(&app, too_large).await);
    let id = created.body["id"].as_str().unwrap();
    let shown = send(&app, get(&format!("/v1/transfers/{id}?wait_ms=10"))).await;
    assert_eq!(shown.body["status"], "SUCCEEDED");
    c.check("get", "/v1/transfers/{id}", &shown);
    let missing_transfer = send(&app, get(&format!("/v1/transfers/{missing}"))).await;
    c.check("get", "/v1/transfers/{id}", &missing_transfer);
    let bad_wait = send(&app, get(&format!("/v1/transfers/{id}?wait_ms=99999999"))).await;
    c.check("get", "/v1/transfers/{id}", &bad_wait);

    // Refunds.
    let refunds_path = format!("/v1/transfers/{id}/refunds");
    let part = json!({"amount": "1.00"});
    let refunded = send(&app, post_keyed(&refunds_path, Some("r1"), &part)).await;
    assert_eq!(refunded.body["refund_of"], json!(id));
    c.check("post", "/v1/transfers/{id}/refunds", &refunded);
    let over = json!({"amount": "1.51"});
    let exceeds = send(&app, post_keyed(&refunds_path, Some("r2"), &over)).await;
    assert_eq!(exceeds.code(), "exceeds_refundable");
    c.check("post", "/v1/transfers/{id}/refunds", &exceeds);
    let no_transfer = format!("/v1/transfers/{missing}/refunds");
    let none = send(&app, post_keyed(&no_transfer, Some("r3"), &json!({}))).await;
    c.check("post", "/v1/transfers/{id}/refunds", &none);
    let failed_id = refused.body["error"]["transfer_id"].as_str().unwrap();
    let not_succeeded = format!("/v1/transfers/{failed_id}/refunds");
    let early = send(&app, post_keyed(&not_succeeded, Some("r4"), &json!({}))).await;
    assert_eq!(early.code(), "transfer_not_succeeded");
    c.check("post", "/v1/transfers/{id}/refunds", &early);
    embedded.drain().await;
    let listed = send(&app, get(&refunds_path)).await;
    assert_eq!(listed.body["refunds"].as_array().map(Vec::len), Some(1));
    c.check("get", "/v1/transfers/{id}/refunds", &listed);
    c.check(
        "get",
        "/v1/transfers/{id}/refunds",
        &send(&app, get(&no_transfer)).await,
    );

    // Holds: one captured in part, one voided, one refused.
    let hold = json!({"wallet_id": a, "amount": "1.00", "expires_in_s": 600});
    let held = send(&app, post_keyed("/v1/holds", Some("h1"), &hold)).await;
    assert_eq!(
        (held.status, &held.body["status"]),
        (StatusCode::ACCEPTED, &json!("HELD"))
    );
    c.check("post", "/v1/holds", &held);
    let short = json!({"wallet_id": a, "amount": "1000000", "receiver_wallet_id": b});
    let refused = send(&app, post_keyed("/v1/holds", Some("h2"), &short)).await;
    assert_eq!(refused.code(), "insufficient_funds");
    c.check("post", "/v1/holds", &refused);
    let too_long = json!({"wallet_id": a, "amount": "1", "expires_in_s": 2592001});
    let expiry = send(&app, post_keyed("/v1/holds", Some("h3"), &too_long)).await;
    assert_eq!(expiry.code(), "invalid_expiry");
    c.check("post", "/v1/holds", &expiry);
    let hold_id = held.body["id"].as_str().unwrap();
    c.check(
        "get",
        "/v1/holds/{id}",
        &send(&app, get(&format!("/v1/holds/{hold_id}"))).await,
    );
    let no_hold = send(&app, get(&format!("/v1/holds/{missing}"))).await;
    assert_eq!(no_hold.code(), "hold_not_found");
    c.check("get", "/v1/holds/{id}", &no_hold);
    let capture_path = format!("/v1/holds/{hold_id}/capture");
    let nobody = send(&app, post_keyed(&capture_path, Some("c1"), &json!({}))).await;
    assert_eq!(nobody.code(), "receiver_required");
    c.check("post", "/v1/holds/{id}/capture", &nobody);
    let capture = json!({"amount": "0.60", "receiver_wallet_id": b});
    let captured = send(&app, post_keyed(&capture_path, Some("c2"), &capture)).await;
    assert_eq!(captured.body["hold_id"], json!(hold_id));
    c.check("post", "/v1/holds/{id}/capture", &captured);
    let again = json!({"receiver_wallet_id": b});
    let second = send(&app, post_keyed(&capture_path, Some("c3"), &again)).await;
    assert_eq!(
        (second.status, second.code()),
        (StatusCode::CONFLICT, "hold_captured")
    );
    c.check("post", "/v1/holds/{id}/capture", &second);
    let void_path = format!("/v1/holds/{hold_id}/void");
    let late_void = send(
        &app,
        raw(Method::POST, &void_path, None, axum::body::Body::empty()),
    )
    .await;
    assert_eq!(late_void.code(), "hold_captured");
    c.check("post", "/v1/holds/{id}/void", &late_void);
    let other = send(&app, post_keyed("/v1/holds", Some("h4"), &hold)).await;
    let other = other.body["id"].as_str().unwrap();
    let void_path = format!("/v1/holds/{other}/void");
    let voided = send(
        &app,
        raw(Method::POST, &void_path, None, axum::body::Body::empty()),
    )
    .await;
    assert_eq!(voided.body["status"], "VOIDED");
    c.check("post", "/v1/holds/{id}/void", &voided);
    embedded.drain().await;

    // References and metadata.
    let tagged = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "0.10",
        "reference": "order-1", "metadata": {"order": {"lines": [1, 2]}}});
    let first = send(&app, post_keyed("/v1/transfers", Some("ref1"), &tagged)).await;
    assert_eq!(first.body["reference"], "order-1");
    assert_eq!(first.body["metadata"]["order"]["lines"], json!([1, 2]));
    c.check("post", "/v1/transfers", &first);
    let replay = send(&app, post_keyed("/v1/transfers", Some("ref1"), &tagged)).await;
    assert_eq!(replay.body["id"], first.body["id"], "a repeat is a replay");
    let mut renoted = tagged.clone();
    renoted["metadata"] = json!({"order": {"lines": [2, 1]}});
    let reused = send(&app, post_keyed("/v1/transfers", Some("ref1"), &renoted)).await;
    assert_eq!(
        reused.code(),
        "idempotency_key_reused",
        "metadata is part of the request"
    );
    let mut reordered = tagged.clone();
    reordered["metadata"] = json!({"order": {"lines": [1, 2]}, "gift": false});
    let reused = send(&app, post_keyed("/v1/transfers", Some("ref1"), &reordered)).await;
    assert_eq!(reused.code(), "idempotency_key_reused");
    let taken = send(&app, post_keyed("/v1/transfers", Some("ref2"), &tagged)).await;
    assert_eq!(
        (taken.status, taken.code()),
        (StatusCode::CONFLICT, "reference_taken")
    );
    assert_eq!(taken.body["error"]["transfer_id"], first.body["id"]);
    c.check("post", "/v1/transfers", &taken);
    let control = json!({"sender_wallet_id": a, "receiver_wallet_id": b, "amount": "0.10",
        "reference": "a\nb"});
    let bad_reference = send(&app, post_keyed("/v1/transfers", Some("ref3"), &control)).await;
    assert_eq!(bad_reference.code(), "invalid_reference");
    c.check("post", "/v1/transfers", &bad_reference);
    let listed = json!({"amount": "0.10", "metadata": [1]});
    let deposit_path = format!("/v1/wallets/{a}/deposits");
    let bad_metadata = send(&app, post_keyed(&deposit_path, Some("ref4"), &listed)).await;
    assert_eq!(bad_metadata.code(), "invalid_metadata");
    c.check("post", "/v1/wallets/{id}/deposits", &bad_metadata);
    let tagged_hold = json!({"wallet_id": a, "amount": "0.10", "reference": "order-1"});
    let hold_taken = send(&app, post_keyed("/v1/holds", Some("ref5"), &tagged_hold)).await;
    assert_eq!(hold_taken.code(), "reference_taken");
    c.check("post", "/v1/holds", &hold_taken);
    embedded.drain().await;

    // History.
    let page = send(&app, get("/v1/transfers?limit=2")).await;
    assert_eq!(page.body["transfers"].as_array().map(Vec::len), Some(2));
    c.check("get", "/v1/transfers", &page);
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let next = send(&app, get(&format!("/v1/transfers?limit=2&cursor={cursor}"))).await;
    assert_ne!(
        next.body["transfers"][0]["id"],
        page.body["transfers"][0]["id"]
    );
    c.check("get", "/v1/transfers", &next);
    let by_reference = send(&app, get("/v1/transfers?reference=order-1")).await;
    assert_eq!(by_reference.body["transfers"][0]["id"], first.body["id"]);
    assert_eq!(by_reference.body["next_cursor"], Value::Null);
    c.check("get", "/v1/transfers", &by_reference);
    let bad_cursor = send(&app, get("/v1/transfers?cursor=zz")).await;
    assert_eq!(bad_cursor.code(), "invalid_cursor");
    c.check("get", "/v1/transfers", &bad_cursor);
    let nobodys = send(&app, get(&format!("/v1/transfers?wallet_id={missing}"))).await;
    assert_eq!(nobodys.code(), "wallet_not_found");
    c.check("get", "/v1/transfers", &nobodys);
    let wallet_page = format!("/v1/wallets/{b}/transfers?status=SUCCEEDED&kind=transfer");
    let received = send(&app, get(&wallet_page)).await;
    assert!(!received.body["transfers"].as_array().unwrap().is_empty());
    c.check("get", "/v1/wallets/{id}/transfers", &received);
    let bad_limit = send(&app, get(&format!("/v1/wallets/{b}/transfers?limit=0"))).await;
    assert_eq!(bad_limit.code(), "invalid_query");
    c.check("get", "/v1/wallets/{id}/transfers", &bad_limit);
    let no_wallet = send(&app, get(&format!("/v1/wallets/{missing}/transfers"))).await;
    c.check("get", "/v1/wallets/{id}/transfers", &no_wallet);
    c.check(
        "get",
        "/v1/wallets/{id}/transfers",
        &send(&app, get("/v1/wallets/nope/transfers")).await,
    );

    // Entries.
    let entries = send(&app, get(&format!("/v1/wallets/{a}/entries?limit=2"))).await;
    assert_eq!(entries.body["entries"].as_array().map(Vec::len), Some(2));
    c.check("get", "/v1/wallets/{id}/entries", &entries);
    let bad_limit = send(&app, get(&format!("/v1/wallets/{a}/entries?limit=0"))).await;
    c.check("get", "/v1/wallets/{id}/entries", &bad_limit);
    let no_wallet = send(&app, get(&format!("/v1/wallets/{missing}/entries"))).await;
    c.check("get", "/v1/wallets/{id}/entries", &no_wallet);

    // Balances: now, beside the wallet service's; as of a time before any
    // entry and after every one; a malformed time; an unknown wallet.
    let balance = |query: &str| format!("/v1/wallets/{a}/balance{query}");
    let now = send(&app, get(&balance(""))).await;
    assert_eq!(now.status, StatusCode::OK, "{}", now.body);
    assert!(now.body["wallet"]["available"].is_string(), "{}", now.body);
    c.check("get", "/v1/wallets/{id}/balance", &now);
    let before = send(&app, get(&balance("?as_of=2000-01-01T00:00:00Z"))).await;
    assert_eq!(
        (&before.body["position"], &before.body["wallet"]),
        (&Value::Null, &Value::Null),
        "{}",
        before.body
    );
    c.check("get", "/v1/wallets/{id}/balance", &before);
    let later = send(&app, get(&balance("?as_of=2999-01-01T00:00:00%2B02:00"))).await;
    assert_eq!(
        (&later.body["balance"], &later.body["position"]),
        (&now.body["balance"], &now.body["position"]),
        "{}",
        later.body
    );
    c.check("get", "/v1/wallets/{id}/balance", &later);
    let bad_time = send(&app, get(&balance("?as_of=yesterday"))).await;
    c.check("get", "/v1/wallets/{id}/balance", &bad_time);
    let no_wallet = send(&app, get(&format!("/v1/wallets/{missing}/balance"))).await;
    c.check("get", "/v1/wallets/{id}/balance", &no_wallet);

    // Every documented operation was exercised, so each is a route.
    let documented: BTreeSet<(String, String)> = checker.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().unwrap().keys();
            methods.map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    assert_eq!(
        documented, checker.covered,
        "documented operations not exercised"
    );
}

#[test]
fn every_operation_documents_the_answers_of_the_shared_layers() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let mut shared = vec![
                ("413", "`body_too_large`"),
                ("429", "`rate_limited`"),
                ("503", "`unavailable`"),
            ];
            if !op["requestBody"].is_null() {
                shared.push(("415", "`unsupported_media_type`"));
            }
            for (status, code) in shared {
                let answer = &op["responses"][status];
                let description = answer["description"].as_str().unwrap_or_default();
                assert!(
                    description.contains(code),
                    "{method} {path} {status} does not name {code}: {answer}"
                );
                assert_eq!(
                    answer["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
}

#[test]
fn the_documented_forms_are_the_ones_the_code_reads() {
    let doc = document();
    let paths = &doc["paths"];
    for path in [
        "/v1/transfers",
        "/v1/wallets/{id}/deposits",
        "/v1/wallets/{id}/withdrawals",
    ] {
        let parameters = paths[path]["post"]["parameters"].as_array().unwrap();
        let key = parameters
            .iter()
            .find(|p| p["name"] == "Idempotency-Key")
            .unwrap_or_else(|| panic!("POST {path} takes no Idempotency-Key"));
        assert_eq!(key["in"], "header");
        assert_eq!(key["required"], true, "POST {path}");
        assert_eq!(key["schema"]["pattern"], IdempotencyKey::PATTERN);
        assert_eq!(key["schema"]["maxLength"], IdempotencyKey::MAX_LEN);
    }
    let query = |path: &str, name: &str| {
        let parameters = paths[path]["get"]["parameters"].as_array().unwrap();
        let found = parameters.iter().find(|p| p["name"] == name);
        found.unwrap_or_else(|| panic!("GET {path} takes no {name}"))["schema"].clone()
    };
    let wait = query("/v1/transfers/{id}", "wait_ms");
    assert_eq!(
        (&wait["minimum"], &wait["maximum"]),
        (&json!(0), &json!(transaction_service::MAX_WAIT_MS))
    );
    let limit = query("/v1/wallets/{id}/entries", "limit");
    assert_eq!(
        (&limit["minimum"], &limit["maximum"]),
        (&json!(1), &json!(ledger_service::MAX_PAGE))
    );
    let before = query("/v1/wallets/{id}/entries", "before");
    assert_eq!(before["maximum"], json!(u64::MAX));
    let schemas = &doc["components"]["schemas"];
    for (schema, member) in [
        ("TransferRequest", "amount"),
        ("MovementRequest", "amount"),
        ("Transfer", "amount"),
        ("Entry", "amount"),
    ] {
        assert_eq!(
            schemas[schema]["properties"][member]["pattern"],
            Amount::PATTERN,
            "{schema}"
        );
    }
    let codes: Vec<&str> = Currency::ALL.iter().map(Currency::code).collect();
    for schema in [
        "TransferRequest",
        "MovementRequest",
        "OpenWallet",
        "Transfer",
        "Entry",
        "Wallet",
    ] {
        assert_eq!(
            schemas[schema]["properties"]["currency"]["enum"],
            json!(codes),
            "{schema}"
        );
    }
    for schema in ["TransferRequest", "MovementRequest", "OpenWallet"] {
        assert_eq!(schemas[schema]["additionalProperties"], false, "{schema}");
    }
}

#[test]
fn the_links_lead_from_a_created_resource_to_the_operations_that_take_its_id() {
    let doc = document();
    let operations: Vec<&Value> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .collect();
    let by_id = |id: &str| {
        operations
            .iter()
            .find(|op| op["operationId"] == id)
            .unwrap_or_else(|| panic!("no operation {id}"))
    };
    let mut links = BTreeSet::new();
    for op in &operations {
        for (status, answer) in op["responses"].as_object().unwrap() {
            for (name, link) in answer["links"].as_object().into_iter().flatten() {
                let from = op["operationId"].as_str().unwrap();
                links.insert(format!("{from} {status} {name}"));
                let target = by_id(link["operationId"].as_str().unwrap());
                for (parameter, value) in link["parameters"].as_object().into_iter().flatten() {
                    assert_eq!(value, "$response.body#/id", "{from} {name}");
                    let takes = target["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"] == *parameter && p["in"] == "path");
                    assert!(takes, "{from} {name}: no path parameter {parameter}");
                }
                for (member, value) in link["requestBody"].as_object().into_iter().flatten() {
                    assert_eq!(value, "$response.body#/id", "{from} {name}");
                    let body = resolve(
                        &doc,
                        &target["requestBody"]["content"]["application/json"]["schema"],
                    );
                    assert!(
                        !body["properties"][member].is_null(),
                        "{from} {name}: the body has no member {member}"
                    );
                }
                // The id comes from the created resource's own schema.
                let schema = resolve(&doc, &answer["content"]["application/json"]["schema"]);
                assert!(!schema["properties"]["id"].is_null(), "{from} {status}");
            }
        }
    }
    let expected = [
        "open_wallet 201 GetWallet",
        "open_wallet 201 Deposit",
        "open_wallet 201 Withdraw",
        "open_wallet 201 Entries",
        "open_wallet 201 Balance",
        "open_wallet 201 TransferFrom",
        "open_wallet 201 TransferTo",
        "create_transfer 202 GetTransfer",
        "deposit 202 GetTransfer",
        "withdraw 202 GetTransfer",
    ];
    assert_eq!(links, expected.iter().map(|l| (*l).to_owned()).collect());
}

#[test]
fn the_checker_refuses_what_breaks_a_schema() {
    let doc = document();
    let transfer = json!({"$ref": "#/components/schemas/Transfer"});
    let mut value = json!({
        "id": "0192f0c0-0000-7000-8000-000000000001",
        "status": "SUCCEEDED",
        "failure_reason": null,
        "sender_wallet_id": "0192f0c0-0000-7000-8000-000000000002",
        "receiver_wallet_id": "0192f0c0-0000-7000-8000-000000000003",
        "amount": "1.00",
        "currency": "USD",
        "kind": "transfer",
        "correlation_id": "0192f0c0-0000-7000-8000-000000000004",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z"
    });
    assert_eq!(violation(&doc, &transfer, &value, "body"), None);
    value["status"] = json!("DONE");
    assert!(violation(&doc, &transfer, &value, "body").is_some());
    value["status"] = json!("FAILED");
    value["extra"] = json!(1);
    assert!(violation(&doc, &transfer, &value, "body").is_some());
    value.as_object_mut().unwrap().remove("extra");
    value.as_object_mut().unwrap().remove("amount");
    assert!(violation(&doc, &transfer, &value, "body").is_some());
}

#[tokio::test]
async fn each_service_serves_the_description_of_its_routes() {
    let embedded = Embedded::new(EmbeddedConfig::default());
    let services = [
        (
            transaction_service::router(embedded.transactions.clone()),
            &[
                "/v1/holds",
                "/v1/holds/{id}",
                "/v1/holds/{id}/capture",
                "/v1/holds/{id}/void",
                "/v1/transfers",
                "/v1/transfers/{id}",
                "/v1/transfers/{id}/refunds",
                "/v1/wallets/{id}/deposits",
                "/v1/wallets/{id}/transfers",
                "/v1/wallets/{id}/withdrawals",
            ][..],
        ),
        (
            wallet_service::router(
                embedded.wallets.clone(),
                std::sync::Arc::from([wallet_http::ServiceToken::new("t").unwrap()]),
            ),
            &[
                "/internal/v1/release-holds",
                "/internal/v1/reserve",
                "/internal/v1/reserve-batch",
                "/internal/v1/wallets/{id}",
                "/v1/wallets",
                "/v1/wallets/{id}",
            ][..],
        ),
        (
            ledger_service::router(embedded.ledger.clone(), embedded.wallets.clone()),
            &["/v1/wallets/{id}/balance", "/v1/wallets/{id}/entries"][..],
        ),
    ];
    for (router, paths) in services {
        let served = send(&router, get(wallet_http::openapi::OPENAPI_PATH)).await;
        assert_eq!(served.status, StatusCode::OK);
        let listed: Vec<&str> = served.body["paths"]
            .as_object()
            .expect("a document with paths")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(listed, paths);
    }
}
