//! SQLite's background WAL checkpoint, on a connection of its own.
//!
//! No connection checkpoints when it commits (`wal_autocheckpoint = 0`, [`super::connect`]); the
//! ingest writer copies its WAL between its batches (`ingest::sqlite::checkpoint`, after
//! `ingest::copy_ahead` has copied most of it on a connection like this one), and this task
//! copies what the other writers committed — the delivery worker, the API — every 250 ms with a
//! PASSIVE checkpoint, which never waits for nor blocks anyone: what it cannot copy now it copies
//! next time.
//!
//! **Why a RESTART too.** A WAL starts over only at a write that finds it copied completely and
//! no reader in it. While the delivery worker's claims, reads and outcome commits follow each
//! other without a pause (the outbox draining, ingest idle: no checkpoint of the ingest writer's)
//! that moment never comes — some read always holds an older snapshot or a commit appends during
//! the copy — and the WAL grew by ~10 MB/s: 370 MB in 36 s of the benchmark's drain
//! (docs/scaling.md#the-outbox), every read searching an ever larger WAL. When the WAL has grown
//! past [`RESTART_FRAMES`] at every one of [`Restarts`]' last readings (it did not start over
//! meanwhile, as it does every 200 ms under ingest), a RESTART holds writers off, waits for the
//! readers still in the WAL, copies what PASSIVE could not, and the next write starts the WAL
//! over. Its busy waits are bounded by its connection's timeout, [`RESTART_WAIT`] (the pool's
//! connections wait up to [`super::SQLITE_BUSY_WAIT`]); the copy of what is left and the fsyncs
//! hold writers off too, a few milliseconds PASSIVE having copied nearly everything. A reader
//! that stays (a long export) makes it give up, and the next try waits twice as long.

use std::time::Duration;

use rusqlite::Connection;
use sea_orm::DatabaseConnection;

/// How long a RESTART's busy waits last at most (for the writer, then for the readers in the WAL).
pub const RESTART_WAIT: Duration = Duration::from_millis(50);

/// WAL frames (4 KiB pages: 16 MiB) past which the WAL is made to start over.
pub const RESTART_FRAMES: i64 = 4096;

/// Readings in a row of a WAL past [`RESTART_FRAMES`] and growing before a RESTART (1 s at
/// 250 ms), and their most after RESTARTs that gave up (16 s).
const GROWING_READINGS: u32 = 4;
const GROWING_READINGS_MAX: u32 = 64;

/// Consecutive failures after which one is logged as a warning (the WAL grows meanwhile).
const FAILURES_BEFORE_WARNING: u32 = 40;

/// Checkpoints the WAL of the SQLite database of `url` every `every`, until `shutdown`. Nothing
/// to do on PostgreSQL. A failure (the database busy or gone) only lets the WAL grow until the
/// next one; the last connection to close checkpoints too, so a stopped gateway leaves no WAL.
pub async fn run(db: DatabaseConnection, url: String, every: Duration, shutdown: tokio_util::sync::CancellationToken) {
    if db.get_database_backend() != sea_orm::DbBackend::Sqlite {
        return;
    }
    let mut conn: Option<Connection> = None;
    let mut restarts = Restarts::default();
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let url = url.clone();
        let mut state = restarts;
        let run = tokio::task::spawn_blocking(move || {
            let conn = match conn {
                Some(c) => c,
                None => connection(&url, RESTART_WAIT)?,
            };
            let done = checkpoint(&conn, &mut state);
            Ok::<_, rusqlite::Error>((conn, done, state))
        });
        let failed = match run.await {
            Ok(Ok((c, done, state))) => {
                conn = Some(c);
                restarts = state;
                match done {
                    Ok(Some((frames, restarted))) => {
                        tracing::debug!(frames, restarted, "WAL checkpointed to start over");
                        None
                    }
                    Ok(None) => None,
                    Err(e) => Some(e.to_string()),
                }
            }
            Ok(Err(e)) => {
                conn = None;
                Some(format!("cannot open the checkpoint's connection: {e}"))
            }
            Err(e) => {
                conn = None;
                Some(format!("the checkpoint panicked: {e}"))
            }
        };
        match failed {
            None => failures = 0,
            Some(error) => {
                failures += 1;
                if failures.is_multiple_of(FAILURES_BEFORE_WARNING) {
                    tracing::warn!(%error, failures, "WAL checkpoints keep failing; the WAL grows until one succeeds");
                } else {
                    tracing::debug!(%error, "WAL checkpoint failed; trying again at the next");
                }
            }
        }
    }
}

