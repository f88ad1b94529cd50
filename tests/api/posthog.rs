//! PostHog against its fake (tests/fakes/posthog.rs): config CRUD and lifecycle, events through
//! `/batch/` with stable uuids, anonymous events with the cookieless daily id and no identifier,
//! `check` catching a wrong project key that capture answers 200, and feature flags.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use sea_orm::EntityTrait;
use serde_json::{Value, json};

use crate::{
    fakes::{FakeProviders, POSTHOG_PROJECT_KEY},
    helpers::{TestApp, assert_error, send},
    site::{self, CHROME, ORIGIN, PAGE, Site, VISITOR_IP, configs_path, setup, track, visitor},
};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

/// A page view by a visitor as the banner's tracker sends it: the consent-lookup id and the
/// analytics id apart.
fn pageview(visitor: &str, analytics_id: &str) -> Value {
    json!({"event_name": "pageview", "page_url": PAGE, "referrer": "https://search.example.net/?q=x",
           "title": "Pricing", "visitor_id": visitor, "anonymous_id": analytics_id})
}

async fn flags(app: &TestApp, keys: &Site, body: Value) -> (StatusCode, Value) {
    site::post_from_browser(app, "/analytics/posthog/flags", &keys.public_key, body).await
}

/// The events PostHog stored, in the order of the gateway's event ids (their uuids); panics on
/// an event stored under no known id.
fn in_order(stored: Vec<Value>, ids: &[String]) -> Vec<Value> {
    let out: Vec<Value> = ids.iter().filter_map(|e| stored.iter().find(|s| s["uuid"] == *e).cloned()).collect();
    assert_eq!(out.len(), stored.len(), "events stored under unknown uuids: {stored:#?}");
    out
}

/// Every request to PostHog's flags endpoint, in order.
async fn flag_calls(fakes: &FakeProviders) -> Vec<Value> {
    fakes.received_by("posthog").await.into_iter().filter(|r| r["path"] == "/flags").collect()
}

/// What every request to PostHog's capture carried, in order.
async fn batches(fakes: &FakeProviders) -> Vec<Value> {
    fakes.received_by("posthog").await.into_iter().filter(|r| r["path"] == "/batch/").collect()
}

