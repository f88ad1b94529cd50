//! GA4 mapping tables: settings, request-level fields, the event, batching, the request and
//! what answers mean.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{mapping::*, rules::*, *};
use crate::{
    consent::{Choices, Identity},
    providers::{Headers, testing::event},
    secrets::Credentials,
};

const DELIVERY: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0042);

fn settings(v: Value) -> Ga4Settings {
    serde_json::from_value(v).unwrap()
}

fn base() -> Ga4Settings {
    settings(json!({"measurement_id": "G-TEST123"}))
}

/// The test event's `occurred_at` plus five seconds.
fn now() -> DateTime<Utc> {
    event("x").occurred_at + Duration::seconds(5)
}

fn visitor(name: &str) -> entity::analytics_event::Model {
    let mut e = event(name);
    e.anonymous_id = Some("visitor-1".into());
    e.session_id = Some("1795694000".into());
    e
}

fn out(e: &entity::analytics_event::Model, identity: Identity, granted: Choices) -> Outgoing<'_> {
    Outgoing {
        event: e,
        delivery_id: DELIVERY,
        identity,
        granted,
        pseudonymous_id: None,
        client_ip: Some("203.0.113.77".parse::<IpAddr>().unwrap()),
        user_agent: e.user_agent.as_deref(),
    }
}

fn full(e: &entity::analytics_event::Model) -> Outgoing<'_> {
    out(e, Identity::Full, Choices::all())
}

fn map(s: &Ga4Settings, o: &Outgoing<'_>) -> Mapped {
    mapping::event(s, o, now()).unwrap()
}

fn secret() -> Credentials {
    Credentials::for_tests(&[(API_SECRET, "s3cr&t value")])
}

#[test]
fn settings_defaults_and_refusals() {
    let s = base();
    assert_eq!(s.measurement_id.as_str(), "G-TEST123");
    assert!(s.require_cookie_consent && s.anonymize_ip && s.enable_enhanced_measurement);
    assert!(!s.enable_ecommerce && !s.debug_mode);
    assert_eq!(s.region, Region::Global);
    assert!(Ga4::requires_record(&s));
    assert!(!Ga4::requires_record(&settings(json!({"measurement_id": "G-1", "require_cookie_consent": false}))));
    assert_eq!(settings(json!({"measurement_id": " g-abc1 "})).measurement_id.as_str(), "G-ABC1");
    let ok = settings(json!({"measurement_id": "G-1", "property_id": 123456789, "data_stream_id": "4567890123",
                             "region": "eu"}));
    assert_eq!(ok.region, Region::Eu);
    for bad in [
        json!({}),
        json!({"measurement_id": "UA-1234-1"}),
        json!({"measurement_id": "G-"}),
        json!({"measurement_id": "G-AB CD"}),
        json!({"measurement_id": "G-1", "property_id": "properties/123"}),
        json!({"measurement_id": "G-1", "region": "us"}),
        json!({"measurement_id": "G-1", "endpoint_url": "ftp://x"}),
        json!({"measurement_id": "G-1", "api_secret": "inline"}),
    ] {
        assert!(serde_json::from_value::<Ga4Settings>(bad.clone()).is_err(), "{bad}");
    }
    assert_eq!(Ga4::default_required_category(), RequiredCategory::Analytics);
    assert_eq!(Ga4::batch_limit(&s), 25);
}

#[test]
fn credentials_need_the_api_secret_reference() {
    let c: Ga4Credentials = serde_json::from_value(json!({"api_secret_ref": "env:GA4_SECRET",
        "service_account_json_ref": "file:/run/secrets/sa.json"}))
    .unwrap();
    assert_eq!(c.api_secret_ref.unwrap().to_string(), "env:GA4_SECRET");
    let e = serde_json::from_value::<Ga4Credentials>(json!({})).unwrap_err().to_string();
    assert!(e.contains("api_secret_ref is required"), "{e}");
    assert!(serde_json::from_value::<Ga4Credentials>(json!({"api_secret_ref": "plain-secret"})).is_err());
    assert!(serde_json::from_value::<Ga4Credentials>(json!({"api_secret_ref": "env:A", "x": "env:B"})).is_err());
}

