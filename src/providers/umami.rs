//! Umami — Collect API (`POST {instance}/api/send`, `{"type": "event", "payload": {…}}`).
//!
//! Facts this mapping relies on (shared/docs/providers-sources.md §2, Umami v3.1.0
//! `src/app/api/send/route.ts`, `src/lib/detect.ts`, `prisma/schema.prisma`):
//! - Umami runs `isbot` on `payload.userAgent ?? User-Agent` and answers `200 {"beep":"boop"}`
//!   for bots, storing nothing; any bare `name/version` agent (our HTTP client's) is a bot. So
//!   the visitor's agent goes both in the header and in `payload.userAgent`, and the visitor's IP
//!   in `payload.ip` (which beats every proxy header, including a CDN's).
//! - zod (4.3, in v3.1.0) refuses `name` over 50, `hostname` over 100, `language` over 35 and
//!   `screen` over 11 — counted in UTF-16 code units, as JavaScript strings are (an emoji is 2) —
//!   and a `website` that is not a UUID.
//! - Past validation, PostgreSQL column sizes fail with a 500. Before the event row (session
//!   `distinct_id` 50; `website_event.hostname` 100, which falls back to the URL's host when
//!   `hostname` is absent; UTM and click-id values 255) every retry fails alike; *after* it
//!   (`event_data` keys and text values 500, `number_value numeric(19,4)`, the revenue row) the
//!   event is already stored and a retry stores it again. The mapping stays inside all of them,
//!   and a 500 that names a write made after the event row is not retried.
//! - A success carries a `cache` token; it is never sent back (it is not bound to a visitor).
//! - `timestamp` (Unix seconds) records the event at the time it happened, so a retried
//!   delivery is not misdated.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    Answer, Headers, InstanceUrl, Item, OUTBOUND_LINK_CLICK, Outcome, Outgoing, PAGEVIEW, Provider, ProviderRequest,
    ProviderResponse, body_excerpt, classify_failure, page_host, properties_for, revenue_of, single, truncate_chars,
};
use crate::{
    consent::{Blocked, Identity, Reason},
    secrets::{Credentials, SecretRef, check::AuthCheck},
    string_enum::string_enum,
};
use secrecy::{ExposeSecret, SecretString};

#[derive(Clone, Copy, Debug, Default)]
pub struct Umami;

pub const CLOUD_URL: &str = "https://cloud.umami.is";
/// Events per `/api/batch` request. Umami sets no limit, but it stores the events one after the
/// other before answering, and has no idempotency key: a batch that times out is retried whole,
/// so what Umami had stored is stored again. Small batches keep that rare double count small.
pub const BATCH_LIMIT: usize = 20;
/// Umami Cloud's API (API keys), apart from the collect endpoint.
pub const CLOUD_API_URL: &str = "https://api.umami.is/v1";
/// zod: `name: z.string().max(50)` — UTF-16 code units (zod 4 counts `string.length`).
pub const MAX_NAME_UNITS: usize = 50;
/// `session.distinct_id VarChar(50)`.
pub const MAX_ID_CHARS: usize = 50;
/// `event_data.data_key` / `string_value VarChar(500)`.
pub const MAX_DATA_CHARS: usize = 500;
/// `website_event.utm_* VarChar(255)` and the click-id columns; parsed by Umami from `url`.
pub const MAX_UTM_CHARS: usize = 255;
/// Umami cuts titles and URL paths and queries to 500 UTF-16 units itself (`substring(0, 500)`)
/// before its `varchar(500)` columns; they are cut here too so nothing is lost unseen.
pub const MAX_TITLE_UNITS: usize = 500;
pub const MAX_URL_PART_UNITS: usize = 500;
/// `website_event.hostname VarChar(100)` and zod's `hostname` limit.
const MAX_HOSTNAME_CHARS: usize = 100;
/// `event_data.number_value` and `revenue.revenue` are `numeric(19,4)`: 15 digits before the point.
const MAX_NUMBER_ABS: f64 = 1e15;
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
    /// `send` (the default): one event per request to `/api/send`, which every Umami has.
    /// `batch`: up to 20 events per request to `/api/batch` (Umami v3.0.2 or later; see
    /// docs/providers.md for older versions).
    #[serde(default)]
    #[schema(inline)]
    pub endpoint: Endpoint,
}

