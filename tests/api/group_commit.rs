//! Group commit (issue 14): requests hand their rows to the ingest writer, which stores whatever
//! is waiting in one transaction; each request is answered once that commits. Concurrent bursts,
//! repeated idempotency keys inside one burst, backpressure while the writer is stalled by another
//! connection holding the write lock, and SQLite's durability setting.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::StatusCode;
use sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, send},
    site::{self, PAGE, Site},
};

/// A page view from a site's server for `visitor`, marked with `n` (to match answers to rows).
fn server_event(visitor: &str, n: usize, key: &str) -> Value {
    json!({"event_name": "pageview", "page_url": PAGE, "visitor_id": visitor, "idempotency_key": key,
           "event_properties": {"n": n}})
}

async fn post(app: &TestApp, keys: &Site, path: &str, body: Value) -> (StatusCode, Value) {
    send(app.http.post(app.tenant_url(path)).bearer_auth(&keys.secret_key).json(&body)).await
}

async fn metrics(app: &TestApp) -> String {
    app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

fn rejected(text: &str) -> f64 {
    let series = r#"consentgate_ingest_rejected_total{reason="queue_full"}"#;
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Two active configs, a published consent config, a visitor who accepted and one who rejected.
async fn site_with_visitors() -> (TestApp, crate::fakes::FakeProviders, Site, [String; 2]) {
    let (app, fakes, keys) = site::setup().await;
    site::plausible(&app, &fakes, json!({})).await;
    site::umami(&app, &fakes, json!({"required_category": "analytics"})).await;
    app.publish_consent_config(json!({})).await;
    let (yes, no) = (site::visitor(), site::visitor());
    app.consent(&yes, "accept_all", 1).await;
    app.consent(&no, "reject_all", 1).await;
    (app, fakes, keys, [yes, no])
}

#[tokio::test]
async fn a_concurrent_burst_is_stored_with_its_decisions_and_deliveries_and_each_answer_is_its_own() {
    let (app, _fakes, keys, visitors) = site_with_visitors().await;
    const N: usize = 200;
    let answers = join_all((0..N).map(|n| {
        let body = server_event(&visitors[n % 2], n, &format!("burst-{n}"));
        post(&app, &keys, "/events", body)
    }))
    .await;
    let mut ids = std::collections::HashSet::new();
    for (n, (s, a)) in answers.iter().enumerate() {
        assert_eq!(*s, StatusCode::ACCEPTED, "event {n}: {a}");
        assert!(ids.insert(a["id"].as_str().unwrap().to_string()), "event {n} got another's id: {a}");
        let verdicts: Vec<&str> =
            a["decisions"].as_array().unwrap().iter().map(|d| d["decision"].as_str().unwrap()).collect();
        // Accepted: both configs allowed; rejected: Plausible cookie-free, Umami denied.
        assert_eq!(verdicts, if n % 2 == 0 { ["allow", "allow"] } else { ["allow", "deny"] }, "event {n}: {a}");
        let (s, stored) =
            app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, a["id"].as_str().unwrap()), &app.auditor).await;
        assert_eq!(s, StatusCode::OK, "{stored}");
        assert_eq!(stored["event_properties"]["n"], json!(n), "the answer's id is this event's row");
        assert_eq!(stored["idempotency_key"], json!(format!("burst-{n}")));
        for (d, answered) in stored["decisions"].as_array().unwrap().iter().zip(a["decisions"].as_array().unwrap()) {
            assert_eq!((&d["config_id"], &d["reason"]), (&answered["config_id"], &answered["reason"]), "{stored}");
            assert_eq!(d["delivery"].is_object(), d["decision"] == "allow", "a delivery per allowed config: {stored}");
        }
    }
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM analytics_event").await, N as i64);
    let decisions = if app.db.get_database_backend() == DbBackend::Sqlite {
        "SELECT CAST(SUM(json_array_length(decisions)) AS BIGINT) FROM analytics_event"
    } else {
        "SELECT CAST(SUM(jsonb_array_length(decisions)) AS BIGINT) FROM analytics_event"
    };
    assert_eq!(count(&app.db, decisions).await, 2 * N as i64, "each event holds its two decisions");
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM delivery").await, (N + N / 2) as i64);
    // Usage counts summed per batch (on PostgreSQL in each writer's own row of `ingest_usage`), as
    // the config shows them: one denial by consent per rejected visitor's event.
    let (s, umami) = app.get(&format!("/v1/tenants/{}/analytics/umami/configs", app.tenant), &app.auditor).await;
    assert_eq!(s, StatusCode::OK, "{umami}");
    assert_eq!(umami[0]["usage"]["events_denied_by_consent"], json!(N / 2), "{umami}");
}

