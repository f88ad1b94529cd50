//! Deliveries sent in batches (issue 12): Umami's `/api/batch` against the fake, which answers as
//! Umami does (a result per event). Batches never exceed the provider's limit, one bad event never
//! dead-letters its batch-mates, and each delivery gets its own outcome.

use chrono::Utc;
use consentgate::{outbox::Pass, providers::umami::BATCH_LIMIT};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    fakes::FakeProviders,
    helpers::{TestApp, send},
    site::{self, CHROME, ORIGIN, PAGE, Site, delivery_in, setup, visitor},
};

/// An active Umami config sending to `/api/batch`.
async fn batch_config(app: &TestApp, fakes: &FakeProviders) -> String {
    let c = site::umami(app, fakes, json!({"endpoint": "batch"})).await;
    assert_eq!(c["endpoint"], "batch", "{c}");
    c["id"].as_str().unwrap().to_string()
}

/// `POST /events` from the browser at `ip`; returns the event id.
async fn event_from(app: &TestApp, keys: &Site, name: &str, ip: &str) -> String {
    let body = json!({"event_name": name, "page_url": PAGE, "anonymous_id": visitor()});
    let (s, e) = send(
        app.http
            .post(app.tenant_url("/events"))
            .header("x-ingest-key", &keys.public_key)
            .header("origin", ORIGIN)
            .header("user-agent", CHROME)
            .header("x-forwarded-for", ip)
            .json(&body),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    e["id"].as_str().unwrap().to_string()
}

fn sizes(batches: &[Value]) -> Vec<u64> {
    batches.iter().map(|b| b["size"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn batches_never_exceed_the_providers_limit() {
    let (app, fakes, keys) = setup().await;
    batch_config(&app, &fakes).await;
    let n = 2 * BATCH_LIMIT + 5;
    for i in 0..n {
        event_from(&app, &keys, "signup", &format!("203.0.113.{}", i + 1)).await;
    }
    // One pass: the worker's 4 slots carry up to 4 requests of 20 events, so all 45 go at once.
    assert_eq!(app.run_outbox_at(Utc::now()).await, Pass { claimed: n, delivered: n, ..Pass::default() });
    let batches = fakes.batches().await;
    let mut got = sizes(&batches);
    got.sort_unstable();
    assert_eq!(got, [5, BATCH_LIMIT as u64, BATCH_LIMIT as u64], "{batches:?}");
    assert!(batches.iter().all(|b| b["path"] == "/api/batch" && b["status"] == 200));
    let stored = fakes.stored("umami").await;
    assert_eq!(stored.len(), n);
    // Each event carries its own visitor: the batch's headers are shared, so nothing of one
    // visitor may travel in them.
    let ips: std::collections::BTreeSet<&str> =
        stored.iter().filter_map(|r| r["body"]["payload"]["ip"].as_str()).collect();
    assert_eq!(ips.len(), n);
    assert!(
        stored.iter().all(|r| r["body"]["payload"]["userAgent"] == CHROME && r["headers"].get("user-agent").is_none())
    );
}

#[tokio::test]
async fn one_bad_event_never_dead_letters_its_batch_mates() {
    let (app, fakes, keys) = setup().await;
    let config = batch_config(&app, &fakes).await;
    // The fake refuses any batch holding this event as a whole (as PostHog does with one bad
    // uuid): which event is to blame, the answer does not say.
    fakes.behaviour(json!({"umami": {"refuse_batches_containing": "poison"}})).await;
    let mut good = Vec::new();
    for i in 0..5 {
        good.push(event_from(&app, &keys, "signup", &format!("203.0.113.{}", i + 1)).await);
    }
    let bad = event_from(&app, &keys, "poison", "203.0.113.99").await;
    good.push(event_from(&app, &keys, "signup", "203.0.113.100").await);

    // One pass: the refused batch is split and its parts sent again at once, down to the one
    // event to blame.
    assert_eq!(app.run_outbox_at(Utc::now()).await, Pass { claimed: 7, delivered: 6, dead: 1, ..Pass::default() });
    let d = delivery_in(&app, &bad, &config, "dead").await;
    assert!(d["last_error"].as_str().unwrap().contains("400"), "{d}");
    assert_eq!(d["attempts"], 1);
    for e in &good {
        let d = delivery_in(&app, e, &config, "delivered").await;
        assert_eq!(d["attempts"], 1, "{d}");
    }
    assert_eq!(fakes.stored("umami").await.len(), 6, "each good event stored once");
    let batches = fakes.batches().await;
    assert_eq!(sizes(&batches)[0], 7, "{batches:?}");
    let refused: Vec<u64> =
        batches.iter().filter(|b| b["status"] == 400).map(|b| b["size"].as_u64().unwrap()).collect();
    assert_eq!(refused.last(), Some(&1), "split down to the event to blame: {batches:?}");
    assert!(refused.windows(2).all(|w| w[1] < w[0]), "each refused part smaller than the last: {batches:?}");
}

#[tokio::test]
async fn each_event_of_a_batch_gets_its_own_outcome_and_a_failed_batch_is_retried_whole() {
    let (app, fakes, keys) = setup().await;
    let config = batch_config(&app, &fakes).await;
    // Umami's IGNORE_IP holds one visitor: Umami answers 200 for the batch, with that event's 403
    // in the details.
    fakes.behaviour(json!({"umami": {"ignore_ips": ["198.51.100.9"]}})).await;
    let a = event_from(&app, &keys, "signup", "203.0.113.1").await;
    let ignored = event_from(&app, &keys, "signup", "198.51.100.9").await;
    let b = event_from(&app, &keys, "signup", "203.0.113.2").await;
    assert_eq!(app.run_outbox_at(Utc::now()).await, Pass { claimed: 3, delivered: 2, dropped: 1, ..Pass::default() });
    let d = delivery_in(&app, &ignored, &config, "dropped").await;
    assert!(d["warning"].as_str().unwrap().contains("IGNORE_IP"), "{d}");
    for e in [&a, &b] {
        delivery_in(&app, e, &config, "delivered").await;
    }
    assert_eq!(sizes(&fakes.batches().await), [3]);

    // A batch refused for a passing reason (503) is retried, every event of it.
    fakes.behaviour(json!({"umami": {"ignore_ips": [], "status": 503, "fail_next": 1}})).await;
    let later: Vec<String> = [1, 2].iter().map(|i| format!("203.0.113.{}", 10 + i)).collect();
    let mut ids = Vec::new();
    for ip in &later {
        ids.push(event_from(&app, &keys, "signup", ip).await);
    }
    assert_eq!(app.run_outbox_at(Utc::now()).await, Pass { claimed: 2, retried: 2, ..Pass::default() });
    let again = app.drain_outbox_with_retries().await;
    assert_eq!(again, Pass { claimed: 2, delivered: 2, ..Pass::default() });
    for e in &ids {
        let d = delivery_in(&app, e, &config, "delivered").await;
        assert_eq!(d["attempts"], 2, "{d}");
    }
    assert_eq!(sizes(&fakes.batches().await), [3, 2, 2]);
}

/// The categories the visitor granted travel with each delivery (for providers whose payload
/// carries consent, e.g. GA4), GPC taking marketing away, and are erased when the delivery ends.
#[tokio::test]
async fn a_delivery_keeps_the_granted_categories_until_it_ends() {
    let (app, fakes, keys) = setup().await;
    let config = site::plausible(&app, &fakes, json!({})).await["id"].as_str().unwrap().to_string();
    app.publish_consent_config(json!({"respect_do_not_track": false})).await;
    let (all, some) = (visitor(), visitor());
    app.consent(&all, "accept_all", 1).await;
    app.consent(&some, "custom", 1).await; // analytics only
    let mut events = Vec::new();
    for (v, gpc, want) in [
        (&all, false, "functional,analytics,marketing"),
        (&all, true, "functional,analytics"),
        (&some, false, "analytics"),
    ] {
        let mut req = app
            .http
            .post(app.tenant_url("/events"))
            .header("x-ingest-key", &keys.public_key)
            .header("origin", ORIGIN)
            .header("user-agent", CHROME)
            .json(&site::pageview(v));
        if gpc {
            req = req.header("sec-gpc", "1");
        }
        let (s, e) = send(req).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{e}");
        events.push((e["id"].as_str().unwrap().to_string(), want));
    }
    let stored = |id: String| {
        let db = app.db.clone();
        async move {
            use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
            let event: uuid::Uuid = id.parse().unwrap();
            entity::delivery::Entity::find()
                .filter(entity::delivery::Column::EventId.eq(event))
                .one(&db)
                .await
                .unwrap()
                .expect("a delivery")
        }
    };
    for (id, want) in &events {
        assert_eq!(stored(id.clone()).await.granted.as_deref(), Some(*want), "{id}");
    }
    app.drain_outbox().await;
    for (id, _) in &events {
        delivery_in(&app, id, &config, "delivered").await;
        let row = stored(id.clone()).await;
        assert_eq!((row.granted, row.pseudonymous_id, row.client_ip), (None, None, None), "erased when it ended");
    }
}

/// In-flight slots count requests, per config: with windows of 4, a config sending batches sends
/// its 10 events in one request and a config sending one event per request sends 4; what finds
/// no slot goes back at once and is sent by the next pass.
#[tokio::test]
async fn slots_count_requests_per_config() {
    let (app, fakes, keys) = setup().await;
    let batched = batch_config(&app, &fakes).await;
    let single = site::umami(&app, &fakes, json!({"display_name": "Umami, one by one"})).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(event_from(&app, &keys, "signup", &format!("203.0.113.{}", i + 1)).await);
    }
    // 20 deliveries claimed; 5 requests: the batch of 10 and 4 single events; 6 given back.
    let first = app.run_outbox_at(Utc::now()).await;
    assert_eq!(first, Pass { claimed: 20, delivered: 14, released: 6, ..Pass::default() });
    let rest = app.drain_outbox().await;
    assert_eq!((rest.delivered, rest.dead, rest.retried), (6, 0, 0), "{rest:?}");
    for id in &ids {
        delivery_in(&app, id, &batched, "delivered").await;
        delivery_in(&app, id, single["id"].as_str().unwrap(), "delivered").await;
    }
    assert_eq!(sizes(&fakes.batches().await), [10]);
    let sent = fakes.received_by("umami").await;
    assert_eq!(sent.iter().filter(|r| r["path"] == "/api/send").count(), 10);
}
