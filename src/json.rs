//! Deserialising JSON values into domain types with the failing field named, for bodies that are
//! taken apart before they are typed (provider configs, event batches); and the one JSON merge
//! patch both config stores apply; [`ObjectsOnly`], which every request body and config is read
//! through, so that a struct is never taken from an array of its fields.

mod objects_only;
mod unique_keys;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub use self::{objects_only::ObjectsOnly, unique_keys::UniqueKeys};
use crate::error::{Error, Result};

/// Deserialises `raw`; on failure the error names the field as a dotted path below `prefix`
/// (`credentials.api_key_ref`, `batch[2].event_name`), including unknown and missing fields,
/// which serde reports at their parent. A struct must be an object ([`ObjectsOnly`]).
pub fn from_value<T: DeserializeOwned>(raw: Value, prefix: &str) -> Result<T> {
    serde_path_to_error::deserialize(ObjectsOnly(raw)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let field = field_named(&path, &message, &["unknown", "missing"]).unwrap_or_default();
        Error::Validation { field: join(prefix, &field), message }
    })
}

/// The field serde's error `message` is about, found at `path` (`.`: the top): serde reports an
/// unknown, missing or repeated key at its parent object, so for those of `kinds` (`unknown`,
/// `missing`, `duplicate`) the key named in the message (`unknown field `k`, …`) is added below
/// the path. `None` for the top itself.
pub fn field_named(path: &str, message: &str, kinds: &[&str]) -> Option<String> {
    let path = if path == "." { "" } else { path };
    let named = kinds.iter().find_map(|k| message.strip_prefix(k)?.strip_prefix(" field `")?.split('`').next());
    let field = match named {
        Some(name) if path != name && !path.ends_with(&format!(".{name}")) => {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        }
        _ => path.to_string(),
    };
    (!field.is_empty()).then_some(field)
}

/// `prefix.field`, `prefix`, `field` or nothing.
pub fn join(prefix: &str, field: &str) -> Option<String> {
    match (prefix.is_empty(), field.is_empty()) {
        (true, true) => None,
        (true, false) => Some(field.to_string()),
        (false, true) => Some(prefix.to_string()),
        (false, false) if field.starts_with('[') => Some(format!("{prefix}{field}")),
        (false, false) => Some(format!("{prefix}.{field}")),
    }
}

/// JSON merge patch (RFC 7396): objects merge recursively, `null` removes a key, anything else
/// replaces. Both config stores patch their writable representation with it and then parse the
/// result like a creation, so a PATCH can never leave a config that a POST would refuse.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    if patch.is_object() && !target.is_object() {
        *target = Value::Object(Map::new());
    }
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: u8,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        b: String,
    }

    fn field(v: Value, prefix: &str) -> Option<String> {
        match from_value::<T>(v, prefix) {
            Err(Error::Validation { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fields_are_named() {
        assert_eq!(field(json!({"a": "x"}), ""), Some("a".into()));
        assert_eq!(field(json!({}), ""), Some("a".into()));
        assert_eq!(field(json!({"a": 1, "zz": 1}), ""), Some("zz".into()));
        assert_eq!(field(json!({"a": 1, "inner": {"c": 1}}), "p"), Some("p.inner.c".into()));
        assert_eq!(field(json!({"a": 1, "inner": {}}), "batch[3]"), Some("batch[3].inner.b".into()));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The examples of RFC 7396, appendix A.
        let table = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "b"}), json!({"b": "c"}), json!({"a": "b", "b": "c"})),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (json!({"a": "b", "b": "c"}), json!({"a": null}), json!({"b": "c"})),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (json!({"a": {"b": "c"}}), json!({"a": {"b": "d", "c": null}}), json!({"a": {"b": "d"}})),
            (json!({"a": [{"b": "c"}]}), json!({"a": [1]}), json!({"a": [1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"e": null}), json!({"a": 1}), json!({"e": null, "a": 1})),
            (json!({}), json!({"a": {"bb": {"ccc": null}}}), json!({"a": {"bb": {}}})),
        ];
        for (mut target, patch, want) in table {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }
}