#[tokio::test]
async fn configs_have_posthogs_fields_defaults_and_the_shared_lifecycle() {
    let (app, fakes, _) = setup().await;
    let path = configs_path(&app, "posthog");
    // The project key is required, as a reference.
    let got = app.post(&path, &app.admin, json!({"display_name": "PostHog"})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("credentials.project_api_key_ref"));
    let got = app
        .post(&path, &app.admin, json!({"display_name": "PostHog", "credentials": {"project_api_key_ref": "phc_raw"}}))
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("credentials.project_api_key_ref"));
    let got = app
        .post(
            &path,
            &app.admin,
            json!({"display_name": "PostHog", "api_host": "x", "credentials": {"project_api_key_ref": "env:PH"}}),
        )
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("api_host"));

    let (s, c) = app
        .post(
            &path,
            &app.admin,
            json!({"display_name": "PostHog", "credentials": {"project_api_key_ref": "env:PH",
                                                              "personal_api_key_ref": "env:PH_PERSONAL"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(c["provider"], "posthog");
    assert_eq!(c["status"], "draft");
    assert_eq!(c["required_category"], "analytics", "PostHog needs analytics consent by default");
    assert_eq!(c["instance_url"], "https://us.i.posthog.com");
    assert_eq!((c["enable_feature_flags"].as_bool(), c["cookieless_fallback"].as_bool()), (Some(false), Some(true)));
    assert_eq!(c["credentials"], json!({"project_api_key_ref": "env:PH", "personal_api_key_ref": "env:PH_PERSONAL"}));

    let (s, p) = site::patch_config(
        &app,
        "posthog",
        &id(&c),
        json!({"instance_url": "https://eu.i.posthog.com", "enable_feature_flags": true, "status": "active",
               "credentials": {"personal_api_key_ref": null}}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(
        (p["instance_url"].as_str(), p["enable_feature_flags"].as_bool()),
        (Some("https://eu.i.posthog.com"), Some(true))
    );
    assert_eq!(p["credentials"], json!({"project_api_key_ref": "env:PH"}));
    let (s, _) =
        site::patch_config(&app, "posthog", &id(&c), json!({"credentials": {"project_api_key_ref": null}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "the key cannot be removed");
    for status in ["paused", "active", "decommissioned"] {
        let (s, p) = site::patch_config(&app, "posthog", &id(&c), json!({"status": status})).await;
        assert_eq!((s, p["status"].as_str()), (StatusCode::OK, Some(status)), "{p}");
    }
    let (s, list) = app.get(&path, &app.auditor).await;
    assert_eq!((s, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)));
    drop(fakes);
}

#[tokio::test]
async fn events_go_in_batches_to_batch_with_the_event_id_as_uuid_and_full_identity_with_consent() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let c = site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let analytics_id = visitor();
    // A page view of yesterday, posted late: PostHog files it under the time it happened.
    let happened = Utc::now() - chrono::Duration::hours(30);
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut e = pageview(&v, &analytics_id);
        e["page_url"] = json!(format!("{ORIGIN}/page/{i}"));
        if i == 0 {
            e["occurred_at"] = json!(happened.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
        }
        if i == 6 {
            e["event_name"] = json!("signup");
            e["event_properties"] = json!({"plan": "pro", "$set": {"admin": true}});
        }
        let (s, res) = track(&app, &keys, e).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{res}");
        let d = &res["decisions"][0];
        assert_eq!((d["identity"].as_str(), d["reason"].as_str()), (Some("full"), Some("consent_granted:analytics")));
        ids.push(id(&res));
    }
    app.drain_outbox().await;
    for e in &ids {
        site::delivery_in(&app, e, &id(&c), "delivered").await;
    }
    let sent = batches(&fakes).await;
    assert!(!sent.is_empty());
    for r in &sent {
        let batch = r["body"]["batch"].as_array().unwrap();
        assert!((1..=50).contains(&batch.len()), "{r}");
        assert_eq!(r["body"]["api_key"], POSTHOG_PROJECT_KEY);
        assert!(r["body"].get("sent_at").is_none(), "no stale sent_at: {r}");
        assert_eq!(r["status"], 200);
    }
    let stored = in_order(fakes.posthog_events().await, &ids);
    assert_eq!(stored.len(), 7, "{stored:#?}");
    for (s, e) in stored.iter().zip(&ids) {
        assert_eq!(s["uuid"], *e, "uuid = the gateway's event id");
        assert_eq!(s["copies"], 1);
        assert_eq!(s["distinct_id"], analytics_id.as_str());
        assert_eq!(s["properties"]["$ip"], VISITOR_IP);
        assert_eq!(s["properties"]["$lib"], "consentgate");

        assert!(s["properties"].get("$process_person_profile").is_none());
    }
    assert_eq!(stored[0]["event"], "$pageview");
    assert_eq!(stored[0]["timestamp"], happened.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    assert_eq!(stored[0]["day"], happened.date_naive().to_string());
    assert_eq!(stored[0]["properties"]["$current_url"], format!("{ORIGIN}/page/0"));
    assert_eq!(stored[6]["event"], "signup");
    assert!(stored[6]["properties"].get("$set").is_none(), "a site's $-property never reaches PostHog");
    let d = site::delivery_in(&app, &ids[6], &id(&c), "delivered").await;
    assert!(d["warning"].as_str().unwrap_or_default().contains("$set"), "{d}");
    // A site's own `$`-event is refused at ingest, with its reason.
    let mut bad = pageview(&v, &analytics_id);
    bad["event_name"] = json!("$create_alias");
    let (_, res) = track(&app, &keys, bad).await;
    assert_eq!(res["decisions"][0]["reason"], "denied:event_name_reserved", "{res}");
}

#[tokio::test]
async fn without_consent_posthog_gets_the_daily_id_and_no_identifier_and_the_salt_stays_inside() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let c = site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let (v, w) = (visitor(), visitor());
    app.consent(&v, "reject_all", 1).await;
    let analytics_id = visitor();
    let mut events = Vec::new();
    for (who, name) in [(&v, "pageview"), (&v, "signup"), (&w, "pageview")] {
        let mut e = pageview(who, &analytics_id);
        e["event_name"] = json!(name);
        e["user_id"] = json!("user-42");
        e["event_properties"] = json!({"plan": "pro", "email": "ann@example.com"});
        let (s, res) = track(&app, &keys, e).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{res}");
        assert_eq!(res["decisions"][0]["identity"], "anonymous", "{res}");
        events.push(id(&res));
    }
    app.drain_outbox().await;
    let stored = in_order(fakes.posthog_events().await, &events);
    assert_eq!(stored.len(), 3, "{stored:#?}");
    let daily: Vec<&str> = stored.iter().map(|s| s["distinct_id"].as_str().unwrap()).collect();
    assert!(daily.iter().all(|d| d.starts_with("cgd_")), "{daily:?}");
    assert_eq!(daily[0], daily[1], "one visitor, one id for the day");
    assert_ne!(daily[0], daily[2], "another visitor, another id");
    for s in &stored {
        assert_eq!(s["properties"]["$process_person_profile"], false);
        assert!(s["properties"].get("$ip").is_none());
        assert_eq!(s["properties"]["$geoip_disable"], true);
        assert_eq!(s["properties"]["plan"], "pro");
    }
    // Nothing that identifies the visitor reached PostHog: not its ids, not the user id, not its
    // IP, not the email property.
    let wire = serde_json::to_string(&batches(&fakes).await).unwrap();
    for secret in [v.as_str(), w.as_str(), analytics_id.as_str(), "user-42", VISITOR_IP, "ann@example.com"] {
        assert!(!wire.contains(secret), "{secret} reached PostHog");
    }
    // The salt: in the database for today only, and in no answer of the API.
    let salts = entity::daily_salt::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(salts.len(), 1);
    assert_eq!(salts[0].day, Utc::now().date_naive().to_string());
    let mut answers = Vec::new();
    for e in &events {
        answers.push(app.get(&format!("/v1/tenants/{}/events/{e}", app.tenant), &app.admin).await.1);
    }
    answers.push(app.get(&format!("/v1/tenants/{}/deliveries?limit=100", app.tenant), &app.admin).await.1);
    answers.push(site::config(&app, "posthog", &id(&c)).await);
    answers.push(app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.admin).await.1);
    let text = serde_json::to_string(&answers).unwrap();
    assert!(!text.contains(&salts[0].salt), "the salt is in an API answer");
    assert!(!text.contains(&salts[0].salt[..16]));
    // Past days' salts go: a new day's first salt deletes them.
    consentgate::ingest::daily_id::salt_for(&app.db, salts[0].tenant_id, Utc::now() + chrono::Duration::days(1))
        .await
        .unwrap();
    let left = entity::daily_salt::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0].day, salts[0].day, "yesterday's salt is gone");
}

/// A server's events without any visitor id are still counted: each as a visitor of its own.
#[tokio::test]
async fn events_without_a_visitor_id_count_as_visitors_of_their_own() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    for _ in 0..2 {
        let (s, res) = send(
            app.http
                .post(app.tenant_url("/events"))
                .bearer_auth(&keys.secret_key)
                .json(&json!({"event_name": "purchase", "page_url": PAGE, "user_agent": CHROME, "ip": VISITOR_IP})),
        )
        .await;
        assert_eq!((s, res["decisions"][0]["identity"].as_str()), (StatusCode::ACCEPTED, Some("anonymous")), "{res}");
    }
    app.drain_outbox().await;
    let stored = fakes.posthog_events().await;
    assert_eq!(stored.len(), 2, "{stored:#?}");
    let ids: Vec<&str> = stored.iter().map(|s| s["distinct_id"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|d| d.starts_with("cgd_")) && ids[0] != ids[1], "{ids:?}");
}

/// The per-provider events endpoint forwards to PostHog's configs only.
#[tokio::test]
async fn the_posthog_events_endpoint_reaches_posthog_only() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    site::plausible(&app, &fakes, json!({})).await;
    let body = json!({"event_name": "pageview", "page_url": PAGE, "visitor_id": visitor()});
    let (s, res) = site::post_from_browser(&app, "/analytics/posthog/events", &keys.public_key, body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{res}");
    assert_eq!(res["decisions"].as_array().unwrap().len(), 1, "{res}");
    assert_eq!(res["decisions"][0]["provider"], "posthog");
    app.drain_outbox().await;
    assert_eq!(fakes.posthog_events().await.len(), 1);
    assert!(fakes.received_by("plausible").await.is_empty());
}

/// A withdrawal after ingest takes full identity away: the waiting delivery goes anonymously,
/// under the daily id stored with it at ingest.
#[tokio::test]
async fn a_withdrawal_before_sending_sends_the_event_anonymously_under_the_daily_id() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let c = site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let analytics_id = visitor();
    let (_, res) = track(&app, &keys, pageview(&v, &analytics_id)).await;
    assert_eq!(res["decisions"][0]["identity"], "full", "{res}");
    app.consent(&v, "withdraw", 1).await;
    app.drain_outbox().await;
    site::delivery_in(&app, &id(&res), &id(&c), "delivered").await;
    let stored = fakes.posthog_events().await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0]["distinct_id"].as_str().unwrap().starts_with("cgd_"), "{stored:?}");
    // The page's campaign, which capture does not read from `$current_url`.
    let p = &stored[0]["properties"];
    assert_eq!((&p["utm_source"], &p["utm_campaign"]), (&json!("newsletter"), &json!("bf")), "{p}");
    assert_eq!(stored[0]["properties"]["$process_person_profile"], false);
    assert!(stored[0]["properties"].get("$ip").is_none());
    assert!(!serde_json::to_string(&batches(&fakes).await).unwrap().contains(&analytics_id));
}

