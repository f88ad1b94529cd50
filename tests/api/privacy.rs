//! Privacy operations (issue 15): erasure of a whole visitor, their export (DSAR), and retention
//! — on SQLite, and on PostgreSQL with `TEST_DATABASE_URL`. Retention is driven with a chosen
//! `now` (`privacy::retention::run_once`), never by waiting.

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use consentgate::{crypto::sha256_hex, privacy::retention};
use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, FromQueryResult, JsonValue, Statement};
use serde_json::{Value, json};

use crate::{
    fakes::{FakeProviders, POSTHOG_PROJECT_KEY},
    helpers::{TestApp, assert_error, send},
    site::{self, Site, setup, setup_with, track, visitor},
};

/// Every table of the schema: the erasure test reads each whole.
pub(crate) const TABLES: [&str; 13] = [
    "tenant",
    "api_token",
    "ingest_key",
    "cookie_consent_config",
    "consent_config_revision",
    "consent_record",
    "provider_config",
    "analytics_event",
    "delivery",
    "audit_log",
    "daily_salt",
    "retention_policy",
    "consent_chain_checkpoint",
];

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

/// Every row of `table`, as JSON text.
pub(crate) async fn dump(app: &TestApp, table: &str) -> String {
    let backend = app.db.get_database_backend();
    let rows = JsonValue::find_by_statement(Statement::from_string(backend, format!("SELECT * FROM {table}")))
        .all(&app.db)
        .await
        .unwrap_or_else(|e| panic!("reading {table}: {e}"));
    serde_json::to_string(&rows).unwrap()
}

fn visitor_path(app: &TestApp, v: &str, rest: &str) -> String {
    format!("/v1/tenants/{}/visitors/{v}{rest}", app.tenant)
}

