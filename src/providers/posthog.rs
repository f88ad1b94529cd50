//! PostHog — capture (`POST {instance}/batch/`) and feature flags (`POST {instance}/flags?v=2`).
//!
//! Facts this mapping relies on (shared/docs/providers-sources.md §3; PostHog/posthog
//! `rust/capture/src/v0_request.rs`, `token.rs`, `timestamp.rs`, `api.rs`, `v0_endpoint.rs`, and
//! `rust/feature-flags/src/api/errors.rs`):
//! - The project API key travels in the body (`api_key`) and capture only checks its *shape*
//!   (≤ 64 ASCII characters, not a `phx_` personal key): a well-formed wrong key — or a project over
//!   its billing quota — is answered `200 {"status":"Ok"}` and the events vanish. Only the flags
//!   endpoint looks the key up (`401` "The provided API key is invalid or has expired"), so
//!   `check` calls it ([`Provider::checks`]).
//! - One event with no name, no `distinct_id` or a `uuid` that is not a UUID fails the *whole*
//!   request with `400`; the outbox then splits the batch so that only that event ends dead.
//!   Every item is built valid here: the name is never empty, the distinct id never empty, the
//!   uuid is the gateway's event id.
//! - `uuid` is how PostHog collapses duplicates (ClickHouse `ReplacingMergeTree` ordered by team,
//!   day of `timestamp`, event, distinct id and uuid): it is the **event id**, and `timestamp`,
//!   `event` and `distinct_id` are the same on every attempt (the pseudonymous id is stored on
//!   the delivery at ingest, never recomputed), so a retry, a replay, or a second config pointing
//!   at the same project never counts twice. (The delivery id would change with a replay that
//!   creates a new delivery and would differ between two configs of one project.)
//! - No `sent_at` is sent: capture shifts every timestamp by `sent_at − now`, which would misdate
//!   events sent late from the outbox. `timestamp` is when the event happened.
//! - `$process_person_profile: false` makes an event anonymous (no person profile). It is set,
//!   with the cookieless daily id as `distinct_id`, whenever the decision allowed no identifiers
//!   ([`crate::ingest::daily_id`]).
//! - `$ip` is PostHog's GeoIP input; without it PostHog would locate the *gateway*. So `$ip` goes
//!   with full identity only, and otherwise `$geoip_disable: true` with the country the gateway
//!   found (`$geoip_country_code`, no finer).
//! - `$identify` semantics: with full identity the `distinct_id` is the site's user id once it
//!   sends one, else the analytics id. PostHog merges the two only on an `$identify` event that
//!   carries `$anon_distinct_id`; the gateway's `identify` event (with both ids and full identity)
//!   is sent as exactly that (without identity it stays a plain `identify` event under the daily
//!   id: nothing to merge). The gateway never sends `$create_alias` or `$merge_dangerously`.

use std::net::IpAddr;

use chrono::SecondsFormat;
use entity::analytics_event;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::{
    Answer, InstanceUrl, Item, OUTBOUND_LINK_CLICK, Outcome, Outgoing, PAGEVIEW, Provider, ProviderRequest,
    ProviderResponse, body_excerpt, classify_failure, properties_for,
};
use crate::{
    consent::{Blocked, Identity, RequiredCategory},
    secrets::{Credentials, SecretRef, check::AuthCheck},
};

#[derive(Clone, Copy, Debug, Default)]
pub struct PostHog;

