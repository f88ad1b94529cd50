#![allow(dead_code)] // each test module uses a different subset
//! Fixtures for forwarding tests: a site with ingest keys, provider configs pointing at the fakes,
//! a consent configuration and visitors' consent records.
//!
//! The consent configuration and records are written straight into their tables through the
//! entity crate, because the consent API is built in parallel; the lead switches these two
//! fixtures to the consent API (`POST …/cookie-consent/configs` + publish, `POST …/consent`) when
//! it lands.

use chrono::{Duration, Utc};
use consentgate::tenants;
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveModelTrait, Set};
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

/// An active cookie consent configuration: analytics and marketing offered, consent required
/// everywhere (no geo header is configured, so every visitor's country is unknown), DNT honoured.
pub async fn consent_config(app: &TestApp) -> Uuid {
    let tenant = tenants::find(&app.db, &app.tenant).await.unwrap().unwrap();
    let cat = |enabled: bool| json!({"enabled": enabled, "required": false, "default_accepted": false, "display_name": "x", "description": "x", "cookie_names": []});
    let id = Uuid::now_v7();
    let now = Utc::now();
    entity::cookie_consent_config::ActiveModel {
        id: Set(id),
        tenant_id: Set(tenant.id),
        display_name: Set("Main".into()),
        status: Set("active".into()),
        banner: Set(json!({})),
        categories: Set(json!({
            "necessary": {"enabled": true, "required": true, "default_accepted": true, "display_name": "x", "description": "x", "cookie_names": []},
            "functional": cat(true), "analytics": cat(true), "marketing": cat(true)
        })),
        texts: Set(json!({})),
        default_language: Set("en".into()),
        privacy_policy_url: Set(None),
        cookie_policy_url: Set(None),
        consent_expiry_days: Set(180),
        geo_targeting_enabled: Set(true),
        consent_required_regions: Set(json!(["SE", "DE"])),
        respect_do_not_track: Set(true),
        allowed_origins: Set(json!([ORIGIN])),
        revision: Set(1),
        reconsent_revision: Set(1),
        published_at: Set(Some(now)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&app.db)
    .await
    .unwrap();
    id
}

/// A visitor's consent record (`accept_all`, `reject_all`, `custom`, `withdraw`).
pub async fn consent_record(app: &TestApp, config_id: Uuid, visitor: &str, action: &str, analytics: bool, seq: i64) {
    let tenant = tenants::find(&app.db, &app.tenant).await.unwrap().unwrap();
    let now = Utc::now();
    entity::consent_record::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant.id),
        seq: Set(seq),
        visitor_id: Set(Some(visitor.into())),
        visitor_hash: Set(consentgate::ingest::visitor_hash(&tenant, visitor)),
        config_id: Set(config_id),
        revision: Set(1),
        texts_hash: Set("test".into()),
        language: Set("en".into()),
        choices: Set(
            json!({"necessary": true, "functional": analytics, "analytics": analytics, "marketing": analytics}),
        ),
        action: Set(action.into()),
        source: Set("banner".into()),
        dnt: Set(false),
        gpc: Set(false),
        country: Set(None),
        ip_truncated: Set(None),
        user_agent: Set(None),
        created_at: Set(now),
        expires_at: Set(now + Duration::days(180)),
        prev_hash: Set("0".repeat(64)),
        hash: Set(format!("{seq:064}")),
    }
    .insert(&app.db)
    .await
    .unwrap();
}

/// A new visitor id (what the banner stores in `cg_vid`).
pub fn visitor() -> String {
    Uuid::new_v4().to_string()
}
