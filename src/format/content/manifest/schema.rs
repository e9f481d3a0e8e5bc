//! The manifest's JSON Schema, checked by a small interpreter of the
//! keywords `assets/manifest.schema.json` uses.
//!
//! Why not the `jsonschema` crate at run time: building its validator
//! (meta-schema check, compilation) costs 3–6 ms per process, ten times the
//! rest of `validate`, and every CLI call is a new process. The embedded
//! schema uses a dozen keywords; interpreting them over the parsed schema
//! costs microseconds. The tests check that the schema uses no other keyword
//! and that this interpreter and the `jsonschema` crate agree (same verdict,
//! same instance paths) on a corpus of manifests.

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::{SchemaIssue, MANIFEST_SCHEMA};

/// Keywords the interpreter applies; annotations it ignores.
pub const SUPPORTED_KEYWORDS: &[&str] = &[
    "type",
    "$ref",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "minLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "enum",
    "pattern",
];
/// Annotations: no effect on validity.
pub const ANNOTATIONS: &[&str] = &["$schema", "$id", "title", "description", "$defs"];

/// The embedded schema, parsed once per process.
pub fn schema() -> Result<&'static Value, &'static str> {
    static SCHEMA: OnceLock<Result<Value, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            serde_json::from_str(MANIFEST_SCHEMA)
                .map_err(|e| format!("embedded manifest schema is not JSON: {e}"))
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Every way `instance` breaks `schema`, each with its JSON pointer.
pub fn validate(root: &Value, instance: &Value) -> Vec<SchemaIssue> {
    let mut out = Vec::new();
    let mut walker = Walker {
        root,
        out: &mut out,
        depth: 0,
    };
    walker.check(root, instance, &mut String::new());
    out
}

struct Walker<'a, 'o> {
    root: &'a Value,
    out: &'o mut Vec<SchemaIssue>,
    /// `$ref` chains are bounded (the schema is ours, but a loop must not hang).
    depth: usize,
}

fn json_type_matches(name: &str, v: &Value) -> bool {
    match name {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        // 1.0 is an integer in JSON Schema.
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl<'a> Walker<'a, '_> {
    fn issue(&mut self, path: &str, message: String) {
        self.out.push(SchemaIssue {
            path: path.to_string(),
            message: super::errors::clip(message),
        });
    }

    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn check(&mut self, schema: &Value, v: &Value, path: &mut String) {
        let Some(s) = schema.as_object() else {
            if schema == &Value::Bool(false) {
                self.issue(path, "False schema does not allow anything".into());
            }
            return;
        };
        if let Some(reference) = s.get("$ref").and_then(Value::as_str) {
            match self.resolve(reference) {
                Some(target) if self.depth < 64 => {
                    self.depth += 1;
                    self.check(target, v, path);
                    self.depth -= 1;
                }
                _ => self.issue(path, format!("unresolvable reference {reference}")),
            }
        }
        if let Some(t) = s.get("type") {
            let names: Vec<&str> = match t {
                Value::String(n) => vec![n.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !names.iter().any(|n| json_type_matches(n, v)) {
                let list = names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let noun = if names.len() == 1 { "type" } else { "types" };
                self.issue(path, format!("{v} is not of {noun} {list}"));
            }
        }
        if let Some(options) = s.get("enum").and_then(Value::as_array) {
            if !options.contains(v) {
                self.issue(
                    path,
                    format!("{v} is not one of {}", Value::Array(options.clone())),
                );
            }
        }
        match v {
            Value::String(text) => self.check_string(s, text, v, path),
            Value::Number(_) => self.check_number(s, v, path),
            Value::Array(items) => {
                if let Some(item_schema) = s.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("/{i}"));
                        self.check(item_schema, item, path);
                        path.truncate(len);
                    }
                }
            }
            Value::Object(map) => self.check_object(s, map, path),
            _ => {}
        }
    }

    fn check_string(&mut self, s: &Map<String, Value>, text: &str, v: &Value, path: &str) {
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if (text.chars().count() as u64) < min {
                let unit = if min == 1 { "character" } else { "characters" };
                self.issue(path, format!("{v} is shorter than {min} {unit}"));
            }
        }
        if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
            match compiled(pattern) {
                Some(re) if re.is_match(text) => {}
                Some(_) => self.issue(path, format!("{v} does not match {pattern:?}")),
                None => self.issue(path, format!("unsupported pattern {pattern:?}")),
            }
        }
    }

    fn check_number(&mut self, s: &Map<String, Value>, v: &Value, path: &str) {
        let Some(x) = v.as_f64() else {
            return;
        };
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if x < min {
                self.issue(
                    path,
                    format!("{v} is less than the minimum of {}", s["minimum"]),
                );
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if x > max {
                self.issue(
                    path,
                    format!("{v} is greater than the maximum of {}", s["maximum"]),
                );
            }
        }
        if let Some(min) = s.get("exclusiveMinimum").and_then(Value::as_f64) {
            if x <= min {
                self.issue(
                    path,
                    format!(
                        "{v} is less than or equal to the minimum of {}",
                        s["exclusiveMinimum"]
                    ),
                );
            }
        }
    }

    fn check_object(
        &mut self,
        s: &Map<String, Value>,
        map: &Map<String, Value>,
        path: &mut String,
    ) {
        if let Some(required) = s.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(key) {
                    self.issue(path, format!("{key:?} is a required property"));
                }
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        for (key, value) in map {
            let len = path.len();
            path.push('/');
            path.push_str(&escape_pointer(key));
            match properties.and_then(|p| p.get(key)) {
                Some(sub) => self.check(sub, value, path),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        path.truncate(len);
                        self.issue(
                            path,
                            format!(
                                "Additional properties are not allowed ({key:?} was unexpected)"
                            ),
                        );
                        continue;
                    }
                    Some(sub @ Value::Object(_)) => self.check(sub, value, path),
                    _ => {}
                },
            }
            path.truncate(len);
        }
    }
}

/// Patterns are compiled once each (the schema has one).
fn compiled(pattern: &str) -> Option<&'static regex_lite::Regex> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: OnceLock<Mutex<HashMap<String, Option<&'static regex_lite::Regex>>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut guard = cache.lock().ok()?;
    *guard.entry(pattern.to_string()).or_insert_with(|| {
        regex_lite::Regex::new(pattern)
            .ok()
            .map(|re| &*Box::leak(Box::new(re)))
    })
}