#[test]
fn a_page_view_with_full_identity() {
    let e = visitor("pageview");
    let o = full(&e);
    assert_eq!(
        Value::Object(shared(&base(), &o)),
        json!({
            "client_id": "visitor-1",
            "consent": {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"},
            "ip_override": "203.0.113.0",
            "user_agent": crate::providers::testing::BROWSER_UA,
            "user_location": {"country_id": "SE"},
        })
    );
    let m = map(&base(), &o);
    assert_eq!(
        m.event,
        json!({"name": "page_view", "timestamp_micros": 1_795_694_400_000_000_i64, "params": {
            "page_location": "https://www.example.com/pricing?utm_source=news",
            "page_referrer": "https://search.example.org/",
            "page_title": "Pricing",
            "session_id": "1795694000",
            "engagement_time_msec": 1,
        }})
    );
    assert!(m.adjustments.is_empty(), "{:?}", m.adjustments);
}

#[test]
fn identifiers_go_only_with_full_identity() {
    let mut e = visitor("signup");
    e.user_id = Some("user-42".into());
    e.event_properties = json!({"email": "ann@example.com", "plan": "pro"});
    let f = full(&e);
    let sh = shared(&base(), &f);
    assert_eq!((sh["client_id"].as_str(), sh["user_id"].as_str()), (Some("visitor-1"), Some("user-42")));

    let anon = out(&e, Identity::Anonymous, Choices::none());
    let sh = shared(&base(), &anon);
    assert_eq!(sh["client_id"], format!("cg.{}", DELIVERY.simple()), "the delivery's own id: links nothing");
    assert!(sh.get("user_id").is_none() && sh.get("ip_override").is_none());
    let m = map(&base(), &anon);
    assert!(m.event["params"].get("session_id").is_none());
    assert!(m.event["params"].get("email").is_none());
    let all = format!("{} {}", Value::Object(sh), m.event);
    for id in ["visitor-1", "user-42", "ann@example.com", "1795694000"] {
        assert!(!all.contains(id), "{id} sent anonymously: {all}");
    }
    assert!(m.adjustments[0].contains("identifier properties left out"), "{:?}", m.adjustments);

    // Full identity but no analytics id: still a client_id, linking nothing.
    let mut bare = event("signup");
    bare.anonymous_id = None;
    assert_eq!(client_id(&full(&bare)), format!("cg.{}", DELIVERY.simple()));
    // A user id over GA4's 256 characters is left out rather than cut (a cut id could be another user's).
    bare.user_id = Some("u".repeat(257));
    assert!(shared(&base(), &full(&bare)).get("user_id").is_none());
}

#[test]
fn the_consent_object_follows_the_marketing_choice_and_gpc() {
    let e = visitor("pageview");
    let analytics_only = Choices { functional: false, analytics: true, marketing: false };
    let consent = |o: &Outgoing<'_>| Value::Object(shared(&base(), o))["consent"].clone();
    let granted = json!({"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"});
    let denied = json!({"ad_user_data": "DENIED", "ad_personalization": "DENIED"});
    assert_eq!(consent(&full(&e)), granted);
    assert_eq!(consent(&out(&e, Identity::Full, analytics_only)), denied);
    let mut gpc = visitor("pageview");
    gpc.gpc = true;
    assert_eq!(consent(&full(&gpc)), denied, "GPC denies the ad signals even if marketing reads granted");
}

#[test]
fn ip_override_is_the_network_unless_anonymize_ip_is_off() {
    let e = visitor("pageview");
    assert_eq!(shared(&base(), &full(&e))["ip_override"], "203.0.113.0");
    let exact = settings(json!({"measurement_id": "G-1", "anonymize_ip": false}));
    assert_eq!(shared(&exact, &full(&e))["ip_override"], "203.0.113.77");
    let mut us = visitor("pageview");
    us.country = Some("US".into());
    us.context = json!({"region": "US-CA"});
    assert_eq!(shared(&base(), &full(&us))["user_location"], json!({"country_id": "US", "region_id": "US-CA"}));
}

#[test]
fn events_older_than_72_hours_are_refused_with_that_reason() {
    let e = visitor("pageview");
    let at = |age: Duration| mapping::event(&base(), &full(&e), e.occurred_at + age);
    assert!(at(Duration::hours(71)).is_ok());
    let err = at(Duration::hours(73)).err().unwrap();
    assert!(err.contains("72 hours") && err.contains("73 hours ago"), "{err}");
    assert!(at(Duration::hours(72)).is_err(), "72 hours less a minute's margin for the request in flight");
    assert!(at(Duration::hours(72) - Duration::minutes(2)).is_ok());
}

#[test]
fn names_and_values_are_fitted_to_ga4_and_every_change_is_recorded() {
    let mut e = visitor("error");
    let mut props = serde_json::Map::new();
    props.insert("ga_campaign".into(), json!("spring"));
    props.insert("plan-type".into(), json!("pro"));
    props.insert("plan_type".into(), json!("basic"));
    props.insert("long".into(), json!("é".repeat(150)));
    props.insert("nothing".into(), Value::Null);
    props.insert("nested".into(), json!({"a": 1}));
    props.insert("page_title".into(), json!("the site's own"));
    props.insert("ok".into(), json!(true));
    props.insert("n".into(), json!(3.5));
    e.event_properties = Value::Object(props);
    e.page_url = Some(format!("https://www.example.com/?q={}", "x".repeat(1200)));
    e.title = Some("t".repeat(400));
    let m = map(&base(), &full(&e));
    let p = &m.event["params"];
    assert_eq!(m.event["name"], "cg_error");
    assert_eq!(p["cg_ga_campaign"], "spring");
    assert_eq!(p["plan_type"], "basic", "the site's own plan_type; plan-type collides with it");
    assert_eq!(p["long"].as_str().unwrap().chars().count(), 100);
    assert_eq!(p["page_location"].as_str().unwrap().chars().count(), 1_000);
    assert_eq!(p["page_title"].as_str().unwrap().chars().count(), 300);
    assert_eq!((p["ok"].clone(), p["n"].clone()), (json!(true), json!(3.5)));
    for gone in ["nothing", "nested", "plan-type"] {
        assert!(p.get(gone).is_none(), "{gone}");
    }
    let all = m.adjustments.join("\n");
    #[rustfmt::skip]
    let expected = [
        "event name \"error\" renamed \"cg_error\"",
        "property \"ga_campaign\" renamed \"cg_ga_campaign\"",
        "property \"plan-type\" renamed \"plan_type\"",
        "property \"plan-type\" left out: GA4 parameter \"plan_type\" is already set",
        "parameter \"long\" cut to 100 characters",
        "parameter \"page_location\" cut to 1000 characters",
        "parameter \"page_title\" cut to 300 characters",
        "property \"nothing\" left out: null",
        "property \"nested\" left out",
        "property \"page_title\" left out: GA4 parameter \"page_title\" is already set",
    ];
    for change in expected {
        assert!(all.contains(change), "{change:?} not in:\n{all}");
    }
    assert_eq!(m.adjustments.len(), expected.len(), "{all}");
}

#[test]
fn at_most_25_parameters_the_gateways_first() {
    let mut e = visitor("signup");
    e.event_properties = Value::Object((0..40).map(|i| (format!("p{i:02}"), json!(i))).collect());
    let m = map(&base(), &full(&e));
    let p = m.event["params"].as_object().unwrap();
    assert_eq!(p.len(), MAX_PARAMS);
    for ours in ["page_location", "page_referrer", "page_title", "session_id", "engagement_time_msec"] {
        assert!(p.contains_key(ours), "{ours}");
    }
    assert!(p.contains_key("p00") && p.contains_key("p19") && !p.contains_key("p20"));
    let note = m.adjustments.iter().find(|a| a.contains("beyond GA4's 25")).expect("recorded");
    assert!(note.contains("p20") && note.contains("p39"), "{note}");
}

#[test]
fn purchases_always_carry_a_transaction_id_and_revenue_goes_with_ecommerce() {
    let shop = settings(json!({"measurement_id": "G-1", "enable_ecommerce": true}));
    let mut e = visitor("purchase");
    e.id = Uuid::from_u128(7);
    e.revenue = Some(json!({"amount": 49.9, "currency": "EUR"}));
    e.event_properties = json!({"items": [{"item_id": "SKU-1", "price": 49.9, "quantity": 1, "x-tag": "a"},
                                          {"price": 1}, "nope"]});
    let m = map(&shop, &full(&e));
    let p = &m.event["params"];
    assert_eq!(p["transaction_id"], e.id.to_string(), "the event id when the site sent none");
    assert_eq!((p["value"].clone(), p["currency"].clone()), (json!(49.9), json!("EUR")));
    assert_eq!(p["items"], json!([{"item_id": "SKU-1", "price": 49.9, "quantity": 1, "x_tag": "a"}]));
    let all = m.adjustments.join("\n");
    for change in ["item field \"x-tag\" renamed \"x_tag\"", "item 1 left out", "item 2 left out"] {
        assert!(all.contains(change), "{change} not in {all}");
    }

    for (given, expected) in [(json!("T-1001"), "T-1001"), (json!(1001), "1001"), (json!(""), "")] {
        e.event_properties = json!({"transaction_id": given});
        let m = map(&shop, &full(&e));
        let expected = if expected.is_empty() { e.id.to_string() } else { expected.to_string() };
        assert_eq!(m.event["params"]["transaction_id"], expected, "an empty id would merge purchases");
    }

    // GA4 takes 10 custom parameters per item besides its own: the first 10 by name are kept.
    let mut item = json!({"item_id": "SKU-1", "item_brand": "Acme", "price": 1, "quantity": 2});
    for i in 0..12 {
        item[format!("c{i:02}")] = json!(i);
    }
    e.event_properties = json!({"items": [item]});
    let m = map(&shop, &full(&e));
    let kept = m.event["params"]["items"][0].as_object().unwrap();
    assert_eq!(kept.len(), 4 + 10, "{kept:?}");
    assert!(kept.contains_key("c09") && !kept.contains_key("c10") && !kept.contains_key("c11"), "{kept:?}");
    let all = m.adjustments.join("\n");
    assert!(all.contains("item fields beyond GA4's 10 custom item parameters left out: c10, c11"), "{all}");
    e.event_properties = json!({"transaction_id": "T-1"});

    let plain = map(&base(), &full(&e));
    assert!(plain.event["params"].get("value").is_none() && plain.event["params"].get("items").is_none());
    assert!(plain.event["params"]["transaction_id"].is_string(), "a purchase without ecommerce still has one");
    assert!(plain.adjustments.iter().any(|a| a.contains("enable_ecommerce is off")), "{:?}", plain.adjustments);
}

#[test]
fn sessions_and_engagement() {
    assert_eq!(session_number("1795694000"), "1795694000");
    let derived = session_number("3f2c9a-session");
    assert!(derived.len() == 15 && derived.bytes().all(|b| b.is_ascii_digit()), "{derived}");
    assert_eq!(derived, session_number("3f2c9a-session"), "stable");
    assert_ne!(derived, session_number("3f2c9a-session2"));
    assert_eq!(session_number(&"9".repeat(19)).len(), 15, "longer than an i64: derived");

    let mut e = visitor("signup");
    e.event_properties = json!({"engagement_time_msec": 5400});
    assert_eq!(map(&base(), &full(&e)).event["params"]["engagement_time_msec"], 5400);
    e.event_properties = json!({"engagement_time_msec": "long"});
    let m = map(&base(), &full(&e));
    assert_eq!(m.event["params"]["engagement_time_msec"], 1);
    assert!(m.adjustments[0].contains("engagement_time_msec"), "{:?}", m.adjustments);
}

#[test]
fn outbound_clicks_as_enhanced_measurement() {
    let mut e = visitor(crate::providers::OUTBOUND_LINK_CLICK);
    e.event_properties = json!({"url": "https://partner.example.net/offer?id=1"});
    let m = map(&base(), &full(&e));
    assert_eq!(m.event["name"], "click");
    let p = &m.event["params"];
    assert_eq!(p["link_url"], "https://partner.example.net/offer?id=1");
    assert_eq!((p["link_domain"].as_str(), p["outbound"].as_str()), (Some("partner.example.net"), Some("true")));
    assert!(p.get("url").is_none() && m.adjustments.is_empty(), "{:?}", m.adjustments);
    let off = settings(json!({"measurement_id": "G-1", "enable_enhanced_measurement": false}));
    let m = map(&off, &full(&e));
    assert_eq!(m.event["name"], "outbound_link_click");
    assert!(m.event["params"].get("outbound").is_none() && m.adjustments.is_empty());
    // The site's own `click` is no outbound click.
    let own = map(&base(), &full(&visitor("click")));
    assert_eq!(own.event["name"], "click");
    assert!(own.event["params"].get("outbound").is_none());
}

#[test]
fn one_request_per_visitor_and_consent_state() {
    let s = base();
    let a = visitor("pageview");
    let b = visitor("signup");
    let mut other = visitor("pageview");
    other.anonymous_id = Some("visitor-2".into());
    let key = |o: &Outgoing<'_>| Ga4::batch_key(&s, o);
    let no_ads = Choices { marketing: false, ..Choices::all() };
    assert_eq!(key(&full(&a)), key(&full(&b)), "one visitor's events share a request");
    assert_ne!(key(&full(&a)), key(&full(&other)), "one client_id per request");
    assert_ne!(key(&full(&a)), key(&out(&a, Identity::Full, no_ads)), "one consent state per request");
    let mut logged_in = visitor("signup");
    logged_in.user_id = Some("user-42".into());
    assert_ne!(key(&full(&a)), key(&full(&logged_in)), "one user_id per request");
    // An event too large to share a request goes alone.
    // Text of 100 characters may be 400 bytes (or 600 escaped): the size is what counts.
    let mut big = visitor("signup");
    big.event_properties = Value::Object((0..20).map(|i| (format!("p{i}"), json!("😀".repeat(100)))).collect());
    assert!(key(&full(&big)).ends_with(&format!("|alone:{DELIVERY}")), "{}", key(&full(&big)));
    let shop = settings(json!({"measurement_id": "G-1", "enable_ecommerce": true}));
    let mut cart = visitor("purchase");
    cart.event_properties = json!({"items": (0..60).map(|i| json!({"item_id": format!("SKU-{i}"), "item_name": "x".repeat(90)})).collect::<Vec<_>>()});
    assert!(Ga4::batch_key(&shop, &full(&cart)).ends_with(&format!("|alone:{DELIVERY}")));
    assert!(!Ga4::batch_key(&shop, &full(&a)).contains("|alone:"));
}

fn item(s: &Ga4Settings, e: &entity::analytics_event::Model, granted: Choices) -> Item {
    let m = mapping::event(s, &out(e, Identity::Full, granted), now()).unwrap();
    Item {
        body: json!({"shared": Value::Object(shared(s, &out(e, Identity::Full, granted))), "event": m.event}),
        headers: Vec::new(),
        adjustments: m.adjustments,
    }
}

#[test]
fn requests_carry_the_secret_in_the_query_and_the_events_in_order() {
    let a = visitor("pageview");
    let b = visitor("signup");
    let items = [item(&base(), &a, Choices::all()), item(&base(), &b, Choices::all())];
    let req = Ga4::request(&base(), &secret(), &items).unwrap();
    assert_eq!(
        req.url,
        "https://www.google-analytics.com/mp/collect?measurement_id=G-TEST123&api_secret=s3cr%26t+value"
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.body["client_id"], "visitor-1");
    let names: Vec<&str> = req.body["events"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["page_view", "signup"]);
    assert!(req.body.get("validation_behavior").is_none());

    let eu = settings(json!({"measurement_id": "G-1", "region": "eu"}));
    assert!(
        Ga4::request(&eu, &secret(), &items)
            .unwrap()
            .url
            .starts_with("https://region1.google-analytics.com/mp/collect?")
    );
    let debug =
        settings(json!({"measurement_id": "G-1", "debug_mode": true, "endpoint_url": "http://127.0.0.1:9/ga4"}));
    let req = Ga4::request(&debug, &secret(), &items).unwrap();
    assert!(
        req.url.starts_with("http://127.0.0.1:9/ga4/debug/mp/collect?measurement_id=G-1&api_secret="),
        "{}",
        req.url
    );
    assert_eq!(req.body["validation_behavior"], "ENFORCE_RECOMMENDATIONS");

    assert!(Ga4::request(&base(), &Credentials::default(), &items).unwrap_err().contains("api_secret_ref"));
    let mixed = [item(&base(), &a, Choices::all()), item(&base(), &b, Choices::none())];
    assert!(Ga4::request(&base(), &secret(), &mixed).is_err(), "never two consent states in one request");
    let many: Vec<Item> = (0..26).map(|_| item(&base(), &a, Choices::all())).collect();
    assert!(Ga4::request(&base(), &secret(), &many).is_err());
    assert!(Ga4::request(&base(), &secret(), &many[..25]).is_ok());
    assert!(Ga4::request(&base(), &secret(), &[]).is_err());
}

#[test]
fn answers() {
    let h = Headers::default();
    let r = |status, body: &[u8], n| Ga4::classify(&ProviderResponse { status, headers: &h, body }, n);
    assert_eq!(r(204, b"", 3), Answer::All(Outcome::Delivered));
    assert_eq!(r(200, b"", 1), Answer::All(Outcome::Delivered));
    assert!(matches!(r(200, b"<!doctype html><html>", 1), Answer::All(Outcome::Retry { .. })));
    assert!(matches!(r(503, b"", 2), Answer::All(Outcome::Retry { .. })));
    assert!(matches!(r(429, b"", 2), Answer::All(Outcome::Retry { .. })));
    assert!(matches!(r(403, b"", 2), Answer::All(Outcome::AuthFailure { .. })));
    assert!(matches!(r(400, b"bad", 2), Answer::All(Outcome::Dead { .. })));

    // The validation server: nothing to fix → validated, not collected.
    let Answer::PerItem(v) = r(200, br#"{"validationMessages": []}"#, 2) else { panic!() };
    assert_eq!(v.len(), 2);
    assert!(
        v.iter().all(|o| matches!(o, Outcome::Dropped { warning } if warning.contains("validated, not collected")))
    );
    // Messages naming an event dead-letter that event only; others apply to all.
    let body = br#"{"validationMessages": [
        {"fieldPath": "events", "description": "Event at index: [1] has invalid name [_bad]. Names must start with an alphabetic character.", "validationCode": "NAME_INVALID"},
        {"fieldPath": "events[2].params.x", "description": "Value too long.", "validationCode": "VALUE_INVALID"}]}"#;
    let Answer::PerItem(v) = r(200, body, 3) else { panic!() };
    assert!(matches!(&v[0], Outcome::Dropped { .. }), "{v:?}");
    assert!(
        matches!(&v[1], Outcome::Dead { reason } if reason.contains("NAME_INVALID at events: Event at index: [1]")),
        "{v:?}"
    );
    assert!(
        matches!(&v[2], Outcome::Dead { reason } if reason.contains("VALUE_INVALID at events[2].params.x")),
        "{v:?}"
    );
    let body = br#"{"validationMessages": [{"fieldPath": "client_id", "description": "Required.", "validationCode": "VALUE_REQUIRED"}]}"#;
    let Answer::PerItem(v) = r(200, body, 2) else { panic!() };
    assert!(v.iter().all(|o| matches!(o, Outcome::Dead { reason } if reason.contains("VALUE_REQUIRED at client_id"))));
}

