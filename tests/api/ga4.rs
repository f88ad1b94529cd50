//! GA4 (Measurement Protocol) end to end, against the fake GA4 (a separate process that answers
//! `204` to anything at `/mp/collect`, as Google does, and records what Google would not have
//! processed): config CRUD, no request without an analytics *record*, the consent fields, every
//! change a warning, the per-request limit, the 72-hour rule, debug mode and `check`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    fakes::FakeProviders,
    helpers::{TestApp, assert_error, send},
    site::{self, CHROME, Site, configs_path, create_config, delivery_in, patch_config, setup, visitor},
};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

const SECRET: &str = "ga4-test-secret&x";

/// An API secret in a file (mode 600) the config references; the directory lives as long as the
/// returned guard.
fn secret_file() -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ga4-api-secret");
    std::fs::write(&path, SECRET).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let reference = format!("file:{}", path.to_string_lossy());
    (dir, reference)
}

/// An active GA4 config on the fake; `extra` overrides fields.
async fn ga4(app: &TestApp, fakes: &FakeProviders, secret_ref: &str, extra: Value) -> Value {
    let body = json!({"display_name": "GA4", "measurement_id": "G-TEST123", "endpoint_url": fakes.ga4_url(),
                      "status": "active", "credentials": {"api_secret_ref": secret_ref}});
    create_config(app, "ga4", crate::helpers::merged(body, extra)).await
}

/// A consent config where analytics is on by default outside the consent-required regions (the
/// case where defaults would allow a config, but GA4 needs a record), DNT/GPC not honoured.
async fn opt_out_defaults(app: &TestApp) {
    app.publish_consent_config(json!({
        "categories": {"analytics": {"default_accepted": true}},
        "respect_do_not_track": false,
    }))
    .await;
}

/// A server-side event for `visitor` in `country`, as Chrome.
async fn server_event(app: &TestApp, keys: &Site, body: Value) -> (StatusCode, Value) {
    let base = json!({"event_name": "pageview", "page_url": site::PAGE, "title": "Pricing", "user_agent": CHROME,
                      "ip": "198.51.100.23", "country": "US"});
    send(
        app.http
            .post(app.tenant_url("/events"))
            .bearer_auth(&keys.secret_key)
            .json(&crate::helpers::merged(base, body)),
    )
    .await
}

fn reason_for(accepted: &Value, config: &Value) -> String {
    let d = accepted["decisions"].as_array().unwrap().iter().find(|d| d["config_id"] == id(config)).unwrap();
    d["reason"].as_str().unwrap().to_string()
}

/// GA4's requests as the fake recorded them, with the query parameters and what GA4 would not
/// have processed (`outcome` is `dropped` then).
async fn ga4_requests(fakes: &FakeProviders) -> Vec<Value> {
    fakes.received_by("ga4").await
}

fn assert_all_valid(requests: &[Value]) {
    for r in requests {
        assert!(r["outcome"] == "stored" || r["outcome"] == "validated", "GA4 would not process it: {r:#}");
        assert_eq!(r["reason"], Value::Null, "{r:#}");
    }
}