#[tokio::test]
async fn a_repeated_key_inside_a_concurrent_burst_is_one_event_and_fails_no_batch_mate() {
    let (app, _fakes, keys, visitors) = site_with_visitors().await;
    let mut requests = Vec::new();
    for n in 0..40 {
        requests.push(("/events", server_event(&visitors[0], n, &format!("mate-{n}"))));
    }
    // The same retry, ten times at once; and one key posted to two targets.
    for n in 0..10 {
        requests.push(("/events", server_event(&visitors[0], 100 + n, "order-1")));
    }
    for n in 0..5 {
        requests.push(("/events", server_event(&visitors[0], 200 + n, "order-2")));
        requests.push(("/analytics/umami/events", server_event(&visitors[0], 300 + n, "order-2")));
    }
    let answers = join_all(requests.iter().map(|(path, body)| post(&app, &keys, path, body.clone()))).await;
    for (s, a) in &answers[..40] {
        assert_eq!(*s, StatusCode::ACCEPTED, "a batch-mate of the repeats: {a}");
    }
    let order1 = &answers[40..50];
    let first: Vec<_> = order1.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).collect();
    assert_eq!(first.len(), 1, "one of the ten is stored: {order1:?}");
    for (s, a) in order1 {
        assert!(*s == StatusCode::ACCEPTED || (*s == StatusCode::OK && a["duplicate"] == true), "{a}");
        assert_eq!(a["id"], first[0].1["id"], "every repeat answers with the first event's id");
        assert_eq!(a["decisions"], first[0].1["decisions"]);
    }
    let order2 = &answers[50..];
    let stored: Vec<_> = order2.iter().filter(|(s, _)| *s == StatusCode::ACCEPTED).collect();
    assert_eq!(stored.len(), 1, "{order2:?}");
    let (repeats, conflicts) = order2.iter().fold((0, 0), |(r, c), (s, a)| match *s {
        StatusCode::ACCEPTED => (r, c),
        StatusCode::OK => {
            assert_eq!(a["id"], stored[0].1["id"]);
            (r + 1, c)
        }
        StatusCode::CONFLICT => {
            assert_eq!(a["error"]["code"], "conflict", "{a}");
            (r, c + 1)
        }
        other => panic!("{other}: {a}"),
    });
    // The first target's other four are repeats; the other target's five are refused.
    assert_eq!((repeats, conflicts), (4, 5));
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM analytics_event WHERE idempotency_key = 'order-1'").await, 1);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM analytics_event WHERE idempotency_key = 'order-2'").await, 1);
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM analytics_event").await, 42);
}

/// Another connection holding the write lock: SQLite's `BEGIN IMMEDIATE`, or PostgreSQL's
/// `LOCK TABLE analytics_event` (reads go on; the writer's insert waits).
async fn hold_the_write_lock(app: &TestApp) -> (DatabaseConnection, DatabaseTransaction) {
    let other = Database::connect(&app.app.state.settings.database.url).await.unwrap();
    let txn = match other.get_database_backend() {
        DbBackend::Sqlite => other
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
            .unwrap(),
        _ => {
            let txn = other.begin().await.unwrap();
            txn.execute_unprepared("LOCK TABLE analytics_event IN EXCLUSIVE MODE").await.unwrap();
            txn
        }
    };
    (other, txn)
}

