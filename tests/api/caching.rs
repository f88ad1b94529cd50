//! The config cache (docs/caching.md): an event reads neither its tenant, its key, the consent
//! policy, the provider configs nor the daily salt from the database; a change to them applies
//! at once on the instance that made it and within the documented bound on every other instance
//! of the same database (SQLite file or PostgreSQL).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use consentgate::{app::App, config::Settings};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

use crate::{
    fakes::POSTHOG_PROJECT_KEY,
    helpers::{TestApp, eventually, send},
    site::{self, pageview, visitor},
};

/// A poll every 200 ms, so the tests are quick; a max age far above it, so that a change seen
/// within the bound was seen by a poll, not because the entry expired.
fn fast_cache(s: &mut Settings) {
    s.cache.refresh_ms = 200;
    s.cache.max_age_ms = 20_000;
}

/// How long a change may take to reach another instance while polls work: `refresh_ms` plus
/// one poll (docs/caching.md) — with 1.5 s for the poll and the request that observes it on a
/// loaded machine.
fn bound(app: &TestApp) -> Duration {
    Duration::from_millis(app.app.state.settings.cache.refresh_ms) + Duration::from_millis(1_500)
}

/// A second gateway instance on the test app's database (same settings).
async fn second_instance(app: &TestApp) -> App {
    App::start((*app.app.state.settings).clone()).await.expect("a second instance starts")
}

/// Posts a page view with the secret key to the instance at `base`.
async fn post(app: &TestApp, base: &str, key: &str, body: &Value) -> (StatusCode, Value) {
    let url = format!("{base}/v1/tenants/{}/events", app.tenant);
    send(app.http.post(url).bearer_auth(key).json(body)).await
}

/// The reason of the decision about config `config_id` in an ingest answer.
fn reason(answer: &(StatusCode, Value), config_id: &str) -> String {
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{}", answer.1);
    let d = answer.1["decisions"].as_array().unwrap().iter().find(|d| d["config_id"] == config_id);
    d.unwrap_or_else(|| panic!("no decision for {config_id}: {}", answer.1))["reason"].as_str().unwrap().to_string()
}

