//! The public consent routes as a visitor's browser (and a site's server) see them: recording
//! decisions, the visitor's state, withdrawal, CORS, signals, geo, rate limits.

use reqwest::{Method, StatusCode, header};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{SITE, TestApp, assert_error, send, spawn_app, spawn_app_with};

async fn state(app: &TestApp, visitor: &str) -> Value {
    let (s, body) = send(app.public(Method::GET, &format!("{}/{visitor}", app.consent_path()))).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

async fn state_with(app: &TestApp, visitor: &str, headers: &[(&str, &str)]) -> Value {
    let mut req = app.public(Method::GET, &format!("{}/{visitor}", app.consent_path()));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (s, body) = send(req).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn a_visitor_accepts_all_from_the_banner() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({"categories": {"marketing": {"enabled": false}}})).await;
    let visitor = uuid::Uuid::new_v4().to_string();

    // The banner posts text/plain JSON from the site's origin.
    let res = app
        .public(Method::POST, &app.consent_path())
        .header("origin", SITE)
        .header("content-type", "text/plain;charset=UTF-8")
        .header("user-agent", "Mozilla/5.0 (test)")
        .body(
            json!({"visitor_id": visitor, "action": "accept_all", "revision": 1, "language": "sv", "source": "banner"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], SITE);
    assert!(res.headers().get_all(header::VARY).iter().any(|v| v.to_str().unwrap().contains("Origin")));
    let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap().to_string();
    assert_eq!(cookie, format!("cg_vid={visitor}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax", 180 * 86_400));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["visitor_id"], visitor);
    assert_eq!(body["action"], "accept_all");
    assert_eq!(body["revision"], 1);
    // Accept all = every enabled category; marketing is disabled.
    assert_eq!(body["choices"], json!({"necessary": true, "functional": true, "analytics": true, "marketing": false}));
    assert!(uuid::Uuid::parse_str(body["record_id"].as_str().unwrap()).is_ok());
    let expires: chrono::DateTime<chrono::Utc> = body["expires_at"].as_str().unwrap().parse().unwrap();
    let days = (expires - chrono::Utc::now()).num_days();
    assert!((179..=180).contains(&days), "{days}");

    let s = state(&app, &visitor).await;
    assert_eq!(s["decision_needed"], false);
    assert!(s["reason"].is_null());
    assert_eq!(s["choices"], body["choices"]);
    assert_eq!(s["granted"], body["choices"]);
    assert_eq!(s["action"], "accept_all");
    assert_eq!(s["revision"], 1);
    assert_eq!(s["expires_at"], body["expires_at"]);
    assert_eq!(s["consent_required"], true, "unknown country counts as consent-required");
    assert_eq!(s["signals"], json!({"dnt": false, "gpc": false}));
}

