//! SQLite's WAL copied into the database file ahead of the writer's own checkpoint, on a thread
//! and a connection of their own.
//!
//! **Why.** Only a checkpoint between two of the writer's batches copies the WAL completely
//! under sustained ingest, so that it starts over (`sqlite::checkpoint`). Done alone it copied
//! everything written since the last one — ~8,000–10,000 frames every 200 ms, 13–28 ms during
//! which no batch was written and every request waited: the ingest p99 (27–31 ms in the
//! benchmark). Here a PASSIVE checkpoint on another connection copies those frames while the
//! writer goes on writing, and only then asks the writer for its own ([`CopyAhead::due`]), which
//! is left with what was appended meanwhile: the benchmark's p99 fell to 19–23 ms
//! (docs/scaling.md). A PASSIVE checkpoint never waits for nor blocks a writer or a reader.
//!
//! **It also syncs the database file** after each copy ([`OwnDescriptor`]). SQLite's checkpoint
//! syncs the database file only when it copied the whole WAL, which a copy made while the writer
//! appends never does: the pages it copied stayed dirty in the page cache, and the writer's own
//! checkpoint then fsynced all of them (those of thousands of frames every 200 ms) while it held
//! ingest — 20 ms each in the benchmark (mean; p90 25 ms, max 45), ~9 % of the writer's time and
//! most of the ingest p99. Synced here, off the writer's thread, the writer's checkpoint syncs
//! only what it copied.
//! Measured: the writer's checkpoint 20–22 ms → 8–12 ms (mean), the ingest p99 40–45 ms → 31–35
//! on a slow day; events/s ×0.88–1.02 in the same rounds, within the benchmark's noise (the
//! writer is not what bounds them: docs/scaling.md).
//! Copying again before the writer's turn, so as to leave it less, was tried and not kept: three
//! copies and syncs in a row every 200 ms left the writer's checkpoint at 8–12 ms all the same.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rusqlite::{Connection, ffi};

/// Makes the database file durable after a copy (a test stands in its own to count or fail it).
pub trait SyncDatabase: Send + 'static {
    fn sync(&mut self, conn: &Connection) -> std::io::Result<()>;
}

/// The database file synced through the copying connection's own file descriptor
/// ([`sync_database_file`]).
pub struct OwnDescriptor;

impl SyncDatabase for OwnDescriptor {
    fn sync(&mut self, conn: &Connection) -> std::io::Result<()> {
        sync_database_file(conn)
    }
}

