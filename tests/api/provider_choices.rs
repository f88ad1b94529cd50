//! Per-provider choices (issue 10): with `per_provider_choices` on, a visitor allows one provider
//! config and refuses another within a category; the record holds the choices (in the hash
//! chain), the decision applies them at ingest and at send time, and a config added after the
//! choice is refused until the visitor is asked again — which the banner learns from the state.

use consentgate::outbox::Pass;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    fakes::FakeProviders,
    helpers::{TestApp, send},
    site::{self, Site, delivery_in, setup, track, visitor},
};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

fn reason_for(accepted: &Value, config: &Value) -> String {
    let d = accepted["decisions"].as_array().unwrap().iter().find(|d| d["config_id"] == config["id"]);
    d.unwrap_or_else(|| panic!("no decision for {} in {accepted}", config["id"]))["reason"].as_str().unwrap().into()
}

/// A tenant offering per-provider choices, with Plausible (cookie-free, listed under analytics)
/// and an Umami config that needs analytics and links its privacy policy.
async fn offering() -> (TestApp, FakeProviders, Site, Value, Value) {
    let (app, fakes, keys) = setup().await;
    app.publish_consent_config(json!({"per_provider_choices": true})).await;
    let plausible = site::plausible(&app, &fakes, json!({})).await;
    let umami = site::umami(
        &app,
        &fakes,
        json!({"required_category": "analytics", "privacy_policy_url": "https://umami.example/privacy"}),
    )
    .await;
    assert_eq!(umami["privacy_policy_url"], "https://umami.example/privacy", "{umami}");
    (app, fakes, keys, plausible, umami)
}

