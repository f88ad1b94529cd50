//! Post once, forward safely: what the fake providers (a separate process) received, and what the
//! delivery log says, for each way an event can go. Each test drives the outbox itself
//! ([`TestApp::drain_outbox`]), so what it asserts was not sent had every chance to be.

use consentgate::outbox::Pass;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    fakes::{FakeProviders, SITE, WEBSITE_ID},
    helpers::send,
    site::{self, CHROME, PAGE, VISITOR_IP, delivery_in, settled, setup, setup_with, track, visitor},
};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

fn decision_for<'a>(accepted: &'a Value, config_id: &str) -> &'a Value {
    accepted["decisions"].as_array().unwrap().iter().find(|d| d["config_id"] == config_id).unwrap()
}

/// The requests `provider`'s fake received, asserted to be `n`. Call it after draining the
/// outbox: nothing is in flight then, so "exactly n" is not just "not yet more".
async fn exactly(fakes: &FakeProviders, provider: &str, n: usize) -> Vec<Value> {
    let got = fakes.received_by(provider).await;
    assert_eq!(got.len(), n, "{provider} received {got:#?}");
    got
}

#[tokio::test]
async fn a_pageview_reaches_plausible_and_umami_as_the_visitor() {
    let (app, fakes, keys) = setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let u = site::umami(&app, &fakes, json!({})).await;
    let v = visitor();

    let (s, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    // No consent configuration: cookie-free providers get the event, without identifiers.
    for c in [&p, &u] {
        let d = decision_for(&accepted, &id(c));
        assert_eq!((d["decision"].as_str(), d["identity"].as_str()), (Some("allow"), Some("anonymous")), "{d}");
        assert!(d["reason"].as_str().unwrap().starts_with("anonymous:"), "{d}");
    }
    assert_eq!(app.drain_outbox().await, Pass { claimed: 2, delivered: 2, ..Pass::default() });
    let deliveries = settled(&app, &id(&accepted)).await;
    assert_eq!(deliveries.len(), 2);
    assert!(deliveries.iter().all(|d| d["status"] == "delivered" && d["attempts"] == 1), "{deliveries:#?}");

    let plausible = exactly(&fakes, "plausible", 1).await.remove(0);
    assert_eq!(plausible["outcome"], "stored", "{plausible}");
    let h = &plausible["headers"];
    assert_eq!(h["user-agent"], CHROME, "the visitor's own agent");
    assert_eq!(h["x-forwarded-for"], VISITOR_IP);
    assert_eq!(h["x-plausible-ip"], VISITOR_IP);
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(plausible["resolved_ip"], VISITOR_IP);
    assert_eq!(
        plausible["body"],
        json!({"domain": SITE, "name": "pageview", "url": PAGE, "referrer": "https://search.example.net/?q=x"})
    );

    let umami = exactly(&fakes, "umami", 1).await.remove(0);
    assert_eq!(umami["outcome"], "stored", "{umami}");
    assert_eq!(umami["headers"]["user-agent"], CHROME);
    assert!(umami["headers"].get("x-umami-cache").is_none(), "the cache token is never sent back");
    let payload = &umami["body"]["payload"];
    assert_eq!(umami["body"]["type"], "event");
    assert_eq!(payload["website"], WEBSITE_ID);
    assert_eq!(payload["hostname"], "www.example.com");
    assert_eq!(payload["url"], PAGE);
    assert_eq!(payload["title"], "Pricing");
    assert_eq!(payload["language"], "sv-SE");
    assert_eq!(payload["screen"], "1920x1080");
    assert_eq!(payload["userAgent"], CHROME);
    assert_eq!(payload["ip"], VISITOR_IP);
    assert!(payload["timestamp"].is_i64());
    assert!(payload.get("name").is_none(), "a page view has no name");
    assert!(payload.get("id").is_none(), "anonymous: no distinct id");
    assert!(!umami["body"].to_string().contains(&v), "the visitor id is not sent");

    // The stored event keeps only the network, and says where each copy went.
    let (s, event) = app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id(&accepted)), &app.auditor).await;
    assert_eq!(s, StatusCode::OK, "{event}");
    assert_eq!(event["ip_truncated"], "203.0.113.0");
    assert_eq!(event["context"]["utm"], json!({"source": "newsletter", "campaign": "bf"}));
    assert_eq!(event["context"]["agent"]["browser"], "Chrome");
    assert!(!event.to_string().contains(VISITOR_IP), "the full IP is not kept: {event}");
    for d in event["decisions"].as_array().unwrap() {
        assert_eq!(d["delivery"]["status"], "delivered", "{d}");
    }
    for (provider, c) in [("plausible", &p), ("umami", &u)] {
        let usage = &site::config(&app, provider, &id(c)).await["usage"];
        assert_eq!(usage["events_sent"], 1, "{usage}");
        assert!(usage["last_sent_at"].is_string());
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"consentgate_deliveries_total{provider="plausible",outcome="delivered"}"#,
        r#"consentgate_delivery_duration_seconds"#,
        r#"consentgate_delivery_lag_seconds"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from /metrics");
    }
}

