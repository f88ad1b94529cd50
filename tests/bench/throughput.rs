//! Throughput benchmark: `cargo bench --bench throughput` (add `TEST_DATABASE_URL=postgres://…`
//! to include PostgreSQL). Every phase is bounded in time (`BENCH_SECS`, default 5) and talks
//! only to the gateway it starts on 127.0.0.1. Delivery workers are off: this measures what a
//! site waits for — validation, the consent decision per provider config and the one
//! transaction that stores the event, its decisions and its deliveries.
//!
//! This machine is noisy: compare the ratios printed at the end, measured in one run, not the
//! absolute numbers across runs.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Utc;
use consentgate::{
    app::App,
    config::Settings,
    consent::{
        Action, Choices, ConsentPolicy, ProviderPolicy, ProviderStatus, RecordedChoice, RequiredCategory, Signals,
        decide,
    },
    tenants::{self, TenantSlug},
    tokens::{self, Role},
};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

const CONCURRENCY: usize = 8;
const BATCH: usize = 50;
const SAMPLE_CONFIG: &str = include_str!("../../banner/sample-config.json");
const UA: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let window = Duration::from_secs(secs);
    println!("consentgate throughput, {secs} s per phase, {CONCURRENCY} concurrent clients\n");
    bench_decide();

    let mut results = Vec::new();
    let sqlite_dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}?mode=rwc", sqlite_dir.path().join("bench.db").display());
    results.push(("sqlite", bench_backend(&sqlite, window).await));
    if let Ok(server) = std::env::var("TEST_DATABASE_URL") {
        let name = format!("cgbench_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&server).await.expect("PostgreSQL reachable");
        admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        results.push(("postgres", bench_backend(url.as_str(), window).await));
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.unwrap();
    }

    println!("\nratios (same run):");
    for (backend, r) in &results {
        println!(
            "  {backend}: events/s in batches of {BATCH} vs single posts = {:.1}x; banner.js vs /healthz requests/s = {:.2}",
            r.batch_events / r.single_events,
            r.banner / r.healthz
        );
    }
    if let [(_, s), (_, p)] = results.as_slice() {
        println!(
            "  postgres vs sqlite, single events/s = {:.2}; batched = {:.2}",
            p.single_events / s.single_events,
            p.batch_events / s.batch_events
        );
    }
}

/// The pure decision, per call.
fn bench_decide() {
    let now = Utc::now();
    let policy = ConsentPolicy {
        expiry_days: 180,
        geo_targeting_enabled: true,
        consent_required_regions: ["AT", "DE", "FR", "SE", "GB", "US-CA"].map(String::from).to_vec(),
        respect_do_not_track: true,
        enabled: Choices::all(),
        default_accepted: Choices::none(),
        revision: 2,
        reconsent_revision: 1,
    };
    let record = RecordedChoice {
        choices: Choices { functional: false, analytics: true, marketing: false },
        action: Action::Custom,
        revision: 2,
        created_at: now,
        expires_at: now + chrono::Duration::days(180),
        other_config: false,
        dnt: false,
        gpc: false,
        providers: None,
    };
    let signals = Signals { country: Some("SE".into()), ..Default::default() };
    let provider = ProviderPolicy {
        status: Some(ProviderStatus::Active),
        required_category: Some(RequiredCategory::Analytics),
        cookieless_fallback: false,
        requires_record: false,
        config_id: uuid::Uuid::nil(),
    };
    let n = 1_000_000u32;
    let started = Instant::now();
    let mut allowed = 0u32;
    for _ in 0..n {
        allowed += u32::from(
            std::hint::black_box(decide(Some(&policy), Some(&record), &signals, &provider, now)).is_allowed(),
        );
    }
    let per = started.elapsed() / n;
    assert_eq!(allowed, n);
    println!("decide(): {per:?} per decision ({n} decisions)");
}

struct Figures {
    single_events: f64,
    batch_events: f64,
    banner: f64,
    healthz: f64,
}

