//! One instance on a SQLite file, killed with SIGKILL under load and restarted on the same file.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;

use crate::{
    fakes::FakeProviders,
    gateway::{self, Gateway},
    load,
};

/// Clients posting at once.
const CLIENTS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("crash.db").display());
    let fakes = FakeProviders::start().await;
    // Slow answers keep deliveries in flight (leased) when the process dies; PostHog stores
    // before its delay, as when a worker dies mid-request.
    fakes.behaviour(json!({"plausible": {"delay_ms": 50}})).await;
    fakes.posthog(json!({"delay_ms": 200})).await;
    let admin = gateway::create_tenant(&db);
    let mut first = Gateway::start("sqlite-1", &db, dir.path()).await;
    let site = gateway::set_up_site(&first, &admin, &fakes).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn(load::run(vec![first.base.clone()], site.secret_key.clone(), CLIENTS, stop.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.kill9();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut ledger = clients.await.unwrap();
    assert!(ledger.acked_under_load > 0 && ledger.cut > 0, "the kill came under load: {ledger:?}");

    let second = Gateway::start("sqlite-2", &db, dir.path()).await;
    load::retry(&mut ledger, &second.base, &site.secret_key).await;
    let delivered = load::assert_all_delivered(&ledger, &second, &site.admin, &fakes).await;
    println!("{}", ledger.report("sqlite, one instance killed and restarted", &delivered));
}
