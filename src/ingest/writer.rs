//! Group commit: requests prepare their events ([`prepare`](super::prepare)), hand them to a writer
//! through a bounded queue ([`Writer::submit`]) and wait for the commit before answering — so a `202` still
//! means "committed and fsynced", but one commit (one fsync, one write lock) serves every request
//! that was waiting.
//!
//! - A writer takes whatever is waiting, up to `ingest.max_batch_rows` rows ([`fits`]), into one
//!   transaction: the visitors' latest consent records in one read ([`records_of`]), the
//!   decisions ([`decide`](super::decide)), the rows ([`store`](super::store)). No fixed linger: while one commit runs, the next batch gathers by
//!   itself, so batches are small at low load and large under load.
//! - One writer on SQLite (it has one write lock anyway), on a thread and a connection of its own
//!   ([`sqlite`](super::sqlite): the same transaction, with prepared statements instead of
//!   sea-orm's), whose fsync runs on another thread ([`wal_sync`]) so that the next batch is
//!   written while the disk syncs the last one; `ingest.pg_writers` on PostgreSQL, each on its
//!   own connection of the pool, sharing the queue.
//! - A full queue is answered at once: `503` with `Retry-After: 1` ([`Error::Busy`]), counted in
//!   `consentgate_ingest_rejected_total`, rather than latency growing without bound.
//! - A batch that fails with the database unreachable answers each of its requests `503` (nothing
//!   was acknowledged, so nothing acknowledged is lost; a retry with the same idempotency key is a
//!   repeat if the commit did land). Any other failure (one bad row, or on PostgreSQL a key a
//!   concurrent writer just stored) is retried event by event, each in its own transaction, so
//!   one bad row does not fail its batch-mates and each request gets its own answer.

use std::{sync::Arc, time::Instant};

use sea_orm::{DatabaseConnection, DbBackend, DbErr, RuntimeErr, SqlErr};
use tokio::{
    sync::{Mutex, mpsc, oneshot},
    task::JoinHandle,
};

use super::{Accepted, CommitTimes, Prepared, decide_all, records_of, store::PlannedEvent, wal_sync};
use crate::{
    config::IngestSettings,
    error::{Error, Result},
};

/// One request's events and where to send their answers (in the same order).
struct Job {
    events: Vec<Prepared>,
    rows: usize,
    reply: oneshot::Sender<Vec<Result<Accepted>>>,
}

/// The handle requests submit to (cheap to clone).
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Job>,
}

/// The waiting jobs, shared by the writers of a PostgreSQL pool: a job taken but not fitting the
/// batch being cut waits in `held` for the next one.
struct Inbox {
    rx: mpsc::Receiver<Job>,
    held: Option<Job>,
}

impl Writer {
    /// Starts the writers on `db` (whose URL is `url`) and returns the handle and their tasks
    /// (they end when every handle is dropped).
    pub fn start(
        db: DatabaseConnection,
        url: &str,
        settings: &IngestSettings,
    ) -> Result<(Writer, Vec<JoinHandle<()>>), DbErr> {
        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        let max_rows = settings.max_batch_rows.max(1);
        let tasks = match db.get_database_backend() {
            DbBackend::Sqlite => {
                let conn = super::sqlite::open(url)?;
                let path = super::sqlite::database_path(url)?;
                let wal = wal_sync::WalFile::of(&path);
                let (synced, _thread) = wal_sync::start(wal, |(jobs, answers, started), synced| {
                    reply(jobs, if synced { answers } else { unsynced(answers) }, started)
                })
                .map_err(|e| DbErr::Custom(format!("starting the WAL's fsync thread: {e}")))?;
                let inbox = Inbox { rx, held: None };
                let every = std::time::Duration::from_millis(settings.sqlite_checkpoint_ms);
                let copier =
                    crate::db::wal::connection(url, crate::db::wal::RESTART_WAIT).map_err(super::sqlite::db_err)?;
                let ahead = super::copy_ahead::CopyAhead::start(copier, super::copy_ahead::OwnDescriptor, every)
                    .map_err(|e| DbErr::Custom(format!("starting the WAL's copy thread: {e}")))?;
                vec![tokio::task::spawn_blocking(move || run_sqlite(conn, inbox, max_rows, synced, every, ahead))]
            }
            _ => {
                let inbox = Arc::new(Mutex::new(Inbox { rx, held: None }));
                let first = (uuid::Uuid::new_v4().as_u128() % USAGE_SHARDS as u128) as i32;
                (0..settings.pg_writers.max(1))
                    .map(|i| {
                        let shard = (first + i as i32) % USAGE_SHARDS;
                        tokio::spawn(run(db.clone(), inbox.clone(), max_rows, shard))
                    })
                    .collect()
            }
        };
        Ok((Writer { queue: tx }, tasks))
    }