async fn bench_backend(url: &str, window: Duration) -> Figures {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.database.url = url.into();
    settings.delivery.enabled = false;
    settings.consent.writes_per_minute_per_ip = 0;
    let app = App::start(settings).await.expect("gateway starts");
    let backend = if url.starts_with("sqlite") { "sqlite" } else { "postgres" };
    let base = app.base_url();
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(CONCURRENCY).build().unwrap();

    let tenant = tenants::create(&app.state.db, &TenantSlug::parse("bench").unwrap(), "Bench").await.unwrap();
    let (_, admin) = tokens::create(&app.state.db, tenant.id, Role::Admin, "bench").await.unwrap();
    let admin = admin.expose_secret().to_string();
    let t = format!("{base}/v1/tenants/bench");
    let post = |path: String, body: Value| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let res = http.post(path).bearer_auth(admin).json(&body).send().await.unwrap();
            assert!(res.status().is_success(), "setup: {}", res.status());
            res.json::<Value>().await.unwrap()
        }
    };
    let config =
        post(format!("{t}/analytics/cookie-consent/configs"), serde_json::from_str(SAMPLE_CONFIG).unwrap()).await;
    post(
        format!("{t}/analytics/cookie-consent/configs/{}/publish", config["id"].as_str().unwrap()),
        json!({"requires_reconsent": false}),
    )
    .await;
    for (provider, body) in [
        ("plausible", json!({"display_name": "P", "site_id": "example.com", "status": "active"})),
        (
            "umami",
            json!({"display_name": "U", "website_id": "5b8e9c3a-51f0-4d5c-8a52-8f1f6f5b7c10", "status": "active"}),
        ),
    ] {
        post(format!("{t}/analytics/{provider}/configs"), body).await;
    }
    let key = post(format!("{t}/ingest-keys"), json!({"kind": "secret", "name": "bench"})).await["key"]
        .as_str()
        .unwrap()
        .to_string();
    // Half the visitors have accepted analytics, so both consent paths are exercised.
    for v in 0..100 {
        let action = if v % 2 == 0 { "accept_all" } else { "reject_all" };
        let res = http
            .post(format!("{t}/consent"))
            .json(&json!({"visitor_id": format!("visitor-{v}"), "action": action, "revision": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }

    let seq = Arc::new(AtomicU64::new(0));
    let event = move |seq: &AtomicU64| {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        json!({"event_name": "pageview", "page_url": format!("https://example.com/p/{}?utm_source=bench", n % 500),
               "anonymous_id": format!("visitor-{}", n % 100), "user_agent": UA, "ip": "203.0.113.9",
               "idempotency_key": format!("e-{n}")})
    };
    let events = format!("{t}/events");

    let single = run(window, {
        let (http, key, events, seq) = (http.clone(), key.clone(), events.clone(), seq.clone());
        move || {
            let req = http.post(&events).bearer_auth(&key).json(&event(&seq));
            async move { req.send().await.is_ok_and(|r| r.status() == StatusCode::ACCEPTED).then_some(1) }
        }
    })
    .await;
    let batch = run(window, {
        let (http, key, events, seq) = (http.clone(), key.clone(), events.clone(), seq.clone());
        move || {
            let body = json!({"batch": (0..BATCH).map(|_| event(&seq)).collect::<Vec<_>>()});
            let req = http.post(&events).bearer_auth(&key).json(&body);
            async move { req.send().await.is_ok_and(|r| r.status() == StatusCode::ACCEPTED).then_some(BATCH as u64) }
        }
    })
    .await;
    let banner = run(window, {
        let (http, url) = (http.clone(), format!("{t}/banner.js"));
        move || {
            let req = http.get(&url);
            async move { req.send().await.is_ok_and(|r| r.status() == StatusCode::OK).then_some(1) }
        }
    })
    .await;
    let healthz = run(window, {
        let (http, url) = (http.clone(), format!("{base}/healthz"));
        move || {
            let req = http.get(&url);
            async move { req.send().await.is_ok_and(|r| r.status() == StatusCode::OK).then_some(1) }
        }
    })
    .await;
    println!("{backend}:");
    println!("  single events   {:>9.0} events/s", single);
    println!("  batches of {BATCH}   {:>9.0} events/s", batch);
    println!("  banner.js       {:>9.0} requests/s", banner);
    println!("  /healthz        {:>9.0} requests/s", healthz);
    app.stop().await.unwrap();
    Figures { single_events: single, batch_events: batch, banner, healthz }
}

/// Runs `make` from CONCURRENCY clients for `window`; returns units per second. A failed request
/// stops the benchmark: figures of a failing gateway mean nothing.
async fn run<F, Fut>(window: Duration, make: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<u64>> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (make, done) = (make.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < window {
                let units = make().await.expect("the gateway answered an error during the benchmark");
                done.fetch_add(units, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
