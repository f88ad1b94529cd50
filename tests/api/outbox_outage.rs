//! Deliveries that ride out a long provider outage (issue 13): retried by time until a horizon,
//! a per-config circuit that probes and then releases the backlog paced, leases that never pass
//! under a live request, and what an operator sees meanwhile (`in_flight`, `events_retrying`,
//! `/metrics`).

use std::{collections::BTreeSet, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use consentgate::outbox::{Pass, Worker};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    fakes::FakeProviders,
    helpers::{TestApp, eventually},
    site::{self, Site, delivery_in, track, visitor},
};

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

/// `n` page views of distinct pages, accepted; their event ids.
async fn pageviews(app: &TestApp, keys: &Site, n: usize) -> Vec<String> {
    let batch: Vec<Value> = (0..n)
        .map(|i| {
            let mut e = site::pageview(&visitor());
            e["page_url"] = json!(format!("https://www.example.com/page/{i}"));
            e
        })
        .collect();
    let (s, res) = track(app, keys, json!({"batch": batch})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{res}");
    res["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()).collect()
}

/// Passes at `at` until one claims nothing; what they did together.
async fn settle_at(app: &TestApp, at: DateTime<Utc>) -> Pass {
    let mut total = Pass::default();
    loop {
        let pass = app.run_outbox_at(at).await;
        total += pass;
        if pass.claimed == 0 {
            return total;
        }
    }
}

/// The pages the fake stored for `provider`: each once, and how many requests stored one.
async fn stored_pages(fakes: &FakeProviders, provider: &str) -> (usize, BTreeSet<String>) {
    let stored = fakes.stored(provider).await;
    let pages = stored
        .iter()
        .map(|r| {
            let b = &r["body"];
            b.get("url").or(b.pointer("/payload/url")).map(Value::to_string).unwrap_or_default()
        })
        .collect();
    (stored.len(), pages)
}

async fn metrics(app: &TestApp) -> String {
    app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The value of the `/metrics` line starting with `series` (name and labels).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A metrics recorder of the test's own, on its thread (`/metrics` is process-wide, shared with
/// the tests running alongside): the runtime is single-threaded, so the workers record there.
fn own_recorder() -> metrics_exporter_prometheus::PrometheusRecorder {
    metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder()
}

/// `consentgate_deliveries_total` of `provider` by outcome, as `recorder` counted them.
fn deliveries_counted(
    recorder: &metrics_exporter_prometheus::PrometheusRecorder,
    provider: &str,
) -> Vec<(String, f64)> {
    let text = recorder.handle().render();
    ["delivered", "dropped", "retry", "auth_failure", "dead"]
        .iter()
        .filter_map(|o| {
            let series = format!("consentgate_deliveries_total{{provider=\"{provider}\",outcome=\"{o}\"}}");
            metric(&text, &series).map(|n| (o.to_string(), n))
        })
        .collect()
}

/// Two hours of 503s from Plausible, Umami and PostHog (batched; it deduplicates), the outbox run
/// every minute: nothing is dead, the open circuits send one probe a minute instead of every
/// backoff, the operator sees the trouble, and when the providers are back every event reaches
/// each exactly once.
#[tokio::test]
async fn a_two_hour_outage_ends_with_every_event_delivered_once_and_none_dead() {
    let (app, fakes, keys) = site::setup_with(|s| {
        s.delivery.circuit_failures = 3;
        s.delivery.circuit_probe_secs = 60;
    })
    .await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let u = site::umami(&app, &fakes, json!({})).await;
    // PostHog needs analytics consent: granted by default here.
    app.publish_consent_config(
        json!({"categories": {"analytics": {"default_accepted": true}}, "respect_do_not_track": false}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ph = site::posthog(&app, &fakes, &dir, crate::fakes::POSTHOG_PROJECT_KEY, json!({})).await;
    fakes.behaviour(json!({"plausible": {"status": 503}, "umami": {"status": 503}})).await;
    fakes.posthog(json!({"status": 503})).await;
    let t0 = Utc::now();
    pageviews(&app, &keys, 20).await;

    let mut outage = Pass::default();
    for minute in 0..=120 {
        outage += settle_at(&app, t0 + Duration::minutes(minute)).await;
        if minute == 60 {
            for (provider, config) in [("plausible", &p), ("umami", &u), ("posthog", &ph)] {
                let c = site::config(&app, provider, &id(config)).await;
                assert_eq!(c["circuit"]["state"], "open", "{c}");
                // The circuit is the provider's trouble, not a lifecycle status: the config stays active.
                assert_eq!((c["status"].as_str(), &c["status_reason"]), (Some("active"), &Value::Null), "{c}");
                assert!(c["circuit"]["consecutive_failures"].as_i64().unwrap() >= 3, "{c}");
                assert!(c["circuit"]["since"].is_string(), "{c}");
                let usage = &c["usage"];
                assert_eq!((usage["events_retrying"].as_i64(), usage["events_failed"].as_i64()), (Some(20), Some(0)));
                let text = metrics(&app).await;
                let labels = format!("{{provider=\"{provider}\",config=\"{}\"", id(config));
                assert_eq!(metric(&text, &format!("consentgate_outbox_depth{labels}}}")), Some(20.0), "{text}");
                let oldest = metric(&text, &format!("consentgate_outbox_oldest_pending_seconds{labels}}}")).unwrap();
                assert!(oldest > 0.0, "{text}");
                assert_eq!(metric(&text, &format!("consentgate_circuit_state{labels},state=\"open\"}}")), Some(1.0));
                assert_eq!(metric(&text, &format!("consentgate_circuit_state{labels},state=\"closed\"}}")), Some(0.0));
            }
        }
    }
    assert_eq!((outage.delivered, outage.dead, outage.expired), (0, 0, 0), "{outage:?}");
    for provider in ["plausible", "umami", "posthog"] {
        let tried = fakes.received_by(provider).await.len();
        // The first round (4 requests in flight at once) opened the circuit; then a probe a minute.
        assert!(tried <= 4 + 120, "{provider}: {tried} requests during the outage");
    }

    fakes.behaviour(json!({"plausible": {"status": null}, "umami": {"status": null}})).await;
    fakes.posthog(json!({"status": null})).await;
    let back = settle_at(&app, t0 + Duration::minutes(121)).await;
    assert_eq!((back.delivered, back.dead, back.expired), (60, 0, 0), "{back:?}");
    let posthog = fakes.posthog_events().await;
    assert_eq!(posthog.len(), 20, "{posthog:#?}");
    assert!(posthog.iter().all(|e| e["copies"] == 1), "PostHog got every event once: {posthog:#?}");
    for (provider, config) in [("plausible", &p), ("umami", &u), ("posthog", &ph)] {
        if provider != "posthog" {
            let (stored, pages) = stored_pages(&fakes, provider).await;
            assert_eq!((stored, pages.len()), (20, 20), "{provider}: every event exactly once");
        }
        let c = site::config(&app, provider, &id(config)).await;
        assert_eq!(
            (c["circuit"]["state"].as_str(), c["circuit"]["consecutive_failures"].as_i64()),
            (Some("closed"), Some(0))
        );
        let usage = &c["usage"];
        assert_eq!(
            (usage["events_sent"].as_i64(), usage["events_failed"].as_i64(), usage["events_retrying"].as_i64()),
            (Some(20), Some(0), Some(0)),
            "{usage}"
        );
        let text = metrics(&app).await;
        let labels = format!("{{provider=\"{provider}\",config=\"{}\"", id(config));
        assert_eq!(metric(&text, &format!("consentgate_outbox_depth{labels}}}")), Some(0.0), "{text}");
        assert_eq!(metric(&text, &format!("consentgate_circuit_state{labels},state=\"closed\"}}")), Some(1.0));
    }
}

/// When a probe succeeds, the waiting deliveries are due again at once — not at the end of a
/// backoff grown during the outage — but paced: `circuit_release_per_sec` per second.
#[tokio::test]
async fn a_successful_probe_releases_the_waiting_deliveries_paced() {
    let (app, fakes, keys) = site::setup_with(|s| {
        s.delivery.circuit_failures = 2;
        s.delivery.circuit_probe_secs = 60;
        s.delivery.circuit_release_per_sec = 5;
        // Backoffs long enough that, without the release, nothing would be due for an hour.
        s.delivery.backoff_base_ms = 3_600_000;
        s.delivery.backoff_max_ms = 3_600_000;
    })
    .await;
    let u = site::umami(&app, &fakes, json!({})).await;
    fakes.behaviour(json!({"umami": {"status": 503}})).await;
    pageviews(&app, &keys, 12).await;
    let failed = settle_at(&app, Utc::now()).await;
    assert_eq!((failed.claimed, failed.retried), (4, 4), "one round, then the circuit opened: {failed:?}");
    assert_eq!(site::config(&app, "umami", &id(&u)).await["circuit"]["state"], "open");
    // Not yet time for a probe.
    assert_eq!(app.run_outbox_at(Utc::now() + Duration::seconds(30)).await, Pass::default());

    fakes.behaviour(json!({"umami": {"status": null}})).await;
    let probe = app.run_outbox_at(Utc::now() + Duration::seconds(61)).await;
    assert_eq!(probe, Pass { claimed: 1, delivered: 1, ..Pass::default() }, "one probe");
    assert_eq!(site::config(&app, "umami", &id(&u)).await["circuit"]["state"], "closed");
    let (_, page) =
        app.get(&format!("/v1/tenants/{}/deliveries?status=pending&limit=100", app.tenant), &app.admin).await;
    let mut due: Vec<DateTime<Utc>> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["next_attempt_at"].as_str().unwrap().parse().unwrap())
        .collect();
    due.sort();
    assert_eq!(due.len(), 11);
    // Waves of 5, a second apart.
    let waves: Vec<i64> = due.iter().map(|at| (*at - due[0]).num_milliseconds() / 1000).collect();
    assert_eq!(waves, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2], "{due:?}");
    assert!(due[0] <= Utc::now(), "the first wave is due at once");

    let rest = settle_at(&app, Utc::now() + Duration::seconds(3)).await;
    assert_eq!((rest.delivered, rest.dead), (11, 0), "{rest:?}");
    let (stored, pages) = stored_pages(&fakes, "umami").await;
    assert_eq!((stored, pages.len()), (12, 12), "every event once");
}

/// A provider answering after 3 s and a worker lease of 1 s (start-up refuses such settings;
/// the workers are built directly here): the worker renews its lease while the requests are in
/// flight, so another worker finds nothing to claim and the provider gets every event once — and
/// the delivery metric counts each once (the symptom: 44 deliveries counted for 24
/// events). The deliveries show meanwhile that they are in flight, and who sends them.
#[tokio::test]
async fn a_slow_provider_with_a_short_lease_sends_nothing_twice() {
    // `/metrics` is process-wide, shared with the tests running alongside in this binary, and
    // `consentgate_deliveries_total` has no config label: this test counts with a recorder of its
    // own instead, on its thread — the runtime is single-threaded, so both workers record there.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let counted = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (app, fakes, keys) = site::setup().await;
    site::umami(&app, &fakes, json!({})).await;
    pageviews(&app, &keys, 3).await;
    fakes.behaviour(json!({"umami": {"delay_ms": 3000}})).await;
    let mut settings = app.app.state.settings.delivery.clone();
    settings.lease_secs = 1;
    settings.request_timeout_ms = 10_000;
    let worker = || Arc::new(Worker::new(app.db.clone(), settings.clone(), app.app.state.outbox.secrets()).unwrap());
    let (first, second) = (worker(), worker());
    let sending = tokio::spawn({
        let first = first.clone();
        async move { first.run_once(Utc::now()).await }
    });
    let in_flight = eventually(5, || async {
        let (_, page) = app.get(&format!("/v1/tenants/{}/deliveries?status=pending", app.tenant), &app.admin).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 3 && items.iter().all(|d| d["in_flight"].is_object())).then_some(items)
    })
    .await;
    for d in &in_flight {
        assert_eq!(d["attempts"], 0, "{d}");
        let owner = d["in_flight"]["owner"].as_str().unwrap();
        assert!(owner.starts_with("worker-") && owner.contains(&format!(":{}", std::process::id())), "{d}");
        assert!(d["in_flight"]["since"].is_string() && d["in_flight"]["lease_until"].is_string(), "{d}");
    }
    // Past the lease the first worker took (1 s), the requests still in flight.
    tokio::time::sleep(std::time::Duration::from_millis(1_700)).await;
    assert_eq!(second.run_once(Utc::now()).await, Pass::default(), "the lease was renewed under the live request");
    let done = sending.await.unwrap();
    assert_eq!(done, Pass { claimed: 3, delivered: 3, ..Pass::default() });
    assert_eq!(fakes.received_by("umami").await.len(), 3, "nothing sent twice");
    let text = counted.render();
    let outcome =
        |o: &str| metric(&text, &format!("consentgate_deliveries_total{{provider=\"umami\",outcome=\"{o}\"}}"));
    assert_eq!(outcome("delivered"), Some(3.0), "one delivered delivery counted per event: {text}");
    for other in ["retry", "dead", "dropped", "auth_failure"] {
        assert_eq!(outcome(other), None, "{text}");
    }
    let (stored, pages) = stored_pages(&fakes, "umami").await;
    assert_eq!((stored, pages.len()), (3, 3));
    let (_, page) = app.get(&format!("/v1/tenants/{}/deliveries?status=delivered", app.tenant), &app.admin).await;
    assert!(page["items"].as_array().unwrap().iter().all(|d| d.get("in_flight").is_none()), "{page}");
}

/// A lease another worker took over while the request was in flight (this one stalled past it):
/// the late answer is recorded only for the deliveries whose lease is still this worker's; the
/// others stay the other worker's — pending, unattempted, not counted in the config's usage.
#[tokio::test]
async fn a_late_outcome_is_recorded_only_where_the_lease_is_still_held() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let (app, fakes, keys) = site::setup().await;
    let umami = site::umami(&app, &fakes, json!({"endpoint": "batch"})).await;
    pageviews(&app, &keys, 3).await;
    fakes.behaviour(json!({"umami": {"delay_ms": 1500}})).await;
    let worker =
        Worker::new(app.db.clone(), app.app.state.settings.delivery.clone(), app.app.state.outbox.secrets()).unwrap();
    let sending = tokio::spawn(async move { worker.run_once(Utc::now()).await });
    let in_flight = eventually(5, || async {
        let (_, page) = app.get(&format!("/v1/tenants/{}/deliveries?status=pending", app.tenant), &app.admin).await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 3 && items.iter().all(|d| d["in_flight"].is_object())).then_some(items)
    })
    .await;
    let taken: Vec<uuid::Uuid> = in_flight[..2].iter().map(|d| id(d).parse().unwrap()).collect();
    let other = "worker-other@elsewhere:1";
    entity::delivery::Entity::update_many()
        .col_expr(entity::delivery::Column::LeaseOwner, Expr::value(other))
        .filter(entity::delivery::Column::Id.is_in(taken.clone()))
        .exec(&app.db)
        .await
        .unwrap();
    let done = sending.await.unwrap();
    assert_eq!(done, Pass { claimed: 3, delivered: 1, lease_lost: 2, ..Pass::default() });
    assert_eq!(fakes.received_by("umami").await.len(), 3, "each sent once");
    let list = |status: &'static str| {
        let app = &app;
        async move {
            let (_, page) =
                app.get(&format!("/v1/tenants/{}/deliveries?status={status}", app.tenant), &app.admin).await;
            page["items"].as_array().cloned().unwrap_or_default()
        }
    };
    let pending = list("pending").await;
    let mut ids: Vec<uuid::Uuid> = pending.iter().map(|d| id(d).parse().unwrap()).collect();
    ids.sort();
    let mut expected = taken.clone();
    expected.sort();
    assert_eq!(ids, expected, "{pending:?}");
    for d in &pending {
        assert_eq!((d["attempts"].as_i64(), d["in_flight"]["owner"].as_str()), (Some(0), Some(other)), "{d}");
    }
    let delivered = list("delivered").await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["attempts"], 1, "{delivered:?}");
    assert!(delivered[0].get("in_flight").is_none(), "{delivered:?}");
    let usage = &site::config(&app, "umami", &id(&umami)).await["usage"];
    assert_eq!((usage["events_sent"].as_i64(), usage["events_failed"].as_i64()), (Some(1), Some(0)), "{usage}");
}

