//! Umami's Collect API as its v3.1.0 source has it (providers-sources.md §2:
//! `src/app/api/send/route.ts`, `src/lib/schema.ts`, `src/lib/detect.ts`, isbot 5, Prisma schema):
//! - the zod schema: `type` ∈ event|identify|performance; `website`/`link`/`pixel` UUIDs, exactly
//!   one; `hostname` ≤ 100, `language` ≤ 35, `screen` ≤ 11, `name` ≤ 50, `tag` ≤ 50; `url` and
//!   `referrer` URL-or-path; `timestamp` coerced integer; `data` an object; unknown keys stripped
//!   → 400 `{"error": {"message": "Bad request", "code": "bad-request", "status": 400, "errors"}}`;
//! - `isbot(payload.userAgent ?? User-Agent)` → 200 `{"beep": "boop"}`, nothing stored (a missing
//!   agent is not a bot); any bare `name/version` agent is a bot;
//! - unknown website → 400 `Website not found.`;
//! - the visitor's IP (`payload.ip`, else the headers) in `IGNORE_IP` (`ignore_ips`) → Umami's own
//!   403 `{"error": {"message": "Forbidden", "code": "forbidden", "status": 403}}`;
//! - PostgreSQL column limits not checked by zod → 500 with the serialised Prisma error as
//!   `errorObject`. Before the event row (session `distinct_id` 50, browser/os/device 20;
//!   `website_event.hostname` 100 — `hostname`, else the URL's host —, UTM and click ids 255)
//!   nothing of the event is stored (`failed`); after it (`event_data` keys and text values 500,
//!   `number_value numeric(19,4)`, the revenue row) the event *is* stored (`stored_then_failed`);
//! - success → 200 `{"cache", "sessionId", "visitId"}`.
//!
//! `/api/batch` as umami@c0ea3ae `src/app/api/batch/route.ts` (v3.1.0) has it: the body
//! must be an array of objects (`z.array(z.record(z.string(), z.any()))`, else the 400 above for
//! the whole batch); each element goes through the send handler above, one after the other, with
//! the batch request's headers; the answer is always 200 `{"size", "processed", "errors",
//! "details": [{"index", "response"}], "cache"}` — `details` holding the send handler's error
//! answer of each element that did not answer 2xx. A bot's `{"beep": "boop"}` is a 2xx: it counts
//! as processed and is in no detail. Each element is recorded on its own in `received`; the
//! request (its size and status) in `batches`.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::state::{Fakes, Received, body_value, delay, failure_response, header_map, now};

/// The fake's routes, mounted under `/umami`.
pub fn routes() -> axum::Router<Fakes> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/api/send", post(send))
        .route("/api/batch", post(batch))
        .route("/api/auth/login", post(login))
        .route("/api/me", get(me))
}

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
    let (res, outcome, status, reason) = match fakes.forced_failure("umami") {
        Some(f) => (failure_response(&f), "failed", f.status, Some("told to fail".into())),
        None => {
            let (status, answer, outcome, reason) = answer(&fakes, &headers, &body);
            ((status, axum::Json(answer)).into_response(), outcome, status.as_u16(), reason)
        }
    };
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

