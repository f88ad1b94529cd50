//! PostHog's capture and flags services as their source has them (providers-sources.md §3:
//! `rust/capture/src/v0_request.rs`, `token.rs`, `timestamp.rs`, `api.rs`, `v0_endpoint.rs`,
//! `router.rs`; `rust/feature-flags/src/api/errors.rs`, `types.rs`):
//! - capture routes `/i/v0/e[/]`, `/e[/]`, `/capture[/]` (2 MB) and `/batch[/]` (20 MB) → 413
//!   over the limit; bodies: one event, an array of events, or `{"api_key", "batch": [...],
//!   "historical_migration"?, "sent_at"?}`; not JSON → 400;
//! - the token (`api_key`, `token`, `$token` or `properties.token`) is checked for *shape* only:
//!   missing, empty, over 64 characters, not ASCII, or a personal `phx_` key → 401; two tokens in
//!   one request → 401;
//! - one event without a name, without a `distinct_id` (or `$distinct_id`,
//!   `properties.distinct_id`), with a `uuid` that is not a UUID, or a non-boolean
//!   `$cookieless_mode` fails the **whole** request with 400; an empty batch → 400;
//! - otherwise `200 {"status":"Ok"}` — also for a token that is no project (`projects`) and for a
//!   project over its quota (`quota_exceeded`): those events are dropped, unseen;
//! - stored events are kept as ClickHouse would collapse them: one row per (token, day of the
//!   timestamp, event, distinct id, uuid), with `copies` counting how often it arrived (a missing
//!   uuid gets a fresh one, so never collapses); the timestamp as capture reads it: shifted by
//!   `now − sent_at` when the batch has a `sent_at` (a stale one misdates every event), more than
//!   23 h ahead → now;
//! - `POST /flags?v=2` (and `/decide`): no token → 401 "No API token provided…", a token that is
//!   no project → 401 "The provided API key is invalid or has expired…", no `distinct_id` → 400,
//!   otherwise 200 `{"errorsWhileComputingFlags": false, "flags": {…}, "requestId"}` with the
//!   behaviour's `flags` (a flag's value: `true`/`false` or a variant name); without `v=2`, the
//!   legacy `{"featureFlags": {…}}`.
//!
//! Steered by `POST /_fake/posthog` (`projects`, `flags`, `quota_exceeded`, `fail_next` +
//! `status`, `status`, `delay_ms` — an answer delayed *after* the events are stored, as when the
//! gateway's worker dies mid-request —, `poison_events`: names whose event fails its request
//! with 400, as a bad uuid does); the stored events are at `GET /_fake/posthog/events`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Query, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::state::{Fakes, Forced, Received, body_value, failure_response, header_map, now};

const CAPTURE_LIMIT: usize = 2 * 1024 * 1024;
const BATCH_LIMIT: usize = 20 * 1024 * 1024;

#[derive(Clone)]
pub struct PostHog {
    fakes: Fakes,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    behaviour: Behaviour,
    events: Vec<Stored>,
}

#[derive(Clone, Debug, Default, Serialize)]
struct Behaviour {
    /// Project API keys that are projects (others are answered 200 and dropped).
    projects: Vec<String>,
    /// Every distinct id's flags.
    flags: Map<String, Value>,
    quota_exceeded: bool,
    fail_next: u32,
    status: Option<u16>,
    delay_ms: u64,
    /// Event names PostHog cannot take, standing in for an event it cannot parse (a bad uuid):
    /// a request carrying one is refused whole with 400.
    poison_events: Vec<String>,
}

/// One event as PostHog keeps it after collapsing duplicates.
#[derive(Clone, Debug, Serialize)]
struct Stored {
    token: String,
    day: String,
    event: String,
    distinct_id: String,
    uuid: String,
    properties: Value,
    timestamp: Value,
    /// How many times it arrived (ClickHouse collapses them into one row).
    copies: u32,
}

impl PostHog {
    pub fn new(fakes: Fakes) -> Self {
        PostHog { fakes, inner: Arc::default() }
    }