#[tokio::test]
async fn a_full_queue_answers_503_at_once_and_the_queued_requests_commit_when_the_writer_can() {
    const CAPACITY: usize = 3;
    const BURST: usize = 12;
    let (app, _fakes, keys) = site::setup_with(|s| {
        s.ingest.queue_capacity = CAPACITY;
        s.ingest.pg_writers = 1;
    })
    .await;
    // The key's first use is recorded (a write); not while the lock is held.
    let (s, _) = post(&app, &keys, "/events", server_event("warm-up", 0, "warm-up")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let before = rejected(&metrics(&app).await);

    let (other, lock) = hold_the_write_lock(&app).await;
    let app = std::sync::Arc::new(app);
    let keys = std::sync::Arc::new(keys);
    let spawn_post = |n: usize| {
        let (app, keys) = (app.clone(), keys.clone());
        tokio::spawn(async move {
            let res = app
                .http
                .post(app.tenant_url("/events"))
                .bearer_auth(&keys.secret_key)
                .json(&server_event("v", n, &format!("held-{n}")))
                .send()
                .await
                .unwrap();
            let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
            (res.status(), retry, res.json::<Value>().await.unwrap())
        })
    };
    // The first request is taken by the writer, which then waits for the lock.
    let first = spawn_post(0);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let burst: Vec<_> = (1..=BURST).map(spawn_post).collect();
    // The refused ones are answered while the lock is still held.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    lock.rollback().await.unwrap();
    other.close().await.ok();

    let (s, _, a) = first.await.unwrap();
    assert_eq!(s, StatusCode::ACCEPTED, "{a}");
    let mut accepted = vec![a];
    let mut busy = 0;
    for h in burst {
        let (s, retry, body) = h.await.unwrap();
        match s {
            StatusCode::ACCEPTED => accepted.push(body),
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(body["error"]["code"], "unavailable", "{body}");
                assert_eq!(retry.as_deref(), Some("1"), "Retry-After");
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(busy, BURST - CAPACITY, "beyond the queue's {CAPACITY}, each request is refused at once");
    assert_eq!(rejected(&metrics(&app).await) - before, busy as f64, "each refusal is counted");
    // Everything answered 202 is stored.
    for a in &accepted {
        let (s, ev) =
            app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, a["id"].as_str().unwrap()), &app.auditor).await;
        assert_eq!(s, StatusCode::OK, "{ev}");
    }
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM analytics_event").await, 1 + accepted.len() as i64);
}

/// `synchronous = FULL` on every connection of the pool, not only the first: a `202` survives a
/// power loss.
#[tokio::test]
async fn every_sqlite_connection_fsyncs_each_commit() {
    let app = crate::helpers::spawn_app().await;
    if app.db.get_database_backend() != DbBackend::Sqlite {
        return;
    }
    // Hold several connections at once, so each answer comes from another one.
    let txns = join_all((0..4).map(|_| app.db.begin())).await;
    for txn in txns {
        let txn = txn.unwrap();
        let row =
            txn.query_one_raw(Statement::from_string(DbBackend::Sqlite, "PRAGMA synchronous")).await.unwrap().unwrap();
        assert_eq!(row.try_get_by_index::<i32>(0).unwrap(), 2, "2 = FULL");
        txn.rollback().await.unwrap();
    }
}

/// The database becomes unavailable while requests wait for their batch: each gets a 503 (never a
/// 500), and nothing was acknowledged — a batch request too, as a whole (with `Retry-After` and
/// each item's answer), not a 202 whose items say 503: a client that reads only the status (the
/// banner's tracker) would drop them. SQLite: the write lock is held past the busy timeout (10 s);
/// a retry with the same key, once the lock is free, stores each event once. PostgreSQL: the
/// database is dropped under the waiting writer.
#[tokio::test]
async fn requests_waiting_when_the_database_fails_mid_batch_get_503_and_a_retry_stores_once() {
    let (app, _fakes, keys) = site::setup_with(|s| s.ingest.pg_writers = 1).await;
    let (s, _) = post(&app, &keys, "/events", server_event("warm-up", 0, "warm-up")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (other, lock) = hold_the_write_lock(&app).await;
    let waiting = join_all((1..=3).map(|n| post(&app, &keys, "/events", server_event("v", n, &format!("lost-{n}")))));
    // One valid event and one the gateway refuses on its own (no page_url).
    let batch = json!({"batch": [server_event("v", 4, "lost-4"), {"event_name": "x"}]});
    let batch_post = app.http.post(app.tenant_url("/events")).bearer_auth(&keys.secret_key).json(&batch).send();
    let sqlite = app.db.get_database_backend() == DbBackend::Sqlite;
    let (answers, batch_answer) = if sqlite {
        let answers = tokio::join!(waiting, batch_post);
        lock.rollback().await.unwrap();
        answers
    } else {
        let fail = async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let server = std::env::var("TEST_DATABASE_URL").unwrap();
            let name = url::Url::parse(&app.app.state.settings.database.url).unwrap().path()[1..].to_string();
            let admin = Database::connect(&server).await.unwrap();
            admin.execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
            admin.close().await.ok();
        };
        let (answers, batch_answer, ()) = tokio::join!(waiting, batch_post, fail);
        drop(lock);
        (answers, batch_answer)
    };
    other.close().await.ok();
    for (s, body) in &answers {
        assert_eq!(*s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
    }
    let batch_answer = batch_answer.unwrap();
    assert_eq!(batch_answer.status(), StatusCode::SERVICE_UNAVAILABLE, "nothing of the batch was stored");
    assert!(batch_answer.headers().contains_key("retry-after"));
    let body: Value = batch_answer.json().await.unwrap();
    let statuses: Vec<_> = body["results"].as_array().unwrap().iter().map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, [Some(503), Some(422)], "{body}");
    if sqlite {
        for n in 1..=3 {
            let (s, a) = post(&app, &keys, "/events", server_event("v", n, &format!("lost-{n}"))).await;
            assert_eq!(s, StatusCode::ACCEPTED, "the retry is stored: {a}");
        }
        let (s, a) = post(&app, &keys, "/events", batch).await;
        assert_eq!(s, StatusCode::ACCEPTED, "the batch's valid event is stored: {a}");
        assert_eq!(count(&app.db, "SELECT COUNT(*) FROM analytics_event WHERE idempotency_key LIKE 'lost-%'").await, 4);
    }
}

/// Events stored before the key kind was recorded (`key_kind` null) are a repeat for a sender of
/// either kind: the unique index does not see them, the writer's read does.
#[tokio::test]
async fn a_legacy_event_without_a_key_kind_is_a_repeat_for_either_kind() {
    let (app, _fakes, keys) = site::setup().await;
    let (s, first) = post(&app, &keys, "/events", server_event("v", 1, "legacy-1")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    app.db
        .execute_unprepared("UPDATE analytics_event SET key_kind = NULL WHERE idempotency_key = 'legacy-1'")
        .await
        .unwrap();
    let mut browser = site::pageview(&site::visitor());
    browser["idempotency_key"] = json!("legacy-1");
    for (s, again) in
        [post(&app, &keys, "/events", server_event("v", 1, "legacy-1")).await, site::track(&app, &keys, browser).await]
    {
        assert_eq!((s, &again["id"], &again["duplicate"]), (StatusCode::OK, &first["id"], &json!(true)), "{again}");
    }
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM analytics_event WHERE idempotency_key = 'legacy-1'").await, 1);
}

/// A row the database refuses (here a trigger standing in for any constraint) fails its batch;
/// the writer then stores the events one by one, so its batch-mates are stored and answered 202
/// and only the refused one fails.
#[tokio::test]
async fn one_refused_row_does_not_fail_its_batch_mates() {
    let (app, _fakes, keys) = site::setup_with(|s| s.ingest.pg_writers = 1).await;
    let (s, _) = post(&app, &keys, "/events", server_event("warm-up", 0, "warm-up")).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    match app.db.get_database_backend() {
        DbBackend::Sqlite => {
            app.db
                .execute_unprepared(
                    "CREATE TRIGGER poison BEFORE INSERT ON analytics_event WHEN NEW.event_name = 'poison' \
                     BEGIN SELECT RAISE(ABORT, 'refused row'); END",
                )
                .await
                .unwrap();
        }
        _ => {
            app.db
                .execute_unprepared(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                     IF NEW.event_name = 'poison' THEN RAISE EXCEPTION 'refused row'; END IF; RETURN NEW; END $$",
                )
                .await
                .unwrap();
            app.db
                .execute_unprepared(
                    "CREATE TRIGGER poison BEFORE INSERT ON analytics_event FOR EACH ROW EXECUTE FUNCTION poison()",
                )
                .await
                .unwrap();
        }
    }
    // With the writer held up, the burst waits in the queue and is committed as one batch.
    let (other, lock) = hold_the_write_lock(&app).await;
    let first = post(&app, &keys, "/events", server_event("v", 1, "first"));
    let rest = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut bodies: Vec<Value> = (2..=20).map(|n| server_event("v", n, &format!("mate-{n}"))).collect();
        bodies.insert(7, json!({"event_name": "poison", "page_url": PAGE, "idempotency_key": "poison"}));
        let answers = join_all(bodies.into_iter().map(|b| post(&app, &keys, "/events", b)));
        let release = async {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            lock.rollback().await.unwrap();
        };
        tokio::join!(answers, release).0
    };
    let (first, rest) = tokio::join!(first, rest);
    other.close().await.ok();
    assert_eq!(first.0, StatusCode::ACCEPTED, "{}", first.1);
    for (i, (s, a)) in rest.iter().enumerate() {
        if i == 7 {
            assert_eq!((*s, &a["error"]["code"]), (StatusCode::INTERNAL_SERVER_ERROR, &json!("internal")), "{a}");
            assert!(!a.to_string().contains("refused row"), "no internals: {a}");
        } else {
            assert_eq!(*s, StatusCode::ACCEPTED, "a batch-mate: {a}");
        }
    }
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM analytics_event").await, 21, "the warm-up, first, 19 mates");
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM analytics_event WHERE event_name = 'poison'").await, 0);
}

/// Every column of `table`'s row `id`, as SQLite holds it (type and value), by column name.
fn raw_row(path: &str, table: &str, id: uuid::Uuid) -> Vec<(String, rusqlite::types::Value)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn.prepare(&format!("SELECT * FROM {table} WHERE id = ?1")).unwrap();
    let names: Vec<String> = stmt.column_names().iter().map(|n| n.to_string()).collect();
    stmt.query_row([id.as_bytes()], |r| {
        Ok(names.iter().enumerate().map(|(i, n)| (n.clone(), r.get(i).unwrap())).collect())
    })
    .unwrap()
}