/// `POST /api/batch`. Besides Umami's own rules, `refuse_batches_containing` (an event name)
/// makes the fake refuse a whole batch holding such an event with a 400, as a service that
/// validates a batch as a whole does (PostHog) — to prove the gateway splits a refused batch.
pub async fn batch(State(fakes): State<Fakes>, headers: HeaderMap, body: Bytes) -> Response {
    let behaviour = fakes.behaviour("umami");
    delay(&behaviour).await;
    let value = body_value(&body);
    let size = value.as_array().map_or(0, Vec::len);
    // A batch answered as a whole: recorded once, with the whole body.
    let whole = |status: u16, outcome: &'static str, reason: &str| {
        fakes.record_batch("umami", "/api/batch", size, status);
        fakes.record(Received {
            provider: "umami",
            path: "/api/batch".into(),
            headers: header_map(&headers),
            body: value.clone(),
            status,
            outcome,
            reason: Some(reason.into()),
            resolved_ip: None,
            at: now(),
        });
    };
    if let Some(f) = fakes.forced_failure("umami") {
        whole(f.status, "failed", "told to fail");
        return failure_response(&f);
    }
    let elements = match value.as_array() {
        Some(a) if a.iter().all(Value::is_object) => a.clone(),
        _ => {
            whole(400, "rejected", "not an array of objects");
            let (status, answer) =
                bad_request(vec![json!({"path": [], "message": "Invalid input: expected array of records"})]);
            return (status, axum::Json(answer)).into_response();
        }
    };
    if let Some(name) = behaviour.refuse_batches_containing.as_deref()
        && elements.iter().any(|e| e["payload"]["name"] == name)
    {
        whole(400, "rejected", "refuse_batches_containing");
        let (status, answer) = bad_request(vec![json!({"path": [], "message": format!("batch holds {name:?}")})]);
        return (status, axum::Json(answer)).into_response();
    }
    fakes.record_batch("umami", "/api/batch", size, 200);
    let (mut details, mut cache) = (Vec::new(), Value::Null);
    for (index, element) in elements.into_iter().enumerate() {
        let bytes = serde_json::to_vec(&element).unwrap_or_default();
        let (status, answer, outcome, reason) = answer(&fakes, &headers, &bytes);
        if status.is_success() {
            if cache.is_null() {
                cache = answer["cache"].clone();
            }
        } else {
            details.push(json!({"index": index, "response": answer}));
        }
        let resolved_ip = element["payload"]["ip"].as_str().map(String::from);
        fakes.record(Received {
            provider: "umami",
            path: "/api/batch".into(),
            headers: header_map(&headers),
            body: element,
            status: status.as_u16(),
            outcome,
            reason,
            resolved_ip,
            at: now(),
        });
    }
    let errors = details.len();
    let answer =
        json!({"size": size, "processed": size - errors, "errors": errors, "details": details, "cache": cache});
    (StatusCode::OK, axum::Json(answer)).into_response()
}

fn bad_request(errors: Vec<Value>) -> (StatusCode, Value) {
    (
        StatusCode::BAD_REQUEST,
        json!({"error": {"message": "Bad request", "code": "bad-request", "status": 400, "errors": errors}}),
    )
}