    /// Queues `events` (one request's) and waits for the commit: each event's answer, in order.
    /// `Err(Error::Busy)` at once when the queue is full; a `503` (`Error::Db`, unreachable) when
    /// the writers are gone.
    pub async fn submit(&self, events: Vec<Prepared>) -> Result<Vec<Result<Accepted>>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let rows = events.iter().map(|e| e.rows).sum();
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Job { events, rows, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("consentgate_ingest_rejected_total", "reason" => "queue_full").increment(1);
                return Err(Error::Busy("too many events are waiting to be stored; retry in a moment".into()));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
        }
        answer.await.map_err(|_| stopped())
    }
}

/// How many rows of each config in `ingest_usage` PostgreSQL's writers count their consent
/// denials in: each writer of an instance its own (consecutive from a random first one), so that
/// no two wait on one row; writers of other instances meet on one only by chance, and then merely
/// take turns as every writer did on the config's own row before.
const USAGE_SHARDS: i32 = 64;

fn stopped() -> Error {
    unavailable("the ingest writer stopped")
}

/// A `503` for an event (`DbErr::Conn`, which the HTTP layer answers `503` with `Retry-After`).
fn unavailable(cause: impl Into<String>) -> Error {
    Error::Db(DbErr::Conn(RuntimeErr::Internal(cause.into())))
}

/// Whether a job of `next` rows joins a batch of `batch` rows under a cap of `max` rows — pure.
/// The first job always does (a request larger than the cap is committed alone).
pub fn fits(batch: usize, next: usize, max: usize) -> bool {
    batch == 0 || batch.saturating_add(next) <= max
}

async fn run(db: DatabaseConnection, inbox: Arc<Mutex<Inbox>>, max_rows: usize, shard: i32) {
    while let Some(batch) = next_batch(&inbox, max_rows).await {
        // A task per batch: were a commit to panic, its requests get a 503 (their answer channels
        // close) and the writer goes on with the next batch instead of leaving ingest dead.
        let db = db.clone();
        if let Err(e) = tokio::spawn(async move { commit(&db, batch, shard).await }).await
            && e.is_panic()
        {
            tracing::error!("storing a batch of events panicked; its requests were answered 503");
        }
    }
}

/// A committed batch on its way to its fsync: its jobs, their answers, when it started.
type Committed = (Vec<Job>, Vec<Result<Accepted>>, Instant);