/// Syncs `conn`'s database file with SQLite's own descriptor of it: the VFS's `xSync` on the
/// file `SQLITE_FCNTL_FILE_POINTER` names.
///
/// **Never by opening the file again.** Closing *any* descriptor of a file releases every POSIX
/// lock the process holds on it — SQLite's own included (the shared lock each connection keeps
/// on the database file in WAL mode, which tells another process it is not alone). With them
/// gone, the next process to open and close the database (the `sqlite3` shell, a backup script,
/// `consentgate tenant create` while the gateway serves) believes it is the last connection,
/// checkpoints and *deletes the WAL* the gateway is still writing to: every later commit lands
/// in a deleted file — ingest answers `503` until a restart, and what the pool's connections
/// acknowledged meanwhile (consent records) is gone after it. Measured: a sync by
/// `File::open(path)?.sync_data()` every 200 ms did exactly that (tests/crash/sqlite.rs).
pub fn sync_database_file(conn: &Connection) -> std::io::Result<()> {
    let fail = |what: &str, rc: i32| std::io::Error::other(format!("syncing the database file: {what} ({rc})"));
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn` is open and used by this thread only for the call's duration (it is
    // borrowed); `FILE_POINTER` writes the `sqlite3_file*` of the main database, owned by the
    // connection and valid while it is open, into `file`. `xSync` is called on that file with a
    // valid flag, as SQLite's pager calls it, between two statements of this connection.
    unsafe {
        let rc = ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast(),
        );
        if rc != ffi::SQLITE_OK || file.is_null() || (*file).pMethods.is_null() {
            return Err(fail("no file", rc));
        }
        let Some(x_sync) = (*(*file).pMethods).xSync else { return Err(fail("no xSync", 0)) };
        match x_sync(file, ffi::SQLITE_SYNC_NORMAL) {
            ffi::SQLITE_OK => Ok(()),
            rc => Err(fail("xSync failed", rc)),
        }
    }
}

/// The writer's side: whether a copy ran since the writer last checkpointed. Dropped, it stops
/// the thread and waits for it (one copy at most), so that its connection is closed when the
/// writer's is: the last connection to close checkpoints, and a stopped gateway leaves no WAL.
pub struct CopyAhead {
    copied: Arc<AtomicBool>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl CopyAhead {
    /// Starts copying the WAL of `conn`'s database every `every`, each copy followed by a sync of
    /// the database file (`db_file`, [`OwnDescriptor`] but in tests; an extra sync is always
    /// safe: SQLite syncs it again after its own checkpoints), until the returned handle is
    /// dropped. `conn` is a connection of its own, as the background checkpoint's
    /// (`db::wal::connection`).
    pub fn start(conn: Connection, mut db_file: impl SyncDatabase, every: Duration) -> std::io::Result<CopyAhead> {
        let copied = Arc::new(AtomicBool::new(false));
        let flag = copied.clone();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("consentgate-wal-copy".into()).spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let started = Instant::now();
                match super::sqlite::checkpoint(&conn) {
                    Ok((frames, copied)) => {
                        let copy_us = started.elapsed().as_micros() as u64;
                        if let Err(e) = db_file.sync(&conn) {
                            // The writer's checkpoint syncs the file all the same, only slower.
                            tracing::warn!(error = %e, "syncing the database file after copying the WAL failed");
                        }
                        let us = started.elapsed().as_micros() as u64;
                        tracing::debug!(frames, copied, copy_us, us, "WAL copied ahead of the writer's checkpoint");
                    }
                    // Busy or gone: the writer's own checkpoint copies everything, as without.
                    Err(e) => tracing::debug!(error = %e, "copying the WAL ahead failed"),
                }
                flag.store(true, Ordering::Release);
            }
        })?;
        Ok(CopyAhead { copied, stop: Some(stop), thread: Some(thread) })
    }

    /// Whether a copy ran since the last time this said so: the writer's checkpoint is due, and
    /// short.
    pub fn due(&self) -> bool {
        self.copied.swap(false, Ordering::AcqRel)
    }
}

impl Drop for CopyAhead {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::TransactionBehavior;

    use super::*;

    fn copier(url: &str) -> Connection {
        crate::db::wal::connection(url, crate::db::wal::RESTART_WAIT).unwrap()
    }

    /// The database file's sync, counted (and failing when asked to).
    #[derive(Clone, Default)]
    struct Counted {
        syncs: Arc<std::sync::atomic::AtomicUsize>,
        fail: bool,
    }

    impl SyncDatabase for Counted {
        fn sync(&mut self, _: &Connection) -> std::io::Result<()> {
            self.syncs.fetch_add(1, Ordering::SeqCst);
            if self.fail { Err(std::io::Error::other("the disk is gone")) } else { Ok(()) }
        }
    }

    /// The database file is synced through the connection's own descriptor; a connection without
    /// a file (in memory) is an error, not a sync that did nothing.
    #[tokio::test]
    async fn the_database_file_is_synced_through_the_connections_own_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        crate::db::connect(&crate::config::DatabaseSettings { url: url.clone(), max_connections: 1 }).await.unwrap();
        let conn = copier(&url);
        sync_database_file(&conn).unwrap();
        OwnDescriptor.sync(&conn).unwrap();
        let memory = Connection::open_in_memory().unwrap();
        assert!(sync_database_file(&memory).is_err());
    }

    /// While the writer keeps its WAL (no checkpoint of its own), the thread copies it into the
    /// database file, then says the writer's checkpoint is due.
    #[tokio::test]
    async fn the_wal_is_copied_into_the_database_file_while_the_writer_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        crate::db::connect(&crate::config::DatabaseSettings { url: url.clone(), max_connections: 1 }).await.unwrap();
        let mut writer = crate::ingest::sqlite::open(&url).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let file = dir.path().join("a.db");
        let before = std::fs::metadata(&file).unwrap().len();
        let synced = Counted::default();
        let ahead = CopyAhead::start(copier(&url), synced.clone(), Duration::from_millis(20)).unwrap();
        let failing = Counted { fail: true, ..Counted::default() };
        let broken = CopyAhead::start(copier(&url), failing.clone(), Duration::from_millis(20)).unwrap();
        let slow = CopyAhead::start(copier(&url), Counted::default(), Duration::from_secs(3600)).unwrap();
        let dropped = Instant::now();
        drop(slow);
        assert!(dropped.elapsed() < Duration::from_secs(1), "a drop does not wait out the period");
        for _ in 0..10 {
            let tx = writer.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
            for _ in 0..100 {
                tx.execute("INSERT INTO t VALUES (randomblob(2000))", []).unwrap();
            }
            tx.commit().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ahead.due() {
            assert!(Instant::now() < deadline, "no copy in 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Each copy syncs the database file before it says the writer's checkpoint is due; one
        // whose sync fails says so all the same (the writer's checkpoint syncs the file itself).
        assert!(synced.syncs.load(Ordering::SeqCst) >= 1, "the database file was synced after the copy");
        while !broken.due() {
            assert!(Instant::now() < deadline, "no copy in 10 s");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(failing.syncs.load(Ordering::SeqCst) >= 1);
        drop(broken);
        // The copy that said so may have started before the last commit (on a loaded machine the
        // commits outlast several periods): the copies go on, and one started after the last
        // commit brings every row over. Nothing else checkpoints (the writer's own checkpoint is
        // off, and it is the only other connection).
        loop {
            let after = std::fs::metadata(&file).unwrap().len();
            if after >= before + 1_000 * 2_000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the rows are in the database file within 10 s: {before} → {after} bytes"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Dropped, it stops at once (not after its period) and closes its connection.
        let dropped = Instant::now();
        drop(ahead);
        assert!(dropped.elapsed() < Duration::from_secs(1), "stopped in {:?}", dropped.elapsed());
    }
}
