//! Extractors whose rejections answer in the error shape. axum's own answer
//! in plain text with statuses of their own choosing.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::{DeserializeOwned, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::ApiError;

/// A JSON object body, or an [`ApiError`]:
///
/// - not JSON, not an object, a member given twice (at any depth), wrong
///   field types, missing or unknown fields -> 400 `malformed_request`
///   (strict: a body the route does not understand is a client bug, never
///   a business refusal);
/// - no `Content-Type: application/json` -> 415 `unsupported_media_type`;
/// - over [`crate::MAX_BODY_BYTES`] -> 413 `body_too_large`.
///
/// Every request body of the API is an object; requiring one also stops
/// serde from reading a struct out of a JSON array (`["USD"]`).
///
/// As a response it is `axum::Json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let value = match axum::Json::<Strict>::from_request(req, state).await {
            Ok(axum::Json(Strict(value))) => value,
            Err(rejection) => return Err(json_rejection(rejection)),
        };
        if !value.is_object() {
            return Err(ApiError::malformed("request body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(Json)
            .map_err(|e| ApiError::malformed(format!("invalid request body: {e}")))
    }
}

/// A JSON value read strictly: an object that names a member twice is
/// refused, where a plain reading keeps the last one. Two readers of the
/// same bytes (a gateway rule, an audit log, this service) could otherwise
/// see two different requests.
struct Strict(serde_json::Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(A::Error::custom(format!("member {key:?} is given twice")));
            }
            let Strict(value) = map.next_value()?;
            members.insert(key, value);
        }
        Ok(Value::Object(members))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::unsupported_media_type(),
        // Only a body without a length gets here (a declared length over
        // the limit is refused before), and only on the public routes'
        // limit: peers always declare the length of their batches.
        r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::body_too_large(crate::MAX_BODY_BYTES)
        }
        // Syntax and data errors alike: axum calls the latter 422, but a body
        // of the wrong shape is malformed, not a broken business rule.
        r => ApiError::malformed(r.body_text()),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Whether `text` is a uuid written as the API writes ids: 32 hex digits in
/// groups of 8-4-4-4-12 (`0192f0c0-0000-7000-8000-000000000001`). The uuid
/// parser also takes other spellings (no hyphens, braces, `urn:uuid:`);
/// the API takes this one, so that an id has one spelling.
pub fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Reads an id from a uuid string of the one spelling [`is_uuid`] takes:
/// `#[serde(deserialize_with = "wallet_http::uuid")]` on an id member of a
/// request body.
pub fn uuid<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
{
    let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
    if !is_uuid(&text) {
        return Err(D::Error::custom(format!(
            "{text:?} is not a uuid such as \"0192f0c0-0000-7000-8000-000000000001\""
        )));
    }
    text.parse()
        .map_err(|_| D::Error::custom(format!("{text:?} is not a uuid")))
}

/// Path parameters, or 400 `invalid_id` (every path parameter of the
/// services is an id, written as [`is_uuid`] says).
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Ok(raw) = RawPathParams::from_request_parts(parts, state).await
            && let Some((name, value)) = raw.iter().find(|(_, value)| !is_uuid(value))
        {
            let message = format!(
                "path parameter {name} {value:?} is not a uuid such as \
                 0192f0c0-0000-7000-8000-000000000001"
            );
            return Err(ApiError::bad_request("invalid_id", message));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    if rejection.status().is_server_error() {
        // A route declared without the parameter its handler reads: a bug.
        return ApiError::internal(rejection.body_text());
    }
    ApiError::bad_request("invalid_id", rejection.body_text())
}

/// Query parameters, or 400 `invalid_query`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request("invalid_query", rejection.body_text())
}

/// A page's `limit` query value: `default` when absent, else 1 to `max`,
/// or 400 `invalid_query`.
pub fn page_limit(limit: Option<usize>, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        let message = format!("limit must be 1 to {max}");
        return Err(ApiError::bad_request("invalid_query", message));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::{Strict, is_uuid};

    #[test]
    fn an_id_has_one_spelling() {
        assert!(is_uuid("0192f0c0-0000-7000-8000-00000000000A"));
        for other in [
            "0192f0c000007000800000000000000a",
            "{0192f0c0-0000-7000-8000-00000000000a}",
            "urn:uuid:0192f0c0-0000-7000-8000-00000000000a",
            "0192f0c0-0000-7000-8000-00000000000g",
            "0192f0c0-0000-7000-8000+00000000000a",
            "",
        ] {
            assert!(!is_uuid(other), "{other}");
        }
    }

    fn read(text: &str) -> Result<serde_json::Value, String> {
        serde_json::from_str::<Strict>(text)
            .map(|Strict(v)| v)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_member_given_twice_is_refused_at_any_depth() {
        assert_eq!(
            read(r#"{"a":{"b":[1,{"c":"x"}],"d":null},"e":true}"#),
            Ok(serde_json::json!({"a":{"b":[1,{"c":"x"}],"d":null},"e":true}))
        );
        for twice in [
            r#"{"amount":"1","amount":"60"}"#,
            r#"{"a":{"b":1,"b":2}}"#,
            r#"{"a":[{"c":1,"c":1}]}"#,
        ] {
            let error = read(twice).unwrap_err();
            assert!(error.contains("is given twice"), "{twice}: {error}");
        }
    }
}