/// The provider's name in URLs and in `provider_config.provider`.
pub const NAME: &str = "posthog";
pub const US_CLOUD_URL: &str = "https://us.i.posthog.com";
pub const EU_CLOUD_URL: &str = "https://eu.i.posthog.com";
/// Events per `/batch/` request. PostHog sets no count limit (20 MB a request); 50 events of at
/// most 16 kB of properties each stay well below 1 MB, as providers.md advises.
pub const BATCH_LIMIT: usize = 50;
/// `$lib`: the library PostHog shows as the events' source.
pub const LIB: &str = "consentgate";
/// The gateway's event a site sends when a visitor logs in (`user_id` with its `anonymous_id`).
pub const IDENTIFY: &str = "identify";
/// Where a project key is looked up (and flags evaluated). `v=2`: the response with `flags`.
pub const FLAGS_PATH: &str = "/flags?v=2";
/// The distinct id `check` evaluates flags for: it creates nothing in PostHog.
pub const CHECK_DISTINCT_ID: &str = "consentgate-credentials-check";

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostHogSettings {
    /// `https://us.i.posthog.com` (US cloud, the default), `https://eu.i.posthog.com` (EU cloud)
    /// or a self-hosted base URL.
    #[serde(default = "us_cloud")]
    pub instance_url: InstanceUrl,
    /// Serve `POST /v1/tenants/{t}/analytics/posthog/flags` from this config (default false).
    #[serde(default)]
    pub enable_feature_flags: bool,
    /// Without the required category granted, send the event anyway as an anonymous one: no
    /// person profile, a `distinct_id` that changes every day and differs per tenant (default
    /// true). Off: such events are not sent.
    #[serde(default = "yes")]
    pub cookieless_fallback: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostHogCredentials {
    /// The project API key (`phc_…`), sent as `api_key`. Required.
    #[serde(deserialize_with = "required_ref", skip_serializing_if = "Option::is_none")]
    pub project_api_key_ref: Option<SecretRef>,
    /// A personal API key (`phx_…`), for PostHog's management API; not needed to send or to
    /// evaluate flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_api_key_ref: Option<SecretRef>,
}

/// A reference that must be there (an `Option` only so that the type has a `Default`).
fn required_ref<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretRef>, D::Error> {
    match Option::<SecretRef>::deserialize(d)? {
        Some(r) => Ok(Some(r)),
        None => Err(serde::de::Error::custom("is required: the project API key PostHog events are sent with")),
    }
}

fn us_cloud() -> InstanceUrl {
    InstanceUrl::parse(US_CLOUD_URL).expect("the cloud URL is valid")
}

fn yes() -> bool {
    true
}

impl Provider for PostHog {
    type Settings = PostHogSettings;
    type Credentials = PostHogCredentials;
    const NAME: &'static str = NAME;

    /// PostHog keeps a cookie-like visitor id and person profiles: analytics consent.
    fn default_required_category() -> RequiredCategory {
        RequiredCategory::Analytics
    }

    fn cookieless_fallback(s: &PostHogSettings) -> bool {
        s.cookieless_fallback
    }

    /// `$ip` only with full identity (without it, `$geoip_disable` and the country instead).
    fn needs_client_context(identity: Identity) -> bool {
        identity == Identity::Full
    }

    fn accepts(_: &PostHogSettings, event: &analytics_event::Model) -> Result<(), Blocked> {
        accepts(event)
    }

    fn batch_limit(_: &PostHogSettings) -> usize {
        BATCH_LIMIT
    }

    fn item(_: &PostHogSettings, out: &Outgoing<'_>) -> Result<Item, String> {
        let visit = Visit {
            event: out.event,
            identity: out.identity,
            pseudonymous_id: out.pseudonymous_id,
            client_ip: out.client_ip,
        };
        let (body, adjustments) = event_item(&visit)?;
        Ok(Item { body, adjustments, ..Default::default() })
    }

    /// `POST {instance}/batch/` with the project key in the body: the visitor's IP and agent
    /// travel per event, in `properties`, never as request headers.
    fn request(s: &PostHogSettings, credentials: &Credentials, items: &[Item]) -> Result<ProviderRequest, String> {
        let key = credentials
            .get("project_api_key_ref")
            .ok_or("the config has no credentials.project_api_key_ref: PostHog needs the project API key")?;
        Ok(ProviderRequest {
            url: batch_url(s),
            headers: vec![("content-type", "application/json".to_string())],
            body: batch_body(key, items.iter().map(|i| i.body.clone()).collect()),
        })
    }

    /// PostHog judges the whole request: a 400 for one bad event refuses all of them (the outbox
    /// splits the batch to find it).
    fn classify(r: &ProviderResponse<'_>, _items: usize) -> Answer {
        Answer::All(classify(r.status, r.body))
    }

    #[cfg(test)]
    fn mapping_cases() -> Vec<super::testing::MappingCase> {
        use super::testing::{MappingCase, event};
        use crate::consent::Identity::{Anonymous, Full};
        let s = json!({"instance_url": "http://127.0.0.1:9/posthog"});
        let key = vec![("project_api_key_ref", "phc_test")];
        let mut page = event(PAGEVIEW);
        page.id = uuid::Uuid::parse_str("0192f0c2-8d6e-7cc3-9c1e-4b5a8f0e1d2c").unwrap();
        page.anonymous_id = Some("a-1".into());
        let mut signup = page.clone();
        signup.event_name = "signup".into();
        signup.user_id = Some("u-1".into());
        signup.event_properties = json!({"plan": "pro", "user_id": "u-1", "$set": {"admin": true}});
        let daily = Some("cgd_0123456789abcdef0123456789abcdef");
        vec![
            MappingCase {
                body: vec![
                    ("/api_key", json!("phc_test")),
                    ("/sent_at", Value::Null),
                    ("/batch/0/event", json!("$pageview")),
                    ("/batch/0/distinct_id", json!("a-1")),
                    ("/batch/0/uuid", json!("0192f0c2-8d6e-7cc3-9c1e-4b5a8f0e1d2c")),
                    ("/batch/0/timestamp", json!("2026-11-26T12:00:00.000Z")),
                    ("/batch/0/properties/$current_url", json!("https://www.example.com/pricing?utm_source=news")),
                    ("/batch/0/properties/$ip", json!("203.0.113.7")),
                    ("/batch/0/properties/$lib", json!("consentgate")),
                    ("/batch/0/properties/$process_person_profile", Value::Null),
                ],
                headers: vec![("user-agent", None), ("x-forwarded-for", None)],
                credentials: key.clone(),
                pseudonymous_id: daily,
                ..MappingCase::new("a page view with full identity", s.clone(), page.clone(), Full)
            },
            MappingCase {
                body: vec![
                    ("/batch/0/event", json!("signup")),
                    ("/batch/0/distinct_id", json!("u-1")),
                    ("/batch/0/properties/plan", json!("pro")),
                    ("/batch/0/properties/user_id", json!("u-1")),
                    ("/batch/0/properties/$set", Value::Null),
                ],
                credentials: key.clone(),
                pseudonymous_id: daily,
                ..MappingCase::new("a custom event with full identity: the user id", s.clone(), signup.clone(), Full)
            },
            MappingCase {
                body: vec![
                    ("/batch/0/distinct_id", json!(daily)),
                    ("/batch/0/properties/$process_person_profile", json!(false)),
                    ("/batch/0/properties/$ip", Value::Null),
                    ("/batch/0/properties/$geoip_disable", json!(true)),
                    ("/batch/0/properties/plan", json!("pro")),
                    ("/batch/0/properties/user_id", Value::Null),
                ],
                credentials: key.clone(),
                pseudonymous_id: daily,
                ..MappingCase::new("anonymous: the daily id, no profile, no IP", s.clone(), signup.clone(), Anonymous)
            },
            MappingCase {
                refused: Some("event_name_reserved"),
                credentials: key.clone(),
                ..MappingCase::new(
                    "a site's $-event",
                    s.clone(),
                    {
                        let mut e = page.clone();
                        e.event_name = "$create_alias".into();
                        e
                    },
                    Full,
                )
            },
            MappingCase {
                refused: Some("project_api_key_ref"),
                pseudonymous_id: daily,
                ..MappingCase::new("no project key: nothing sent", s, page, Full)
            },
        ]
    }

    /// The flags endpoint: the only one that looks the project key up (capture answers 200 to a
    /// wrong key). A personal key is not checked: nothing here uses it.
    fn checks(s: &PostHogSettings, credentials: &Credentials) -> Vec<AuthCheck> {
        match credentials.get("project_api_key_ref") {
            Some(key) => vec![flags_request(s, key, CHECK_DISTINCT_ID)],
            None => Vec::new(),
        }
    }
}

/// PostHog's own events (`$pageview`, `$identify`, `$create_alias`, `$merge_dangerously`…) start
/// with `$`: a site's event may not pose as one (it could merge persons). Checked at ingest.
pub fn accepts(event: &analytics_event::Model) -> Result<(), Blocked> {
    if event.event_name.starts_with('$') {
        return Err(Blocked::EventNameReserved);
    }
    Ok(())
}

/// What one event needs besides the stored event: the decision's identity, the cookieless daily
/// id computed at ingest and the visitor's IP.
pub struct Visit<'a> {
    pub event: &'a analytics_event::Model,
    pub identity: Identity,
    pub pseudonymous_id: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
}

