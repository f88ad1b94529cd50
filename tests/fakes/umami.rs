//! Umami's Collect API as its v3.1.0 source has it (providers-sources.md §2:
//! `src/app/api/send/route.ts`, `src/lib/schema.ts`, `src/lib/detect.ts`, isbot 5, Prisma schema):
//! - the zod schema: `type` ∈ event|identify|performance; `website`/`link`/`pixel` UUIDs, exactly
//!   one; `hostname` ≤ 100, `language` ≤ 35, `screen` ≤ 11, `name` ≤ 50, `tag` ≤ 50; `url` and
//!   `referrer` URL-or-path; `timestamp` coerced integer; `data` an object; unknown keys stripped
//!   → 400 `{"error": {"message": "Bad request", "code": "bad-request", "status": 400, "errors"}}`;
//! - `isbot(payload.userAgent ?? User-Agent)` → 200 `{"beep": "boop"}`, nothing stored (a missing
//!   agent is not a bot); any bare `name/version` agent is a bot;
//! - unknown website → 400 `Website not found.`;
//! - PostgreSQL column limits not checked by zod (distinct id 50, browser/os/device 20, UTM and
//!   click ids 255, event-data keys and values 500) → 500 *after* the event was stored;
//! - success → 200 `{"cache", "sessionId", "visitId"}`.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::state::{Fakes, Received, body_value, delay, failure_response, header_map, now};

pub async fn send(State(fakes): State<Fakes>, headers: HeaderMap, body: Bytes) -> Response {
    let behaviour = fakes.behaviour("umami");
    delay(&behaviour).await;
    let value = body_value(&body);
    let resolved_ip = value["payload"]["ip"].as_str().map(String::from).or_else(|| {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().to_string())
    });
    let (res, outcome, status, reason) = answer(&fakes, &headers, &body);
    fakes.record(Received {
        provider: "umami",
        path: "/api/send".into(),
        headers: header_map(&headers),
        body: value,
        status,
        outcome,
        reason,
        resolved_ip,
        at: now(),
    });
    res
}

fn bad_request(errors: Vec<Value>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"error": {"message": "Bad request", "code": "bad-request", "status": 400, "errors": errors}}),
        ),
    )
        .into_response()
}

fn answer(fakes: &Fakes, headers: &HeaderMap, body: &[u8]) -> (Response, &'static str, u16, Option<String>) {
    if let Some(f) = fakes.forced_failure("umami") {
        return (failure_response(&f), "failed", f.status, Some("told to fail".into()));
    }
    let behaviour = fakes.behaviour("umami");
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        return (
            bad_request(vec![json!({"path": [], "message": "Invalid input: expected object"})]),
            "rejected",
            400,
            Some("not JSON".into()),
        );
    };
    let errors = validate(&req, behaviour.formula_guard);
    if !errors.is_empty() {
        let why = errors.iter().map(|e| e["message"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>().join("; ");
        return (bad_request(errors), "rejected", 400, Some(why));
    }
    let payload = req["payload"].as_object().cloned().unwrap_or_default();
    let ua = payload
        .get("userAgent")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .or_else(|| headers.get("user-agent").and_then(|v| v.to_str().ok()).map(String::from));
    if ua.as_deref().is_some_and(isbot) {
        return (
            (StatusCode::OK, axum::Json(json!({"beep": "boop"}))).into_response(),
            "dropped",
            200,
            Some("isbot".into()),
        );
    }
    let website = payload.get("website").and_then(Value::as_str).unwrap_or("");
    if !behaviour.websites.iter().any(|w| w.eq_ignore_ascii_case(website)) {
        return (
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"message": "Website not found.", "code": "bad-request", "status": 400}})),
            )
                .into_response(),
            "rejected",
            400,
            Some("website not found".into()),
        );
    }
    if let Some(why) = over_db_limits(&payload) {
        return (
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"message": "Server error", "code": "server-error", "status": 500}})),
            )
                .into_response(),
            "stored_then_failed",
            500,
            Some(why),
        );
    }
    let ok = json!({"cache": format!("fake.{}", uuid::Uuid::new_v4().simple()), "sessionId": uuid::Uuid::new_v4(), "visitId": uuid::Uuid::new_v4()});
    ((StatusCode::OK, axum::Json(ok)).into_response(), "stored", 200, None)
}