/// A custom choice granting analytics, with the given provider switches.
async fn choose(app: &TestApp, v: &str, providers: Value) -> Value {
    let (s, recorded) = app
        .record_consent(json!({
            "visitor_id": v, "action": "custom", "revision": 1, "language": "en",
            "choices": {"functional": false, "analytics": true, "marketing": false},
            "providers": providers,
        }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{recorded}");
    recorded
}

async fn state(app: &TestApp, v: &str) -> Value {
    let (s, state) = send(app.public(Method::GET, &format!("{}/{v}", app.consent_path()))).await;
    assert_eq!(s, StatusCode::OK, "{state}");
    state
}

#[tokio::test]
async fn a_visitor_allows_one_provider_and_refuses_another_within_analytics() {
    let (app, fakes, keys, plausible, umami) = offering().await;
    let v = visitor();
    let recorded = choose(&app, &v, json!({id(&plausible): true, id(&umami): false})).await;
    let offer = recorded["provider_choices"]["offer"].as_str().unwrap().to_string();
    assert_eq!(offer.len(), 16, "{recorded}");
    assert_eq!(recorded["provider_choices"]["providers"], json!({id(&plausible): true, id(&umami): false}));
    let s = state(&app, &v).await;
    assert_eq!((s["decision_needed"].as_bool(), s["reason"].as_str()), (Some(false), None), "{s}");
    assert_eq!(s["provider_choices"], recorded["provider_choices"]);

    // Enforced at ingest: Plausible with the visitor's identity, Umami not at all.
    let (status, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(reason_for(&accepted, &plausible), "consent_granted:analytics");
    assert_eq!(reason_for(&accepted, &umami), "denied:provider_refused");
    assert_eq!(app.drain_outbox().await, Pass { claimed: 1, delivered: 1, ..Pass::default() });
    assert_eq!(fakes.received_by("plausible").await.len(), 1);
    assert!(fakes.received_by("umami").await.is_empty(), "the refused provider received nothing");
    let usage = &site::config(&app, "umami", &id(&umami)).await["usage"];
    assert_eq!(usage["events_denied_by_consent"], 1, "a per-provider refusal is a consent denial: {usage}");

    // The opposite choice: Umami on, Plausible off — Plausible (cookie-free) still counts the
    // visit, without identifiers.
    let w = visitor();
    choose(&app, &w, json!({id(&plausible): false, id(&umami): true})).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&w)).await;
    assert_eq!(reason_for(&accepted, &plausible), "anonymous:provider_refused");
    assert_eq!(reason_for(&accepted, &umami), "consent_granted:analytics");

    // A provider switch does not grant a category the visitor refused.
    let x = visitor();
    let (s, r) = app
        .record_consent(
            json!({"visitor_id": x, "action": "reject_all", "revision": 1, "providers": {id(&umami): true}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["provider_choices"]["providers"][id(&umami)], false, "{r}");
    let (_, accepted) = track(&app, &keys, site::pageview(&x)).await;
    assert_eq!(reason_for(&accepted, &umami), "denied:rejected");
}

#[tokio::test]
async fn a_provider_added_after_the_choice_is_refused_until_the_visitor_is_asked_again() {
    let (app, fakes, keys, plausible, umami) = offering().await;
    let v = visitor();
    choose(&app, &v, json!({id(&plausible): true, id(&umami): true})).await;
    assert_eq!(state(&app, &v).await["decision_needed"], false);

    let added = site::umami(&app, &fakes, json!({"display_name": "Umami EU", "required_category": "analytics"})).await;
    // The banner asks again; meanwhile the configs the visitor chose on keep their choice and
    // the new one is refused for them.
    let s = state(&app, &v).await;
    assert_eq!((s["decision_needed"].as_bool(), s["reason"].as_str()), (Some(true), Some("offer_changed")), "{s}");
    let (_, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(reason_for(&accepted, &added), "denied:provider_not_offered");
    assert_eq!(reason_for(&accepted, &umami), "consent_granted:analytics");
    // A visitor without per-provider choices under this config is asked for them too, and a
    // visitor who refused everything is not asked again.
    let (old, refused) = (visitor(), visitor());
    app.consent(&old, "custom", 1).await;
    assert_eq!(state(&app, &old).await["reason"], "offer_changed");
    app.consent(&refused, "reject_all", 1).await;
    assert_eq!(state(&app, &refused).await["decision_needed"], false);

    // Asked again, the visitor allows the new one too.
    choose(&app, &v, json!({id(&plausible): true, id(&umami): true, id(&added): true})).await;
    assert_eq!(state(&app, &v).await["decision_needed"], false);
    let (_, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(reason_for(&accepted, &added), "consent_granted:analytics");

    // A banner rendered before the config was added did not show it: what it posts leaves the
    // new config out, so the visitor is asked again on the next page.
    let stale = visitor();
    choose(&app, &stale, json!({id(&plausible): true, id(&umami): true})).await;
    assert_eq!(state(&app, &stale).await["reason"], "offer_changed");
}

/// The outbox decides again at send time: a per-provider refusal made while a delivery waits
/// stops it.
#[tokio::test]
async fn switching_a_provider_off_reaches_deliveries_still_waiting() {
    let (app, fakes, keys, plausible, umami) = offering().await;
    let v = visitor();
    choose(&app, &v, json!({id(&plausible): true, id(&umami): true})).await;
    fakes.behaviour(json!({"umami": {"status": 503}})).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(reason_for(&accepted, &umami), "consent_granted:analytics");
    assert_eq!(app.drain_outbox().await, Pass { claimed: 2, delivered: 1, retried: 1, ..Pass::default() });
    choose(&app, &v, json!({id(&plausible): true, id(&umami): false})).await;
    fakes.behaviour(json!({"umami": {"status": null}})).await;
    assert_eq!(app.drain_outbox_with_retries().await, Pass { claimed: 1, dead: 1, ..Pass::default() });
    let cancelled = delivery_in(&app, &id(&accepted), &id(&umami), "dead").await;
    let error = cancelled["last_error"].as_str().unwrap();
    assert!(error.contains("consent changed before delivery (denied:provider_refused)"), "{cancelled}");
    assert!(fakes.stored("umami").await.is_empty());
}

/// The record-level API shows the choices; they are in the hash chain (version 2 of the
/// canonical form); the banner of a config offering them lists the providers, and the default
/// banner does not grow.
#[tokio::test]
async fn records_exports_and_the_banner_show_the_per_provider_choices() {
    let (app, _fakes, _keys, plausible, umami) = offering().await;
    let v = visitor();
    let recorded = choose(&app, &v, json!({id(&plausible): true, id(&umami): false})).await;
    let base = format!("/v1/tenants/{}/consent-records", app.tenant);
    let (_, page) = app.get(&format!("{base}?visitor_id={v}"), &app.auditor).await;
    let record = &page["items"][0];
    assert_eq!(record["provider_choices"], recorded["provider_choices"], "{record}");
    assert_eq!(record["canonical_version"], 2, "{record}");
    let (_, verified) = app.get(&format!("{base}/verify"), &app.auditor).await;
    assert_eq!(verified["ok"], true, "{verified}");

    let export = |format: &str| {
        let req = app.request(Method::GET, &format!("{base}/export?format={format}&visitor_id={v}"), &app.auditor);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let ndjson: Value = serde_json::from_str(export("ndjson").await.lines().next().unwrap()).unwrap();
    assert_eq!(ndjson["provider_choices"], recorded["provider_choices"]);
    let csv = export("csv").await;
    let (header, row) = (csv.lines().next().unwrap(), csv.lines().nth(1).unwrap());
    assert!(header.ends_with(",canonical_version,provider_choices"), "{header}");
    assert!(
        row.contains(&format!("\"{{\"\"offer\"\":\"\"{}\"\"", recorded["provider_choices"]["offer"].as_str().unwrap())),
        "{row}"
    );

    // Tampering with a stored provider choice breaks the chain.
    use sea_orm::{ConnectionTrait, Statement};
    let tampered =
        json!({"offer": recorded["provider_choices"]["offer"], "providers": {id(&plausible): true, id(&umami): true}});
    let cast = if crate::helpers::backend() == "postgres" { "::jsonb" } else { "" };
    let sql = format!("UPDATE consent_record SET provider_choices = '{tampered}'{cast} WHERE visitor_id = '{v}'");
    app.db.execute_raw(Statement::from_string(app.db.get_database_backend(), sql)).await.unwrap();
    let (_, verified) = app.get(&format!("{base}/verify"), &app.auditor).await;
    assert_eq!(
        (verified["ok"].as_bool(), verified["first_broken"]["reason"].as_str()),
        (Some(false), Some("hash_mismatch")),
        "{verified}"
    );

    // The banner lists the configs on offer, with their policy links, in the per-provider build.
    let banner = app.http.get(app.tenant_url("/banner.js")).send().await.unwrap().text().await.unwrap();
    for needle in [
        &format!("\"id\":\"{}\"", id(&umami)),
        "\"privacy_policy_url\":\"https://umami.example/privacy\"",
        "\"offer\":\"",
        "\"category\":\"analytics\"",
    ] {
        assert!(banner.contains(needle), "{needle} not in the banner");
    }
    assert!(banner.contains(".pv{"), "the per-provider build and its styles");
}

#[tokio::test]
async fn the_default_banner_has_no_per_provider_choices_and_ignores_them_when_posted() {
    let (app, fakes, keys) = setup().await;
    app.publish_consent_config(json!({})).await;
    let umami = site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    let banner = app.http.get(app.tenant_url("/banner.js")).send().await.unwrap().text().await.unwrap();
    assert!(
        !banner.contains("\"providers\"") && !banner.contains("\"offer\"") && !banner.contains(".pv{"),
        "no offer in the default banner"
    );
    assert!(banner.contains(consentgate_default_script().trim()), "the default build");
    let v = visitor();
    let r = choose(&app, &v, json!({id(&umami): false})).await;
    assert!(r.get("provider_choices").is_none(), "{r}");
    let (_, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(reason_for(&accepted, &umami), "consent_granted:analytics", "the category decides alone");
    let (_, page) = app.get(&format!("/v1/tenants/{}/consent-records?visitor_id={v}", app.tenant), &app.auditor).await;
    assert!(page["items"][0].get("provider_choices").is_none(), "{page}");
    // A malformed switch is refused, naming the field.
    let (s, body) = app
        .record_consent(
            json!({"visitor_id": v, "action": "accept_all", "revision": 1, "providers": {"not-a-uuid": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("providers"), "{body}");
}

fn consentgate_default_script() -> &'static str {
    include_str!("../../banner/dist/banner.min.js")
}