/// "Honours Do Not Track" means not tracked: with `respect_do_not_track`, DNT or GPC stops the
/// event for every provider, the cookie-free ones included — even after "Accept all".
#[tokio::test]
async fn a_respected_do_not_track_or_gpc_sends_nothing_even_to_cookie_free_providers() {
    let (app, fakes, keys) = setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let u = site::umami(&app, &fakes, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    for (header, reason) in [("dnt", "denied:dnt"), ("sec-gpc", "denied:gpc")] {
        let (s, accepted) = send(
            app.http
                .post(app.tenant_url("/events"))
                .header("x-ingest-key", &keys.public_key)
                .header("origin", site::ORIGIN)
                .header("user-agent", CHROME)
                .header(header, "1")
                .json(&site::pageview(&v)),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
        for c in [&p, &u] {
            let d = decision_for(&accepted, &id(c));
            assert_eq!((d["decision"].as_str(), d["reason"].as_str()), (Some("deny"), Some(reason)), "{d}");
        }
        // Deliveries are created with the event, in one transaction: none means none is coming.
        let (_, page) =
            app.get(&format!("/v1/tenants/{}/deliveries?event={}", app.tenant, id(&accepted)), &app.auditor).await;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");
    }
    for (provider, c) in [("plausible", &p), ("umami", &u)] {
        assert_eq!(site::config(&app, provider, &id(c)).await["usage"]["events_denied_by_consent"], 2);
    }
}

/// Records `action` for `visitor` as a browser sending `header: 1` (`dnt` or `sec-gpc`) would.
async fn consent_under(app: &crate::helpers::TestApp, visitor: &str, action: &str, header: &str) -> Value {
    let body = json!({"visitor_id": visitor, "action": action, "revision": 1, "language": "en"});
    let (s, recorded) = send(app.public(Method::POST, &app.consent_path()).header(header, "1").json(&body)).await;
    assert_eq!(s, StatusCode::CREATED, "{recorded}");
    recorded
}

/// "Accept all" under GPC, with `respect_do_not_track` off: the banner locked marketing off, so
/// the record grants everything but marketing, and a marketing provider is refused *for GPC* —
/// on a later event that sends no signal at all — while analytics stays granted.
#[tokio::test]
async fn accept_all_under_gpc_gives_gpc_as_the_reason_marketing_is_refused() {
    let (app, fakes, keys) = setup().await;
    let ads = site::umami(&app, &fakes, json!({"display_name": "Ads", "required_category": "marketing"})).await;
    let stats = site::plausible(&app, &fakes, json!({"required_category": "analytics"})).await;
    app.publish_consent_config(json!({"respect_do_not_track": false})).await;
    let v = visitor();
    let recorded = consent_under(&app, &v, "accept_all", "sec-gpc").await;
    assert_eq!(
        recorded["choices"],
        json!({"necessary": true, "functional": true, "analytics": true, "marketing": false}),
        "{recorded}"
    );

    let (s, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let d = decision_for(&accepted, &id(&ads));
    assert_eq!((d["decision"].as_str(), d["reason"].as_str()), (Some("deny"), Some("denied:gpc")), "{d}");
    let d = decision_for(&accepted, &id(&stats));
    assert_eq!(
        (d["decision"].as_str(), d["reason"].as_str()),
        (Some("allow"), Some("consent_granted:analytics")),
        "{d}"
    );
    // The stored event says the same.
    let (_, event) = app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id(&accepted)), &app.auditor).await;
    let stored = event["decisions"].as_array().unwrap().iter().find(|d| d["config_id"] == ads["id"]).cloned();
    assert_eq!(stored.as_ref().map(|d| d["reason"].clone()), Some(json!("denied:gpc")), "{event}");
}

/// "Accept all" under DNT, with `respect_do_not_track` on: the banner locked every optional
/// category off, so a provider that needs one is refused *for DNT* on a later event without the
/// header, and a cookie-free one gets it anonymously, also for DNT.
#[tokio::test]
async fn accept_all_under_a_respected_dnt_gives_dnt_as_the_reason() {
    let (app, fakes, keys) = setup().await;
    let ads = site::umami(&app, &fakes, json!({"display_name": "Ads", "required_category": "marketing"})).await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    app.publish_consent_config(json!({"respect_do_not_track": true})).await;
    let v = visitor();
    let recorded = consent_under(&app, &v, "accept_all", "dnt").await;
    assert_eq!(
        recorded["choices"],
        json!({"necessary": true, "functional": false, "analytics": false, "marketing": false}),
        "{recorded}"
    );

    let (s, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let d = decision_for(&accepted, &id(&ads));
    assert_eq!((d["decision"].as_str(), d["reason"].as_str()), (Some("deny"), Some("denied:dnt")), "{d}");
    let d = decision_for(&accepted, &id(&p));
    assert_eq!(
        (d["decision"].as_str(), d["identity"].as_str(), d["reason"].as_str()),
        (Some("allow"), Some("anonymous"), Some("anonymous:dnt")),
        "{d}"
    );
}

#[tokio::test]
async fn identifiers_go_only_with_analytics_consent() {
    let (app, fakes, keys) = setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let u = site::umami(&app, &fakes, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let (yes, no) = (visitor(), visitor());
    app.consent(&yes, "accept_all", 1).await;
    app.consent(&no, "reject_all", 1).await;
    let signup = |v: &str| {
        json!({"event_name": "signup", "page_url": PAGE, "anonymous_id": v, "user_id": format!("user-{v}"),
               "event_properties": {"plan": "pro", "email": "ann@example.com", "customer_id": "c-9"}})
    };

    let (s, full) = track(&app, &keys, signup(&yes)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{full}");
    let d = decision_for(&full, &id(&u));
    assert_eq!((d["identity"].as_str(), d["reason"].as_str()), (Some("full"), Some("consent_granted:analytics")));
    app.drain_outbox().await;
    settled(&app, &id(&full)).await;
    let (s, anon) = track(&app, &keys, signup(&no)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{anon}");
    let d = decision_for(&anon, &id(&p));
    assert_eq!((d["identity"].as_str(), d["reason"].as_str()), (Some("anonymous"), Some("anonymous:rejected")));
    app.drain_outbox().await;
    settled(&app, &id(&anon)).await;

    let umami = exactly(&fakes, "umami", 2).await;
    let (first, second) = (&umami[0]["body"]["payload"], &umami[1]["body"]["payload"]);
    assert_eq!(first["id"], format!("user-{yes}"), "full identity: the user id");
    assert_eq!(first["data"], json!({"plan": "pro", "email": "ann@example.com", "customer_id": "c-9"}));
    assert!(second.get("id").is_none());
    assert_eq!(second["data"], json!({"plan": "pro"}), "no identifier-like properties");
    assert!(!umami[1]["body"].to_string().contains(&no));

    let plausible = exactly(&fakes, "plausible", 2).await;
    assert_eq!(plausible[1]["body"]["props"], json!({"plan": "pro"}));
    for r in &plausible {
        assert_eq!(r["body"]["name"], "signup");
        assert!(!r["body"].to_string().contains("user-"), "Plausible never gets user ids: {r}");
    }
}

#[tokio::test]
async fn a_denied_provider_receives_nothing_at_all() {
    let (app, fakes, keys) = setup().await;
    // An admin makes Umami wait for analytics consent.
    let u = site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    app.publish_consent_config(json!({})).await;
    let (refused, granted) = (visitor(), visitor());
    app.consent(&refused, "reject_all", 1).await;
    app.consent(&granted, "accept_all", 1).await;

    let (s, denied) = track(&app, &keys, site::pageview(&refused)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let d = decision_for(&denied, &id(&u));
    assert_eq!((d["decision"].as_str(), d["reason"].as_str()), (Some("deny"), Some("denied:rejected")), "{d}");
    assert!(d["identity"].is_null());

    // The positive control: the same drain sends the consenting visitor's event.
    let (_, control) = track(&app, &keys, site::pageview(&granted)).await;
    assert_eq!(app.drain_outbox().await, Pass { claimed: 1, delivered: 1, ..Pass::default() });
    delivery_in(&app, &id(&control), &id(&u), "delivered").await;
    let got = exactly(&fakes, "umami", 1).await;
    assert_eq!(got[0]["body"]["payload"]["id"], granted, "only the consenting visitor's event");

    let (_, none) = app.get(&format!("/v1/tenants/{}/deliveries?event={}", app.tenant, id(&denied)), &app.admin).await;
    assert_eq!(none["items"], json!([]), "no delivery exists for a denied decision");
    let usage = &site::config(&app, "umami", &id(&u)).await["usage"];
    assert_eq!((usage["events_denied_by_consent"].as_i64(), usage["events_sent"].as_i64()), (Some(1), Some(1)));
}

#[tokio::test]
async fn bots_are_stored_but_never_forwarded() {
    let (app, fakes, keys) = setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let (s, bot) = send(
        app.http
            .post(app.tenant_url("/events"))
            .header("x-ingest-key", &keys.public_key)
            .header("origin", site::ORIGIN)
            .header("user-agent", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)")
            .json(&site::pageview(&visitor())),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{bot}");
    assert_eq!(decision_for(&bot, &id(&p))["reason"], "denied:bot");
    // A server passing a bare library agent as its visitor's is a bot too.
    let (s, curl) =
        send(app.http.post(app.tenant_url("/events")).bearer_auth(&keys.secret_key).json(
            &json!({"event_name": "pageview", "page_url": PAGE, "user_agent": "curl/8.5.0", "ip": "198.51.100.4"}),
        ))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{curl}");
    assert_eq!(decision_for(&curl, &id(&p))["reason"], "denied:bot");

    let (_, control) = track(&app, &keys, site::pageview(&visitor())).await;
    assert_eq!(app.drain_outbox().await.claimed, 1, "only the control has a delivery");
    settled(&app, &id(&control)).await;
    exactly(&fakes, "plausible", 1).await;
    let (_, stored) = app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id(&bot)), &app.auditor).await;
    assert_eq!(stored["context"]["agent"]["bot"], true, "{stored}");
    assert_eq!(stored["decisions"][0]["delivery"], Value::Null);
}

#[tokio::test]
async fn a_server_speaks_for_its_visitor() {
    let (app, fakes, keys) = setup().await;
    site::plausible(&app, &fakes, json!({})).await;
    let (s, accepted) = send(app.http.post(app.tenant_url("/events")).bearer_auth(&keys.secret_key).json(&json!({
        "event_name": "purchase", "page_url": "https://shop.example.com/thanks", "user_agent": CHROME,
        "ip": "2001:db8:1:2::9", "revenue": {"amount": "49.90", "currency": "sek"}
    })))
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    app.drain_outbox().await;
    settled(&app, &id(&accepted)).await;
    let got = exactly(&fakes, "plausible", 1).await.remove(0);
    assert_eq!(got["headers"]["user-agent"], CHROME);
    assert_eq!(got["headers"]["x-plausible-ip"], "2001:db8:1:2::9");
    assert_eq!(got["resolved_ip"], "2001:db8:1:2::9");
    assert!(got["body"].get("revenue").is_none(), "revenue only when the config enables it");
    let (_, event) = app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id(&accepted)), &app.admin).await;
    assert_eq!(event["ip_truncated"], "2001:db8:1::");
    assert_eq!(event["revenue"], json!({"amount": 49.9, "currency": "SEK"}));
}

#[tokio::test]
async fn a_provider_that_is_down_is_retried_until_it_is_back() {
    let (app, fakes, keys) = setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    fakes.behaviour(json!({"plausible": {"fail_next": 3, "status": 503}})).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    // The first attempt fails, and the delivery waits for its backoff.
    assert_eq!(app.drain_outbox().await, Pass { claimed: 1, retried: 1, ..Pass::default() });
    let d = delivery_in(&app, &id(&accepted), &id(&p), "pending").await;
    assert_eq!((d["attempts"].as_i64(), d["last_status"].as_i64()), (Some(1), Some(503)), "{d}");
    let retries = app.drain_outbox_with_retries().await;
    assert_eq!(retries, Pass { claimed: 3, retried: 2, delivered: 1, ..Pass::default() });
    let d = delivery_in(&app, &id(&accepted), &id(&p), "delivered").await;
    assert_eq!(d["attempts"], 4, "{d}");
    assert_eq!(d["last_status"], 202);
    let got = exactly(&fakes, "plausible", 4).await;
    let outcomes: Vec<&str> = got.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["failed", "failed", "failed", "stored"]);
    // Every retry is the same request.
    assert!(
        got.windows(2)
            .all(|w| w[0]["body"] == w[1]["body"] && w[0]["headers"]["user-agent"] == w[1]["headers"]["user-agent"])
    );
    let usage = &site::config(&app, "plausible", &id(&p)).await["usage"];
    assert_eq!((usage["events_sent"].as_i64(), usage["events_failed"].as_i64()), (Some(1), Some(0)));
    // `last_error` is the config's current trouble: the delivery that went through cleared it.
    assert!(usage["last_error"].is_null() && usage["last_error_at"].is_null(), "{usage}");
}

#[tokio::test]
async fn retries_end_in_the_dead_letters_at_the_retry_horizon() {
    // `max_attempts` is deprecated: still accepted, ignored.
    let (app, fakes, keys) = setup_with(|s| {
        s.delivery.max_attempts = Some(2);
        s.delivery.circuit_failures = 3;
    })
    .await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    fakes.behaviour(json!({"plausible": {"status": 500}})).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    // Retried past the old attempt count until the circuit opens; nothing is dead.
    assert_eq!(app.drain_outbox_with_retries().await, Pass { claimed: 3, retried: 3, ..Pass::default() });
    let d = delivery_in(&app, &id(&accepted), &id(&p), "pending").await;
    assert_eq!(d["attempts"], 3);
    // Just before the horizon (72 h after the event arrived) it is still tried (as the open
    // circuit's probe); past it, dead.
    let arrived: chrono::DateTime<chrono::Utc> = d["created_at"].as_str().unwrap().parse().unwrap();
    let horizon = chrono::Duration::hours(72);
    let before = app.run_outbox_at(arrived + horizon - chrono::Duration::minutes(1)).await;
    assert_eq!(before, Pass { claimed: 1, retried: 1, ..Pass::default() });
    let after = app.run_outbox_at(arrived + horizon + chrono::Duration::seconds(1)).await;
    assert_eq!(after, Pass { expired: 1, ..Pass::default() });
    let d = delivery_in(&app, &id(&accepted), &id(&p), "dead").await;
    assert_eq!(d["attempts"], 4);
    let why = d["last_error"].as_str().unwrap();
    assert!(why.starts_with("retry horizon reached (72 h after the event arrived); last: "), "{d}");
    assert!(why.contains("500"), "{d}");
    let usage = &site::config(&app, "plausible", &id(&p)).await["usage"];
    assert_eq!((usage["events_failed"].as_i64(), usage["events_retrying"].as_i64()), (Some(1), Some(0)), "{usage}");
    let (_, dead) = app.get(&format!("/v1/tenants/{}/deliveries?status=dead", app.tenant), &app.auditor).await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 1);
    assert_eq!(dead["items"][0]["decision"]["decision"], "allow", "the log shows the decision behind it");
}

#[tokio::test]
async fn a_400_is_a_dead_letter_with_the_providers_message_and_can_be_replayed() {
    let (app, fakes, keys) = setup().await;
    // A website the Umami instance does not know.
    let unknown = "0b8e9c3a-51f0-4d5c-8a52-8f1f6f5b7c11";
    let u = site::umami(&app, &fakes, json!({"website_id": unknown})).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    assert_eq!(app.drain_outbox_with_retries().await, Pass { claimed: 1, dead: 1, ..Pass::default() });
    let d = delivery_in(&app, &id(&accepted), &id(&u), "dead").await;
    assert_eq!((d["attempts"].as_i64(), d["last_status"].as_i64()), (Some(1), Some(400)), "dead at once: {d}");
    assert!(d["last_error"].as_str().unwrap().contains("Website not found."), "{d}");
    let usage = &site::config(&app, "umami", &id(&u)).await["usage"];
    assert_eq!(usage["events_failed"], 1);
    assert!(usage["last_error"].as_str().unwrap().contains("Website not found."));

    // The admin registers the website and replays the dead letters.
    fakes.behaviour(json!({"umami": {"websites": [WEBSITE_ID, unknown]}})).await;
    let path = format!("{}/{}/replay-dead-letters", site::configs_path(&app, "umami"), id(&u));
    assert_eq!(app.post(&path, &app.auditor, json!({})).await.0, StatusCode::FORBIDDEN);
    let (s, replayed) = app.post(&path, &app.admin, json!({})).await;
    assert_eq!((s, replayed["replayed"].as_u64()), (StatusCode::OK, Some(1)), "{replayed}");
    app.drain_outbox().await;
    let d = delivery_in(&app, &id(&accepted), &id(&u), "delivered").await;
    assert_eq!(d["attempts"], 1, "attempts start again");
    let stored = fakes.stored("umami").await;
    assert_eq!(stored.len(), 1);
    // The full IP was erased when the delivery first ended; the replay carries the network.
    assert_eq!(stored[0]["body"]["payload"]["ip"], "203.0.113.0");
    // A delivered delivery cannot be replayed.
    let got =
        app.post(&format!("/v1/tenants/{}/deliveries/{}/replay", app.tenant, id(&d)), &app.admin, json!({})).await;
    crate::helpers::assert_error(&got, StatusCode::CONFLICT, "conflict", None);
}

#[tokio::test]
async fn repeated_401s_put_the_config_in_error_until_an_admin_reactivates_it() {
    let (app, fakes, keys) = setup().await;
    let u = site::umami(&app, &fakes, json!({})).await;
    fakes.behaviour(json!({"umami": {"status": 401}})).await;
    let (_, first) = track(&app, &keys, site::pageview(&visitor())).await;
    // Retried like any failure, until the third 401 puts the config in error.
    assert_eq!(app.drain_outbox_with_retries().await, Pass { claimed: 3, retried: 3, ..Pass::default() });
    let config = site::config(&app, "umami", &id(&u)).await;
    assert_eq!(config["status"], "error", "{config}");
    assert!(config["status_reason"].as_str().unwrap().contains("401"), "{config}");
    let tries = fakes.received_by("umami").await.len();
    assert_eq!(tries, 3, "auth_failures_before_error = 3");

    // Events keep being accepted and decided; their deliveries wait, however long.
    let (s, second) = track(&app, &keys, site::pageview(&visitor())).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(decision_for(&second, &id(&u))["decision"], "allow");
    assert_eq!(app.drain_outbox_with_retries().await, Pass::default(), "nothing is claimed for a config in error");
    assert_eq!(fakes.received_by("umami").await.len(), tries, "nothing is sent for a config in error");
    let d = delivery_in(&app, &id(&first), &id(&u), "pending").await;
    assert!(d["last_error"].as_str().unwrap().contains("401"));
    delivery_in(&app, &id(&second), &id(&u), "pending").await;

    // Fixed: the admin sets it active again, and both go out at once (no backoff left to wait).
    fakes.behaviour(json!({"umami": {"status": null}})).await;
    let (s, c) = site::patch_config(&app, "umami", &id(&u), json!({"status": "active"})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert!(c["status_reason"].is_null());
    assert_eq!(app.drain_outbox().await, Pass { claimed: 2, delivered: 2, ..Pass::default() });
    delivery_in(&app, &id(&first), &id(&u), "delivered").await;
    delivery_in(&app, &id(&second), &id(&u), "delivered").await;
    assert_eq!(fakes.stored("umami").await.len(), 2);
}

#[tokio::test]
async fn silently_dropped_events_show_as_dropped_not_delivered() {
    let (app, fakes, keys) = setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let u = site::umami(&app, &fakes, json!({})).await;
    // A monitoring agent the gateway takes for a browser, but both providers for a bot.
    let agent = format!("{CHROME} SiteMonitor/2.1");
    let (s, accepted) = send(
        app.http
            .post(app.tenant_url("/events"))
            .header("x-ingest-key", &keys.public_key)
            .header("origin", site::ORIGIN)
            .header("user-agent", &agent)
            .json(&site::pageview(&visitor())),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(app.drain_outbox().await, Pass { claimed: 2, dropped: 2, ..Pass::default() });
    let dp = delivery_in(&app, &id(&accepted), &id(&p), "dropped").await;
    assert!(dp["warning"].as_str().unwrap().contains("x-plausible-dropped"), "{dp}");
    assert!(dp["delivered_at"].is_null());
    let du = delivery_in(&app, &id(&accepted), &id(&u), "dropped").await;
    assert!(du["warning"].as_str().unwrap().contains("beep"), "{du}");
    for (provider, c) in [("plausible", &p), ("umami", &u)] {
        let usage = &site::config(&app, provider, &id(c)).await["usage"];
        assert_eq!(
            (usage["events_dropped"].as_i64(), usage["events_sent"].as_i64()),
            (Some(1), Some(0)),
            "{provider}: {usage}"
        );
    }
    let (_, dropped) = app.get(&format!("/v1/tenants/{}/deliveries?status=dropped", app.tenant), &app.auditor).await;
    assert_eq!(dropped["items"].as_array().unwrap().len(), 2);
    // A dropped delivery can be replayed (e.g. after registering the site).
    let (s, r) =
        app.post(&format!("/v1/tenants/{}/deliveries/{}/replay", app.tenant, id(&dp)), &app.admin, json!({})).await;
    assert_eq!((s, r["status"].as_str(), r["attempts"].as_i64()), (StatusCode::OK, Some("pending"), Some(0)), "{r}");
    assert_eq!(app.drain_outbox().await.claimed, 1);
    // It is sent again — but the event was stored unlinkable (no consent configuration, so no
    // identifiers were allowed): the user agent went with the first delivery, and the replay
    // goes without one (and with the truncated IP).
    let resent = exactly(&fakes, "plausible", 2).await.remove(1);
    assert!(resent["headers"].get("user-agent").is_none(), "{resent}");
    assert_eq!(resent["body"]["name"], "pageview", "{resent}");
}

#[tokio::test]
async fn an_unregistered_plausible_site_is_a_drop_with_a_warning() {
    let (app, fakes, keys) = setup().await;
    let p =
        site::plausible(&app, &fakes, json!({"site_id": "example.org", "allowed_domains": ["*.example.com"]})).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    app.drain_outbox().await;
    let d = delivery_in(&app, &id(&accepted), &id(&p), "dropped").await;
    assert_eq!(d["last_status"], 202);
    assert_eq!(fakes.received_by("plausible").await[0]["reason"], "unknown domain");
}

#[tokio::test]
async fn a_repeated_post_creates_one_event_and_one_delivery_per_config() {
    let (app, fakes, keys) = setup().await;
    site::plausible(&app, &fakes, json!({})).await;
    site::umami(&app, &fakes, json!({})).await;
    let mut body = site::pageview(&visitor());
    body["idempotency_key"] = json!("order-1001");
    let (s1, first) = track(&app, &keys, body.clone()).await;
    let (s2, again) = track(&app, &keys, body).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::OK));
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["decisions"], first["decisions"], "the first event's decisions");

    // Without a key, the same session's event at the same client time is the same event — for
    // an event stored with identifiers (a visitor who accepted; see
    // `after_reject_all_no_stored_event_can_be_joined_to_the_visitor` for the others).
    app.publish_consent_config(json!({})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let at = chrono::Utc::now().to_rfc3339();
    let beacon =
        json!({"event_name": "scroll", "page_url": PAGE, "session_id": "sess-1", "visitor_id": v, "occurred_at": at});
    let (s1, b1) = track(&app, &keys, beacon.clone()).await;
    let (s2, b2) = track(&app, &keys, beacon).await;
    assert_eq!((s1, s2, b1["id"].clone()), (StatusCode::ACCEPTED, StatusCode::OK, b2["id"].clone()));

    assert_eq!(app.drain_outbox().await, Pass { claimed: 4, delivered: 4, ..Pass::default() });
    for e in [&first, &b1] {
        assert_eq!(settled(&app, &id(e)).await.len(), 2, "one delivery per config");
    }
    exactly(&fakes, "plausible", 2).await;
    exactly(&fakes, "umami", 2).await;
}

#[tokio::test]
async fn the_per_provider_endpoint_sends_to_that_provider_only() {
    let (app, fakes, keys) = setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let u = site::umami(&app, &fakes, json!({})).await;
    let (s, accepted) =
        site::post_from_browser(&app, "/analytics/umami/events", &keys.public_key, site::pageview(&visitor())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    let decisions = accepted["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1);
    assert_eq!(decisions[0]["config_id"], u["id"]);
    // The control for Plausible: a normal event after it.
    let (_, control) = track(&app, &keys, site::pageview(&visitor())).await;
    assert_eq!(app.drain_outbox().await, Pass { claimed: 3, delivered: 3, ..Pass::default() });
    delivery_in(&app, &id(&accepted), &id(&u), "delivered").await;
    delivery_in(&app, &id(&control), &id(&p), "delivered").await;
    exactly(&fakes, "plausible", 1).await;
    let (s, _) =
        site::post_from_browser(&app, "/analytics/ga5/events", &keys.public_key, site::pageview(&visitor())).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn values_are_fitted_to_each_providers_limits_and_the_changes_are_logged() {
    let (app, fakes, keys) = setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let u = site::umami(&app, &fakes, json!({})).await;
    let mut props = serde_json::Map::new();
    for i in 0..34 {
        props.insert(format!("p{i:02}"), json!(i));
    }
    props.insert("essay".into(), json!("ä".repeat(1200)));
    let body = json!({
        "event_name": "read", "page_url": format!("{PAGE}&utm_content={}", "c".repeat(300)),
        "user_id": "u".repeat(80), "anonymous_id": visitor(), "event_properties": props
    });
    let (s, accepted) = track(&app, &keys, body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    app.drain_outbox().await;
    let dp = delivery_in(&app, &id(&accepted), &id(&p), "delivered").await;
    let du = delivery_in(&app, &id(&accepted), &id(&u), "delivered").await;
    assert!(dp["warning"].as_str().unwrap().contains("beyond Plausible's 30"), "{dp}");
    assert!(dp["warning"].as_str().unwrap().contains("2000 bytes"), "{dp}");
    assert!(du["warning"].as_str().unwrap().contains("500 characters"), "{du}");
    assert!(du["warning"].as_str().unwrap().contains("utm_content"), "{du}");
    let plausible = fakes.received_by("plausible").await;
    assert_eq!(plausible[0]["outcome"], "stored", "never a 400: {}", plausible[0]["reason"]);
    assert_eq!(plausible[0]["body"]["props"].as_object().unwrap().len(), 30);
    let umami = fakes.received_by("umami").await;
    assert_eq!(umami[0]["outcome"], "stored", "never a 500 after storing: {}", umami[0]["reason"]);
}

#[tokio::test]
async fn decommissioning_a_config_ends_its_waiting_deliveries() {
    let (app, fakes, keys) = setup().await;
    let u = site::umami(&app, &fakes, json!({})).await;
    let (s, c) = site::patch_config(&app, "umami", &id(&u), json!({"status": "paused"})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (_, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    assert_eq!(decision_for(&accepted, &id(&u))["reason"], "denied:config_paused");
    let (s, c) = app.delete(&format!("{}/{}", site::configs_path(&app, "umami"), id(&u)), &app.admin).await;
    assert_eq!((s, c["status"].as_str()), (StatusCode::OK, Some("decommissioned")));
    let (_, after) = track(&app, &keys, site::pageview(&visitor())).await;
    assert_eq!(after["decisions"], json!([]), "a decommissioned config is not considered");
    assert_eq!(app.drain_outbox().await, Pass::default(), "nothing to send");
    assert!(fakes.received().await.is_empty());
}

#[tokio::test]
async fn deliveries_are_listed_by_status_config_and_event_with_cursor_pages() {
    let (app, fakes, keys) = setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    site::umami(&app, &fakes, json!({})).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (_, a) = track(&app, &keys, site::pageview(&visitor())).await;
        ids.push(id(&a));
    }
    assert_eq!(app.drain_outbox().await.delivered, 6);
    for e in &ids {
        settled(&app, e).await;
    }
    let base = format!("/v1/tenants/{}/deliveries", app.tenant);
    let (_, page1) = app.get(&format!("{base}?config={}&limit=2", id(&p)), &app.auditor).await;
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app.get(&format!("{base}?config={}&limit=2&cursor={cursor}", id(&p)), &app.auditor).await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());
    let (_, delivered) = app.get(&format!("{base}?status=delivered"), &app.auditor).await;
    assert_eq!(delivered["items"].as_array().unwrap().len(), 6);
    let bad = app.get(&format!("{base}?status=lost"), &app.auditor).await;
    crate::helpers::assert_error(&bad, StatusCode::BAD_REQUEST, "bad_request", None);
}

/// A withdrawal whose time is just before the event's but that was not committed when ingest
/// decided (on PostgreSQL the ingest writer does not wait for consent writes): the event is
/// decided again before it is sent, and not sent where the config needs the withdrawn category.
/// PostgreSQL only (`.ci/run`'s PostgreSQL step): on SQLite a record is timed under the write lock
/// the ingest writer reads under, so one older than the event was seen.
#[tokio::test]
async fn a_withdrawal_committed_after_the_ingest_decision_still_stops_the_event() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    if crate::helpers::backend() == "sqlite" {
        eprintln!("PostgreSQL only: the race needs a writer that does not share the consent write lock");
        return;
    }
    let (app, fakes, keys) = setup().await;
    app.publish_consent_config(json!({})).await;
    let needs_analytics = site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&v)).await;
    assert_eq!(decision_for(&accepted, &id(&needs_analytics))["reason"], "consent_granted:analytics", "{accepted}");
    // The withdrawal as the race leaves it: stored after the decision, its time a moment before
    // the event's.
    let withdrawal = app.consent(&v, "withdraw", 1).await;
    let (_, event) = app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id(&accepted)), &app.admin).await;
    let received: chrono::DateTime<chrono::Utc> = event["received_at"].as_str().unwrap().parse().unwrap();
    let record = uuid::Uuid::parse_str(withdrawal["record_id"].as_str().unwrap()).unwrap();
    entity::consent_record::Entity::update_many()
        .col_expr(entity::consent_record::Column::CreatedAt, Expr::value(received - chrono::Duration::milliseconds(1)))
        .filter(entity::consent_record::Column::Id.eq(record))
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(app.drain_outbox().await, Pass { claimed: 1, dead: 1, ..Pass::default() });
    let ended = delivery_in(&app, &id(&accepted), &id(&needs_analytics), "dead").await;
    assert!(ended["last_error"].as_str().unwrap().contains("consent changed before delivery"), "{ended}");
    assert!(fakes.stored("umami").await.is_empty());
}