    /// PostHog's own routes (mounted under `/posthog`).
    pub fn routes(&self) -> Router<Fakes> {
        Router::new()
            .route("/batch", post(batch))
            .route("/batch/", post(batch))
            .layer(DefaultBodyLimit::max(BATCH_LIMIT + 1))
            .route("/i/v0/e", post(capture))
            .route("/i/v0/e/", post(capture))
            .route("/e", post(capture))
            .route("/e/", post(capture))
            .route("/capture", post(capture))
            .route("/capture/", post(capture))
            .route("/flags", post(flags))
            .route("/flags/", post(flags))
            .route("/decide", post(flags))
            .route("/decide/", post(flags))
            .with_state(self.clone())
    }

    /// The control routes: `POST /_fake/posthog`, `GET /_fake/posthog/events`.
    pub fn control(&self) -> Router {
        Router::new()
            .route("/_fake/posthog", post(configure))
            .route("/_fake/posthog/events", get(events))
            .with_state(self.clone())
    }

    fn behaviour(&self) -> Behaviour {
        self.inner.lock().unwrap().behaviour.clone()
    }

    fn forced_failure(&self) -> Option<Forced> {
        let mut inner = self.inner.lock().unwrap();
        let b = &mut inner.behaviour;
        let status = b.status?;
        if b.fail_next > 0 {
            b.fail_next -= 1;
            if b.fail_next == 0 {
                b.status = None;
            }
        }
        Some(Forced { status, retry_after: None })
    }

    /// `skew`: `now − sent_at` when the request has a `sent_at` (capture shifts every timestamp
    /// by it).
    fn store(&self, token: &str, events: Vec<Map<String, Value>>, skew: Option<chrono::Duration>) {
        let mut inner = self.inner.lock().unwrap();
        for e in events {
            let event = e["event"].as_str().unwrap_or_default().to_string();
            let distinct_id = distinct_id(&e).unwrap_or_default();
            let uuid = match e.get("uuid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
                Some(u) => u.to_ascii_lowercase(),
                None => uuid::Uuid::now_v7().to_string(),
            };
            let at = event_time(e.get("timestamp"), skew);
            let day = at.date_naive().to_string();
            if let Some(s) = inner.events.iter_mut().find(|s| {
                s.token == token && s.day == day && s.event == event && s.distinct_id == distinct_id && s.uuid == uuid
            }) {
                s.copies += 1;
                continue;
            }
            inner.events.push(Stored {
                token: token.to_string(),
                day,
                event,
                distinct_id,
                uuid,
                properties: e.get("properties").cloned().unwrap_or(json!({})),
                timestamp: json!(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                copies: 1,
            });
        }
    }
}

async fn configure(State(ph): State<PostHog>, Json(body): Json<Value>) -> Json<Value> {
    let mut inner = ph.inner.lock().unwrap();
    let b = &mut inner.behaviour;
    for (k, v) in body.as_object().into_iter().flatten() {
        match k.as_str() {
            "projects" => {
                b.projects = v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
            }
            "flags" => b.flags = v.as_object().cloned().unwrap_or_default(),
            "quota_exceeded" => b.quota_exceeded = v.as_bool().unwrap_or(false),
            "fail_next" => b.fail_next = v.as_u64().unwrap_or(0) as u32,
            "status" => b.status = v.as_u64().map(|s| s as u16),
            "delay_ms" => b.delay_ms = v.as_u64().unwrap_or(0),
            "poison_events" => {
                b.poison_events =
                    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
            }
            _ => {}
        }
    }
    Json(json!(b))
}

async fn events(State(ph): State<PostHog>) -> Json<Value> {
    Json(json!(ph.inner.lock().unwrap().events))
}

/// When the event happened as capture reads it (`timestamp.rs`): RFC 3339, shifted by the
/// request's clock skew (`sent_at`) when there is one; unparsable → now; more than 23 hours ahead
/// → now.
fn event_time(timestamp: Option<&Value>, skew: Option<chrono::Duration>) -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    timestamp
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc) + skew.unwrap_or_default())
        .filter(|t| *t <= now + chrono::Duration::hours(23))
        .unwrap_or(now)
}