/// The worker dies while PostHog is storing a batch (the request was sent, the answer never
/// recorded); the next worker sends the same events again, with the same uuids, distinct ids and
/// timestamps, so PostHog keeps each once.
#[tokio::test]
async fn a_worker_killed_mid_batch_resends_the_same_uuids_and_posthog_keeps_each_once() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let (granted, refused) = (visitor(), visitor());
    app.consent(&granted, "accept_all", 1).await;
    app.consent(&refused, "reject_all", 1).await;
    for v in [&granted, &refused, &granted, &refused] {
        let (s, res) = track(&app, &keys, pageview(v, &format!("a-{v}"))).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{res}");
    }
    // PostHog stores, then takes 10 s to answer: the worker is killed after 1 s.
    fakes.posthog(json!({"delay_ms": 10_000})).await;
    let killed = tokio::time::timeout(Duration::from_secs(1), app.run_outbox_at(Utc::now())).await;
    assert!(killed.is_err(), "the worker was still waiting for PostHog");
    let first = fakes.posthog_events().await;
    assert!(!first.is_empty(), "PostHog stored before the worker died");
    fakes.posthog(json!({"delay_ms": 0})).await;
    // Its leases pass; another worker takes the deliveries over and sends everything.
    let later = Utc::now() + chrono::Duration::seconds(61);
    loop {
        if app.run_outbox_at(later).await.claimed == 0 {
            break;
        }
    }
    let stored = fakes.posthog_events().await;
    assert_eq!(stored.len(), 4, "no duplicate rows: {stored:#?}");
    let resent = stored.iter().filter(|s| s["copies"] == 2).count();
    assert_eq!(resent, first.len(), "the events stored before the kill arrived twice, under the same keys");
    let (_, page) = app.get(&format!("/v1/tenants/{}/deliveries?status=delivered", app.tenant), &app.admin).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_wrong_project_key_is_answered_200_by_capture_and_caught_by_check() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let wrong = site::posthog(&app, &fakes, &dir, "phc_wellFormedButNoSuchProject000000000000", json!({})).await;
    let (s, res) =
        track(&app, &keys, json!({"event_name": "pageview", "page_url": PAGE, "visitor_id": visitor()})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{res}");
    app.drain_outbox().await;
    // Exactly like PostHog: 200, and nothing stored.
    let sent = batches(&fakes).await;
    assert_eq!((sent.len(), sent[0]["status"].as_i64(), sent[0]["outcome"].as_str()), (1, Some(200), Some("dropped")));
    assert!(fakes.posthog_events().await.is_empty());
    let path = |c: &Value| format!("{}/{}/check", configs_path(&app, "posthog"), id(c));
    let (s, report) = app.post(&path(&wrong), &app.admin, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "failed", "{report}");
    let r = &report["references"][0];
    assert_eq!((r["field"].as_str(), r["resolved"].as_bool()), (Some("credentials.project_api_key_ref"), Some(true)));
    assert_eq!(r["accepted_by_provider"], false, "{report}");
    assert!(r["detail"].as_str().unwrap().contains("refused the project key (401"), "{report}");
    assert!(!report.to_string().contains("phc_"), "no key in the report");
    let flags_calls: Vec<Value> =
        fakes.received_by("posthog").await.into_iter().filter(|r| r["path"] == "/flags").collect();
    assert_eq!(flags_calls.len(), 1);

    let right = site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    let (_, report) = app.post(&path(&right), &app.admin, json!({})).await;
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["references"][0]["accepted_by_provider"], true);
}