/// The send handler's answer to one event (forced failures aside): status, JSON, what it did.
fn answer(fakes: &Fakes, headers: &HeaderMap, body: &[u8]) -> (StatusCode, Value, &'static str, Option<String>) {
    let behaviour = fakes.behaviour("umami");
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(body) else {
        let (status, answer) = bad_request(vec![json!({"path": [], "message": "Invalid input: expected object"})]);
        return (status, answer, "rejected", Some("not JSON".into()));
    };
    let errors = validate(&req, behaviour.formula_guard);
    if !errors.is_empty() {
        let why = errors.iter().map(|e| e["message"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>().join("; ");
        let (status, answer) = bad_request(errors);
        return (status, answer, "rejected", Some(why));
    }
    let payload = req["payload"].as_object().cloned().unwrap_or_default();
    let ua = payload
        .get("userAgent")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .or_else(|| headers.get("user-agent").and_then(|v| v.to_str().ok()).map(String::from));
    if ua.as_deref().is_some_and(isbot) {
        return (StatusCode::OK, json!({"beep": "boop"}), "dropped", Some("isbot".into()));
    }
    let website = payload.get("website").and_then(Value::as_str).unwrap_or("");
    if !behaviour.websites.iter().any(|w| w.eq_ignore_ascii_case(website)) {
        let answer = json!({"error": {"message": "Website not found.", "code": "bad-request", "status": 400}});
        return (StatusCode::BAD_REQUEST, answer, "rejected", Some("website not found".into()));
    }
    let ip = payload.get("ip").and_then(Value::as_str).map(String::from).or_else(|| {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or("").trim().into())
    });
    if ip.is_some_and(|ip| behaviour.ignore_ips.contains(&ip)) {
        let forbidden = json!({"error": {"message": "Forbidden", "code": "forbidden", "status": 403}});
        return (StatusCode::FORBIDDEN, forbidden, "rejected", Some("IGNORE_IP".into()));
    }
    if let Some(overflow) = over_db_limits(&payload) {
        let body = json!({"error": {"message": "Server error", "code": "server-error", "status": 500,
                                    "errorObject": overflow.error_object}});
        let outcome = if overflow.after_event_row { "stored_then_failed" } else { "failed" };
        let why = format!("{} ({})", overflow.column, overflow.error_object["message"].as_str().unwrap_or("").trim());
        return (StatusCode::INTERNAL_SERVER_ERROR, body, outcome, Some(why));
    }
    let ok = json!({"cache": format!("fake.{}", uuid::Uuid::new_v4().simple()), "sessionId": uuid::Uuid::new_v4(), "visitId": uuid::Uuid::new_v4()});
    (StatusCode::OK, ok, "stored", None)
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

/// A column Umami's PostgreSQL schema would overflow, and where in `saveEvent` that happens.
struct Overflow {
    column: String,
    /// What `serializeError` makes of the exception, under route.ts's `serverError`.
    error_object: Value,
    after_event_row: bool,
}

const TOO_LONG: &str = "The provided value for the column is too long for the column's type.";
const OUT_OF_RANGE: &str = "Value out of range for the type. numeric field overflow";

/// Prisma/PostgreSQL column sizes the schema does not check, in the order Umami writes them.
fn over_db_limits(p: &Map<String, Value>) -> Option<Overflow> {
    let chars = |v: &Value| v.as_str().map(|s| s.chars().count()).unwrap_or(0);
    // `call`: the Prisma call that fails — `session.create`, `websiteEvent.create` (before the
    // event row), `eventData.createMany`, `revenue.create` (after it).
    let overflow = |column: String, call: &str, too_long: bool| {
        let message = if too_long { TOO_LONG } else { OUT_OF_RANGE };
        Some(Overflow {
            column,
            error_object: json!({
                "name": "PrismaClientKnownRequestError",
                "code": if too_long { "P2000" } else { "P2020" },
                "message": format!("\nInvalid `prisma.{call}()` invocation:\n\n{message}"),
            }),
            after_event_row: matches!(call, "eventData.createMany" | "revenue.create"),
        })
    };
    if p.get("id").is_some_and(|v| chars(v) > 50) {
        return overflow("session.distinct_id VarChar(50)".into(), "session.create", true);
    }
    for k in ["browser", "os", "device"] {
        if p.get(k).is_some_and(|v| chars(v) > 20) {
            return overflow(format!("session.{k} VarChar(20)"), "session.create", true);
        }
    }
    let base = match p.get("hostname").and_then(Value::as_str) {
        Some(h) => format!("https://{h}"),
        None => "https://localhost".into(),
    };
    let page = p.get("url").and_then(Value::as_str).and_then(|u| url::Url::parse(&base).ok()?.join(u).ok());
    // `hostname || urlDomain`: without a hostname, the URL's host without `www.`.
    let hostname = match p.get("hostname").and_then(Value::as_str) {
        Some(h) => Some(h.to_string()),
        None => page.as_ref().and_then(|u| u.host_str().map(|h| h.strip_prefix("www.").unwrap_or(h).to_string())),
    };
    if hostname.is_some_and(|h| h.chars().count() > 100) {
        return overflow("website_event.hostname VarChar(100)".into(), "websiteEvent.create", true);
    }
    if let Some(u) = &page {
        for (k, v) in u.query_pairs() {
            let tracked = k.starts_with("utm_")
                || ["gclid", "fbclid", "msclkid", "ttclid", "li_fat_id", "twclid"].contains(&k.as_ref());
            if tracked && v.chars().count() > 255 {
                return overflow(format!("website_event.{k} VarChar(255)"), "websiteEvent.create", true);
            }
        }
    }
    if let Some(data) = p.get("data").and_then(Value::as_object) {
        let mut flat = Vec::new();
        flatten("", data, &mut flat);
        for (k, v) in &flat {
            if k.chars().count() > 500 || v.as_str().is_some_and(|s| s.chars().count() > 500) {
                return overflow(
                    "event_data.data_key / string_value VarChar(500)".into(),
                    "eventData.createMany",
                    true,
                );
            }
            // `getStringValue`: `new Date(value).toISOString()` for a DATETIME_REGEX match.
            if v.as_str().is_some_and(is_impossible_date) {
                return Some(Overflow {
                    column: format!("event_data.date_value ({k}: not a date)"),
                    error_object: json!({"name": "RangeError", "message": "Invalid time value",
                                         "stack": "RangeError: Invalid time value\n    at Date.toISOString (<anonymous>)"}),
                    after_event_row: true,
                });
            }
            if v.as_f64().is_some_and(|n| n.abs() >= 1e15) {
                return overflow(format!("event_data.number_value numeric(19,4) ({k})"), "eventData.createMany", false);
            }
        }
        // `if (revenue > 0 && currency)`: JavaScript compares a numeric string as a number.
        let revenue = match data.get("revenue") {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        let currency = data.get("currency").and_then(Value::as_str).filter(|c| !c.is_empty());
        if let (Some(r), Some(c)) = (revenue.filter(|r| *r > 0.0), currency) {
            if c.chars().count() > 10 {
                return overflow("revenue.currency VarChar(10)".into(), "revenue.create", true);
            }
            if r >= 1e15 {
                return overflow("revenue.revenue numeric(19,4)".into(), "revenue.create", false);
            }
        }
    }
    None
}

/// Matches Umami's `DATETIME_REGEX` (`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}(Z|\+\d{2}:\d{2})?)?$`)
/// but is no valid date, so JavaScript's `new Date(v)` is `Invalid Date`.
fn is_impossible_date(s: &str) -> bool {
    let digits = |r: std::ops::Range<usize>| s.get(r).is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()));
    let sep = |i: usize, c: char| s[i..].starts_with(c);
    let tail = &s.get(19..).unwrap_or("x");
    let tail_ok = tail.is_empty()
        || (tail.len() >= 4 && sep(19, '.') && digits(20..23) && {
            let zone = &tail[4..];
            zone.is_empty()
                || zone == "Z"
                || (zone.len() == 6 && zone.starts_with('+') && digits(24..26) && sep(26, ':') && digits(27..29))
        });
    let shaped = s.len() >= 19
        && digits(0..4)
        && sep(4, '-')
        && digits(5..7)
        && sep(7, '-')
        && digits(8..10)
        && sep(10, 'T')
        && digits(11..13)
        && sep(13, ':')
        && digits(14..16)
        && sep(16, ':')
        && digits(17..19)
        && tail_ok;
    if !shaped {
        return false;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(u32::MAX);
    let date = chrono::NaiveDate::from_ymd_opt(n(0..4) as i32, n(5..7), n(8..10));
    let time = chrono::NaiveTime::from_hms_opt(n(11..13), n(14..16), n(17..19));
    let zone = s.len() < 29 || (n(24..26) <= 23 && n(27..29) <= 59);
    date.is_none() || time.is_none() || !zone
}

/// `flattenJSON`: nested objects as dotted keys; arrays as JSON text; other values as they are.
fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, Value)>) {
    for (k, v) in map {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            Value::Object(m) => flatten(&key, m, out),
            Value::Array(_) => out.push((key, Value::String(v.to_string()))),
            other => out.push((key, other.clone())),
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
    // isbot 5's `ptst[ /]\d`: the WebPageTest agent (`… PTST/240101.123456`).
    let webpagetest = l.match_indices("ptst").any(|(i, _)| {
        let rest = &l.as_bytes()[i + 4..];
        rest.len() >= 2 && (rest[0] == b' ' || rest[0] == b'/') && rest[1].is_ascii_digit()
    });
    if webpagetest || keywords.iter().any(|k| l.contains(k)) || l.contains("(compatible;") {
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
