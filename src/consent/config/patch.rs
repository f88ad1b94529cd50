//! The bodies that change a cookie consent config, parsed at the HTTP edge. A POST
//! ([`NewConsentConfig`]) becomes a checked [`ConfigSpec`]; a server-set field is refused, naming
//! it. A PATCH ([`ConsentConfigPatch`]) is taken apart into its three parts: a status change, the
//! server-set fields a client echoed back, and the JSON merge patch (RFC 7396) of the config's
//! own fields, which the store merges onto the working copy and parses like a creation.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, Visitor},
};
use serde_json::{Map, Value};

use super::spec::{ConfigSpec, Status};
use crate::error::Result as DomainResult;

/// Fields of the representation that only the server sets. A PATCH may echo them back
/// unchanged (a client that GETs, edits and PATCHes the whole object); a different value is
/// refused rather than silently ignored.
pub const READ_ONLY: [&str; 7] =
    ["id", "revision", "reconsent_revision", "published_at", "created_at", "updated_at", "unpublished_changes"];

/// `warnings` appear in responses only; a client echoing a response back is not an error.
const OUTPUT_ONLY: &str = "warnings";

/// A config as POSTed: its own fields, not yet checked ([`NewConsentConfig::spec`] checks them).
/// A server-set field, `status` included (a new config is a draft), is refused while parsing,
/// naming the field; `warnings` echoed from a response are ignored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewConsentConfig(Map<String, Value>);

impl NewConsentConfig {
    /// The config, checked: a type error (a bad colour, an unknown field) names its field;
    /// range, length and cross-field rules are all reported together.
    pub fn spec(self) -> DomainResult<ConfigSpec> {
        ConfigSpec::parse(Value::Object(self.0))
    }
}

/// The value of a field the server sets at creation: never accepted.
struct ServerSet;

impl<'de> Deserialize<'de> for ServerSet {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(de::Error::custom("is set by the server; a new config starts as a draft at revision 0"))
    }
}

impl Body for NewConsentConfig {
    const EXPECTING: &'static str = "a JSON object (a cookie consent config)";

    fn take<'de, A: MapAccess<'de>>(&mut self, key: String, map: &mut A) -> Result<(), A::Error> {
        if key == "status" || READ_ONLY.contains(&key.as_str()) {
            // Failing inside the value, so that the error's path names the field.
            map.next_value::<ServerSet>()?;
        } else {
            self.0.insert(key, map.next_value()?);
        }
        Ok(())
    }
}

/// A body read field by field, in order; `warnings` (output only) are skipped.
trait Body: Default {
    const EXPECTING: &'static str;
    /// Takes the value of `key` from `map`.
    fn take<'de, A: MapAccess<'de>>(&mut self, key: String, map: &mut A) -> Result<(), A::Error>;
}

struct BodyVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: Body> Visitor<'de> for BodyVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut body = T::default();
        while let Some(key) = map.next_key::<String>()? {
            if key == OUTPUT_ONLY {
                map.next_value::<IgnoredAny>()?;
            } else {
                body.take(key, &mut map)?;
            }
        }
        Ok(body)
    }
}

fn read_body<'de, T: Body, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(BodyVisitor(std::marker::PhantomData))
}

impl<'de> Deserialize<'de> for NewConsentConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_body(d)
    }
}

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

impl Body for ConsentConfigPatch {
    const EXPECTING: &'static str = "a JSON object (a JSON merge patch)";

    fn take<'de, A: MapAccess<'de>>(&mut self, key: String, map: &mut A) -> Result<(), A::Error> {
        if key == "status" {
            self.status = Some(map.next_value::<StatusChange>()?.0);
        } else if READ_ONLY.contains(&key.as_str()) {
            self.echoed.insert(key, map.next_value()?);
        } else {
            self.changes.insert(key, map.next_value()?);
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for ConsentConfigPatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        read_body(d)
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
    fn a_new_config_naming_a_server_set_field_is_refused_naming_it() {
        for field in READ_ONLY.iter().chain(&["status"]) {
            match crate::json::from_value::<NewConsentConfig>(json!({"display_name": "x", *field: null}), "") {
                Err(Error::Validation { field: f, message }) => {
                    assert_eq!(f.as_deref(), Some(*field));
                    assert!(message.starts_with("is set by the server"), "{message}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        let new: NewConsentConfig =
            crate::json::from_value(json!({"display_name": " Shop ", "warnings": []}), "").unwrap();
        assert_eq!(new, NewConsentConfig(json!({"display_name": " Shop "}).as_object().unwrap().clone()));
        let bad: NewConsentConfig =
            crate::json::from_value(json!({"display_name": "x", "banner": {"x": 1}}), "").unwrap();
        assert!(matches!(bad.spec(), Err(Error::Validation { field: Some(f), .. }) if f == "banner.x"));
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
