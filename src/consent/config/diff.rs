//! Field-by-field differences between two configs as JSON (two published revisions' snapshots,
//! or the working copy and the last published revision), for people to read: one line per leaf
//! field that differs, by its dotted path (`texts.en.title`), with the value before and after.
//! Lists are compared whole (`consent_required_regions`); `null` counts as absent.

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The field, as the API names it in errors: `banner.primary_color`.
    pub path: String,
    /// `None`: the field was not set before (added).
    pub before: Option<String>,
    /// `None`: the field is not set after (removed).
    pub after: Option<String>,
}

/// Every leaf field that differs between `before` and `after`, ordered by path.
pub fn diff(before: &Value, after: &Value) -> Vec<Change> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn walk(path: &str, before: &Value, after: &Value, out: &mut Vec<Change>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                walk(&p, a.get(k).unwrap_or(&Value::Null), b.get(k).unwrap_or(&Value::Null), out);
            }
        }
        // An object on one side only: each of its fields was added or removed.
        (Value::Object(_), Value::Null) => walk(path, before, &Value::Object(Default::default()), out),
        (Value::Null, Value::Object(_)) => walk(path, &Value::Object(Default::default()), after, out),
        (a, b) if a == b => {}
        (a, b) => out.push(Change { path: path.to_string(), before: shown(a), after: shown(b) }),
    }
}

/// A value as a person reads it: strings as they are, lists joined with ", ", `null` as absent.
fn shown(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => Some(items.iter().map(|i| shown(i).unwrap_or_default()).collect::<Vec<_>>().join(", ")),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn c(path: &str, before: Option<&str>, after: Option<&str>) -> Change {
        Change { path: path.into(), before: before.map(Into::into), after: after.map(Into::into) }
    }

    #[test]
    fn leaf_fields_that_differ_by_path() {
        let before = json!({
            "display_name": "Shop",
            "banner": {"primary_color": "#1a73e8", "show_reject_all": true},
            "texts": {"en": {"title": "Cookies", "body": "We use cookies."}},
            "consent_required_regions": ["SE", "DE"],
            "privacy_policy_url": null,
            "consent_expiry_days": 180
        });
        let after = json!({
            "display_name": "Shop",
            "banner": {"primary_color": "#0b57d0", "show_reject_all": false},
            "texts": {"en": {"title": "Your privacy", "body": "We use cookies."}, "sv": {"title": "Kakor"}},
            "consent_required_regions": ["SE"],
            "privacy_policy_url": "https://shop.example/privacy",
            "consent_expiry_days": 180
        });
        assert_eq!(
            diff(&before, &after),
            vec![
                c("banner.primary_color", Some("#1a73e8"), Some("#0b57d0")),
                c("banner.show_reject_all", Some("true"), Some("false")),
                c("consent_required_regions", Some("SE, DE"), Some("SE")),
                c("privacy_policy_url", None, Some("https://shop.example/privacy")),
                c("texts.en.title", Some("Cookies"), Some("Your privacy")),
                c("texts.sv.title", None, Some("Kakor")),
            ]
        );
        assert_eq!(diff(&after, &after), vec![]);
        // Backwards, additions are removals.
        assert!(diff(&after, &before).contains(&c("texts.sv.title", Some("Kakor"), None)));
    }

    #[test]
    fn the_first_revision_is_all_additions() {
        let d = diff(&Value::Null, &json!({"display_name": "Shop", "texts": {"en": {"title": "Cookies"}}}));
        assert_eq!(d, vec![c("display_name", None, Some("Shop")), c("texts.en.title", None, Some("Cookies"))]);
    }
}
