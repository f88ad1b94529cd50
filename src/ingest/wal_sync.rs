//! SQLite's group commit without the write lock held through the fsync: the writer commits a
//! batch to the WAL (`synchronous = NORMAL` on its connection: the frames are written, not yet
//! synced) and goes on with the next batch at once, while this thread fsyncs the WAL and only
//! then answers the batch's requests. A `202` still means "committed and fsynced".
//!
//! **Why.** With `synchronous = FULL` the fsync ran inside `COMMIT`, on the writer's thread,
//! while it held SQLite's one write lock: ~1.4 ms of a ~4 ms commit of ~30 events in the
//! benchmark (docs/scaling.md), during which no batch could be written. Here one fsync covers
//! every batch committed before it started (`run` takes whatever has committed meanwhile), and
//! the writer builds the next transaction while the disk works.
//!
//! **Why it is as durable.** An fsync of the WAL file makes durable every frame written to it
//! before the call, whichever file descriptor wrote them; after a crash SQLite's recovery replays
//! the WAL's committed transactions up to the first frame that is missing or whose checksum fails,
//! so a batch answered after the fsync is replayed. What `NORMAL` skips besides the commit's fsync,
//! SQLite still does in WAL mode: the WAL is synced before each checkpoint copies it, the
//! database file after, and the WAL's header when it starts over. What changes: a batch's rows are
//! visible to other connections (an outbox worker may read them) about one fsync before their
//! requests are answered; a power loss in that window loses rows no request was told about
//! (nothing acknowledged is lost; a delivery already sent for such a row is sent again after the
//! site's retry). A killed process loses nothing: written frames are in the operating system's
//! page cache.
//!
//! **When the fsync fails** (EIO, a full or vanished disk), the rows of the batches it covered
//! may not be durable: their events are answered `503` (a site retries; a retry of an event that
//! did survive is a repeat, answered with the first event's id), and the next fsync is tried for
//! the next batches.

use std::{
    fs::File,
    io,
    path::PathBuf,
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

/// Makes what the writer committed so far durable (the WAL file's fsync; a test stands in its
/// own to hold it back or fail it).
pub trait Flush: Send + 'static {
    fn flush(&mut self) -> io::Result<()>;
}

/// The WAL of a database, synced by path: what this thread syncs.
///
/// Opened per fsync (a few microseconds against the fsync's milliseconds), so that a WAL SQLite
/// deleted and made again is the one synced; missing, it is an error (never answer as durable
/// what could not be synced). Closing a descriptor of the WAL is harmless, unlike one of the
/// database file (see `copy_ahead::sync_database_file`): SQLite holds no lock on the WAL file
/// (its locks are on the database file and the `-shm` index).
pub struct WalFile {
    path: PathBuf,
}

impl WalFile {
    /// The WAL of the database file at `database` (`<database>-wal`).
    pub fn of(database: &std::path::Path) -> WalFile {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        WalFile { path: path.into() }
    }
}

impl Flush for WalFile {
    fn flush(&mut self) -> io::Result<()> {
        File::open(&self.path)?.sync_data()
    }
}

/// How many committed batches may wait for their fsync before the writer waits too (and the
/// ingest queue fills, and requests get `503` at once, as when the writer itself is slow).
pub const WAITING_BATCHES: usize = 4;

/// Starts the thread that syncs and answers: send it each committed batch, in commit order;
/// `answer(batch, synced)` is called for each, in that order, once an fsync that started after
/// its commit returned (`synced`: whether that fsync succeeded; a failure is logged here).
pub fn start<T, F, A>(flush: F, answer: A) -> io::Result<(SyncSender<T>, JoinHandle<()>)>
where
    T: Send + 'static,
    F: Flush,
    A: FnMut(T, bool) + Send + 'static,
{
    let (tx, rx) = sync_channel(WAITING_BATCHES);
    let thread =
        std::thread::Builder::new().name("consentgate-wal-sync".into()).spawn(move || run(rx, flush, answer))?;
    Ok((tx, thread))
}