/// SQLite's writer, on a thread of its own: batches as [`next_batch`] cuts them, each committed
/// on `conn` ([`sqlite::store_in_one_transaction`](super::sqlite::store_in_one_transaction)) and
/// handed to [`wal_sync`] (`synced`), which answers it once the WAL is fsynced — while the writer
/// goes on with the next batch. Ends when every handle is gone and nothing waits.
/// Between two batches it checkpoints the WAL ([`checkpoint`](super::sqlite::checkpoint)), which
/// only the writer can do completely under sustained ingest: each time [`copy_ahead`] has copied
/// most of it meanwhile (every `checkpoint_every`, `ingest.sqlite_checkpoint_ms`), so that its
/// own copy is short; alone if that thread falls four periods behind.
///
/// [`copy_ahead`]: super::copy_ahead
fn run_sqlite(
    mut conn: rusqlite::Connection,
    mut inbox: Inbox,
    max_rows: usize,
    synced: std::sync::mpsc::SyncSender<Committed>,
    checkpoint_every: std::time::Duration,
    ahead: super::copy_ahead::CopyAhead,
) {
    let mut checkpointed = Instant::now();
    let mut remembered = super::remembered::Remembered::default();
    while let Some(first) = inbox.held.take().or_else(|| inbox.rx.blocking_recv()) {
        let batch = inbox.fill(first, max_rows);
        // Were a commit to panic, its requests get a 503 (their answer channels close) and the
        // writer goes on with the next batch instead of leaving ingest dead.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let started = Instant::now();
            let events: Vec<&Prepared> = batch.iter().flat_map(|j| &j.events).collect();
            let answers = match super::sqlite::store_in_one_transaction(&mut conn, &events, &mut remembered) {
                Ok(answers) => answers,
                Err(e) => batch_failed(&e, events.len()).unwrap_or_else(|| {
                    let mut alone = |event: &Prepared| -> Result<Accepted> {
                        let mut answers =
                            super::sqlite::store_in_one_transaction(&mut conn, &[event], &mut remembered)?;
                        answers.pop().unwrap_or_else(|| Err(stopped()))
                    };
                    events.iter().map(|event| alone(event)).collect()
                }),
            };
            (answers, started)
        }));
        match outcome {
            Ok((answers, started)) => {
                // The fsync thread gone (it cannot panic short of a bug): the batch's requests
                // get a 503 as their answer channels close; nothing is answered unsynced.
                if synced.send((batch, answers, started)).is_err() {
                    tracing::error!("the WAL's fsync thread is gone; ingest answers 503");
                }
            }
            Err(_) => tracing::error!("storing a batch of events panicked; its requests were answered 503"),
        }
        if ahead.due() || checkpointed.elapsed() >= 4 * checkpoint_every {
            let started = Instant::now();
            match super::sqlite::checkpoint(&conn) {
                Ok((frames, copied)) => {
                    tracing::debug!(frames, copied, us = started.elapsed().as_micros() as u64, "WAL checkpointed")
                }
                // The database busy or gone: the next one copies what this one could not.
                Err(e) => tracing::debug!(error = %e, "WAL checkpoint failed; trying again after the next batch"),
            }
            checkpointed = Instant::now();
        }
    }
}

impl Inbox {
    /// `first` and whatever else is waiting while it fits (the rest waits in `held`).
    fn fill(&mut self, first: Job, max_rows: usize) -> Vec<Job> {
        let mut rows = first.rows;
        let mut batch = vec![first];
        while let Ok(job) = self.rx.try_recv() {
            if !fits(rows, job.rows, max_rows) {
                self.held = Some(job);
                break;
            }
            rows += job.rows;
            batch.push(job);
        }
        batch
    }
}

/// Waits for a job, then takes whatever else is waiting while it fits. `None`: every handle is
/// gone and nothing waits.
async fn next_batch(inbox: &Mutex<Inbox>, max_rows: usize) -> Option<Vec<Job>> {
    let mut inbox = inbox.lock().await;
    let first = match inbox.held.take() {
        Some(job) => job,
        None => inbox.rx.recv().await?,
    };
    Some(inbox.fill(first, max_rows))
}

/// After a batch's transaction failed with `e`: a `503` for each of its `n` events when the
/// database cannot be used now (nothing was acknowledged; each its own copy of the cause, the HTTP
/// layer logs it once). `None` otherwise: the caller stores each event alone, so that one bad row
/// does not fail its batch-mates.
fn batch_failed(e: &DbErr, n: usize) -> Option<Vec<Result<Accepted>>> {
    if crate::db::is_unavailable(e) {
        let cause = e.to_string();
        return Some((0..n).map(|_| Err(unavailable(cause.clone()))).collect());
    }
    if n > 1 {
        tracing::warn!(error = %e, events = n, "a batch of events failed; storing them one by one");
    }
    None
}

/// The answers of a batch whose fsync failed: each stored event's becomes a `503` (its rows may
/// not survive a power loss; a retry is a repeat if they did), other answers stay as they are.
fn unsynced(answers: Vec<Result<Accepted>>) -> Vec<Result<Accepted>> {
    answers
        .into_iter()
        .map(|a| match a {
            Ok(_) => Err(unavailable("the database could not sync its log")),
            other => other,
        })
        .collect()
}

