#![allow(dead_code)] // each test module uses a different subset
//! Fixtures for forwarding tests: a site with ingest keys, provider configs pointing at the fakes,
//! events as a browser posts them, and the delivery log. (The consent configuration and
//! visitors' records come from [`TestApp::publish_consent_config`] and [`TestApp::consent`].)

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use consentgate::config::Settings;

use crate::{
    fakes::{FakeProviders, SITE, WEBSITE_ID},
    helpers::{TestApp, manual_delivery, merged, send, spawn_app_with},
};

/// The page origin the test site's public key allows.
pub const ORIGIN: &str = "https://www.example.com";
pub const PAGE: &str = "https://www.example.com/pricing?utm_source=newsletter&utm_campaign=bf";
pub const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// The visitor's address, passed through the trusted proxy header the tests configure.
pub const VISITOR_IP: &str = "203.0.113.7";

pub struct Site {
    pub public_key: String,
    pub secret_key: String,
}

/// The gateway behind a proxy that passes the visitor's address in `X-Forwarded-For`, without a
/// delivery worker (the test drains the outbox), the fakes, and a site with keys.
pub async fn setup() -> (TestApp, FakeProviders, Site) {
    setup_with(|_| {}).await
}

/// [`setup`] with settings adjusted by `configure`.
pub async fn setup_with(configure: impl FnOnce(&mut Settings)) -> (TestApp, FakeProviders, Site) {
    let app = spawn_app_with(|s| {
        manual_delivery(s);
        s.server.client_ip_header = "X-Forwarded-For".into();
        configure(s);
    })
    .await;
    let fakes = FakeProviders::start().await;
    let keys = site(&app).await;
    (app, fakes, keys)
}

/// An ingest key; returns the created key's JSON.
pub async fn create_key(app: &TestApp, body: Value) -> Value {
    let (s, key) = app.post(&format!("/v1/tenants/{}/ingest-keys", app.tenant), &app.admin, body).await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    key
}

/// A public key for [`ORIGIN`] and a secret key.
pub async fn site(app: &TestApp) -> Site {
    let public = create_key(
        app,
        json!({"kind": "public", "name": "site", "allowed_origins": [ORIGIN, "https://*.example.org"]}),
    )
    .await;
    let secret = create_key(app, json!({"kind": "secret", "name": "backend"})).await;
    Site {
        public_key: public["key"].as_str().unwrap().to_string(),
        secret_key: secret["key"].as_str().unwrap().to_string(),
    }
}

/// An active Plausible config on the fake; `extra` overrides fields.
pub async fn plausible(app: &TestApp, fakes: &FakeProviders, extra: Value) -> Value {
    let body = json!({"display_name": "Plausible", "site_id": SITE, "instance_url": fakes.plausible_url(), "status": "active"});
    create_config(app, "plausible", merged(body, extra)).await
}

/// An active Umami config on the fake; `extra` overrides fields.
pub async fn umami(app: &TestApp, fakes: &FakeProviders, extra: Value) -> Value {
    let body = json!({"display_name": "Umami", "website_id": WEBSITE_ID, "instance_url": fakes.umami_url(), "status": "active"});
    create_config(app, "umami", merged(body, extra)).await
}

pub async fn create_config(app: &TestApp, provider: &str, body: Value) -> Value {
    let (s, c) = app.post(&configs_path(app, provider), &app.admin, body).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    c
}

pub fn configs_path(app: &TestApp, provider: &str) -> String {
    format!("/v1/tenants/{}/analytics/{provider}/configs", app.tenant)
}

/// A page view by a visitor, as the browser sends it.
pub fn pageview(visitor: &str) -> Value {
    json!({"event_name": "pageview", "page_url": PAGE, "referrer": "https://search.example.net/?q=x",
           "title": "Pricing", "language": "sv-SE", "screen": "1920x1080", "anonymous_id": visitor})
}

/// Posts `body` to `path` (below the tenant) with the public key from [`ORIGIN`], as Chrome at
/// [`VISITOR_IP`].
pub async fn post_from_browser(app: &TestApp, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    send(
        app.http
            .post(app.tenant_url(path))
            .header("x-ingest-key", key)
            .header("origin", ORIGIN)
            .header("user-agent", CHROME)
            .header("x-forwarded-for", VISITOR_IP)
            .json(&body),
    )
    .await
}

/// `POST /events` from the browser.
pub async fn track(app: &TestApp, site: &Site, body: Value) -> (StatusCode, Value) {
    post_from_browser(app, "/events", &site.public_key, body).await
}

/// The deliveries of an event, as the delivery log lists them.
pub async fn deliveries_of(app: &TestApp, event_id: &str) -> Vec<Value> {
    let (s, page) = app.get(&format!("/v1/tenants/{}/deliveries?event={event_id}", app.tenant), &app.auditor).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// The deliveries of an event, each asserted to have ended (none `pending`).
pub async fn settled(app: &TestApp, event_id: &str) -> Vec<Value> {
    let items = deliveries_of(app, event_id).await;
    assert!(!items.is_empty() && items.iter().all(|d| d["status"] != "pending"), "{items:#?}");
    items
}

/// The one delivery of an event to `config_id`, asserted to be in `status`.
pub async fn delivery_in(app: &TestApp, event_id: &str, config_id: &str, status: &str) -> Value {
    let (s, page) = app
        .get(&format!("/v1/tenants/{}/deliveries?event={event_id}&config={config_id}", app.tenant), &app.admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let d = page["items"].as_array().and_then(|i| i.first()).cloned().unwrap_or_else(|| panic!("no delivery: {page}"));
    assert_eq!(d["status"], status, "{d}");
    d
}

pub async fn config(app: &TestApp, provider: &str, id: &str) -> Value {
    let (s, c) = app.get(&format!("{}/{id}", configs_path(app, provider)), &app.admin).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    c
}

pub async fn patch_config(app: &TestApp, provider: &str, id: &str, body: Value) -> (StatusCode, Value) {
    app.call(Method::PATCH, &format!("{}/{id}", configs_path(app, provider)), &app.admin, Some(body)).await
}

/// A file holding `content` (a PostHog project key), readable by its owner only, as a
/// `file:` secret reference wants it; its path.
pub fn key_file(dir: &tempfile::TempDir, content: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join(format!("posthog-{}", Uuid::new_v4()));
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_string_lossy().into_owned()
}

/// An active PostHog config on the fake with the project key `key` in a file under `dir`;
/// `extra` overrides fields.
pub async fn posthog(app: &TestApp, fakes: &FakeProviders, dir: &tempfile::TempDir, key: &str, extra: Value) -> Value {
    let file = key_file(dir, key);
    let body = json!({"display_name": "PostHog", "instance_url": fakes.posthog_url(), "status": "active",
                      "credentials": {"project_api_key_ref": format!("file:{file}")}});
    create_config(app, "posthog", merged(body, extra)).await
}

/// A new visitor id (what the banner stores in `cg_vid`).
pub fn visitor() -> String {
    Uuid::new_v4().to_string()
}