fn distinct_id(e: &Map<String, Value>) -> Option<String> {
    let v = e.get("distinct_id").or_else(|| e.get("$distinct_id")).or_else(|| e["properties"].get("distinct_id"))?;
    let s = match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    (!s.is_empty()).then(|| s.chars().take(200).collect())
}

fn text(status: StatusCode, msg: &str) -> Response {
    (status, msg.to_string()).into_response()
}

/// `token.rs`: trimmed, non-empty, ≤ 64, ASCII, no NUL, not a personal key.
fn token_problem(t: &str) -> Option<&'static str> {
    let t = t.trim();
    if t.is_empty() {
        Some("token is empty")
    } else if t.len() > 64 {
        Some("token is too long")
    } else if !t.is_ascii() || t.contains('\0') {
        Some("token is not ASCII")
    } else if t.starts_with("phx_") {
        Some("token is a personal API key")
    } else {
        None
    }
}

async fn batch(State(ph): State<PostHog>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    handle(ph, uri, headers, body, BATCH_LIMIT).await
}

async fn capture(State(ph): State<PostHog>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    handle(ph, uri, headers, body, CAPTURE_LIMIT).await
}

async fn handle(ph: PostHog, uri: Uri, headers: HeaderMap, body: Bytes, limit: usize) -> Response {
    let (res, outcome, status, reason, stored) = answer(&ph, &body, limit);
    ph.fakes.record(Received {
        provider: "posthog",
        path: uri.path().trim_start_matches("/posthog").to_string(),
        headers: header_map(&headers),
        body: body_value(&body),
        status,
        outcome,
        reason,
        resolved_ip: None,
        at: now(),
    });
    // Stored already: a gateway that gives up waiting (or dies) now has sent them anyway.
    let delay = ph.behaviour().delay_ms;
    if stored && delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    res
}

type Answer = (Response, &'static str, u16, Option<String>, bool);

fn answer(ph: &PostHog, body: &[u8], limit: usize) -> Answer {
    if let Some(f) = ph.forced_failure() {
        return (failure_response(&f), "failed", f.status, Some("told to fail".into()), false);
    }
    let reject = |status: StatusCode, why: &str| -> Answer {
        (text(status, why), "rejected", status.as_u16(), Some(why.to_string()), false)
    };
    if body.len() > limit {
        return reject(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
    }
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        return reject(StatusCode::BAD_REQUEST, "failed to decode or validate request: not JSON");
    };
    let mut skew = None;
    let (batch_token, events) = match parsed {
        Value::Object(mut m) if m.contains_key("batch") => {
            let token = m.get("api_key").or_else(|| m.get("token")).and_then(Value::as_str).map(String::from);
            skew = m
                .get("sent_at")
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|sent| chrono::Utc::now() - sent.with_timezone(&chrono::Utc));
            match m.remove("batch") {
                Some(Value::Array(events)) => (token, events),
                _ => return reject(StatusCode::BAD_REQUEST, "failed to decode or validate request: batch"),
            }
        }
        Value::Array(events) => (None, events),
        single @ Value::Object(_) => (None, vec![single]),
        _ => return reject(StatusCode::BAD_REQUEST, "failed to decode or validate request"),
    };
    if events.is_empty() {
        return reject(StatusCode::BAD_REQUEST, "empty batch");
    }
    let mut token = batch_token;
    let mut valid = Vec::new();
    for e in events {
        let Value::Object(e) = e else {
            return reject(StatusCode::BAD_REQUEST, "failed to decode or validate event: not an object");
        };
        let own = ["api_key", "token", "$token"]
            .iter()
            .find_map(|k| e.get(*k))
            .or_else(|| e["properties"].get("token"))
            .and_then(Value::as_str)
            .map(String::from);
        match (&token, own) {
            (Some(a), Some(b)) if *a != b => return reject(StatusCode::UNAUTHORIZED, "multiple tokens in one request"),
            (None, Some(b)) => token = Some(b),
            _ => {}
        }
        if e.get("event").and_then(Value::as_str).is_none_or(|n| n.is_empty()) {
            return reject(StatusCode::BAD_REQUEST, "missing event name");
        }
        if e["event"].as_str().is_some_and(|n| ph.behaviour().poison_events.iter().any(|p| p == n)) {
            return reject(StatusCode::BAD_REQUEST, "failed to decode or validate event: invalid uuid");
        }
        if distinct_id(&e).is_none() {
            return reject(StatusCode::BAD_REQUEST, "missing distinct_id");
        }
        match e.get("uuid") {
            None | Some(Value::Null) => {}
            Some(Value::String(u)) if u.is_empty() || uuid::Uuid::parse_str(u).is_ok() => {}
            Some(_) => return reject(StatusCode::BAD_REQUEST, "failed to decode or validate event: invalid uuid"),
        }
        if e["properties"].get("$cookieless_mode").is_some_and(|v| !v.is_boolean()) {
            return reject(StatusCode::BAD_REQUEST, "invalid $cookieless_mode");
        }
        valid.push(e);
    }
    let Some(token) = token else {
        return reject(StatusCode::UNAUTHORIZED, "no token");
    };
    if let Some(why) = token_problem(&token) {
        return reject(StatusCode::UNAUTHORIZED, why);
    }
    let ok = || (StatusCode::OK, Json(json!({"status": "Ok"}))).into_response();
    let b = ph.behaviour();
    if !b.projects.iter().any(|p| *p == token.trim()) {
        return (ok(), "dropped", 200, Some("no project has this key".into()), false);
    }
    if b.quota_exceeded {
        return (ok(), "dropped", 200, Some("the project is over its quota".into()), false);
    }
    ph.store(token.trim(), valid, skew);
    (ok(), "stored", 200, None, true)
}

