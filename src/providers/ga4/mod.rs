//! Google Analytics 4 — Measurement Protocol (`POST {endpoint}/mp/collect?measurement_id=…&
//! api_secret=…`, `{"client_id", "events": [{"name", "params"}], …}`).
//!
//! Facts this mapping relies on (shared/docs/providers.md, providers-sources.md §4):
//! - `/mp/collect` answers `2xx` to *anything*, valid or not, and silently drops what breaks
//!   GA4's rules; only the validation server (`/debug/mp/collect`) says what is wrong, as
//!   `{"validationMessages": [{"fieldPath", "description", "validationCode"}]}`. So the mapping
//!   keeps to the rules itself ([`rules`]), recording every change, and `debug_mode` sends to the
//!   validation server instead (validated, never collected: see [`Ga4::classify`]).
//! - Up to 25 events per request; `client_id`, `user_id`, `consent`, `ip_override`,
//!   `user_agent` and `user_location` are the request's, shared by its events: deliveries go
//!   together only when all of these agree ([`Ga4::batch_key`]).
//! - `timestamp_micros` at most 72 hours in the past: an older delivery (a retry that waited that
//!   long) is dead-lettered with that reason rather than sent and dropped unseen.
//! - `consent` has only the two ad signals; there is no analytics signal. So GA4 gets nothing
//!   without analytics consent — with `require_cookie_consent`, nothing without a *record*
//!   granting it (`ProviderPolicy::requires_record`, `denied:no_record`).
//! - The `api_secret` travels in the query string: the request's URL is never logged, and
//!   transport errors are described without it (`outbox::worker::describe`).

pub mod mapping;
pub mod rules;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::{
    Answer, InstanceUrl, Item, Outcome, Outgoing, Provider, ProviderRequest, ProviderResponse, body_excerpt,
    classify_failure,
};
use crate::{
    consent::{Blocked, RequiredCategory},
    secrets::{Credentials, SecretRef, check::AuthCheck},
};

#[derive(Clone, Copy, Debug, Default)]
pub struct Ga4;

pub const GLOBAL_URL: &str = "https://www.google-analytics.com";
/// Google's EU data-collection endpoint (data collected and processed in the EU).
pub const EU_URL: &str = "https://region1.google-analytics.com";

/// Which Google endpoint receives the events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `www.google-analytics.com`.
    #[default]
    Global,
    /// `region1.google-analytics.com`.
    Eu,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ga4Settings {
    /// The web data stream's measurement id, `G-` and letters or digits (not the stream id).
    /// Not a secret (every page's gtag snippet shows it), so a setting, not a credential.
    #[schema(value_type = String, example = "G-ABC123XYZ9")]
    pub measurement_id: MeasurementId,
    /// The GA4 property's numeric id, for the customer's record (not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "123456789")]
    pub property_id: Option<NumericId>,
    /// The data stream's numeric id, for the customer's record (not sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "4567890123")]
    pub data_stream_id: Option<NumericId>,
    /// `global` (default) or `eu`: Google's EU data-collection endpoint.
    #[serde(default)]
    #[schema(inline)]
    pub region: Region,
    /// Another Measurement Protocol endpoint instead of Google's: a server-side tagging server,
    /// which takes `/mp/collect` on its own domain. Overrides `region`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<InstanceUrl>,
    /// Send only when the visitor's consent *record* grants the required category, in every
    /// region (default true). See docs/decision-reasons.md, `no_record`.
    #[serde(default = "yes")]
    pub require_cookie_consent: bool,
    /// Send GA4 the visitor's network (the stored /24 or /48) rather than the full IP as
    /// `ip_override` (default true).
    #[serde(default = "yes")]
    pub anonymize_ip: bool,
    /// Send outbound-link clicks as GA4's enhanced-measurement `click` with `outbound` (default
    /// true); off: as `outbound_link_click`.
    #[serde(default = "yes")]
    pub enable_enhanced_measurement: bool,
    /// Send revenue as `value` + `currency` and the site's `items` (default false).
    #[serde(default)]
    pub enable_ecommerce: bool,
    /// Send to the validation server (`/debug/mp/collect`) instead: events are validated, never
    /// collected, and the validation messages are stored on each delivery (default false).
    #[serde(default)]
    pub debug_mode: bool,
}

