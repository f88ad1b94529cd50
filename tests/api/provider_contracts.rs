//! Where a provider's answer or its database could turn a delivery into silent loss or into
//! duplicates, against fakes that behave like the real services there (providers-sources.md).

use consentgate::providers::{Answer, Headers, Outcome, Provider, ProviderResponse, umami::Umami};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    fakes::{FakeProviders, WEBSITE_ID},
    helpers::TestApp,
    site::{self, Site, VISITOR_IP, delivery_in, track, visitor},
};

async fn setup() -> (TestApp, FakeProviders, Site) {
    site::setup_with(|s| s.delivery.max_attempts = 3).await
}

/// Runs the outbox (every backoff waited out) until nothing is left to try, then the one
/// delivery of `event_id` to `config_id`, asserted to be in `status`.
async fn drained(app: &TestApp, event_id: &str, config_id: &str, status: &str) -> Value {
    app.drain_outbox_with_retries().await;
    delivery_in(app, event_id, config_id, status).await
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

fn outcomes(received: &[Value]) -> Vec<&str> {
    received.iter().map(|r| r["outcome"].as_str().unwrap()).collect()
}

/// An `instance_url` that reaches an HTML catch-all (`200` for every path) is neither Plausible
/// nor Umami: the event is retried and ends in the dead letters, visibly, never `delivered`.
#[tokio::test]
async fn a_catch_all_page_at_a_providers_url_is_never_a_delivery() {
    let (app, fakes, keys) = setup().await;
    let wrong = json!({"instance_url": format!("{}/www", fakes.base)});
    let p = site::plausible(&app, &fakes, wrong.clone()).await;
    let u = site::umami(&app, &fakes, wrong).await;
    let (s, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    for (provider, config, answer) in
        [("plausible", &p, "not Plausible's `ok`"), ("umami", &u, "not Umami's collect answer")]
    {
        let d = drained(&app, &id(&accepted), &id(config), "dead").await;
        assert_eq!((d["attempts"].as_i64(), d["last_status"].as_i64()), (Some(3), Some(200)), "{d}");
        assert!(d["last_error"].as_str().unwrap().contains(answer), "{d}");
        let usage = &site::config(&app, provider, &id(config)).await["usage"];
        assert_eq!((usage["events_sent"].as_i64(), usage["events_failed"].as_i64()), (Some(0), Some(1)), "{usage}");
        assert!(usage["last_error"].as_str().unwrap().contains("instance_url"), "{usage}");
    }
    let got = fakes.received().await;
    assert_eq!(outcomes(&got), ["ignored"; 6], "only the catch-all answered: {got:#?}");
    let mut paths: Vec<&str> = got.iter().map(|r| r["path"].as_str().unwrap()).collect();
    paths.dedup();
    paths.sort();
    paths.dedup();
    assert_eq!(paths, ["/www/api/event", "/www/api/send"]);
}

/// Umami 3 counts a name's length in UTF-16 code units (zod 4): 30 emoji are 60, over its 50.
/// The gateway decides so at ingest, instead of allowing and then dead-lettering a 400.
#[tokio::test]
async fn an_event_name_umami_would_refuse_in_utf16_is_denied_at_ingest() {
    let (app, fakes, keys) = setup().await;
    let name = "😀".repeat(30);
    // The fake refuses it as Umami does.
    let direct = app
        .http
        .post(format!("{}/api/send", fakes.umami_url()))
        .json(&json!({"type": "event", "payload": {"website": WEBSITE_ID, "url": "/", "name": name}}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), StatusCode::BAD_REQUEST);
    let u = site::umami(&app, &fakes, json!({})).await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let body = json!({"event_name": name, "page_url": site::PAGE, "anonymous_id": visitor()});
    let (s, accepted) = track(&app, &keys, body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let decision = accepted["decisions"].as_array().unwrap().iter().find(|d| d["config_id"] == id(&u)).unwrap();
    assert_eq!(
        (decision["decision"].as_str(), decision["reason"].as_str()),
        (Some("deny"), Some("denied:event_name_too_long")),
        "{decision}"
    );
    // Plausible (120 characters, counted as Elixir does) takes it; Umami gets no delivery at all.
    drained(&app, &id(&accepted), &id(&p), "delivered").await;
    let path = format!("/v1/tenants/{}/deliveries?event={}", app.tenant, id(&accepted));
    let (_, page) = app.get(&path, &app.auditor).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(fakes.received_by("umami").await.len(), 1, "only the direct request above");
}

/// Umami on PostgreSQL stores the event row, then fails on `event_data.number_value
/// numeric(19,4)` (or on a date-shaped text that is no date) with a 500; retried, the event would
/// be stored again and again. The gateway sends such numbers as text, leaves such texts out and
/// cuts hosts to their column, so Umami stores the event once.
#[tokio::test]
async fn large_numbers_and_long_hosts_reach_umami_once() {
    let (app, fakes, keys) = setup().await;
    let u = site::umami(&app, &fakes, json!({})).await;
    let host = format!("{}.{}.example.org", "a".repeat(60), "b".repeat(60));
    let body = json!({
        "event_name": "purchase", "anonymous_id": visitor(),
        "page_url": format!("https://{host}/checkout"),
        "event_properties": {"ts_us": 1_795_694_400_000_000_i64, "order": {"id64": 18_446_744_073_709_551_615_u64},
                             "a.b": 1, "a": {"b": 2}, "when": "2026-13-01T00:00:00"}
    });
    let (s, accepted) = track(&app, &keys, body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let d = drained(&app, &id(&accepted), &id(&u), "delivered").await;
    let warning = d["warning"].as_str().unwrap();
    for change in [
        "\"ts_us\" sent as text",
        "\"order.id64\" sent as text",
        "hostname cut",
        "\"a.b\" given twice",
        "\"when\" left out",
    ] {
        assert!(warning.contains(change), "{change} not in {warning}");
    }
    let got = fakes.received_by("umami").await;
    assert_eq!(outcomes(&got), ["stored"], "stored once, never a 500 after storing: {got:#?}");
    let payload = &got[0]["body"]["payload"];
    assert_eq!(payload["data"]["ts_us"], "1795694400000000");
    assert_eq!(payload["hostname"].as_str().unwrap().len(), 100);
}

/// The fake answers an overflow after the event row as Umami does (500, the serialised Prisma
/// error naming `eventData.createMany`), and that answer is classified as not retryable.
#[tokio::test]
async fn umamis_500_after_storing_is_not_retried() {
    let fakes = FakeProviders::start().await;
    let http = reqwest::Client::new();
    let payload = |data: Value| {
        json!({"type": "event", "payload": {"website": WEBSITE_ID, "url": "https://www.example.com/", "name": "buy",
                                           "userAgent": site::CHROME, "data": data}})
    };
    let post = |body: Value| http.post(format!("{}/api/send", fakes.umami_url())).json(&body).send();
    let after = post(payload(json!({"ts_us": 1_795_694_400_000_000_i64}))).await.unwrap();
    assert_eq!(after.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = after.bytes().await.unwrap();
    let classified = Umami::classify(&ProviderResponse { status: 500, headers: &Headers::default(), body: &body }, 1);
    assert!(
        matches!(&classified, Answer::All(Outcome::Dead { reason }) if reason.contains("stored the event")),
        "{classified:?}"
    );
    // An overflow before the event row stores nothing of the event: that 500 stays a retry.
    let mut long_id = payload(json!({}));
    long_id["payload"]["id"] = json!("x".repeat(51));
    let before = post(long_id).await.unwrap();
    assert_eq!(before.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = before.bytes().await.unwrap();
    let classified = Umami::classify(&ProviderResponse { status: 500, headers: &Headers::default(), body: &body }, 1);
    assert!(matches!(classified, Answer::All(Outcome::Retry { .. })), "{classified:?}");
    assert_eq!(outcomes(&fakes.received_by("umami").await), ["stored_then_failed", "failed"]);
}

/// Umami's own 403 (the visitor's IP in `IGNORE_IP`) drops that event; a 403 from an auth proxy
/// in front of Umami is an authentication failure and puts the config into `error`.
#[tokio::test]
async fn umamis_own_403_drops_the_event_but_a_proxys_403_is_an_auth_failure() {
    let (app, fakes, keys) = setup().await;
    let u = site::umami(&app, &fakes, json!({})).await;
    fakes.behaviour(json!({"umami": {"ignore_ips": [VISITOR_IP]}})).await;
    let (_, ignored) = track(&app, &keys, site::pageview(&visitor())).await;
    let d = drained(&app, &id(&ignored), &id(&u), "dropped").await;
    assert!(d["warning"].as_str().unwrap().contains("IGNORE_IP"), "{d}");
    let config = site::config(&app, "umami", &id(&u)).await;
    assert_eq!((config["status"].as_str(), config["usage"]["events_dropped"].as_i64()), (Some("active"), Some(1)));

    // An auth proxy now answers 403 with its own page.
    fakes.behaviour(json!({"umami": {"ignore_ips": [], "status": 403}})).await;
    let (_, proxied) = track(&app, &keys, site::pageview(&visitor())).await;
    app.drain_outbox_with_retries().await;
    let config = site::config(&app, "umami", &id(&u)).await;
    assert_eq!(config["status"], "error", "{config}");
    assert!(config["status_reason"].as_str().unwrap().contains("403"), "{config}");
    let d = drained(&app, &id(&proxied), &id(&u), "pending").await;
    assert!(d["last_error"].as_str().unwrap().contains("403"), "{d}");
}