/// A paused config's deliveries wait against the same horizon; dead-lettered at it they say so,
/// and a replay sends them with a new horizon.
#[tokio::test]
async fn deliveries_of_a_paused_config_end_at_the_horizon_and_stay_replayable() {
    let recorder = own_recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (app, fakes, keys) = site::setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let event = pageviews(&app, &keys, 1).await.remove(0);
    let (s, c) = site::patch_config(&app, "plausible", &id(&p), json!({"status": "paused"})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let d = delivery_in(&app, &event, &id(&p), "pending").await;
    let arrived: DateTime<Utc> = d["created_at"].as_str().unwrap().parse().unwrap();
    let expires: DateTime<Utc> = d["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires, arrived + Duration::hours(72), "{d}");
    assert_eq!(app.run_outbox_at(expires - Duration::minutes(1)).await, Pass::default(), "still waiting");
    assert_eq!(app.run_outbox_at(expires + Duration::seconds(1)).await, Pass { expired: 1, ..Pass::default() });
    let d = delivery_in(&app, &event, &id(&p), "dead").await;
    assert_eq!(d["last_error"], "retry horizon reached (72 h after the event arrived); last: never attempted");
    assert_eq!(site::config(&app, "plausible", &id(&p)).await["usage"]["events_failed"], 1);
    assert_eq!(deliveries_counted(&recorder, "plausible"), [("dead".to_string(), 1.0)], "/metrics counts it too");

    site::patch_config(&app, "plausible", &id(&p), json!({"status": "active"})).await;
    let (s, replayed) =
        app.post(&format!("/v1/tenants/{}/deliveries/{}/replay", app.tenant, id(&d)), &app.admin, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["status"], "pending");
    let renewed: DateTime<Utc> = replayed["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(renewed > Utc::now() + Duration::hours(71), "a new horizon from the replay: {replayed}");
    assert_eq!(app.drain_outbox().await, Pass { claimed: 1, delivered: 1, ..Pass::default() });
    assert_eq!(stored_pages(&fakes, "plausible").await.0, 1);
}

/// A lease that does not outlast the provider request stops start-up, naming both keys.
#[test]
fn a_lease_not_longer_than_the_request_timeout_stops_start_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .env("CONSENTGATE__DELIVERY__LEASE_SECS", "5")
        .env("CONSENTGATE__DELIVERY__REQUEST_TIMEOUT_MS", "7000")
        .args(["migrate"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("delivery.lease_secs") && err.contains("delivery.request_timeout_ms"), "{err}");
}

/// GA4 takes events at most 72 hours old (`Provider::max_event_age`): an older one is never
/// sent — dead-lettered saying so — and a replay of it is refused with that reason.
#[tokio::test]
async fn a_replay_past_the_providers_own_age_limit_is_refused_with_that_reason() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let (app, fakes, keys) = site::setup().await;
    let dir = tempfile::tempdir().unwrap();
    let g = ga4(&app, &fakes, &dir).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let event = pageviews_of(&app, &keys, &v).await;
    // The delivery waited (an outage) until the event was 73 hours old.
    entity::analytics_event::Entity::update_many()
        .col_expr(entity::analytics_event::Column::OccurredAt, Expr::value(Utc::now() - Duration::hours(73)))
        .filter(entity::analytics_event::Column::Id.eq(uuid::Uuid::parse_str(&event).unwrap()))
        .exec(&app.db)
        .await
        .unwrap();
    assert_eq!(app.drain_outbox().await, Pass { claimed: 1, dead: 1, ..Pass::default() });
    let d = delivery_in(&app, &event, &id(&g), "dead").await;
    assert_eq!(d["last_error"], "the event is older than ga4 accepts (72 h after it occurred)", "{d}");
    assert!(fakes.received_by("ga4").await.is_empty(), "nothing sent");
    let (s, refused) =
        app.post(&format!("/v1/tenants/{}/deliveries/{}/replay", app.tenant, id(&d)), &app.admin, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{refused}");
    assert!(refused.to_string().contains("the event is older than ga4 accepts"), "{refused}");
    let (s, all) = app
        .post(&format!("{}/{}/replay-dead-letters", site::configs_path(&app, "ga4"), id(&g)), &app.admin, json!({}))
        .await;
    assert_eq!((s, all["replayed"].as_i64()), (StatusCode::OK, Some(0)), "{all}");
    delivery_in(&app, &event, &id(&g), "dead").await;
}

/// One page view of visitor `v`, accepted; its event id.
async fn pageviews_of(app: &TestApp, keys: &Site, v: &str) -> String {
    let (s, res) = track(app, keys, site::pageview(v)).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{res}");
    id(&res)
}

/// An active GA4 config (its api secret in a file under `dir`), and a published consent config
/// accepting analytics by default.
async fn ga4(app: &TestApp, fakes: &FakeProviders, dir: &tempfile::TempDir) -> Value {
    let secret = dir.path().join("ga4-api-secret");
    std::fs::write(&secret, "ga4-test-secret").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let g = site::create_config(
        app,
        "ga4",
        json!({"display_name": "GA4", "measurement_id": "G-TEST123", "endpoint_url": fakes.ga4_url(),
               "status": "active", "credentials": {"api_secret_ref": format!("file:{}", secret.display())}}),
    )
    .await;
    app.publish_consent_config(
        json!({"categories": {"analytics": {"default_accepted": true}}, "respect_do_not_track": false}),
    )
    .await;
    g
}

/// A config driven to `error` by repeated 401s sends nothing, and its deliveries wait against the
/// same horizon as any: dead-lettered at it they say so, the 401 as the last error, and once the
/// credentials are fixed a replay sends them.
#[tokio::test]
async fn deliveries_of_a_config_in_error_end_at_the_horizon_and_stay_replayable() {
    let (app, fakes, keys) = site::setup().await;
    let u = site::umami(&app, &fakes, json!({})).await;
    fakes.behaviour(json!({"umami": {"status": 401}})).await;
    let event = pageviews(&app, &keys, 1).await.remove(0);
    // Retried until the third 401 in a row (`auth_failures_before_error`) puts the config in error.
    assert_eq!(app.drain_outbox_with_retries().await, Pass { claimed: 3, retried: 3, ..Pass::default() });
    let c = site::config(&app, "umami", &id(&u)).await;
    assert_eq!(c["status"], "error", "{c}");
    assert_eq!((c["usage"]["events_retrying"].as_i64(), c["usage"]["events_failed"].as_i64()), (Some(1), Some(0)));
    let d = delivery_in(&app, &event, &id(&u), "pending").await;
    let arrived: DateTime<Utc> = d["created_at"].as_str().unwrap().parse().unwrap();
    let expires: DateTime<Utc> = d["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires, arrived + Duration::hours(72), "{d}");

    assert_eq!(app.run_outbox_at(expires - Duration::minutes(1)).await, Pass::default(), "still waiting");
    assert_eq!(app.run_outbox_at(expires + Duration::seconds(1)).await, Pass { expired: 1, ..Pass::default() });
    assert_eq!(fakes.received_by("umami").await.len(), 3, "nothing sent while the config was in error");
    let d = delivery_in(&app, &event, &id(&u), "dead").await;
    let why = d["last_error"].as_str().unwrap();
    assert!(
        why.starts_with("retry horizon reached (72 h after the event arrived); last: ") && why.contains("401"),
        "{d}"
    );
    let c = site::config(&app, "umami", &id(&u)).await;
    assert_eq!((c["usage"]["events_retrying"].as_i64(), c["usage"]["events_failed"].as_i64()), (Some(0), Some(1)));

    fakes.behaviour(json!({"umami": {"status": null}})).await;
    let (s, c) = site::patch_config(&app, "umami", &id(&u), json!({"status": "active"})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (s, replayed) =
        app.post(&format!("/v1/tenants/{}/deliveries/{}/replay", app.tenant, id(&d)), &app.admin, json!({})).await;
    assert_eq!((s, replayed["status"].as_str()), (StatusCode::OK, Some("pending")), "{replayed}");
    assert_eq!(app.drain_outbox().await, Pass { claimed: 1, delivered: 1, ..Pass::default() });
    assert_eq!(stored_pages(&fakes, "umami").await.0, 1);
}

/// The worker's own horizon check, not the sweep before the claim: a delivery whose attempt fails
/// in the last second before its horizon is dead-lettered by the worker at once, saying so with
/// the provider's answer — no retry is scheduled at or past the horizon.
#[tokio::test]
async fn a_failure_in_the_last_second_before_the_horizon_is_dead_lettered_by_the_worker() {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    let recorder = own_recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (app, fakes, keys) = site::setup().await;
    let u = site::umami(&app, &fakes, json!({})).await;
    fakes.behaviour(json!({"umami": {"status": 503}})).await;
    let event = pageviews(&app, &keys, 1).await.remove(0);
    // The event arrived 72 h ago, less a second: its horizon is a second away.
    let horizon = Utc::now() + Duration::seconds(1);
    entity::delivery::Entity::update_many()
        .col_expr(entity::delivery::Column::CreatedAt, Expr::value(horizon - Duration::hours(72)))
        .filter(entity::delivery::Column::EventId.eq(uuid::Uuid::parse_str(&event).unwrap()))
        .exec(&app.db)
        .await
        .unwrap();
    // A pass just before the horizon: the sweep leaves the delivery (not past it), the claim
    // takes it (due), and the 503 comes back within the last second.
    let pass = app.run_outbox_at(horizon - Duration::milliseconds(1)).await;
    assert_eq!(pass, Pass { claimed: 1, dead: 1, ..Pass::default() }, "dead by the worker, not expired by the sweep");
    assert_eq!(fakes.received_by("umami").await.len(), 1, "it was tried");
    let d = delivery_in(&app, &event, &id(&u), "dead").await;
    let why = d["last_error"].as_str().unwrap();
    assert!(
        why.starts_with("retry horizon reached (72 h after the event arrived); last: ") && why.contains("503"),
        "{d}"
    );
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(deliveries_counted(&recorder, "umami"), [("dead".to_string(), 1.0)], "counted as what it became");
    let usage = &site::config(&app, "umami", &id(&u)).await["usage"];
    assert_eq!((usage["events_retrying"].as_i64(), usage["events_failed"].as_i64()), (Some(0), Some(1)), "{usage}");
}

/// GA4 refuses events older than 72 h: with `delivery.retry_horizon_hours = 100` its deliveries
/// still end at 72 h, while a Plausible delivery of the same event waits the full 100 h.
#[tokio::test]
async fn a_ga4_delivery_ends_at_its_own_age_limit_under_a_longer_horizon() {
    let (app, fakes, keys) = site::setup().await;
    let dir = tempfile::tempdir().unwrap();
    let g = ga4(&app, &fakes, &dir).await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let event = pageviews_of(&app, &keys, &v).await;
    // Both wait (paused), so only the horizon ends them.
    for (provider, c) in [("ga4", &g), ("plausible", &p)] {
        let (s, c) = site::patch_config(&app, provider, &id(c), json!({"status": "paused"})).await;
        assert_eq!(s, StatusCode::OK, "{c}");
    }
    let arrived: DateTime<Utc> =
        delivery_in(&app, &event, &id(&g), "pending").await["created_at"].as_str().unwrap().parse().unwrap();
    // The outbox with a 100 h horizon. (A worker of its own: the API shows `expires_at` with the
    // horizon the first app of this test process started with, so the app keeps the default.)
    let mut settings = app.app.state.settings.delivery.clone();
    settings.retry_horizon_hours = 100;
    let worker = Worker::new(app.db.clone(), settings, app.app.state.outbox.secrets()).unwrap();

    let h72 = worker.run_once(arrived + Duration::hours(72) + Duration::seconds(1)).await;
    assert_eq!(h72, Pass { expired: 1, ..Pass::default() }, "GA4's at 72 h");
    let d = delivery_in(&app, &event, &id(&g), "dead").await;
    assert_eq!(d["last_error"], "retry horizon reached (72 h after the event arrived); last: never attempted", "{d}");
    delivery_in(&app, &event, &id(&p), "pending").await;

    assert_eq!(worker.run_once(arrived + Duration::hours(100) - Duration::minutes(1)).await, Pass::default());
    let h100 = worker.run_once(arrived + Duration::hours(100) + Duration::seconds(1)).await;
    assert_eq!(h100, Pass { expired: 1, ..Pass::default() }, "Plausible's at 100 h");
    let d = delivery_in(&app, &event, &id(&p), "dead").await;
    assert_eq!(d["last_error"], "retry horizon reached (100 h after the event arrived); last: never attempted", "{d}");
    assert!(fakes.received_by("ga4").await.is_empty() && fakes.received_by("plausible").await.is_empty());
}

/// While a config's circuit is open, every one of its pending deliveries counts in
/// `events_retrying` — also those never tried: held back by the circuit, they wait because of the
/// provider's trouble too (events arriving during the outage, the rest of the first round). Once
/// the circuit closes, only the ones that failed count until they are sent.
#[tokio::test]
async fn while_the_circuit_is_open_every_waiting_delivery_counts_as_retrying() {
    let (app, fakes, keys) = site::setup_with(|s| {
        s.delivery.circuit_failures = 2;
        s.delivery.circuit_probe_secs = 60;
    })
    .await;
    let u = site::umami(&app, &fakes, json!({})).await;
    let usage = || async { site::config(&app, "umami", &id(&u)).await["usage"].clone() };
    fakes.behaviour(json!({"umami": {"status": 503}})).await;
    pageviews(&app, &keys, 6).await;
    let failed = settle_at(&app, Utc::now()).await;
    assert_eq!((failed.claimed, failed.retried), (4, 4), "one round, then the circuit opened: {failed:?}");
    assert_eq!(site::config(&app, "umami", &id(&u)).await["circuit"]["state"], "open");
    assert_eq!(usage().await["events_retrying"], 6, "4 failed, 2 held back by the circuit");
    pageviews(&app, &keys, 3).await;
    assert_eq!(usage().await["events_retrying"], 9, "arrivals during the outage count too");
    // The admin pages say the same as the API: the providers' table and the config's own page
    // (delivered, dropped, waiting, retrying, then dead).
    let mut b = crate::admin::Browser::new(&app);
    b.sign_in(&app.auditor).await;
    let counts = "<td>0</td><td>0</td><td>9</td><td>9</td><td";
    for page in ["/admin/providers".to_string(), format!("/admin/providers/umami/{}", id(&u))] {
        let (s, html) = b.get(&page).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        assert!(html.contains(counts), "{page}: {html}");
    }

    fakes.behaviour(json!({"umami": {"status": null}})).await;
    let probe = app.run_outbox_at(Utc::now() + Duration::seconds(61)).await;
    assert_eq!(probe, Pass { claimed: 1, delivered: 1, ..Pass::default() }, "one probe");
    assert_eq!(site::config(&app, "umami", &id(&u)).await["circuit"]["state"], "closed");
    // The probe was one never tried (the earliest due); of the 8 left, the 4 that failed count.
    assert_eq!(usage().await["events_retrying"], 4);
    let rest = settle_at(&app, Utc::now() + Duration::seconds(2)).await;
    assert_eq!((rest.delivered, rest.dead), (8, 0), "{rest:?}");
    let u = usage().await;
    assert_eq!((u["events_retrying"].as_i64(), u["events_sent"].as_i64()), (Some(0), Some(9)), "{u}");
}

/// `expires_at` on a waiting delivery follows this app's `retry_horizon_hours`, in the delivery
/// log and in the event view — not the first app's in the process (it was a process-wide value
/// set by whichever app started first).
#[tokio::test]
async fn a_waiting_deliverys_expiry_follows_this_apps_retry_horizon() {
    for hours in [100, 30] {
        let (app, fakes, keys) = site::setup_with(|s| s.delivery.retry_horizon_hours = hours).await;
        let p = site::plausible(&app, &fakes, json!({})).await;
        let event = &pageviews(&app, &keys, 1).await[0];
        let d = delivery_in(&app, event, &id(&p), "pending").await;
        let at = |v: &Value| v.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
        assert_eq!(at(&d["expires_at"]) - at(&d["created_at"]), Duration::hours(hours as i64), "{d}");
        let (s, view) = app.get(&format!("/v1/tenants/{}/events/{event}", app.tenant), &app.admin).await;
        assert_eq!(s, StatusCode::OK, "{view}");
        assert_eq!(view["decisions"][0]["delivery"]["expires_at"], d["expires_at"], "{view}");
    }
}

/// For the next second, the database refuses every write of a delivery's outcome (an `UPDATE`
/// of `attempts`): a trigger, as a lock conflict, a deadlock PostgreSQL broke or a dropped
/// connection would refuse it. Claims still work.
async fn refuse_outcome_writes_for_a_second(app: &TestApp) {
    use sea_orm::ConnectionTrait;
    let sql: &[&str] = if crate::helpers::backend() == "postgres" {
        &[
            "CREATE TABLE refuse_until AS SELECT clock_timestamp() + interval '1 second' AS t",
            "CREATE FUNCTION refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF clock_timestamp() < (SELECT t FROM refuse_until) THEN RAISE EXCEPTION 'injected: outcome refused'; \
             END IF; RETURN NEW; END $$",
            "CREATE TRIGGER refuse_outcome BEFORE UPDATE OF attempts ON delivery \
             FOR EACH ROW EXECUTE FUNCTION refuse_outcome()",
        ]
    } else {
        &[
            "CREATE TABLE refuse_until AS SELECT julianday('now') + 1.0 / 86400 AS t",
            "CREATE TRIGGER refuse_outcome BEFORE UPDATE OF attempts ON delivery \
             WHEN julianday('now') < (SELECT t FROM refuse_until) \
             BEGIN SELECT RAISE(ABORT, 'injected: outcome refused'); END",
        ]
    };
    for s in sql {
        app.db.execute_unprepared(s).await.unwrap();
    }
}

/// Plausible stored the event, then the outcome's write fails for a moment: the worker writes it
/// again, so the delivery is recorded `delivered` by the same pass — and a pass past every lease
/// does not send the event a second time (Plausible has no idempotency key: a duplicate visit).
#[tokio::test]
async fn an_outcome_write_that_fails_for_a_moment_is_written_again_not_resent() {
    let recorder = own_recorder();
    let _local = metrics::set_default_local_recorder(&recorder);
    let (app, fakes, keys) = site::setup().await;
    let p = site::plausible(&app, &fakes, json!({})).await;
    let event = pageviews(&app, &keys, 1).await.remove(0);
    refuse_outcome_writes_for_a_second(&app).await;
    assert_eq!(app.run_outbox_at(Utc::now()).await, Pass { claimed: 1, delivered: 1, ..Pass::default() });
    let retries = metric(&recorder.handle().render(), "consentgate_delivery_outcome_write_retries_total");
    assert!(retries >= Some(1.0), "the write was refused at least once: {retries:?}");
    delivery_in(&app, &event, &id(&p), "delivered").await;
    assert_eq!(app.run_outbox_at(Utc::now() + Duration::minutes(5)).await, Pass::default(), "nothing left to send");
    assert_eq!(fakes.received_by("plausible").await.len(), 1, "sent once");
}
