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
use serde_json::Value;
use utoipa::openapi::schema::{Object, ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{Info, OpenApi, OpenApiBuilder};

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

/// One document of the public routes of `parts` (each a service's
/// description without its internal routes), titled as the system's API.
pub fn public(parts: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(Info::new("wallet", env!("CARGO_PKG_VERSION")))
        .build();
    for part in parts {
        doc.merge(part);
    }
    doc.info.description = Some(
        "Wallets, transfers between them, deposits, withdrawals, and each wallet's ledger \
         entries. Errors have one shape: {\"error\": {\"code\", \"message\"}}."
            .to_owned(),
    );
    doc
}

/// `GET /openapi.json` answering `doc`.
pub fn route(doc: OpenApi) -> Router {
    let json = doc.to_pretty_json().unwrap_or_else(|e| {
        // Serializing a document built from static annotations cannot fail
        // short of a bug; answer the reason rather than panic in a service.
        format!("{{\"error\":{{\"code\":\"internal\",\"message\":\"{e}\"}}}}")
    });
    Router::new().route(
        OPENAPI_PATH,
        get(move || async move { ([("content-type", "application/json")], json) }),
    )
}