#[test]
fn the_check_validates_a_sample_page_view() {
    let checks = Ga4::checks(&base(), &secret());
    assert_eq!(checks.len(), 1);
    let c = &checks[0];
    assert!(
        c.url.starts_with("https://www.google-analytics.com/debug/mp/collect?measurement_id=G-TEST123&api_secret=")
    );
    assert!(!format!("{c:?}").contains("s3cr"), "the check's Debug never shows the secret: {c:?}");
    let body: Value = serde_json::from_str(c.json_body.as_ref().unwrap().expose_secret()).unwrap();
    assert_eq!(body["events"][0]["name"], "page_view");
    assert!(Ga4::checks(&base(), &Credentials::default()).is_empty());
    let read = c.read.expect("the validation server's answer is read");
    assert!(
        matches!(read(200, br#"{"validationMessages": []}"#), (Some(true), d) if d.contains("does not check the api_secret"))
    );
    let refused = read(200, br#"{"validationMessages": [{"fieldPath": "events", "description": "Event at index: [0] has invalid name.", "validationCode": "NAME_INVALID"}]}"#);
    assert!(matches!(&refused, (Some(false), d) if d.contains("NAME_INVALID")), "{refused:?}");
    assert!(matches!(read(204, b""), (None, _)), "a collect endpoint's answer is no validation");
    assert!(matches!(read(403, b""), (Some(false), _)));
    assert!(matches!(read(502, b""), (None, _)));
}

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,12}",
        "[ -~]{1,60}",
        "(ga_|google_|firebase_|_)[a-z]{0,50}",
        "\\PC{1,45}",
        Just("page_title".to_string()),
        Just("items".to_string())
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "\\PC{0,150}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!({"a": 1})),
        Just(json!([{"item_id": "x"}]))
    ]
}

