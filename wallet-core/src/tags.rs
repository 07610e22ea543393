//! What a client attaches to a transfer or a hold for its own use: a
//! `reference` (its own name for it, unique per wallet) and `metadata` (a
//! small JSON object). Neither changes how money moves; both are stored
//! with the transfer, returned on reads, carried in its events and
//! searchable in the history (the reference).
//!
//! A reference is unique per wallet: the user wallet whose money leaves,
//! or for a deposit the one it enters (a transfer's `reference_wallet`).
//! It stays taken whatever becomes of its transfer, FAILED included, so a
//! client that sends an order's reference twice under two keys learns of
//! the first transfer rather than paying twice.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A client's own name for a transfer or hold: 1 to
/// [`Reference::MAX_CHARS`] characters, none of them a control character.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reference(String);

impl Reference {
    /// The longest reference, in characters.
    pub const MAX_CHARS: usize = 128;

    /// The rules as a regular expression, for API descriptions: 1 to 128
    /// characters outside the control ranges.
    pub const PATTERN: &'static str = "^[^\\x00-\\x1f\\x7f-\\x9f]{1,128}$";

    /// Checks `text` against the rules.
    pub fn new(text: impl Into<String>) -> Result<Reference, TagError> {
        let text = text.into();
        let chars = text.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(TagError::ReferenceLength);
        }
        if text.chars().any(char::is_control) {
            return Err(TagError::ReferenceControl);
        }
        Ok(Reference(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Reference {
    type Error = TagError;
    fn try_from(text: String) -> Result<Self, TagError> {
        Reference::new(text)
    }
}

impl From<Reference> for String {
    fn from(r: Reference) -> String {
        r.0
    }
}

/// A client's JSON object about a transfer or hold, bounded so that it
/// stays a note rather than a payload: at most [`Metadata::MAX_KEYS`] keys
/// counting those of nested objects, nested at most
/// [`Metadata::MAX_DEPTH`] deep (the object itself is depth 1), at most
/// [`Metadata::MAX_BYTES`] bytes as compact JSON, and without U+0000 in a
/// key or string (JSON allows it; PostgreSQL's `jsonb` does not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct Metadata(Map<String, Value>);

impl Metadata {
    /// Keys at most, nested objects' keys included.
    pub const MAX_KEYS: usize = 64;
    /// Depth at most: 1 for a flat object, one more per nested object or
    /// array.
    pub const MAX_DEPTH: usize = 4;
    /// Bytes at most, as compact JSON.
    pub const MAX_BYTES: usize = 4096;

    /// Checks `value` against the rules.
    pub fn new(value: Value) -> Result<Metadata, TagError> {
        let Value::Object(object) = value else {
            return Err(TagError::MetadataNotObject);
        };
        let mut keys = 0;
        let depth = measure(&object, &mut keys);
        if keys > Self::MAX_KEYS {
            return Err(TagError::MetadataKeys);
        }
        if depth > Self::MAX_DEPTH {
            return Err(TagError::MetadataDepth);
        }
        if holds_nul(&object) {
            return Err(TagError::MetadataNul);
        }
        let metadata = Metadata(object);
        if metadata.canonical().len() > Self::MAX_BYTES {
            return Err(TagError::MetadataBytes);
        }
        Ok(metadata)
    }

    /// The object.
    pub fn as_object(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Compact JSON with every object's keys in order, so two objects
    /// equal as JSON have one text whatever order a client wrote them in:
    /// what the idempotency fingerprint hashes and the size limit counts.
    pub fn canonical(&self) -> String {
        let mut text = String::new();
        write_canonical(&mut text, &Value::Object(self.0.clone()));
        text
    }
}

/// The depth of `object` (1 when flat), adding its keys, and those of the
/// objects inside it, to `keys`.
fn measure(object: &Map<String, Value>, keys: &mut usize) -> usize {
    *keys += object.len();
    1 + object
        .values()
        .map(|v| depth_of(v, keys))
        .max()
        .unwrap_or(0)
}

/// Whether a key or a string anywhere in `object` holds U+0000, which
/// JSON allows and PostgreSQL's text and `jsonb` do not.
fn holds_nul(object: &Map<String, Value>) -> bool {
    fn nul(value: &Value) -> bool {
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Array(items) => items.iter().any(nul),
            Value::Object(object) => holds_nul(object),
            _ => false,
        }
    }
    object
        .iter()
        .any(|(key, value)| key.contains('\0') || nul(value))
}

fn depth_of(value: &Value, keys: &mut usize) -> usize {
    match value {
        Value::Object(object) => measure(object, keys),
        Value::Array(items) => 1 + items.iter().map(|v| depth_of(v, keys)).max().unwrap_or(0),
        _ => 0,
    }
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Object(object) => {
            let mut entries: Vec<(&String, &Value)> = object.iter().collect();
            entries.sort_by_key(|(k, _)| *k);
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(out, value);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

impl TryFrom<Value> for Metadata {
    type Error = TagError;
    fn try_from(value: Value) -> Result<Self, TagError> {
        Metadata::new(value)
    }
}

impl From<Metadata> for Value {
    fn from(m: Metadata) -> Value {
        Value::Object(m.0)
    }
}

/// Why a reference or metadata was refused. HTTP 422 `invalid_reference`
/// or `invalid_metadata`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TagError {
    /// Empty or too long.
    #[error("a reference is 1 to {} characters", Reference::MAX_CHARS)]
    ReferenceLength,
    /// A control character (a line break, a tab, ...).
    #[error("a reference has no control characters")]
    ReferenceControl,
    /// Metadata must be a JSON object.
    #[error("metadata is a JSON object")]
    MetadataNotObject,
    /// Too many keys.
    #[error(
        "metadata has at most {} keys, nested ones included",
        Metadata::MAX_KEYS
    )]
    MetadataKeys,
    /// Nested too deep.
    #[error("metadata nests at most {} levels deep", Metadata::MAX_DEPTH)]
    MetadataDepth,
    /// Too large.
    #[error("metadata is at most {} bytes as compact JSON", Metadata::MAX_BYTES)]
    MetadataBytes,
    /// A key or string holds U+0000, which no store keeps.
    #[error("metadata holds no NUL character (U+0000) in a key or a string")]
    MetadataNul,
}

impl TagError {
    /// Whether it is the reference that was refused (else the metadata).
    pub fn is_reference(&self) -> bool {
        matches!(self, TagError::ReferenceLength | TagError::ReferenceControl)
    }
}

/// A transfer's or hold's reference and metadata, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    /// The client's own name for it, unique per wallet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    /// The client's notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

impl Tags {
    /// Neither a reference nor metadata.
    pub fn is_empty(&self) -> bool {
        self.reference.is_none() && self.metadata.is_none()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_reference_is_one_to_128_characters_without_control_characters() {
        assert_eq!(Reference::new("order-7").unwrap().as_str(), "order-7");
        assert!(
            Reference::new("é".repeat(128)).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(Reference::new(""), Err(TagError::ReferenceLength));
        assert_eq!(
            Reference::new("x".repeat(129)),
            Err(TagError::ReferenceLength)
        );
        assert_eq!(Reference::new("a\nb"), Err(TagError::ReferenceControl));
        let read: Result<Reference, _> = serde_json::from_value(json!("a\tb"));
        assert!(read.is_err(), "deserializing checks too");
    }

    #[test]
    fn metadata_is_an_object_bounded_in_keys_depth_and_bytes() {
        let ok = json!({"order": "A-1", "lines": [{"sku": "x", "n": 2}], "gift": true});
        assert_eq!(Metadata::new(ok.clone()).unwrap().as_object().len(), 3);
        assert_eq!(Metadata::new(json!([1])), Err(TagError::MetadataNotObject));
        assert_eq!(Metadata::new(json!("x")), Err(TagError::MetadataNotObject));

        let many: Map<String, Value> = (0..=Metadata::MAX_KEYS)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        assert_eq!(
            Metadata::new(Value::Object(many)),
            Err(TagError::MetadataKeys)
        );
        let nested_keys = json!({"a": {"b": (0..64).map(|i| (format!("k{i}"), json!(i))).collect::<Map<_, _>>()}});
        assert_eq!(Metadata::new(nested_keys), Err(TagError::MetadataKeys));

        assert!(Metadata::new(json!({"a": {"b": {"c": {"d": 1}}}})).is_ok());
        assert_eq!(
            Metadata::new(json!({"a": {"b": {"c": {"d": {"e": 1}}}}})),
            Err(TagError::MetadataDepth)
        );
        assert_eq!(
            Metadata::new(json!({"a": [[[[1]]]]})),
            Err(TagError::MetadataDepth),
            "arrays nest too"
        );

        let big = json!({"note": "x".repeat(Metadata::MAX_BYTES)});
        assert_eq!(Metadata::new(big), Err(TagError::MetadataBytes));

        assert_eq!(Metadata::new(json!({"a\0": 1})), Err(TagError::MetadataNul));
        assert_eq!(
            Metadata::new(json!({"a": [{"b": "x\0"}]})),
            Err(TagError::MetadataNul)
        );
    }

    #[test]
    fn equal_objects_have_one_canonical_text_whatever_their_key_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,"é"],"x":null}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":null,"y":[1,"é"]},"b":1}"#).unwrap();
        let (a, b) = (Metadata::new(a).unwrap(), Metadata::new(b).unwrap());
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.canonical(), r#"{"a":{"x":null,"y":[1,"é"]},"b":1}"#);
    }
}