#[tokio::test]
async fn flags_are_identified_only_with_analytics_consent_cached_and_refused_without_a_flags_config() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let body = |v: &str, a: &str| json!({"visitor_id": v, "anonymous_id": a});
    // No PostHog config serving flags yet.
    let got = flags(&app, &keys, body("v", "a")).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", None);
    let c = site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    let got = flags(&app, &keys, body("v", "a")).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", None);
    assert!(got.1["error"]["message"].as_str().unwrap().contains("enable_feature_flags"), "{}", got.1);
    site::patch_config(&app, "posthog", &id(&c), json!({"enable_feature_flags": true})).await;
    fakes.posthog(json!({"flags": {"new-checkout": true, "pricing-test": "variant-b", "off": false}})).await;

    app.publish_consent_config(json!({})).await;
    let (yes, no) = (visitor(), visitor());
    app.consent(&yes, "accept_all", 1).await;
    app.consent(&no, "reject_all", 1).await;
    let (analytics_yes, analytics_no) = (visitor(), visitor());

    let (s, got) = flags(&app, &keys, body(&yes, &analytics_yes)).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!(
        got,
        json!({"flags": {"new-checkout": true, "pricing-test": "variant-b", "off": false}, "identified": true})
    );
    let (s, got) = flags(&app, &keys, body(&no, &analytics_no)).await;
    assert_eq!((s, got["identified"].as_bool()), (StatusCode::OK, Some(false)), "{got}");
    let calls: Vec<Value> = fakes.received_by("posthog").await.into_iter().filter(|r| r["path"] == "/flags").collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["body"]["distinct_id"], analytics_yes.as_str());
    let anonymous = calls[1]["body"]["distinct_id"].as_str().unwrap().to_string();
    assert!(anonymous.starts_with("cgd_"), "{anonymous}");
    assert!(!calls[1]["body"].to_string().contains(&no) && !calls[1]["body"].to_string().contains(&analytics_no));

    // The same id as the visitor's anonymous events of the day.
    let (_, _) = track(&app, &keys, pageview(&no, &analytics_no)).await;
    app.drain_outbox().await;
    assert_eq!(fakes.posthog_events().await[0]["distinct_id"], anonymous.as_str());

    // Asked again within 30 s: from the cache.
    let (s, again) = flags(&app, &keys, body(&yes, &analytics_yes)).await;
    assert_eq!((s, again["identified"].as_bool()), (StatusCode::OK, Some(true)));
    let calls = fakes.received_by("posthog").await.into_iter().filter(|r| r["path"] == "/flags").count();
    assert_eq!(calls, 2, "served from the cache");

    // The browser can read the answer; a bad body names the field; a server may ask too.
    let res = app
        .http
        .post(app.tenant_url("/analytics/posthog/flags"))
        .header("x-ingest-key", &keys.public_key)
        .header("origin", ORIGIN)
        .header("user-agent", CHROME)
        .json(&body(&yes, &analytics_yes))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
    let got = flags(&app, &keys, json!({"anonymous_id": "a"})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("visitor_id"));
    let got = flags(&app, &keys, json!({"visitor_id": "v", "extra": 1})).await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);
    // Too large is 413 whether over the endpoint's limit or the server's.
    for pad in [5_000, 70_000] {
        let got = flags(&app, &keys, json!({"visitor_id": "v", "pad": "x".repeat(pad)})).await;
        assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    }
    let (s, got) = send(
        app.http
            .post(app.tenant_url("/analytics/posthog/flags"))
            .bearer_auth(&keys.secret_key)
            .json(&body(&visitor(), "server-side")),
    )
    .await;
    assert_eq!((s, got["identified"].as_bool()), (StatusCode::OK, Some(false)), "{got}");
    let (s, _) = send(app.http.post(app.tenant_url("/analytics/posthog/flags")).json(&body("v", "a"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn flags_with_a_wrong_key_or_a_slow_posthog_are_a_502_naming_the_cause() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    site::posthog(
        &app,
        &fakes,
        &dir,
        "phc_wellFormedButNoSuchProject000000000000",
        json!({"enable_feature_flags": true}),
    )
    .await;
    let got = flags(&app, &keys, json!({"visitor_id": visitor()})).await;
    assert_error(&got, StatusCode::BAD_GATEWAY, "bad_gateway", None);
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("PostHog answered 401") && message.contains("check"), "{message}");
    assert!(!message.contains("phc_") && !message.contains("file:"), "{message}");

    let (app, fakes, keys) = setup().await;
    site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({"enable_feature_flags": true})).await;
    fakes.posthog(json!({"delay_ms": 5_000})).await;
    let started = std::time::Instant::now();
    let got = flags(&app, &keys, json!({"visitor_id": visitor()})).await;
    assert_error(&got, StatusCode::BAD_GATEWAY, "bad_gateway", None);
    assert!(got.1["error"]["message"].as_str().unwrap().contains("did not answer within"), "{}", got.1);
    assert!(started.elapsed() < Duration::from_secs(4), "the timeout bounds the wait");

    // A key that cannot be resolved: the browser is not told where the gateway looks for it.
    let (app, fakes, keys) = setup().await;
    let body = json!({"display_name": "PostHog", "instance_url": fakes.posthog_url(), "status": "active",
                      "enable_feature_flags": true,
                      "credentials": {"project_api_key_ref": "env:CONSENTGATE_TEST_NEVER_SET_4410"}});
    site::create_config(&app, "posthog", body).await;
    let got = flags(&app, &keys, json!({"visitor_id": visitor()})).await;
    assert_error(&got, StatusCode::BAD_GATEWAY, "bad_gateway", None);
    assert!(!got.1.to_string().contains("CONSENTGATE_TEST_NEVER_SET"), "{}", got.1);
}