string_enum! {
    /// Which collect endpoint a Umami config sends to.
    #[derive(Default, ToSchema)]
    pub enum Endpoint {
        /// `/api/send`: one event per request.
        #[default]
        Send = "send",
        /// `/api/batch`: an array of events, answered with a result per event.
        Batch = "batch",
    }
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

/// Why Umami would refuse this event name, if it would. Names over 50 UTF-16 code units are
/// refused by zod (400, not truncated): 30 emoji are 60 units. Names starting with `=`, `+`,
/// `-`, `@`, tab or CR are refused by the spreadsheet-formula guard providers.md describes for recent versions (not in v3.1.0's source,
/// but such a name is also a CSV-injection hazard in Umami's exports, so it is never sent).
pub fn name_problem(name: &str) -> Option<Blocked> {
    if name.encode_utf16().count() > MAX_NAME_UNITS {
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

    fn batch_limit(s: &UmamiSettings) -> usize {
        match s.endpoint {
            Endpoint::Send => 1,
            Endpoint::Batch => BATCH_LIMIT,
        }
    }

    fn item(s: &UmamiSettings, out: &Outgoing<'_>) -> Result<Item, String> {
        let event = out.event;
        let mut adjustments = Vec::new();
        let mut payload = Map::new();
        payload.insert("website".into(), json!(s.website_id));
        // Always sent when known: without it Umami stores the URL's host, which has no limit
        // before its 100-character column.
        if let Some(host) = page_host(event) {
            let cut = truncate_chars(&host, MAX_HOSTNAME_CHARS);
            if cut.len() < host.len() {
                adjustments.push(format!("hostname cut to {MAX_HOSTNAME_CHARS} characters"));
            }
            payload.insert("hostname".into(), json!(cut));
        }
        if let Some(url) = event.page_url.as_deref() {
            let url = fit_utm(url, &mut adjustments);
            payload.insert("url".into(), json!(fit_url_parts(&url, "URL", &mut adjustments)));
        }
        if let Some(r) = event.referrer.as_deref().filter(|r| !r.is_empty()) {
            payload.insert("referrer".into(), json!(fit_url_parts(r, "referrer", &mut adjustments)));
        }
        if let Some(t) = event.title.as_deref().filter(|t| !t.is_empty()) {
            let cut = truncate_utf16(t, MAX_TITLE_UNITS);
            if cut.len() < t.len() {
                adjustments.push(format!("title cut to {MAX_TITLE_UNITS} characters"));
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
                if fits_numeric(&rev.amount) {
                    let taken: Vec<&str> =
                        ["revenue", "currency"].into_iter().filter(|k| data.contains_key(*k)).collect();
                    if !taken.is_empty() {
                        adjustments.push(format!("properties {taken:?} replaced by the event's revenue"));
                    }
                    data.insert("revenue".into(), Value::Number(rev.amount));
                    data.insert("currency".into(), json!(rev.currency));
                } else {
                    // Umami writes revenue to a numeric(19,4) column after the event row; as text
                    // it would still reach that column, so it is left out.
                    adjustments.push("revenue left out: over Umami's 15-digit limit".into());
                }
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
        if let Some(ua) = out.user_agent.filter(|u| !u.is_empty()) {
            payload.insert("userAgent".into(), json!(ua));
        }
        if let Some(ip) = out.client_ip {
            payload.insert("ip".into(), json!(ip.to_string()));
        }
        payload.insert("timestamp".into(), json!(event.occurred_at.timestamp()));

        let mut headers = Vec::new();
        if let Some(ua) = out.user_agent.filter(|u| !u.is_empty()) {
            headers.push(("user-agent", ua.to_string()));
        }
        Ok(Item { body: json!({"type": "event", "payload": payload}), headers, adjustments })
    }

    /// `/api/send` with the one event, the visitor's agent also in the header; or `/api/batch`
    /// with the events as an array. Umami re-posts each to its send handler with the batch's
    /// headers, so per-visitor data travels in `payload` only (`userAgent`, `ip`).
    fn request(s: &UmamiSettings, _: &Credentials, items: &[Item]) -> Result<ProviderRequest, String> {
        let mut headers = vec![("content-type", "application/json".to_string())];
        match s.endpoint {
            Endpoint::Send => {
                let item = single("Umami /api/send", items)?;
                headers.extend(item.headers.iter().cloned());
                Ok(ProviderRequest { url: s.instance_url.join("/api/send"), headers, body: item.body.clone() })
            }
            Endpoint::Batch => Ok(ProviderRequest {
                url: s.instance_url.join("/api/batch"),
                headers,
                body: Value::Array(items.iter().map(|i| i.body.clone()).collect()),
            }),
        }
    }

    /// Umami Cloud's API key: `GET /v1/me` on api.umami.is (a self-hosted instance: `/api/me`).
    /// A self-hosted login: `POST /api/auth/login`, which only proves the pair and changes nothing.
    fn checks(s: &UmamiSettings, credentials: &Credentials) -> Vec<AuthCheck> {
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
                read: None,
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
                read: None,
            });
        }
        checks
    }

    fn classify(r: &ProviderResponse<'_>, items: usize) -> Answer {
        if (200..300).contains(&r.status)
            && let Ok(answer) = serde_json::from_slice::<BatchAnswer>(r.body)
        {
            return per_item(answer, items);
        }
        Answer::All(outcome(r))
    }
    #[cfg(test)]
    fn mapping_cases() -> Vec<super::testing::MappingCase> {
        use super::testing::{BROWSER_UA, MappingCase, event};
        use crate::consent::Identity::{Anonymous, Full};
        const WEBSITE: &str = "5b4b1a52-2f46-4e4a-9a0c-2b7c5a0a1f11";
        let s = json!({"website_id": WEBSITE, "instance_url": "http://127.0.0.1:9/umami"});
        let batch = json!({"website_id": WEBSITE, "instance_url": "http://127.0.0.1:9/umami", "endpoint": "batch"});
        let mut signup = event("signup");
        signup.user_id = Some("u-1".into());
        signup.event_properties = json!({"plan": "pro", "user_id": "u-1"});
        vec![
            MappingCase {
                body: vec![
                    ("/type", json!("event")),
                    ("/payload/website", json!(WEBSITE)),
                    ("/payload/name", Value::Null),
                    ("/payload/url", json!("https://www.example.com/pricing?utm_source=news")),
                    ("/payload/userAgent", json!(BROWSER_UA)),
                    ("/payload/ip", json!("203.0.113.7")),
                    ("/payload/timestamp", json!(1_795_694_400)),
                ],
                headers: vec![("user-agent", Some(BROWSER_UA))],
                ..MappingCase::new("a page view (/api/send)", s.clone(), event("pageview"), Full)
            },
            MappingCase {
                body: vec![
                    ("/payload/name", json!("signup")),
                    ("/payload/id", json!("u-1")),
                    ("/payload/data/plan", json!("pro")),
                    ("/payload/data/user_id", json!("u-1")),
                ],
                ..MappingCase::new("a custom event with full identity", s.clone(), signup.clone(), Full)
            },
            MappingCase {
                body: vec![
                    ("/payload/id", Value::Null),
                    ("/payload/data/plan", json!("pro")),
                    ("/payload/data/user_id", Value::Null),
                ],
                ..MappingCase::new("a custom event, anonymous: no id", s.clone(), signup.clone(), Anonymous)
            },
            MappingCase {
                body: vec![
                    ("/0/payload/name", json!("signup")),
                    ("/0/payload/userAgent", json!(BROWSER_UA)),
                    ("/1", Value::Null),
                ],
                headers: vec![("user-agent", None)],
                ..MappingCase::new("a custom event through /api/batch", batch, signup, Full)
            },
            MappingCase {
                refused: Some("event_name_too_long"),
                ..MappingCase::new("a name over 50 UTF-16 units", s, event(&"😀".repeat(26)), Full)
            },
        ]
    }
}

/// `/api/batch`'s answer (umami@c0ea3ae `src/app/api/batch/route.ts`): the events taken, and the
/// send handler's error answer for each one that was not.
#[derive(Deserialize)]
struct BatchAnswer {
    size: usize,
    details: Vec<BatchError>,
}

#[derive(Deserialize)]
struct BatchError {
    index: usize,
    response: Value,
}

/// One outcome per event of a batch. An event without an error entry was stored — or taken for a
/// bot and discarded: the batch counts Umami's `{"beep":"boop"}` as processed and does not say
/// which (the gateway filters bots at ingest, so this is rare). An error entry carries the send
/// handler's answer, classified like the answer to `/api/send`.
fn per_item(answer: BatchAnswer, items: usize) -> Answer {
    if answer.size != items || answer.details.iter().any(|d| d.index >= items) {
        return Answer::All(Outcome::Retry {
            reason: format!("Umami's batch answer is about {} events, not the {items} sent", answer.size),
        });
    }
    let mut outcomes = vec![Outcome::Delivered; items];
    let none = Headers::default();
    for d in answer.details {
        let body = d.response.to_string();
        let status = error_status(&d.response);
        outcomes[d.index] = match status {
            Some(status) => outcome(&ProviderResponse { status, headers: &none, body: body.as_bytes() }),
            None => Outcome::Retry {
                reason: format!("Umami did not take the event and did not say why: {}", body_excerpt(body.as_bytes())),
            },
        };
    }
    Answer::PerItem(outcomes)
}

/// The status an error answer of Umami's send handler had. v3 puts it in the body
/// (`{"error": {"status": 400, "code": "bad-request", …}}`); v2.20 (`src/lib/response.ts` at
/// v2.20.2) answers `{"error": <serializeError(e)>}`: `"Forbidden"` (403), `"Unauthorized"`
/// (401), another text or zod's messages (400, e.g. `"Website not found."`), or the serialised
/// exception, an object with `name`/`message`/`stack` (500).
fn error_status(response: &Value) -> Option<u16> {
    let e = &response["error"];
    if let Some(s) = e["status"].as_u64() {
        return u16::try_from(s).ok();
    }
    match e {
        Value::String(s) if s == "Forbidden" => Some(403),
        Value::String(s) if s == "Unauthorized" => Some(401),
        Value::String(_) | Value::Array(_) => Some(400),
        Value::Object(o) => match o.get("code").and_then(Value::as_str) {
            Some("forbidden") => Some(403),
            Some("bad-request") => Some(400),
            Some("server-error") => Some(500),
            _ if o.contains_key("stack") || o.contains_key("name") => Some(500),
            _ => None,
        },
        _ => None,
    }
}

/// What Umami's answer to one event (`/api/send`), or to a whole batch request, means.
fn outcome(r: &ProviderResponse<'_>) -> Outcome {
    if (200..300).contains(&r.status) {
        let body: Value = serde_json::from_slice(r.body).unwrap_or(Value::Null);
        if body.get("beep").is_some() {
            return Outcome::Dropped {
                warning: "Umami answered {\"beep\":\"boop\"}: it took the request for a bot and stored nothing".into(),
            };
        }
        // Umami's collect API answers `{"cache", "sessionId", "visitId"}` (v2.17+), `{"cache"}`
        // (v2.16) or the bare cache token as text (up to v2.15). Any other success (a
        // catch-all page or a proxy's 200 at a wrong instance_url) reached something else: it
        // is retried, as for Plausible, never counted as delivered.
        if body.get("sessionId").is_some() || body.get("cache").is_some() || is_bare_token(r.body) {
            return Outcome::Delivered;
        }
        return Outcome::Retry {
            reason: format!(
                "the answer ({}) is not Umami's collect answer; check the config's instance_url: {}",
                r.status,
                body_excerpt(r.body)
            ),
        };
    }
    if r.status == 403 && is_umamis_forbidden(r.body) {
        // Umami's collect endpoint has no authentication; its own 403 means the visitor's IP
        // is in the instance's IGNORE_IP list — a deliberate discard of this visitor, not a
        // broken config, so it must not stop the config's other deliveries. Any other 403
        // comes from something in front of Umami (an auth proxy, a WAF): an auth failure.
        return Outcome::Dropped {
            warning: format!("Umami refused the visitor's IP (403, IGNORE_IP): {}", body_excerpt(r.body)),
        };
    }
    if r.status == 500
        && let Some(write) = failed_after_the_event_row(r.body)
    {
        return Outcome::Dead {
            reason: format!(
                "Umami stored the event, then failed writing {write} (500); not retried, since a retry would \
                 store the event again: {}",
                body_excerpt(r.body)
            ),
        };
    }
    classify_failure("Umami", r.status, r.body)
}

/// A JWT (`header.payload.signature`, base64url), which Umami up to v2.15 answered as text.
fn is_bare_token(body: &[u8]) -> bool {
    let text = body.trim_ascii();
    let parts: Vec<&[u8]> = text.split(|b| *b == b'.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')))
}