/// Waits until `check` holds on the other instance; returns how long that took from `since`,
/// asserting it is within the bound.
async fn within_bound<F, Fut>(app: &TestApp, since: Instant, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let limit = bound(app);
    eventually(limit.as_secs() + 5, || {
        let done = check();
        async move { done.await.then_some(()) }
    })
    .await;
    let took = since.elapsed();
    assert!(took <= limit, "took {took:?}, the bound is {limit:?}");
    took
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_here_and_within_the_bound_on_another_instance() {
    let (app, _fakes, site) = site::setup_with(fast_cache).await;
    let other = second_instance(&app).await;
    let b = other.base_url();
    let key = site::create_key(&app, json!({"kind": "secret", "name": "k"})).await;
    let secret = key["key"].as_str().unwrap();
    // B knows the key (and caches it).
    assert_eq!(post(&app, &b, secret, &pageview(&visitor())).await.0, StatusCode::ACCEPTED);
    assert_eq!(post(&app, &app.base, secret, &pageview(&visitor())).await.0, StatusCode::ACCEPTED);
    let (s, _) = app
        .delete(&format!("/v1/tenants/{}/ingest-keys/{}", app.tenant, key["id"].as_str().unwrap()), &app.admin)
        .await;
    assert_eq!(s, StatusCode::OK);
    let revoked = Instant::now();
    let here = post(&app, &app.base, secret, &pageview(&visitor())).await;
    assert_eq!(here.0, StatusCode::UNAUTHORIZED, "refused at once on the revoking instance: {}", here.1);
    within_bound(&app, revoked, || async {
        post(&app, &b, secret, &pageview(&visitor())).await.0 == StatusCode::UNAUTHORIZED
    })
    .await;
    // The site's other key still works on both.
    assert_eq!(post(&app, &b, &site.secret_key, &pageview(&visitor())).await.0, StatusCode::ACCEPTED);
    other.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_key_works_at_once_here_and_within_the_bound_on_another_instance() {
    let (app, _fakes, site) = site::setup_with(fast_cache).await;
    let other = second_instance(&app).await;
    let b = other.base_url();
    // B caches the tenant with the site's keys only.
    assert_eq!(post(&app, &b, &site.secret_key, &pageview(&visitor())).await.0, StatusCode::ACCEPTED);
    let key = site::create_key(&app, json!({"kind": "secret", "name": "new"})).await;
    let created = Instant::now();
    let secret = key["key"].as_str().unwrap();
    assert_eq!(post(&app, &app.base, secret, &pageview(&visitor())).await.0, StatusCode::ACCEPTED);
    within_bound(&app, created, || async {
        post(&app, &b, secret, &pageview(&visitor())).await.0 == StatusCode::ACCEPTED
    })
    .await;
    other.stop().await.unwrap();
}

#[tokio::test]
async fn a_paused_provider_config_is_decided_paused_at_once_here_and_within_the_bound_elsewhere() {
    let (app, fakes, site) = site::setup_with(fast_cache).await;
    let plausible = site::plausible(&app, &fakes, json!({"required_category": "none"})).await;
    let id = plausible["id"].as_str().unwrap();
    let other = second_instance(&app).await;
    let b = other.base_url();
    let event = pageview(&visitor());
    // Both instances cache the active config.
    for base in [&b, &app.base] {
        assert_ne!(reason(&post(&app, base, &site.secret_key, &event).await, id), "denied:config_paused");
    }
    let (s, body) = site::patch_config(&app, "plausible", id, json!({"status": "paused"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let paused = Instant::now();
    assert_eq!(reason(&post(&app, &app.base, &site.secret_key, &event).await, id), "denied:config_paused");
    within_bound(&app, paused, || async {
        reason(&post(&app, &b, &site.secret_key, &pageview(&visitor())).await, id) == "denied:config_paused"
    })
    .await;
    other.stop().await.unwrap();
}

#[tokio::test]
async fn a_published_consent_config_applies_at_once_here_and_within_the_bound_elsewhere() {
    let (app, fakes, site) = site::setup_with(fast_cache).await;
    let umami = site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    let id = umami["id"].as_str().unwrap();
    let other = second_instance(&app).await;
    let b = other.base_url();
    let event = || pageview(&visitor());
    let without = reason(&post(&app, &b, &site.secret_key, &merge_country(event(), "US")).await, id);
    assert_eq!(reason(&post(&app, &app.base, &site.secret_key, &merge_country(event(), "US")).await, id), without);
    // Analytics granted by default outside the regions where consent is required.
    let changes = json!({"consent_required_regions": ["DE"],
                         "categories": {"analytics": {"default_accepted": true}}});
    app.publish_consent_config(changes).await;
    let published = Instant::now();
    let here = reason(&post(&app, &app.base, &site.secret_key, &merge_country(event(), "US")).await, id);
    assert_ne!(here, without, "the published policy applies at once on this instance");
    within_bound(&app, published, || async {
        reason(&post(&app, &b, &site.secret_key, &merge_country(event(), "US")).await, id) == here
    })
    .await;
    other.stop().await.unwrap();
}

/// A change made directly in the database (no generation bump: no poll reports it) applies
/// within `max_age_ms` of the entries' load, on every instance.
#[tokio::test]
async fn a_direct_edit_of_the_database_applies_within_max_age() {
    let (app, fakes, site) = site::setup_with(|s| {
        s.cache.refresh_ms = 100;
        s.cache.max_age_ms = 1_000;
    })
    .await;
    let plausible = site::plausible(&app, &fakes, json!({"required_category": "none"})).await;
    let id = plausible["id"].as_str().unwrap();
    let other = second_instance(&app).await;
    let b = other.base_url();
    for base in [&b, &app.base] {
        assert_ne!(
            reason(&post(&app, base, &site.secret_key, &pageview(&visitor())).await, id),
            "denied:config_paused"
        );
    }
    let backend = app.db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => "UPDATE provider_config SET status = 'paused' WHERE id = $1",
        _ => "UPDATE provider_config SET status = 'paused' WHERE id = ?",
    };
    let config_id: uuid::Uuid = id.parse().unwrap();
    app.db.execute_raw(Statement::from_sql_and_values(backend, sql, [config_id.into()])).await.unwrap();
    let edited = Instant::now();
    let limit = Duration::from_millis(1_000) + Duration::from_millis(1_500);
    for base in [&b, &app.base] {
        eventually(limit.as_secs() + 5, || async {
            let r = reason(&post(&app, base, &site.secret_key, &pageview(&visitor())).await, id);
            (r == "denied:config_paused").then_some(())
        })
        .await;
    }
    assert!(edited.elapsed() <= limit, "took {:?}, max_age_ms is 1 s", edited.elapsed());
    other.stop().await.unwrap();
}

/// A server's event that says where its visitor is.
fn merge_country(mut event: Value, country: &str) -> Value {
    event["country"] = json!(country);
    event
}

/// Every statement the instance runs, as SQL text.
#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Vec<String>>>);

impl Statements {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// SELECTs of a table the cache holds.
fn reads_of_cached_tables(statements: &[String]) -> Vec<&String> {
    const CACHED: [&str; 6] = [
        "\"tenant\"",
        "\"ingest_key\"",
        "\"cookie_consent_config\"",
        "\"consent_config_revision\"",
        "\"provider_config\"",
        "\"daily_salt\"",
    ];
    statements
        .iter()
        .filter(|s| s.trim_start().to_uppercase().starts_with("SELECT") && CACHED.iter().any(|t| s.contains(t)))
        .collect()
}

/// Counted at the database connection (sea-orm's statement hook, around the real driver): after
/// the first event loaded the tenant, events read none of the cached tables — only the
/// idempotency key and the visitor's consent record, and write the event (on PostgreSQL the hook
/// sees the writer's statements too; SQLite's writer has a connection of its own).
#[tokio::test]
async fn events_read_none_of_the_cached_tables() {
    let (app, fakes, site) = site::setup_with(fast_cache).await;
    let dir = tempfile::tempdir().unwrap();
    site::plausible(&app, &fakes, json!({})).await;
    site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let accepted = visitor();
    app.consent(&accepted, "accept_all", 1).await;

    // A second instance whose connection reports every statement it runs (no delivery worker:
    // only requests and the cache's poll use it).
    let mut settings = (*app.app.state.settings).clone();
    settings.delivery.enabled = false;
    settings.retention.enabled = false;
    let mut db = consentgate::db::connect(&settings.database).await.unwrap();
    let statements = Statements::default();
    let sink = statements.clone();
    db.set_metric_callback(move |info| sink.0.lock().unwrap().push(info.statement.sql.clone()));
    let other = App::start_with(settings, db).await.unwrap();
    let b = other.base_url();
    let event = |v: &str| json!({"event_name": "pageview", "page_url": site::PAGE, "visitor_id": v, "anonymous_id": v});

    // The first event loads the cache (and so reads those tables: the hook sees them).
    assert_eq!(post(&app, &b, &site.secret_key, &event(&visitor())).await.0, StatusCode::ACCEPTED);
    let first = statements.take();
    let loaded = reads_of_cached_tables(&first);
    for table in
        ["\"tenant\"", "\"ingest_key\"", "\"provider_config\"", "\"consent_config_revision\"", "\"daily_salt\""]
    {
        assert!(loaded.iter().any(|s| s.contains(table)), "the first event loads {table}: {first:#?}");
    }

    let (mut events, mut record_reads) = (0, 0);
    for i in 0..20 {
        let who = if i % 2 == 0 { accepted.clone() } else { visitor() };
        let (s, body) = post(&app, &b, &site.secret_key, &event(&who)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
        let ran = statements.take();
        assert!(reads_of_cached_tables(&ran).is_empty(), "event {i} read a cached table: {ran:#?}");
        events += ran.iter().filter(|s| s.contains("INSERT INTO \"analytics_event\"")).count();
        record_reads += ran.iter().filter(|s| s.contains("FROM \"consent_record\"")).count();
    }
    if crate::helpers::backend() == "sqlite" {
        // SQLite's writer stores through a connection of its own (`ingest::sqlite`, fixed
        // statements that read no cached table), which this hook does not see.
        assert_eq!((events, record_reads), (0, 0), "the writer's statements went through sea-orm");
    } else {
        assert_eq!(events, 20, "the hook saw every event's insert");
        assert_eq!(record_reads, 20, "the visitor's record stays exact: read per event");
    }
    other.stop().await.unwrap();
}
