//! Umami — Collect API (`POST {instance}/api/send`, `{"type": "event", "payload": {…}}`).
//!
//! Facts this mapping relies on (shared/docs/providers-sources.md §2, Umami v3.1.0
//! `src/app/api/send/route.ts`, `src/lib/detect.ts`, `prisma/schema.prisma`):
//! - Umami runs `isbot` on `payload.userAgent ?? User-Agent` and answers `200 {"beep":"boop"}`
//!   for bots, storing nothing; any bare `name/version` agent (our HTTP client's) is a bot. So
//!   the visitor's agent goes both in the header and in `payload.userAgent`, and the visitor's IP
//!   in `payload.ip` (which beats every proxy header, including a CDN's).
//! - zod refuses `name` over 50 characters, `website` that is not a UUID, `hostname` over 100,
//!   `language` over 35, `screen` over 11. Past validation, PostgreSQL column sizes fail with a
//!   500 *after* the event may be stored (a retry duplicates it): distinct `id` 50, UTM values
//!   255, event-data keys and values 500. The mapping stays inside all of them.
//! - A success carries a `cache` token; it is never sent back (it is not bound to a visitor).
//! - `timestamp` (Unix seconds) records the event at the time it happened, so a retried
//!   delivery is not misdated.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    InstanceUrl, OUTBOUND_LINK_CLICK, Outcome, Outgoing, PAGEVIEW, Provider, ProviderRequest, ProviderResponse,
    body_excerpt, classify_failure, page_host, properties_for, revenue_of, truncate_chars,
};
use crate::{
    consent::{Blocked, Identity, Reason},
    secrets::{Credentials, SecretRef, check::AuthCheck},
};
use secrecy::{ExposeSecret, SecretString};

#[derive(Clone, Copy, Debug, Default)]
pub struct Umami;

pub const CLOUD_URL: &str = "https://cloud.umami.is";
/// Umami Cloud's API (API keys), apart from the collect endpoint.
pub const CLOUD_API_URL: &str = "https://api.umami.is/v1";
/// zod: `name: z.string().max(50)`.
pub const MAX_NAME_CHARS: usize = 50;
/// `session.distinct_id VarChar(50)`.
pub const MAX_ID_CHARS: usize = 50;
/// `event_data.data_key` / `string_value VarChar(500)`.
pub const MAX_DATA_CHARS: usize = 500;
/// `website_event.utm_* VarChar(255)` and the click-id columns; parsed by Umami from `url`.
pub const MAX_UTM_CHARS: usize = 255;
/// Umami cuts titles and URLs to 500 itself; titles are cut here too so nothing is lost unseen.
pub const MAX_TITLE_CHARS: usize = 500;
const MAX_HOSTNAME_CHARS: usize = 100;
const MAX_LANGUAGE_CHARS: usize = 35;
const MAX_SCREEN_CHARS: usize = 11;
/// Query parameters Umami stores in 255-character columns.
const UTM_PARAMS: &[&str] = &[
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "gclid",
    "fbclid",
    "msclkid",
    "ttclid",
    "li_fat_id",
    "twclid",
];

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UmamiSettings {
    /// The website's UUID in Umami; sent as `payload.website`.
    pub website_id: Uuid,
    /// `https://cloud.umami.is` (the default) or a self-hosted base URL.
    #[serde(default = "cloud_url")]
    pub instance_url: InstanceUrl,
    /// The website's public share link, for admins' convenience (not used to send).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_url: Option<InstanceUrl>,
    /// Forward events other than page views and outbound link clicks (default true).
    #[serde(default = "yes")]
    pub enable_custom_events: bool,
    /// Forward `outbound-link-click` events (default true).
    #[serde(default = "yes")]
    pub track_outbound_links: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UmamiCredentials {
    /// Umami Cloud API key (reports API; not needed to send events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_ref: Option<SecretRef>,
    /// Self-hosted login, for the reports API (not needed to send events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_ref: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_ref: Option<SecretRef>,
}

fn cloud_url() -> InstanceUrl {
    InstanceUrl::parse(CLOUD_URL).expect("the cloud URL is valid")
}

fn yes() -> bool {
    true
}

/// Why Umami would refuse this event name, if it would. Names over 50 characters are refused by
/// zod (400, not truncated). Names starting with `=`, `+`, `-`, `@`, tab or CR are refused by the
/// spreadsheet-formula guard providers.md describes for recent versions (not in v3.1.0's source,
/// but such a name is also a CSV-injection hazard in Umami's exports, so it is never sent).
pub fn name_problem(name: &str) -> Option<Blocked> {
    if name.chars().count() > MAX_NAME_CHARS {
        return Some(Blocked::EventNameTooLong);
    }
    if name.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        return Some(Blocked::EventNameUnsafePrefix);
    }
    None
}