#[tokio::test]
async fn the_server_issues_a_visitor_id_when_none_is_given() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    let res = app
        .public(Method::POST, &app.consent_path())
        .json(&json!({"action": "reject_all", "revision": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    let id = uuid::Uuid::parse_str(body["visitor_id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 4);
    assert!(cookie.starts_with(&format!("cg_vid={id};")));
    assert_eq!(
        body["choices"],
        json!({"necessary": true, "functional": false, "analytics": false, "marketing": false})
    );

    // A server-side caller that holds the cookie is recognised by it.
    let (s, again) = send(
        app.public(Method::POST, &app.consent_path())
            .header("cookie", format!("other=1; cg_vid={id}"))
            .json(&json!({"action": "accept_all", "revision": 1})),
    )
    .await;
    assert_eq!((s, again["visitor_id"].as_str()), (StatusCode::CREATED, Some(id.to_string().as_str())));
}

#[tokio::test]
async fn custom_choices_are_recorded_as_given() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    let got = app.record_consent(json!({"visitor_id": "v-custom", "action": "custom", "revision": 1})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("choices"));
    let (s, body) = app
        .record_consent(json!({"visitor_id": "v-custom", "action": "custom", "revision": 1,
                               "choices": {"functional": true, "analytics": false, "marketing": true}}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["choices"], json!({"necessary": true, "functional": true, "analytics": false, "marketing": true}));
    let st = state(&app, "v-custom").await;
    assert_eq!((st["decision_needed"].as_bool(), st["action"].as_str()), (Some(false), Some("custom")));
    assert_eq!(st["choices"]["marketing"], true);

    let got = app
        .record_consent(json!({"visitor_id": "v", "action": "custom", "revision": 1, "choices": {"necessary": false}}))
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("choices"));
}

#[tokio::test]
async fn bad_input_is_refused_clearly() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    let table = [
        (json!({"visitor_id": "a b", "action": "accept_all", "revision": 1}), "visitor_id"),
        (json!({"visitor_id": "x".repeat(65), "action": "accept_all", "revision": 1}), "visitor_id"),
        (json!({"visitor_id": "v", "action": "accept_some", "revision": 1}), "action"),
        (json!({"visitor_id": "v", "action": "accept_all"}), "revision"),
        (json!({"visitor_id": "v", "action": "accept_all", "revision": 1, "language": "english!"}), "language"),
        (json!({"visitor_id": "v", "action": "accept_all", "revision": 1, "source": "Banner <b>"}), "source"),
        // Labels the gateway sets itself; a server (no Origin) cannot claim them.
        (json!({"visitor_id": "v", "action": "accept_all", "revision": 1, "source": "banner"}), "source"),
        (json!({"visitor_id": "v", "action": "reject_all", "revision": 1, "source": "retention"}), "source"),
    ];
    for (body, field) in table {
        assert_error(
            &app.record_consent(body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some(field),
        );
    }
    let got = send(app.public(Method::GET, &format!("{}/a%20b", app.consent_path()))).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", Some("visitor_id"));
    let got =
        send(app.public(Method::POST, &app.consent_path()).header("content-type", "text/plain").body("{oops")).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
    let got = send(app.public(Method::GET, "/v1/tenants/no-such-tenant/consent/v1")).await;
    assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test]
async fn a_stale_revision_is_refused_but_a_refusal_never_is() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    app.publish(&id, false).await;
    let got = app.record_consent(json!({"visitor_id": "v1", "action": "accept_all", "revision": 1})).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", None);
    assert!(got.1["error"]["message"].as_str().unwrap().contains("revision 1 is not the active revision 2"));
    let got = app.record_consent(json!({"visitor_id": "v1", "action": "accept_all", "revision": 3})).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", None);

    // Withdrawing from a banner that still shows revision 1 works, recorded under revision 1.
    let (s, body) = app.record_consent(json!({"visitor_id": "v1", "action": "withdraw", "revision": 1})).await;
    assert_eq!((s, body["revision"].as_i64()), (StatusCode::CREATED, Some(1)));
    let (_, records) =
        app.get(&format!("/v1/tenants/{}/consent-records?visitor_id=v1", app.tenant), &app.auditor).await;
    let (_, revs) = app.get(&format!("{}/{id}/revisions", app.consent_configs_path()), &app.auditor).await;
    assert_eq!(records["items"][0]["texts_hash"], revs[1]["texts_hash"], "the texts of revision 1");

    // So is "Reject all", and a custom choice granting nothing, from a cached banner.
    let (s, body) = app.record_consent(json!({"visitor_id": "v2", "action": "reject_all", "revision": 1})).await;
    assert_eq!((s, body["revision"].as_i64()), (StatusCode::CREATED, Some(1)), "{body}");
    let none = json!({"functional": false, "analytics": false, "marketing": false});
    let (s, _) =
        app.record_consent(json!({"visitor_id": "v3", "action": "custom", "choices": none, "revision": 1})).await;
    assert_eq!(s, StatusCode::CREATED);
    let some = json!({"functional": false, "analytics": true, "marketing": false});
    let got = app.record_consent(json!({"visitor_id": "v3", "action": "custom", "choices": some, "revision": 1})).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", None);
}

#[tokio::test]
async fn without_an_active_config_nothing_is_recorded() {
    let app = spawn_app().await;
    let got = app.record_consent(json!({"visitor_id": "v", "action": "accept_all", "revision": 1})).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", None);
    let st = state(&app, "v").await;
    assert_eq!((st["decision_needed"].as_bool(), st["reason"].as_str()), (Some(true), Some("no_record")));
    assert!(st["choices"].is_null() && st["revision"].is_null());

    // Paused: no new consent, but the visitor can still withdraw (GDPR Art. 7(3)).
    let id = app.publish_consent_config(json!({})).await;
    app.consent("v", "accept_all", 1).await;
    app.patch(&format!("{}/{id}", app.consent_configs_path()), &app.admin, json!({"status": "paused"})).await;
    let got = app.record_consent(json!({"visitor_id": "v", "action": "accept_all", "revision": 1})).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", None);
    assert!(got.1["error"]["message"].as_str().unwrap().contains("paused"));
    let (s, body) = send(app.public(Method::DELETE, &format!("{}/v", app.consent_path()))).await;
    assert_eq!((s, body["action"].as_str()), (StatusCode::CREATED, Some("withdraw")));
}

#[tokio::test]
async fn cors_answers_only_the_allowed_origins() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    let post = |origin: &'static str| {
        app.public(Method::POST, &app.consent_path())
            .header("origin", origin)
            .json(&json!({"visitor_id": "v", "action": "reject_all", "revision": 1}))
    };
    for allowed in [SITE, "https://www.shop.example", "https://a.b.shop.example"] {
        let res = post(allowed).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED, "{allowed}");
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], allowed);
    }
    for refused in [
        "https://evil.example",
        "http://shop.example",
        "https://shop.example:8443",
        "https://shop.example.evil.net",
        "null",
    ] {
        let res = post(refused).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{refused}");
        assert!(res.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let got =
        send(app.public(Method::GET, &format!("{}/v", app.consent_path())).header("origin", "https://evil.example"))
            .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden", None);
    // Refused writes stored nothing: only the three allowed ones are there.
    let (_, records) = app.get(&format!("/v1/tenants/{}/consent-records", app.tenant), &app.auditor).await;
    assert_eq!(records["items"].as_array().unwrap().len(), 3);

    // Errors carry the CORS headers too, so the banner can read them.
    let res = app
        .public(Method::POST, &app.consent_path())
        .header("origin", SITE)
        .json(&json!({"visitor_id": "v", "action": "accept_all", "revision": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], SITE);
}

#[tokio::test]
async fn preflights_are_answered_for_allowed_origins() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    let preflight = |path: String, origin: &'static str, method: &'static str| {
        app.public(Method::OPTIONS, &path)
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let res = preflight(app.consent_path(), SITE, "POST").await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let h = res.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], SITE);
    assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("POST"));
    assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_ascii_lowercase().contains("content-type"));
    assert!(h.get_all(header::VARY).iter().any(|v| v.to_str().unwrap().contains("Origin")));

    let res = preflight(format!("{}/v1", app.consent_path()), "https://www.shop.example", "DELETE").await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(res.headers()[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("DELETE"));

    let res = preflight(app.consent_path(), "https://evil.example", "POST").await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn allowed_origins_change_when_the_config_is_published() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    let path = format!("{}/{id}", app.consent_configs_path());
    app.patch(&path, &app.admin, json!({"allowed_origins": ["https://new.example"]})).await;
    let state_from = |origin: &'static str| {
        send(app.public(Method::GET, &format!("{}/v", app.consent_path())).header("origin", origin))
    };
    assert_eq!(state_from(SITE).await.0, StatusCode::OK, "the published origins still apply");
    assert_eq!(state_from("https://new.example").await.0, StatusCode::FORBIDDEN);
    app.publish(&id, false).await;
    assert_eq!(state_from(SITE).await.0, StatusCode::FORBIDDEN);
    assert_eq!(state_from("https://new.example").await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_state_says_why_a_decision_is_needed() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    let st = state(&app, "v1").await;
    assert_eq!((st["decision_needed"].as_bool(), st["reason"].as_str()), (Some(true), Some("no_record")));
    assert_eq!(st["revision"], 1);
    assert!(st["choices"].is_null() && st["expires_at"].is_null());
    assert_eq!(st["granted"], json!({"necessary": true, "functional": false, "analytics": false, "marketing": false}));

    app.consent("v1", "accept_all", 1).await;
    app.consent("v2", "accept_all", 1).await;
    assert_eq!(state(&app, "v1").await["decision_needed"], false);

    // A material change asks everyone again.
    app.publish(&id, true).await;
    let st = state(&app, "v1").await;
    assert_eq!((st["decision_needed"].as_bool(), st["reason"].as_str()), (Some(true), Some("reconsent")));
    assert_eq!(st["revision"], 1, "the revision the visitor decided under");
    app.consent("v1", "custom", 2).await;
    let st = state(&app, "v1").await;
    assert_eq!((st["decision_needed"].as_bool(), st["choices"]["analytics"].as_bool()), (Some(false), Some(true)));

    // Withdrawal: decided, nothing granted.
    let (s, w) = send(app.public(Method::DELETE, &format!("{}/v1", app.consent_path()))).await;
    assert_eq!((s, w["action"].as_str(), w["revision"].as_i64()), (StatusCode::CREATED, Some("withdraw"), Some(2)));
    let st = state(&app, "v1").await;
    assert_eq!((st["decision_needed"].as_bool(), st["reason"].as_str()), (Some(false), Some("withdrawn")));
    assert_eq!(st["choices"], json!({"necessary": true, "functional": false, "analytics": false, "marketing": false}));

    // Expired: the stored expiry has passed.
    app.consent("v2", "accept_all", 2).await;
    app.db
        .execute_unprepared("UPDATE consent_record SET expires_at = created_at WHERE visitor_id = 'v2'")
        .await
        .unwrap();
    let st = state(&app, "v2").await;
    assert_eq!((st["decision_needed"].as_bool(), st["reason"].as_str()), (Some(true), Some("expired")));
}