async fn flags(
    State(ph): State<PostHog>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body).ok();
    let b = ph.behaviour();
    let token = parsed.as_ref().and_then(|p| p.get("api_key").or_else(|| p.get("token"))).and_then(Value::as_str);
    let distinct = parsed.as_ref().and_then(|p| p.get("distinct_id")).filter(|d| !d.is_null());
    let (status, res, outcome): (u16, Response, &'static str) = if let Some(f) = ph.forced_failure() {
        (f.status, failure_response(&f), "failed")
    } else if parsed.is_none() {
        (400, text(StatusCode::BAD_REQUEST, "Failed to parse request: not JSON"), "rejected")
    } else if token.is_none() {
        let msg = "No API token provided. Please include a valid API token in your request.";
        (401, text(StatusCode::UNAUTHORIZED, msg), "rejected")
    } else if !b.projects.iter().any(|p| Some(p.as_str()) == token) {
        let msg = "The provided API key is invalid or has expired. Please check your API key and try again.";
        (401, text(StatusCode::UNAUTHORIZED, msg), "rejected")
    } else if distinct.is_none_or(|d| d.as_str() == Some("")) {
        let msg = "The distinct_id field is missing from the request. Please include a valid identifier.";
        (400, text(StatusCode::BAD_REQUEST, msg), "rejected")
    } else {
        let v2 = query.get("v").and_then(|v| v.parse::<u32>().ok()).is_some_and(|v| v >= 2);
        let answer = if v2 {
            let flags: Map<String, Value> = b
                .flags
                .iter()
                .map(|(k, v)| {
                    let (enabled, variant) = match v {
                        Value::String(s) => (true, json!(s)),
                        other => (other.as_bool().unwrap_or(false), Value::Null),
                    };
                    (
                        k.clone(),
                        json!({"key": k, "enabled": enabled, "variant": variant,
                                       "reason": {"code": "condition_match"}, "metadata": {"id": 1, "version": 1}}),
                    )
                })
                .collect();
            json!({"errorsWhileComputingFlags": false, "flags": flags, "requestId": uuid::Uuid::new_v4()})
        } else {
            json!({"errorsWhileComputingFlags": false, "featureFlags": b.flags, "featureFlagPayloads": {}})
        };
        (200, (StatusCode::OK, Json(answer)).into_response(), "evaluated")
    };
    ph.fakes.record(Received {
        provider: "posthog",
        path: uri.path().trim_start_matches("/posthog").to_string(),
        headers: header_map(&headers),
        body: body_value(&body),
        status,
        outcome,
        reason: None,
        resolved_ip: None,
        at: now(),
    });
    if b.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.delay_ms)).await;
    }
    res
}
