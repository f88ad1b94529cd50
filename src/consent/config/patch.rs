//! A PATCH of a cookie consent config, parsed at the HTTP edge into its three parts: a status
//! change, the server-set fields a client echoed back, and the JSON merge patch (RFC 7396) of the
//! config's own fields, which the store merges onto the working copy and parses like a creation.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, Visitor},
};
use serde_json::{Map, Value};

use super::spec::Status;

/// Fields of the representation that only the server sets. A PATCH may echo them back
/// unchanged (a client that GETs, edits and PATCHes the whole object); a different value is
/// refused rather than silently ignored.
pub const READ_ONLY: [&str; 7] =
    ["id", "revision", "reconsent_revision", "published_at", "created_at", "updated_at", "unpublished_changes"];

/// `warnings` appear in responses only; a client echoing a response back is not an error.
const OUTPUT_ONLY: &str = "warnings";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsentConfigPatch {
    /// `{"status": "paused"}`.
    pub status: Option<Status>,
    /// [`READ_ONLY`] fields as sent: each must equal the stored value.
    pub echoed: Map<String, Value>,
    /// The merge patch of the config's fields.
    pub changes: Map<String, Value>,
}

impl ConsentConfigPatch {
    /// A patch of the config's fields only.
    pub fn changes(changes: Map<String, Value>) -> Self {
        ConsentConfigPatch { changes, ..Default::default() }
    }
}

/// A status as a PATCH names it; the error says which statuses exist.
struct StatusChange(Status);

impl<'de> Deserialize<'de> for StatusChange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Status::parse(&s).map(StatusChange).ok_or_else(|| {
                de::Error::custom(format!("unknown status {s:?}: expected draft, active, paused or decommissioned"))
            }),
            _ => Err(de::Error::custom("must be a string")),
        }
    }
}

impl<'de> Deserialize<'de> for ConsentConfigPatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PatchVisitor;

        impl<'de> Visitor<'de> for PatchVisitor {
            type Value = ConsentConfigPatch;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object (a JSON merge patch)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ConsentConfigPatch, A::Error> {
                let mut patch = ConsentConfigPatch::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "status" {
                        patch.status = Some(map.next_value::<StatusChange>()?.0);
                    } else if key == OUTPUT_ONLY {
                        map.next_value::<IgnoredAny>()?;
                    } else if READ_ONLY.contains(&key.as_str()) {
                        let v = map.next_value()?;
                        patch.echoed.insert(key, v);
                    } else {
                        let v = map.next_value()?;
                        patch.changes.insert(key, v);
                    }
                }
                Ok(patch)
            }
        }

        d.deserialize_map(PatchVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::error::Error;

    fn parse(v: Value) -> Result<ConsentConfigPatch, Error> {
        crate::json::from_value(v, "")
    }

    #[test]
    fn a_patch_is_split_into_status_echoes_and_changes() {
        let p = parse(json!({"status": "paused", "id": "x", "warnings": [], "banner": {"position": "top"}})).unwrap();
        assert_eq!(p.status, Some(Status::Paused));
        assert_eq!(p.echoed, json!({"id": "x"}).as_object().unwrap().clone());
        assert_eq!(p.changes, json!({"banner": {"position": "top"}}).as_object().unwrap().clone());
    }

    #[test]
    fn bad_statuses_and_bodies_name_the_field() {
        for (body, field) in [(json!({"status": "gone"}), Some("status")), (json!({"status": 1}), Some("status"))] {
            match parse(body.clone()) {
                Err(Error::Validation { field: f, .. }) => assert_eq!(f.as_deref(), field, "{body}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(parse(json!([1])), Err(Error::Validation { field: None, .. })));
    }
}