#[tokio::test]
async fn a_choice_made_under_another_config_does_not_count() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({"display_name": "Old"})).await;
    app.consent("v", "accept_all", 1).await;
    app.publish_consent_config(json!({"display_name": "New"})).await;
    let st = state(&app, "v").await;
    // Asked again, as after a re-consent revision.
    assert_eq!((st["decision_needed"].as_bool(), st["reason"].as_str()), (Some(true), Some("reconsent")));
    assert_eq!(st["granted"]["analytics"], false);
}

/// An opt-out stands: where defaults would apply (outside consent-required regions), a refusal
/// made before a re-consent revision or under another config still refuses.
#[tokio::test]
async fn a_refusal_outlives_a_reconsent_revision_outside_consent_regions() {
    let app = spawn_app_with(|s| s.geo.country_header = "CF-IPCountry".into()).await;
    let id = app.publish_consent_config(json!({"categories": {"analytics": {"default_accepted": true}}})).await;
    app.consent("v-no", "reject_all", 1).await;
    app.consent("v-yes", "accept_all", 1).await;
    app.publish(&id, true).await;
    // Brazil: outside the consent regions (none of them is in it).
    let outside = [("cf-ipcountry", "BR")];
    let refused = state_with(&app, "v-no", &outside).await;
    assert_eq!((refused["decision_needed"].as_bool(), refused["reason"].as_str()), (Some(true), Some("reconsent")));
    assert_eq!(refused["granted"]["analytics"], false, "the refusal stands: {refused}");
    let accepted = state_with(&app, "v-yes", &outside).await;
    assert_eq!(accepted["granted"]["analytics"], true, "the defaults apply to a stale acceptance");
}