proptest! {
    /// Whatever the site sends, the mapped event keeps to GA4's rules: a valid, unreserved name,
    /// at most 25 parameters with valid names and values within their limits.
    #[test]
    fn every_mapped_event_keeps_to_ga4s_rules(
        name in prop_oneof!["\\PC{1,60}", Just("error".to_string()), Just("pageview".to_string()), Just("purchase".to_string())],
        props in proptest::collection::btree_map(arb_key(), arb_value(), 0..40),
        title in "\\PC{0,400}",
        ecommerce in any::<bool>(),
    ) {
        let mut e = visitor(&name);
        e.event_properties = Value::Object(props.into_iter().collect());
        e.title = Some(title);
        e.revenue = Some(json!({"amount": 10, "currency": "SEK"}));
        let s = settings(json!({"measurement_id": "G-1", "enable_ecommerce": ecommerce}));
        let m = map(&s, &full(&e));
        prop_assert!(is_valid_name(m.event["name"].as_str().unwrap(), true), "{}", m.event["name"]);
        let params = m.event["params"].as_object().unwrap();
        prop_assert!(params.len() <= MAX_PARAMS);
        for (k, v) in params {
            prop_assert!(is_valid_name(k, false), "{k}");
            match v {
                Value::String(t) => prop_assert!(t.chars().count() <= max_value_chars(k), "{k}"),
                Value::Number(_) | Value::Bool(_) => {}
                Value::Array(items) => {
                    prop_assert_eq!(k.as_str(), "items");
                    prop_assert!(items.len() <= MAX_ITEMS);
                    for item in items {
                        let custom = item.as_object().unwrap().keys().filter(|k| !ITEM_PARAMS.contains(&k.as_str())).count();
                        prop_assert!(custom <= MAX_CUSTOM_ITEM_PARAMS, "{item}");
                    }
                }
                other => prop_assert!(false, "{k}: {other}"),
            }
        }
        if m.event["name"] == "purchase" {
            prop_assert!(params["transaction_id"].as_str().is_some_and(|t| !t.is_empty()));
        }
        prop_assert!(m.event.to_string().len() <= MAX_EVENT_BYTES);
    }
}

