//! Cookie consent configs as a webmaster and an auditor see them: create, validate, warn,
//! patch, publish, status lifecycle, one active config per tenant, audit log, banner config.

use consentgate::consent;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, consent_config, send, spawn_app};

async fn create(app: &TestApp, body: Value) -> Value {
    let (s, created) = app.post(&app.consent_configs_path(), &app.admin, body).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    created
}

fn path(app: &TestApp, id: &Value) -> String {
    format!("{}/{}", app.consent_configs_path(), id.as_str().unwrap())
}

fn warned(body: &Value, field: &str) -> bool {
    body["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().starts_with(&format!("{field}:")))
}

#[tokio::test]
async fn a_new_config_is_a_draft_with_defaults_for_what_was_left_out() {
    let app = spawn_app().await;
    let created = create(
        &app,
        json!({
            "display_name": "Minimal",
            "texts": {"en": {"title": "Cookies", "body": "We use cookies.", "accept_all": "OK", "reject_all": "No"}},
            "default_language": "en",
            "privacy_policy_url": "https://shop.example/privacy",
            "allowed_origins": ["https://shop.example"]
        }),
    )
    .await;
    assert_eq!(created["status"], "draft");
    assert_eq!((created["revision"].as_i64(), created["reconsent_revision"].as_i64()), (Some(0), Some(0)));
    assert!(created["published_at"].is_null() && created["unpublished_changes"] == true);
    assert_eq!(created["warnings"], json!([]));
    assert_eq!(created["consent_expiry_days"], 180);
    assert_eq!(
        (created["geo_targeting_enabled"].as_bool(), created["respect_do_not_track"].as_bool()),
        (Some(true), Some(true))
    );
    let regions: Vec<&str> =
        created["consent_required_regions"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    for r in ["DE", "SE", "NO", "IS", "LI", "GB", "CH", "US-CA"] {
        assert!(regions.contains(&r), "{r} missing from default regions");
    }
    assert_eq!(created["categories"]["necessary"]["required"], true);
    assert_eq!(created["categories"]["marketing"]["default_accepted"], false);
    assert_eq!(created["banner"]["show_reject_all"], true);

    // Reads do not carry warnings; the list has it.
    let (s, got) = app.get(&path(&app, &created["id"]), &app.auditor).await;
    assert_eq!(s, StatusCode::OK);
    assert!(got.get("warnings").is_none());
    let (_, list) = app.get(&app.consent_configs_path(), &app.auditor).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], created["id"]);
}

