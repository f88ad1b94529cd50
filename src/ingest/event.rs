//! One posted event: its wire shape, its limits, and the validated event the rest of the pipeline
//! works with. Every violation names its field.

use std::net::IpAddr;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::keys::KeyKind;
use crate::{
    crypto,
    error::{Error, Result},
    json,
};

/// Serialised `event_properties` at most (bytes).
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;
/// Event names and property names at most (characters).
pub const MAX_NAME_CHARS: usize = 120;
/// `page_url` and `referrer` at most (bytes): Plausible refuses longer URLs outright.
pub const MAX_URL_BYTES: usize = 2_000;
const MAX_ID_CHARS: usize = 200;
const MAX_TITLE_CHARS: usize = 1_000;
const MAX_AGENT_CHARS: usize = 1_000;
const MAX_LANGUAGE_CHARS: usize = 35;
/// How old a client's `occurred_at` may be: providers that accept a time (GA4) refuse older ones.
pub const MAX_AGE: Duration = Duration::hours(72);
/// How far ahead a client's clock may be.
pub const MAX_SKEW: Duration = Duration::minutes(5);
/// Idempotency keys the gateway derives itself start with this; clients may not use it.
const DERIVED_PREFIX: &str = "auto:";

/// An event as posted (the seed's AnalyticsEvent). The fields a server may add about its visitor
/// (`user_agent`, `ip`, `dnt`, `gpc`, `country`) are refused from public (browser) keys: a
/// browser's own request headers say that, and letting a page override them would let it dodge
/// the bot and DNT/GPC rules.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    pub event_name: String,
    #[serde(default)]
    pub event_properties: Option<Map<String, Value>>,
    pub user_id: Option<String>,
    /// The visitor id (the banner's `cg_vid`), which consent records are kept under.
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    pub page_url: Option<String>,
    pub referrer: Option<String>,
    pub title: Option<String>,
    pub language: Option<String>,
    /// `1920x1080`.
    pub screen: Option<String>,
    pub revenue: Option<RevenueInput>,
    /// RFC 3339; at most 72 hours old and 5 minutes ahead. Default: the time of receipt.
    pub occurred_at: Option<String>,
    pub idempotency_key: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub dnt: Option<bool>,
    pub gpc: Option<bool>,
    pub country: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueInput {
    /// A number, or a decimal string (`"12.50"`).
    pub amount: Value,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
}

/// What the request says about the visitor, before the body is read: for a public key the
/// browser's own headers, for a secret key nothing (the body says it).
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub kind: Option<KeyKind>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub dnt: bool,
    pub gpc: bool,
    pub country: Option<String>,
    pub region: Option<String>,
}

/// A valid event, ready to be enriched and stored.
#[derive(Clone, Debug)]
pub struct ValidEvent {
    pub event_name: String,
    pub properties: Map<String, Value>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    pub page_url: String,
    pub referrer: Option<String>,
    pub title: Option<String>,
    pub language: Option<String>,
    pub screen: Option<String>,
    pub revenue: Option<Value>,
    pub occurred_at: DateTime<Utc>,
    /// The client's key, or one derived from (session or visitor, name, client time).
    pub idempotency_key: Option<String>,
    /// The visitor as far as the event is concerned (headers, or a server's body fields).
    pub user_agent: Option<String>,
    pub ip: Option<IpAddr>,
    pub dnt: bool,
    pub gpc: bool,
    pub country: Option<String>,
    pub region: Option<String>,
}