impl Provider for Umami {
    type Settings = UmamiSettings;
    type Credentials = UmamiCredentials;
    const NAME: &'static str = "umami";

    fn accepts(s: &UmamiSettings, event: &entity::analytics_event::Model) -> Result<(), Blocked> {
        match event.event_name.as_str() {
            PAGEVIEW => Ok(()),
            OUTBOUND_LINK_CLICK if !s.track_outbound_links => Err(Blocked::OutboundLinksDisabled),
            OUTBOUND_LINK_CLICK => Ok(()),
            _ if !s.enable_custom_events => Err(Blocked::CustomEventsDisabled),
            name => name_problem(name).map_or(Ok(()), Err),
        }
    }

    fn build(s: &UmamiSettings, out: &Outgoing<'_>) -> Result<ProviderRequest, String> {
        let event = out.event;
        let mut adjustments = Vec::new();
        let mut payload = Map::new();
        payload.insert("website".into(), json!(s.website_id));
        if let Some(host) = page_host(event).filter(|h| h.chars().count() <= MAX_HOSTNAME_CHARS) {
            payload.insert("hostname".into(), json!(host));
        }
        if let Some(url) = event.page_url.as_deref() {
            payload.insert("url".into(), json!(fit_utm(url, &mut adjustments)));
        }
        if let Some(r) = event.referrer.as_deref().filter(|r| !r.is_empty()) {
            payload.insert("referrer".into(), json!(r));
        }
        if let Some(t) = event.title.as_deref().filter(|t| !t.is_empty()) {
            let cut = truncate_chars(t, MAX_TITLE_CHARS);
            if cut.len() < t.len() {
                adjustments.push(format!("title cut to {MAX_TITLE_CHARS} characters"));
            }
            payload.insert("title".into(), json!(cut));
        }
        if let Some(l) = event.language.as_deref().filter(|l| l.chars().count() <= MAX_LANGUAGE_CHARS) {
            payload.insert("language".into(), json!(l));
        }
        if let Some(sc) = event.screen.as_deref().filter(|sc| sc.chars().count() <= MAX_SCREEN_CHARS) {
            payload.insert("screen".into(), json!(sc));
        }
        if event.event_name != PAGEVIEW {
            if let Some(p) = name_problem(&event.event_name) {
                return Err(format!("Umami would refuse the event name ({})", Reason::Blocked(p)));
            }
            payload.insert("name".into(), json!(event.event_name));
            // Umami: "event data cannot be sent without an event name" — page views carry none.
            let (props, removed) = properties_for(event, out.identity);
            if !removed.is_empty() {
                adjustments.push(format!("identifier properties left out (anonymous): {}", removed.join(", ")));
            }
            let mut data = Map::new();
            flatten_data("", Value::Object(props), &mut data, &mut adjustments);
            if let Some(rev) = revenue_of(event) {
                data.insert("revenue".into(), Value::Number(rev.amount));
                data.insert("currency".into(), json!(rev.currency));
            }
            if !data.is_empty() {
                payload.insert("data".into(), Value::Object(data));
            }
        }
        if out.identity == Identity::Full
            && let Some(id) = event.user_id.as_deref().or(event.anonymous_id.as_deref()).filter(|i| !i.is_empty())
        {
            payload.insert("id".into(), json!(distinct_id(id)));
        }
        if let Some(ua) = event.user_agent.as_deref().filter(|u| !u.is_empty()) {
            payload.insert("userAgent".into(), json!(ua));
        }
        if let Some(ip) = out.client_ip {
            payload.insert("ip".into(), json!(ip.to_string()));
        }
        payload.insert("timestamp".into(), json!(event.occurred_at.timestamp()));

        let mut headers = vec![("content-type", "application/json".to_string())];
        if let Some(ua) = event.user_agent.as_deref().filter(|u| !u.is_empty()) {
            headers.push(("user-agent", ua.to_string()));
        }
        Ok(ProviderRequest {
            url: s.instance_url.join("/api/send"),
            headers,
            body: json!({"type": "event", "payload": payload}),
            adjustments,
        })
    }

