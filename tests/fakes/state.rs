//! What the fakes remember (every request, with the answer given) and how they are told to
//! misbehave.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub struct Fakes {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    /// Every batch request received: `{"provider", "path", "size", "status"}` (its events are in
    /// `received`, one each).
    batches: Vec<Value>,
    plausible: Behaviour,
    umami: Behaviour,
}

/// How one fake should answer, besides validating.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Behaviour {
    pub fail_next: u32,
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    pub delay_ms: u64,
    /// Plausible: registered site domains. Umami: registered website ids.
    pub domains: Vec<String>,
    pub websites: Vec<String>,
    pub datacenter_ips: Vec<String>,
    /// Umami: refuse names and tags starting with `=`, `+`, `-`, `@`, tab or CR (the CSV guard
    /// providers.md ascribes to recent versions; not in v3.1.0's source, so off by default).
    pub formula_guard: bool,
    /// API keys the authenticated APIs accept (Plausible's Stats API, Umami's `/api/me`).
    pub api_keys: Vec<String>,
    /// Umami: `(username, password)` pairs its login accepts.
    pub users: Vec<(String, String)>,
    /// Umami: the instance's `IGNORE_IP` list (exact addresses): such visitors get Umami's 403.
    pub ignore_ips: Vec<String>,
    /// Umami: refuse a whole `/api/batch` request holding an event of this name (400).
    pub refuse_batches_containing: Option<String>,
}

/// One request as received, with what the fake answered.
#[derive(Clone, Debug, Serialize)]
pub struct Received {
    pub provider: &'static str,
    pub path: String,
    /// Lower-case names; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    /// The JSON body, or the raw text when it is not JSON.
    pub body: Value,
    pub status: u16,
    /// `stored`, `dropped` (answered success, discarded), `rejected` (4xx), `failed` (told to fail),
    /// `stored_then_failed` (Umami's 500 after the event row was written), `ignored` (the
    /// catch-all page answered: no such service).
    pub outcome: &'static str,
    pub reason: Option<String>,
    /// The client IP as the real service would resolve it.
    pub resolved_ip: Option<String>,
    pub at: String,
}

/// A forced failure, when the behaviour asks for one.
pub struct Forced {
    pub status: u16,
    pub retry_after: Option<String>,
}

impl Fakes {
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn record(&self, r: Received) {
        self.inner.lock().unwrap().received.push(r);
    }

    /// A batch request: where it went, how many events it held, the status answered.
    pub fn record_batch(&self, provider: &str, path: &str, size: usize, status: u16) {
        let entry = json!({"provider": provider, "path": path, "size": size, "status": status, "at": now()});
        self.inner.lock().unwrap().batches.push(entry);
    }

    pub fn batches(&self) -> Vec<Value> {
        self.inner.lock().unwrap().batches.clone()
    }

    pub fn reset(&self) {
        *self.inner.lock().unwrap() = Inner::default();
    }

    pub fn behaviour(&self, provider: &str) -> Behaviour {
        let inner = self.inner.lock().unwrap();
        if provider == "plausible" { inner.plausible.clone() } else { inner.umami.clone() }
    }

    /// The failure to answer with now, if any (consumes one `fail_next`).
    pub fn forced_failure(&self, provider: &str) -> Option<Forced> {
        let mut inner = self.inner.lock().unwrap();
        let b = if provider == "plausible" { &mut inner.plausible } else { &mut inner.umami };
        let status = b.status?;
        if b.fail_next > 0 {
            b.fail_next -= 1;
            if b.fail_next == 0 {
                b.status = None;
            }
        }
        Some(Forced { status, retry_after: b.retry_after.clone() })
    }

    /// Merges `{"plausible": {...}, "umami": {...}}` into the behaviour; returns the result.
    pub fn set_behaviour(&self, body: &Value) -> Value {
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        for (name, b) in [("plausible", &mut inner.plausible), ("umami", &mut inner.umami)] {
            let Some(v) = body.get(name).and_then(Value::as_object) else { continue };
            for (k, v) in v {
                match k.as_str() {
                    "fail_next" => b.fail_next = v.as_u64().unwrap_or(0) as u32,
                    "status" => b.status = v.as_u64().map(|s| s as u16),
                    "retry_after" => b.retry_after = v.as_str().map(String::from).or(v.as_u64().map(|n| n.to_string())),
                    "delay_ms" => b.delay_ms = v.as_u64().unwrap_or(0),
                    "domains" => b.domains = strings(v),
                    "websites" => b.websites = strings(v),
                    "datacenter_ips" => b.datacenter_ips = strings(v),
                    "formula_guard" => b.formula_guard = v.as_bool().unwrap_or(false),
                    "api_keys" => b.api_keys = strings(v),
                    "users" => {
                        b.users = v
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|u| Some((u["username"].as_str()?.into(), u["password"].as_str()?.into())))
                            .collect()
                    }
                    "ignore_ips" => b.ignore_ips = strings(v),
                    "refuse_batches_containing" => b.refuse_batches_containing = v.as_str().map(String::from),
                    _ => {}
                }
            }
        }
        json!({"plausible": inner.plausible, "umami": inner.umami})
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

pub fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        out.entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

pub async fn delay(b: &Behaviour) {
    if b.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.delay_ms)).await;
    }
}

/// The answer to a forced failure.
pub fn failure_response(f: &Forced) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (status, axum::Json(json!({"error": format!("fake failure {}", f.status)}))).into_response();
    if let Some(ra) = f.retry_after.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        res.headers_mut().insert("retry-after", ra);
    }
    res
}

/// The body as JSON, or as text when it is not JSON.
pub fn body_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
