//! GA4's Measurement Protocol as Google documents it (shared/docs/providers.md, providers-sources.md
//! §4; developers.google.com/analytics/devguides/collection/protocol/ga4 "sending-events",
//! "validating-events", "reference"):
//! - `POST /mp/collect?measurement_id=…&api_secret=…` answers `204` to **anything** — valid or
//!   not, with or without its query parameters. What GA4 would not process is recorded as
//!   `dropped` with the problems in `reason` (real GA4 drops it silently), so tests can assert
//!   that nothing invalid was sent; a valid request is `stored`.
//! - `POST /debug/mp/collect?…` (the validation server) answers `200`
//!   `{"validationMessages": [{"fieldPath", "description", "validationCode"}]}`, an empty list
//!   when valid; recorded as `validated` (debug events never reach reports). Like Google's, it
//!   does not check the api_secret's value; a missing `measurement_id` or `api_secret` is a
//!   `VALUE_REQUIRED` message.
//!
//! Rules checked, written here independently of the gateway's mapping: body under 130 KB and a
//! JSON object; `client_id` a non-empty string; `user_id` at most 256 characters; `consent` only
//! `ad_user_data` / `ad_personalization`, each `GRANTED` or `DENIED`; `timestamp_micros` (request
//! or event) at most 72 hours old; 1–25 `events`; event names `^[A-Za-z][A-Za-z0-9_]{0,39}$`, not
//! reserved, no reserved prefix; at most 25 params, names like event names (no reserved prefix),
//! values text or numbers, text at most 100 characters (`page_location` 1,000, `page_referrer`
//! 420, `page_title` 300); `items` a list of objects each with `item_id` or `item_name`. And one
//! thing GA4 accepts but gets wrong: a `purchase` without a `transaction_id` (or an empty one) is
//! merged with every other such purchase — recorded as a problem of the collect request.
//!
//! Steering: `POST /_fake/ga4 {"validation_messages": [...]}` — messages the validation server
//! adds to its own from then on (Google's server checks more than this fake models, e.g. with
//! `ENFORCE_RECOMMENDATIONS`); `[]` stops them.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Map, Value, json};

use crate::state::{Fakes, Received, body_value, header_map, now};

const RESERVED_EVENTS: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_install",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "notification_send",
    "os_update",
    "screen_view",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];
const RESERVED_PREFIXES: &[&str] = &["google_", "ga_", "firebase_"];
const MAX_BODY_BYTES: usize = 130_000;

/// Messages the validation server adds to its own (see the module's "Steering").
static EXTRA_MESSAGES: std::sync::Mutex<Vec<Value>> = std::sync::Mutex::new(Vec::new());

pub async fn steer(Json(body): Json<Value>) -> Json<Value> {
    let mut extra = EXTRA_MESSAGES.lock().unwrap();
    if let Some(m) = body["validation_messages"].as_array() {
        *extra = m.clone();
    }
    Json(json!({"validation_messages": *extra}))
}
const MAX_AGE_MICROS: i64 = 72 * 3_600 * 1_000_000;

/// GA4's routes, below `/ga4`.
pub fn routes() -> Router<Fakes> {
    Router::new().route("/mp/collect", post(collect)).route("/debug/mp/collect", post(debug))
}

pub async fn collect(
    State(fakes): State<Fakes>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut problems = missing_query(&query);
    problems.extend(validate(&body));
    problems.extend(merged_purchases(&body));
    let outcome = if problems.is_empty() { "stored" } else { "dropped" };
    let reason = (!problems.is_empty()).then(|| problems.iter().map(describe).collect::<Vec<_>>().join("; "));
    fakes.record(received("/mp/collect", &query, &headers, &body, 204, outcome, reason));
    StatusCode::NO_CONTENT.into_response()
}

pub async fn debug(
    State(fakes): State<Fakes>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut messages = missing_query(&query);
    messages.extend(validate(&body));
    messages.extend(EXTRA_MESSAGES.lock().unwrap().iter().cloned());
    let reason = (!messages.is_empty()).then(|| messages.iter().map(describe).collect::<Vec<_>>().join("; "));
    fakes.record(received("/debug/mp/collect", &query, &headers, &body, 200, "validated", reason));
    (StatusCode::OK, Json(json!({"validationMessages": messages}))).into_response()
}