    /// Umami Cloud's API key: `GET /v1/me` on api.umami.is (a self-hosted instance: `/api/me`).
    /// A self-hosted login: `POST /api/auth/login`, which only proves the pair and changes nothing.
    fn auth_checks(s: &UmamiSettings, credentials: &Credentials) -> Vec<AuthCheck> {
        let mut checks = Vec::new();
        if let Some(key) = credentials.get("api_key_ref") {
            let url = if s.instance_url == cloud_url() {
                format!("{CLOUD_API_URL}/me")
            } else {
                s.instance_url.join("/api/me")
            };
            checks.push(AuthCheck {
                what: "Umami API",
                proves: vec!["api_key_ref"],
                method: reqwest::Method::GET,
                url,
                headers: vec![("x-umami-api-key", key.clone())],
                json_body: None,
            });
        }
        if let (Some(user), Some(password)) = (credentials.get("username_ref"), credentials.get("password_ref")) {
            let body = json!({"username": user.expose_secret(), "password": password.expose_secret()});
            checks.push(AuthCheck {
                what: "Umami login",
                proves: vec!["username_ref", "password_ref"],
                method: reqwest::Method::POST,
                url: s.instance_url.join("/api/auth/login"),
                headers: Vec::new(),
                json_body: Some(SecretString::from(body.to_string())),
            });
        }
        checks
    }

    fn classify(r: &ProviderResponse<'_>) -> Outcome {
        if (200..300).contains(&r.status) {
            let body: Value = serde_json::from_slice(r.body).unwrap_or(Value::Null);
            if body.get("beep").is_some() {
                return Outcome::Dropped {
                    warning: "Umami answered {\"beep\":\"boop\"}: it took the request for a bot and stored nothing"
                        .into(),
                };
            }
            // Umami's collect API answers `{"cache", "sessionId", "visitId"}`. Any other success
            // (a proxy's or a landing page's 200 at a wrong instance_url) stored nothing we know of.
            if body.get("sessionId").is_none() && body.get("cache").is_none() {
                return Outcome::Dropped {
                    warning: format!(
                        "the answer is not Umami's collect API answer (no sessionId); check the config's instance_url: {}",
                        body_excerpt(r.body)
                    ),
                };
            }
            return Outcome::Delivered;
        }
        if r.status == 403 {
            // Umami's collect endpoint has no authentication; its 403 means the visitor's IP is
            // in the instance's IGNORE_IP list — a deliberate discard of this visitor, not a
            // broken config, so it must not stop the config's other deliveries.
            return Outcome::Dropped {
                warning: format!("Umami refused the visitor's IP (403, IGNORE_IP): {}", body_excerpt(r.body)),
            };
        }
        classify_failure("Umami", r.status, r.body)
    }
}

/// A distinct id that fits Umami's 50-character column: short ids as they are, longer ones as a
/// stable digest (cutting them could make two visitors one).
fn distinct_id(id: &str) -> String {
    if id.chars().count() <= MAX_ID_CHARS {
        return id.to_string();
    }
    let digest = Sha256::digest(id.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..40])
}

/// The page URL with UTM and click-id values cut to 255 characters (Umami parses them from the URL
/// into 255-character columns and answers 500 for longer ones). Other URLs are left as they are.
fn fit_utm(url: &str, adjustments: &mut Vec<String>) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else { return url.to_string() };
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let too_long = |k: &str, v: &str| UTM_PARAMS.contains(&k) && v.chars().count() > MAX_UTM_CHARS;
    if !pairs.iter().any(|(k, v)| too_long(k, v)) {
        return url.to_string();
    }
    let mut cut = Vec::new();
    {
        let mut q = parsed.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            if too_long(k, v) {
                cut.push(k.clone());
                q.append_pair(k, &truncate_chars(v, MAX_UTM_CHARS));
            } else {
                q.append_pair(k, v);
            }
        }
    }
    adjustments.push(format!("URL parameters cut to {MAX_UTM_CHARS} characters: {}", cut.join(", ")));
    parsed.to_string()
}

