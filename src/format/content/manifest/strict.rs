//! Parsing with duplicate keys refused, and the schema gate.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

#[cfg(test)]
use super::MANIFEST_SCHEMA;
use super::{schema, ManifestError, SchemaIssue};

// Parsing, schema, rules

/// A JSON value parsed with duplicate keys refused: two readers must never see two manifests.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
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
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key `{key}`")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Parses to a [`Value`], refusing syntax errors and duplicate keys with their line/column.
pub fn parse_value_strict(bytes: &[u8]) -> Result<Value, ManifestError> {
    serde_json::from_slice::<StrictValue>(bytes)
        .map(|StrictValue(v)| v)
        .map_err(ManifestError::from_json)
}

/// The `jsonschema` crate's validator of the embedded schema: the reference
/// the run-time interpreter ([`schema`]) is tested against.
#[cfg(test)]
pub(super) fn compiled_schema() -> Result<&'static jsonschema::Validator, &'static str> {
    use std::sync::OnceLock;
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let schema: Value = serde_json::from_str(MANIFEST_SCHEMA)
                .map_err(|e| format!("embedded manifest schema is not JSON: {e}"))?;
            jsonschema::draft202012::new(&schema)
                .map_err(|e| format!("embedded manifest schema does not compile: {e}"))
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Checks `value` against [`MANIFEST_SCHEMA`]; every issue names its instance path.
pub fn validate_schema(value: &Value) -> Result<(), Vec<SchemaIssue>> {
    let root = schema::schema().map_err(|message| {
        vec![SchemaIssue {
            path: String::new(),
            message: message.to_owned(),
        }]
    })?;
    let issues = schema::validate(root, value);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}