/// Properties the gateway sets itself; a site's property of the same name is left out (it could
/// turn a person profile back on, or point GeoIP at someone else). `token` and `distinct_id` in
/// `properties` are read by capture as the key and the distinct id.
fn reserved(key: &str) -> bool {
    key.starts_with('$') || key == "token" || key == "distinct_id"
}

/// One event of a `/batch/` body — pure. `Err` = this event cannot be sent (it is dead-lettered
/// alone).
pub fn event_item(v: &Visit<'_>) -> Result<(Value, Vec<String>), String> {
    let event = v.event;
    let mut adjustments = Vec::new();
    let full = v.identity == Identity::Full;
    let analytics_id = event.user_id.as_deref().or(event.anonymous_id.as_deref()).filter(|_| full);
    let (distinct_id, person_profile) = match (analytics_id, v.pseudonymous_id) {
        (Some(id), _) => (id, true),
        (None, Some(daily)) => (daily, false),
        (None, None) => {
            return Err("no distinct_id: no analytics or user id may go, and there is no cookieless daily id \
                        (cookieless_fallback is off, or a replay: the daily id is erased when a delivery ends)"
                .into());
        }
    };
    let identify = event.event_name == IDENTIFY;
    let name = match event.event_name.as_str() {
        PAGEVIEW => "$pageview",
        IDENTIFY if full && event.user_id.is_some() && event.anonymous_id.is_some() => "$identify",
        other if other.starts_with('$') => {
            return Err(format!("{other:?}: PostHog reserves event names starting with $"));
        }
        other => other,
    };
    let (props, removed) = properties_for(event, v.identity);
    if !removed.is_empty() {
        adjustments.push(format!("identifier properties left out (anonymous): {}", removed.join(", ")));
    }
    let mut properties = Map::new();
    let mut dropped = Vec::new();
    for (k, val) in props {
        if reserved(&k) {
            dropped.push(k);
        } else {
            properties.insert(k, val);
        }
    }
    if !dropped.is_empty() {
        adjustments.push(format!("properties PostHog reserves left out: {}", dropped.join(", ")));
    }
    if let Some(rev) = super::revenue_of(event) {
        let taken: Vec<&str> = ["revenue", "currency"].into_iter().filter(|k| properties.contains_key(*k)).collect();
        if !taken.is_empty() {
            adjustments.push(format!("properties {taken:?} replaced by the event's revenue"));
        }
        properties.insert("revenue".into(), Value::Number(rev.amount));
        properties.insert("currency".into(), json!(rev.currency));
    }
    if event.event_name == OUTBOUND_LINK_CLICK
        && let Some(url) = properties.get("url").cloned()
    {
        properties.insert("$external_click_url".into(), url);
    }
    if let Some(url) = event.page_url.as_deref() {
        properties.insert("$current_url".into(), json!(url));
        if let Ok(u) = url::Url::parse(url) {
            if let Some(host) = u.host_str() {
                properties.insert("$host".into(), json!(host));
            }
            properties.insert("$pathname".into(), json!(u.path()));
        }
    }
    match event.referrer.as_deref().filter(|r| !r.is_empty()) {
        Some(r) => {
            properties.insert("$referrer".into(), json!(r));
            let domain = url::Url::parse(r).ok().and_then(|u| u.host_str().map(str::to_string));
            properties.insert("$referring_domain".into(), json!(domain.unwrap_or_else(|| "$direct".into())));
        }
        None => {
            properties.insert("$referrer".into(), json!("$direct"));
            properties.insert("$referring_domain".into(), json!("$direct"));
        }
    }
    if let Some(t) = event.title.as_deref().filter(|t| !t.is_empty()) {
        properties.insert("title".into(), json!(t));
    }
    let agent = &event.context["agent"];
    for (from, to) in [("browser", "$browser"), ("os", "$os")] {
        if let Some(s) = agent[from].as_str() {
            properties.insert(to.into(), json!(s));
        }
    }
    if let Some(device) = agent["device"].as_str() {
        let kind = match device {
            "desktop" => "Desktop",
            "mobile" | "feature_phone" => "Mobile",
            _ => "Other",
        };
        properties.insert("$device_type".into(), json!(kind));
    }
    if let Some(language) = event.language.as_deref() {
        properties.insert("$browser_language".into(), json!(language));
    }
    // Capture does not read them from `$current_url` (only posthog-js sets them). Ingest keeps
    // them without the prefix (`ingest::enrich::utm`: `{"source": …}`).
    for name in crate::ingest::enrich::UTM_PARAMS {
        if let Some(s) = event.context["utm"][name].as_str() {
            properties.insert(format!("utm_{name}"), json!(s));
        }
    }
    match v.client_ip.filter(|_| full) {
        Some(ip) => {
            properties.insert("$ip".into(), json!(ip.to_string()));
        }
        None => {
            properties.insert("$geoip_disable".into(), json!(true));
            if let Some(c) = event.country.as_deref() {
                properties.insert("$geoip_country_code".into(), json!(c));
            }
        }
    }
    if full {
        if let Some(session) = event.session_id.as_deref().filter(|s| uuid::Uuid::parse_str(s).is_ok()) {
            properties.insert("$session_id".into(), json!(session));
        }
        if identify
            && let (Some(user), Some(anon)) = (event.user_id.as_deref(), event.anonymous_id.as_deref())
            && user != anon
        {
            properties.insert("$anon_distinct_id".into(), json!(anon));
        }
    }
    if !person_profile {
        properties.insert("$process_person_profile".into(), json!(false));
    }
    properties.insert("$lib".into(), json!(LIB));
    properties.insert("$lib_version".into(), json!(env!("CARGO_PKG_VERSION")));
    let item = json!({
        "event": name,
        "distinct_id": distinct_id,
        "properties": properties,
        "timestamp": event.occurred_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "uuid": event.id,
    });
    Ok((item, adjustments))
}