/// The checkpoint's own connection to the database of `url` (never created here), whose busy
/// timeout is `wait`.
pub fn connection(url: &str, wait: Duration) -> rusqlite::Result<Connection> {
    let path = crate::ingest::sqlite::database_path(url)
        .map_err(|e| rusqlite::Error::InvalidPath(std::path::PathBuf::from(e.to_string())))?;
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(wait)?;
    Ok(conn)
}

/// One tick: PASSIVE, then RESTART when `restarts` says so. Returns, when it tried a RESTART, the
/// WAL's frames and whether it will start over.
pub fn checkpoint(conn: &Connection, restarts: &mut Restarts) -> rusqlite::Result<Option<(i64, bool)>> {
    let (_, frames) = pragma(conn, "PASSIVE")?;
    if !restarts.due(frames) {
        return Ok(None);
    }
    let (busy, _) = pragma(conn, "RESTART")?;
    restarts.tried(!busy);
    Ok(Some((frames, !busy)))
}

/// `PRAGMA wal_checkpoint(mode)`: whether it could not finish (a reader or the writer held on
/// past the busy timeout), and the WAL's frames.
fn pragma(conn: &Connection, mode: &str) -> rusqlite::Result<(bool, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get::<_, i64>(0)? != 0, r.get(1)?)))
}

/// When a RESTART is worth holding writers off: the WAL past [`RESTART_FRAMES`] and larger at
/// each of the last readings (it did not start over in between), `needed` readings in a row —
/// `GROWING_READINGS`, doubled after each RESTART that gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restarts {
    previous: i64,
    growing: u32,
    needed: u32,
}

impl Default for Restarts {
    fn default() -> Self {
        Restarts { previous: 0, growing: 0, needed: GROWING_READINGS }
    }
}

impl Restarts {
    /// A reading of the WAL's frames after a PASSIVE: whether to RESTART now.
    pub fn due(&mut self, frames: i64) -> bool {
        self.growing = if frames >= RESTART_FRAMES && frames > self.previous { self.growing + 1 } else { 0 };
        self.previous = frames;
        self.growing >= self.needed
    }