/// PostHog refuses a whole request for one event it cannot take: the outbox splits the batch
/// until only that event is refused; its batch-mates are delivered once, and no request carries
/// more than 50 events.
#[tokio::test]
async fn one_refused_event_never_dead_letters_its_batch_mates_and_batches_stay_within_50() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let c = site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    fakes.posthog(json!({"poison_events": ["unparsable"]})).await;
    let mut ids = Vec::new();
    for i in 0..60 {
        let mut e = json!({"event_name": "pageview", "page_url": format!("{ORIGIN}/p/{i}"), "visitor_id": visitor()});
        if i == 17 {
            e["event_name"] = json!("unparsable");
        }
        let (s, res) = track(&app, &keys, e).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{res}");
        ids.push(id(&res));
    }
    app.drain_outbox().await;
    let sent = batches(&fakes).await;
    assert!(sent.iter().all(|r| r["body"]["batch"].as_array().unwrap().len() <= 50), "a batch over 50");
    assert!(sent.iter().any(|r| r["body"]["batch"].as_array().unwrap().len() > 1), "events were batched");
    for (i, e) in ids.iter().enumerate() {
        let d = site::delivery_in(&app, e, &id(&c), if i == 17 { "dead" } else { "delivered" }).await;
        if i == 17 {
            assert!(d["last_error"].as_str().unwrap().contains("invalid uuid"), "{d}");
        }
    }
    let stored = fakes.posthog_events().await;
    assert_eq!(stored.len(), 59);
    assert!(stored.iter().all(|s| s["copies"] == 1), "nothing was sent twice");
}