/// 25 events just under the size that would send them alone, with the largest request-level
/// fields ingest lets through, still make a request GA4 takes (under 130 KB).
#[test]
fn a_full_batch_of_the_largest_shareable_events_fits_ga4s_body_limit() {
    let mut e = visitor("signup");
    e.anonymous_id = Some("v".repeat(200));
    e.user_id = Some("u".repeat(200));
    e.user_agent = Some("Mozilla/5.0 ".repeat(84)[..1_000].to_string());
    e.page_url = Some(format!("https://www.example.com/{}", "p".repeat(1_200)));
    e.referrer = Some(format!("https://r.example.org/{}", "r".repeat(500)));
    e.title = Some("t".repeat(300));
    // Properties of 100 two-byte characters until one more would make the event travel alone.
    let mut props = serde_json::Map::new();
    for i in 0..MAX_PARAMS {
        let key = format!("property_{i:02}_{}", "n".repeat(25));
        props.insert(key.clone(), json!("é".repeat(100)));
        e.event_properties = Value::Object(props.clone());
        if fitted(&base(), &full(&e)).event.to_string().len() > MAX_SHARED_EVENT_BYTES {
            props.remove(&key);
            break;
        }
    }
    e.event_properties = Value::Object(props);
    let size = fitted(&base(), &full(&e)).event.to_string().len();
    assert!(size > MAX_SHARED_EVENT_BYTES - 300, "close to the limit: {size}");
    assert!(!Ga4::batch_key(&base(), &full(&e)).contains("|alone:"));
    let items: Vec<Item> = (0..MAX_EVENTS).map(|_| item(&base(), &e, Choices::all())).collect();
    let req = Ga4::request(&base(), &secret(), &items).expect("fits");
    assert!(req.body.to_string().len() < MAX_BODY_BYTES, "{}", req.body.to_string().len());
}