    /// A RESTART was tried: the WAL starts over, or it gave up (try again after twice as many).
    pub fn tried(&mut self, restarted: bool) {
        self.growing = 0;
        self.needed = if restarted { GROWING_READINGS } else { (self.needed * 2).min(GROWING_READINGS_MAX) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under ingest the WAL starts over every ~200 ms (the writer's own checkpoints): readings
    /// that go down never call for a RESTART. Draining with ingest idle it only grows: a RESTART
    /// after four readings; one that gave up waits twice as long for the next try, up to 64.
    #[test]
    fn a_restart_is_due_only_after_readings_of_a_large_growing_wal() {
        let big = RESTART_FRAMES;
        let mut r = Restarts::default();
        // Large but starting over in between (ingest): never due.
        for frames in [big * 3, big * 2, big * 4, big, big * 5, big * 3, big * 6, big * 2] {
            assert!(!r.due(frames), "{frames}");
        }
        // Small and growing: never due.
        let mut r = Restarts::default();
        for frames in [10, 100, 1000, 4000, 4095] {
            assert!(!r.due(frames), "{frames}");
        }
        // Large and growing: due at the fourth reading in a row.
        let mut r = Restarts::default();
        let due: Vec<bool> = [1, 2, 3, 4].iter().map(|k| r.due(big * k)).collect();
        assert_eq!(due, [false, false, false, true]);
        // Gave up (a long reader): the next is due after 8 readings, then 16 … at most 64.
        r.tried(false);
        let readings = |r: &mut Restarts, from: i64| (1..).take_while(|k| !r.due(big * (from + k))).count() + 1;
        assert_eq!(readings(&mut r, 4), 8);
        r.tried(false);
        assert_eq!(readings(&mut r, 20), 16);
        for _ in 0..5 {
            r.tried(false);
        }
        assert_eq!(readings(&mut r, 100), 64);
        // Started over: back to four.
        r.tried(true);
        assert_eq!(readings(&mut r, 1000), 4);
    }

    /// A database in WAL mode whose WAL holds 20 MiB (past [`RESTART_FRAMES`]), written by a
    /// connection that stays open.
    fn grown_wal(dir: &std::path::Path) -> (String, Connection) {
        let url = format!("sqlite://{}?mode=rwc", dir.join("w.db").display());
        let writer = Connection::open(dir.join("w.db")).unwrap();
        writer.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)).unwrap();
        writer.execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x BLOB)").unwrap();
        for _ in 0..5 {
            writer
                .execute_batch(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) \
                     INSERT INTO t SELECT randomblob(4000) FROM n",
                )
                .unwrap();
        }
        (url, writer)
    }

    /// A connection in a read transaction on the database of [`grown_wal`]: it holds its
    /// snapshot of the WAL until it commits.
    fn reading(dir: &std::path::Path) -> Connection {
        let reader = Connection::open(dir.join("w.db")).unwrap();
        reader.execute_batch("BEGIN; SELECT COUNT(*) FROM t;").unwrap();
        reader
    }

    /// A policy that calls for a RESTART at the first reading past the threshold.
    fn due_now() -> Restarts {
        Restarts { needed: 1, ..Restarts::default() }
    }

    /// A RESTART due waits for a reader that finishes within its wait, copies the whole WAL and
    /// says so, and the next write goes to the WAL's start. (That PASSIVE copies alone leave
    /// the WAL growing needs writers and readers that never pause — the benchmark's drain —,
    /// which a unit test does not reproduce.) The wait is long here so that a loaded machine's
    /// scheduling does not decide the test.
    #[test]
    fn a_restart_waits_for_the_readers_and_the_wal_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let (url, writer) = grown_wal(dir.path());
        let reader = reading(dir.path());
        writer.execute_batch("INSERT INTO t VALUES (randomblob(4000))").unwrap();
        let done = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            reader.execute_batch("COMMIT").unwrap();
        });
        let conn = connection(&url, Duration::from_secs(5)).unwrap();
        let mut due = due_now();
        let tried = checkpoint(&conn, &mut due).unwrap();
        done.join().unwrap();
        assert!(matches!(tried, Some((frames, true)) if frames >= RESTART_FRAMES), "{tried:?}");
        writer.execute_batch("INSERT INTO t VALUES (randomblob(10))").unwrap();
        let (_, after) = pragma(&conn, "PASSIVE").unwrap();
        assert!(after < 10, "the write went to the WAL's start: {after} frames");
    }

    /// A reader that stays in the WAL (a long export) makes the RESTART give up within its wait
    /// — writers are held off that long, not the pool's 10 s —, after PASSIVE copied as far as
    /// the reader allows.
    #[test]
    fn a_long_reader_makes_the_restart_give_up_within_its_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (url, _writer) = grown_wal(dir.path());
        let reader = reading(dir.path());
        let conn = connection(&url, RESTART_WAIT).unwrap();
        let mut due = due_now();
        let started = std::time::Instant::now();
        let tried = checkpoint(&conn, &mut due).unwrap();
        let waited = started.elapsed();
        assert!(matches!(tried, Some((frames, false)) if frames >= RESTART_FRAMES), "{tried:?}");
        assert!(waited < Duration::from_millis(500), "gave up after {waited:?}");
        assert_eq!(due.needed, 2, "the next try waits for twice as many readings");
        reader.execute_batch("COMMIT").unwrap();
    }
}
