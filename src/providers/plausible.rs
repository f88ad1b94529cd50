//! Plausible — Events API (`POST {instance}/api/event`).
//!
//! Facts this mapping relies on (shared/docs/providers-sources.md §1, Plausible's
//! `ingestion/request.ex`, `remote_ip.ex`, `external_controller.ex`):
//! - The visitor's `User-Agent` and IP make Plausible's daily visitor hash and its geolocation; the
//!   IP is read `X-Plausible-IP` > `CF-Connecting-IP` > `X-Forwarded-For`, so both are set (a
//!   self-hosted Plausible behind Cloudflare would otherwise see the gateway's IP for everyone).
//! - `name` ≤ 120 and `url` ≤ 2,000 bytes are required; a prop key over 300 bytes or value over
//!   2,000 bytes rejects the whole event (400); props past 30 and non-scalar props are dropped
//!   silently — so the mapping enforces all of it first and records what it changed.
//! - `202` with body `ok` = taken; `202` with `x-plausible-dropped` = discarded (unknown domain,
//!   bot, datacenter IP, rate limit, shield rule) — never counted as delivered; any other 2xx is
//!   not Plausible's answer (a catch-all at a wrong `instance_url`) and is retried.
//! - There is no client timestamp and no idempotency key: a late delivery is recorded late, a
//!   retried request that was accepted counts twice (see `outbox` for the retry choice).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::{
    Answer, DomainPattern, InstanceUrl, Item, OUTBOUND_LINK_CLICK, Outcome, Outgoing, PAGEVIEW, Provider,
    ProviderRequest, ProviderResponse, body_excerpt, classify_failure, is_hostname, page_host, properties_for,
    revenue_of, single, truncate_bytes,
};
use crate::{
    consent::Blocked,
    secrets::{Credentials, SecretRef, check::AuthCheck},
};
use secrecy::{ExposeSecret, SecretString};

#[derive(Clone, Copy, Debug, Default)]
pub struct Plausible;

pub const CLOUD_URL: &str = "https://plausible.io";
/// Plausible's limits (`Plausible.Props`): larger keys or values reject the whole event.
pub const MAX_PROP_KEY_BYTES: usize = 300;
pub const MAX_PROP_VALUE_BYTES: usize = 2_000;
/// Props beyond this count are dropped by Plausible without notice.
pub const MAX_PROPS: usize = 30;
pub const MAX_URL_BYTES: usize = 2_000;
/// The name Plausible's own tracker and dashboard use for outbound link clicks.
pub const OUTBOUND_GOAL: &str = "Outbound Link: Click";

/// A site domain as registered in Plausible (`example.com`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(value_type = String, example = "example.com")]
pub struct SiteDomain(String);