/// Withdrawal takes effect for everything after it (GDPR Art. 7(3)), including deliveries still
/// waiting for a provider: they go without identifiers, or not at all where the config needs the
/// withdrawn category.
#[tokio::test]
async fn a_withdrawal_reaches_deliveries_still_waiting() {
    let (app, fakes, keys) = setup().await;
    app.publish_consent_config(json!({})).await;
    let cookie_free = site::plausible(&app, &fakes, json!({})).await;
    let needs_analytics = site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    fakes.behaviour(json!({"plausible": {"status": 503}, "umami": {"status": 503}})).await;
    let mut event = site::pageview(&v);
    // With full identity Plausible would get `customer_id` among its props.
    event["event_properties"] = json!({"customer_id": "u-secret-1", "plan": "pro"});
    let (_, accepted) = track(&app, &keys, event).await;
    for config in [&cookie_free, &needs_analytics] {
        assert_eq!(decision_for(&accepted, &id(config))["identity"], "full", "{accepted}");
    }
    // The provider is down; the visitor withdraws; the provider comes back.
    assert_eq!(app.drain_outbox().await, Pass { claimed: 2, retried: 2, ..Pass::default() });
    for d in site::deliveries_of(&app, &id(&accepted)).await {
        assert_eq!((d["status"].as_str(), d["attempts"].as_i64()), (Some("pending"), Some(1)), "{d}");
    }
    app.consent(&v, "withdraw", 1).await;
    fakes.behaviour(json!({"plausible": {"status": null}, "umami": {"status": null}})).await;
    assert_eq!(app.drain_outbox_with_retries().await, Pass { claimed: 2, delivered: 1, dead: 1, ..Pass::default() });

    let sent = delivery_in(&app, &id(&accepted), &id(&cookie_free), "delivered").await;
    let stored = fakes.stored("plausible").await;
    assert_eq!(stored.len(), 1, "{sent}");
    assert!(!stored[0].to_string().contains("u-secret-1"), "sent without identifiers: {}", stored[0]);
    assert_eq!(stored[0]["body"]["props"]["plan"], "pro", "{}", stored[0]);
    let cancelled = delivery_in(&app, &id(&accepted), &id(&needs_analytics), "dead").await;
    assert!(cancelled["last_error"].as_str().unwrap().contains("consent changed before delivery"), "{cancelled}");
    assert!(fakes.stored("umami").await.is_empty(), "nothing reached the provider needing analytics");
    // A consent denial at send time counts as one, not as a failure of the config.
    let usage = &site::config(&app, "umami", &id(&needs_analytics)).await["usage"];
    assert_eq!((usage["events_failed"].as_i64(), usage["events_denied_by_consent"].as_i64()), (Some(0), Some(1)));
    assert!(usage["last_error"].as_str().unwrap().contains("503"), "the provider's last error stays: {usage}");
}

