//! Fail closed, per row: a stored value the gateway cannot read denies or is shown as what it
//! is — for that one row. The tenant's other provider configs keep forwarding, and no endpoint
//! answers 500. The rows are corrupted with raw SQL, as a hand edit or damage would.

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DbBackend, Statement, Value as SqlValue};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    fakes::FakeProviders,
    helpers::TestApp,
    site::{self, Site, settled, track, visitor},
};

/// `UPDATE {table} SET {column} = value WHERE id = id`, in the backend's own placeholder syntax,
/// then the app's config cache emptied.
async fn corrupt(app: &TestApp, table: &str, column: &str, id: &str, value: &str) {
    let backend = app.db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => format!("UPDATE {table} SET {column} = $1 WHERE id = $2"),
        _ => format!("UPDATE {table} SET {column} = ? WHERE id = ?"),
    };
    let id: Uuid = id.parse().unwrap();
    let values: [SqlValue; 2] = [value.into(), id.into()];
    let done = app.db.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{table}.{column} of {id}");
    // A direct edit reaches the instance's config cache only when the entry expires
    // (`cache.max_age_ms`, docs/caching.md); these tests are about reading it, not about when.
    app.app.state.config_cache.clear();
}

/// Runs the outbox until nothing is due, then the event's deliveries, each ended.
async fn drained(app: &TestApp, event_id: &str) -> Vec<Value> {
    app.drain_outbox().await;
    settled(app, event_id).await
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

async fn setup() -> (TestApp, FakeProviders, Site, Value, Value) {
    let (app, fakes, keys) = site::setup().await;
    let plausible = site::plausible(&app, &fakes, json!({})).await;
    let umami = site::umami(&app, &fakes, json!({})).await;
    (app, fakes, keys, plausible, umami)
}

/// The Plausible config (corrupted in `column`) is denied `denied:config_invalid`; Umami, the
/// tenant's other config, still receives the event; every endpoint about the broken config
/// answers and shows the problem; it cannot be activated.
async fn a_corrupted_config_is_denied_alone(column: &str, stored: &str) -> (TestApp, Value) {
    let (app, fakes, keys, plausible, umami) = setup().await;
    corrupt(&app, "provider_config", column, &id(&plausible), stored).await;

    let (s, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let decision = |config: &Value| {
        accepted["decisions"].as_array().unwrap().iter().find(|d| d["config_id"] == config["id"]).cloned().unwrap()
    };
    let broken = decision(&plausible);
    assert_eq!((broken["decision"].as_str(), broken["reason"].as_str()), (Some("deny"), Some("denied:config_invalid")));
    assert_eq!(decision(&umami)["decision"], "allow");
    let deliveries = drained(&app, &id(&accepted)).await;
    assert_eq!(deliveries.len(), 1, "only the readable config gets a delivery: {deliveries:#?}");
    assert_eq!(
        (deliveries[0]["config_id"].as_str(), deliveries[0]["status"].as_str()),
        (umami["id"].as_str(), Some("delivered"))
    );
    assert_eq!(fakes.stored("umami").await.len(), 1);

    // The admin sees the broken config, and what is wrong with it.
    let path = format!("{}/{}", site::configs_path(&app, "plausible"), id(&plausible));
    let (s, shown) = app.get(&path, &app.admin).await;
    assert_eq!(s, StatusCode::OK, "{shown}");
    assert_eq!(shown["status"], "invalid", "{shown}");
    let problem = shown["problem"].as_str().unwrap_or_else(|| panic!("no problem shown: {shown}"));
    assert!(problem.contains(column) && problem.contains(stored), "{problem}");
    let (s, list) = app.get(&site::configs_path(&app, "plausible"), &app.admin).await;
    assert_eq!((s, list[0]["status"].as_str()), (StatusCode::OK, Some("invalid")), "{list}");
    let (s, list) = app.get(&site::configs_path(&app, "umami"), &app.admin).await;
    assert_eq!((s, list[0]["status"].as_str()), (StatusCode::OK, Some("active")), "{list}");
    assert!(list[0].get("problem").is_none(), "{list}");
    let (s, none) =
        app.get(&format!("/v1/tenants/{}/deliveries?config={}", app.tenant, id(&plausible)), &app.auditor).await;
    assert_eq!((s, none["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "{none}");
    let (s, event) = app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id(&accepted)), &app.auditor).await;
    assert_eq!(s, StatusCode::OK, "{event}");

    // Not activatable, neither explicitly nor by leaving the status as it is.
    for body in [json!({"status": "active"}), json!({"display_name": "Plausible again"})] {
        let (s, refused) = app.patch(&path, &app.admin, body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("invalid"), "{refused}");
    }
    (app, plausible)
}

#[tokio::test]
async fn an_unreadable_status_denies_that_config_only() {
    let (app, plausible) = a_corrupted_config_is_denied_alone("status", "actve").await;
    // It can still be retired without a repair.
    let path = format!("{}/{}", site::configs_path(&app, "plausible"), id(&plausible));
    let (s, gone) = app.delete(&path, &app.admin).await;
    assert_eq!((s, gone["status"].as_str()), (StatusCode::OK, Some("decommissioned")), "{gone}");
}

#[tokio::test]
async fn an_unreadable_required_category_denies_that_config_only() {
    let (app, plausible) = a_corrupted_config_is_denied_alone("required_category", "analytic").await;
    // Repaired by pausing it with a valid category, then activated as a second step.
    let path = format!("{}/{}", site::configs_path(&app, "plausible"), id(&plausible));
    let (s, paused) = app.patch(&path, &app.admin, json!({"status": "paused"})).await;
    assert_eq!(
        (s, paused["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("required_category")),
        "{paused}"
    );
    let (s, paused) = app.patch(&path, &app.admin, json!({"status": "paused", "required_category": "analytics"})).await;
    assert_eq!((s, paused["status"].as_str()), (StatusCode::OK, Some("paused")), "{paused}");
    let (s, active) = app.patch(&path, &app.admin, json!({"status": "active"})).await;
    assert_eq!(
        (s, active["status"].as_str(), active["required_category"].as_str()),
        (StatusCode::OK, Some("active"), Some("analytics"))
    );
}

#[tokio::test]
async fn unreadable_delivery_status_and_consent_action_are_listed_not_500() {
    let (app, _fakes, keys, _plausible, umami) = setup().await;
    app.publish_consent_config(json!({})).await;
    let v = visitor();
    let recorded = app.consent(&v, "accept_all", 1).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&v)).await;
    let delivery = drained(&app, &id(&accepted)).await.remove(0);
    assert_eq!(delivery["config_id"], umami["id"]);

    corrupt(&app, "delivery", "status", &id(&delivery), "sent").await;
    let (s, page) = app.get(&format!("/v1/tenants/{}/deliveries", app.tenant), &app.auditor).await;
    assert_eq!((s, page["items"][0]["status"].as_str()), (StatusCode::OK, Some("sent")), "{page}");

    corrupt(&app, "consent_record", "action", recorded["record_id"].as_str().unwrap(), "accept_everything").await;
    let (s, page) = app.get(&format!("/v1/tenants/{}/consent-records", app.tenant), &app.auditor).await;
    assert_eq!((s, page["items"][0]["action"].as_str()), (StatusCode::OK, Some("accept_everything")), "{page}");
    // The altered record no longer fits its hash, and the verification says so (200, not 500).
    let (s, verified) = app.get(&format!("/v1/tenants/{}/consent-records/verify", app.tenant), &app.auditor).await;
    assert_eq!((s, verified["ok"].as_bool()), (StatusCode::OK, Some(false)), "{verified}");
    // Deciding on it fails closed: the unreadable record counts as a refusal.
    let (s, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["decisions"][0]["reason"], "anonymous:rejected", "{accepted}");
}

/// The decision for `config` in an ingest answer.
fn decision_for(accepted: &Value, config: &Value) -> Value {
    let decisions = accepted["decisions"].as_array().unwrap_or_else(|| panic!("no decisions: {accepted}"));
    decisions.iter().find(|d| d["config_id"] == config["id"]).cloned().unwrap()
}

/// Shown, listed, never the active policy: a consent config whose stored status cannot be read.
async fn shows_invalid(app: &TestApp, config_id: &str) {
    let path = format!("{}/{config_id}", app.consent_configs_path());
    let (s, shown) = app.get(&path, &app.admin).await;
    assert_eq!((s, shown["status"].as_str()), (StatusCode::OK, Some("invalid")), "{shown}");
    let problem = shown["problem"].as_str().unwrap_or_else(|| panic!("no problem shown: {shown}"));
    assert!(problem.contains("status") && problem.contains("actve"), "{problem}");
    let (s, list) = app.get(&app.consent_configs_path(), &app.auditor).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let listed = list.as_array().unwrap().iter().find(|c| c["id"] == config_id).cloned().unwrap();
    assert_eq!(listed["status"], "invalid", "{list}");
}

#[tokio::test]
async fn an_unreadable_consent_config_status_grants_nothing_and_is_shown_not_500() {
    let (app, fakes, keys) = site::setup().await;
    let plausible = site::plausible(&app, &fakes, json!({"required_category": "analytics"})).await;
    let config_id = app.publish_consent_config(json!({})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(decision_for(&accepted, &plausible)["decision"], "allow", "{accepted}");
    let banner = |app: &TestApp| app.http.get(app.tenant_url("/banner.js")).send();
    assert_eq!(banner(&app).await.unwrap().status(), StatusCode::OK);

    corrupt(&app, "cookie_consent_config", "status", &config_id, "actve").await;
    shows_invalid(&app, &config_id).await;
    // The tenant has no active config now: no banner, and the consent given under it grants
    // nothing (the same answers as for a tenant that never had a config).
    assert_eq!(banner(&app).await.unwrap().status(), StatusCode::NOT_FOUND);
    let (s, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(decision_for(&accepted, &plausible)["decision"], "deny", "{accepted}");

    // Neither published nor activated as it is, nor edited while invalid.
    let path = format!("{}/{config_id}", app.consent_configs_path());
    let (s, refused) = app.post(&format!("{path}/publish"), &app.admin, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    for body in [json!({"status": "active"}), json!({"display_name": "Again"})] {
        let (s, refused) = app.patch(&path, &app.admin, body).await;
        assert_eq!(s, StatusCode::CONFLICT, "{refused}");
        assert!(refused["error"]["message"].as_str().unwrap().contains("invalid"), "{refused}");
    }
    shows_invalid(&app, &config_id).await;

    // Paused, it reads again; publishing it is the deliberate second step.
    let (s, paused) = app.patch(&path, &app.admin, json!({"status": "paused"})).await;
    assert_eq!((s, paused["status"].as_str()), (StatusCode::OK, Some("paused")), "{paused}");
    assert!(paused.get("problem").is_none(), "{paused}");
    assert_eq!(app.publish(&config_id, false).await["status"], "active");
    assert_eq!(banner(&app).await.unwrap().status(), StatusCode::OK);
    let (_, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(decision_for(&accepted, &plausible)["decision"], "allow", "{accepted}");
}

#[tokio::test]
async fn an_unreadable_draft_leaves_the_active_consent_config_alone() {
    let app = crate::helpers::spawn_app().await;
    app.publish_consent_config(json!({})).await;
    let (s, draft) = app.post(&app.consent_configs_path(), &app.admin, crate::helpers::consent_config()).await;
    assert_eq!(s, StatusCode::CREATED, "{draft}");
    corrupt(&app, "cookie_consent_config", "status", &id(&draft), "actve").await;
    shows_invalid(&app, &id(&draft)).await;
    let (_, list) = app.get(&app.consent_configs_path(), &app.admin).await;
    assert_eq!(list[0]["status"], "active", "{list}");
    assert!(list[0].get("problem").is_none(), "{list}");
    assert_eq!(app.http.get(app.tenant_url("/banner.js")).send().await.unwrap().status(), StatusCode::OK);

    // Never published, it was never shown to anyone: it can only be deleted.
    let path = format!("{}/{}", app.consent_configs_path(), id(&draft));
    let (s, refused) = app.patch(&path, &app.admin, json!({"status": "paused"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    let (s, _) = app.delete(&path, &app.admin).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = app.get(&path, &app.admin).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
