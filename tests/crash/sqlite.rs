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

/// Another process opens the live database and closes it again — the `sqlite3` shell, a backup
/// script — while the gateway serves: it sees the gateway's connections and leaves their WAL
/// alone, so what the gateway acknowledges afterwards survives a `kill -9` and a restart.
///
/// A sync of the database file through a descriptor of its own (`File::open(..).sync_data()`,
/// every 200 ms after each copy of the WAL) released the gateway's POSIX locks on the file each
/// time: the other process, believing itself the last connection, checkpointed and deleted the
/// WAL the gateway went on writing to — ingest answered `503` from then on, and the consent
/// records its pool acknowledged were gone after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_opening_the_live_database_takes_nothing_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let db = format!("sqlite://{}?mode=rwc", path.display());
    let fakes = FakeProviders::start().await;
    let admin = gateway::create_tenant(&db);
    let mut first = Gateway::start("sqlite-shared-1", &db, dir.path()).await;
    let site = gateway::set_up_site(&first, &admin, &fakes).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let event = |base: String, key: &'static str| {
        let req = http
            .post(format!("{base}/v1/tenants/crash/events"))
            .bearer_auth(&site.secret_key)
            .json(&json!({"event_name": "pageview", "page_url": load::page_of(key), "visitor_id": "v-1",
                    "ip": "203.0.113.9", "idempotency_key": key}));
        async move { crate::helpers::send(req).await }
    };
    let consent = |base: String, visitor: &'static str| {
        let req = http
            .post(format!("{base}/v1/tenants/crash/consent"))
            .header("origin", crate::helpers::SITE)
            .json(&json!({"visitor_id": visitor, "action": "reject_all", "revision": 1, "language": "en"}));
        async move { crate::helpers::send(req).await }
    };

    let (s, before) = event(first.base.clone(), "before").await;
    assert_eq!(s, reqwest::StatusCode::ACCEPTED, "{before}");
    // Several copies of the WAL into the database file, each followed by its sync (200 ms apart).
    tokio::time::sleep(Duration::from_millis(700)).await;
    // What tells another process it is not alone: the shared lock each of the gateway's
    // connections holds on the database file (SQLite's own libraries differ in what they do
    // without it: the bundled one below leaves the WAL alone, Debian 12's `sqlite3` 3.40 and
    // Python's module on it delete it).
    assert!(holds_a_lock_on(first.pid(), &path), "the gateway holds its locks on the database file");
    {
        // This test's process is not the gateway's: SQLite's locking between processes applies.
        let other = rusqlite::Connection::open(&path).unwrap();
        let tenants: i64 = other.query_row("SELECT COUNT(*) FROM tenant", [], |r| r.get(0)).unwrap();
        assert_eq!(tenants, 1, "the other process reads what the gateway committed");
    } // Closed here: were it the last connection, it would checkpoint and delete the WAL.
    assert!(dir.path().join("shared.db-wal").exists(), "the gateway's WAL is still there");
    assert!(holds_a_lock_on(first.pid(), &path), "and its locks");
    let (s, after) = event(first.base.clone(), "after").await;
    assert_eq!(s, reqwest::StatusCode::ACCEPTED, "ingest goes on: {after}");
    let (s, recorded) = consent(first.base.clone(), "visitor-after").await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{recorded}");

    first.kill9();
    let second = Gateway::start("sqlite-shared-2", &db, dir.path()).await;
    for (key, answered) in [("before", &before), ("after", &after)] {
        let (s, again) = event(second.base.clone(), key).await;
        assert_eq!(s, reqwest::StatusCode::OK, "{key}: {again}");
        assert_eq!(again["duplicate"], true, "{key}: stored before the kill: {again}");
        assert_eq!(again["id"], answered["id"], "{key}");
    }
    let (s, records) = crate::helpers::send(
        http.get(second.tenant_url("/consent-records?visitor_id=visitor-after")).bearer_auth(&site.admin),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::OK, "{records}");
    assert_eq!(records["items"].as_array().map(Vec::len), Some(1), "the acknowledged record survived: {records}");
}

/// Whether process `pid` holds a POSIX lock on the file at `path` (Linux's `/proc/locks`).
fn holds_a_lock_on(pid: u32, path: &std::path::Path) -> bool {
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap());
    let locks = std::fs::read_to_string("/proc/locks").expect("Linux's /proc/locks");
    // `1: POSIX  ADVISORY  READ 5652 fe:00:10010753 1073741826 1073742335`
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"POSIX")
            && f.get(4) == Some(&pid.to_string().as_str())
            && f.get(5).and_then(|dev_inode| dev_inode.rsplit(':').next()) == Some(inode.to_string().as_str())
    })
}
