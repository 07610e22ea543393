//! The OpenAPI 3.1 description of the services' routes.
//!
//! Each service describes its own routes with `utoipa` annotations on the
//! handlers its router uses and serves that description at
//! `GET /openapi.json`; [`public`] merges the public parts of several
//! services into one document, the one checked in as `docs/openapi.json`.
//!
//! The core's types carry no schema (the core knows nothing of HTTP), so the
//! resources give theirs here: ids are uuid strings, amounts and balances
//! decimal strings, times RFC 3339 strings, and the enums lists of their
//! values ([`string_enum`]).

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{
    ContentBuilder, Info, OpenApi, OpenApiBuilder, Ref, RefOr, Response, ResponseBuilder,
};
use wallet_core::money::{Amount, Currency};

/// The path each service serves its description at.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// A string schema that takes one of `values`; `null` too when `nullable`.
pub fn string_enum(values: &[&str], nullable: bool) -> Object {
    let mut allowed: Vec<Value> = values.iter().map(|v| Value::from(*v)).collect();
    let schema_type = if nullable {
        allowed.push(Value::Null);
        SchemaType::from_iter([Type::String, Type::Null])
    } else {
        SchemaType::Type(Type::String)
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .enum_values(Some(allowed))
        .build()
}

/// An amount as a decimal string of [`Amount::PATTERN`] (`"10.50"`): what
/// a client may send, and every amount the API shows.
pub fn amount_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(Amount::PATTERN))
        .examples(["10.50"])
        .description(Some(
            "A decimal string (`\"10.50\"`): digits without a sign or leading zeros, at most \
             three decimals, more than zero, at most 1000000000000. The wallet's currency may \
             allow fewer decimals (USD two, JPY none): 422 `invalid_amount`. A JSON number is \
             refused.",
        ))
        .build()
}

/// A balance: a decimal string, never negative for a wallet.
pub fn balance_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^(?:0|[1-9][0-9]*)(?:\.[0-9]{1,3})?$"))
        .examples(["10.50"])
        .build()
}

/// A ledger account's balance: a decimal string, negative for a system
/// account (money that entered the system through it).
pub fn signed_balance_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]{1,3})?$"))
        .examples(["10.50"])
        .build()
}

/// A currency code: one of [`Currency::ALL`], upper case.
pub fn currency_schema() -> Object {
    let codes: Vec<&str> = Currency::ALL.iter().map(Currency::code).collect();
    string_enum(&codes, false)
}

/// A whole number from `min` to `max`, for a query parameter.
pub fn bounded_integer(min: u64, max: u64, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(Some(max))
        .description(Some(description))
        .build()
}

/// An answer in the error shape whose description names its codes.
fn error_answer(description: &str) -> RefOr<Response> {
    let body = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    ResponseBuilder::new()
        .description(description)
        .content("application/json", body)
        .build()
        .into()
}

/// Every operation of `doc`.
fn operations(doc: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.delete.as_mut(),
            item.patch.as_mut(),
        ]
        .into_iter()
        .flatten()
    })
}

/// Adds to each operation of a service's description the answers the
/// shared layers give whatever the handler: 413 `body_too_large` (every
/// route's body is limited, [`crate::limit_body`]), 415
/// `unsupported_media_type` where a JSON body is read ([`crate::Json`]),
/// and 503 `unavailable` where the route says nothing of its own.
pub fn with_shared_answers(mut doc: OpenApi) -> OpenApi {
    let too_large = format!(
        "`body_too_large`: the body exceeds {} bytes",
        crate::MAX_BODY_BYTES
    );
    for op in operations(&mut doc) {
        let answers = &mut op.responses.responses;
        answers
            .entry("413".to_owned())
            .or_insert_with(|| error_answer(&too_large));
        if op.request_body.is_some() {
            answers.entry("415".to_owned()).or_insert_with(|| {
                error_answer("`unsupported_media_type`: the body is not sent as `application/json`")
            });
        }
        answers.entry("503".to_owned()).or_insert_with(|| {
            error_answer("`unavailable`: storage or a peer service did not answer; retry")
        });
    }
    doc
}

