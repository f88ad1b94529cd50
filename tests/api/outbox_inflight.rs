//! The outbox keeps up with a provider far away: the delivery worker's own loop against the fake
//! answering after 50 ms keeps many requests in flight (counted by the fake, not by the worker),
//! shrinks and pauses on a 429 with `Retry-After`, grows back, and sends every event once.

use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    fakes::FakeProviders,
    helpers::{TestApp, eventually, manual_delivery, send, spawn_app_with},
    site::{self, Site},
};

/// The fake's answer time: a provider 50 ms away.
const LATENCY_MS: u64 = 50;

/// `n` page views (page `/p/<i>`), posted by the site's server in batches, waiting in the outbox.
async fn waiting(app: &TestApp, keys: &Site, n: usize) {
    for start in (0..n).step_by(100) {
        let batch: Vec<Value> = (start..n.min(start + 100))
            .map(|i| {
                json!({"event_name": "pageview", "page_url": format!("https://www.example.com/p/{i}"),
                       "user_agent": site::CHROME, "ip": "198.51.100.7"})
            })
            .collect();
        let (s, res) =
            send(app.http.post(app.tenant_url("/events")).bearer_auth(&keys.secret_key).json(&json!({"batch": batch})))
                .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{res}");
    }
}

/// The delivery worker's loop, as the app runs it, started now; stopped when the token is.
fn start_worker(app: &TestApp) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let run = consentgate::outbox::worker::run(
        app.db.clone(),
        app.app.state.settings.delivery.clone(),
        app.app.state.outbox.clone(),
        stop.clone(),
    );
    (stop, tokio::spawn(run))
}

/// Waits until the fake stored `n` Plausible events; asserts each page was stored exactly once.
async fn every_page_once(fakes: &FakeProviders, n: usize) {
    let stored = eventually(90, || async {
        let stored = fakes.stored("plausible").await;
        (stored.len() >= n).then_some(stored)
    })
    .await;
    let mut pages: Vec<String> =
        stored.iter().map(|r| r["body"]["url"].as_str().unwrap_or_default().to_string()).collect();
    pages.sort();
    pages.dedup();
    assert_eq!((stored.len(), pages.len()), (n, n), "every event stored once");
}

/// The fake's timeline of Plausible requests, in order of arrival.
async fn timeline(fakes: &FakeProviders) -> Vec<Value> {
    let mut t: Vec<Value> = fakes.traffic().await["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["provider"] == "plausible")
        .cloned()
        .collect();
    t.sort_by(|a, b| a["arrived_ms"].as_f64().partial_cmp(&b["arrived_ms"].as_f64()).unwrap());
    t
}

fn ms(r: &Value, key: &str) -> f64 {
    r[key].as_f64().unwrap()
}

fn most_concurrent<'a>(rs: impl IntoIterator<Item = &'a Value>) -> u64 {
    rs.into_iter().map(|r| r["concurrent"].as_u64().unwrap()).max().unwrap_or(0)
}

#[tokio::test]
async fn a_provider_50_ms_away_gets_many_requests_in_flight_and_every_event_once() {
    let app = spawn_app_with(manual_delivery).await;
    let fakes = FakeProviders::start().await;
    fakes.latency(LATENCY_MS).await;
    let keys = site::site(&app).await;
    site::plausible(&app, &fakes, json!({})).await;
    let n = 600;
    waiting(&app, &keys, n).await;
    let (stop, worker) = start_worker(&app);
    every_page_once(&fakes, n).await;
    stop.cancel();
    worker.await.unwrap();
    // Plausible has no batch endpoint: one event per request, many at once. The old fixed limit
    // was 4 per provider; the window starts there and grows while the provider keeps answering.
    let seen = fakes.traffic().await["providers"]["plausible"]["max_in_flight"].as_u64().unwrap();
    assert!(seen > 16, "at most {seen} requests in flight at the fake");
    let delivered = entity::delivery::Entity::find()
        .filter(entity::delivery::Column::Status.eq("delivered"))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(delivered, n as u64, "every delivery recorded as delivered");
}

#[tokio::test]
async fn a_429_with_retry_after_shrinks_the_window_and_pauses_then_it_grows_back() {
    let app = spawn_app_with(|s| {
        manual_delivery(s);
        s.delivery.in_flight_max = 24;
        // A Retry-After is honoured up to the longest backoff.
        s.delivery.backoff_max_ms = 5_000;
    })
    .await;
    let fakes = FakeProviders::start().await;
    fakes.latency(LATENCY_MS).await;
    let keys = site::site(&app).await;
    site::plausible(&app, &fakes, json!({})).await;
    let n = 900;
    waiting(&app, &keys, n).await;
    let (stop, worker) = start_worker(&app);
    // Once the window is wide open, the provider answers 429 with `Retry-After: 1` three times.
    eventually(30, || async {
        let seen = fakes.traffic().await["providers"]["plausible"]["max_in_flight"].as_u64().unwrap_or(0);
        (seen >= 20).then_some(())
    })
    .await;
    fakes.behaviour(json!({"plausible": {"status": 429, "fail_next": 3, "retry_after": "1"}})).await;
    every_page_once(&fakes, n).await;
    stop.cancel();
    worker.await.unwrap();

    let t = timeline(&fakes).await;
    let first_429 = t.iter().filter(|r| r["status"] == 429).map(|r| ms(r, "answered_ms")).fold(f64::MAX, f64::min);
    assert!(first_429 < f64::MAX, "the fake answered 429");
    let before: Vec<&Value> = t.iter().filter(|r| ms(r, "arrived_ms") < first_429).collect();
    // Requests sent before the worker read the 429 may still arrive just after it; then nothing
    // until the second `Retry-After` asked for has passed (the worker read it after the fake
    // sent it).
    let paused: Vec<&Value> =
        t.iter().filter(|r| (first_429 + 250.0..first_429 + 950.0).contains(&ms(r, "arrived_ms"))).collect();
    assert!(paused.is_empty(), "requests arrived during the pause: {paused:?}");
    let after: Vec<&Value> = t.iter().filter(|r| ms(r, "arrived_ms") >= first_429 + 950.0).collect();
    assert!(after.len() > 300, "only {} requests after the pause", after.len());
    let peak = most_concurrent(before.iter().copied());
    let resumed = most_concurrent(after.iter().take(20).copied());
    let regrown = most_concurrent(after.iter().skip(after.len() - 100).copied());
    assert!(peak >= 20, "the window was open before the 429: {peak}");
    assert!(resumed <= peak / 2 + 2, "the window shrank after the 429: {peak} before, {resumed} after");
    assert!(regrown > resumed, "the window grew back after recovery: {resumed} after the pause, {regrown} later");
}
