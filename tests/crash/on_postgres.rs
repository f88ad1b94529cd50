//! PostgreSQL: two instances on one database, one killed with SIGKILL under load; and the
//! database's connections cut under load. They need a server: `TEST_DATABASE_URL` (each test
//! creates its own database there and drops it). Without it (the README's `cargo test` on
//! SQLite) they say so loudly and pass; `.ci/run` runs them in its PostgreSQL step, with it set.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryFilter};
use serde_json::json;
use uuid::Uuid;

use crate::{
    fakes::FakeProviders,
    gateway::{self, Gateway},
    helpers::TestDatabase,
    load,
};

/// A fresh database on `TEST_DATABASE_URL`'s server, or `None` (said loudly) when it is unset.
async fn database(test: &str) -> Option<TestDatabase> {
    if std::env::var_os("TEST_DATABASE_URL").is_some() {
        return Some(TestDatabase::create().await);
    }
    let how = "TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo test --test crash on_postgres::";
    eprintln!("\n*** NOT RUN: {test} needs PostgreSQL; TEST_DATABASE_URL is unset. Run: {how} ***\n");
    None
}

/// A delivery leased by the killed instance: its id and its event's.
struct Leased {
    id: Uuid,
    event: Uuid,
}

/// The pending deliveries leased by a delivery worker of process `pid` (lease owners are named
/// `worker-…@host:pid`) whose lease runs past `until`, read from the database directly: the
/// delivery log would be read through a process, at a later instant under load.
async fn leased_by(db: &DatabaseConnection, pid: u32, until: DateTime<Utc>) -> Vec<Leased> {
    use entity::delivery;
    delivery::Entity::find()
        .filter(delivery::Column::Status.eq("pending"))
        .filter(delivery::Column::LeaseOwner.like(format!("%:{pid}")))
        .filter(delivery::Column::LeaseUntil.gt(until))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|d| Leased { id: d.id, event: d.event_id })
        .collect()
}

/// The database's name in its URL.
fn name_of(url: &str) -> String {
    url::Url::parse(url).unwrap().path().trim_start_matches('/').to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_under_load_lose_no_acknowledged_event() {
    let Some(db) = database("two_instances_one_killed_under_load_lose_no_acknowledged_event").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let fakes = FakeProviders::start().await;
    fakes.behaviour(json!({"plausible": {"delay_ms": 50}})).await;
    fakes.posthog(json!({"delay_ms": 300})).await;
    let admin = gateway::create_tenant(&db.url);
    let mut killed = Gateway::start("pg-killed", &db.url, dir.path()).await;
    let site = gateway::set_up_site(&killed, &admin, &fakes).await;
    let survivor = Gateway::start("pg-survivor", &db.url, dir.path()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let bases = vec![killed.base.clone(), survivor.base.clone()];
    let clients = tokio::spawn(load::run(bases, site.secret_key.clone(), 16, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Killed while its delivery worker holds leases (PostHog answers after 300 ms) that run for
    // another second at least: what it holds right after the SIGKILL is left to the survivor.
    let pid = killed.pid();
    let conn = Database::connect(&db.url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if !leased_by(&conn, pid, Utc::now() + chrono::Duration::seconds(1)).await.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the instance to kill never held a lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    killed.kill9();
    let orphaned = leased_by(&conn, pid, Utc::now()).await;
    conn.close().await.ok();
    assert!(!orphaned.is_empty(), "the killed instance left leased deliveries behind");
    // The killed instance's clients go on posting to the survivor.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ledger = clients.await.unwrap();
    assert!(ledger.acked_under_load > 0 && ledger.cut > 0, "the kill came under load: {ledger:?}");

    // The survivor's workers take the killed instance's leased deliveries over once their lease
    // (3 s here) has passed.
    load::retry(&mut ledger, &survivor.base, &site.secret_key).await;
    let delivered = load::assert_all_delivered(&ledger, &survivor, &site.admin, &fakes).await;
    // The deliveries the killed instance held when it died were sent by the survivor.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for leased in &orphaned {
        let path = format!("/deliveries?event={}", leased.event);
        let (s, page) = crate::helpers::send(http.get(survivor.tenant_url(&path)).bearer_auth(&admin)).await;
        assert_eq!(s.as_u16(), 200, "{page}");
        let d = page["items"].as_array().unwrap().iter().find(|d| d["id"] == leased.id.to_string()).unwrap();
        assert_eq!(d["status"], "delivered", "{d}");
    }
    println!(
        "{}; {} deliveries leased by the killed instance were taken over",
        ledger.report("postgres, two instances, one killed", &delivered),
        orphaned.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_under_load_answer_503_and_recover_without_restart() {
    let Some(db) = database("connections_cut_under_load_answer_503_and_recover_without_restart").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fakes = FakeProviders::start().await;
    let admin = gateway::create_tenant(&db.url);
    let gateway = Gateway::start("pg", &db.url, dir.path()).await;
    let site = gateway::set_up_site(&gateway, &admin, &fakes).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(load::run(vec![gateway.base.clone()], site.secret_key.clone(), 8, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // For about a second, every backend of the test database is terminated, again and again.
    let server = Database::connect(std::env::var("TEST_DATABASE_URL").unwrap()).await.unwrap();
    let cut = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}' AND pid <> pg_backend_pid()",
        name_of(&db.url)
    );
    let (until, mut terminated) = (Instant::now() + Duration::from_secs(1), 0);
    while Instant::now() < until {
        terminated += server
            .query_all_raw(sea_orm::Statement::from_string(server.get_database_backend(), cut.clone()))
            .await
            .unwrap()
            .len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.close().await.ok();
    // Recovery, without a restart: the clients go on for another second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ledger = clients.await.unwrap();
    assert!(terminated > 0, "no backend was terminated");
    assert_eq!(ledger.cut, 0, "the gateway kept answering (no connection to a client was cut): {ledger:?}");
    assert!(ledger.unavailable > 0, "while it could not store, it answered 503: {ledger:?}");
    // After the cuts, the same process stores a new event.
    ledger.to_retry.insert("after-the-cuts".into());
    load::retry(&mut ledger, &gateway.base, &site.secret_key).await;
    assert_eq!(ledger.retried_new, 1, "{ledger:?}");
    let delivered = load::assert_all_delivered(&ledger, &gateway, &site.admin, &fakes).await;
    let recovered = ledger.acked_at.iter().filter(|t| **t > until).min().map(|t| t.duration_since(until));
    println!(
        "{} ({terminated} backends terminated in 1 s; first event stored {recovered:?} after the last cut)",
        ledger.report("postgres, connections cut", &delivered)
    );
}