/// SQLite's writer stores through its own connection (`ingest::sqlite`), everything else reads and
/// writes through sea-orm: the rows it writes must be the ones sea-orm would write. Each row of a
/// real event (an accepting visitor's page view with every field, its two decisions in it; two deliveries
/// holding the IP and the user agent) is read back through sea-orm, written again through
/// sea-orm under another id, and the two stored rows compared column by column — types and
/// values, times to the digit.
#[tokio::test]
async fn the_sqlite_writer_stores_each_row_exactly_as_sea_orm_would() {
    use entity::{analytics_event, delivery};
    use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
    let (app, _fakes, keys, [yes, _]) = site_with_visitors().await;
    if app.db.get_database_backend() != DbBackend::Sqlite {
        return;
    }
    let path =
        app.app.state.settings.database.url.trim_start_matches("sqlite://").split('?').next().unwrap().to_string();
    let body = json!({"event_name": "signup", "page_url": site::PAGE, "visitor_id": yes, "idempotency_key": "every-field",
        "user_id": "u-1", "session_id": "s-1", "referrer": "https://ref.example/", "title": "Pricing", "language": "de-DE",
        "screen": "1920x1080", "revenue": {"amount": 12.5, "currency": "EUR"}, "event_properties": {"plan": "pro", "n": 1},
        "user_agent": site::CHROME, "ip": "203.0.113.7",
        "occurred_at": (chrono::Utc::now() - chrono::Duration::minutes(90)).to_rfc3339()});
    let (s, a) = post(&app, &keys, "/events", body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{a}");
    let event_id: uuid::Uuid = a["id"].as_str().unwrap().parse().unwrap();

    let same = |table: &str, written: uuid::Uuid, again: uuid::Uuid, differ: &[&str]| {
        let (w, g) = (raw_row(&path, table, written), raw_row(&path, table, again));
        assert_eq!(w.len(), g.len());
        for ((name, wv), (_, gv)) in w.iter().zip(&g) {
            if name != "id" && !differ.contains(&name.as_str()) {
                assert_eq!(wv, gv, "{table}.{name}: the writer stored {wv:?}, sea-orm stores {gv:?}");
            }
        }
    };

    let event = analytics_event::Entity::find_by_id(event_id).one(&app.db).await.unwrap().unwrap();
    assert!(event.user_agent.is_some() && event.revenue.is_some(), "every field is set: {event:?}");
    let mut copy = event.clone().into_active_model();
    let copy_id = uuid::Uuid::now_v7();
    copy.id = Set(copy_id);
    copy.idempotency_key = Set(Some("every-field-again".into()));
    copy.insert(&app.db).await.unwrap();
    same("analytics_event", event_id, copy_id, &["idempotency_key"]);

    let decisions = event.decisions.as_array().expect("the decisions column holds a list");
    let deliveries =
        delivery::Entity::find().filter(delivery::Column::EventId.eq(event_id)).all(&app.db).await.unwrap();
    assert_eq!((decisions.len(), deliveries.len()), (2, 2), "both configs allowed");
    assert!(deliveries.iter().all(|d| d.client_ip.is_some() && d.user_agent.is_some() && d.granted.is_some()));
    for d in deliveries {
        let (id, again) = (d.id, uuid::Uuid::now_v7());
        let mut copy = d.into_active_model();
        copy.id = Set(again);
        copy.insert(&app.db).await.unwrap();
        same("delivery", id, again, &[]);
    }
}