async fn verify(app: &TestApp) -> Value {
    let (s, v) = app.get(&format!("/v1/tenants/{}/consent-records/verify", app.tenant), &app.auditor).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

/// A visitor who accepted, with one event delivered to PostHog and Plausible and one still
/// waiting, beside another visitor who stays.
pub(crate) struct Scene {
    pub app: TestApp,
    keys: Site,
    _fakes: FakeProviders,
    _dir: tempfile::TempDir,
    pub v: String,
    pub other: String,
    delivered: String,
    pending: String,
    pub posthog: String,
    pub plausible: String,
}

pub(crate) async fn scene() -> Scene {
    let (app, fakes, keys): (TestApp, FakeProviders, Site) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let ph = site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    let pl = site::plausible(&app, &fakes, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let (v, other) = (visitor(), visitor());
    app.consent(&v, "accept_all", 1).await;
    app.consent(&other, "accept_all", 1).await;
    // The tracker sends the consent-lookup id as the analytics id once analytics is granted.
    let (s, delivered) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{delivered}");
    assert!(delivered["decisions"].as_array().unwrap().iter().any(|d| d["identity"] == "full"), "{delivered}");
    track(&app, &keys, site::pageview(&other)).await;
    app.drain_outbox().await;
    let (_, pending) = track(&app, &keys, site::pageview(&v)).await;
    Scene {
        keys,
        v,
        other,
        delivered: id(&delivered),
        pending: id(&pending),
        posthog: id(&ph),
        plausible: id(&pl),
        app,
        _fakes: fakes,
        _dir: dir,
    }
}

/// Each decision of an ingest answer: provider, decision, reason, identity — sorted by provider.
fn decided(answer: &Value) -> Vec<String> {
    let mut out: Vec<String> = answer["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("no decisions: {answer}"))
        .iter()
        .map(|d| format!("{} {} {} {}", d["provider"], d["decision"], d["reason"], d["identity"]))
        .collect();
    out.sort();
    out
}

/// SQLite's ingest writer remembers the visitors' latest records between its batches: an
/// erasure is seen by the very next event, decided like a stranger's and never under the erased
/// record; a new decision of a visitor it remembers is seen by the next event too.
#[tokio::test]
async fn the_next_event_is_decided_under_the_visitors_record_as_it_is_now() {
    let sc = scene().await;
    let app = &sc.app;
    let post = async |v: &str| {
        let (s, answer) = track(app, &sc.keys, site::pageview(v)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
        decided(&answer)
    };
    let accepted = post(&sc.v).await;
    assert!(accepted.iter().any(|d| d.ends_with("\"full\"")), "{accepted:?}");
    let stranger = post(&visitor()).await;
    assert_ne!(accepted, stranger);

    let (s, report) = app.delete(&visitor_path(app, &sc.v, ""), &app.admin).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(post(&sc.v).await, stranger, "decided as if the visitor had never chosen");
    assert_eq!(post(&sc.other).await, accepted, "the other visitor's record stands");

    // A visitor who changes their mind: each next event follows.
    let w = visitor();
    app.consent(&w, "accept_all", 1).await;
    assert_eq!(post(&w).await, accepted);
    app.consent(&w, "reject_all", 1).await;
    let rejected = post(&w).await;
    assert!(!rejected.iter().any(|d| d.ends_with("\"full\"")), "{rejected:?}");
    app.consent(&w, "accept_all", 1).await;
    assert_eq!(post(&w).await, accepted);
}

#[tokio::test]
async fn erasing_a_visitor_leaves_nothing_but_hashes_and_names_who_received_their_data() {
    let sc = scene().await;
    let app = &sc.app;
    // Before: the raw id is there to be found (so the scan below can find it).
    assert!(dump(app, "analytics_event").await.contains(&sc.v));
    assert!(dump(app, "delivery").await.contains(&sc.v), "the pending delivery holds the lookup id");

    let got = app.delete(&visitor_path(app, &sc.v, ""), &app.auditor).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN, "{}", got.1);
    let got = app.delete(&visitor_path(app, "not%20an%20id", ""), &app.admin).await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);

    // An erasure is not undone: a body (options the route does not have) is refused, not ignored.
    let got = app.call(Method::DELETE, &visitor_path(app, &sc.v, ""), &app.admin, Some(json!({"dry_run": true}))).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", Some("body"));
    assert!(dump(app, "analytics_event").await.contains(&sc.v), "nothing was erased");

    let (s, report) = app.delete(&visitor_path(app, &sc.v, ""), &app.admin).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["events"], 2, "{report}");
    assert_eq!(report["forwarding_decisions"], 4, "{report}");
    assert_eq!(report["deliveries"], 4, "{report}");
    assert_eq!(report["pending_deliveries"], 2, "{report}");
    assert_eq!(report["consent_records"], 1, "{report}");
    let received: BTreeSet<(String, String)> = report["received_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["config_id"].as_str().unwrap().to_string(), r["provider"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        received,
        BTreeSet::from([(sc.posthog.clone(), "posthog".to_string()), (sc.plausible.clone(), "plausible".to_string())]),
        "{report}"
    );
    for r in report["received_by"].as_array().unwrap() {
        assert_eq!(r["deliveries"], 1, "only the delivered event reached them: {r}");
        assert!(r["display_name"].is_string() && r["last_delivered_at"].is_string(), "{r}");
    }
    let hash = report["visitor_hash"].as_str().unwrap().to_string();
    assert_eq!(hash.len(), 64);

    // Nothing about the visitor is left anywhere but hashes; the other visitor is untouched.
    for table in TABLES {
        let rows = dump(app, table).await;
        assert!(!rows.contains(&sc.v), "{table} still holds the visitor id: {rows}");
    }
    assert!(dump(app, "analytics_event").await.contains(&sc.other));
    for e in [&sc.delivered, &sc.pending] {
        let (s, _) = app.get(&format!("/v1/tenants/{}/events/{e}", app.tenant), &app.auditor).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
    // The waiting deliveries are gone: nothing is sent any more.
    assert_eq!(app.drain_outbox().await.claimed, 0);

    // The proof stays under the hash and the chain verifies.
    let (_, records) =
        app.get(&format!("/v1/tenants/{}/consent-records?visitor_hash={hash}", app.tenant), &app.auditor).await;
    let items = records["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0]["visitor_id"].is_null());
    let chain = verify(app).await;
    assert_eq!((chain["ok"].as_bool(), chain["checked"].as_u64()), (Some(true), Some(2)), "{chain}");

    // The audit log names the hash.
    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    let entry = &log["items"][0];
    assert_eq!((entry["action"].as_str(), entry["entity_id"].as_str()), (Some("visitor.erase"), Some(hash.as_str())));

    // A second erasure finds nothing.
    let (s, again) = app.delete(&visitor_path(app, &sc.v, ""), &app.admin).await;
    assert_eq!((s, again["events"].as_u64(), again["consent_records"].as_u64()), (StatusCode::OK, Some(0), Some(0)));
}

/// A UUID is one visitor in either case (a server may print them upper-case): the consent given
/// under it, the events posted under it, and their erasure in the other case all meet — the
/// events are not left behind, nor their waiting deliveries sent after the erasure.
#[tokio::test]
async fn a_uuid_visitor_id_is_the_same_visitor_in_either_case() {
    let (app, fakes, keys) = setup().await;
    site::plausible(&app, &fakes, json!({})).await;
    site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    app.publish_consent_config(json!({})).await;
    let lower = visitor();
    let upper = lower.to_uppercase();
    assert_ne!(lower, upper);
    app.consent(&upper, "accept_all", 1).await;
    let mut event = site::pageview(&upper);
    event["visitor_id"] = json!(upper);
    event["user_id"] = json!(upper);
    let (s, accepted) = track(&app, &keys, event).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    assert!(accepted["decisions"].as_array().unwrap().iter().any(|d| d["identity"] == "full"), "{accepted}");
    let (_, e) = app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id(&accepted)), &app.auditor).await;
    assert_eq!(
        (e["anonymous_id"].as_str(), e["user_id"].as_str()),
        (Some(lower.as_str()), Some(lower.as_str())),
        "{e}"
    );

    // Erased under the id as the consent was given: the event and its waiting deliveries go.
    let (s, report) = app.delete(&visitor_path(&app, &upper, ""), &app.admin).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!((report["events"].as_u64(), report["pending_deliveries"].as_u64()), (Some(1), Some(2)), "{report}");
    for table in TABLES {
        let rows = dump(&app, table).await.to_lowercase();
        assert!(!rows.contains(&lower), "{table} still holds the visitor id: {rows}");
    }
    assert_eq!(app.drain_outbox().await.claimed, 0, "nothing is sent after the erasure");
}

#[tokio::test]
async fn the_export_holds_records_with_proof_events_decisions_and_deliveries() {
    let sc = scene().await;
    let app = &sc.app;
    let res = app.request(Method::GET, &visitor_path(app, &sc.v, "/export"), &app.auditor).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    let export: Value = res.json().await.unwrap();
    assert_eq!(export["visitor_id"], sc.v.as_str());

    let records = export["consent_records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{export:#}");
    let r = &records[0];
    assert_eq!(r["visitor_id"], sc.v.as_str());
    assert_eq!(r["proof"]["hash_matches"], true);
    // The proof recomputes: sha256(prev_hash ‖ canonical) is the record's hash.
    let canonical = r["proof"]["canonical"].as_str().unwrap();
    assert_eq!(sha256_hex(format!("{}{canonical}", r["prev_hash"].as_str().unwrap())), r["hash"].as_str().unwrap());
    assert_eq!(export["chain"]["head"]["seq"], 2);

    let events = export["events"].as_array().unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [sc.delivered.as_str(), sc.pending.as_str()], "{export:#}");
    for (e, status) in events.iter().zip(["delivered", "pending"]) {
        assert_eq!(e["anonymous_id"], sc.v.as_str());
        assert_eq!(e["decisions"].as_array().unwrap().len(), 2, "{e:#}");
        let deliveries = e["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 2, "{e:#}");
        assert!(deliveries.iter().all(|d| d["status"] == status), "{e:#}");
    }
    assert_eq!(events[1]["deliveries"][0]["client_ip"], site::VISITOR_IP, "a pending delivery's full IP is theirs too");
    assert!(!serde_json::to_string(&export).unwrap().contains(&sc.other), "nothing of another visitor");

    // An unknown visitor: an empty but complete document. A bad id: 400.
    let (s, empty) = app.get(&visitor_path(app, "nobody", "/export"), &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((empty["consent_records"].clone(), empty["events"].clone()), (json!([]), json!([])));
    let got = send(app.request(Method::GET, &visitor_path(app, "a%3Bb", "/export"), &app.admin)).await;
    assert_eq!(got.0, StatusCode::BAD_REQUEST, "{}", got.1);
}

#[tokio::test]
async fn retention_purges_ended_events_and_expired_records_and_the_chain_still_verifies() {
    let (app, fakes, keys) = setup_with(|s| s.retention.enabled = false).await;
    let _p = site::plausible(&app, &fakes, json!({})).await;
    let settings = app.app.state.settings.retention.clone();
    let retention_path = format!("/v1/tenants/{}/retention", app.tenant);

    // Per-tenant periods: checked, audited, read back.
    let (s, p) = app.get(&retention_path, &app.auditor).await;
    assert_eq!(
        (s, p["events_days"].as_u64(), p["consent_records_days"].as_u64()),
        (StatusCode::OK, Some(30), Some(1095))
    );
    let got = app.call(Method::PUT, &retention_path, &app.admin, Some(json!({"events_days": 0}))).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("events_days"));
    // Not an object (serde alone would read a two-element array as the two fields): refused.
    let got = app.call(Method::PUT, &retention_path, &app.admin, Some(json!([null, null]))).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("body"));
    let got = app.call(Method::PUT, &retention_path, &app.auditor, Some(json!({"events_days": 7}))).await;
    assert_eq!(got.0, StatusCode::FORBIDDEN);
    let (s, p) = app
        .call(Method::PUT, &retention_path, &app.admin, Some(json!({"events_days": 7, "consent_records_days": 1})))
        .await;
    assert_eq!(
        (s, p["events_days"].as_u64(), p["consent_records_days"].as_u64()),
        (StatusCode::OK, Some(7), Some(1)),
        "{p}"
    );
    assert_eq!(p["overrides"], json!({"events_days": 7, "consent_records_days": 1}));

    // Three records (consent expires after 180 days), one event delivered, one waiting.
    app.publish_consent_config(json!({})).await;
    for _ in 0..3 {
        app.consent(&visitor(), "accept_all", 1).await;
    }
    let (_, ended) = track(&app, &keys, site::pageview(&visitor())).await;
    app.drain_outbox().await;
    let (_, waiting) = track(&app, &keys, site::pageview(&visitor())).await;
    // An ended delivery that still holds the visitor's full IP (left by an older release).
    app.db
        .execute_unprepared("UPDATE delivery SET client_ip = '203.0.113.7' WHERE status = 'delivered'")
        .await
        .unwrap();
    let event = |e: &Value| format!("/v1/tenants/{}/events/{}", app.tenant, id(e));

    // Six days on: nothing is old enough.
    let now = Utc::now();
    let purged = retention::run_once(&app.db, &settings, now + Duration::days(6)).await.unwrap();
    assert_eq!((purged.events, purged.consent_records), (0, 0), "{purged:?}");
    assert_eq!(purged.delivery_visitor_data, 1, "the ended delivery's IP goes at once");
    let deliveries = dump(&app, "delivery").await;
    assert_eq!(deliveries.matches("203.0.113.7").count(), 1, "only the waiting delivery keeps the IP: {deliveries}");

    // Eight days on: the ended event goes with its decision and delivery; the waiting one stays.
    let purged = retention::run_once(&app.db, &settings, now + Duration::days(8)).await.unwrap();
    assert_eq!((purged.events, purged.forwarding_decisions, purged.deliveries), (1, 1, 1), "{purged:?}");
    assert_eq!(purged.consent_records, 0, "records are not expired yet, however old");
    assert_eq!(app.get(&event(&ended), &app.auditor).await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&event(&waiting), &app.auditor).await.0, StatusCode::OK);

    // After expiry: the two oldest records go (the newest stays, the chain goes on from it); the
    // waiting event still stays.
    let purged = retention::run_once(&app.db, &settings, now + Duration::days(182)).await.unwrap();
    assert_eq!((purged.consent_records, purged.events), (2, 0), "{purged:?}");
    let chain = verify(&app).await;
    assert_eq!((chain["ok"].as_bool(), chain["checked"].as_u64()), (Some(true), Some(1)), "{chain}");
    assert_eq!(chain["checkpoint"]["seq"], 2, "{chain}");
    app.consent(&visitor(), "accept_all", 1).await;
    let chain = verify(&app).await;
    assert_eq!(
        (chain["ok"].as_bool(), chain["checked"].as_u64(), chain["head"]["seq"].as_u64()),
        (Some(true), Some(2), Some(4))
    );
    // The record kept as the head goes once a newer one continues the chain, which stays as the
    // new head.
    let again = retention::run_once(&app.db, &settings, now + Duration::days(182)).await.unwrap();
    assert_eq!(again.consent_records, 1, "{again:?}");
    let chain = verify(&app).await;
    assert_eq!(
        (chain["ok"].as_bool(), chain["checked"].as_u64(), chain["checkpoint"]["seq"].as_u64()),
        (Some(true), Some(1), Some(3))
    );

    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"consentgate_retention_purged_total{what="events"}"#), "{metrics}");
}