/// A replay never sends more than consent allows now. A delivery the visitor's withdrawal ended
/// is never sent again; a dead letter whose visitor withdrew after it died is decided again when
/// replayed — also on a site whose consent-lookup id is not its analytics id, although the
/// delivery lost the lookup id when it first ended.
#[tokio::test]
async fn a_replay_never_sends_more_than_consent_allows_now() {
    let (app, fakes, keys) = setup().await;
    app.publish_consent_config(json!({})).await;
    // A website the Umami instance does not know yet: its deliveries die with a 400.
    let unknown = "0b8e9c3a-51f0-4d5c-8a52-8f1f6f5b7c11";
    let u = site::umami(&app, &fakes, json!({"website_id": unknown, "required_category": "analytics"})).await;
    let (v, w) = (visitor(), visitor());
    let mut events = Vec::new();
    for x in [&v, &w] {
        app.consent(x, "accept_all", 1).await;
        let mut event = site::pageview(&format!("analytics-{x}"));
        event["visitor_id"] = json!(x);
        let (s, accepted) = track(&app, &keys, event).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
        assert_eq!(decision_for(&accepted, &id(&u))["identity"], "full", "{accepted}");
        events.push(id(&accepted));
    }
    // Umami is down; w withdraws; Umami answers again: w's delivery ends by consent, v's dies
    // on the unknown website. Then v withdraws too.
    fakes.behaviour(json!({"umami": {"status": 503}})).await;
    app.drain_outbox().await;
    app.consent(&w, "withdraw", 1).await;
    fakes.behaviour(json!({"umami": {"status": null}})).await;
    app.drain_outbox_with_retries().await;
    let died = delivery_in(&app, &events[0], &id(&u), "dead").await;
    assert!(died["last_error"].as_str().unwrap().contains("Website not found."), "{died}");
    let ended = delivery_in(&app, &events[1], &id(&u), "dead").await;
    assert!(ended["last_error"].as_str().unwrap().contains("consent changed before delivery"), "{ended}");
    app.consent(&v, "withdraw", 1).await;

    // The admin registers the website and replays: w's is not replayed, one by one or all.
    fakes.behaviour(json!({"umami": {"websites": [WEBSITE_ID, unknown]}})).await;
    let got =
        app.post(&format!("/v1/tenants/{}/deliveries/{}/replay", app.tenant, id(&ended)), &app.admin, json!({})).await;
    crate::helpers::assert_error(&got, StatusCode::CONFLICT, "conflict", None);
    let path = format!("{}/{}/replay-dead-letters", site::configs_path(&app, "umami"), id(&u));
    let (s, replayed) = app.post(&path, &app.admin, json!({})).await;
    assert_eq!((s, replayed["replayed"].as_u64()), (StatusCode::OK, Some(1)), "{replayed}");
    // v's is decided again, and v is found nowhere under the analytics id: not sent.
    app.drain_outbox_with_retries().await;
    let again = delivery_in(&app, &events[0], &id(&u), "dead").await;
    assert!(again["last_error"].as_str().unwrap().contains("consent changed before delivery"), "{again}");
    assert!(fakes.stored("umami").await.is_empty(), "a replay sent an event its visitor withdrew");
}

