//! Plausible's Events API as its source has it (providers-sources.md §1: `ingestion/request.ex`,
//! `remote_ip.ex`, `external_controller.ex`, `ingestion/event.ex`):
//! - `Accept` without JSON or `*/*` → 406 (Phoenix `plug :accepts, ["json"]`);
//! - unparsable JSON → 400 `{"errors": {"request": "Unable to parse request body as json"}}`;
//! - `name` missing or over 120 → 400; `url` missing, over 2,000 bytes, not a URL, or `data:` →
//!   400; `domain` optional (falls back to the URL's host without `www.`), `""` → 400;
//! - a prop key over 300 bytes or value over 2,000 bytes → 400; list/map/blank props dropped,
//!   beyond 30 dropped, silently;
//! - client IP: `X-Plausible-IP` > `CF-Connecting-IP` > `b-forwarded-for` > `X-Forwarded-For`
//!   (first) > `Forwarded` (`for=`) > socket;
//! - dropped with `202` + `x-plausible-dropped: 1`: unknown domain, a bot user agent (UAInspector
//!   bots and Headless Chrome — *not* HTTP libraries such as curl, which device-detector lists as
//!   libraries), an IP marked as datacenter;
//! - otherwise `202` with body `ok`.
//!
//! And the Stats API v2 (`POST /api/v2/query`, `controllers/api/external_query_api_controller.ex`
//! behind the `AuthorizePublicAPI` plug): `Authorization: Bearer <key>`; no header → 401 "Missing
//! API key…"; a key that is not valid or has no access to `site_id` → 401 "Invalid API key or
//! site ID…"; otherwise 200 with `results` (the fake answers zero visitors).

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::state::{Fakes, Received, body_value, delay, failure_response, header_map, now};

/// The fake's routes, mounted under `/plausible`.
pub fn routes() -> axum::Router<Fakes> {
    use axum::routing::post;
    axum::Router::new().route("/api/event", post(event)).route("/api/v2/query", post(query))
}

pub async fn event(
    State(fakes): State<Fakes>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = fakes.behaviour("plausible");
    delay(&behaviour).await;
    let resolved_ip = resolve_ip(&headers, peer);
    let mut rec = Received {
        provider: "plausible",
        path: "/api/event".into(),
        headers: header_map(&headers),
        body: body_value(&body),
        status: 202,
        outcome: "stored",
        reason: None,
        resolved_ip: Some(resolved_ip.clone()),
        at: now(),
    };
    let (res, outcome, status, reason) = answer(&fakes, &headers, &body, &resolved_ip);
    rec.outcome = outcome;
    rec.status = status;
    rec.reason = reason;
    fakes.record(rec);
    res
}