#[tokio::test]
async fn dnt_and_gpc_limit_what_is_granted_and_are_recorded() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    let (s, _) = send(
        app.public(Method::POST, &app.consent_path())
            .header("dnt", "1")
            .json(&json!({"visitor_id": "v-dnt", "action": "accept_all", "revision": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);

    let st = state_with(&app, "v-dnt", &[("dnt", "1")]).await;
    assert_eq!(st["signals"], json!({"dnt": true, "gpc": false}));
    assert_eq!(st["granted"], json!({"necessary": true, "functional": false, "analytics": false, "marketing": false}));
    // The banner showed every optional category locked off, so "Accept all" accepted none of
    // them: the record says so, and nothing is granted later without the signal either.
    assert_eq!(state(&app, "v-dnt").await["granted"]["analytics"], false);

    let (_, records) =
        app.get(&format!("/v1/tenants/{}/consent-records?visitor_id=v-dnt", app.tenant), &app.auditor).await;
    assert_eq!(records["items"][0]["signals"], json!({"dnt": true, "gpc": false}));
    assert_eq!(
        records["items"][0]["choices"],
        json!({"necessary": true, "functional": false, "analytics": false, "marketing": false})
    );

    // GPC always refuses marketing, even where DNT is not respected. (A second config: its
    // revision 1 is named with its id — the first config has a revision 1 too.)
    let second = app.publish_consent_config(json!({"respect_do_not_track": false})).await;
    let (s, recorded) = send(
        app.public(Method::POST, &app.consent_path())
            .json(&json!({"visitor_id": "v-gpc2", "action": "accept_all", "revision": 1, "config_id": second})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{recorded}");
    let st = state_with(&app, "v-gpc2", &[("sec-gpc", "1")]).await;
    assert_eq!(st["granted"], json!({"necessary": true, "functional": true, "analytics": true, "marketing": false}));

    // "Accept all" under GPC: marketing was shown refused and locked, and is recorded refused.
    let (s, recorded) = send(
        app.public(Method::POST, &app.consent_path())
            .header("sec-gpc", "1")
            .json(&json!({"visitor_id": "v-gpc3", "action": "accept_all", "revision": 1, "config_id": second})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{recorded}");
    assert_eq!(
        recorded["choices"],
        json!({"necessary": true, "functional": true, "analytics": true, "marketing": false})
    );
    assert_eq!(state(&app, "v-gpc3").await["granted"]["marketing"], false);
}

#[tokio::test]
async fn geo_decides_whether_consent_is_required() {
    let app = spawn_app_with(|s| {
        s.geo.country_header = "CF-IPCountry".into();
        s.geo.region_header = "X-Region".into();
    })
    .await;
    app.publish_consent_config(json!({"categories": {"analytics": {"default_accepted": true}}})).await;
    let from = |country: &'static str, region: Option<&'static str>| {
        let mut h = vec![("cf-ipcountry", country)];
        if let Some(r) = region {
            h.push(("x-region", r));
        }
        let app = &app;
        async move { state_with(app, "v", &h).await }
    };
    let se = from("SE", None).await;
    assert_eq!((se["consent_required"].as_bool(), se["country"].as_str()), (Some(true), Some("SE")));
    assert_eq!(se["granted"]["analytics"], false, "no pre-ticked boxes where consent is required");
    let us = from("US", Some("NY")).await;
    assert_eq!((us["consent_required"].as_bool(), us["decision_needed"].as_bool()), (Some(false), Some(true)));
    assert_eq!(us["granted"]["analytics"], true, "defaults apply outside consent regions");
    let ca = from("US", Some("CA")).await;
    assert_eq!(ca["consent_required"], true);
    // US-CA is a consent region: a US visitor whose state is unknown may be in it.
    let us_somewhere = from("US", None).await;
    assert_eq!(
        (us_somewhere["consent_required"].as_bool(), us_somewhere["granted"]["analytics"].as_bool()),
        (Some(true), Some(false))
    );
    // Placeholders for "unknown" count as unknown: consent required.
    for unknown in ["XX", "T1", "zz"] {
        let st = from(unknown, None).await;
        assert_eq!((st["consent_required"].as_bool(), st["country"].clone()), (Some(true), Value::Null), "{unknown}");
    }
    let (s, _) = send(
        app.public(Method::POST, &app.consent_path())
            .header("cf-ipcountry", "se")
            .json(&json!({"visitor_id": "v", "action": "reject_all", "revision": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, records) = app.get(&format!("/v1/tenants/{}/consent-records", app.tenant), &app.auditor).await;
    assert_eq!(records["items"][0]["country"], "SE");
    assert_eq!(records["items"][0]["ip_truncated"], "127.0.0.0");
}

/// With a GeoIP file as well, the country header still decides when a request carries it: a
/// Tor visitor (`T1`) is unknown — consent required —, not in the country the file places the
/// exit node in. Without the header, the file decides.
#[tokio::test]
async fn a_placeholder_in_the_country_header_is_not_looked_up_in_the_geoip_file() {
    let app = spawn_app_with(|s| {
        s.geo.country_header = "CF-IPCountry".into();
        s.geo.mmdb_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/geoip-test.mmdb").into();
        s.server.client_ip_header = "X-Forwarded-For".into();
    })
    .await;
    app.publish_consent_config(json!({"categories": {"analytics": {"default_accepted": true}}})).await;
    // 203.0.113.0/24 is Texas in the test file: outside every consent region.
    let texas = [("x-forwarded-for", "203.0.113.9")];
    let st = state_with(&app, "v", &texas).await;
    assert_eq!((st["country"].as_str(), st["consent_required"].as_bool()), (Some("US"), Some(false)), "{st}");
    assert_eq!(st["granted"]["analytics"], true, "{st}");
    for placeholder in ["T1", "XX"] {
        let st = state_with(&app, "v", &[texas[0], ("cf-ipcountry", placeholder)]).await;
        assert_eq!(
            (st["country"].clone(), st["consent_required"].as_bool()),
            (Value::Null, Some(true)),
            "{placeholder}: {st}"
        );
        assert_eq!(st["granted"]["analytics"], false, "{placeholder}: {st}");
    }
}

/// Revision numbers are counted per config: config B's revision 1 is not config A's. A banner
/// of the old config (cached for a while after B is published) cannot record a grant under B's
/// texts: it says which config it showed, and a grant without the config whose revision number
/// two configs have is refused as ambiguous. A refusal is recorded whatever the banner showed.
#[tokio::test]
async fn a_grant_made_on_another_configs_banner_is_refused() {
    let app = spawn_app().await;
    let old = app.publish_consent_config(json!({"display_name": "Old"})).await;
    let new = app.publish_consent_config(json!({"display_name": "New"})).await;
    assert_ne!(old, new);
    // What a server-side caller reads to name the config it asks under.
    assert_eq!(state(&app, "v").await["config_id"], json!(new));
    let post = async |body: Value| send(app.public(Method::POST, &app.consent_path()).json(&body)).await;
    let grant = |config: Option<&str>| {
        let mut b = json!({"visitor_id": "v", "action": "accept_all", "revision": 1});
        if let Some(c) = config {
            b["config_id"] = json!(c);
        }
        b
    };
    for (body, why) in
        [(grant(Some(&old)), "the old config's banner"), (grant(None), "no config: revision 1 is both's")]
    {
        let got = post(body).await;
        assert_error(&got, StatusCode::CONFLICT, "conflict", None);
        assert!(state(&app, "v").await["decision_needed"].as_bool().unwrap(), "{why}: nothing was recorded");
    }
    let (s, recorded) = post(grant(Some(&new))).await;
    assert_eq!((s, recorded["revision"].as_i64()), (StatusCode::CREATED, Some(1)), "{recorded}");
    assert_eq!(state(&app, "v").await["granted"]["analytics"], true);

    // A refusal from the old config's banner stands, recorded under the active config.
    let (s, refused) = post(json!({"visitor_id": "w", "action": "reject_all", "revision": 1, "config_id": old})).await;
    assert_eq!(s, StatusCode::CREATED, "{refused}");
    let (_, records) = app.get(&format!("/v1/tenants/{}/consent-records?visitor_id=w", app.tenant), &app.auditor).await;
    assert_eq!(records["items"][0]["config_id"], json!(new), "{records}");
}

#[tokio::test]
async fn consent_writes_are_rate_limited_per_client() {
    let app = spawn_app_with(|s| s.consent.writes_per_minute_per_ip = 3).await;
    app.publish_consent_config(json!({})).await;
    for i in 0..3 {
        app.consent(&format!("v{i}"), "reject_all", 1).await;
    }
    let res = app
        .public(Method::POST, &app.consent_path())
        .json(&json!({"visitor_id": "v9", "action": "reject_all", "revision": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = res.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=21).contains(&wait), "{wait}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    let (s, _) = send(app.public(Method::DELETE, &format!("{}/v1", app.consent_path()))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    // Reads are not limited.
    state(&app, "v1").await;
}