/// The full IP and the user agent wait on a pending delivery only where its provider uses them
/// (issue 10): Plausible counts visitors by them; PostHog takes `$ip` only with full identity — so
/// a refusing visitor's PostHog delivery holds neither.
#[tokio::test]
async fn the_full_ip_and_agent_wait_only_on_deliveries_whose_provider_uses_them() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let posthog = id(&site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await);
    let plausible = id(&site::plausible(&app, &fakes, json!({})).await);
    app.publish_consent_config(json!({})).await;
    let (refused, accepted) = (visitor(), visitor());
    app.consent(&refused, "reject_all", 1).await;
    app.consent(&accepted, "accept_all", 1).await;
    for (who, posthog_keeps) in [(&refused, false), (&accepted, true)] {
        let (s, res) = track(&app, &keys, pageview(who, &visitor())).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{res}");
        let event = uuid::Uuid::parse_str(&id(&res)).unwrap();
        let rows = entity::delivery::Entity::find().all(&app.db).await.unwrap();
        let of = |config: &str| {
            rows.iter()
                .find(|d| d.event_id == event && d.config_id.to_string() == config)
                .unwrap_or_else(|| panic!("no delivery to {config}: {res}"))
        };
        let (p, h) = (of(&plausible), of(&posthog));
        assert_eq!(p.client_ip.as_deref(), Some(VISITOR_IP), "Plausible counts visitors by the IP");
        assert_eq!(p.user_agent.as_deref(), Some(CHROME), "and the agent");
        assert_eq!(h.client_ip.is_some(), posthog_keeps, "PostHog's delivery for {who}: {h:?}");
        assert_eq!(h.user_agent.is_some(), posthog_keeps, "PostHog's delivery for {who}: {h:?}");
    }
    // Both still arrive as PostHog expects: `$ip` with consent, none without.
    app.drain_outbox().await;
    let stored = fakes.posthog_events().await;
    assert_eq!(stored.len(), 2, "{stored:#?}");
    assert_eq!(stored.iter().filter(|s| s["properties"]["$ip"] == VISITOR_IP).count(), 1, "{stored:#?}");
}