/// The `/batch/` body: the project key and the events. No `sent_at` (see the module docs).
pub fn batch_body(project_api_key: &SecretString, items: Vec<Value>) -> Value {
    json!({"api_key": project_api_key.expose_secret(), "batch": items})
}

pub fn batch_url(s: &PostHogSettings) -> String {
    s.instance_url.join("/batch/")
}

/// What PostHog's answer to a `/batch/` request means, for the whole request (PostHog answers
/// per request, never per event).
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    if (200..300).contains(&status) {
        // Capture's success is `{"status":"Ok"}` (older Django capture: `{"status": 1}`). Any
        // other 2xx — an HTML catch-all at a wrong instance_url — did not reach PostHog.
        let ok = serde_json::from_slice::<Value>(body)
            .ok()
            .is_some_and(|v| v["status"] == json!("Ok") || v["status"] == json!(1));
        return if ok {
            Outcome::Delivered
        } else {
            Outcome::Retry {
                reason: format!(
                    "the answer ({status}) is not PostHog's {{\"status\":\"Ok\"}}; check the config's instance_url: {}",
                    body_excerpt(body)
                ),
            }
        };
    }
    // 400: one event of the request is invalid (the outbox splits a batch to find it); 413: the
    // request is too large (split too). 401: a key of the wrong shape (e.g. a personal `phx_`
    // key). 429/503: throttled.
    classify_failure("PostHog", status, body)
}