/// Parses and checks one event; `prefix` names its place in a batch (`batch[2]`).
/// `target`: the provider of a per-provider endpoint (`None`: every provider). It is part of a
/// derived idempotency key, so the same event posted to two providers' endpoints is two events.
pub fn validate(
    raw: Value,
    caller: &Caller,
    prefix: &str,
    target: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ValidEvent> {
    let input: EventInput = json::from_value(raw, prefix)?;
    let field = |name: &str| json::join(prefix, name).unwrap_or_default();
    let invalid = |name: &str, message: String| Error::Validation { field: Some(field(name)), message };

    let event_name = input.event_name.trim().to_string();
    check_text(&event_name, 1, MAX_NAME_CHARS).map_err(|m| invalid("event_name", m))?;

    let properties = input.event_properties.unwrap_or_default();
    for key in properties.keys() {
        if key.is_empty() || key.chars().count() > MAX_NAME_CHARS {
            return Err(invalid(
                "event_properties",
                format!("property names must be 1 to {MAX_NAME_CHARS} characters long"),
            ));
        }
    }
    let size = serde_json::to_vec(&properties).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_PROPERTIES_BYTES {
        return Err(invalid("event_properties", format!("must be at most {MAX_PROPERTIES_BYTES} bytes as JSON")));
    }

    let opt_id = |name: &str, v: Option<String>| -> Result<Option<String>> {
        match v {
            None => Ok(None),
            Some(s) => {
                check_text(&s, 1, MAX_ID_CHARS).map_err(|m| invalid(name, m))?;
                Ok(Some(s))
            }
        }
    };
    let user_id = opt_id("user_id", input.user_id)?;
    let anonymous_id = opt_id("anonymous_id", input.anonymous_id)?;
    let session_id = opt_id("session_id", input.session_id)?;

    let page_url = input.page_url.ok_or_else(|| invalid("page_url", "is required".into()))?;
    check_url(&page_url).map_err(|m| invalid("page_url", m))?;
    let referrer = match input.referrer.filter(|r| !r.is_empty()) {
        None => None,
        Some(r) => {
            check_url(&r).map_err(|m| invalid("referrer", m))?;
            Some(r)
        }
    };
    let title = match input.title {
        None => None,
        Some(t) => {
            check_text(&t, 0, MAX_TITLE_CHARS).map_err(|m| invalid("title", m))?;
            Some(t)
        }
    };
    let language = match input.language {
        None => None,
        Some(l) => {
            let ok = !l.is_empty()
                && l.chars().count() <= MAX_LANGUAGE_CHARS
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(invalid("language", "must be a language tag such as en or sv-SE".into()));
            }
            Some(l)
        }
    };
    let screen = match input.screen {
        None => None,
        Some(s) => {
            let ok = s.split_once('x').is_some_and(|(w, h)| {
                [w, h].iter().all(|d| (1..=5).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
            });
            if !ok {
                return Err(invalid("screen", "must be WIDTHxHEIGHT, e.g. 1920x1080".into()));
            }
            Some(s)
        }
    };
    let revenue = match input.revenue {
        None => None,
        Some(r) => {
            let amount = match &r.amount {
                Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => n.clone(),
                Value::String(s) => decimal(s).ok_or_else(|| invalid("revenue.amount", "must be a number".into()))?,
                _ => return Err(invalid("revenue.amount", "must be a number".into())),
            };
            let currency = r.currency.trim().to_ascii_uppercase();
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(invalid("revenue.currency", "must be an ISO 4217 code such as EUR".into()));
            }
            Some(serde_json::json!({"amount": amount, "currency": currency}))
        }
    };
    let client_time = match input.occurred_at {
        None => None,
        Some(s) => {
            let t = DateTime::parse_from_rfc3339(&s)
                .map_err(|_| invalid("occurred_at", "must be an RFC 3339 timestamp".into()))?
                .with_timezone(&Utc);
            if t < now - MAX_AGE {
                return Err(invalid("occurred_at", "must be at most 72 hours old".into()));
            }
            if t > now + MAX_SKEW {
                return Err(invalid("occurred_at", "must not be more than 5 minutes in the future".into()));
            }
            Some(t)
        }
    };
    let occurred_at = client_time.unwrap_or(now);

    let idempotency_key = match input.idempotency_key {
        Some(k) => {
            check_text(&k, 1, MAX_ID_CHARS).map_err(|m| invalid("idempotency_key", m))?;
            if k.starts_with(DERIVED_PREFIX) {
                return Err(invalid("idempotency_key", format!("keys starting with {DERIVED_PREFIX} are reserved")));
            }
            Some(k)
        }
        // The seed's natural key: the same event of the same session at the same client time is
        // the same event (a beacon sent twice).
        None => client_time.and_then(|t| {
            let who = session_id
                .as_deref()
                .map(|s| format!("s:{s}"))
                .or(anonymous_id.as_deref().map(|v| format!("v:{v}")))?;
            let stamp = t.to_rfc3339_opts(SecondsFormat::Micros, true);
            let target = target.unwrap_or("*");
            Some(format!("{DERIVED_PREFIX}{}", crypto::sha256_hex(format!("{who}\n{event_name}\n{stamp}\n{target}"))))
        }),
    };

    // Who the visitor is: a browser's headers, or what a server says about its visitor.
    let server = caller.kind == Some(KeyKind::Secret);
    if !server {
        for (name, given) in [
            ("user_agent", input.user_agent.is_some()),
            ("ip", input.ip.is_some()),
            ("dnt", input.dnt.is_some()),
            ("gpc", input.gpc.is_some()),
            ("country", input.country.is_some()),
        ] {
            if given {
                return Err(invalid(
                    name,
                    "only servers (secret keys) may set this; a browser's own request headers are used".into(),
                ));
            }
        }
    }
    let (user_agent, ip, dnt, gpc, country) = if server {
        let ua = match input.user_agent {
            Some(ua) => {
                check_text(&ua, 0, MAX_AGENT_CHARS).map_err(|m| invalid("user_agent", m))?;
                Some(ua).filter(|u| !u.is_empty())
            }
            None => None,
        };
        let ip = match input.ip {
            Some(ip) => {
                Some(ip.trim().parse::<IpAddr>().map_err(|_| invalid("ip", "must be an IPv4 or IPv6 address".into()))?)
            }
            None => None,
        };
        let country = match input.country {
            Some(c) => {
                let c = c.trim().to_ascii_uppercase();
                if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(invalid("country", "must be an ISO 3166-1 alpha-2 code such as SE".into()));
                }
                Some(c)
            }
            None => None,
        };
        (ua, ip, input.dnt.unwrap_or(false), input.gpc.unwrap_or(false), country)
    } else {
        (caller.user_agent.clone(), caller.ip, caller.dnt, caller.gpc, caller.country.clone())
    };

    Ok(ValidEvent {
        event_name,
        properties,
        user_id,
        anonymous_id,
        session_id,
        page_url,
        referrer,
        title,
        language,
        screen,
        revenue,
        occurred_at,
        idempotency_key,
        user_agent,
        ip,
        dnt,
        gpc,
        region: if server { None } else { caller.region.clone() },
        country,
    })
}

