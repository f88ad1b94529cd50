//! One delivery mapped to its part of a Measurement Protocol request: the request-level fields
//! it needs (`client_id`, `user_id`, `consent`, …: [`shared`], one value per request) and its
//! event (`{"name", "params"}`), with every change made to fit GA4's rules recorded.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    Ga4Settings,
    rules::{
        self, ITEM_PARAMS, MAX_CUSTOM_ITEM_PARAMS, MAX_ITEMS, MAX_PARAMS, MAX_USER_ID_CHARS, MAX_VALUE_CHARS, ga4_name,
        max_value_chars,
    },
};
use crate::{
    consent::Identity,
    providers::{OUTBOUND_LINK_CLICK, Outgoing, PAGEVIEW, properties_for, revenue_of, truncate_chars},
};

/// An event's serialised size above which it travels in a request of its own: 25 events of at
/// most this size (120 KB), with the request-level fields (ids of at most 200 characters, an
/// agent of at most 1,000), stay under GA4's 130 KB body limit.
pub const MAX_SHARED_EVENT_BYTES: usize = 4_800;
/// The most an event may weigh alone (items are left out beyond it).
pub const MAX_EVENT_BYTES: usize = 120_000;
/// Sent when the site says nothing of engagement: GA4 counts users and sessions as active only
/// with `engagement_time_msec`, and 1 ms adds nothing measurable to engagement time.
pub const DEFAULT_ENGAGEMENT_MSEC: u64 = 1;
/// A request takes a moment to arrive: events this close to GA4's 72 hours are refused already.
pub const AGE_MARGIN: Duration = Duration::minutes(1);

/// The request-level fields of one delivery. Deliveries whose `Shared` differ never share a
/// request (it is the batch key), since GA4 applies these to every event of the request.
pub fn shared(s: &Ga4Settings, out: &Outgoing<'_>) -> Map<String, Value> {
    let event = out.event;
    let full = out.identity == Identity::Full;
    let mut m = Map::new();
    m.insert("client_id".into(), json!(client_id(out)));
    if full
        && let Some(user) = event.user_id.as_deref().filter(|u| !u.is_empty() && u.chars().count() <= MAX_USER_ID_CHARS)
    {
        m.insert("user_id".into(), json!(user));
    }
    // The visitor's marketing choice, as decided (GPC refuses marketing, so it gives DENIED too).
    let ads = if out.granted.marketing && !event.gpc { "GRANTED" } else { "DENIED" };
    m.insert("consent".into(), json!({"ad_user_data": ads, "ad_personalization": ads}));
    if let Some(ip) = ip_override(s, out) {
        m.insert("ip_override".into(), json!(ip));
    }
    if let Some(ua) = out.user_agent.filter(|u| !u.is_empty()) {
        m.insert("user_agent".into(), json!(ua));
    }
    let mut location = Map::new();
    if let Some(c) = event.country.as_deref() {
        location.insert("country_id".into(), json!(c));
    }
    if let Some(r) = event.context["region"].as_str() {
        location.insert("region_id".into(), json!(r));
    }
    if !location.is_empty() {
        m.insert("user_location".into(), Value::Object(location));
    }
    m
}

/// The visitor's analytics id (`anonymous_id`) as the site sent it, with full identity: GA4 takes
/// any string, and the `_ga` cookie's `GA1.1.<random>.<timestamp>` form only matters to gtag.js
/// reading its own cookie. The same id the site's other providers get keeps GA4's user counts in
/// line with theirs. Without full identity, or without an analytics id, the delivery's own id —
/// a `client_id` that never links two events (GA4 requires one for web streams).
pub fn client_id(out: &Outgoing<'_>) -> String {
    match out.event.anonymous_id.as_deref().filter(|v| !v.is_empty()) {
        Some(v) if out.identity == Identity::Full => v.to_string(),
        _ => format!("cg.{}", out.delivery_id.simple()),
    }
}

