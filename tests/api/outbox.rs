//! The outbox across instances: two gateways on one database send every delivery exactly once,
//! and a crashed worker's claim is taken over when its lease has passed — not before.

use chrono::Utc;
use consentgate::{app::App, outbox::Pass};
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use serde_json::json;

use crate::{
    fakes::FakeProviders,
    helpers::{TestApp, eventually, manual_delivery, spawn_app_with},
    site::{self, track, visitor},
};

/// A second gateway instance, with its own delivery worker, on the test app's database.
async fn second_instance(app: &TestApp) -> App {
    App::start((*app.app.state.settings).clone()).await.expect("a second instance starts")
}

/// The one test of the delivery workers' own loop: two of them, one per instance, running
/// concurrently as in production.
#[tokio::test]
async fn two_instances_send_each_delivery_exactly_once() {
    let app = spawn_app_with(|s| {
        s.delivery.in_flight_initial = 2;
        s.delivery.in_flight_max = 2;
    })
    .await;
    let other = second_instance(&app).await;
    let fakes = FakeProviders::start().await;
    let keys = site::site(&app).await;
    site::plausible(&app, &fakes, json!({})).await;
    site::umami(&app, &fakes, json!({})).await;
    let batch: Vec<_> = (0..40)
        .map(|i| {
            let mut e = site::pageview(&visitor());
            e["page_url"] = json!(format!("https://www.example.com/page/{i}"));
            e
        })
        .collect();
    let (s, res) = track(&app, &keys, json!({"batch": batch})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{res}");
    for r in res["results"].as_array().unwrap() {
        assert_eq!(r["status"], 202, "{r}");
    }
    // The workers run on their own; wait for them to record every delivery.
    eventually(20, || async {
        let (_, page) =
            app.get(&format!("/v1/tenants/{}/deliveries?status=delivered&limit=500", app.tenant), &app.admin).await;
        (page["items"].as_array().unwrap().len() == 80).then_some(())
    })
    .await;
    // Stopping an instance waits for its worker's requests in flight: after both, no second
    // copy of anything can still be on its way.
    other.stop().await.unwrap();
    app.app.stop().await.unwrap();
    for provider in ["plausible", "umami"] {
        let got = fakes.received_by(provider).await;
        let mut pages: Vec<String> = got.iter().map(|r| r["body"].to_string()).collect();
        pages.sort();
        pages.dedup();
        assert_eq!((got.len(), pages.len()), (40, 40), "{provider}: every event once");
    }
}

#[tokio::test]
async fn a_crashed_workers_claim_is_taken_over_after_its_lease() {
    // This instance only accepts events; the test runs the worker that takes over.
    let (app, fakes, keys) = site::setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    let event_id = accepted["id"].as_str().unwrap().to_string();
    // A worker claimed it and died.
    let lease_end = Utc::now() + chrono::Duration::seconds(60);
    entity::delivery::Entity::update_many()
        .col_expr(entity::delivery::Column::LeaseOwner, Expr::value("worker-that-crashed"))
        .col_expr(entity::delivery::Column::LeaseUntil, Expr::value(lease_end))
        .filter(entity::delivery::Column::EventId.eq(uuid::Uuid::parse_str(&event_id).unwrap()))
        .exec(&app.db)
        .await
        .unwrap();

    // Another worker, now and until just before the lease ends: the claim is respected.
    for at in [Utc::now(), lease_end - chrono::Duration::seconds(1)] {
        assert_eq!(app.run_outbox_at(at).await, Pass::default(), "a live lease is respected at {at}");
    }
    assert!(fakes.received().await.is_empty(), "a live lease is respected");
    site::delivery_in(&app, &event_id, p["id"].as_str().unwrap(), "pending").await;
    // Once the lease has passed, it takes the delivery over.
    let after = app.run_outbox_at(lease_end + chrono::Duration::seconds(1)).await;
    assert_eq!(after, Pass { claimed: 1, delivered: 1, ..Pass::default() });
    let d = site::delivery_in(&app, &event_id, p["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(d["attempts"], 1);
    assert_eq!(fakes.received_by("plausible").await.len(), 1);
    assert_eq!(fakes.received_by("plausible").await[0]["headers"]["x-plausible-ip"], site::VISITOR_IP);
}

/// A tenant's `instance_url` cannot reach the operator's internal network unless the operator
/// allows it: the delivery is dead-lettered with the reason, and nothing reaches the address.
#[tokio::test]
async fn private_destinations_are_refused_by_default() {
    let app = spawn_app_with(|s| {
        manual_delivery(s);
        s.delivery.allow_private_destinations = false;
    })
    .await;
    let fakes = FakeProviders::start().await;
    let keys = site::site(&app).await;
    // By IP literal, and by a name that resolves to loopback.
    let by_ip = site::plausible(&app, &fakes, json!({})).await;
    let by_name =
        site::umami(&app, &fakes, json!({"instance_url": fakes.umami_url().replace("127.0.0.1", "localhost")})).await;
    let (_, accepted) = site::track(&app, &keys, site::pageview(&site::visitor())).await;
    let event = accepted["id"].as_str().unwrap();
    assert_eq!(app.drain_outbox_with_retries().await, Pass { claimed: 2, dead: 2, ..Pass::default() });
    for config in [&by_ip, &by_name] {
        let d = site::delivery_in(&app, event, config["id"].as_str().unwrap(), "dead").await;
        assert_eq!(d["attempts"], 1, "dead at once: {d}");
        assert!(d["last_error"].as_str().unwrap().contains("allow_private_destinations"), "{d}");
    }
    assert!(fakes.received().await.is_empty(), "nothing reached the private address");
}

/// Batched, the same: two instances' workers, one Umami config on `/api/batch`, every event once
/// and no request over the limit.
#[tokio::test]
async fn two_instances_send_each_batched_delivery_exactly_once() {
    let app = spawn_app_with(|s| {
        s.delivery.in_flight_initial = 2;
        s.delivery.in_flight_max = 2;
    })
    .await;
    let other = second_instance(&app).await;
    let fakes = FakeProviders::start().await;
    let keys = site::site(&app).await;
    site::umami(&app, &fakes, json!({"endpoint": "batch"})).await;
    for round in 0..3 {
        let batch: Vec<_> = (0..30)
            .map(|i| {
                let mut e = site::pageview(&visitor());
                e["page_url"] = json!(format!("https://www.example.com/page/{round}/{i}"));
                e
            })
            .collect();
        let (s, res) = track(&app, &keys, json!({"batch": batch})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{res}");
    }
    eventually(20, || async {
        let (_, page) =
            app.get(&format!("/v1/tenants/{}/deliveries?status=delivered&limit=500", app.tenant), &app.admin).await;
        (page["items"].as_array().unwrap().len() == 90).then_some(())
    })
    .await;
    other.stop().await.unwrap();
    app.app.stop().await.unwrap();
    let got = fakes.received_by("umami").await;
    let mut pages: Vec<String> = got.iter().map(|r| r["body"]["payload"]["url"].to_string()).collect();
    pages.sort();
    pages.dedup();
    assert_eq!((got.len(), pages.len()), (90, 90), "every event once");
    let batches = fakes.batches().await;
    assert!(batches.iter().all(|b| b["size"].as_u64().unwrap() <= consentgate::providers::umami::BATCH_LIMIT as u64));
    assert!(batches.len() < 90, "sent in batches: {} requests", batches.len());
}

/// A part of a refused batch is sent again only under a lease renewed by the worker that holds
/// it: once the lease has passed to another worker, the first cannot renew it.
#[tokio::test]
async fn only_the_worker_holding_a_lease_renews_it() {
    use consentgate::outbox::claim;
    let (app, fakes, keys) = site::setup().await;
    site::umami(&app, &fakes, json!({"endpoint": "batch"})).await;
    track(&app, &keys, site::pageview(&visitor())).await;
    let umami = consentgate::providers::get("umami").unwrap();
    let lease = chrono::Duration::seconds(60);
    let now = Utc::now();
    let first = claim::claim(&app.db, umami, "w1", 1, lease, now).await.unwrap();
    let ids: Vec<uuid::Uuid> = first.iter().map(|d| d.id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(claim::renew(&app.db, &ids, "w1", lease, now).await.unwrap(), ids, "the holder renews");
    assert!(claim::renew(&app.db, &ids, "w2", lease, now).await.unwrap().is_empty(), "no one else does");
    // The lease passes unrenewed; another worker takes the delivery over.
    let later = now + lease * 2;
    assert!(claim::renew(&app.db, &ids, "w1", lease, later).await.unwrap().is_empty(), "a passed lease is gone");
    let taken = claim::claim(&app.db, umami, "w2", 1, lease, later).await.unwrap();
    assert_eq!(taken.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
    assert!(claim::renew(&app.db, &ids, "w1", lease, later).await.unwrap().is_empty(), "taken over");
    assert_eq!(claim::renew(&app.db, &ids, "w2", lease, later).await.unwrap(), ids);
}