/// Where a link puts the id of the resource an answer created.
#[derive(Clone, Copy)]
enum IdInto {
    /// The path parameter `id`.
    Path,
    /// A member of the request body.
    Body(&'static str),
}

/// The links a fuzzer or a client follows from one answer to the next
/// request: from an operation's answer (operation, status), by name, to an
/// operation that takes the created resource's id.
const LINKS: &[(&str, &str, &str, &str, IdInto)] = &[
    (
        "open_wallet",
        "201",
        "GetWallet",
        "get_wallet",
        IdInto::Path,
    ),
    ("open_wallet", "201", "Deposit", "deposit", IdInto::Path),
    ("open_wallet", "201", "Withdraw", "withdraw", IdInto::Path),
    ("open_wallet", "201", "Entries", "entries", IdInto::Path),
    ("open_wallet", "201", "Balance", "balance", IdInto::Path),
    (
        "open_wallet",
        "201",
        "TransferFrom",
        "create_transfer",
        IdInto::Body("sender_wallet_id"),
    ),
    (
        "open_wallet",
        "201",
        "TransferTo",
        "create_transfer",
        IdInto::Body("receiver_wallet_id"),
    ),
    (
        "create_transfer",
        "202",
        "GetTransfer",
        "get_transfer",
        IdInto::Path,
    ),
    (
        "deposit",
        "202",
        "GetTransfer",
        "get_transfer",
        IdInto::Path,
    ),
    (
        "withdraw",
        "202",
        "GetTransfer",
        "get_transfer",
        IdInto::Path,
    ),
];

/// A link to operation `to` that puts the id in the answer's body `into`
/// its request. Written as JSON: utoipa's `Link` names its members in snake
/// case (`operation_id`), which no reader of OpenAPI knows.
fn link(to: &str, into: IdInto) -> Value {
    let (place, name) = match into {
        IdInto::Path => ("parameters", "id"),
        IdInto::Body(member) => ("requestBody", member),
    };
    let mut filled = serde_json::Map::new();
    filled.insert(name.to_owned(), json!("$response.body#/id"));
    json!({"operationId": to, place: filled})
}

/// One document of the public routes of `parts` (each a service's
/// description without its internal routes), titled as the system's API,
/// as the gateway serves them: every operation may also answer 429
/// `rate_limited` (the gateway's limits per client address), and the
/// answers that create a wallet or a transfer link to the operations that
/// take its id.
pub fn public(parts: impl IntoIterator<Item = OpenApi>) -> Value {
    let mut doc = OpenApiBuilder::new()
        .info(Info::new("wallet", env!("CARGO_PKG_VERSION")))
        .build();
    for part in parts {
        doc.merge(part);
    }
    for op in operations(&mut doc) {
        let too_many = "`rate_limited`: the gateway's limit of requests per client address; retry \
                        after `Retry-After`";
        op.responses
            .responses
            .insert("429".to_owned(), error_answer(too_many));
    }
    doc.info.description = Some(
        "Wallets, transfers between them, deposits, withdrawals, and each wallet's ledger \
         entries. Errors have one shape: {\"error\": {\"code\", \"message\"}}."
            .to_owned(),
    );
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for op in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let from = op["operationId"].as_str().unwrap_or_default().to_owned();
        for &(_, status, name, to, into) in LINKS.iter().filter(|l| l.0 == from) {
            if let Some(answer) = op["responses"][status].as_object_mut() {
                let links = answer.entry("links").or_insert_with(|| json!({}));
                links[name] = link(to, into);
            }
        }
    }
    doc
}

/// `GET /openapi.json` answering `doc` (a service's [`OpenApi`], or
/// [`public`]'s document).
pub fn route(doc: impl serde::Serialize) -> Router {
    let json = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
        // Serializing a document built from static annotations cannot fail
        // short of a bug; answer the reason rather than panic in a service.
        format!("{{\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}")
    });
    Router::new().route(
        OPENAPI_PATH,
        get(move || async move { ([("content-type", "application/json")], json) }),
    )
}