async fn commit(db: &DatabaseConnection, jobs: Vec<Job>, shard: i32) {
    let started = Instant::now();
    let events: Vec<&Prepared> = jobs.iter().flat_map(|j| &j.events).collect();
    let answers = match store_in_one_transaction(db, &events, shard).await {
        Ok(answers) => answers,
        Err(e) => match batch_failed(&e, events.len()) {
            Some(answers) => answers,
            None => {
                let mut answers = Vec::with_capacity(events.len());
                for e in &events {
                    answers.push(store_alone(db, e, shard).await);
                }
                answers
            }
        },
    };
    drop(events);
    reply(jobs, answers, started);
}

/// Sends each job its answers (in order) and records the batch's size and time.
fn reply(jobs: Vec<Job>, answers: Vec<Result<Accepted>>, started: Instant) {
    metrics::histogram!("consentgate_ingest_batch_events").record(answers.len() as f64);
    metrics::histogram!("consentgate_ingest_commit_seconds").record(started.elapsed().as_secs_f64());
    let mut answers = answers.into_iter();
    for job in jobs {
        let mine: Vec<_> = answers.by_ref().take(job.events.len()).collect();
        // The request may have gone (client disconnected); its events are stored all the same.
        let _ = job.reply.send(mine);
    }
}

/// Decides and stores `events` in one transaction: the visitors' records are read inside it, so
/// no consent record can land between the read and the events decided by it.
async fn store_in_one_transaction(
    db: &DatabaseConnection,
    events: &[&Prepared],
    shard: i32,
) -> Result<Vec<Result<Accepted>>, DbErr> {
    let mut times = CommitTimes::start();
    let txn = crate::db::begin_write(db).await?;
    times.begun();
    let records = records_of(&txn, events).await.map_err(super::store::into_db)?;
    times.read();
    let planned = decide_all(events, &records);
    times.decided();
    let planned: Vec<&PlannedEvent> = planned.iter().collect();
    let answers = super::store::store(&txn, &planned, shard).await?;
    times.stored();
    txn.commit().await?;
    times.committed(events.len());
    Ok(answers)
}

/// One event in its own transaction (after its batch failed). A unique violation means a
/// concurrent writer stored the same key meanwhile: once more, and the read finds it.
async fn store_alone(db: &DatabaseConnection, event: &Prepared, shard: i32) -> Result<Accepted> {
    let mut tries = 0;
    loop {
        tries += 1;
        match store_in_one_transaction(db, &[event], shard).await {
            Ok(mut answers) => return answers.pop().unwrap_or_else(|| Err(stopped())),
            Err(e) if tries < 3 && matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of the jobs waiting (their row counts, in queue order) [`next_batch`] takes: the
    /// leading ones while they [`fit`](fits); the queue's order is kept, so a large job is never
    /// overtaken.
    fn cut(waiting: &[usize], max: usize) -> usize {
        let mut rows = 0;
        waiting
            .iter()
            .take_while(|&&n| {
                let ok = fits(rows, n, max);
                rows += n;
                ok
            })
            .count()
    }

    #[test]
    fn a_batch_takes_the_waiting_jobs_in_order_while_they_fit() {
        for (waiting, max, taken) in [
            (vec![], 10, 0),
            (vec![5], 10, 1),
            (vec![5, 5], 10, 2),
            (vec![5, 5, 1], 10, 2),
            // A job larger than the cap alone is taken alone, never left behind.
            (vec![50], 10, 1),
            (vec![50, 1], 10, 1),
            // Order is kept: a small job does not overtake a large one that no longer fits.
            (vec![4, 7, 1], 10, 1),
            (vec![1; 64], 1000, 64),
            (vec![5; 64], 100, 20),
            (vec![3, 3, 3], 9, 3),
        ] {
            assert_eq!(cut(&waiting, max), taken, "{waiting:?} under {max}");
        }
    }

    #[test]
    fn the_first_job_always_fits() {
        assert!(fits(0, usize::MAX, 1));
        assert!(!fits(1, usize::MAX, usize::MAX - 1), "no overflow");
        assert!(fits(4, 6, 10) && !fits(4, 7, 10));
    }
}