/// `POST {instance}/flags?v=2` for one distinct id — how `check` proves the project key (capture
/// never says) and how the flags endpoint evaluates a visitor's flags.
pub fn flags_request(s: &PostHogSettings, project_api_key: &SecretString, distinct_id: &str) -> AuthCheck {
    let body = json!({"api_key": project_api_key.expose_secret(), "distinct_id": distinct_id});
    AuthCheck {
        what: "PostHog flags endpoint",
        proves: vec!["project_api_key_ref"],
        method: reqwest::Method::POST,
        url: s.instance_url.join(FLAGS_PATH),
        headers: Vec::new(),
        json_body: Some(SecretString::from(body.to_string())),
        read: Some(read_flags_check),
    }
}

/// `check`'s reading of the flags answer: a 2xx proves the key only when it is PostHog's flags
/// answer (a catch-all web server at a wrong `instance_url` answers 2xx with a page).
fn read_flags_check(status: u16, body: &[u8]) -> (Option<bool>, String) {
    match status {
        200..=299 if parse_flags(body).is_some() => {
            (Some(true), format!("PostHog's flags endpoint knows the project key ({status})"))
        }
        200..=299 => {
            (None, format!("answered {status}, but not with PostHog's flags answer; check the config's instance_url"))
        }
        401 | 403 => (Some(false), format!("PostHog's flags endpoint refused the project key ({status})")),
        _ => (None, format!("PostHog's flags endpoint answered {status}; the project key could not be verified")),
    }
}

