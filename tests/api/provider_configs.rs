//! Provider configurations: the shared fields, each provider's own, secret references, the status
//! lifecycle and the audit trail.

use reqwest::StatusCode;
use serde_json::json;

use crate::{
    fakes::WEBSITE_ID,
    helpers::{assert_error, spawn_app},
    site::{configs_path, create_config, patch_config},
};

#[tokio::test]
async fn a_plausible_config_with_the_defaults() {
    let app = spawn_app().await;
    let c = create_config(
        &app,
        "plausible",
        json!({"display_name": "Marketing site", "site_id": "Example.com", "credentials": {"api_key_ref": "env:PLAUSIBLE_API_KEY"}}),
    )
    .await;
    assert_eq!(c["provider"], "plausible");
    assert_eq!(c["status"], "draft");
    assert_eq!(c["required_category"], "none");
    assert_eq!(c["site_id"], "example.com");
    assert_eq!(c["instance_url"], "https://plausible.io");
    assert_eq!(
        (c["enable_custom_events"].as_bool(), c["enable_revenue_tracking"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(c["allowed_domains"], json!([]));
    assert_eq!(c["credentials"], json!({"api_key_ref": "env:PLAUSIBLE_API_KEY"}));
    assert_eq!(
        c["usage"],
        json!({"events_sent": 0, "events_failed": 0, "events_denied_by_consent": 0, "events_dropped": 0,
               "events_retrying": 0, "last_sent_at": null, "last_error_at": null, "last_error": null})
    );
    let (s, list) = app.get(&configs_path(&app, "plausible"), &app.auditor).await;
    assert_eq!((s, list.as_array().unwrap().len()), (StatusCode::OK, 1));
    let (_, umami) = app.get(&configs_path(&app, "umami"), &app.auditor).await;
    assert_eq!(umami, json!([]), "each provider lists its own");
}

#[tokio::test]
async fn an_umami_config_with_every_field() {
    let app = spawn_app().await;
    let c = create_config(
        &app,
        "umami",
        json!({"display_name": "Umami", "website_id": WEBSITE_ID, "instance_url": "https://umami.example.com/",
               "share_url": "https://umami.example.com/share/abc", "enable_custom_events": false,
               "track_outbound_links": true, "required_category": "analytics", "status": "active",
               "credentials": {"api_key_ref": "keyvault://acme-vault.vault.azure.net/secrets/umami-key",
                               "username_ref": "file:/run/secrets/umami-user", "password_ref": "env:UMAMI_PASSWORD"}}),
    )
    .await;
    assert_eq!(c["instance_url"], "https://umami.example.com");
    assert_eq!(c["status"], "active");
    assert_eq!(c["required_category"], "analytics");
    assert_eq!(c["credentials"]["username_ref"], "file:/run/secrets/umami-user");
}

#[tokio::test]
async fn raw_secrets_and_bad_fields_are_refused_by_name() {
    let app = spawn_app().await;
    let p = configs_path(&app, "plausible");
    let u = configs_path(&app, "umami");
    for (path, body, field) in [
        (
            &p,
            json!({"display_name": "x", "site_id": "a.org", "credentials": {"api_key_ref": "sk-live-abcdef123456"}}),
            "credentials.api_key_ref",
        ),
        (
            &u,
            json!({"display_name": "x", "website_id": WEBSITE_ID, "credentials": {"password_ref": "hunter2"}}),
            "credentials.password_ref",
        ),
        (
            &u,
            json!({"display_name": "x", "website_id": WEBSITE_ID, "credentials": {"token_ref": "env:X"}}),
            "credentials.token_ref",
        ),
        (&p, json!({"display_name": "x"}), "site_id"),
        (&p, json!({"display_name": "x", "site_id": "https://a.org/"}), "site_id"),
        (&p, json!({"display_name": "x", "site_id": "a.org", "instance_url": "plausible.io"}), "instance_url"),
        (&p, json!({"display_name": "x", "site_id": "a.org", "allowed_domains": ["a b"]}), "allowed_domains[0]"),
        (&p, json!({"display_name": "x", "site_id": "a.org", "enable_custom_events": "yes"}), "enable_custom_events"),
        (&p, json!({"display_name": "x", "site_id": "a.org", "required_category": "everything"}), "required_category"),
        (&p, json!({"display_name": "x", "site_id": "a.org", "website_id": WEBSITE_ID}), "website_id"),
        (&u, json!({"display_name": "x", "website_id": "not-a-uuid"}), "website_id"),
        (&u, json!({"website_id": WEBSITE_ID}), "display_name"),
        (&u, json!({"display_name": "x", "website_id": WEBSITE_ID, "usage": {}}), "usage"),
    ] {
        let got = app.post(path, &app.admin, body.clone()).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some(field));
        assert!(
            !got.1.to_string().contains("hunter2") && !got.1.to_string().contains("sk-live"),
            "no secret echoed: {}",
            got.1
        );
    }
    let got = app.post(&configs_path(&app, "matomo"), &app.admin, json!({"display_name": "x"})).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
    let got = app.post(&p, &app.auditor, json!({"display_name": "x", "site_id": "a.org"})).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden", None);
}

#[tokio::test]
async fn the_status_lifecycle_is_enforced() {
    let app = spawn_app().await;
    let c = create_config(&app, "plausible", json!({"display_name": "x", "site_id": "a.org"})).await;
    let id = c["id"].as_str().unwrap();
    let conflict = |got: (StatusCode, serde_json::Value)| assert_error(&got, StatusCode::CONFLICT, "conflict", None);
    conflict(patch_config(&app, "plausible", id, json!({"status": "paused"})).await);
    conflict(patch_config(&app, "plausible", id, json!({"status": "error"})).await);
    for (to, ok) in [("active", true), ("paused", true), ("draft", false), ("active", true), ("error", false)] {
        let got = patch_config(&app, "plausible", id, json!({"status": to})).await;
        if ok {
            assert_eq!((got.0, got.1["status"].as_str()), (StatusCode::OK, Some(to)), "{}", got.1);
        } else {
            conflict(got);
        }
    }
    let got = app
        .post(
            &configs_path(&app, "plausible"),
            &app.admin,
            json!({"display_name": "y", "site_id": "a.org", "status": "paused"}),
        )
        .await;
    conflict(got);
    // Decommissioned is final.
    let (s, gone) = app.delete(&format!("{}/{id}", configs_path(&app, "plausible")), &app.admin).await;
    assert_eq!((s, gone["status"].as_str()), (StatusCode::OK, Some("decommissioned")));
    conflict(patch_config(&app, "plausible", id, json!({"status": "active"})).await);
    conflict(patch_config(&app, "plausible", id, json!({"display_name": "again"})).await);
    let (s, still) = app.get(&format!("{}/{id}", configs_path(&app, "plausible")), &app.auditor).await;
    assert_eq!((s, still["status"].as_str()), (StatusCode::OK, Some("decommissioned")), "kept for the record");
}

/// An edit racing a decommission never revives the config, and two edits at once both count:
/// each change is made to the row as the other left it (on PostgreSQL, where transactions run
/// at once, the row is locked for the change; SQLite runs them one after the other).
#[tokio::test]
async fn an_edit_racing_a_decommission_does_not_undo_it() {
    let app = spawn_app().await;
    for round in 0..6 {
        let c = create_config(&app, "plausible", json!({"display_name": "x", "site_id": "a.org", "status": "active"}))
            .await;
        let id = c["id"].as_str().unwrap();
        let path = format!("{}/{id}", configs_path(&app, "plausible"));
        let (edited, deleted) = tokio::join!(
            patch_config(&app, "plausible", id, json!({"display_name": format!("renamed {round}")})),
            app.delete(&path, &app.admin),
        );
        assert_eq!(deleted.0, StatusCode::OK, "{}", deleted.1);
        assert!([StatusCode::OK, StatusCode::CONFLICT].contains(&edited.0), "{}", edited.1);
        let (_, now) = app.get(&path, &app.auditor).await;
        assert_eq!(now["status"], "decommissioned", "round {round}: the edit undid the decommission: {now}");

        let c = create_config(&app, "plausible", json!({"display_name": "y", "site_id": "a.org"})).await;
        let id = c["id"].as_str().unwrap();
        let (a, b) = tokio::join!(
            patch_config(&app, "plausible", id, json!({"display_name": "both"})),
            patch_config(&app, "plausible", id, json!({"enable_revenue_tracking": true})),
        );
        assert_eq!((a.0, b.0), (StatusCode::OK, StatusCode::OK), "{} {}", a.1, b.1);
        let (_, now) = app.get(&format!("{}/{id}", configs_path(&app, "plausible")), &app.auditor).await;
        assert_eq!(
            (now["display_name"].as_str(), now["enable_revenue_tracking"].as_bool()),
            (Some("both"), Some(true)),
            "{now}"
        );
    }
}

#[tokio::test]
async fn a_patch_merges_and_is_validated_like_a_creation() {
    let app = spawn_app().await;
    let c = create_config(
        &app,
        "umami",
        json!({"display_name": "x", "website_id": WEBSITE_ID, "credentials": {"api_key_ref": "env:A", "password_ref": "env:B"}}),
    )
    .await;
    let id = c["id"].as_str().unwrap();
    let (s, p) = patch_config(
        &app,
        "umami",
        id,
        json!({"track_outbound_links": false, "credentials": {"password_ref": null, "username_ref": "env:U"}, "share_url": null}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["track_outbound_links"], false);
    assert_eq!(p["website_id"], WEBSITE_ID, "untouched fields stay");
    assert_eq!(p["credentials"], json!({"api_key_ref": "env:A", "username_ref": "env:U"}));
    let got = patch_config(&app, "umami", id, json!({"credentials": {"api_key_ref": "plain-secret-value"}})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("credentials.api_key_ref"));
    let got = patch_config(&app, "umami", id, json!({"website_id": "nope"})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("website_id"));
    let got = patch_config(&app, "umami", id, json!({"display_name": null})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("display_name"));
    // serde reads a struct from an array of its fields in order: credentials are an object only.
    let got = patch_config(&app, "umami", id, json!({"credentials": ["env:A", "env:U", null]})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("credentials"));
    let array = json!({"display_name": "y", "website_id": WEBSITE_ID, "credentials": ["env:A"]});
    let got = app.post(&configs_path(&app, "umami"), &app.admin, array).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("credentials"));
    // A config of another provider is not found under this one.
    let got = patch_config(&app, "plausible", id, json!({"display_name": "y"})).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);

    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    let actions: Vec<&str> = log["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["umami_config.update", "umami_config.create"]);
    assert_eq!(log["items"][0]["before"]["credentials"]["password_ref"], "env:B", "references only, never values");
}

/// An audit snapshot shows a config's usage as the API does: on PostgreSQL the ingest writers
/// count consent denials in rows of their own (`ingest_usage`), not in the config's row.
#[tokio::test]
async fn the_audit_trail_shows_a_configs_usage_as_the_api_does() {
    use crate::site;
    let (app, fakes, keys) = site::setup().await;
    let umami = site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    app.publish_consent_config(json!({})).await;
    let visitor = site::visitor();
    app.consent(&visitor, "reject_all", 1).await;
    let (s, accepted) = site::track(&app, &keys, site::pageview(&visitor)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let id = umami["id"].as_str().unwrap();
    let (s, renamed) = patch_config(&app, "umami", id, json!({"display_name": "Umami, renamed"})).await;
    assert_eq!(s, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["usage"]["events_denied_by_consent"], 1, "{renamed}");
    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    let entry = &log["items"][0];
    assert_eq!(entry["action"], "umami_config.update", "{log}");
    for side in ["before", "after"] {
        assert_eq!(entry[side]["usage"]["events_denied_by_consent"], 1, "{side}: {entry}");
    }
}