#[tokio::test]
async fn invalid_configs_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let with = |k: &str, v: Value| {
        let mut b = consent_config();
        consent::config::store::merge_patch(&mut b, &json!({ k: v }));
        b
    };
    let table = [
        (with("banner", json!({"primary_color": "blue"})), "banner.primary_color"),
        (with("banner", json!({"style": "popup"})), "banner.style"),
        (with("consent_expiry_days", json!(731)), "consent_expiry_days"),
        (with("privacy_policy_url", json!("http://shop.example/privacy")), "privacy_policy_url"),
        (with("consent_required_regions", json!(["SE", "QQ"])), "consent_required_regions[1]"),
        (with("allowed_origins", json!(["https://*"])), "allowed_origins[0]"),
        (with("default_language", json!("de")), "default_language"),
        (with("categories", json!({"necessary": {"enabled": false}})), "categories.necessary.enabled"),
        (with("categories", json!({"necessary": {"required": false}})), "categories.necessary.required"),
        (with("categories", json!({"marketing": {"required": true}})), "categories.marketing.required"),
        (with("texts", json!({"en": {"title": ""}})), "texts.en.title"),
        (with("status", json!("active")), "status"),
        // serde reads a struct from an array of its fields in order: a nested object is an object.
        (with("banner", json!(["bottom", "bar", "#1a73e8", "#ffffff", "#202124", true, true])), "banner"),
        (with("categories", json!({"analytics": [true, false, false, "Analytics", "", []]})), "categories.analytics"),
        (
            with("texts", json!({"en": ["Cookies", "We use cookies.", "Accept", "Reject", "Settings", "Save"]})),
            "texts.en",
        ),
    ];
    for (body, field) in table {
        let got = app.post(&app.consent_configs_path(), &app.admin, body).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some(field));
    }
    // Several problems at once: all are named.
    let got = app.post(&app.consent_configs_path(), &app.admin, with("consent_expiry_days", json!(0))).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("consent_expiry_days"));
    let mut two = with("consent_expiry_days", json!(0));
    two["display_name"] = json!("");
    let (_, body) = app.post(&app.consent_configs_path(), &app.admin, two).await;
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("consent_expiry_days") && message.contains("display_name"), "{message}");
    // Nothing was stored.
    let (_, list) = app.get(&app.consent_configs_path(), &app.admin).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn settings_against_regulator_guidance_are_saved_with_warnings() {
    let app = spawn_app().await;
    let mut body = consent_config();
    consent::config::store::merge_patch(
        &mut body,
        &json!({
            "banner": {"show_reject_all": false, "text_color": "#aaaaaa"},
            "categories": {"analytics": {"default_accepted": true}},
            "texts": {"sv": {"reject_all": null}}
        }),
    );
    let created = create(&app, body).await;
    for field in ["banner.show_reject_all", "banner.text_color", "categories.analytics.default_accepted", "texts.sv"] {
        assert!(warned(&created, field), "no warning for {field}: {}", created["warnings"]);
    }
    assert!(created["warnings"].to_string().contains("4.5:1"));
    // Fixing them through PATCH clears the warnings.
    let (s, patched) = app
        .patch(
            &path(&app, &created["id"]),
            &app.admin,
            json!({"banner": {"show_reject_all": true, "text_color": "#202124"},
                   "categories": {"analytics": {"default_accepted": false}},
                   "texts": {"sv": {"reject_all": "Avvisa alla", "privacy_policy": "Integritetspolicy",
                                    "cookie_policy": "Kakpolicy", "close": "Stäng", "always_on": "Alltid på",
                                    "signal_denied": "Av: din webbläsare ber att inte spåras"}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["warnings"], json!([]));
}

/// What each provider receives is the gateway's English: per-provider choices in a config that
/// offers another language draw a warning naming it, and dropping that language clears it.
#[tokio::test]
async fn per_provider_choices_with_a_non_english_language_are_warned_about() {
    let app = spawn_app().await;
    let plain = create(&app, consent_config()).await;
    assert!(!warned(&plain, "per_provider_choices"), "off by default: {}", plain["warnings"]);
    let mut body = consent_config();
    consent::config::store::merge_patch(&mut body, &json!({"per_provider_choices": true}));
    let created = create(&app, body).await;
    assert!(warned(&created, "per_provider_choices"), "{}", created["warnings"]);
    let w = created["warnings"].as_array().unwrap().iter().filter_map(Value::as_str);
    let w = w.filter(|w| w.starts_with("per_provider_choices:")).collect::<Vec<_>>();
    assert!(w[0].contains("English only") && w[0].contains("visitors reading sv"), "{w:?}");
    let (s, patched) = app.patch(&path(&app, &created["id"]), &app.admin, json!({"texts": {"sv": null}})).await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["warnings"], json!([]));
}

#[tokio::test]
async fn patch_merges_validates_and_keeps_what_it_does_not_mention() {
    let app = spawn_app().await;
    let created = create(&app, consent_config()).await;
    let p = path(&app, &created["id"]);

    let (s, patched) =
        app.patch(&p, &app.admin, json!({"banner": {"primary_color": "#0B57D0"}, "texts": {"de": {"title": "Cookies", "accept_all": "Alle akzeptieren", "reject_all": "Alle ablehnen"}}})).await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["banner"]["primary_color"], "#0b57d0");
    assert_eq!(patched["banner"]["style"], created["banner"]["style"]);
    assert_eq!(patched["texts"]["en"], created["texts"]["en"]);
    assert_eq!(patched["texts"]["de"]["title"], "Cookies");

    // null removes a key (RFC 7396).
    let (_, patched) = app.patch(&p, &app.admin, json!({"texts": {"de": null}, "cookie_policy_url": null})).await;
    assert!(patched["texts"].get("de").is_none());
    assert!(patched["cookie_policy_url"].is_null());

    // A bad value is refused and nothing changes.
    let got = app.patch(&p, &app.admin, json!({"consent_expiry_days": 0, "display_name": "Renamed"})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("consent_expiry_days"));
    let got = app.patch(&p, &app.admin, json!({"default_language": "fr"})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("default_language"));
    let (_, now) = app.get(&p, &app.admin).await;
    assert_eq!(now["display_name"], "Shop");

    // Read-only fields: refused when changed, accepted when echoed back unchanged.
    let got = app.patch(&p, &app.admin, json!({"revision": 7})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("revision"));
    let mut echo = now.clone();
    echo["display_name"] = json!("Shop (echo)");
    let (s, echoed) = app.patch(&p, &app.admin, echo).await;
    assert_eq!(s, StatusCode::OK, "{echoed}");
    assert_eq!(echoed["display_name"], "Shop (echo)");

    let got = app.patch(&p, &app.admin, json!(["not", "an", "object"])).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", None);
    let got =
        app.patch(&format!("{}/{}", app.consent_configs_path(), uuid::Uuid::now_v7()), &app.admin, json!({})).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test]
async fn publishing_creates_immutable_revisions() {
    let app = spawn_app().await;
    let created = create(&app, consent_config()).await;
    let id = created["id"].as_str().unwrap();
    let p = path(&app, &created["id"]);

    let first = app.publish(id, false).await;
    assert_eq!((first["status"].as_str(), first["revision"].as_i64()), (Some("active"), Some(1)));
    assert_eq!(first["reconsent_revision"], 0);
    assert!(first["published_at"].is_string());
    assert_eq!(first["unpublished_changes"], false);
    assert!(first["warnings"].is_array());

    // Editing the working copy does not change what was published.
    let (_, edited) = app.patch(&p, &app.admin, json!({"texts": {"en": {"title": "Your privacy"}}})).await;
    assert_eq!(edited["unpublished_changes"], true);
    let (_, rev1) = app.get(&format!("{p}/revisions/1"), &app.auditor).await;
    assert_eq!(rev1["snapshot"]["texts"]["en"]["title"], "Cookies");

    let second = app.publish(id, true).await;
    assert_eq!((second["revision"].as_i64(), second["reconsent_revision"].as_i64()), (Some(2), Some(2)));
    let (s, revisions) = app.get(&format!("{p}/revisions"), &app.auditor).await;
    assert_eq!(s, StatusCode::OK);
    let revisions = revisions.as_array().unwrap();
    assert_eq!(revisions.len(), 2);
    assert_eq!(
        (revisions[0]["revision"].as_i64(), revisions[0]["requires_reconsent"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(revisions[1]["requires_reconsent"], false);
    assert_eq!(revisions[0]["snapshot"]["texts"]["en"]["title"], "Your privacy");
    assert!(revisions[0]["published_by"].as_str().unwrap().starts_with("token:"));
    // The texts hash covers the texts: it changed with them.
    let (h1, h2) = (revisions[1]["texts_hash"].as_str().unwrap(), revisions[0]["texts_hash"].as_str().unwrap());
    assert_eq!((h1.len(), h2.len()), (64, 64));
    assert_ne!(h1, h2);

    // A banner-only change publishes with the same texts hash (and the body is optional).
    app.patch(&p, &app.admin, json!({"banner": {"position": "top"}})).await;
    let (s, third) = send(app.request(Method::POST, &format!("{p}/publish"), &app.admin)).await;
    assert_eq!(
        (s, third["revision"].as_i64(), third["reconsent_revision"].as_i64()),
        (StatusCode::OK, Some(3), Some(2))
    );
    let (_, rev3) = app.get(&format!("{p}/revisions/3"), &app.auditor).await;
    assert_eq!(rev3["texts_hash"], h2);
    assert_error(&app.get(&format!("{p}/revisions/9"), &app.auditor).await, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test]
async fn status_changes_follow_the_lifecycle() {
    let app = spawn_app().await;
    let created = create(&app, consent_config()).await;
    let id = created["id"].as_str().unwrap();
    let p = path(&app, &created["id"]);
    let status = |s: &str| json!({ "status": s });

    for to in ["active", "paused", "decommissioned"] {
        assert_error(&app.patch(&p, &app.admin, status(to)).await, StatusCode::CONFLICT, "conflict", None);
    }
    assert_error(
        &app.patch(&p, &app.admin, status("archived")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        Some("status"),
    );
    app.publish(id, false).await;
    assert_error(&app.patch(&p, &app.admin, status("draft")).await, StatusCode::CONFLICT, "conflict", None);
    let (s, paused) = app.patch(&p, &app.admin, status("paused")).await;
    assert_eq!((s, paused["status"].as_str()), (StatusCode::OK, Some("paused")));
    let (_, active) = app.patch(&p, &app.admin, status("active")).await;
    assert_eq!(active["status"], "active");
    let (_, gone) = app.patch(&p, &app.admin, status("decommissioned")).await;
    assert_eq!(gone["status"], "decommissioned");

    // Decommissioned is final: no status change, no edit, no publish.
    assert_error(&app.patch(&p, &app.admin, status("active")).await, StatusCode::CONFLICT, "conflict", None);
    assert_error(
        &app.patch(&p, &app.admin, json!({"display_name": "x"})).await,
        StatusCode::CONFLICT,
        "conflict",
        None,
    );
    let publish = app.post(&format!("{p}/publish"), &app.admin, json!({})).await;
    assert_error(&publish, StatusCode::CONFLICT, "conflict", None);
}

#[tokio::test]
async fn publishing_another_config_pauses_the_active_one() {
    let app = spawn_app().await;
    let a = app.publish_consent_config(json!({"display_name": "A"})).await;
    let b = app.publish_consent_config(json!({"display_name": "B"})).await;
    let status = |id: String| {
        let app = &app;
        async move { app.get(&format!("{}/{id}", app.consent_configs_path()), &app.admin).await.1["status"].clone() }
    };
    assert_eq!((status(a.clone()).await, status(b.clone()).await), (json!("paused"), json!("active")));

    // Re-activating A pauses B: never two active configs.
    let (s, _) =
        app.patch(&format!("{}/{a}", app.consent_configs_path()), &app.admin, json!({"status": "active"})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((status(a.clone()).await, status(b.clone()).await), (json!("active"), json!("paused")));

    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    let pauses: Vec<&Value> =
        log["items"].as_array().unwrap().iter().filter(|e| e["action"] == "cookie_consent_config.pause").collect();
    assert_eq!(pauses.len(), 2, "{log}");
    assert_eq!(pauses[0]["entity_id"], json!(b));
    assert_eq!(pauses[0]["after"]["status"], "paused");
}

#[tokio::test]
async fn a_draft_is_deleted_but_a_published_config_is_only_decommissioned() {
    let app = spawn_app().await;
    let draft = create(&app, consent_config()).await;
    let (s, body) = app.delete(&path(&app, &draft["id"]), &app.admin).await;
    assert_eq!((s, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_error(&app.get(&path(&app, &draft["id"]), &app.admin).await, StatusCode::NOT_FOUND, "not_found", None);

    let id = app.publish_consent_config(json!({})).await;
    let p = format!("{}/{id}", app.consent_configs_path());
    let (s, gone) = app.delete(&p, &app.admin).await;
    assert_eq!((s, gone["status"].as_str()), (StatusCode::OK, Some("decommissioned")));
    let (s, still) = app.get(&p, &app.auditor).await;
    assert_eq!((s, still["revision"].as_i64()), (StatusCode::OK, Some(1)));
    let (s, again) = app.delete(&p, &app.admin).await;
    assert_eq!((s, again["status"].as_str()), (StatusCode::OK, Some("decommissioned")));
}

#[tokio::test]
async fn every_config_change_is_in_the_audit_log() {
    let app = spawn_app().await;
    let created = create(&app, consent_config()).await;
    let id = created["id"].as_str().unwrap();
    let p = path(&app, &created["id"]);
    app.patch(&p, &app.admin, json!({"display_name": "Renamed"})).await;
    app.publish(id, true).await;
    app.patch(&p, &app.admin, json!({"status": "paused"})).await;
    app.delete(&p, &app.admin).await;

    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    let entries: Vec<&Value> =
        log["items"].as_array().unwrap().iter().filter(|e| e["entity_id"] == created["id"]).collect();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "cookie_consent_config.decommission",
            "cookie_consent_config.pause",
            "cookie_consent_config.publish",
            "cookie_consent_config.update",
            "cookie_consent_config.create"
        ]
    );
    let update = entries[3];
    assert_eq!(
        (update["before"]["display_name"].as_str(), update["after"]["display_name"].as_str()),
        (Some("Shop"), Some("Renamed"))
    );
    assert!(update["actor"].as_str().unwrap().starts_with("token:"));
    let publish = entries[2];
    assert_eq!((publish["before"]["revision"].as_i64(), publish["after"]["revision"].as_i64()), (Some(0), Some(1)));
    assert_eq!(publish["after"]["requires_reconsent"], true);
    assert!(entries[4]["before"].is_null() && entries[4]["after"]["status"] == "draft");
    assert!(entries.iter().all(|e| e.get("warnings").is_none() && e["after"].get("warnings").is_none()));
}

#[tokio::test]
async fn an_auditor_reads_configs_but_cannot_change_them() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    let p = format!("{}/{id}", app.consent_configs_path());
    for (s, _) in [
        app.get(&app.consent_configs_path(), &app.auditor).await,
        app.get(&p, &app.auditor).await,
        app.get(&format!("{p}/revisions"), &app.auditor).await,
    ] {
        assert_eq!(s, StatusCode::OK);
    }
    let forbidden = [
        app.post(&app.consent_configs_path(), &app.auditor, consent_config()).await,
        app.patch(&p, &app.auditor, json!({"display_name": "x"})).await,
        app.patch(&p, &app.auditor, json!({"status": "paused"})).await,
        app.post(&format!("{p}/publish"), &app.auditor, json!({})).await,
        app.delete(&p, &app.auditor).await,
    ];
    for got in forbidden {
        assert_error(&got, StatusCode::FORBIDDEN, "forbidden", None);
    }
    let (_, still) = app.get(&p, &app.admin).await;
    assert_eq!((still["status"].as_str(), still["revision"].as_i64()), (Some("active"), Some(1)));
}

#[tokio::test]
async fn the_banner_config_and_the_policy_come_from_the_published_revision() {
    let app = spawn_app().await;
    let tenant = consentgate::tenants::find(&app.db, &app.tenant).await.unwrap().unwrap();
    assert_eq!(consent::config::active_banner_config(&app.db, tenant.id, &[]).await.unwrap(), None);
    assert_eq!(consent::policy_for(&app.db, tenant.id).await.unwrap(), None);

    let id = app
        .publish_consent_config(json!({
            "categories": {"marketing": {"enabled": false}, "functional": {"default_accepted": true}},
            "consent_expiry_days": 90,
            "consent_required_regions": ["SE", "US-CA"]
        }))
        .await;
    app.publish(&id, true).await;
    let p = format!("{}/{id}", app.consent_configs_path());
    // Unpublished edits are not shown.
    app.patch(&p, &app.admin, json!({"consent_expiry_days": 30, "texts": {"en": {"title": "Draft title"}}})).await;

    let (banner, variant) = consent::config::active_banner_config(&app.db, tenant.id, &[]).await.unwrap().unwrap();
    assert_eq!(variant, consentgate::banner::Variant::default());
    assert!(banner.get("providers").is_none() && banner.get("offer").is_none(), "{banner}");
    // Only what the browser reads: the tenant and the texts hash stay on the gateway.
    assert!(banner.get("tenant").is_none() && banner.get("texts_hash").is_none(), "{banner}");
    assert_eq!(banner["config_id"], json!(id));
    assert_eq!((banner["revision"].as_i64(), banner["reconsent_revision"].as_i64()), (Some(2), Some(2)));
    assert_eq!(banner["expiry_days"], 90);
    assert_eq!(banner["texts"]["en"]["title"], "Cookies");
    assert_eq!(banner["consent_required_regions"], json!(["SE", "US-CA"]));
    let cats: Vec<&String> = banner["categories"].as_object().unwrap().keys().collect();
    assert_eq!(cats, ["analytics", "functional", "necessary"], "only enabled categories");
    for key in [
        "banner",
        "default_language",
        "privacy_policy_url",
        "cookie_policy_url",
        "respect_do_not_track",
        "geo_targeting_enabled",
    ] {
        assert!(banner.get(key).is_some(), "{key} missing");
    }

    let policy = consent::policy_for(&app.db, tenant.id).await.unwrap().unwrap();
    assert_eq!((policy.expiry_days, policy.revision, policy.reconsent_revision), (90, 2, 2));
    assert_eq!(policy.enabled, consent::Choices { functional: true, analytics: true, marketing: false });
    assert_eq!(policy.default_accepted, consent::Choices { functional: true, analytics: false, marketing: false });
    assert_eq!(policy.consent_required_regions, ["SE", "US-CA"]);

    app.patch(&p, &app.admin, json!({"status": "paused"})).await;
    assert_eq!(consent::config::active_banner_config(&app.db, tenant.id, &[]).await.unwrap(), None);
    assert_eq!(consent::policy_for(&app.db, tenant.id).await.unwrap(), None);
}
