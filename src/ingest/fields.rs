//! The values an event is made of, each a type whose only constructor checks it (parse, don't
//! validate): once an [`super::event::EventInput`] is deserialised, every field in it is valid on
//! its own, and a failure names the field (`batch[3].page_url`) with the rule it broke. Rules that
//! need more than one field, the clock or the sender live in [`super::event::validate`].

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, de::Error as _};
use serde_json::{Map, Number, Value};
use utoipa::ToSchema;

/// Serialised `event_properties` at most (bytes).
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;
/// Event names and property names at most (characters).
pub const MAX_NAME_CHARS: usize = 120;
/// `page_url` and `referrer` at most (bytes): Plausible refuses longer URLs outright.
pub const MAX_URL_BYTES: usize = 2_000;
const MAX_ID_CHARS: usize = 200;
const MAX_TITLE_CHARS: usize = 1_000;
const MAX_AGENT_CHARS: usize = 1_000;
/// Idempotency keys the gateway derives itself start with this; clients may not use it.
pub const DERIVED_PREFIX: &str = "auto:";

/// A string newtype whose only constructor, `parse`, runs `$check` (which returns the value to
/// keep, or the rule broken); deserialised through it and documented as a string.
macro_rules! text_field {
    ($(#[$doc:meta])* $t:ident, $example:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(try_from = "String", into = "String")]
        #[schema(value_type = String, example = $example)]
        pub struct $t(String);

        parsed_string!($t, newtype);

        impl $t {
            pub fn parse(s: &str) -> Result<Self, String> {
                let check: fn(&str) -> Result<String, String> = $check;
                check(s).map($t)
            }
        }
    };
}

text_field!(
    /// What happened (`pageview`, `signup`): trimmed, 1–120 characters, no control characters.
    EventName, "pageview",
    |s| checked(s.trim(), 1, MAX_NAME_CHARS)
);

text_field!(
    /// An absolute `http(s)` URL of at most 2,000 bytes: the page an event happened on, or the
    /// page that linked to it.
    PageUrl, "https://example.com/pricing",
    |s| {
        if s.len() > MAX_URL_BYTES {
            return Err(format!("must be at most {MAX_URL_BYTES} bytes long"));
        }
        match url::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(s.to_string()),
            _ => Err("must be an absolute http(s) URL".into()),
        }
    }
);

/// A `referrer` may be empty (a direct visit): that is no referrer, not an invalid one.
pub fn referrer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PageUrl>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => PageUrl::parse(&s).map(Some).map_err(D::Error::custom),
    }
}

text_field!(
    /// An identifier a client chose (user, session, consent-lookup id): 1–200 characters, no
    /// control characters. A UUID is kept lower-case, as a visitor id is
    /// (`consent::records::VisitorId`): in either case it is one visitor to the consent lookup,
    /// the erasure and the export, which compare ids exactly.
    ClientId, "3f2c9a",
    |s| checked(s, 1, MAX_ID_CHARS).map(|s| crate::consent::records::lower_case_uuid(&s).unwrap_or(s))
);

text_field!(
    /// A client's idempotency key: like a [`ClientId`], but not in the gateway's own `auto:`
    /// namespace.
    IdempotencyKey, "order-1042",
    |s| match s.starts_with(DERIVED_PREFIX) {
        true => Err(format!("keys starting with {DERIVED_PREFIX} are reserved")),
        false => checked(s, 1, MAX_ID_CHARS),
    }
);

impl IdempotencyKey {
    /// The gateway's own key for an event that came without one.
    pub fn derived(hash: &str) -> Self {
        IdempotencyKey(format!("{DERIVED_PREFIX}{hash}"))
    }
}

text_field!(
    /// The page title: at most 1,000 characters, no control characters.
    Title, "Pricing",
    |s| checked(s, 0, MAX_TITLE_CHARS)
);

text_field!(
    /// A user agent a server reports for its visitor: at most 1,000 characters.
    UserAgent, "Mozilla/5.0 (X11; Linux x86_64)",
    |s| checked(s, 0, MAX_AGENT_CHARS)
);

text_field!(
    /// The screen size, `WIDTHxHEIGHT` (`1920x1080`).
    Screen, "1920x1080",
    |s| {
        let ok = s.split_once('x').is_some_and(|(w, h)| {
            [w, h].iter().all(|d| (1..=5).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
        });
        if ok { Ok(s.to_string()) } else { Err("must be WIDTHxHEIGHT, e.g. 1920x1080".into()) }
    }
);

text_field!(
    /// An ISO 4217 currency code, stored upper-case (`EUR`).
    Currency, "EUR",
    |s| {
        let c = s.trim().to_ascii_uppercase();
        match c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
            true => Ok(c),
            false => Err("must be an ISO 4217 code such as EUR".into()),
        }
    }
);

/// A client's `occurred_at`: an RFC 3339 timestamp. How old it may be is checked against the
/// time of receipt, in `validate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(try_from = "String")]
#[schema(value_type = String, format = DateTime)]
pub struct ClientTime(pub DateTime<Utc>);