fn answer(fakes: &Fakes, headers: &HeaderMap, body: &[u8], ip: &str) -> (Response, &'static str, u16, Option<String>) {
    if let Some(f) = fakes.forced_failure("plausible") {
        return (failure_response(&f), "failed", f.status, Some("told to fail".into()));
    }
    if let Some(accept) = headers.get("accept").and_then(|v| v.to_str().ok())
        && !(accept.contains("json") || accept.contains("*/*"))
    {
        return (StatusCode::NOT_ACCEPTABLE.into_response(), "rejected", 406, Some("Accept excludes JSON".into()));
    }
    let reject = |errors: Value, why: &str| {
        (
            (StatusCode::BAD_REQUEST, axum::Json(json!({"errors": errors}))).into_response(),
            "rejected",
            400,
            Some(why.to_string()),
        )
    };
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return reject(json!({"request": "Unable to parse request body as json"}), "unparsable");
    };
    let field = |long: &str, short: &str| req.get(long).or_else(|| req.get(short)).cloned();

    let name = match field("name", "n") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => return reject(json!({"name": ["can't be blank"]}), "no name"),
    };
    if name.chars().count() > 120 {
        return reject(json!({"name": ["should be at most 120 character(s)"]}), "name too long");
    }
    // The tracker's own engagement event needs its scroll depth or engaged time (request.ex).
    let tracker_int = |long: &str, short: &str| field(long, short).is_some_and(|v| v.is_i64() || v.is_u64());
    if name == "engagement" && !tracker_int("sd", "sd") && !tracker_int("e", "e") {
        return reject(json!({"name": ["engagement events need sd or e"]}), "engagement without sd/e");
    }
    let url = match field("url", "u") {
        Some(Value::String(s)) if !s.is_empty() => s,
        _ => return reject(json!({"url": ["is required"]}), "no url"),
    };
    if url.len() > 2000 || url.starts_with("data:") {
        return reject(json!({"url": ["must be a valid url"]}), "bad url");
    }
    let host = url::Url::parse(&url).ok().and_then(|u| u.host_str().map(str::to_string));
    let domains: Vec<String> = match field("domain", "d") {
        Some(Value::String(s)) if s.trim().is_empty() => {
            return reject(json!({"domain": ["can't be blank"]}), "blank domain");
        }
        Some(Value::String(s)) => s.split(',').map(|d| d.trim().to_string()).collect(),
        Some(_) => return reject(json!({"domain": ["is invalid"]}), "domain not a string"),
        None => match &host {
            Some(h) => vec![h.strip_prefix("www.").unwrap_or(h).to_string()],
            None => return reject(json!({"domain": ["can't be blank"]}), "no domain"),
        },
    };
    let props = match field("props", "p").or_else(|| field("meta", "m")) {
        Some(Value::Object(m)) => m,
        Some(Value::String(s)) => serde_json::from_str::<Map<String, Value>>(&s).unwrap_or_default(),
        _ => Map::new(),
    };
    for (k, v) in &props {
        let value = match v {
            Value::String(s) if s.trim().is_empty() => continue,
            Value::String(s) => s.clone(),
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            _ => continue,
        };
        if k.len() > 300 || value.len() > 2000 {
            return reject(
                json!({"props": ["keys should have at most 300 bytes and values 2000 bytes"]}),
                "prop too big",
            );
        }
    }

    let behaviour = fakes.behaviour("plausible");
    let ua = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
    let drop = if domains.iter().any(|d| !behaviour.domains.contains(d)) {
        Some("unknown domain")
    } else if is_bot(ua) {
        Some("bot user agent")
    } else if behaviour.datacenter_ips.iter().any(|d| d == ip) {
        Some("datacenter IP")
    } else {
        None
    };
    match drop {
        Some(why) => {
            let res = (StatusCode::ACCEPTED, [("x-plausible-dropped", "1")], "ok").into_response();
            (res, "dropped", 202, Some(why.into()))
        }
        None => ((StatusCode::ACCEPTED, "ok").into_response(), "stored", 202, None),
    }
}

/// `remote_ip.ex`'s order.
fn resolve_ip(headers: &HeaderMap, peer: SocketAddr) -> String {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    if let Some(ip) = get("x-plausible-ip").or(get("cf-connecting-ip")) {
        return ip.to_string();
    }
    for h in ["b-forwarded-for", "x-forwarded-for"] {
        if let Some(first) = get(h).and_then(|v| v.split(',').next()) {
            return first.trim().to_string();
        }
    }
    if let Some(fwd) = get("forwarded")
        && let Some(for_) = fwd.split(';').flat_map(|p| p.split(',')).find_map(|p| p.trim().strip_prefix("for="))
    {
        return for_.trim_matches('"').to_string();
    }
    peer.ip().to_string()
}

/// UAInspector bots (device-detector's generic bot regex and crawler names) and Headless Chrome.
/// HTTP libraries (curl, python-requests, reqwest…) are *libraries* there, not bots.
fn is_bot(ua: &str) -> bool {
    let l = ua.to_ascii_lowercase();
    ["bot", "crawl", "spider", "slurp", "fetcher", "monitor", "scanner", "headlesschrome", "lighthouse"]
        .iter()
        .any(|m| l.contains(m))
}

/// `POST /api/v2/query`.
pub async fn query(State(fakes): State<Fakes>, headers: HeaderMap, body: Bytes) -> Response {
    let behaviour = fakes.behaviour("plausible");
    let key = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let site = serde_json::from_slice::<Value>(&body).ok().and_then(|b| b["site_id"].as_str().map(str::to_string));
    let (status, answer, outcome) = match key {
        None => (
            StatusCode::UNAUTHORIZED,
            json!({"error": "Missing API key. Please use a valid Plausible API key as a Bearer Token."}),
            "rejected",
        ),
        Some(k)
            if behaviour.api_keys.iter().any(|a| a == k)
                && site.as_ref().is_some_and(|s| behaviour.domains.contains(s)) =>
        {
            (
                StatusCode::OK,
                json!({"results": [{"metrics": [0], "dimensions": []}], "meta": {}, "query": {}}),
                "authenticated",
            )
        }
        Some(_) => (
            StatusCode::UNAUTHORIZED,
            json!({"error": "Invalid API key or site ID. Please make sure you're using a valid API key with access to the site you've requested."}),
            "rejected",
        ),
    };
    fakes.record(Received {
        provider: "plausible",
        path: "/api/v2/query".into(),
        headers: header_map(&headers),
        body: body_value(&body),
        status: status.as_u16(),
        outcome,
        reason: None,
        resolved_ip: None,
        at: now(),
    });
    (status, axum::Json(answer)).into_response()
}
