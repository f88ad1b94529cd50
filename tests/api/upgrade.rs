//! A database written by an earlier gateway keeps working after an upgrade: the fixture in
//! tests/fixtures/upgrade (made through the API of commit 5c72a8e, see its README) is loaded,
//! the current migrations run on it when the app starts, and everything stored must read back
//! through the API — every consent record, the hash chain, each forwarding decision's reason
//! unchanged (they are audit history), events, deliveries, configs and the audit log.
//!
//! This test must keep passing after every change: if it fails, the change broke stored data.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestDatabase, start_app};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upgrade");

/// A fresh database holding the fixture of this backend, and the fixture's tokens.
async fn load_fixture() -> (TestDatabase, Value) {
    let database = TestDatabase::create().await;
    let kind = if database.url.starts_with("postgres") { "postgres" } else { "sqlite" };
    match kind {
        "sqlite" => {
            let path = database.url.trim_start_matches("sqlite://").split('?').next().unwrap().to_string();
            std::fs::copy(format!("{FIXTURES}/upgrade.sqlite"), path).expect("the SQLite fixture copies");
        }
        _ => {
            let sql = std::fs::read_to_string(format!("{FIXTURES}/upgrade.pg.sql")).unwrap();
            // Its own connection: the dump empties the session's search_path.
            let db = Database::connect(&database.url).await.unwrap();
            db.execute_unprepared(&sql).await.expect("the pg_dump fixture loads");
            db.close().await.ok();
        }
    }
    let tokens = std::fs::read_to_string(format!("{FIXTURES}/tokens.{kind}.json")).unwrap();
    (database, serde_json::from_str(&tokens).unwrap())
}

/// What the fixture holds, read with plain SQL before the app (and its migrations) touch it.
struct Stored {
    /// (event, config) → reason, as written.
    reasons: BTreeMap<(Uuid, Uuid), String>,
    records: BTreeSet<Uuid>,
    /// delivery id → status.
    deliveries: BTreeMap<Uuid, String>,
    audit_entries: usize,
    /// event id → its `anonymous_id` as written (the visitor id the banner sent).
    visitors: BTreeMap<Uuid, Option<String>>,
    /// Events with a decision that granted full identity.
    linkable: BTreeSet<Uuid>,
}

async fn read_stored(url: &str) -> Stored {
    let db = Database::connect(url).await.unwrap();
    let rows = |sql: &str| {
        let db: &DatabaseConnection = &db;
        let stmt = Statement::from_string(db.get_database_backend(), sql.to_string());
        async move { db.query_all_raw(stmt).await.unwrap() }
    };
    let mut reasons = BTreeMap::new();
    for r in rows("SELECT event_id, config_id, reason FROM forwarding_decision").await {
        let key = (r.try_get::<Uuid>("", "event_id").unwrap(), r.try_get::<Uuid>("", "config_id").unwrap());
        reasons.insert(key, r.try_get::<String>("", "reason").unwrap());
    }
    let records = rows("SELECT id FROM consent_record").await.iter().map(|r| r.try_get("", "id").unwrap()).collect();
    let deliveries = rows("SELECT id, status FROM delivery")
        .await
        .iter()
        .map(|r| (r.try_get("", "id").unwrap(), r.try_get("", "status").unwrap()))
        .collect();
    let audit_entries = rows("SELECT id FROM audit_log").await.len();
    let visitors = rows("SELECT id, anonymous_id FROM analytics_event")
        .await
        .iter()
        .map(|r| (r.try_get("", "id").unwrap(), r.try_get("", "anonymous_id").unwrap()))
        .collect();
    let linkable = rows("SELECT event_id FROM forwarding_decision WHERE decision = 'allow' AND identity = 'full'")
        .await
        .iter()
        .map(|r| r.try_get("", "event_id").unwrap())
        .collect();
    db.close().await.ok();
    Stored { reasons, records, deliveries, audit_entries, visitors, linkable }
}

async fn ok(app: &TestApp, path: &str, token: &str) -> Value {
    let (s, body) = app.get(&format!("/v1/tenants/{}{path}", app.tenant), token).await;
    assert_eq!(s, StatusCode::OK, "GET {path}: {body}");
    body
}