/// The tenant keeps consent records one day (past their expiry).
async fn keep_records_one_day(app: &TestApp) {
    let (s, body) = app
        .call(
            Method::PUT,
            &format!("/v1/tenants/{}/retention", app.tenant),
            &app.admin,
            Some(json!({"consent_records_days": 1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
}

/// A refusal stands past retention: outside consent regions, a visitor whose latest record
/// refused analytics is not switched back to the defaults when retention purges that record —
/// it is carried over to the head of the chain (`source: retention`, without the request's IP and
/// agent), and the chain still verifies. A visitor who accepted later, or only accepted, is not.
#[tokio::test]
async fn a_visitors_latest_refusal_is_carried_over_when_retention_purges_it() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.retention.enabled = false;
        s.geo.country_header = "CF-IPCountry".into();
    })
    .await;
    let settings = app.app.state.settings.retention.clone();
    keep_records_one_day(&app).await;
    app.publish_consent_config(json!({"categories": {"analytics": {"default_accepted": true}}})).await;
    let (refused, accepted, changed, last) = (visitor(), visitor(), visitor(), visitor());
    app.consent(&refused, "reject_all", 1).await;
    app.consent(&accepted, "accept_all", 1).await;
    app.consent(&changed, "reject_all", 1).await;
    app.consent(&changed, "accept_all", 1).await;
    app.consent(&last, "accept_all", 1).await;
    let analytics = async |v: &str| {
        let res =
            app.http.get(app.tenant_url(&format!("/consent/{v}"))).header("cf-ipcountry", "BR").send().await.unwrap();
        res.json::<Value>().await.unwrap()["granted"]["analytics"].clone()
    };

    // After expiry and the retention period: the four oldest go, one refusal is carried over.
    let now = Utc::now() + Duration::days(182);
    let purged = retention::run_once(&app.db, &settings, now).await.unwrap();
    assert_eq!((purged.consent_records, purged.refusals_carried_over), (4, 1), "{purged:?}");
    assert_eq!(analytics(&refused).await, false, "the refusal stands; the defaults do not apply");
    assert_eq!(analytics(&changed).await, true, "expired, accepted: the defaults apply again");
    let (_, records) =
        app.get(&format!("/v1/tenants/{}/consent-records?visitor_id={refused}", app.tenant), &app.auditor).await;
    let items = records["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{records}");
    assert_eq!((items[0]["action"].as_str(), items[0]["source"].as_str()), (Some("reject_all"), Some("retention")));
    assert!(items[0]["ip_truncated"].is_null() && items[0]["user_agent"].is_null(), "{records}");
    let chain = verify(&app).await;
    assert_eq!((chain["ok"].as_bool(), chain["checked"].as_u64()), (Some(true), Some(2)), "{chain}");
    // Carried over now: the record that was the head goes (the carried one follows it), the
    // carried refusal stays — not purged again at once, nor carried twice.
    let again = retention::run_once(&app.db, &settings, now).await.unwrap();
    assert_eq!((again.consent_records, again.refusals_carried_over), (1, 0), "{again:?}");
    assert_eq!(analytics(&refused).await, false);
}

/// Retention never purges past a record that does not link up: the tampering stays visible.
#[tokio::test]
async fn retention_stops_at_a_tampered_record_and_leaves_the_evidence() {
    let app = crate::helpers::spawn_app_with(|s| s.retention.enabled = false).await;
    let settings = app.app.state.settings.retention.clone();
    keep_records_one_day(&app).await;
    app.publish_consent_config(json!({})).await;
    for _ in 0..4 {
        app.consent(&visitor(), "reject_all", 1).await;
    }
    app.db.execute_unprepared("UPDATE consent_record SET action = 'accept_all' WHERE seq = 2").await.unwrap();
    let purged = retention::run_once(&app.db, &settings, Utc::now() + Duration::days(200)).await.unwrap();
    assert_eq!(purged.consent_records, 1, "only the record before the tampered one: {purged:?}");
    let chain = verify(&app).await;
    assert_eq!(chain["ok"], false, "{chain}");
    assert_eq!(
        (chain["first_broken"]["seq"].as_u64(), chain["first_broken"]["reason"].as_str()),
        (Some(2), Some("hash_mismatch"))
    );
    assert_eq!(chain["checkpoint"]["seq"], 1, "{chain}");
    let again = retention::run_once(&app.db, &settings, Utc::now() + Duration::days(200)).await.unwrap();
    assert_eq!(again.consent_records, 0);
}