/// Secret references. `api_secret_ref` is required (an `Option` only for the trait's `Default`;
/// deserialising refuses a config without it, naming the field).
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, try_from = "RawCredentials")]
pub struct Ga4Credentials {
    /// The data stream's Measurement Protocol API secret (Admin › Data streams › Measurement
    /// Protocol API secrets). Required.
    #[schema(value_type = String, example = "env:GA4_API_SECRET")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_secret_ref: Option<SecretRef>,
    /// A service account key, kept as a reference for the customer's record only: the Measurement
    /// Protocol does not use it, and nothing signs with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_json_ref: Option<SecretRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    api_secret_ref: Option<SecretRef>,
    #[serde(default)]
    service_account_json_ref: Option<SecretRef>,
}

impl TryFrom<RawCredentials> for Ga4Credentials {
    type Error = &'static str;

    fn try_from(r: RawCredentials) -> Result<Self, Self::Error> {
        match r.api_secret_ref {
            None => {
                Err("api_secret_ref is required: the reference to the data stream's Measurement Protocol API secret")
            }
            api_secret_ref => {
                Ok(Ga4Credentials { api_secret_ref, service_account_json_ref: r.service_account_json_ref })
            }
        }
    }
}

/// `G-` followed by letters and digits, upper-cased.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(value_type = String, example = "G-ABC123XYZ9")]
pub struct MeasurementId(String);

impl MeasurementId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let up = s.trim().to_ascii_uppercase();
        match up.strip_prefix("G-") {
            Some(rest) if !rest.is_empty() && rest.len() <= 20 && rest.chars().all(|c| c.is_ascii_alphanumeric()) => {
                Ok(MeasurementId(up))
            }
            _ => Err(format!("{s:?} is not a GA4 measurement id (G- and letters or digits, e.g. G-ABC123XYZ9)")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for MeasurementId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        MeasurementId::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A GA4 numeric id (property, data stream), given as digits (text or a number).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NumericId(String);

impl<'de> Deserialize<'de> for NumericId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = match Value::deserialize(d)? {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) if n.is_u64() => n.to_string(),
            _ => return Err(serde::de::Error::custom("must be GA4's numeric id (digits)")),
        };
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(serde::de::Error::custom("must be GA4's numeric id (digits)"));
        }
        Ok(NumericId(s))
    }
}

fn yes() -> bool {
    true
}

impl Ga4Settings {
    fn base(&self) -> String {
        match (&self.endpoint_url, self.region) {
            (Some(u), _) => u.join(""),
            (None, Region::Global) => GLOBAL_URL.into(),
            (None, Region::Eu) => EU_URL.into(),
        }
    }

    /// `…/mp/collect` or, with `debug_mode`, `…/debug/mp/collect`, with the query string.
    fn url(&self, debug: bool, api_secret: &SecretString) -> Result<String, String> {
        let path = if debug { "/debug/mp/collect" } else { "/mp/collect" };
        let mut u = url::Url::parse(&format!("{}{path}", self.base()))
            .map_err(|e| format!("the GA4 endpoint is not a URL: {e}"))?;
        u.query_pairs_mut()
            .append_pair("measurement_id", self.measurement_id.as_str())
            .append_pair("api_secret", api_secret.expose_secret());
        Ok(u.into())
    }
}

/// The field of the resolved credentials holding the API secret.
const API_SECRET: &str = "api_secret_ref";

impl Provider for Ga4 {
    type Settings = Ga4Settings;
    type Credentials = Ga4Credentials;
    const NAME: &'static str = "ga4";

    fn default_required_category() -> RequiredCategory {
        RequiredCategory::Analytics
    }

    fn requires_record(s: &Ga4Settings) -> bool {
        s.require_cookie_consent
    }

    fn accepts(_: &Ga4Settings, _: &entity::analytics_event::Model) -> Result<(), Blocked> {
        // Every event maps to a valid GA4 event (names are renamed, not refused).
        Ok(())
    }

    /// GA4's 72 hours (`timestamp_micros`): the outbox's retry horizon for GA4 is no longer, and a
    /// replay of an older event is refused. The mapping keeps a minute's margin on top.
    fn max_event_age() -> Option<chrono::Duration> {
        Some(chrono::Duration::hours(rules::MAX_AGE_HOURS))
    }