#[tokio::test]
async fn a_ga4_config_with_the_defaults_and_its_refusals() {
    let app = crate::helpers::spawn_app().await;
    let c = create_config(
        &app,
        "ga4",
        json!({"display_name": "GA4", "measurement_id": "g-abc123", "property_id": 123456789,
               "credentials": {"api_secret_ref": "env:GA4_API_SECRET", "service_account_json_ref": "file:/run/secrets/sa.json"}}),
    )
    .await;
    assert_eq!((c["provider"].as_str(), c["status"].as_str()), (Some("ga4"), Some("draft")));
    assert_eq!(c["required_category"], "analytics");
    assert_eq!(c["measurement_id"], "G-ABC123");
    assert_eq!(c["property_id"], "123456789");
    assert_eq!(c["region"], "global");
    for (field, default) in [
        ("require_cookie_consent", true),
        ("anonymize_ip", true),
        ("enable_enhanced_measurement", true),
        ("enable_ecommerce", false),
        ("debug_mode", false),
    ] {
        assert_eq!(c[field].as_bool(), Some(default), "{field}: {c}");
    }
    assert_eq!(
        c["credentials"],
        json!({"api_secret_ref": "env:GA4_API_SECRET", "service_account_json_ref": "file:/run/secrets/sa.json"})
    );
    let (s, patched) = patch_config(&app, "ga4", &id(&c), json!({"region": "eu", "debug_mode": true})).await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!((patched["region"].as_str(), patched["debug_mode"].as_bool()), (Some("eu"), Some(true)));
    let (s, list) = app.get(&configs_path(&app, "ga4"), &app.auditor).await;
    assert_eq!((s, list.as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{list}");

    let path = configs_path(&app, "ga4");
    for (body, field) in [
        (json!({"display_name": "x", "credentials": {"api_secret_ref": "env:A"}}), "measurement_id"),
        (
            json!({"display_name": "x", "measurement_id": "UA-1-1", "credentials": {"api_secret_ref": "env:A"}}),
            "measurement_id",
        ),
        (json!({"display_name": "x", "measurement_id": "G-1"}), "credentials"),
        (
            json!({"display_name": "x", "measurement_id": "G-1", "credentials": {"api_secret_ref": "raw-secret-value"}}),
            "credentials.api_secret_ref",
        ),
        (
            json!({"display_name": "x", "measurement_id": "G-1", "region": "us", "credentials": {"api_secret_ref": "env:A"}}),
            "region",
        ),
    ] {
        let got = app.post(&path, &app.admin, body.clone()).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some(field));
    }
    let (s, _) = app.delete(&format!("{path}/{}", id(&c)), &app.admin).await;
    assert!(s.is_success(), "{s}");
}

/// The card's rule: GA4 gets nothing without a consent record granting analytics — not even
/// outside the consent-required regions, where the config's defaults let other configs count.
#[tokio::test]
async fn nothing_reaches_ga4_without_a_record_granting_analytics() {
    let (app, fakes, keys) = setup().await;
    let (_dir, secret) = secret_file();
    let g = ga4(&app, &fakes, &secret, json!({})).await;
    let lenient =
        ga4(&app, &fakes, &secret, json!({"display_name": "GA4 lenient", "require_cookie_consent": false})).await;
    opt_out_defaults(&app).await;

    let (accepted, rejected, custom, none_us, none_se) = (visitor(), visitor(), visitor(), visitor(), visitor());
    app.consent(&accepted, "accept_all", 1).await;
    app.consent(&rejected, "reject_all", 1).await;
    app.consent(&custom, "custom", 1).await;
    let mut sent = Vec::new();
    for (v, country, strict, relaxed) in [
        (&accepted, "US", "consent_granted:analytics", "consent_granted:analytics"),
        (&custom, "SE", "consent_granted:analytics", "consent_granted:analytics"),
        (&rejected, "US", "denied:rejected", "denied:rejected"),
        (&none_us, "US", "denied:no_record", "consent_default:analytics"),
        (&none_se, "SE", "denied:no_consent", "denied:no_consent"),
    ] {
        let mut body = json!({"anonymous_id": v, "country": country});
        if country == "US" {
            // Texas: outside the consent regions (a US visitor whose state is unknown may be in US-CA).
            body["region"] = json!("US-TX");
        }
        let (s, a) = server_event(&app, &keys, body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{a}");
        assert_eq!(
            (reason_for(&a, &g), reason_for(&a, &lenient)),
            (strict.to_string(), relaxed.to_string()),
            "{v} {country}"
        );
        sent.push(a);
    }
    app.drain_outbox().await;
    let got = ga4_requests(&fakes).await;
    assert_all_valid(&got);
    let mut clients: Vec<&str> = got.iter().map(|r| r["body"]["client_id"].as_str().unwrap()).collect();
    clients.sort();
    let mut expected = vec![accepted.as_str(), accepted.as_str(), custom.as_str(), custom.as_str(), none_us.as_str()];
    expected.sort();
    assert_eq!(clients, expected, "the strict config only for the two records; the lenient one also by default");
    assert!(got.iter().all(|r| r["path"].as_str().unwrap().starts_with("/mp/collect?api_secret=")));
    let usage = &site::config(&app, "ga4", &id(&g)).await["usage"];
    assert_eq!((usage["events_sent"].as_i64(), usage["events_denied_by_consent"].as_i64()), (Some(2), Some(3)));
}

/// `consent.ad_user_data` / `ad_personalization` follow the visitor's marketing choice; GPC
/// denies them even after "Accept all".
#[tokio::test]
async fn the_consent_fields_follow_marketing_and_gpc() {
    let (app, fakes, keys) = setup().await;
    let (_dir, secret) = secret_file();
    ga4(&app, &fakes, &secret, json!({})).await;
    opt_out_defaults(&app).await;
    let (all, analytics_only, gpc) = (visitor(), visitor(), visitor());
    app.consent(&all, "accept_all", 1).await;
    app.consent(&analytics_only, "custom", 1).await;
    app.consent(&gpc, "accept_all", 1).await;
    for (v, extra) in [(&all, json!({})), (&analytics_only, json!({})), (&gpc, json!({"gpc": true}))] {
        let (s, a) = server_event(&app, &keys, crate::helpers::merged(json!({"anonymous_id": v}), extra)).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{a}");
    }
    app.drain_outbox().await;
    let got = ga4_requests(&fakes).await;
    assert_all_valid(&got);
    let consent_of =
        |v: &str| got.iter().find(|r| r["body"]["client_id"] == v).map(|r| r["body"]["consent"].clone()).expect("sent");
    let granted = json!({"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"});
    let denied = json!({"ad_user_data": "DENIED", "ad_personalization": "DENIED"});
    assert_eq!(consent_of(&all), granted);
    assert_eq!(consent_of(&analytics_only), denied);
    assert_eq!(consent_of(&gpc), denied, "GPC is an opt-out of sharing for ads");
}

/// GA4 drops what breaks its rules without a word; the gateway renames and cuts instead, and
/// says so on the delivery. The fake confirms nothing invalid arrived.
#[tokio::test]
async fn every_rename_and_truncation_is_a_warning_and_nothing_invalid_is_sent() {
    let (app, fakes, keys) = setup().await;
    let (_dir, secret) = secret_file();
    let g = ga4(&app, &fakes, &secret, json!({"enable_ecommerce": true})).await;
    opt_out_defaults(&app).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let (s, a) = server_event(
        &app,
        &keys,
        json!({"anonymous_id": v, "event_name": "error", "title": "t".repeat(400),
               "event_properties": {"ga_source": "x", "plan-type": "pro", "long": "é".repeat(150), "nested": {"a": 1}}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{a}");
    let (s, purchase) = server_event(
        &app,
        &keys,
        json!({"anonymous_id": v, "event_name": "purchase", "revenue": {"amount": 49.9, "currency": "EUR"}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{purchase}");
    // Names no GA4 rule allows, and more properties than GA4 takes.
    let props: serde_json::Map<String, Value> =
        (0..40).map(|i| (format!("{i} Größe/{}", "k".repeat(i)), json!(format!("{}{i}", "€".repeat(i * 3))))).collect();
    let (s, odd) =
        server_event(&app, &keys, json!({"anonymous_id": v, "event_name": "😀 Sign-up!!", "event_properties": props}))
            .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{odd}");
    app.drain_outbox().await;
    let d = delivery_in(&app, &id(&odd), &id(&g), "delivered").await;
    assert!(d["warning"].as_str().unwrap().contains("beyond GA4's 25 parameters"), "{d}");
    let d = delivery_in(&app, &id(&a), &id(&g), "delivered").await;
    let warning = d["warning"].as_str().unwrap();
    for change in [
        "event name \"error\" renamed \"cg_error\"",
        "property \"ga_source\" renamed \"cg_ga_source\"",
        "property \"plan-type\" renamed \"plan_type\"",
        "parameter \"long\" cut to 100 characters",
        "parameter \"page_title\" cut to 300 characters",
        "property \"nested\" left out",
    ] {
        assert!(warning.contains(change), "{change} not in {warning}");
    }
    let clean = delivery_in(&app, &id(&purchase), &id(&g), "delivered").await;
    assert_eq!(clean["warning"], Value::Null, "nothing changed, nothing to say: {clean}");
    let got = ga4_requests(&fakes).await;
    assert_all_valid(&got);
    let bought =
        got.iter().flat_map(|r| r["body"]["events"].as_array().unwrap()).find(|e| e["name"] == "purchase").unwrap();
    assert_eq!(bought["params"]["transaction_id"], id(&purchase), "never empty: the event id");
    assert_eq!((bought["params"]["value"].clone(), bought["params"]["currency"].clone()), (json!(49.9), json!("EUR")));
}

/// Requests carry at most 25 events, all of one visitor (one `client_id`): 27 events of one
/// visitor and 3 of another make three requests — 25 and 2, and 3.
#[tokio::test]
async fn at_most_25_events_per_request_and_one_visitor_per_request() {
    let (app, fakes, keys) = setup().await;
    let (_dir, secret) = secret_file();
    ga4(&app, &fakes, &secret, json!({})).await;
    opt_out_defaults(&app).await;
    let (a, b) = (visitor(), visitor());
    app.consent(&a, "accept_all", 1).await;
    app.consent(&b, "accept_all", 1).await;
    let of_b = |i: usize| i % 10 == 9;
    for i in 0..30 {
        let v = if of_b(i) { &b } else { &a };
        let (s, r) = server_event(&app, &keys, json!({"anonymous_id": v, "event_name": format!("step_{i}")})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{r}");
    }
    app.drain_outbox().await;
    let got = ga4_requests(&fakes).await;
    assert_all_valid(&got);
    let mut sizes = Vec::new();
    let mut names = Vec::new();
    for r in &got {
        let client = r["body"]["client_id"].as_str().unwrap();
        let events = r["body"]["events"].as_array().unwrap();
        sizes.push((client == b, events.len()));
        for e in events {
            let name = e["name"].as_str().unwrap();
            let i: usize = name.strip_prefix("step_").unwrap().parse().unwrap();
            assert_eq!(of_b(i), client == b, "{name} sent as another visitor's");
            names.push(i);
        }
    }
    sizes.sort();
    assert_eq!(sizes, [(false, 2), (false, 25), (true, 3)], "{got:#?}");
    names.sort();
    assert_eq!(names, (0..30).collect::<Vec<_>>(), "every event once");
}

/// An event that waited past GA4's 72 hours is dead-lettered with that reason, never sent.
#[tokio::test]
async fn an_event_older_than_72_hours_is_dead_lettered_not_sent() {
    let (app, fakes, keys) = setup().await;
    let (_dir, secret) = secret_file();
    let g = ga4(&app, &fakes, &secret, json!({})).await;
    opt_out_defaults(&app).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    // Accepted at ingest (72 hours is the ingest limit too), but 30 s past GA4's limit less the
    // one-minute margin the mapping keeps for the request in flight.
    let occurred = chrono::Utc::now() - chrono::Duration::hours(72) + chrono::Duration::seconds(30);
    let (s, a) = server_event(&app, &keys, json!({"anonymous_id": v, "occurred_at": occurred.to_rfc3339()})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{a}");
    app.drain_outbox().await;
    let d = delivery_in(&app, &id(&a), &id(&g), "dead").await;
    let reason = d["last_error"].as_str().unwrap();
    assert!(reason.contains("too old for GA4") && reason.contains("72 hours"), "{reason}");
    assert!(ga4_requests(&fakes).await.is_empty(), "nothing sent");
}

/// `debug_mode` sends to the validation server and keeps its findings on the delivery: a clean
/// event ends `dropped` (validated, never collected); one GA4 would refuse ends `dead` with the
/// messages — only that one, not its batch-mates.
#[tokio::test]
async fn debug_mode_validates_and_stores_the_validation_messages() {
    let (app, fakes, keys) = setup().await;
    let (_dir, secret) = secret_file();
    let g = ga4(&app, &fakes, &secret, json!({"debug_mode": true})).await;
    opt_out_defaults(&app).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let (_, clean) = server_event(&app, &keys, json!({"anonymous_id": v})).await;
    app.drain_outbox().await;
    let d = delivery_in(&app, &id(&clean), &id(&g), "dropped").await;
    assert!(d["warning"].as_str().unwrap().contains("validated, not collected"), "{d}");

    // Two events of the visitor go in one request; the message names the second only.
    fakes
        .ga4_validation_messages(json!([{"fieldPath": "events[1].params.page_title",
            "description": "Recommended parameter value is too generic.", "validationCode": "VALUE_INVALID"}]))
        .await;
    let (_, fine) = server_event(&app, &keys, json!({"anonymous_id": v})).await;
    let (_, flagged) = server_event(&app, &keys, json!({"anonymous_id": v, "event_name": "signup"})).await;
    app.drain_outbox().await;
    let d = delivery_in(&app, &id(&fine), &id(&g), "dropped").await;
    assert!(d["warning"].as_str().unwrap().contains("validated, not collected"), "{d}");
    let d = delivery_in(&app, &id(&flagged), &id(&g), "dead").await;
    let reason = d["last_error"].as_str().unwrap();
    assert!(reason.contains("VALUE_INVALID at events[1].params.page_title: Recommended parameter"), "{reason}");

    let got = ga4_requests(&fakes).await;
    let sizes: Vec<usize> = got.iter().map(|r| r["body"]["events"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [1, 2], "{got:#?}");
    for r in &got {
        assert!(r["path"].as_str().unwrap().starts_with("/debug/mp/collect?"), "never collected: {r}");
        assert_eq!(r["body"]["validation_behavior"], "ENFORCE_RECOMMENDATIONS");
    }
    let usage = &site::config(&app, "ga4", &id(&g)).await["usage"];
    assert_eq!(
        (usage["events_sent"].as_i64(), usage["events_dropped"].as_i64(), usage["events_failed"].as_i64()),
        (Some(0), Some(2), Some(1)),
        "{usage}"
    );
}

/// The api_secret travels in the query string: it reaches GA4, and nothing the gateway shows.
#[tokio::test]
async fn the_api_secret_reaches_ga4_and_nothing_else() {
    let (app, fakes, keys) = setup().await;
    let (_dir, secret) = secret_file();
    let g = ga4(&app, &fakes, &secret, json!({})).await;
    // A closed port: the transport error must not carry the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down =
        ga4(&app, &fakes, &secret, json!({"display_name": "down", "endpoint_url": format!("http://127.0.0.1:{port}")}))
            .await;
    opt_out_defaults(&app).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let (_, a) = server_event(&app, &keys, json!({"anonymous_id": v})).await;
    app.drain_outbox().await;
    delivery_in(&app, &id(&a), &id(&g), "delivered").await;
    let got = ga4_requests(&fakes).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["path"], format!("/mp/collect?api_secret={SECRET}&measurement_id=G-TEST123"));
    let failed = delivery_in(&app, &id(&a), &id(&down), "pending").await;
    let shown = format!("{failed} {}", site::config(&app, "ga4", &id(&down)).await);
    assert!(failed["last_error"].as_str().unwrap().contains("connection failed"), "{failed}");
    assert!(!shown.contains(SECRET) && !shown.contains("ga4-test-secret"), "{shown}");
}

/// `check` runs a sample page view through the validation server (GA4's collect endpoint takes
/// anything): the report shows what it found, and that GA4 cannot verify an api_secret.
#[tokio::test]
async fn check_runs_sample_events_through_the_validation_server() {
    let (app, fakes, _) = setup().await;
    let (_dir, secret) = secret_file();
    let g = ga4(&app, &fakes, &secret, json!({})).await;
    let path = format!("{}/{}/check", configs_path(&app, "ga4"), id(&g));
    let check = || app.post(&path, &app.admin, json!({}));
    let (s, report) = check().await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let r = &report["references"][0];
    assert_eq!(r["field"], "credentials.api_secret_ref");
    assert_eq!((r["status"].as_str(), r["accepted_by_provider"].as_bool()), (Some("ok"), Some(true)), "{report}");
    assert!(r["detail"].as_str().unwrap().contains("does not check the api_secret"), "{report}");
    let got = ga4_requests(&fakes).await;
    assert_eq!(got.len(), 1);
    assert!(got[0]["path"].as_str().unwrap().starts_with("/debug/mp/collect?"), "{got:#?}");
    assert_all_valid(&got);

    fakes
        .ga4_validation_messages(
            json!([{"fieldPath": "measurement_id", "description": "Measurement ID is for an app stream.",
            "validationCode": "VALUE_INVALID"}]),
        )
        .await;
    let (_, report) = check().await;
    let r = &report["references"][0];
    assert_eq!((report["status"].as_str(), r["accepted_by_provider"].as_bool()), (Some("failed"), Some(false)));
    assert!(r["detail"].as_str().unwrap().contains("app stream"), "{report}");
    assert!(!report.to_string().contains(SECRET), "{report}");
}

/// The fake holds the gateway to GA4's rules: what Google would not process is answered `204`
/// all the same but recorded as `dropped` with the problems, and the validation server names
/// them — so `assert_all_valid` above can fail.
#[tokio::test]
async fn the_fake_records_what_ga4_would_not_process() {
    let fakes = FakeProviders::start().await;
    let http = reqwest::Client::new();
    let old = (chrono::Utc::now() - chrono::Duration::hours(73)).timestamp_micros();
    let bad = json!({
        "client_id": "",
        "consent": {"ad_user_data": "YES"},
        "events": [
            {"name": "error", "params": {"ga_x": 1, "v": "x".repeat(101), "page_title": "t".repeat(300)}},
            {"name": "purchase", "params": {"transaction_id": ""}, "timestamp_micros": old},
            {"name": "2fa", "params": {"items": [{"price": 1}], "nested": {"a": 1}}},
            {"name": "add_to_cart", "params": {"items": [
                {"item_id": "a", "item_brand": "b", "c0": 0, "c1": 1, "c2": 2, "c3": 3, "c4": 4, "c5": 5,
                 "c6": 6, "c7": 7, "c8": 8, "c9": 9, "c10": 10}]}},
        ]
    });
    let collect = |path: &str, query: &str| http.post(format!("{}{path}?{query}", fakes.ga4_url())).json(&bad).send();
    let res = collect("/mp/collect", "measurement_id=G-1&api_secret=s").await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT, "GA4 answers 2xx to anything");
    let res = collect("/mp/collect", "measurement_id=G-1").await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = collect("/debug/mp/collect", "measurement_id=G-1&api_secret=s").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let answer: Value = res.json().await.unwrap();
    let codes: Vec<(&str, &str)> = answer["validationMessages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["fieldPath"].as_str().unwrap(), m["validationCode"].as_str().unwrap()))
        .collect();
    for expected in [
        ("client_id", "VALUE_REQUIRED"),
        ("consent.ad_user_data", "VALUE_INVALID"),
        ("events", "NAME_RESERVED"),
        ("events[0].params.ga_x", "NAME_RESERVED"),
        ("events[0].params.v", "VALUE_INVALID"),
        ("events[1].timestamp_micros", "VALUE_INVALID"),
        ("events", "NAME_INVALID"),
        ("events[2].params.items[0]", "VALUE_REQUIRED"),
        ("events[2].params.nested", "VALUE_INVALID"),
        ("events[3].params.items[0]", "EXCEEDED_MAX_ENTITIES"),
    ] {
        assert!(codes.contains(&expected), "{expected:?} not in {codes:?}");
    }
    assert!(!codes.iter().any(|(p, _)| p.contains("page_title")), "300 characters are fine for page_title");
    let got = ga4_requests(&fakes).await;
    assert_eq!(
        got.iter().map(|r| r["outcome"].as_str().unwrap()).collect::<Vec<_>>(),
        ["dropped", "dropped", "validated"]
    );
    assert!(
        got[0]["reason"].as_str().unwrap().contains("WOULD_MERGE"),
        "an empty transaction_id: {}",
        got[0]["reason"]
    );
    assert!(got[1]["reason"].as_str().unwrap().contains("VALUE_REQUIRED at api_secret"), "{}", got[1]["reason"]);
}

/// A page view from the browser by `v` on `page`, to `path` (below the tenant).
async fn browser_pageview(app: &TestApp, keys: &Site, path: &str, v: &str, page: &str) -> Value {
    let mut e = site::pageview(v);
    e["page_url"] = json!(page);
    let (s, a) = site::post_from_browser(app, path, &keys.public_key, e).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{a}");
    a
}

/// The pages GA4 was sent, in order.
async fn pages_sent(fakes: &FakeProviders) -> Vec<String> {
    let got = ga4_requests(fakes).await;
    assert_all_valid(&got);
    got.iter()
        .flat_map(|r| r["body"]["events"].as_array().unwrap().clone())
        .map(|e| e["params"]["page_location"].as_str().unwrap().to_string())
        .collect()
}

/// GA4 configs follow the shared status lifecycle — draft → active → paused → active →
/// decommissioned; `error` is never set by hand, nothing returns to `draft` or leaves
/// `decommissioned` — and the status decides what reaches GA4: only an active config is sent
/// events; a paused one is decided `denied:config_paused`, a draft or decommissioned one is no
/// target at all.
#[tokio::test]
async fn the_ga4_lifecycle_is_enforced_and_only_an_active_config_reaches_ga4() {
    let (app, fakes, keys) = setup().await;
    let (_dir, secret) = secret_file();
    let c = ga4(&app, &fakes, &secret, json!({"status": null})).await;
    assert_eq!(c["status"], "draft", "{c}");
    app.publish_consent_config(json!({})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let conflict = |got: (StatusCode, Value)| assert_error(&got, StatusCode::CONFLICT, "conflict", None);
    let mut n = 0;
    let mut expect_sent = Vec::new();
    // Posts a page view in the config's present state; asserts the config's decision — none at
    // all for a draft or decommissioned config, which is no forwarding target — and drains.
    let mut step = async |reason: Option<&str>| {
        n += 1;
        let page = format!("{}/state/{n}", site::ORIGIN);
        let a = browser_pageview(&app, &keys, "/events", &v, &page).await;
        let decisions = a["decisions"].as_array().unwrap();
        let decided = decisions.iter().find(|d| d["config_id"] == id(&c)).map(|d| d["reason"].as_str().unwrap());
        assert_eq!(decided, reason, "{a}");
        if reason.is_some_and(|r| r.starts_with("consent_granted")) {
            expect_sent.push(page);
        }
        app.drain_outbox().await;
    };

    step(None).await;
    conflict(patch_config(&app, "ga4", &id(&c), json!({"status": "paused"})).await);
    conflict(patch_config(&app, "ga4", &id(&c), json!({"status": "error"})).await);
    for (to, ok, reason) in [
        ("active", true, Some("consent_granted:analytics")),
        ("paused", true, Some("denied:config_paused")),
        ("draft", false, Some("denied:config_paused")),
        ("active", true, Some("consent_granted:analytics")),
        ("error", false, Some("consent_granted:analytics")),
    ] {
        let got = patch_config(&app, "ga4", &id(&c), json!({"status": to})).await;
        if ok {
            assert_eq!((got.0, got.1["status"].as_str()), (StatusCode::OK, Some(to)), "{}", got.1);
        } else {
            conflict(got);
        }
        step(reason).await;
    }
    // Created paused: refused, as for every provider.
    conflict(
        app.post(
            &configs_path(&app, "ga4"),
            &app.admin,
            json!({"display_name": "GA4 2", "measurement_id": "G-TEST123", "status": "paused",
                   "credentials": {"api_secret_ref": secret}}),
        )
        .await,
    );
    // Decommissioned is final, and kept for the record.
    let path = format!("{}/{}", configs_path(&app, "ga4"), id(&c));
    let (s, gone) = app.delete(&path, &app.admin).await;
    assert_eq!((s, gone["status"].as_str()), (StatusCode::OK, Some("decommissioned")), "{gone}");
    step(None).await;
    conflict(patch_config(&app, "ga4", &id(&c), json!({"status": "active"})).await);
    conflict(patch_config(&app, "ga4", &id(&c), json!({"display_name": "again"})).await);
    let (s, still) = app.get(&path, &app.auditor).await;
    assert_eq!((s, still["status"].as_str()), (StatusCode::OK, Some("decommissioned")));

    assert_eq!(pages_sent(&fakes).await, expect_sent, "GA4 got the events of the active config only");
    assert_eq!(expect_sent.len(), 3);
    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    let actions: Vec<&str> = log["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"ga4_config.create") && actions.contains(&"ga4_config.update"), "{actions:?}");
}

/// The per-provider events endpoint `/analytics/ga4/events` forwards to GA4's configs only; the
/// same event through `/events` reaches every provider (so the others were reachable).
#[tokio::test]
async fn the_ga4_events_endpoint_reaches_ga4_only() {
    let (app, fakes, keys) = setup().await;
    let (_dir, secret) = secret_file();
    let g = ga4(&app, &fakes, &secret, json!({})).await;
    site::plausible(&app, &fakes, json!({})).await;
    site::umami(&app, &fakes, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;

    let only = format!("{}/ga4-only", site::ORIGIN);
    let a = browser_pageview(&app, &keys, "/analytics/ga4/events", &v, &only).await;
    let decisions = a["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{a}");
    assert_eq!(
        (decisions[0]["provider"].as_str(), decisions[0]["config_id"].as_str()),
        (Some("ga4"), Some(id(&g).as_str()))
    );
    assert_eq!(decisions[0]["reason"], "consent_granted:analytics");
    app.drain_outbox().await;
    delivery_in(&app, &id(&a), &id(&g), "delivered").await;
    assert_eq!(pages_sent(&fakes).await, std::slice::from_ref(&only));
    assert_eq!(ga4_requests(&fakes).await[0]["body"]["client_id"], v.as_str());
    for other in ["plausible", "umami", "posthog"] {
        assert!(fakes.received_by(other).await.is_empty(), "{other} got the GA4-only event");
    }

    let everyone = format!("{}/everyone", site::ORIGIN);
    let a = browser_pageview(&app, &keys, "/events", &v, &everyone).await;
    assert_eq!(a["decisions"].as_array().unwrap().len(), 3, "{a}");
    app.drain_outbox().await;
    assert_eq!(pages_sent(&fakes).await, [only, everyone]);
    for other in ["plausible", "umami"] {
        assert_eq!(fakes.received_by(other).await.len(), 1, "{other}");
    }
    // A provider the gateway does not know is no endpoint.
    let (s, _) = site::post_from_browser(&app, "/analytics/matomo/events", &keys.public_key, site::pageview(&v)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