/// `min`–`max` characters and no control characters.
fn check_text(s: &str, min: usize, max: usize) -> Result<(), String> {
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
    Ok(())
}

fn check_url(s: &str) -> Result<(), String> {
    if s.len() > MAX_URL_BYTES {
        return Err(format!("must be at most {MAX_URL_BYTES} bytes long"));
    }
    let u = url::Url::parse(s).map_err(|_| "must be an absolute http(s) URL".to_string())?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err("must be an absolute http(s) URL".into());
    }
    Ok(())
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
    use serde_json::json;

    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-26T12:00:00Z".parse().unwrap()
    }

    fn browser() -> Caller {
        Caller { kind: Some(KeyKind::Public), ..Default::default() }
    }

    fn field_of(v: Value, caller: &Caller) -> String {
        match validate(v, caller, "", None, now()) {
            Err(Error::Validation { field, .. }) => field.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    fn ok(extra: Value) -> Value {
        let mut base = json!({"event_name": "pageview", "page_url": "https://example.com/"});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        base
    }

    #[test]
    fn each_violation_names_its_field() {
        let b = browser();
        let cases: &[(Value, &str)] = &[
            (json!({"page_url": "https://e.com/"}), "event_name"),
            (ok(json!({"event_name": ""})), "event_name"),
            (ok(json!({"event_name": "x".repeat(121)})), "event_name"),
            (json!({"event_name": "pageview"}), "page_url"),
            (ok(json!({"page_url": "/relative"})), "page_url"),
            (ok(json!({"page_url": format!("https://e.com/{}", "a".repeat(2000))})), "page_url"),
            (ok(json!({"referrer": "nope"})), "referrer"),
            (ok(json!({"event_properties": {"k": "x".repeat(17 * 1024)}})), "event_properties"),
            (ok(json!({"event_properties": {"k".repeat(121): 1}})), "event_properties"),
            (ok(json!({"event_properties": [1]})), "event_properties"),
            (ok(json!({"screen": "big"})), "screen"),
            (ok(json!({"language": "en US"})), "language"),
            (ok(json!({"revenue": {"amount": "a lot", "currency": "EUR"}})), "revenue.amount"),
            (ok(json!({"revenue": {"amount": 1, "currency": "euro"}})), "revenue.currency"),
            (ok(json!({"occurred_at": "yesterday"})), "occurred_at"),
            (ok(json!({"occurred_at": "2026-11-23T11:59:00Z"})), "occurred_at"),
            (ok(json!({"occurred_at": "2026-11-26T12:06:00Z"})), "occurred_at"),
            (ok(json!({"idempotency_key": "auto:x"})), "idempotency_key"),
            (ok(json!({"colour": "red"})), "colour"),
            (ok(json!({"ip": "1.2.3.4"})), "ip"),
            (ok(json!({"user_agent": "x"})), "user_agent"),
            (ok(json!({"user_id": "a\nb"})), "user_id"),
        ];
        for (body, field) in cases {
            assert_eq!(&field_of(body.clone(), &b), field, "{body}");
        }
        let server = Caller { kind: Some(KeyKind::Secret), ..Default::default() };
        assert_eq!(field_of(ok(json!({"ip": "1.2.3"})), &server), "ip");
        assert_eq!(field_of(ok(json!({"country": "Sweden"})), &server), "country");
    }

    #[test]
    fn batch_items_are_named_by_index() {
        match validate(json!({"page_url": "https://e.com/"}), &browser(), "batch[3]", None, now()) {
            Err(Error::Validation { field, .. }) => assert_eq!(field.as_deref(), Some("batch[3].event_name")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_server_speaks_for_its_visitor() {
        let server =
            Caller { kind: Some(KeyKind::Secret), ip: Some("10.0.0.1".parse().unwrap()), ..Default::default() };
        let e = validate(
            ok(json!({"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 X", "dnt": true, "country": "se"})),
            &server,
            "",
            None,
            now(),
        )
        .unwrap();
        assert_eq!(e.ip.unwrap().to_string(), "203.0.113.9");
        assert_eq!((e.user_agent.as_deref(), e.dnt, e.country.as_deref()), (Some("Mozilla/5.0 X"), true, Some("SE")));
        // Without a body ip, the server's own address is not taken for the visitor's.
        let e = validate(ok(json!({})), &server, "", None, now()).unwrap();
        assert!(e.ip.is_none());
    }

    #[test]
    fn idempotency_keys_are_given_or_derived() {
        let b = browser();
        let e = validate(ok(json!({"idempotency_key": "k1"})), &b, "", None, now()).unwrap();
        assert_eq!(e.idempotency_key.as_deref(), Some("k1"));
        let e = validate(ok(json!({})), &b, "", None, now()).unwrap();
        assert!(e.idempotency_key.is_none(), "no client time: nothing to derive from");
        let with = |extra| validate(ok(extra), &b, "", None, now()).unwrap().idempotency_key;
        let k1 = with(json!({"session_id": "s1", "occurred_at": "2026-11-26T11:00:00Z"}));
        let k2 = with(json!({"session_id": "s1", "occurred_at": "2026-11-26T11:00:00+00:00"}));
        let k3 = with(json!({"session_id": "s2", "occurred_at": "2026-11-26T11:00:00Z"}));
        assert!(k1.as_deref().unwrap().starts_with("auto:"));
        assert_eq!(k1, k2, "the same instant");
        assert_ne!(k1, k3);
    }

    #[test]
    fn revenue_amounts() {
        let e = validate(ok(json!({"revenue": {"amount": "12.50", "currency": "eur"}})), &browser(), "", None, now())
            .unwrap();
        assert_eq!(e.revenue.unwrap(), json!({"amount": 12.5, "currency": "EUR"}));
    }
}
