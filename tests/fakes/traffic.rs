//! What the fakes saw of the traffic, independent of any one provider's contract: requests in
//! flight per provider (and the most seen at once), a timeline of every provider request
//! (arrival, answer, how many were in flight when it arrived, status), and a latency added to
//! every provider request before it is handled (`--latency-ms N` or `FAKE_LATENCY_MS`, or
//! `POST /_fake/traffic {"latency_ms": N}`), as a provider far away would answer. The latency
//! only delays; every request is still validated as the real service does.
//!
//! `GET /_fake/traffic` — `{"latency_ms", "providers": {name: {"in_flight", "max_in_flight",
//! "requests"}}, "timeline": [{"provider", "arrived_ms", "answered_ms", "concurrent", "status"}]}`
//! (milliseconds since the fake started). `POST /_fake/traffic {"reset": true}` forgets the
//! timeline and the maxima (requests in flight stay counted).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Traffic {
    inner: Arc<Mutex<Inner>>,
    started: Instant,
}

#[derive(Default)]
struct Inner {
    latency_ms: u64,
    providers: BTreeMap<&'static str, Counts>,
    timeline: Vec<Seen>,
}

#[derive(Clone, Copy, Default, Serialize)]
struct Counts {
    in_flight: usize,
    max_in_flight: usize,
    requests: u64,
}

#[derive(Clone, Serialize)]
struct Seen {
    provider: &'static str,
    arrived_ms: f64,
    answered_ms: f64,
    /// Requests to this provider in flight when it arrived, itself included.
    concurrent: usize,
    status: u16,
}

/// The timeline keeps this many requests at most (the oldest are forgotten).
const TIMELINE_MAX: usize = 1_000_000;

impl Traffic {
    pub fn new(latency_ms: u64) -> Self {
        Traffic { inner: Arc::new(Mutex::new(Inner { latency_ms, ..Default::default() })), started: Instant::now() }
    }

    fn ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    /// Counts a request to `provider` in, waits the latency, runs it, counts it out.
    pub async fn track(&self, provider: &'static str, req: Request, next: Next) -> Response {
        let (arrived_ms, concurrent, latency_ms) = {
            let mut inner = self.inner.lock().unwrap();
            let c = inner.providers.entry(provider).or_default();
            c.in_flight += 1;
            c.requests += 1;
            c.max_in_flight = c.max_in_flight.max(c.in_flight);
            (self.ms(), c.in_flight, inner.latency_ms)
        };
        // Counted out even if the connection goes away mid-request (the future is dropped).
        let _out = Out { traffic: self, provider };
        if latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(latency_ms)).await;
        }
        let res = next.run(req).await;
        let seen = Seen { provider, arrived_ms, answered_ms: self.ms(), concurrent, status: res.status().as_u16() };
        let mut inner = self.inner.lock().unwrap();
        if inner.timeline.len() < TIMELINE_MAX {
            inner.timeline.push(seen);
        }
        res
    }

    fn report(&self) -> Value {
        let inner = self.inner.lock().unwrap();
        json!({"latency_ms": inner.latency_ms, "providers": inner.providers, "timeline": inner.timeline})
    }

    fn steer(&self, body: &Value) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(ms) = body.get("latency_ms").and_then(Value::as_u64) {
            inner.latency_ms = ms;
        }
        if body.get("reset").and_then(Value::as_bool) == Some(true) {
            inner.timeline.clear();
            for c in inner.providers.values_mut() {
                c.max_in_flight = c.in_flight;
                c.requests = 0;
            }
        }
    }
}

struct Out<'a> {
    traffic: &'a Traffic,
    provider: &'static str,
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        let mut inner = self.traffic.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = inner.providers.get_mut(self.provider) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }
}

/// The latency to start with: `--latency-ms N` on the command line, else `FAKE_LATENCY_MS`, else 0.
pub fn latency_from_env() -> u64 {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if let Some(v) = a.strip_prefix("--latency-ms=") {
            return v.parse().unwrap_or(0);
        }
        if a == "--latency-ms" {
            return args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    std::env::var("FAKE_LATENCY_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub async fn get(State(traffic): State<Traffic>) -> Json<Value> {
    Json(traffic.report())
}

pub async fn post(State(traffic): State<Traffic>, Json(body): Json<Value>) -> Json<Value> {
    traffic.steer(&body);
    let inner = traffic.inner.lock().unwrap();
    Json(json!({"latency_ms": inner.latency_ms, "providers": inner.providers}))
}