/// The daily id is computed at ingest and kept on the delivery: a retry days later, after every
/// salt of the day of ingest is gone, sends the id computed then — and makes no salt for the day
/// of the retry.
#[tokio::test]
async fn a_retry_days_later_sends_the_id_of_the_day_of_ingest_without_any_salt() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let c = site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let v = visitor();
    app.consent(&v, "reject_all", 1).await;
    let ingested = Utc::now();
    let (s, res) = track(&app, &keys, pageview(&v, &visitor())).await;
    assert_eq!((s, res["decisions"][0]["identity"].as_str()), (StatusCode::ACCEPTED, Some("anonymous")), "{res}");
    let salts = entity::daily_salt::Entity::find().all(&app.db).await.unwrap();
    assert_eq!(salts.len(), 1, "the salt of the day of ingest");
    let tenant = salts[0].tenant_id;
    let of_ingest_day = consentgate::ingest::daily_id::today(&app.db, tenant, &v, ingested).await.unwrap();

    // PostHog is down: the first attempt fails and the delivery waits.
    fakes.posthog(json!({"fail_next": 1, "status": 503})).await;
    let first = app.run_outbox_at(Utc::now()).await;
    assert_eq!((first.claimed, first.retried), (1, 1), "{first:?}");
    let failed = batches(&fakes).await;
    assert_eq!((failed.len(), failed[0]["status"].as_i64()), (1, Some(503)), "{failed:#?}");
    assert_eq!(failed[0]["body"]["batch"][0]["distinct_id"], of_ingest_day.as_str());
    site::delivery_in(&app, &id(&res), &id(&c), "pending").await;

    // Two days later every past salt is gone — the day of ingest's too.
    let later = Utc::now() + chrono::Duration::days(2);
    let forgotten = consentgate::ingest::daily_id::forget_past_days(&app.db, later).await.unwrap();
    assert_eq!(forgotten, 1);
    assert!(entity::daily_salt::Entity::find().all(&app.db).await.unwrap().is_empty());

    // The retry: delivered under the id of the day of ingest, with no salt made for it.
    let retry = app.run_outbox_at(later).await;
    assert_eq!((retry.claimed, retry.delivered), (1, 1), "{retry:?}");
    site::delivery_in(&app, &id(&res), &id(&c), "delivered").await;
    let stored = fakes.posthog_events().await;
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(stored[0]["uuid"], id(&res).as_str());
    assert_eq!(stored[0]["distinct_id"], of_ingest_day.as_str(), "the id computed at ingest");
    assert_eq!(stored[0]["properties"]["$process_person_profile"], false);
    let sent = batches(&fakes).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1]["body"]["batch"][0], failed[0]["body"]["batch"][0], "the retry sends the same event");
    assert!(
        entity::daily_salt::Entity::find().all(&app.db).await.unwrap().is_empty(),
        "the retry made no salt for its own day"
    );
}

/// With `cookieless_fallback: false`, a visitor without analytics consent reaches PostHog not at
/// all — not even under the daily id: refused, undecided and withdrawn visitors are denied with
/// the reason `decide` gives, and PostHog received nothing of theirs (checked after a consenting
/// visitor's later event was delivered); no daily salt is made for them.
#[tokio::test]
async fn without_the_cookieless_fallback_a_visitor_without_analytics_consent_sends_posthog_nothing() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let c = site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({"cookieless_fallback": false})).await;
    assert_eq!(c["cookieless_fallback"], false, "{c}");
    app.publish_consent_config(json!({})).await;
    let (refused, undecided, withdrawn, granted) = (visitor(), visitor(), visitor(), visitor());
    app.consent(&refused, "reject_all", 1).await;
    app.consent(&withdrawn, "accept_all", 1).await;
    app.consent(&withdrawn, "withdraw", 1).await;
    app.consent(&granted, "accept_all", 1).await;
    for (v, reason) in
        [(&refused, "denied:rejected"), (&undecided, "denied:no_consent"), (&withdrawn, "denied:withdrawn")]
    {
        let (s, res) = track(&app, &keys, pageview(v, &format!("a-{v}"))).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{res}");
        let d = &res["decisions"][0];
        assert_eq!((d["decision"].as_str(), d["reason"].as_str()), (Some("deny"), Some(reason)), "{res}");
        assert!(d.get("identity").is_none_or(Value::is_null), "{res}");
        assert!(site::deliveries_of(&app, &id(&res)).await.is_empty(), "a denied event has no delivery");
    }
    assert!(entity::daily_salt::Entity::find().all(&app.db).await.unwrap().is_empty(), "no salt was needed");

    let (s, res) = track(&app, &keys, pageview(&granted, &format!("a-{granted}"))).await;
    assert_eq!((s, res["decisions"][0]["reason"].as_str()), (StatusCode::ACCEPTED, Some("consent_granted:analytics")));
    app.drain_outbox().await;
    site::delivery_in(&app, &id(&res), &id(&c), "delivered").await;
    let stored = fakes.posthog_events().await;
    assert_eq!(stored.len(), 1, "only the consenting visitor's event: {stored:#?}");
    assert_eq!(
        (stored[0]["uuid"].as_str(), stored[0]["distinct_id"].as_str()),
        (Some(id(&res).as_str()), Some(format!("a-{granted}").as_str()))
    );
    let wire = serde_json::to_string(&fakes.received_by("posthog").await).unwrap();
    for v in [&refused, &undecided, &withdrawn] {
        assert!(!wire.contains(v.as_str()), "{v} reached PostHog");
    }
    assert!(!wire.contains("cgd_"), "no daily id was sent");
    assert_eq!(site::config(&app, "posthog", &id(&c)).await["usage"]["events_denied_by_consent"], 3);
}