/// The visitor's network: with `anonymize_ip` (the default) the stored truncated address (/24,
/// /48), else the full one while the delivery is pending. Only with full identity.
fn ip_override(s: &Ga4Settings, out: &Outgoing<'_>) -> Option<String> {
    if out.identity != Identity::Full {
        return None;
    }
    if s.anonymize_ip {
        out.event.ip_truncated.clone().or_else(|| out.client_ip.map(crate::ip::truncate))
    } else {
        out.client_ip.map(|ip| ip.to_string()).or_else(|| out.event.ip_truncated.clone())
    }
}

/// A GA4 `session_id`: gtag's are numbers (the session's start in Unix seconds) and GA4 keeps
/// `ga_session_id` as an integer, so a site's numeric id (up to 18 digits) goes as it is and any
/// other one as a stable 15-digit number derived from it (the same session, the same number).
pub fn session_number(id: &str) -> String {
    if !id.is_empty() && id.len() <= 18 && id.bytes().all(|b| b.is_ascii_digit()) {
        return id.to_string();
    }
    let digest = Sha256::digest(id.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 1_000_000_000_000_000;
    format!("{n:015}")
}

/// The mapped event: `{"name", "params", "timestamp_micros"}`, and what was changed.
pub struct Mapped {
    pub event: Value,
    pub adjustments: Vec<String>,
}

/// One delivery's event at `now`. `Err` (a permanent refusal of this delivery only) for an event
/// older than GA4's 72 hours.
pub fn event(s: &Ga4Settings, out: &Outgoing<'_>, now: DateTime<Utc>) -> Result<Mapped, String> {
    let e = out.event;
    let age = now - e.occurred_at;
    if age > Duration::hours(rules::MAX_AGE_HOURS) - AGE_MARGIN {
        return Err(format!(
            "too old for GA4: it happened {} hours ago, and GA4 takes events at most {} hours old \
             (timestamp_micros); not sent",
            age.num_hours(),
            rules::MAX_AGE_HOURS
        ));
    }
    Ok(fitted(s, out))
}

/// The event as GA4 gets it, whatever its age.
pub fn fitted(s: &Ga4Settings, out: &Outgoing<'_>) -> Mapped {
    let e = out.event;
    let mut adj = Vec::new();
    let full = out.identity == Identity::Full;
    let (props, removed) = properties_for(e, out.identity);
    if !removed.is_empty() {
        adj.push(format!("identifier properties left out (anonymous): {}", removed.join(", ")));
    }

    let name = event_name(s, &e.event_name, &mut adj);
    let mut p = Params::default();
    if let Some(url) = e.page_url.as_deref() {
        p.put_text("page_location", url, &mut adj);
    }
    if let Some(r) = e.referrer.as_deref().filter(|r| !r.is_empty()) {
        p.put_text("page_referrer", r, &mut adj);
    }
    if let Some(t) = e.title.as_deref().filter(|t| !t.is_empty()) {
        p.put_text("page_title", t, &mut adj);
    }
    if full && let Some(sid) = e.session_id.as_deref().filter(|v| !v.is_empty()) {
        p.put("session_id", json!(session_number(sid)));
    }
    let engagement = match props.get("engagement_time_msec") {
        Some(Value::Number(n)) if n.as_u64().is_some() => Value::Number(n.clone()),
        Some(other) => {
            adj.push(format!("property \"engagement_time_msec\" ({other}) is not a whole number of ms; sent as 1"));
            json!(DEFAULT_ENGAGEMENT_MSEC)
        }
        None => json!(DEFAULT_ENGAGEMENT_MSEC),
    };
    p.put("engagement_time_msec", engagement);

    let mut used = BTreeSet::from(["engagement_time_msec".to_string()]);
    // An outbound-link click: its `url` as GA4's `link_url` / `link_domain` (`click` adds
    // `outbound`, as enhanced measurement sends it).
    if e.event_name == OUTBOUND_LINK_CLICK
        && let Some(link) = props.get("url").and_then(Value::as_str)
    {
        used.insert("url".into());
        p.put_text("link_url", link, &mut adj);
        if let Some(host) = url::Url::parse(link).ok().and_then(|u| u.host_str().map(str::to_string)) {
            p.put_text("link_domain", &host, &mut adj);
        }
    }
    if e.event_name == OUTBOUND_LINK_CLICK && name == "click" {
        p.put("outbound", json!("true"));
    }

    // Revenue: `value` + `currency` on the event when ecommerce is on.
    match revenue_of(e) {
        Some(rev) if s.enable_ecommerce => {
            for k in ["value", "currency"] {
                if props.contains_key(k) {
                    adj.push(format!("property {k:?} replaced by the event's revenue"));
                    used.insert(k.to_string());
                }
            }
            p.put("value", Value::Number(rev.amount));
            p.put_text("currency", &rev.currency, &mut adj);
        }
        Some(_) => adj.push("revenue left out: enable_ecommerce is off".into()),
        None => {}
    }
    // Purchases always carry a transaction id: GA4 deduplicates purchases by it, and an empty one
    // makes every such purchase one.
    if name == "purchase" {
        used.insert("transaction_id".into());
        let site = match props.get("transaction_id") {
            Some(Value::String(t)) if !t.trim().is_empty() => Some(t.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let id = site.unwrap_or_else(|| e.id.to_string());
        p.put_text("transaction_id", &id, &mut adj);
    }
    if s.enable_ecommerce
        && let Some(items) = props.get("items")
    {
        used.insert("items".into());
        if let Some(items) = ecommerce_items(items, &mut adj) {
            p.put("items", items);
        }
    }

    // The site's own properties after the gateway's: first those GA4 takes as they are, then
    // the renamed ones (a renamed `plan-type` never displaces the site's own `plan_type`), each
    // in key order.
    let mut left_out = Vec::new();
    let (valid, renamed): (Vec<_>, Vec<_>) =
        props.iter().filter(|(k, _)| !used.contains(*k)).partition(|(k, _)| rules::is_valid_name(k, false));
    for (key, value) in valid.into_iter().chain(renamed) {
        let param = ga4_name(key, false);
        if param != key.as_str() {
            adj.push(format!("property {key:?} renamed {param:?} (GA4 parameter names)"));
        }
        if p.has(&param) {
            adj.push(format!("property {key:?} left out: GA4 parameter {param:?} is already set"));
            continue;
        }
        match value {
            Value::String(text) => {
                if p.is_full() {
                    left_out.push(param.into_owned());
                } else {
                    p.put_text(&param, text, &mut adj);
                }
            }
            Value::Number(_) | Value::Bool(_) if p.is_full() => left_out.push(param.into_owned()),
            Value::Number(_) | Value::Bool(_) => p.put(&param, value.clone()),
            Value::Null => adj.push(format!("property {key:?} left out: null")),
            Value::Array(_) | Value::Object(_) => {
                adj.push(format!("property {key:?} left out: GA4 parameters are text or numbers"))
            }
        }
    }
    if !left_out.is_empty() {
        adj.push(format!("properties left out beyond GA4's {MAX_PARAMS} parameters: {}", left_out.join(", ")));
    }

    let mut ev = json!({"name": name, "params": Value::Object(p.0)});
    ev["timestamp_micros"] = json!(e.occurred_at.timestamp_micros());
    shrink_items(&mut ev, &mut adj);
    Mapped { event: ev, adjustments: adj }
}

/// The GA4 name of the gateway's event name: `pageview` → `page_view`; an outbound-link click →
/// GA4's enhanced-measurement `click` (with `outbound`) when `enable_enhanced_measurement`, else
/// `outbound_link_click`; any other (the site's own) made a valid GA4 name, recorded when changed.
fn event_name(s: &Ga4Settings, name: &str, adj: &mut Vec<String>) -> String {
    match name {
        PAGEVIEW => "page_view".into(),
        OUTBOUND_LINK_CLICK if s.enable_enhanced_measurement => "click".into(),
        OUTBOUND_LINK_CLICK => "outbound_link_click".into(),
        other => {
            let ga4 = ga4_name(other, true);
            if ga4 != other {
                adj.push(format!("event name {other:?} renamed {ga4:?} (GA4 event names)"));
            }
            ga4.into_owned()
        }
    }
}

/// The event's parameters, at most 25.
#[derive(Default)]
struct Params(Map<String, Value>);

impl Params {
    fn has(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }

    fn is_full(&self) -> bool {
        self.0.len() >= MAX_PARAMS
    }

    fn put(&mut self, k: &str, v: Value) {
        self.0.insert(k.to_string(), v);
    }

    /// Text cut to the parameter's limit (recorded).
    fn put_text(&mut self, k: &str, v: &str, adj: &mut Vec<String>) {
        let max = max_value_chars(k);
        let cut = truncate_chars(v, max);
        if cut.len() < v.len() {
            adj.push(format!("parameter {k:?} cut to {max} characters"));
        }
        self.put(k, json!(cut));
    }
}

/// The site's `items` as GA4 ecommerce items: objects with an `item_id` or `item_name`, names
/// made valid, text values cut to 100 characters, nested values left out; at most 200.
fn ecommerce_items(items: &Value, adj: &mut Vec<String>) -> Option<Value> {
    let Value::Array(list) = items else {
        adj.push("property \"items\" left out: not a list of items".into());
        return None;
    };
    let mut out = Vec::new();
    let mut changed = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let Value::Object(fields) = item else {
            note(&mut changed, format!("item {i} left out: not an object"));
            continue;
        };
        let mut kept = Map::new();
        for (k, v) in fields {
            let name = ga4_name(k, false);
            if name != k.as_str() {
                note(&mut changed, format!("item field {k:?} renamed {name:?}"));
            }
            match v {
                Value::String(t) => {
                    let cut = truncate_chars(t, MAX_VALUE_CHARS);
                    if cut.len() < t.len() {
                        note(&mut changed, format!("item field {name:?} cut to {MAX_VALUE_CHARS} characters"));
                    }
                    kept.insert(name.into_owned(), json!(cut));
                }
                Value::Number(_) | Value::Bool(_) => {
                    kept.insert(name.into_owned(), v.clone());
                }
                _ => note(&mut changed, format!("item field {k:?} left out: not text or a number")),
            }
        }
        if !kept.contains_key("item_id") && !kept.contains_key("item_name") {
            note(&mut changed, format!("item {i} left out: it has neither item_id nor item_name"));
            continue;
        }
        // GA4's own parameters, then the first custom ones by name, up to its limit.
        let custom: Vec<String> = kept.keys().filter(|k| !ITEM_PARAMS.contains(&k.as_str())).cloned().collect();
        if custom.len() > MAX_CUSTOM_ITEM_PARAMS {
            let dropped = &custom[MAX_CUSTOM_ITEM_PARAMS..];
            for k in dropped {
                kept.remove(k);
            }
            note(
                &mut changed,
                format!(
                    "item fields beyond GA4's {MAX_CUSTOM_ITEM_PARAMS} custom item parameters left out: {}",
                    dropped.join(", ")
                ),
            );
        }
        if out.len() == MAX_ITEMS {
            note(&mut changed, format!("items beyond GA4's {MAX_ITEMS} left out"));
            break;
        }
        out.push(Value::Object(kept));
    }
    adj.extend(changed);
    (!out.is_empty()).then_some(Value::Array(out))
}

/// Items left out from the end until the event fits [`MAX_EVENT_BYTES`] (recorded).
fn shrink_items(ev: &mut Value, adj: &mut Vec<String>) {
    let size = |ev: &Value| serde_json::to_vec(ev).map_or(usize::MAX, |b| b.len());
    if size(ev) <= MAX_EVENT_BYTES {
        return;
    }
    let mut dropped = 0;
    while size(ev) > MAX_EVENT_BYTES {
        let Some(items) = ev["params"]["items"].as_array_mut().filter(|i| !i.is_empty()) else { break };
        items.pop();
        dropped += 1;
    }
    if ev["params"]["items"].as_array().is_some_and(Vec::is_empty) {
        ev["params"].as_object_mut().map(|p| p.remove("items"));
    }
    if dropped > 0 {
        adj.push(format!("{dropped} items left out: the event would exceed GA4's request size"));
    }
}

/// A note recorded once (the same field renamed in every item is one change).
fn note(notes: &mut Vec<String>, note: String) {
    if !notes.contains(&note) {
        notes.push(note);
    }
}
