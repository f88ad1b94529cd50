//! The durable floor for `scripts/bench.sh`: the ceiling's bare axum server (tests/bench/ceiling.rs)
//! that also stores each event before answering, the way the least a durable `202` needs — the
//! body in one SQLite table in WAL mode, a unique index on its idempotency key (the duplicate
//! check at insert time), group commit (one writer thread takes whatever is waiting into one
//! transaction) and the WAL fsynced on a thread of its own before the batch is answered, as the
//! gateway does (src/ingest/writer.rs, src/ingest/wal_sync.rs). No authentication, validation,
//! consent, decisions or deliveries: what storing an event durably costs on this machine before
//! any of the gateway's own work, so that the gateway's ratio to the ceiling can be read against
//! what durability alone allows.
//!
//! `bench_durable DATABASE_FILE`: listens on 127.0.0.1 (`BENCH_PORT`, else a free port) and
//! prints `{"port": N}` on stdout.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    routing::post,
};
use tokio::sync::{mpsc, oneshot};

/// One event on its way to the writer: its key, its body, where its answer goes.
struct Job {
    key: String,
    body: Bytes,
    reply: oneshot::Sender<Option<bool>>,
}

#[path = "listen.rs"]
mod listen;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).expect("bench_durable DATABASE_FILE");
    let conn = rusqlite::Connection::open(&path).map_err(std::io::Error::other)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         CREATE TABLE IF NOT EXISTS event (id INTEGER PRIMARY KEY, idempotency_key TEXT NOT NULL UNIQUE, \
         received_at TEXT NOT NULL, body TEXT NOT NULL);",
    )
    .map_err(std::io::Error::other)?;
    let (tx, rx) = mpsc::channel::<Job>(4096);
    let (synced_tx, synced_rx) = sync_channel::<Vec<(oneshot::Sender<Option<bool>>, bool)>>(4);
    let wal = format!("{path}-wal");
    std::thread::spawn(move || sync(&wal, synced_rx));
    std::thread::spawn(move || write(conn, rx, synced_tx));

    let app = Router::new().route("/v1/tenants/{tenant}/events", post(event)).with_state(tx);
    axum::serve(listen::listen().await?, app).await
}

/// The ceiling's checks, then the event stored: `202` once its batch is fsynced, `409` for a key
/// stored before, `503` when it could not be stored or synced.
async fn event(State(writer): State<mpsc::Sender<Job>>, headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    if !headers.contains_key(header::AUTHORIZATION) {
        return (StatusCode::UNAUTHORIZED, r#"{"error":{"code":"unauthorized"}}"#);
    }
    let key = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(m)) => match m.get("idempotency_key") {
            Some(serde_json::Value::String(k)) => k.clone(),
            _ => return (StatusCode::UNPROCESSABLE_ENTITY, r#"{"error":{"code":"unprocessable"}}"#),
        },
        _ => return (StatusCode::BAD_REQUEST, r#"{"error":{"code":"bad_request"}}"#),
    };
    let (reply, answer) = oneshot::channel();
    if writer.try_send(Job { key, body, reply }).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":{"code":"busy"}}"#);
    }
    match answer.await {
        Ok(Some(true)) => (StatusCode::ACCEPTED, r#"{"id":"00000000-0000-0000-0000-000000000000"}"#),
        Ok(Some(false)) => (StatusCode::CONFLICT, r#"{"error":{"code":"repeat"}}"#),
        Ok(None) | Err(_) => (StatusCode::SERVICE_UNAVAILABLE, r#"{"error":{"code":"unavailable"}}"#),
    }
}

/// Group commit: whatever is waiting (up to 512 events) in one transaction, then to the fsync.
fn write(
    mut conn: rusqlite::Connection,
    mut rx: mpsc::Receiver<Job>,
    synced: SyncSender<Vec<(oneshot::Sender<Option<bool>>, bool)>>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < 512
            && let Ok(job) = rx.try_recv()
        {
            jobs.push(job);
        }
        let now = chrono::Utc::now().to_rfc3339();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("begin");
        let mut answers = Vec::with_capacity(jobs.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO event (idempotency_key, received_at, body) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                )
                .expect("prepare");
            for job in jobs {
                let body = std::str::from_utf8(&job.body).unwrap_or_default();
                let stored = insert.execute(rusqlite::params![job.key, now, body]).expect("insert") == 1;
                answers.push((job.reply, stored));
            }
        }
        tx.commit().expect("commit");
        if synced.send(answers).is_err() {
            return;
        }
    }
}

/// Fsyncs the WAL for every batch committed since the last fsync, then answers them.
fn sync(wal: &str, rx: Receiver<Vec<(oneshot::Sender<Option<bool>>, bool)>>) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        let ok = std::fs::File::open(wal).and_then(|f| f.sync_data()).is_ok();
        for (reply, stored) in batches.into_iter().flatten() {
            let _ = reply.send(ok.then_some(stored));
        }
    }
}
