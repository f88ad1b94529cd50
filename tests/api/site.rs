#![allow(dead_code)] // each test module uses a different subset
//! Fixtures for forwarding tests: a site with ingest keys, provider configs pointing at the fakes,
//! a consent configuration and visitors' consent records (through the consent API).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fakes::{FakeProviders, SITE, WEBSITE_ID},
    helpers::{TestApp, eventually, send},
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
    let mut body = json!({"display_name": "Plausible", "site_id": SITE, "instance_url": fakes.plausible_url(), "status": "active"});
    merge(&mut body, extra);
    create_config(app, "plausible", body).await
}

/// An active Umami config on the fake; `extra` overrides fields.
pub async fn umami(app: &TestApp, fakes: &FakeProviders, extra: Value) -> Value {
    let mut body = json!({"display_name": "Umami", "website_id": WEBSITE_ID, "instance_url": fakes.umami_url(), "status": "active"});
    merge(&mut body, extra);
    create_config(app, "umami", body).await
}

pub async fn create_config(app: &TestApp, provider: &str, body: Value) -> Value {
    let (s, c) = app.post(&configs_path(app, provider), &app.admin, body).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    c
}

pub fn configs_path(app: &TestApp, provider: &str) -> String {
    format!("/v1/tenants/{}/analytics/{provider}/configs", app.tenant)
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
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

/// The deliveries of an event, once none is pending any more (`secs` at most).
pub async fn settled(app: &TestApp, event_id: &str, secs: u64) -> Vec<Value> {
    eventually(secs, || async {
        let (s, page) = app.get(&format!("/v1/tenants/{}/deliveries?event={event_id}", app.tenant), &app.auditor).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty() && items.iter().all(|d| d["status"] != "pending")).then_some(items)
    })
    .await
}

/// The one delivery of an event to `config_id`, once it is in `status`.
pub async fn delivery_in(app: &TestApp, event_id: &str, config_id: &str, status: &str, secs: u64) -> Value {
    eventually(secs, || async {
        let (_, page) = app
            .get(&format!("/v1/tenants/{}/deliveries?event={event_id}&config={config_id}", app.tenant), &app.admin)
            .await;
        page["items"].as_array().and_then(|i| i.first()).filter(|d| d["status"] == status).cloned()
    })
    .await
}

pub async fn config(app: &TestApp, provider: &str, id: &str) -> Value {
    let (s, c) = app.get(&format!("{}/{id}", configs_path(app, provider)), &app.admin).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    c
}

pub async fn patch_config(app: &TestApp, provider: &str, id: &str, body: Value) -> (StatusCode, Value) {
    app.call(Method::PATCH, &format!("{}/{id}", configs_path(app, provider)), &app.admin, Some(body)).await
}

/// The tenant's consent configuration, published through the consent API: every category
/// offered, consent required (no geo header is configured, so every visitor's country is
/// unknown), DNT honoured.
pub async fn consent_config(app: &TestApp) -> String {
    app.publish_consent_config(json!({"respect_do_not_track": true})).await
}

/// A visitor's decision (`accept_all`, `reject_all`, `withdraw`) under the published revision,
/// recorded through the public consent API.
pub async fn consent_record(app: &TestApp, visitor: &str, action: &str) {
    app.consent(visitor, action, 1).await;
}

/// A new visitor id (what the banner stores in `cg_vid`).
pub fn visitor() -> String {
    Uuid::new_v4().to_string()
}