#[tokio::test]
async fn a_database_from_an_earlier_release_upgrades_and_reads_back() {
    let (database, tokens) = load_fixture().await;
    let stored = read_stored(&database.url).await;
    // The fixture is what it claims to be: every kind of stored history is there.
    let kinds: BTreeSet<&str> = stored.reasons.values().map(String::as_str).collect();
    for reason in [
        "consent_granted:analytics",
        "anonymous:no_consent",
        "anonymous:rejected",
        "anonymous:withdrawn",
        "anonymous:dnt",
        "denied:no_consent",
        "denied:rejected",
        "denied:withdrawn",
        "denied:dnt",
        "denied:bot",
        "denied:config_paused",
        "denied:custom_events_disabled",
        "denied:domain_not_allowed",
    ] {
        assert!(kinds.contains(reason), "the fixture has no decision {reason}: {kinds:?}");
    }
    let statuses: BTreeSet<&str> = stored.deliveries.values().map(String::as_str).collect();
    assert_eq!(statuses, BTreeSet::from(["dead", "delivered", "pending"]));
    assert_eq!(stored.records.len(), 6);

    // Delivery workers off: the pending deliveries stay as stored while the test reads them.
    let mut app = start_app(database, |s| s.delivery.enabled = false).await;
    app.tenant = tokens["tenant"].as_str().unwrap().into();
    app.admin = tokens["admin"].as_str().unwrap().into();
    app.auditor = tokens["auditor"].as_str().unwrap().into();
    let (admin, auditor) = (app.admin.clone(), app.auditor.clone());

    // Every consent record reads back, the erased one without its visitor id.
    let page = ok(&app, "/consent-records?limit=500", &auditor).await;
    let items = page["items"].as_array().unwrap();
    let ids: BTreeSet<Uuid> = items.iter().map(|r| r["id"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, stored.records);
    assert_eq!(items.iter().filter(|r| r["visitor_id"].is_null()).count(), 1, "{page}");
    let actions: BTreeSet<&str> = items.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, BTreeSet::from(["accept_all", "custom", "reject_all", "withdraw"]));
    let verified = ok(&app, "/consent-records/verify", &auditor).await;
    assert_eq!((verified["ok"].as_bool(), verified["checked"].as_u64()), (Some(true), Some(6)), "{verified}");
    let res = app
        .request(
            reqwest::Method::GET,
            &format!("/v1/tenants/{}/consent-records/export?format=csv", app.tenant),
            &auditor,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let export = res.text().await.unwrap();
    assert_eq!(export.lines().count(), 1 + 6, "a header and every record: {export}");

    // The visitors' state as the banner reads it.
    let state = ok(&app, "/consent/v-custom", &auditor).await;
    assert_eq!(state["action"], "custom", "{state}");
    let state = ok(&app, "/consent/v-withdraw", &auditor).await;
    assert_eq!(state["action"], "withdraw", "{state}");

    // Each event with each stored decision, reason unchanged.
    let events: BTreeSet<Uuid> = stored.reasons.keys().map(|(e, _)| *e).collect();
    let mut read_back = BTreeMap::new();
    for event in &events {
        let view = ok(&app, &format!("/events/{event}"), &auditor).await;
        for d in view["decisions"].as_array().unwrap() {
            let config: Uuid = d["config_id"].as_str().unwrap().parse().unwrap();
            read_back.insert((*event, config), d["reason"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(read_back, stored.reasons);

    // Events stored linkably under a refusal (or without any consent) lost their identifiers in
    // the upgrade (issue 10); those sent with full identity kept them.
    let refused: Vec<&Uuid> =
        stored.visitors.iter().filter(|(_, v)| v.as_deref() == Some("v-reject")).map(|(e, _)| e).collect();
    assert!(refused.len() >= 2, "the fixture has the refusing visitor's events: {:?}", stored.visitors);
    for (event, visitor) in &stored.visitors {
        let view = ok(&app, &format!("/events/{event}"), &auditor).await;
        if stored.linkable.contains(event) {
            assert_eq!(view["anonymous_id"].as_str(), visitor.as_deref(), "{view}");
        } else {
            for field in ["anonymous_id", "user_id", "session_id", "user_agent"] {
                assert!(view[field].is_null(), "{field} kept on an event without full identity: {view}");
            }
        }
    }
    assert!(refused.iter().all(|e| !stored.linkable.contains(e)), "v-reject never granted identity");
    assert!(stored.visitors.values().any(|v| v.as_deref() == Some("v-accept")), "the positive control");
    assert!(!stored.linkable.is_empty(), "some events keep their identifiers");
    // The deliveries still waiting carry the consent-lookup id they are decided again with.
    let stmt = Statement::from_string(
        app.db.get_database_backend(),
        "SELECT consent_lookup_id FROM delivery WHERE status = 'pending'".to_string(),
    );
    let waiting: BTreeSet<Option<String>> =
        app.db.query_all_raw(stmt).await.unwrap().iter().map(|r| r.try_get("", "consent_lookup_id").unwrap()).collect();
    assert_eq!(waiting, BTreeSet::from([Some("v-accept".to_string()), Some("v-unknown".to_string())]));

    // Deliveries, with their stored status.
    let page = ok(&app, "/deliveries?limit=500", &auditor).await;
    let listed: BTreeMap<Uuid, String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().parse().unwrap(), d["status"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(listed, stored.deliveries);
    let dead = ok(&app, "/deliveries?status=dead", &auditor).await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 2, "{dead}");

    // Provider configs and their lifecycle states; the audit log.
    let plausible = ok(&app, "/analytics/plausible/configs", &admin).await;
    let umami = ok(&app, "/analytics/umami/configs", &admin).await;
    let state_of = |list: &Value| -> BTreeSet<(String, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| (c["status"].as_str().unwrap().into(), c["required_category"].as_str().unwrap().into()))
            .collect()
    };
    assert_eq!(
        state_of(&plausible),
        BTreeSet::from([("active".into(), "none".into()), ("decommissioned".into(), "none".into())])
    );
    assert_eq!(
        state_of(&umami),
        BTreeSet::from([("active".into(), "analytics".into()), ("paused".into(), "none".into())])
    );
    let audit = ok(&app, "/audit-log?limit=500", &admin).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), stored.audit_entries, "{audit}");

    // The upgraded database keeps going: a new decision extends the chain, which still verifies.
    let (s, recorded) = app
        .record_consent(json!({"visitor_id": "v-new", "action": "accept_all", "revision": 2, "language": "en"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{recorded}");
    let verified = ok(&app, "/consent-records/verify", &auditor).await;
    assert_eq!((verified["ok"].as_bool(), verified["checked"].as_u64()), (Some(true), Some(7)), "{verified}");
    // The earlier release's records keep canonical form 1 (hashed as they were, and listed
    // without a version); the new one is form 2 — one chain, both verified above.
    let page = ok(&app, "/consent-records?limit=500", &auditor).await;
    let versions: Vec<(String, Option<i64>)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r["canonical_version"].as_i64()))
        .collect();
    for (id, version) in &versions {
        let old = stored.records.contains(&id.parse().unwrap());
        assert_eq!(*version, if old { None } else { Some(2) }, "{id}: {page}");
    }
    assert!(page["items"].as_array().unwrap().iter().all(|r| r.get("provider_choices").is_none()), "{page}");

    // Idempotency keys are scoped by key kind since migration 000006; the server's `order-42`
    // from before it (kind not recorded) is still a repeat for the server: exactly once across
    // the upgrade.
    let (s, key) = app
        .post(&format!("/v1/tenants/{}/ingest-keys", app.tenant), &admin, json!({"kind": "secret", "name": "after"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    let stmt = Statement::from_string(
        app.db.get_database_backend(),
        "SELECT id FROM analytics_event WHERE idempotency_key = 'order-42'".to_string(),
    );
    let first: Uuid = app.db.query_one_raw(stmt).await.unwrap().unwrap().try_get("", "id").unwrap();
    let order = json!({"event_name": "purchase", "page_url": "https://www.example.com/checkout", "idempotency_key": "order-42"});
    let (s, again) = crate::helpers::send(
        app.http
            .post(app.tenant_url("/analytics/plausible/events"))
            .bearer_auth(key["key"].as_str().unwrap())
            .json(&order),
    )
    .await;
    assert_eq!((s, again["id"].as_str()), (StatusCode::OK, Some(first.to_string().as_str())), "{again}");
}