/// Umami's own 403 body: `{"error": {"message": "Forbidden", "code": "forbidden", …}}` (v3,
/// `src/lib/response.ts`) or `{"error": "Forbidden"}` (v2.20).
fn is_umamis_forbidden(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return false };
    match &v["error"] {
        Value::String(s) => s == "Forbidden",
        e => e["code"] == "forbidden" || e["message"] == "Forbidden",
    }
}

/// The write that failed, when a 500 names one Umami makes *after* the `website_event` row
/// (`saveEvent`: event data, then revenue). Umami's 500 carries the serialised exception
/// (`errorObject` in v3, the error itself in v2.20), whose Prisma message names the call, e.g.
/// ``Invalid `prisma.eventData.createMany()` invocation``.
fn failed_after_the_event_row(body: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(body);
    [("eventData.createMany", "its event data"), ("revenue.create", "its revenue")]
        .into_iter()
        .find(|(call, _)| text.contains(call))
        .map(|(_, what)| what)
}

/// A text Umami takes for a date (`DATETIME_REGEX`: `YYYY-MM-DDTHH:MM:SS[.mmm[Z|+HH:MM]]`) but
/// that is none (`2026-13-01T00:00:00`): Umami stores the event row, then `new Date(v)
/// .toISOString()` throws while writing the event data — a 500 after storing.
fn is_impossible_date(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let shape = b.len() >= 19
        && digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && match &b[19..] {
            [] => true,
            [b'.', rest @ ..] => {
                rest.len() >= 3
                    && rest[..3].iter().all(u8::is_ascii_digit)
                    && match &rest[3..] {
                        [] | [b'Z'] => true,
                        [b'+', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|d| d.is_ascii_digit()),
                        _ => false,
                    }
            }
            _ => false,
        };
    if !shape {
        return false;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(u32::MAX);
    let offset_ok = s.len() < 29 || (n(24..26) <= 23 && n(27..29) <= 59);
    let valid = chrono::NaiveDate::from_ymd_opt(n(0..4) as i32, n(5..7), n(8..10)).is_some()
        && chrono::NaiveTime::from_hms_opt(n(11..13), n(14..16), n(17..19)).is_some()
        && offset_ok;
    !valid
}

/// Whether a number fits `numeric(19,4)`: at most 15 digits before the point (more decimals are
/// rounded by PostgreSQL, not refused).
fn fits_numeric(n: &serde_json::Number) -> bool {
    match (n.as_i64(), n.as_u64(), n.as_f64()) {
        (Some(i), _, _) => i.unsigned_abs() < MAX_NUMBER_ABS as u64,
        (_, Some(u), _) => u < MAX_NUMBER_ABS as u64,
        (_, _, Some(f)) => f.abs() < MAX_NUMBER_ABS,
        _ => false,
    }
}

/// The path (with its fragment) and query of a URL cut to Umami's 500, as Umami itself would cut
/// them, so that the change is recorded. A URL that does not parse goes as it is (Umami resolves
/// it against its base; the ingest keeps page URLs absolute).
fn fit_url_parts(raw: &str, what: &str, adjustments: &mut Vec<String>) -> String {
    let Ok(mut u) = url::Url::parse(raw) else { return raw.to_string() };
    let mut cut = Vec::new();
    // Serialised URLs are ASCII (percent-encoded), so bytes, characters and UTF-16 units agree;
    // Umami counts the *decoded* text, which is never longer.
    let path_len = u.path().len() + u.fragment().map_or(0, |f| f.len() + 1);
    if path_len > MAX_URL_PART_UNITS {
        if u.path().len() >= MAX_URL_PART_UNITS {
            let path = u.path()[..MAX_URL_PART_UNITS].to_string();
            u.set_path(&path);
            u.set_fragment(None);
        } else {
            let room = MAX_URL_PART_UNITS - u.path().len() - 1;
            let fragment = u.fragment().map(|f| f[..room].to_string());
            u.set_fragment(fragment.as_deref());
        }
        cut.push("path");
    }
    if let Some(q) = u.query().filter(|q| q.len() > MAX_URL_PART_UNITS) {
        let q = q[..MAX_URL_PART_UNITS].to_string();
        u.set_query(Some(&q));
        cut.push("query");
    }
    if cut.is_empty() {
        return raw.to_string();
    }
    adjustments.push(format!("{what} {} cut to {MAX_URL_PART_UNITS} characters", cut.join(" and ")));
    u.to_string()
}

/// `s` cut to at most `max` UTF-16 code units, at a character boundary (JavaScript's length).
fn truncate_utf16(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            return std::borrow::Cow::Owned(s[..i].to_string());
        }
    }
    std::borrow::Cow::Borrowed(s)
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
/// text values of at most 500 characters, numbers beyond `numeric(19,4)` as text, nulls left out.
/// A dotted name that a nested object also makes (`{"a.b": 1, "a": {"b": 2}}`) keeps the first
/// value in key order and records the other as left out, rather than overwrite it unseen.
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
    if out.contains_key(&key) {
        adjustments.push(format!("property {key:?} given twice (a dotted name and a nested one); the second left out"));
        return;
    }
    let text = |s: String, out: &mut Map<String, Value>, adjustments: &mut Vec<String>| {
        let cut = truncate_chars(&s, MAX_DATA_CHARS);
        if cut.len() < s.len() {
            adjustments.push(format!("property {key:?} cut to {MAX_DATA_CHARS} characters"));
        }
        out.insert(key.clone(), Value::String(cut.into_owned()));
    };
    match value {
        Value::Null => {}
        Value::String(s) if is_impossible_date(&s) => {
            adjustments.push(format!("property {key:?} left out: shaped like a date but no valid date"));
        }
        Value::String(s) => text(s, out, adjustments),
        Value::Array(_) => text(value.to_string(), out, adjustments),
        Value::Number(n) if !fits_numeric(&n) => {
            adjustments.push(format!("property {key:?} sent as text: over Umami's 15-digit number column"));
            out.insert(key, Value::String(n.to_string()));
        }
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
        testing::{BROWSER_UA, One, event, one, outcome, outgoing},
    };

    const WEBSITE: &str = "5b4b1a52-2f46-4e4a-9a0c-2b7c5a0a1f11";

    fn settings(v: Value) -> UmamiSettings {
        serde_json::from_value(v).unwrap()
    }

    fn base() -> UmamiSettings {
        settings(json!({"website_id": WEBSITE, "instance_url": "http://127.0.0.1:9/umami"}))
    }

    fn build(s: &UmamiSettings, e: &entity::analytics_event::Model, identity: Identity) -> One {
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        one::<Umami>(s, &outgoing(e, identity, Some(ip))).unwrap()
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
        e.page_url = Some(format!("https://www.example.com/?utm_campaign={}&q={}", "c".repeat(300), "x".repeat(200)));
        e.event_properties = json!({"long": "é".repeat(600), "k".repeat(501): 1});
        e.title = Some("t".repeat(700));
        let req = build(&base(), &e, Identity::Full);
        let p = &req.body["payload"];
        assert!(p["id"].as_str().unwrap().chars().count() <= MAX_ID_CHARS);
        assert_eq!(p["id"], build(&base(), &e, Identity::Full).body["payload"]["id"], "stable");
        let url = url::Url::parse(p["url"].as_str().unwrap()).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["utm_campaign"].len(), MAX_UTM_CHARS);
        assert_eq!(q["q"].len(), 200, "non-UTM parameters are left alone");
        assert_eq!(p["data"]["long"].as_str().unwrap().chars().count(), MAX_DATA_CHARS);
        assert_eq!(p["data"].as_object().unwrap().len(), 1);
        assert_eq!(p["title"].as_str().unwrap().len(), MAX_TITLE_UNITS);
        assert_eq!(req.adjustments.len(), 4, "{:?}", req.adjustments);
    }

    #[test]
    fn numbers_and_page_fields_never_overflow_umamis_columns() {
        let mut e = event("signup");
        let host = format!("{}.{}.example.com", "a".repeat(60), "b".repeat(60));
        e.page_url = Some(format!("https://{host}/{}?utm_source=x&q={}#top", "p".repeat(600), "q".repeat(600)));
        e.referrer = Some(format!("https://search.example.org/?q={}", "r".repeat(600)));
        e.title = Some("😀".repeat(300));
        e.event_properties = json!({"ts_us": 1_795_694_400_000_000_i64, "big": 1e20, "id64": u64::MAX,
                                    "small": 42, "price": 19.99, "neg": -999_999_999_999_999_i64});
        e.revenue = Some(json!({"amount": 1e16, "currency": "EUR"}));
        let req = build(&base(), &e, Identity::Full);
        let p = &req.body["payload"];
        assert_eq!(p["hostname"].as_str().unwrap(), &host[..100]);
        let url = url::Url::parse(p["url"].as_str().unwrap()).unwrap();
        assert!(url.path().len() <= MAX_URL_PART_UNITS && url.query().unwrap().len() <= MAX_URL_PART_UNITS);
        assert_eq!(url.query_pairs().next().unwrap(), ("utm_source".into(), "x".into()));
        let referrer = url::Url::parse(p["referrer"].as_str().unwrap()).unwrap();
        assert_eq!(referrer.query().unwrap().len(), MAX_URL_PART_UNITS);
        assert_eq!(p["title"].as_str().unwrap().encode_utf16().count(), MAX_TITLE_UNITS, "Umami counts UTF-16");
        let data = &p["data"];
        assert_eq!(data["ts_us"], "1795694400000000");
        assert_eq!(data["big"], "1e+20");
        assert_eq!(data["id64"], u64::MAX.to_string());
        assert_eq!((data["small"].clone(), data["price"].clone()), (json!(42), json!(19.99)));
        assert_eq!(data["neg"], json!(-999_999_999_999_999_i64), "15 digits fit");
        assert!(data.get("revenue").is_none() && data.get("currency").is_none(), "{data}");
        let all = req.adjustments.join("\n");
        for change in [
            "hostname cut",
            "URL path and query cut",
            "referrer query cut",
            "title cut",
            "\"ts_us\"",
            "\"big\"",
            "\"id64\"",
            "revenue left out",
        ] {
            assert!(all.contains(change), "{change} not in {all}");
        }
        assert_eq!(req.adjustments.len(), 8, "{all}");
    }

    #[test]
    fn a_dotted_name_and_a_nested_one_never_become_one_key_unseen() {
        let mut e = event("signup");
        e.event_properties = json!({"a.b": 1, "a": {"b": 2}, "c": 3});
        e.revenue = Some(json!({"amount": 5, "currency": "EUR"}));
        e.event_properties["revenue"] = json!("site's own");
        let req = build(&base(), &e, Identity::Full);
        let data = req.body["payload"]["data"].as_object().unwrap();
        assert!(data["a.b"] == json!(1) || data["a.b"] == json!(2), "{data:?}");
        assert_eq!((data["c"].clone(), data["revenue"].clone()), (json!(3), json!(5)));
        let all = req.adjustments.join("\n");
        assert!(all.contains("\"a.b\" given twice"), "{all}");
        assert!(all.contains("replaced by the event's revenue"), "{all}");
    }

    #[test]
    fn impossible_dates_are_left_out_valid_ones_and_other_text_kept() {
        for bad in
            ["2026-13-01T00:00:00", "2026-02-30T10:00:00.000Z", "2026-01-01T25:00:00", "2026-01-01T00:00:00.000+24:00"]
        {
            assert!(is_impossible_date(bad), "{bad}");
        }
        for fine in [
            "2026-11-26T12:00:00",
            "2026-11-26T12:00:00.123Z",
            "2026-11-26T12:00:00.123+01:00",
            "2026-13-01",
            "2026-13-01T00:00:00Z",
            "not a date",
            "2026-13-01T00:00:00.1Z",
        ] {
            assert!(!is_impossible_date(fine), "{fine} is a valid date or not date-shaped for Umami");
        }
        let mut e = event("signup");
        e.event_properties = json!({"when": "2026-13-01T00:00:00", "ok": "2026-11-26T12:00:00"});
        let req = build(&base(), &e, Identity::Full);
        assert_eq!(req.body["payload"]["data"], json!({"ok": "2026-11-26T12:00:00"}));
        assert!(req.adjustments[0].contains("\"when\" left out"), "{:?}", req.adjustments);
    }

    #[test]
    fn event_names_are_counted_in_utf16_as_umami_does() {
        let s = base();
        assert_eq!(Umami::accepts(&s, &event(&"😀".repeat(30))), Err(Blocked::EventNameTooLong));
        assert_eq!(Umami::accepts(&s, &event(&"😀".repeat(26))), Err(Blocked::EventNameTooLong));
        assert_eq!(Umami::accepts(&s, &event(&"😀".repeat(25))), Ok(()));
        assert_eq!(Umami::accepts(&s, &event(&"é".repeat(50))), Ok(()), "one unit each");
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
    fn the_batch_endpoint_carries_each_visitor_in_its_payload() {
        let s =
            settings(json!({"website_id": WEBSITE, "instance_url": "http://127.0.0.1:9/umami", "endpoint": "batch"}));
        assert_eq!(Umami::batch_limit(&s), BATCH_LIMIT);
        assert_eq!(Umami::batch_limit(&base()), 1, "/api/send takes one event");
        let ip: IpAddr = "2001:db8::7".parse().unwrap();
        let (a, b) = (event("pageview"), event("signup"));
        let items: Vec<Item> =
            [&a, &b].iter().map(|e| Umami::item(&s, &outgoing(e, Identity::Full, Some(ip))).unwrap()).collect();
        let req = Umami::request(&s, &Credentials::default(), &items).unwrap();
        assert_eq!(req.url, "http://127.0.0.1:9/umami/api/batch");
        assert!(req.header("user-agent").is_none(), "shared by every event of the batch: never one visitor's");
        let sent = req.body.as_array().unwrap();
        assert_eq!(sent.len(), 2);
        assert_eq!(
            (sent[0]["payload"]["userAgent"].as_str(), sent[1]["payload"]["ip"].as_str()),
            (Some(BROWSER_UA), Some("2001:db8::7"))
        );
        assert_eq!(sent[1]["payload"]["name"], "signup");
        assert!(Umami::request(&base(), &Credentials::default(), &items).is_err(), "/api/send: one event only");
        assert!(serde_json::from_value::<UmamiSettings>(json!({"website_id": WEBSITE, "endpoint": "bulk"})).is_err());
    }

    #[test]
    fn batch_answers_are_classified_per_event() {
        let h = Headers::default();
        let r = |body: Value, items| {
            Umami::classify(&ProviderResponse { status: 200, headers: &h, body: body.to_string().as_bytes() }, items)
        };
        let all_taken = json!({"size": 3, "processed": 3, "errors": 0, "details": [], "cache": "x"});
        assert_eq!(r(all_taken, 3), Answer::PerItem(vec![Outcome::Delivered; 3]));
        let mixed = json!({"size": 4, "processed": 1, "errors": 3, "cache": null, "details": [
            {"index": 0, "response": {"error": {"message": "Website not found.", "code": "bad-request", "status": 400}}},
            {"index": 1, "response": {"error": {"message": "Forbidden", "code": "forbidden", "status": 403}}},
            {"index": 3, "response": {"error": {"message": "Server error", "code": "server-error", "status": 500}}}]});
        let Answer::PerItem(v) = r(mixed, 4) else { panic!() };
        assert!(matches!(&v[0], Outcome::Dead { reason } if reason.contains("Website not found")), "{v:?}");
        assert!(matches!(v[1], Outcome::Dropped { .. }), "Umami's own 403: IGNORE_IP");
        assert_eq!(v[2], Outcome::Delivered);
        assert!(matches!(v[3], Outcome::Retry { .. }));
        // v2.20's shapes: `{"error": <serializeError(e)>}`.
        let v2 = json!({"size": 4, "processed": 0, "errors": 4, "details": [
            {"index": 0, "response": {"error": "Website not found."}},
            {"index": 1, "response": {"error": "Forbidden"}},
            {"index": 2, "response": {"error": {"name": "PrismaClientKnownRequestError", "code": "P2020",
                "message": "Invalid `prisma.eventData.createMany()` invocation: numeric field overflow"}}},
            {"index": 3, "response": {"error": {"name": "Error", "message": "connect ECONNREFUSED", "stack": "…"}}}]});
        let Answer::PerItem(v) = r(v2, 4) else { panic!() };
        assert!(matches!(&v[0], Outcome::Dead { reason } if reason.contains("Website not found")), "{v:?}");
        assert!(matches!(v[1], Outcome::Dropped { .. }), "{v:?}");
        assert!(matches!(&v[2], Outcome::Dead { reason } if reason.contains("stored the event")), "{v:?}");
        assert!(matches!(v[3], Outcome::Retry { .. }), "{v:?}");
        let unknown = json!({"size": 1, "processed": 0, "errors": 1, "details": [{"index": 0, "response": {}}]});
        assert!(matches!(&r(unknown, 1), Answer::PerItem(v) if matches!(v[0], Outcome::Retry { .. })));
        // An answer about another number of events is not trusted for any of them.
        let short = json!({"size": 2, "processed": 2, "errors": 0, "details": [], "cache": "x"});
        assert!(matches!(r(short, 3), Answer::All(Outcome::Retry { .. })));
        // The whole batch refused (an array Umami cannot read), or an old Umami without /api/batch.
        let refused = Umami::classify(&ProviderResponse { status: 404, headers: &h, body: b"Not found" }, 3);
        assert!(matches!(refused, Answer::All(Outcome::Dead { .. })), "{refused:?}");
    }

    #[test]
    fn answers() {
        let h = Headers::default();
        let r = |status, body: &[u8]| outcome::<Umami>(&ProviderResponse { status, headers: &h, body });
        assert_eq!(r(200, br#"{"cache":"x","sessionId":"s","visitId":"v"}"#), Outcome::Delivered);
        assert!(matches!(r(200, br#"{"beep":"boop"}"#), Outcome::Dropped { .. }));
        // A 200 that is not Umami's answer (a wrong instance_url behind a proxy) is no delivery.
        assert!(matches!(r(200, b"<html>Welcome</html>"), Outcome::Retry { .. }));
        assert!(matches!(r(200, b"{}"), Outcome::Retry { .. }));
        assert_eq!(r(200, br#"{"cache":"eyJhbGciOiJIUzI1NiJ9.eyJ3IjoxfQ.c2ln"}"#), Outcome::Delivered, "v2.16");
        assert_eq!(r(200, b"eyJhbGciOiJIUzI1NiJ9.eyJ3IjoxfQ.c2ln"), Outcome::Delivered, "v2.15 and older");
        assert!(matches!(r(400, br#"{"error":{"message":"Website not found."}}"#), Outcome::Dead { .. }));
        // Umami's own 403 (IGNORE_IP), v3 and v2.20 shapes; anyone else's 403 is an auth failure.
        assert!(matches!(
            r(403, br#"{"error":{"message":"Forbidden","code":"forbidden","status":403}}"#),
            Outcome::Dropped { .. }
        ));
        assert!(matches!(r(403, br#"{"error":"Forbidden"}"#), Outcome::Dropped { .. }));
        for proxy in [&b""[..], b"<html><h1>403 Forbidden</h1></html>", br#"{"message":"Forbidden"}"#] {
            assert!(matches!(r(403, proxy), Outcome::AuthFailure { .. }), "{}", String::from_utf8_lossy(proxy));
        }
        assert!(matches!(r(401, b""), Outcome::AuthFailure { .. }));
        assert!(matches!(r(500, b""), Outcome::Retry { .. }));
        // A 500 after the event row was written is not retried (a retry would store it again).
        let after_row = br#"{"error":{"message":"Server error","code":"server-error","status":500,"errorObject":
            {"name":"PrismaClientKnownRequestError","code":"P2020","message":"\nInvalid `prisma.eventData.createMany()`
            invocation:\n\nValue out of range for the type. numeric field overflow"}}}"#;
        match r(500, after_row) {
            Outcome::Dead { reason } => assert!(reason.contains("stored the event"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let before_row = br#"{"error":{"message":"Server error","code":"server-error","status":500,"errorObject":
            {"code":"P2000","message":"Invalid `prisma.websiteEvent.create()` invocation: The provided value for the
            column is too long for the column's type. Column: hostname"}}}"#;
        assert!(matches!(r(500, before_row), Outcome::Retry { .. }));
    }
}