/// Everything stored about events, as one text per row (every column of every event — its
/// decisions included —, delivery and audit entry): what anyone with the database could join on.
async fn stored_rows(app: &crate::helpers::TestApp) -> Vec<String> {
    use sea_orm::EntityTrait;
    let mut rows = Vec::new();
    rows.extend(entity::analytics_event::Entity::find().all(&app.db).await.unwrap().iter().map(|r| format!("{r:?}")));
    rows.extend(entity::delivery::Entity::find().all(&app.db).await.unwrap().iter().map(|r| format!("{r:?}")));
    rows.extend(entity::audit_log::Entity::find().all(&app.db).await.unwrap().iter().map(|r| format!("{r:?}")));
    rows
}

/// After "Reject all", the visitor's events are stored unlinkable: no stored row (event,
/// decision, delivery, audit entry) holds their consent-lookup id, analytics id, user id, session
/// id or user agent once the deliveries ended — yet the cookie-free provider still got the user
/// agent and IP it counts visitors by. With analytics consent the identifiers are kept as before.
#[tokio::test]
async fn after_reject_all_no_stored_event_can_be_joined_to_the_visitor() {
    let (app, fakes, keys) = setup().await;
    let cookie_free = site::plausible(&app, &fakes, json!({})).await;
    let needs_analytics = site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    app.publish_consent_config(json!({})).await;
    let (refused, legacy, granted) = (visitor(), visitor(), visitor());
    for v in [&refused, &legacy] {
        app.consent(v, "reject_all", 1).await;
    }
    app.consent(&granted, "accept_all", 1).await;
    let at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let event = |lookup: Value, analytics: Value, who: &str| {
        json!({"event_name": "signup", "page_url": PAGE, "visitor_id": lookup, "anonymous_id": analytics,
               "user_id": format!("user-{who}"), "session_id": format!("sess-{who}"), "occurred_at": at,
               "event_properties": {"plan": "pro", "customer_id": format!("cust-{who}"),
                                    "form": {"contact": format!("{who}@example.com")}}})
    };
    // The tracker after a refusal: the consent-lookup id only. An older site: `anonymous_id` only,
    // which the gateway looks consent up under.
    let (s1, a) = track(&app, &keys, event(json!(refused), Value::Null, &refused)).await;
    let (s2, b) = track(&app, &keys, event(Value::Null, json!(legacy), &legacy)).await;
    let (s3, c) = track(&app, &keys, event(json!(granted), json!(granted), &granted)).await;
    assert_eq!((s1, s2, s3), (StatusCode::ACCEPTED, StatusCode::ACCEPTED, StatusCode::ACCEPTED), "{a} {b} {c}");
    for (accepted, reason) in [(&a, "denied:rejected"), (&b, "denied:rejected"), (&c, "consent_granted:analytics")] {
        assert_eq!(decision_for(accepted, &id(&needs_analytics))["reason"], reason, "{accepted}");
    }
    // Not even the key derived from the session id is kept (it could be recomputed from that
    // id): a repeat without the client's own key is a new event — a double count, never a link.
    let (s, again) = track(&app, &keys, event(Value::Null, json!(legacy), &legacy)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{again}");
    assert_ne!(again["id"], b["id"]);

    // While waiting, the deliveries hold what sending needs; the events already hold nothing.
    let pending = stored_rows(&app).await.join("\n");
    assert!(pending.contains(&refused), "the waiting delivery keeps the consent-lookup id");
    app.drain_outbox().await;
    for accepted in [&a, &b, &again] {
        delivery_in(&app, &id(accepted), &id(&cookie_free), "delivered").await;
    }
    let plausible = exactly(&fakes, "plausible", 4).await;
    for r in &plausible {
        assert_eq!((r["headers"]["user-agent"].as_str(), r["resolved_ip"].as_str()), (Some(CHROME), Some(VISITOR_IP)));
    }

    let rows = stored_rows(&app).await;
    for who in [&refused, &legacy] {
        for row in &rows {
            assert!(!row.contains(who.as_str()), "a stored row can be joined to {who}: {row}");
        }
    }
    assert!(!rows.iter().any(|r| r.contains(VISITOR_IP)), "the full IP went with the deliveries");
    for accepted in [&a, &b, &again] {
        let (_, e) = app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id(accepted)), &app.auditor).await;
        for field in ["anonymous_id", "user_id", "session_id", "user_agent"] {
            assert!(e[field].is_null(), "{field}: {e}");
        }
        assert_eq!((e["event_name"].as_str(), e["ip_truncated"].as_str()), (Some("signup"), Some("203.0.113.0")));
        // Identifier properties go too; the event says which (not what they held).
        assert_eq!(e["event_properties"], json!({"plan": "pro", "form": {}}), "{e}");
        assert_eq!(e["context"]["properties_removed"], json!(["customer_id", "form.contact"]), "{e}");
    }
    // With analytics consent: kept, as the providers that were allowed them received them.
    let (_, e) = app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id(&c)), &app.auditor).await;
    assert_eq!(
        (e["anonymous_id"].as_str(), e["user_id"].as_str(), e["session_id"].as_str(), e["user_agent"].as_str()),
        (
            Some(granted.as_str()),
            Some(format!("user-{granted}").as_str()),
            Some(format!("sess-{granted}").as_str()),
            Some(CHROME)
        ),
        "{e}"
    );
    assert_eq!(e["event_properties"]["customer_id"], format!("cust-{granted}"), "{e}");
    assert!(e["context"].get("properties_removed").is_none(), "{e}");
    let umami = exactly(&fakes, "umami", 1).await;
    assert_eq!(umami[0]["body"]["payload"]["id"], format!("user-{granted}"));
}