fn received(
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
    status: u16,
    outcome: &'static str,
    reason: Option<String>,
) -> Received {
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Received {
        provider: "ga4",
        path: format!("{path}?{}", q.join("&")),
        headers: header_map(headers),
        body: body_value(body),
        status,
        outcome,
        reason,
        resolved_ip: None,
        at: now(),
    }
}

fn message(path: impl Into<String>, description: impl Into<String>, code: &str) -> Value {
    json!({"fieldPath": path.into(), "description": description.into(), "validationCode": code})
}

fn describe(m: &Value) -> String {
    format!("{} at {}: {}", m["validationCode"], m["fieldPath"], m["description"]).replace('"', "")
}

fn missing_query(query: &BTreeMap<String, String>) -> Vec<Value> {
    ["measurement_id", "api_secret"]
        .into_iter()
        .filter(|k| query.get(*k).is_none_or(|v| v.is_empty()))
        .map(|k| message(k, format!("{k} is required"), "VALUE_REQUIRED"))
        .collect()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 40
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn reserved_prefix(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

fn value_limit(param: &str) -> usize {
    match param {
        "page_location" => 1_000,
        "page_referrer" => 420,
        "page_title" => 300,
        _ => 100,
    }
}

fn too_old(v: &Value, now_micros: i64) -> bool {
    v.as_i64().is_none_or(|t| t < now_micros - MAX_AGE_MICROS)
}

/// The validation messages GA4's validation server would give for `body`.
fn validate(body: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    if body.len() >= MAX_BODY_BYTES {
        out.push(message(
            "",
            format!("the body is {} bytes; it must be smaller than 130KB", body.len()),
            "VALUE_INVALID",
        ));
    }
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        out.push(message("", "Unable to parse the body as a JSON object", "VALUE_INVALID"));
        return out;
    };
    let now_micros = chrono::Utc::now().timestamp_micros();
    match req.get("client_id") {
        Some(Value::String(c)) if !c.is_empty() => {}
        _ => out.push(message("client_id", "client_id is required for web streams", "VALUE_REQUIRED")),
    }
    if let Some(u) = req.get("user_id")
        && u.as_str().is_none_or(|u| u.chars().count() > 256)
    {
        out.push(message("user_id", "user_id must be text of at most 256 characters", "VALUE_INVALID"));
    }
    if let Some(c) = req.get("consent") {
        match c {
            Value::Object(m) => {
                for (k, v) in m {
                    if !matches!(k.as_str(), "ad_user_data" | "ad_personalization") {
                        out.push(message(format!("consent.{k}"), format!("unknown consent field {k}"), "NAME_INVALID"));
                    } else if !matches!(v.as_str(), Some("GRANTED" | "DENIED")) {
                        out.push(message(format!("consent.{k}"), "must be GRANTED or DENIED", "VALUE_INVALID"));
                    }
                }
            }
            _ => out.push(message("consent", "consent must be an object", "VALUE_INVALID")),
        }
    }
    if let Some(t) = req.get("timestamp_micros")
        && too_old(t, now_micros)
    {
        out.push(message("timestamp_micros", "timestamp_micros is more than 72 hours in the past", "VALUE_INVALID"));
    }
    let events = match req.get("events") {
        Some(Value::Array(e)) if !e.is_empty() => e,
        _ => {
            out.push(message("events", "at least one event is required", "VALUE_REQUIRED"));
            return out;
        }
    };
    if events.len() > 25 {
        out.push(message(
            "events",
            format!("{} events; at most 25 per request", events.len()),
            "EXCEEDED_MAX_ENTITIES",
        ));
    }
    for (i, ev) in events.iter().enumerate() {
        let name = ev["name"].as_str().unwrap_or("");
        if !valid_name(name) {
            out.push(message(
                "events",
                format!(
                    "Event at index: [{i}] has invalid name [{name}]. Names must start with an alphabetic character \
                     and contain only alphanumeric characters and underscores, at most 40."
                ),
                "NAME_INVALID",
            ));
        } else if RESERVED_EVENTS.contains(&name) || reserved_prefix(name) {
            out.push(message("events", format!("Event at index: [{i}] has reserved name [{name}]."), "NAME_RESERVED"));
        }
        if let Some(t) = ev.get("timestamp_micros")
            && too_old(t, now_micros)
        {
            out.push(message(
                format!("events[{i}].timestamp_micros"),
                "more than 72 hours in the past",
                "VALUE_INVALID",
            ));
        }
        let empty = Map::new();
        let params = match ev.get("params") {
            None => &empty,
            Some(Value::Object(p)) => p,
            Some(_) => {
                out.push(message(format!("events[{i}].params"), "params must be an object", "VALUE_INVALID"));
                continue;
            }
        };
        if params.len() > 25 {
            out.push(message(
                format!("events[{i}].params"),
                format!("{} params; at most 25 per event", params.len()),
                "EXCEEDED_MAX_ENTITIES",
            ));
        }
        for (k, v) in params {
            let path = format!("events[{i}].params.{k}");
            if !valid_name(k) {
                out.push(message(&path, format!("Parameter name [{k}] is invalid."), "NAME_INVALID"));
            } else if reserved_prefix(k) {
                out.push(message(&path, format!("Parameter name [{k}] is reserved."), "NAME_RESERVED"));
            }
            match v {
                Value::String(s) if s.chars().count() > value_limit(k) => out.push(message(
                    &path,
                    format!("Value is {} characters; at most {}.", s.chars().count(), value_limit(k)),
                    "VALUE_INVALID",
                )),
                Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
                Value::Array(items) if k == "items" => {
                    for (j, item) in items.iter().enumerate() {
                        out.extend(item_problems(&format!("{path}[{j}]"), item));
                    }
                    if items.len() > 200 {
                        out.push(message(&path, "at most 200 items", "EXCEEDED_MAX_ENTITIES"));
                    }
                }
                _ => out.push(message(&path, "parameter values are text or numbers", "VALUE_INVALID")),
            }
        }
    }
    out
}

fn item_problems(path: &str, item: &Value) -> Vec<Value> {
    let Value::Object(fields) = item else { return vec![message(path, "an item must be an object", "VALUE_INVALID")] };
    let mut out = Vec::new();
    if !fields.contains_key("item_id") && !fields.contains_key("item_name") {
        out.push(message(path, "an item needs item_id or item_name", "VALUE_REQUIRED"));
    }
    // "≤ 10 custom item params" (sending-events, Limitations): those beyond GA4's own (the
    // ecommerce `items` reference) — the fake's own list, not the gateway's.
    const OWN: [&str; 23] = [
        "item_id",
        "item_name",
        "affiliation",
        "coupon",
        "discount",
        "index",
        "item_brand",
        "item_category",
        "item_category2",
        "item_category3",
        "item_category4",
        "item_category5",
        "item_list_id",
        "item_list_name",
        "item_variant",
        "location_id",
        "price",
        "quantity",
        "promotion_id",
        "promotion_name",
        "creative_name",
        "creative_slot",
        "google_business_vertical",
    ];
    let custom = fields.keys().filter(|k| !OWN.contains(&k.as_str())).count();
    if custom > 10 {
        out.push(message(path, format!("{custom} custom item parameters; at most 10"), "EXCEEDED_MAX_ENTITIES"));
    }
    for (k, v) in fields {
        if !valid_name(k) {
            out.push(message(format!("{path}.{k}"), format!("Item parameter name [{k}] is invalid."), "NAME_INVALID"));
        }
        match v {
            Value::String(s) if s.chars().count() > 100 => {
                out.push(message(format!("{path}.{k}"), "at most 100 characters", "VALUE_INVALID"))
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            _ => out.push(message(format!("{path}.{k}"), "item values are text or numbers", "VALUE_INVALID")),
        }
    }
    out
}

/// What GA4 takes but gets wrong: purchases without a transaction id are merged into one.
fn merged_purchases(body: &[u8]) -> Vec<Value> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return Vec::new() };
    v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, e)| e["name"] == "purchase")
        .filter(|(_, e)| match &e["params"]["transaction_id"] {
            Value::String(t) => t.trim().is_empty(),
            Value::Number(_) => false,
            _ => true,
        })
        .map(|(i, _)| {
            message(
                format!("events[{i}].params.transaction_id"),
                "a purchase without a transaction_id: GA4 merges all such purchases into one",
                "WOULD_MERGE",
            )
        })
        .collect()
}