/// Event data as Umami stores it: nested objects as dotted keys, arrays as JSON text, keys and
/// text values of at most 500 characters, nulls left out.
fn flatten_data(prefix: &str, value: Value, out: &mut Map<String, Value>, adjustments: &mut Vec<String>) {
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let full = key(&k);
                if full.chars().count() > MAX_DATA_CHARS {
                    adjustments.push(format!("property with a name over {MAX_DATA_CHARS} characters left out"));
                    continue;
                }
                match v {
                    Value::Object(_) => flatten_data(&full, v, out, adjustments),
                    other => put_data(full, other, out, adjustments),
                }
            }
        }
        other if !prefix.is_empty() => put_data(prefix.to_string(), other, out, adjustments),
        _ => {}
    }
}

fn put_data(key: String, value: Value, out: &mut Map<String, Value>, adjustments: &mut Vec<String>) {
    let text = |s: String, out: &mut Map<String, Value>, adjustments: &mut Vec<String>| {
        let cut = truncate_chars(&s, MAX_DATA_CHARS);
        if cut.len() < s.len() {
            adjustments.push(format!("property {key:?} cut to {MAX_DATA_CHARS} characters"));
        }
        out.insert(key.clone(), Value::String(cut.into_owned()));
    };
    match value {
        Value::Null => {}
        Value::String(s) => text(s, out, adjustments),
        Value::Array(_) => text(value.to_string(), out, adjustments),
        v => {
            out.insert(key, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde_json::json;

    use super::*;
    use crate::providers::{
        Headers,
        testing::{BROWSER_UA, event},
    };

    const WEBSITE: &str = "5b4b1a52-2f46-4e4a-9a0c-2b7c5a0a1f11";

    fn settings(v: Value) -> UmamiSettings {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> UmamiSettings {
        settings(json!({"website_id": WEBSITE, "instance_url": "http://127.0.0.1:9/umami"}))
    }

    fn build(s: &UmamiSettings, e: &entity::analytics_event::Model, identity: Identity) -> ProviderRequest {
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        Umami::build(s, &Outgoing { event: e, identity, client_ip: Some(ip), credentials: &Default::default() })
            .unwrap()
    }

    #[test]
    fn settings_defaults_and_refusals() {
        let s = settings(json!({"website_id": WEBSITE}));
        assert_eq!(s.instance_url.join("/api/send"), "https://cloud.umami.is/api/send");
        assert!(s.enable_custom_events && s.track_outbound_links);
        assert!(serde_json::from_value::<UmamiSettings>(json!({"website_id": "abc"})).is_err());
    }

    #[test]
    fn a_pageview_is_a_nameless_event_with_the_visitors_agent_and_ip() {
        let req = build(&base(), &event("pageview"), Identity::Full);
        assert_eq!(req.url, "http://127.0.0.1:9/umami/api/send");
        assert_eq!(req.header("user-agent"), Some(BROWSER_UA));
        assert!(req.header("x-umami-cache").is_none());
        assert_eq!(
            req.body,
            json!({"type": "event", "payload": {
                "website": WEBSITE, "hostname": "www.example.com",
                "url": "https://www.example.com/pricing?utm_source=news",
                "referrer": "https://search.example.org/", "title": "Pricing", "language": "sv-SE",
                "screen": "1920x1080", "userAgent": BROWSER_UA, "ip": "2001:db8::7",
                "timestamp": 1_795_694_400
            }})
        );
    }

    #[test]
    fn custom_events_carry_flattened_data_and_ids_only_with_full_identity() {
        let mut e = event("signup");
        e.user_id = Some("user-42".into());
        e.anonymous_id = Some("visitor-1".into());
        e.event_properties = json!({"plan": "pro", "user_id": "user-42", "cart": {"items": 2, "tags": ["a", "b"]}});
        e.revenue = Some(json!({"amount": 19.99, "currency": "USD"}));
        let full = build(&base(), &e, Identity::Full);
        let p = &full.body["payload"];
        assert_eq!(p["name"], "signup");
        assert_eq!(p["id"], "user-42");
        assert_eq!(
            p["data"],
            json!({"plan": "pro", "user_id": "user-42", "cart.items": 2, "cart.tags": "[\"a\",\"b\"]",
                   "revenue": 19.99, "currency": "USD"})
        );
        let anon = build(&base(), &e, Identity::Anonymous);
        let p = &anon.body["payload"];
        assert!(p.get("id").is_none());
        assert!(p["data"].get("user_id").is_none());
        assert!(!anon.body.to_string().contains("user-42") && !anon.body.to_string().contains("visitor-1"));
    }

    #[test]
    fn anonymous_events_lose_nested_identifiers_too() {
        let mut e = event("signup");
        e.event_properties = json!({"plan": "pro", "customer": {"email": "alice@example.com", "id": "c-42",
                                    "tier": "gold", "contacts": ["bob@example.com", "phone"]}});
        let anon = build(&base(), &e, Identity::Anonymous);
        let body = anon.body.to_string();
        for secret in ["alice@example.com", "c-42", "bob@example.com"] {
            assert!(!body.contains(secret), "{secret} reached Umami: {body}");
        }
        let data = &anon.body["payload"]["data"];
        assert_eq!((data["plan"].as_str(), data["customer.tier"].as_str()), (Some("pro"), Some("gold")));
        let full = build(&base(), &e, Identity::Full);
        assert_eq!(full.body["payload"]["data"]["customer.email"], "alice@example.com");
    }

    #[test]
    fn values_are_kept_inside_umamis_database_limits() {
        let mut e = event("signup");
        e.user_id = Some("u".repeat(80));
        e.page_url = Some(format!("https://www.example.com/?utm_campaign={}&q={}", "c".repeat(300), "x".repeat(300)));
        e.event_properties = json!({"long": "é".repeat(600), "k".repeat(501): 1});
        e.title = Some("t".repeat(700));
        let req = build(&base(), &e, Identity::Full);
        let p = &req.body["payload"];
        assert!(p["id"].as_str().unwrap().chars().count() <= MAX_ID_CHARS);
        assert_eq!(p["id"], build(&base(), &e, Identity::Full).body["payload"]["id"], "stable");
        let url = url::Url::parse(p["url"].as_str().unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["utm_campaign"].len(), MAX_UTM_CHARS);
        assert_eq!(q["q"].len(), 300, "non-UTM parameters are left alone");
        assert_eq!(p["data"]["long"].as_str().unwrap().chars().count(), MAX_DATA_CHARS);
        assert_eq!(p["data"].as_object().unwrap().len(), 1);
        assert_eq!(p["title"].as_str().unwrap().len(), MAX_TITLE_CHARS);
        assert_eq!(req.adjustments.len(), 4, "{:?}", req.adjustments);
    }

    #[test]
    fn which_events_a_config_accepts() {
        let s = base();
        assert_eq!(Umami::accepts(&s, &event("signup")), Ok(()));
        assert_eq!(Umami::accepts(&s, &event(&"n".repeat(51))), Err(Blocked::EventNameTooLong));
        assert_eq!(Umami::accepts(&s, &event(&"n".repeat(50))), Ok(()));
        for bad in ["=cmd", "+1", "-x", "@a", "\tx", "\rx"] {
            assert_eq!(Umami::accepts(&s, &event(bad)), Err(Blocked::EventNameUnsafePrefix), "{bad:?}");
        }
        let off =
            settings(json!({"website_id": WEBSITE, "enable_custom_events": false, "track_outbound_links": false}));
        assert_eq!(Umami::accepts(&off, &event("signup")), Err(Blocked::CustomEventsDisabled));
        assert_eq!(Umami::accepts(&off, &event(OUTBOUND_LINK_CLICK)), Err(Blocked::OutboundLinksDisabled));
        assert_eq!(Umami::accepts(&off, &event("pageview")), Ok(()));
    }

    #[test]
    fn answers() {
        let h = Headers::default();
        let r = |status, body: &[u8]| Umami::classify(&ProviderResponse { status, headers: &h, body });
        assert_eq!(r(200, br#"{"cache":"x","sessionId":"s","visitId":"v"}"#), Outcome::Delivered);
        assert!(matches!(r(200, br#"{"beep":"boop"}"#), Outcome::Dropped { .. }));
        // A 200 that is not Umami's answer (a wrong instance_url behind a proxy) is no delivery.
        assert!(matches!(r(200, b"<html>Welcome</html>"), Outcome::Dropped { .. }));
        assert!(matches!(r(400, br#"{"error":{"message":"Website not found."}}"#), Outcome::Dead { .. }));
        assert!(matches!(r(403, b""), Outcome::Dropped { .. }));
        assert!(matches!(r(401, b""), Outcome::AuthFailure { .. }));
        assert!(matches!(r(500, b""), Outcome::Retry { .. }));
    }
}