impl TryFrom<String> for ClientTime {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| ClientTime(t.with_timezone(&Utc)))
            .map_err(|_| "must be an RFC 3339 timestamp".into())
    }
}

/// The visitor's address as a server reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(try_from = "String")]
#[schema(value_type = String, example = "203.0.113.9")]
pub struct VisitorIp(pub IpAddr);

impl TryFrom<String> for VisitorIp {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.trim().parse().map(VisitorIp).map_err(|_| "must be an IPv4 or IPv6 address".into())
    }
}

/// Free-form event properties: names of 1–120 characters, at most 16 KiB as JSON.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
#[schema(value_type = Object)]
pub struct Properties(Map<String, Value>);

impl TryFrom<Map<String, Value>> for Properties {
    type Error = String;
    fn try_from(m: Map<String, Value>) -> Result<Self, String> {
        if m.keys().any(|k| k.is_empty() || k.chars().count() > MAX_NAME_CHARS) {
            return Err(format!("property names must be 1 to {MAX_NAME_CHARS} characters long"));
        }
        let size = serde_json::to_vec(&m).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_PROPERTIES_BYTES {
            return Err(format!("must be at most {MAX_PROPERTIES_BYTES} bytes as JSON"));
        }
        Ok(Properties(m))
    }
}

impl From<Properties> for Map<String, Value> {
    fn from(p: Properties) -> Self {
        p.0
    }
}

/// A purchase's value. `amount` may be posted as a number or a decimal string (`"12.50"`); it is
/// stored as a number. An object only: derived, serde would also read it from an array of its
/// fields in order (`[5, "EUR"]`).
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Revenue {
    #[schema(value_type = f64, example = 12.5)]
    pub amount: Amount,
    pub currency: Currency,
}

impl<'de> Deserialize<'de> for Revenue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            amount: Amount,
            currency: Currency,
        }
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object with amount and currency")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Fields, A::Error> {
                Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        let Fields { amount, currency } = d.deserialize_map(Object)?;
        Ok(Revenue { amount, currency })
    }
}

/// A finite number.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Amount(Number);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let amount = match Value::deserialize(d)? {
            Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Some(n),
            Value::String(s) => decimal(&s),
            _ => None,
        };
        amount.map(Amount).ok_or_else(|| D::Error::custom("must be a number"))
    }
}

/// `s`, when it has `min`–`max` characters and no control characters.
fn checked(s: &str, min: usize, max: usize) -> Result<String, String> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(if min == 0 {
            format!("must be at most {max} characters long")
        } else {
            format!("must be {min} to {max} characters long")
        });
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(s.to_string())
}

fn decimal(s: &str) -> Option<Number> {
    let s = s.trim();
    let ok = !s.is_empty()
        && s.trim_start_matches('-')
            .split_once('.')
            .map_or(s.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()), |(i, f)| {
                !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) && f.bytes().all(|b| b.is_ascii_digit())
            });
    if !ok {
        return None;
    }
    serde_json::from_str::<Number>(s).ok().or_else(|| s.parse::<f64>().ok().and_then(Number::from_f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_refuse_what_providers_refuse() {
        assert_eq!(EventName::parse("  signup ").unwrap().as_str(), "signup");
        for bad in ["", "   ", &"x".repeat(121), "a\nb"] {
            assert!(EventName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(PageUrl::parse("https://e.com/a?b=1").is_ok());
        for bad in ["/relative", "ftp://e.com/", "nope", &format!("https://e.com/{}", "a".repeat(2000))] {
            assert!(PageUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(IdempotencyKey::parse("auto:x").is_err());
        assert!(Screen::parse("1920x1080").is_ok() && Screen::parse("big").is_err());
        assert_eq!(Currency::parse(" eur").unwrap().as_str(), "EUR");
        assert!(Currency::parse("euro").is_err());
    }

    #[test]
    fn a_uuid_client_id_is_kept_lower_case_and_any_other_id_as_posted() {
        let id = |s: &str| ClientId::parse(s).unwrap().as_str().to_string();
        assert_eq!(id("3F2504E0-4F89-41D3-9A0C-0305E82C3301"), "3f2504e0-4f89-41d3-9a0c-0305e82c3301");
        for kept in ["User-42", "3F2504E04F8941D39A0C0305E82C3301", "{3F2504E0-4F89-41D3-9A0C-0305E82C3301}"] {
            assert_eq!(id(kept), kept);
        }
    }

    #[test]
    fn amounts_are_numbers_or_decimal_strings() {
        let amount = |v: Value| serde_json::from_value::<Amount>(v).ok().map(|a| a.0.as_f64());
        assert_eq!(amount(serde_json::json!("12.50")), Some(Some(12.5)));
        assert_eq!(amount(serde_json::json!(3)), Some(Some(3.0)));
        for bad in
            [serde_json::json!("a lot"), serde_json::json!("1e5"), serde_json::json!(null), serde_json::json!([])]
        {
            assert_eq!(amount(bad.clone()), None, "{bad}");
        }
    }
}