/// The flags of a `/flags?v=2` answer, as the tracker gets them: a flag's variant when it has
/// one, else whether it is enabled. (The older `featureFlags` shape is read too.) `None`: the
/// answer is not a flags answer.
pub fn parse_flags(body: &[u8]) -> Option<Map<String, Value>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if let Some(flags) = v["flags"].as_object() {
        return Some(
            flags
                .iter()
                .map(|(k, f)| {
                    let value = match &f["variant"] {
                        Value::String(s) => json!(s),
                        _ => json!(f["enabled"].as_bool().unwrap_or(false)),
                    };
                    (k.clone(), value)
                })
                .collect(),
        );
    }
    v["featureFlags"].as_object().cloned()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::providers::testing::event;

    const DAILY: &str = "cgd_0123456789abcdef0123456789abcdef";
    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

    fn visit(e: &analytics_event::Model, identity: Identity) -> (Value, Vec<String>) {
        event_item(&Visit { event: e, identity, pseudonymous_id: Some(DAILY), client_ip: Some(IP) }).unwrap()
    }

    fn browsing(name: &str) -> analytics_event::Model {
        let mut e = event(name);
        e.id = Uuid::parse_str("0192f0c2-8d6e-7cc3-9c1e-4b5a8f0e1d2c").unwrap();
        e.anonymous_id = Some("visitor-analytics-id".into());
        e.session_id = Some("0192f0c2-0000-7000-8000-000000000001".into());
        // What ingest stores for the page URL the mapping cases use.
        let utm = crate::ingest::enrich::utm("https://www.example.com/pricing?utm_source=news");
        e.context = json!({"agent": {"browser": "Chrome", "os": "Linux", "device": "desktop"}, "utm": utm});
        e.event_properties = json!({"plan": "pro", "email": "ann@example.com", "$set": {"x": 1}, "token": "t"});
        e
    }

    /// What each identity sends, field by field.
    #[test]
    fn mapping_by_identity() {
        let e = browsing(PAGEVIEW);
        let (full, full_adj) = visit(&e, Identity::Full);
        let (anon, anon_adj) = visit(&e, Identity::Anonymous);
        type Check = fn(&Value) -> Value;
        let rows: &[(&str, Check, Value, Value)] = &[
            ("event", |v| v["event"].clone(), json!("$pageview"), json!("$pageview")),
            ("distinct_id", |v| v["distinct_id"].clone(), json!("visitor-analytics-id"), json!(DAILY)),
            ("uuid = event id", |v| v["uuid"].clone(), json!(e.id), json!(e.id)),
            (
                "timestamp",
                |v| v["timestamp"].clone(),
                json!("2026-11-26T12:00:00.000Z"),
                json!("2026-11-26T12:00:00.000Z"),
            ),
            ("$ip", |v| v["properties"]["$ip"].clone(), json!("203.0.113.7"), Value::Null),
            ("$geoip_disable", |v| v["properties"]["$geoip_disable"].clone(), Value::Null, json!(true)),
            ("$geoip_country_code", |v| v["properties"]["$geoip_country_code"].clone(), Value::Null, json!("SE")),
            (
                "$process_person_profile",
                |v| v["properties"]["$process_person_profile"].clone(),
                Value::Null,
                json!(false),
            ),
            (
                "$session_id",
                |v| v["properties"]["$session_id"].clone(),
                json!("0192f0c2-0000-7000-8000-000000000001"),
                Value::Null,
            ),
            ("$current_url", |v| v["properties"]["$current_url"].clone(), json!(e.page_url), json!(e.page_url)),
            ("$referrer", |v| v["properties"]["$referrer"].clone(), json!(e.referrer), json!(e.referrer)),
            ("$lib", |v| v["properties"]["$lib"].clone(), json!("consentgate"), json!("consentgate")),
            ("email (identifier)", |v| v["properties"]["email"].clone(), json!("ann@example.com"), Value::Null),
            ("plan", |v| v["properties"]["plan"].clone(), json!("pro"), json!("pro")),
            ("$set (reserved)", |v| v["properties"]["$set"].clone(), Value::Null, Value::Null),
            ("token (reserved)", |v| v["properties"]["token"].clone(), Value::Null, Value::Null),
            ("$browser", |v| v["properties"]["$browser"].clone(), json!("Chrome"), json!("Chrome")),
            ("utm_source", |v| v["properties"]["utm_source"].clone(), json!("news"), json!("news")),
            ("no sent_at", |v| v["sent_at"].clone(), Value::Null, Value::Null),
        ];
        for (what, get, want_full, want_anon) in rows {
            assert_eq!(get(&full), *want_full, "full: {what}");
            assert_eq!(get(&anon), *want_anon, "anonymous: {what}");
        }
        assert!(anon_adj.iter().any(|a| a.contains("email")), "{anon_adj:?}");
        assert!(full_adj.iter().any(|a| a.contains("$set") && a.contains("token")), "{full_adj:?}");
    }

    #[test]
    fn an_anonymous_event_carries_no_identifier_of_the_visitor() {
        let mut e = browsing("signup");
        e.user_id = Some("user-42".into());
        let (anon, _) = visit(&e, Identity::Anonymous);
        let text = anon.to_string();
        for id in ["user-42", "visitor-analytics-id", "0192f0c2-0000-7000-8000-000000000001", "203.0.113.7", "ann@"] {
            assert!(!text.contains(id), "{id} in {text}");
        }
    }

    #[test]
    fn the_user_id_is_the_distinct_id_once_known_and_identify_merges() {
        let mut e = browsing(IDENTIFY);
        e.user_id = Some("user-42".into());
        let (v, _) = visit(&e, Identity::Full);
        assert_eq!(v["event"], "$identify");
        assert_eq!(v["distinct_id"], "user-42");
        assert_eq!(v["properties"]["$anon_distinct_id"], "visitor-analytics-id");
        assert_eq!(v["properties"]["$process_person_profile"], Value::Null);
        let mut plain = browsing("signup");
        plain.user_id = Some("user-42".into());
        let (v, _) = visit(&plain, Identity::Full);
        assert_eq!((v["event"].as_str(), v["distinct_id"].as_str()), (Some("signup"), Some("user-42")));
        assert_eq!(v["properties"]["$anon_distinct_id"], Value::Null, "only $identify merges");
        let (anon, _) = visit(&e, Identity::Anonymous);
        assert_eq!((anon["event"].as_str(), anon["distinct_id"].as_str()), (Some("identify"), Some(DAILY)), "no merge");
        assert_eq!(anon["properties"]["$anon_distinct_id"], Value::Null);
    }

    #[test]
    fn without_any_id_full_identity_falls_back_to_the_daily_id_and_none_at_all_is_refused() {
        let mut e = browsing(PAGEVIEW);
        e.anonymous_id = None;
        let (v, _) = visit(&e, Identity::Full);
        assert_eq!(v["distinct_id"], DAILY);
        assert_eq!(v["properties"]["$process_person_profile"], false);
        let none =
            event_item(&Visit { event: &e, identity: Identity::Anonymous, pseudonymous_id: None, client_ip: None });
        assert!(none.unwrap_err().contains("distinct_id"));
    }

    #[test]
    fn reserved_names_are_refused_at_ingest() {
        assert_eq!(accepts(&event("$create_alias")), Err(Blocked::EventNameReserved));
        assert_eq!(accepts(&event("signup")), Ok(()));
        assert_eq!(accepts(&event(PAGEVIEW)), Ok(()));
    }

    #[test]
    fn revenue_and_outbound_links() {
        let mut e = browsing("purchase");
        e.revenue = Some(json!({"amount": 19.5, "currency": "EUR"}));
        let (v, _) = visit(&e, Identity::Full);
        assert_eq!(
            (v["properties"]["revenue"].clone(), v["properties"]["currency"].clone()),
            (json!(19.5), json!("EUR"))
        );
        let mut o = browsing(OUTBOUND_LINK_CLICK);
        o.event_properties = json!({"url": "https://other.example/"});
        let (v, _) = visit(&o, Identity::Anonymous);
        assert_eq!(v["properties"]["$external_click_url"], "https://other.example/");
    }

    #[test]
    fn the_batch_body_has_the_key_and_no_sent_at() {
        let body = batch_body(&SecretString::from("phc_test"), vec![json!({"event": "x"})]);
        assert_eq!(body, json!({"api_key": "phc_test", "batch": [{"event": "x"}]}));
    }

    #[test]
    fn classification() {
        let rows: &[(u16, &[u8], &str)] = &[
            (200, br#"{"status":"Ok"}"#, "delivered"),
            (200, br#"{"status":1}"#, "delivered"),
            (200, b"<html>welcome</html>", "retry"),
            (400, b"failed to decode or validate event: invalid uuid", "dead"),
            (413, b"", "dead"),
            (401, b"token shape invalid", "auth_failure"),
            (429, b"", "retry"),
            (503, b"", "retry"),
            (302, b"", "dead"),
        ];
        for (status, body, want) in rows {
            assert_eq!(classify(*status, body).label(), *want, "{status}");
        }
    }

    #[test]
    fn check_accepts_only_posthogs_own_flags_answer() {
        assert_eq!(read_flags_check(200, br#"{"flags":{}}"#).0, Some(true));
        assert_eq!(read_flags_check(200, b"<html>welcome</html>").0, None, "a catch-all page proves nothing");
        assert_eq!(read_flags_check(401, b"The provided API key is invalid").0, Some(false));
        assert_eq!(read_flags_check(503, b"").0, None);
    }

    #[test]
    fn flags_are_read_from_both_answer_shapes() {
        let v2 = br#"{"errorsWhileComputingFlags":false,"flags":{"beta":{"key":"beta","enabled":true,"variant":null},
                     "exp":{"key":"exp","enabled":true,"variant":"test"},"off":{"key":"off","enabled":false}},"requestId":"x"}"#;
        assert_eq!(Value::Object(parse_flags(v2).unwrap()), json!({"beta": true, "exp": "test", "off": false}));
        let legacy = br#"{"featureFlags":{"beta":true,"exp":"test"}}"#;
        assert_eq!(Value::Object(parse_flags(legacy).unwrap()), json!({"beta": true, "exp": "test"}));
        assert_eq!(parse_flags(b"<html>"), None);
    }

    /// The table in docs/providers.md ("What PostHog receives under each consent state") is this
    /// test's output: each consent state decided by `consent::decide` for a PostHog config, then
    /// mapped; the docs must show exactly what the code does.
    #[test]
    fn the_documented_consent_table_is_what_the_mapping_sends() {
        use chrono::{Duration, TimeZone, Utc};

        use crate::consent::{
            Action, Choices, ConsentPolicy, ProviderPolicy, ProviderStatus, RecordedChoice, Signals, decide,
        };
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let policy = ConsentPolicy {
            expiry_days: 180,
            geo_targeting_enabled: true,
            consent_required_regions: vec!["SE".into()],
            respect_do_not_track: true,
            enabled: Choices::all(),
            default_accepted: Choices::none(),
            revision: 1,
            reconsent_revision: 1,
        };
        let record = |choices: Choices, action: Action| RecordedChoice {
            choices,
            action,
            revision: 1,
            created_at: now - Duration::days(1),
            expires_at: now + Duration::days(179),
            other_config: false,
            dnt: false,
            gpc: false,
            providers: None,
        };
        let granted = record(Choices::all(), Action::AcceptAll);
        let in_se = Signals { country: Some("SE".into()), ..Signals::default() };
        let states: Vec<(&str, Option<RecordedChoice>, Signals)> = vec![
            ("analytics granted", Some(granted.clone()), in_se.clone()),
            ("refused (reject all)", Some(record(Choices::none(), Action::RejectAll)), in_se.clone()),
            ("no decision yet", None, in_se.clone()),
            ("withdrawn", Some(record(Choices::none(), Action::Withdraw)), in_se.clone()),
            ("DNT (respected)", Some(granted.clone()), Signals { dnt: true, ..in_se.clone() }),
            ("GPC (respected)", Some(granted), Signals { gpc: true, ..in_se }),
        ];
        let mut e = event(PAGEVIEW);
        e.anonymous_id = Some("a-1".into());
        let cell = |r: &Option<RecordedChoice>, signals: &Signals, fallback: bool| {
            let provider = ProviderPolicy {
                status: Some(ProviderStatus::Active),
                required_category: Some(RequiredCategory::Analytics),
                cookieless_fallback: fallback,
                requires_record: false,
                config_id: uuid::Uuid::nil(),
            };
            let d = decide(Some(&policy), r.as_ref(), signals, &provider, now);
            let Some(identity) = d.identity() else { return format!("nothing (`{}`)", d.reason()) };
            let (item, _) =
                event_item(&Visit { event: &e, identity, pseudonymous_id: Some(DAILY), client_ip: Some(IP) })
                    .expect("sent");
            let p = &item["properties"];
            let who = if item["distinct_id"] == DAILY { "the daily id" } else { "the analytics id" };
            let profile = if p["$process_person_profile"] == false { "no person profile" } else { "person profile" };
            let ip = if p["$ip"].is_null() { "no `$ip`" } else { "`$ip`" };
            format!("{who}, {profile}, {ip} (`{}`)", d.reason())
        };
        let mut table = String::from(
            "| consent state | `cookieless_fallback: true` (default) | `cookieless_fallback: false` |\n|---|---|---|\n",
        );
        for (name, r, signals) in &states {
            table.push_str(&format!("| {name} | {} | {} |\n", cell(r, signals, true), cell(r, signals, false)));
        }
        let docs = include_str!("../../docs/providers.md");
        assert!(docs.contains(&table), "docs/providers.md must hold this table:\n{table}");
    }

    #[test]
    fn settings_defaults() {
        let s: PostHogSettings = serde_json::from_value(json!({})).unwrap();
        assert_eq!(s.instance_url.join("/batch/"), "https://us.i.posthog.com/batch/");
        assert!(s.cookieless_fallback && !s.enable_feature_flags);
        let s: PostHogSettings = serde_json::from_value(json!({"instance_url": EU_CLOUD_URL})).unwrap();
        assert_eq!(flags_request(&s, &SecretString::from("k"), "d").url, "https://eu.i.posthog.com/flags?v=2");
        assert!(serde_json::from_value::<PostHogSettings>(json!({"api_key": "x"})).is_err());
    }
}