/// Until every sender is gone: waits for a committed batch, takes every other one that committed
/// meanwhile, fsyncs once for all of them, answers them in order.
fn run<T>(rx: Receiver<T>, mut flush: impl Flush, mut answer: impl FnMut(T, bool)) {
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first];
        batches.extend(rx.try_iter());
        let started = std::time::Instant::now();
        let synced = flush.flush();
        metrics::histogram!("consentgate_ingest_wal_sync_seconds").record(started.elapsed().as_secs_f64());
        if let Err(e) = &synced {
            tracing::error!(error = %e, batches = batches.len(), "the WAL's fsync failed; its batches' events are answered 503");
        }
        for batch in batches {
            answer(batch, synced.is_ok());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc, Mutex,
            mpsc::{Sender, channel},
        },
        time::Duration,
    };

    use super::*;

    /// A flush that waits for the test's go-ahead and reports each call.
    struct Gate {
        go: Receiver<io::Result<()>>,
        calls: Sender<()>,
    }

    impl Flush for Gate {
        fn flush(&mut self) -> io::Result<()> {
            self.calls.send(()).unwrap();
            self.go.recv().unwrap()
        }
    }

    /// The syncer under test: send committed batches to `tx`, release each fsync through `go`,
    /// see each fsync start on `calls` and each answer in `answered`.
    struct Gated {
        tx: SyncSender<u32>,
        go: Sender<io::Result<()>>,
        calls: Receiver<()>,
        answered: Arc<Mutex<Vec<(u32, bool)>>>,
        thread: JoinHandle<()>,
    }

    fn gated() -> Gated {
        let (go, go_rx) = channel();
        let (calls_tx, calls) = channel();
        let answered = Arc::new(Mutex::new(Vec::new()));
        let seen = answered.clone();
        let (tx, thread) =
            start(Gate { go: go_rx, calls: calls_tx }, move |n, synced| seen.lock().unwrap().push((n, synced)))
                .unwrap();
        Gated { tx, go, calls, answered, thread }
    }

    #[test]
    fn no_batch_is_answered_before_an_fsync_after_its_commit_returned() {
        let Gated { tx, go, calls, answered, thread } = gated();
        tx.send(1).unwrap();
        calls.recv_timeout(Duration::from_secs(5)).expect("an fsync for batch 1");
        // Committed while that fsync runs: not covered by it.
        tx.send(2).unwrap();
        tx.send(3).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(answered.lock().unwrap().is_empty(), "nothing answered while the fsync runs");
        go.send(Ok(())).unwrap();
        // One more fsync covers both batches that committed meanwhile.
        calls.recv_timeout(Duration::from_secs(5)).expect("a second fsync");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(*answered.lock().unwrap(), vec![(1, true)], "2 and 3 wait for the fsync after their commit");
        go.send(Ok(())).unwrap();
        drop(tx);
        thread.join().unwrap();
        assert_eq!(*answered.lock().unwrap(), vec![(1, true), (2, true), (3, true)], "in commit order");
        assert!(calls.try_recv().is_err(), "two fsyncs for three batches");
    }

    #[test]
    fn a_failed_fsync_answers_its_batches_unsynced_and_the_next_one_is_tried_again() {
        let Gated { tx, go, calls, answered, thread } = gated();
        tx.send(1).unwrap();
        calls.recv_timeout(Duration::from_secs(5)).unwrap();
        go.send(Err(io::Error::other("EIO"))).unwrap();
        tx.send(2).unwrap();
        calls.recv_timeout(Duration::from_secs(5)).unwrap();
        go.send(Ok(())).unwrap();
        drop(tx);
        thread.join().unwrap();
        assert_eq!(*answered.lock().unwrap(), vec![(1, false), (2, true)]);
    }

    #[test]
    fn the_wal_file_is_the_databases_with_its_suffix_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let mut wal = WalFile::of(&db);
        assert_eq!(wal.path, dir.path().join("g.db-wal"));
        assert_eq!(wal.flush().unwrap_err().kind(), io::ErrorKind::NotFound, "never durable by default");
        std::fs::write(dir.path().join("g.db-wal"), b"frames").unwrap();
        wal.flush().unwrap();
    }
}