impl<'de> Deserialize<'de> for SiteDomain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?.trim().to_ascii_lowercase();
        if is_hostname(&s) {
            Ok(SiteDomain(s))
        } else {
            Err(serde::de::Error::custom("must be the site's domain as registered in Plausible, e.g. example.com"))
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlausibleSettings {
    /// The site's domain as registered in Plausible; sent as `domain`.
    pub site_id: SiteDomain,
    /// `https://plausible.io` (cloud, the default) or a self-hosted base URL.
    #[serde(default = "cloud_url")]
    pub instance_url: InstanceUrl,
    /// Forward events other than page views (default true).
    #[serde(default = "yes")]
    pub enable_custom_events: bool,
    /// Send `revenue` (counted by Plausible's cloud edition, for revenue goals only; default false).
    #[serde(default)]
    pub enable_revenue_tracking: bool,
    /// Page hosts this config forwards (`example.com`, `*.example.com`). Empty: the `site_id`
    /// domain and its subdomains.
    #[serde(default)]
    pub allowed_domains: Vec<DomainPattern>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlausibleCredentials {
    /// Stats/Sites API key (not needed to send events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_ref: Option<SecretRef>,
}

fn cloud_url() -> InstanceUrl {
    InstanceUrl::parse(CLOUD_URL).expect("the cloud URL is valid")
}

fn yes() -> bool {
    true
}

/// The event name Plausible keeps for its tracker's engagement events.
const RESERVED_NAME: &str = "engagement";

impl PlausibleSettings {
    fn allows_host(&self, host: &str) -> bool {
        if self.allowed_domains.is_empty() {
            let site = &self.site_id.0;
            return host == site || host.strip_suffix(site.as_str()).is_some_and(|p| p.ends_with('.'));
        }
        self.allowed_domains.iter().any(|d| d.matches(host))
    }
}

impl Provider for Plausible {
    type Settings = PlausibleSettings;
    type Credentials = PlausibleCredentials;
    const NAME: &'static str = "plausible";

    fn accepts(s: &PlausibleSettings, event: &entity::analytics_event::Model) -> Result<(), Blocked> {
        if event.event_name != PAGEVIEW && !s.enable_custom_events {
            return Err(Blocked::CustomEventsDisabled);
        }
        // Plausible's tracker's own event: refused (400) without its scroll depth and engaged
        // time, and never a custom event (request.ex; docs/providers.md).
        if event.event_name == RESERVED_NAME {
            return Err(Blocked::EventNameReserved);
        }
        match page_host(event) {
            Some(host) if s.allows_host(&host) => Ok(()),
            _ => Err(Blocked::DomainNotAllowed),
        }
    }

    fn item(s: &PlausibleSettings, out: &Outgoing<'_>) -> Result<Item, String> {
        let event = out.event;
        let url = event.page_url.as_deref().ok_or("the event has no page_url, which Plausible requires")?;
        if url.len() > MAX_URL_BYTES {
            return Err(format!("page_url is over Plausible's {MAX_URL_BYTES}-byte limit"));
        }
        let mut adjustments = Vec::new();
        let (mut props, removed) = properties_for(event, out.identity);
        if !removed.is_empty() {
            adjustments.push(format!("identifier properties left out (anonymous): {}", removed.join(", ")));
        }
        let name = match event.event_name.as_str() {
            OUTBOUND_LINK_CLICK => OUTBOUND_GOAL,
            other => other,
        };
        let props = fit_props(std::mem::take(&mut props), &mut adjustments);
        let mut body = Map::new();
        body.insert("domain".into(), json!(s.site_id.0));
        body.insert("name".into(), json!(name));
        body.insert("url".into(), json!(url));
        if let Some(r) = event.referrer.as_deref().filter(|r| !r.is_empty()) {
            body.insert("referrer".into(), json!(truncate_bytes(r, MAX_URL_BYTES)));
        }
        if !props.is_empty() {
            body.insert("props".into(), Value::Object(props));
        }
        if s.enable_revenue_tracking
            && let Some(rev) = revenue_of(event)
        {
            body.insert("revenue".into(), json!({"currency": rev.currency, "amount": rev.amount}));
        }
        let mut headers = Vec::new();
        if let Some(ua) = out.user_agent.filter(|u| !u.is_empty()) {
            headers.push(("user-agent", ua.to_string()));
        }
        if let Some(ip) = out.client_ip {
            headers.push(("x-forwarded-for", ip.to_string()));
            headers.push(("x-plausible-ip", ip.to_string()));
        }
        Ok(Item { body: Value::Object(body), headers, adjustments })
    }

    /// One event per request (Plausible has no batch endpoint); the visitor's agent and IP travel
    /// as headers.
    fn request(s: &PlausibleSettings, _: &Credentials, items: &[Item]) -> Result<ProviderRequest, String> {
        let item = single("Plausible", items)?;
        let mut headers = vec![("content-type", "application/json".to_string())];
        headers.extend(item.headers.iter().cloned());
        Ok(ProviderRequest { url: s.instance_url.join("/api/event"), headers, body: item.body.clone() })
    }

    /// The Stats API v2 with the API key: one day's visitor count of the config's site, read-only.
    /// A wrong key, or a key without access to the site, is a 401.
    fn checks(s: &PlausibleSettings, credentials: &Credentials) -> Vec<AuthCheck> {
        let Some(key) = credentials.get("api_key_ref") else { return Vec::new() };
        let body = json!({"site_id": s.site_id.0, "metrics": ["visitors"], "date_range": "day"});
        vec![AuthCheck {
            what: "Plausible Stats API",
            proves: vec!["api_key_ref"],
            method: reqwest::Method::POST,
            url: s.instance_url.join("/api/v2/query"),
            headers: vec![("authorization", SecretString::from(format!("Bearer {}", key.expose_secret())))],
            json_body: Some(SecretString::from(body.to_string())),
            read: None,
        }]
    }

    fn classify(r: &ProviderResponse<'_>, _items: usize) -> Answer {
        Answer::All(outcome(r))
    }

    #[cfg(test)]
    fn mapping_cases() -> Vec<super::testing::MappingCase> {
        use super::testing::{BROWSER_UA, MappingCase, event};
        use crate::consent::Identity::{Anonymous, Full};
        let s = json!({"site_id": "example.com", "instance_url": "http://127.0.0.1:9/plausible"});
        let mut signup = event("signup");
        signup.user_id = Some("u-1".into());
        signup.event_properties = json!({"plan": "pro", "user_id": "u-1"});
        vec![
            MappingCase {
                body: vec![
                    ("/domain", json!("example.com")),
                    ("/name", json!("pageview")),
                    ("/url", json!("https://www.example.com/pricing?utm_source=news")),
                    ("/referrer", json!("https://search.example.org/")),
                    ("/props", Value::Null),
                ],
                headers: vec![("user-agent", Some(BROWSER_UA)), ("x-plausible-ip", Some("203.0.113.7"))],
                ..MappingCase::new("a page view", s.clone(), event("pageview"), Full)
            },
            MappingCase {
                body: vec![("/name", json!("signup")), ("/props/plan", json!("pro")), ("/props/user_id", json!("u-1"))],
                ..MappingCase::new("a custom event with full identity", s.clone(), signup.clone(), Full)
            },
            MappingCase {
                body: vec![("/props/plan", json!("pro")), ("/props/user_id", Value::Null)],
                headers: vec![("user-agent", Some(BROWSER_UA))],
                ..MappingCase::new(
                    "a custom event, anonymous: no identifier properties",
                    s.clone(),
                    signup.clone(),
                    Anonymous,
                )
            },
            MappingCase {
                refused: Some("custom_events_disabled"),
                ..MappingCase::new(
                    "custom events switched off",
                    json!({"site_id": "example.com", "enable_custom_events": false}),
                    signup,
                    Full,
                )
            },
        ]
    }
}

/// What Plausible's answer to one event means.
fn outcome(r: &ProviderResponse<'_>) -> Outcome {
    if (200..300).contains(&r.status) {
        return match r.headers.get("x-plausible-dropped") {
            Some(v) => Outcome::Dropped {
                warning: format!(
                    "Plausible answered {} but dropped the event (x-plausible-dropped: {}): unknown domain, \
                     bot or datacenter IP, site rate limit, or a shield rule",
                    r.status, v
                ),
            },
            // Plausible's only success is `ok` (`external_controller.ex`). Any other 2xx — an
            // HTML catch-all, a maintenance page, a proxy's landing page at a wrong
            // `instance_url` — reached something else: retried, never counted as delivered.
            None if r.body.trim_ascii() == b"ok" => Outcome::Delivered,
            None => Outcome::Retry {
                reason: format!(
                    "the answer ({}) is not Plausible's `ok`; check the config's instance_url: {}",
                    r.status,
                    body_excerpt(r.body)
                ),
            },
        };
    }
    classify_failure("Plausible", r.status, r.body)
}

/// Scalars only, blank values left out, keys ≤ 300 bytes, values ≤ 2,000 bytes, at most 30 —
/// exactly what Plausible would keep, minus the cases where it would refuse the whole event.
fn fit_props(props: Map<String, Value>, adjustments: &mut Vec<String>) -> Map<String, Value> {
    let mut kept = Map::new();
    let mut skipped = Vec::new();
    let mut over = 0;
    for (k, v) in props {
        let value = match v {
            Value::String(s) if s.trim().is_empty() => continue,
            Value::String(s) => {
                let cut = truncate_bytes(&s, MAX_PROP_VALUE_BYTES);
                if cut.len() < s.len() {
                    adjustments.push(format!("property {k:?} cut to {MAX_PROP_VALUE_BYTES} bytes"));
                }
                Value::String(cut.into_owned())
            }
            Value::Number(_) | Value::Bool(_) => v,
            Value::Null => continue,
            Value::Array(_) | Value::Object(_) => {
                skipped.push(k);
                continue;
            }
        };
        if k.len() > MAX_PROP_KEY_BYTES {
            skipped.push(format!("{}…", truncate_bytes(&k, 40)));
            continue;
        }
        if kept.len() == MAX_PROPS {
            over += 1;
            continue;
        }
        kept.insert(k, value);
    }
    if !skipped.is_empty() {
        adjustments.push(format!(
            "properties Plausible cannot take (not a scalar, or a name over {MAX_PROP_KEY_BYTES} bytes) left out: {}",
            skipped.join(", ")
        ));
    }
    if over > 0 {
        adjustments.push(format!("{over} properties beyond Plausible's {MAX_PROPS} left out"));
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde_json::json;

    use super::*;
    use crate::providers::Headers;
    use crate::{
        consent::Identity,
        providers::testing::{BROWSER_UA, One, event, one, outcome, outgoing},
    };

    fn settings(v: Value) -> PlausibleSettings {
        serde_json::from_value(v).unwrap()
    }

    fn build(s: &PlausibleSettings, e: &entity::analytics_event::Model, identity: Identity) -> One {
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        one::<Plausible>(s, &outgoing(e, identity, Some(ip))).unwrap()
    }

    #[test]
    fn defaults_are_cloud_and_custom_events_on() {
        let s = settings(json!({"site_id": "Example.com"}));
        assert_eq!(s.instance_url.join("/api/event"), "https://plausible.io/api/event");
        assert!(s.enable_custom_events && !s.enable_revenue_tracking);
        assert_eq!(s.site_id.0, "example.com");
        assert!(serde_json::from_value::<PlausibleSettings>(json!({"site_id": "https://x"})).is_err());
        assert!(serde_json::from_value::<PlausibleSettings>(json!({"site_id": "x.org", "nope": 1})).is_err());
    }

    #[test]
    fn a_pageview_carries_the_visitor_and_the_page() {
        let s = settings(json!({"site_id": "example.com", "instance_url": "http://127.0.0.1:9/plausible"}));
        let req = build(&s, &event("pageview"), Identity::Full);
        assert_eq!(req.url, "http://127.0.0.1:9/plausible/api/event");
        assert_eq!(req.header("user-agent"), Some(BROWSER_UA));
        assert_eq!(req.header("x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(req.header("x-plausible-ip"), Some("203.0.113.7"));
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(
            req.body,
            json!({"domain": "example.com", "name": "pageview",
                   "url": "https://www.example.com/pricing?utm_source=news",
                   "referrer": "https://search.example.org/"})
        );
        assert!(req.adjustments.is_empty());
    }

    #[test]
    fn props_are_fitted_to_plausibles_limits() {
        let s = settings(json!({"site_id": "example.com"}));
        let mut e = event("signup");
        let mut props = serde_json::Map::new();
        for i in 0..35 {
            props.insert(format!("p{i:02}"), json!(i));
        }
        props.insert("long".into(), json!("é".repeat(1500)));
        props.insert("k".repeat(301), json!("v"));
        props.insert("nested".into(), json!({"a": 1}));
        props.insert("blank".into(), json!("  "));
        props.insert("none".into(), Value::Null);
        e.event_properties = Value::Object(props);
        let req = build(&s, &e, Identity::Full);
        let sent = req.body["props"].as_object().unwrap();
        assert_eq!(sent.len(), MAX_PROPS);
        assert!(sent.keys().all(|k| k.len() <= MAX_PROP_KEY_BYTES));
        assert!(sent.values().all(|v| v.as_str().is_none_or(|s| s.len() <= MAX_PROP_VALUE_BYTES)));
        assert_eq!(sent["long"].as_str().unwrap().len(), 2000);
        assert!(!sent.contains_key("nested") && !sent.contains_key("blank") && !sent.contains_key("none"));
        assert_eq!(req.adjustments.len(), 3, "{:?}", req.adjustments);
    }

    #[test]
    fn anonymous_events_carry_no_identifiers() {
        let s = settings(json!({"site_id": "example.com"}));
        let mut e = event("signup");
        e.user_id = Some("u-1".into());
        e.anonymous_id = Some("v-1".into());
        e.event_properties = json!({"plan": "pro", "user_id": "u-1", "contact": "ann@example.com", "customerId": 7});
        let req = build(&s, &e, Identity::Anonymous);
        assert_eq!(req.body["props"], json!({"plan": "pro"}));
        let text = req.body.to_string();
        assert!(!text.contains("u-1") && !text.contains("v-1") && !text.contains("ann@"), "{text}");
        // With full identity the site's own properties go as they are.
        let req = build(&s, &e, Identity::Full);
        assert_eq!(req.body["props"]["customerId"], json!(7));
    }

    #[test]
    fn outbound_clicks_use_plausibles_goal_name_and_revenue_needs_the_switch() {
        let s = settings(json!({"site_id": "example.com"}));
        let mut e = event(OUTBOUND_LINK_CLICK);
        e.event_properties = json!({"url": "https://other.org/"});
        e.revenue = Some(json!({"amount": 12.5, "currency": "EUR"}));
        let req = build(&s, &e, Identity::Full);
        assert_eq!(req.body["name"], OUTBOUND_GOAL);
        assert_eq!(req.body["props"]["url"], "https://other.org/");
        assert!(req.body.get("revenue").is_none());
        let s = settings(json!({"site_id": "example.com", "enable_revenue_tracking": true}));
        let req = build(&s, &e, Identity::Full);
        assert_eq!(req.body["revenue"], json!({"currency": "EUR", "amount": 12.5}));
    }

    #[test]
    fn which_events_a_config_accepts() {
        let e = event("signup");
        let s = settings(json!({"site_id": "example.com"}));
        assert_eq!(Plausible::accepts(&s, &e), Ok(()), "www. is a subdomain of the site");
        let s = settings(json!({"site_id": "example.com", "enable_custom_events": false}));
        assert_eq!(Plausible::accepts(&s, &e), Err(Blocked::CustomEventsDisabled));
        assert_eq!(Plausible::accepts(&s, &event("pageview")), Ok(()));
        let s = settings(json!({"site_id": "example.com", "allowed_domains": ["shop.example.com"]}));
        assert_eq!(Plausible::accepts(&s, &e), Err(Blocked::DomainNotAllowed));
        let s = settings(json!({"site_id": "other.org"}));
        assert_eq!(Plausible::accepts(&s, &e), Err(Blocked::DomainNotAllowed));
        // The tracker's own engagement event is not a custom event Plausible takes.
        let s = settings(json!({"site_id": "example.com"}));
        assert_eq!(Plausible::accepts(&s, &event("engagement")), Err(Blocked::EventNameReserved));
        assert_eq!(Plausible::accepts(&s, &event("Engagement")), Ok(()));
    }

    #[test]
    fn answers() {
        let none = Headers::default();
        let dropped = Headers::from_iter([("X-Plausible-Dropped", "1")]);
        let r = |status, headers| outcome::<Plausible>(&ProviderResponse { status, headers, body: b"ok" });
        assert_eq!(r(202, &none), Outcome::Delivered);
        // A 2xx that is not Plausible's `ok` (an HTML catch-all at a wrong instance_url) is
        // retried and says why; it is never a delivery.
        let html =
            |status| outcome::<Plausible>(&ProviderResponse { status, headers: &none, body: b"<html>Hi</html>" });
        for status in [200, 202, 204] {
            match html(status) {
                Outcome::Retry { reason } => assert!(reason.contains("instance_url"), "{reason}"),
                other => panic!("{status}: {other:?}"),
            }
        }
        let empty = outcome::<Plausible>(&ProviderResponse { status: 202, headers: &none, body: b"" });
        assert!(matches!(empty, Outcome::Retry { .. }), "{empty:?}");
        let ok_newline = outcome::<Plausible>(&ProviderResponse { status: 202, headers: &none, body: b"ok\n" });
        assert_eq!(ok_newline, Outcome::Delivered);
        assert!(matches!(r(202, &dropped), Outcome::Dropped { .. }));
        assert!(matches!(r(400, &none), Outcome::Dead { .. }));
        assert!(matches!(r(503, &none), Outcome::Retry { .. }));
        assert!(matches!(r(401, &none), Outcome::AuthFailure { .. }));
    }
}