    fn batch_limit(_: &Ga4Settings) -> usize {
        rules::MAX_EVENTS
    }

    /// The request-level fields (one `client_id`, `user_id`, `consent`, … per request); an event
    /// too large to share a request travels alone, so that 25 never pass GA4's 130 KB.
    fn batch_key(s: &Ga4Settings, out: &Outgoing<'_>) -> String {
        let shared = Value::Object(mapping::shared(s, out)).to_string();
        if mapping::fitted(s, out).event.to_string().len() > mapping::MAX_SHARED_EVENT_BYTES {
            format!("{shared}|alone:{}", out.delivery_id)
        } else {
            shared
        }
    }

    fn item(s: &Ga4Settings, out: &Outgoing<'_>) -> Result<Item, String> {
        let m = mapping::event(s, out, Utc::now())?;
        Ok(Item {
            body: json!({"shared": Value::Object(mapping::shared(s, out)), "event": m.event}),
            headers: Vec::new(),
            adjustments: m.adjustments,
        })
    }

    fn request(s: &Ga4Settings, credentials: &Credentials, items: &[Item]) -> Result<ProviderRequest, String> {
        let secret = credentials.get(API_SECRET).ok_or("the GA4 config has no credentials.api_secret_ref")?;
        let body = request_body(s, items)?;
        Ok(ProviderRequest {
            url: s.url(s.debug_mode, secret)?,
            headers: vec![("content-type", "application/json".to_string())],
            body,
        })
    }

    /// `/mp/collect` answers `2xx` (usually `204`, no body) whatever it makes of the events:
    /// delivered. The validation server's answer (`validationMessages`, only ever from
    /// `debug_mode`) is per event: an event a message names (`events[i]…`, or `index: [i]`) is
    /// dead-lettered with its messages — GA4 would drop it; the others end `dropped` with a
    /// warning saying they were validated, not collected (they never reach reports). A message
    /// that names no event applies to every event.
    fn classify(r: &ProviderResponse<'_>, items: usize) -> Answer {
        if !(200..300).contains(&r.status) {
            return Answer::All(classify_failure("GA4", r.status, r.body));
        }
        if let Ok(v) = serde_json::from_slice::<Value>(r.body)
            && let Some(messages) = v.get("validationMessages").and_then(Value::as_array)
        {
            return Answer::PerItem(validated(messages, items));
        }
        if r.body.trim_ascii_start().starts_with(b"<") {
            // An HTML page is no Measurement Protocol answer: a wrong endpoint_url.
            return Answer::All(Outcome::Retry {
                reason: format!(
                    "the answer ({}) is not GA4's; check the config's endpoint_url: {}",
                    r.status,
                    body_excerpt(r.body)
                ),
            });
        }
        Answer::All(Outcome::Delivered)
    }

    /// Sample events through the validation server: GA4 answers `2xx` to any payload at
    /// `/mp/collect`, so only the validation server shows a config's events would be refused
    /// (e.g. a measurement id of another stream type). It does not check the api_secret, and GA4
    /// offers no call that does: the report says so.
    fn checks(s: &Ga4Settings, credentials: &Credentials) -> Vec<AuthCheck> {
        let Some(secret) = credentials.get(API_SECRET) else { return Vec::new() };
        let Ok(url) = s.url(true, secret) else { return Vec::new() };
        let body = sample_body(s);
        vec![AuthCheck {
            what: "GA4 validation server",
            proves: vec![API_SECRET],
            method: reqwest::Method::POST,
            url,
            headers: Vec::new(),
            json_body: Some(SecretString::from(body.to_string())),
            read: Some(read_check),
        }]
    }