/// The zod schema of v3.1.0 (`route.ts`), as error objects `{path, message}`.
fn validate(req: &Map<String, Value>, formula_guard: bool) -> Vec<Value> {
    let mut errors = Vec::new();
    let mut err = |path: Value, message: &str| errors.push(json!({"path": path, "message": message}));
    match req.get("type").and_then(Value::as_str) {
        Some("event" | "identify" | "performance") => {}
        _ => err(json!(["type"]), "Invalid option: expected one of \"event\"|\"identify\"|\"performance\""),
    }
    let Some(payload) = req.get("payload").and_then(Value::as_object) else {
        err(json!(["payload"]), "Invalid input: expected object");
        return errors;
    };
    let mut ids = 0;
    for key in ["website", "link", "pixel"] {
        match payload.get(key) {
            None => {}
            Some(Value::String(s)) if uuid::Uuid::parse_str(s).is_ok() && s.len() == 36 => ids += 1,
            Some(_) => err(json!(["payload", key]), "Invalid UUID"),
        }
    }
    if ids != 1 {
        err(json!(["payload", "website"]), "Exactly one of website, link, or pixel must be provided");
    }
    for (key, max) in [("hostname", 100), ("language", 35), ("screen", 11), ("name", 50), ("tag", 50)] {
        match payload.get(key) {
            None => {}
            Some(Value::String(s)) if s.encode_utf16().count() > max => {
                err(json!(["payload", key]), &format!("Too big: expected string to have <={max} characters"))
            }
            Some(Value::String(s))
                if formula_guard
                    && (key == "name" || key == "tag")
                    && s.starts_with(['=', '+', '-', '@', '\t', '\r']) =>
            {
                err(json!(["payload", key]), "Invalid string: must not start with =, +, -, @, tab or carriage return")
            }
            Some(Value::String(_)) => {}
            Some(_) => err(json!(["payload", key]), "Invalid input: expected string"),
        }
    }
    for key in ["url", "referrer"] {
        match payload.get(key) {
            Some(Value::String(s)) if url::Url::parse("https://localhost").unwrap().join(s).is_err() => {
                err(json!(["payload", key]), "Invalid URL.")
            }
            None | Some(Value::String(_)) => {}
            Some(_) => err(json!(["payload", key]), "Invalid input: expected string"),
        }
    }
    for key in ["title", "ip", "userAgent", "id", "browser", "os", "device"] {
        if payload.get(key).is_some_and(|v| !v.is_string()) {
            err(json!(["payload", key]), "Invalid input: expected string");
        }
    }
    if let Some(ts) = payload.get("timestamp") {
        let int = match ts {
            Value::Number(n) => n.as_i64().is_some() || n.as_f64().is_some_and(|f| f.fract() == 0.0),
            Value::String(s) => s.trim().parse::<i64>().is_ok(),
            _ => false,
        };
        if !int {
            err(json!(["payload", "timestamp"]), "Invalid input: expected int");
        }
    }
    if payload.get("data").is_some_and(|d| !d.is_object()) {
        err(json!(["payload", "data"]), "Invalid input: expected record");
    }
    errors
}

/// Prisma/PostgreSQL column sizes the schema does not check.
fn over_db_limits(p: &Map<String, Value>) -> Option<String> {
    let chars = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
    if p.get("id").is_some_and(|v| chars(v) > 50) {
        return Some("session.distinct_id VarChar(50)".into());
    }
    for k in ["browser", "os", "device"] {
        if p.get(k).is_some_and(|v| chars(v) > 20) {
            return Some(format!("session.{k} VarChar(20)"));
        }
    }
    if let Some(url) = p.get("url").and_then(Value::as_str)
        && let Ok(u) = url::Url::parse("https://localhost").unwrap().join(url)
    {
        for (k, v) in u.query_pairs() {
            let tracked = k.starts_with("utm_")
                || ["gclid", "fbclid", "msclkid", "ttclid", "li_fat_id", "twclid"].contains(&k.as_ref());
            if tracked && v.chars().count() > 255 {
                return Some(format!("website_event.{k} VarChar(255)"));
            }
        }
    }
    if let Some(data) = p.get("data").and_then(Value::as_object) {
        let mut flat = Vec::new();
        flatten("", data, &mut flat);
        for (k, v) in flat {
            if k.chars().count() > 500 || v.chars().count() > 500 {
                return Some("event_data.data_key / string_value VarChar(500)".into());
            }
        }
    }
    None
}

fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (k, v) in map {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Object(m) => flatten(&key, m, out),
            Value::String(s) => out.push((key, s.clone())),
            other => out.push((key, other.to_string())),
        }
    }
}

/// The parts of isbot 5's pattern that matter for a forwarder: a bare `product/version` (or a
/// single word), `compatible;` agents, and the usual crawler words. A missing or empty agent is
/// not a bot.
fn isbot(ua: &str) -> bool {
    let ua = ua.trim();
    if ua.is_empty() {
        return false;
    }
    let l = ua.to_ascii_lowercase();
    let keywords = [
        "bot",
        "crawl",
        "spider",
        "slurp",
        "headless",
        "fetch",
        "monitor",
        "scan",
        "curl",
        "wget",
        "python",
        "java/",
        "axios",
        "node",
        "undici",
        "okhttp",
        "go-http",
        "reqwest",
        "phantom",
        "lighthouse",
        "http-client",
    ];
    if keywords.iter().any(|k| l.contains(k)) || l.contains("(compatible;") {
        return true;
    }
    // ^[\w .\-()?:%]+(?:/v?\d+[\w.\-]*)?(?:,|$)
    let head = ua.split(',').next().unwrap_or(ua);
    let (name, version) = match head.split_once('/') {
        Some((n, v)) => (n, Some(v)),
        None => (head, None),
    };
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_' || " .-()?:%".contains(c));
    let version_ok = version.is_none_or(|v| {
        let v = v.strip_prefix('v').unwrap_or(v);
        v.starts_with(|c: char| c.is_ascii_digit())
            && v.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.' || c == '-')
    });
    name_ok && version_ok
}

/// `POST /api/auth/login` (`src/app/api/auth/login/route.ts`): `{username, password}`; a wrong
/// pair → 401 `{"error": {"message": "Incorrect username and/or password.", …}}`; else 200 with a
/// token and the user.
pub async fn login(State(fakes): State<Fakes>, headers: HeaderMap, body: Bytes) -> Response {
    let behaviour = fakes.behaviour("umami");
    let req = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let (user, pass) = (req["username"].as_str().unwrap_or(""), req["password"].as_str().unwrap_or(""));
    let ok = behaviour.users.iter().any(|(u, p)| u == user && p == pass);
    let (status, answer) = if ok {
        (
            StatusCode::OK,
            json!({"token": "fake-umami-jwt", "user": {"id": "fake-user", "username": user, "role": "admin"}}),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": {"message": "Incorrect username and/or password.", "code": "incorrect-username-password", "status": 401}}),
        )
    };
    record_auth(&fakes, "/api/auth/login", &headers, &body, status, ok);
    (status, axum::Json(answer)).into_response()
}

/// `GET /api/me` with `x-umami-api-key` (Umami Cloud's API keys) or the login's bearer token.
pub async fn me(State(fakes): State<Fakes>, headers: HeaderMap) -> Response {
    let behaviour = fakes.behaviour("umami");
    let key = headers.get("x-umami-api-key").and_then(|v| v.to_str().ok());
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer fake-umami-jwt");
    let ok = bearer || key.is_some_and(|k| behaviour.api_keys.iter().any(|a| a == k));
    let (status, answer) = if ok {
        (StatusCode::OK, json!({"user": {"id": "fake-user", "username": "api", "role": "admin"}}))
    } else {
        (StatusCode::UNAUTHORIZED, json!({"error": {"message": "Unauthorized", "code": "unauthorized", "status": 401}}))
    };
    record_auth(&fakes, "/api/me", &headers, b"", status, ok);
    (status, axum::Json(answer)).into_response()
}

fn record_auth(fakes: &Fakes, path: &str, headers: &HeaderMap, body: &[u8], status: StatusCode, ok: bool) {
    fakes.record(Received {
        provider: "umami",
        path: path.into(),
        headers: crate::state::header_map(headers),
        body: crate::state::body_value(body),
        status: status.as_u16(),
        outcome: if ok { "authenticated" } else { "rejected" },
        reason: None,
        resolved_ip: None,
        at: crate::state::now(),
    });
}