/// "Honours Do Not Track" means not tracked: under a DNT or GPC signal the tenant respects, a
/// flags request never reaches PostHog — neither for the analytics id nor for the daily id — and
/// answers the tracker's default (no flags) with the reason the visitor's events get. The same
/// visitor without the signal is evaluated; a tenant that does not respect DNT evaluates under it.
#[tokio::test]
async fn flags_under_a_respected_dnt_or_gpc_never_reach_posthog() {
    let (app, fakes, keys) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    site::posthog(&app, &fakes, &dir, POSTHOG_PROJECT_KEY, json!({"enable_feature_flags": true})).await;
    fakes.posthog(json!({"flags": {"new-checkout": true}})).await;
    app.publish_consent_config(json!({})).await;
    let (yes, no, undecided) = (visitor(), visitor(), visitor());
    app.consent(&yes, "accept_all", 1).await;
    app.consent(&no, "reject_all", 1).await;
    let flags_with = |header: &'static str, v: String| {
        send(
            app.http
                .post(app.tenant_url("/analytics/posthog/flags"))
                .header("x-ingest-key", &keys.public_key)
                .header("origin", ORIGIN)
                .header("user-agent", CHROME)
                .header(header, "1")
                .json(&json!({"visitor_id": v, "anonymous_id": v})),
        )
    };
    for (header, reason) in [("dnt", "denied:dnt"), ("sec-gpc", "denied:gpc")] {
        for v in [&yes, &no, &undecided] {
            let (s, got) = flags_with(header, v.clone()).await;
            assert_eq!(s, StatusCode::OK, "{got}");
            assert_eq!(got, json!({"flags": {}, "identified": false, "reason": reason}), "{header} {v}");
        }
        // The visitor's events under the same signal: denied for the same reason.
        let (_, res) = send(
            app.http
                .post(app.tenant_url("/events"))
                .header("x-ingest-key", &keys.public_key)
                .header("origin", ORIGIN)
                .header("user-agent", CHROME)
                .header(header, "1")
                .json(&pageview(&yes, &yes)),
        )
        .await;
        assert_eq!(res["decisions"][0]["reason"], reason, "{res}");
    }
    assert!(flag_calls(&fakes).await.is_empty(), "PostHog was asked about a visitor who is not tracked");
    assert!(entity::daily_salt::Entity::find().all(&app.db).await.unwrap().is_empty(), "no daily id was made");

    // Without the signal the same visitor's flags are evaluated (PostHog was reachable all along).
    let (s, got) = flags(&app, &keys, json!({"visitor_id": yes, "anonymous_id": yes})).await;
    assert_eq!((s, &got), (StatusCode::OK, &json!({"flags": {"new-checkout": true}, "identified": true})));
    assert_eq!(flag_calls(&fakes).await.len(), 1);

    // A tenant that does not respect DNT: DNT does not stop the evaluation (anonymously here).
    app.publish_consent_config(json!({"respect_do_not_track": false})).await;
    let (s, got) = flags_with("dnt", no.clone()).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    assert_eq!((got["identified"].as_bool(), got.get("reason")), (Some(false), None), "{got}");
    assert_eq!(got["flags"], json!({"new-checkout": true}));
    let calls = flag_calls(&fakes).await;
    assert_eq!(calls.len(), 2);
    assert!(calls[1]["body"]["distinct_id"].as_str().unwrap().starts_with("cgd_"), "{calls:#?}");
}