    #[cfg(test)]
    fn mapping_cases() -> Vec<super::testing::MappingCase> {
        use super::testing::{BROWSER_UA, MappingCase, event};
        use crate::consent::{
            Choices,
            Identity::{Anonymous, Full},
        };
        let s = json!({"measurement_id": "G-TEST123", "endpoint_url": "http://127.0.0.1:9/ga4"});
        // Sent now: GA4 takes events at most 72 hours old, and `item` reads the clock.
        let recent = |name: &str| {
            let mut e = event(name);
            e.occurred_at = Utc::now() - chrono::Duration::minutes(1);
            e.anonymous_id = Some("visitor-1".into());
            e.session_id = Some("1795694000".into());
            e
        };
        let mut signup = recent("signup");
        signup.user_id = Some("u-1".into());
        signup.event_properties = json!({"plan": "pro", "customer_id": "c-9"});
        let mut old = recent("pageview");
        old.occurred_at = Utc::now() - chrono::Duration::hours(73);
        let mut purchase = recent("purchase");
        purchase.revenue = Some(json!({"amount": 20, "currency": "EUR"}));
        let secret = vec![(API_SECRET, "test-secret")];
        let case = |name, settings: &Value, e, identity| MappingCase {
            credentials: secret.clone(),
            ..MappingCase::new(name, settings.clone(), e, identity)
        };
        vec![
            MappingCase {
                body: vec![
                    ("/client_id", json!("visitor-1")),
                    ("/consent/ad_user_data", json!("GRANTED")),
                    ("/user_agent", json!(BROWSER_UA)),
                    ("/ip_override", json!("203.0.113.0")),
                    ("/events/0/name", json!("page_view")),
                    ("/events/0/params/page_location", json!("https://www.example.com/pricing?utm_source=news")),
                    ("/events/0/params/page_title", json!("Pricing")),
                    ("/events/0/params/session_id", json!("1795694000")),
                    ("/events/0/params/engagement_time_msec", json!(1)),
                ],
                ..case("a page view with full identity", &s, recent("pageview"), Full)
            },
            MappingCase {
                body: vec![
                    ("/user_id", json!("u-1")),
                    ("/events/0/name", json!("signup")),
                    ("/events/0/params/plan", json!("pro")),
                    ("/events/0/params/customer_id", json!("c-9")),
                ],
                ..case("a custom event with full identity", &s, signup.clone(), Full)
            },
            MappingCase {
                body: vec![
                    ("/client_id", json!("cg.00000000000000000000000000000000")),
                    ("/user_id", Value::Null),
                    ("/ip_override", Value::Null),
                    ("/consent/ad_user_data", json!("DENIED")),
                    ("/events/0/params/session_id", Value::Null),
                    ("/events/0/params/customer_id", Value::Null),
                    ("/events/0/params/plan", json!("pro")),
                ],
                ..case("anonymous: no identifiers, a client_id that links nothing", &s, signup.clone(), Anonymous)
            },
            MappingCase {
                granted: Choices { marketing: false, ..Choices::all() },
                body: vec![
                    ("/consent/ad_user_data", json!("DENIED")),
                    ("/consent/ad_personalization", json!("DENIED")),
                ],
                ..case("marketing not granted: the ad signals denied", &s, signup, Full)
            },
            MappingCase {
                body: vec![
                    ("/events/0/name", json!("purchase")),
                    ("/events/0/params/transaction_id", json!(purchase.id.to_string())),
                    ("/events/0/params/value", json!(20)),
                    ("/events/0/params/currency", json!("EUR")),
                ],
                ..case(
                    "a purchase with ecommerce: value, currency, the event id as transaction_id",
                    &json!({"measurement_id": "G-TEST123", "enable_ecommerce": true}),
                    purchase,
                    Full,
                )
            },
            MappingCase { refused: Some("too old for GA4"), ..case("older than 72 hours: refused", &s, old, Full) },
            MappingCase {
                refused: Some("api_secret_ref"),
                credentials: Vec::new(),
                ..case("no api secret: nothing sent", &s, recent("pageview"), Full)
            },
        ]
    }
}

/// The validation server's answer to `check`: its messages (none: the sample is valid). It does
/// not check the api_secret, so "accepted" says only that the endpoint and measurement id take
/// the gateway's events; the detail says so.
fn read_check(status: u16, body: &[u8]) -> (Option<bool>, String) {
    if !(200..300).contains(&status) {
        let refused = matches!(status, 401 | 403);
        let detail = format!("GA4 validation server answered {status}: {}", body_excerpt(body));
        return (refused.then_some(false), detail);
    }
    let messages = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("validationMessages").cloned());
    match messages.as_ref().and_then(Value::as_array) {
        Some(m) if m.is_empty() => (
            Some(true),
            "GA4 validation server found the sample events valid (it does not check the api_secret's value, and \
             GA4 offers no call that does)"
                .into(),
        ),
        Some(m) => (
            Some(false),
            format!(
                "GA4 validation server refused the sample events: {}",
                m.iter().map(describe_message).collect::<Vec<_>>().join("; ")
            ),
        ),
        None => (
            None,
            format!(
                "the answer ({status}) is not GA4's validation server's; check the config's endpoint_url: {}",
                body_excerpt(body)
            ),
        ),
    }
}

/// The request body for `items`: their shared fields (equal, by the batch key) and their events,
/// in order; in debug mode asking the validation server for GA4's recommendations too.
fn request_body(s: &Ga4Settings, items: &[Item]) -> Result<Value, String> {
    let first = items.first().ok_or("a GA4 request needs at least one event")?;
    if items.len() > rules::MAX_EVENTS {
        return Err(format!("GA4 takes at most {} events per request, not {}", rules::MAX_EVENTS, items.len()));
    }
    let shared = first.body["shared"].as_object().ok_or("a GA4 item without its request fields")?;
    if items.iter().any(|i| i.body["shared"] != first.body["shared"]) {
        return Err("GA4 events of different visitors or consent states cannot share a request".into());
    }
    let mut body: Map<String, Value> = shared.clone();
    body.insert("events".into(), Value::Array(items.iter().map(|i| i.body["event"].clone()).collect()));
    if s.debug_mode {
        body.insert("validation_behavior".into(), json!("ENFORCE_RECOMMENDATIONS"));
    }
    let body = Value::Object(body);
    // The batch key keeps requests below this; GA4 would drop a larger one unseen.
    let size = body.to_string().len();
    if size >= rules::MAX_BODY_BYTES {
        return Err(format!("the GA4 request would be {size} bytes; GA4 takes less than 130 KB"));
    }
    Ok(body)
}

/// A page view as the mapping makes it, for `check`.
fn sample_body(s: &Ga4Settings) -> Value {
    json!({
        "client_id": "consentgate.check",
        "consent": {"ad_user_data": "DENIED", "ad_personalization": "DENIED"},
        "events": [{"name": "page_view", "params": {
            "page_location": "https://www.example.com/consentgate-check",
            "page_title": "consentgate check",
            "session_id": "1700000000",
            "engagement_time_msec": mapping::DEFAULT_ENGAGEMENT_MSEC,
        }}],
        "validation_behavior": if s.debug_mode { "ENFORCE_RECOMMENDATIONS" } else { "RELAXED" },
    })
}

/// The outcome per event of a validation server answer.
fn validated(messages: &[Value], items: usize) -> Vec<Outcome> {
    let mut per: Vec<Vec<String>> = vec![Vec::new(); items];
    for m in messages {
        let text = describe_message(m);
        match event_index(m) {
            Some(i) if i < items => per[i].push(text),
            _ => per.iter_mut().for_each(|p| p.push(text.clone())),
        }
    }
    per.into_iter()
        .map(|found| {
            if found.is_empty() {
                Outcome::Dropped {
                    warning: "debug_mode: GA4's validation server found nothing to fix; validated, not collected \
                              (debug events never reach reports)"
                        .into(),
                }
            } else {
                Outcome::Dead {
                    reason: format!(
                        "debug_mode: GA4's validation server would refuse it (validated, not collected): {}",
                        found.join("; ")
                    ),
                }
            }
        })
        .collect()
}

/// `CODE at fieldPath: description`.
fn describe_message(m: &Value) -> String {
    let code = m["validationCode"].as_str().unwrap_or("UNKNOWN");
    let description = m["description"].as_str().unwrap_or("");
    match m["fieldPath"].as_str().filter(|p| !p.is_empty()) {
        Some(path) => format!("{code} at {path}: {description}"),
        None => format!("{code}: {description}"),
    }
}

/// The event a message is about: `events[3].params…` / `events.3…` in its field path, or
/// `index: [3]` in its description (Google's example: `Event at index: [0] has invalid name`).
fn event_index(m: &Value) -> Option<usize> {
    let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok();
    let path = m["fieldPath"].as_str().unwrap_or("");
    if let Some(rest) = path.strip_prefix("events[").or_else(|| path.strip_prefix("events.")) {
        return digits(rest);
    }
    let description = m["description"].as_str().unwrap_or("");
    description.find("index: [").and_then(|at| digits(&description[at + "index: [".len()..]))
}

#[cfg(test)]
mod tests;
