//! Connecting to the database and migrating it. SQLite is the embedded default (a file in WAL
//! mode, created on first start); PostgreSQL is for scale-out. Both run the same migrations.

pub mod statistics;
pub mod wal;

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use crate::config::{DatabaseSettings, redact_url};

pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(settings.url.clone());
    opts.max_connections(settings.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // sqlx logs every statement at INFO; statements are not what an operator wants to read.
        .sqlx_logging(false)
        // SQLite's settings are per connection: set on every connection the pool opens. Besides
        // the pragmas, each gets [`sqlite_connection_setup`] (`after_connect`, below).
        .map_sqlx_sqlite_opts(sqlite_options);
    opts.map_sqlx_sqlite_pool_opts(|pool| {
        pool.after_connect(|conn, _| {
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                // SAFETY: the handle is this connection's open database, locked for the call; the
                // rusqlite connection borrows it (`from_handle` never closes it) and is dropped here.
                let borrowed = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) };
                borrowed
                    .and_then(|c| sqlite_connection_setup(&c))
                    .map_err(|e| sqlx::Error::Protocol(format!("setting up SQLite's connection failed: {e}")))
            })
        })
    });
    Database::connect(opts).await.map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", redact_url(&settings.url)))
}

/// What every SQLite connection gets besides its pragmas, the pool's ([`connect`]) and the ingest
/// writer's (`ingest::sqlite::open`) alike: the busy handler ([`sqlite_busy`]) and stable plans
/// ([`STABLE_PLANS`]).
pub fn sqlite_connection_setup(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(sqlite_busy))?;
    conn.set_db_config(STABLE_PLANS, true)?;
    Ok(())
}

/// **Stable plans** (`SQLITE_DBCONFIG_ENABLE_QPSG`), on every SQLite connection
/// ([`sqlite_connection_setup`]). Without it SQLite (3.51, as
/// bundled) plans `LIMIT ?` with the bound value as a constant, and so marks the statement to be
/// prepared again whenever that parameter is bound anew: every execution of every statement
/// with a `LIMIT` (sea-orm binds it) was parsed and planned again — the outbox's claims and
/// horizon checks on each round. Measured on the outbox's drain: `sqlite3Reprepare` ~3 % of the
/// process (docs/scaling.md). With it a plan never depends on a bound value; nothing here relies
/// on that (no `ANALYZE` on SQLite, so no value statistics either).
pub const STABLE_PLANS: rusqlite::config::DbConfig = rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG;

/// How long a connection waits for SQLite's write lock in all before `SQLITE_BUSY`.
pub const SQLITE_BUSY_WAIT: Duration = Duration::from_secs(10);

/// The pause before a connection tries SQLite's write lock again, after `tries` failed tries;
/// `None` once [`SQLITE_BUSY_WAIT`] is spent (the statement then fails `SQLITE_BUSY`, a `503`).
///
/// SQLite's own busy handler (what `busy_timeout` installs) sleeps 1, 2, 5, 10, 15, 20, 25 … ms
/// between tries: a writer that finds the lock taken sleeps at least 1 ms, 3 ms after two tries,
/// while the transactions holding it here last well under a millisecond to a few (an ingest
/// batch, a claim, a batch of outcomes) — so every collision cost more than the lock was held,
/// and the outbox's claims, one after the other, waited in that lottery behind ingest's and the
/// outcomes' commits (docs/scaling.md#the-outbox). Here: 100 µs pauses for the first 20 ms, then
/// 1 ms ones.
pub fn sqlite_busy_pause(tries: i32) -> Option<Duration> {
    const SHORT: Duration = Duration::from_micros(100);
    const SHORT_TRIES: i32 = 200;
    let tries = tries.max(0);
    let waited = SHORT * tries.min(SHORT_TRIES) as u32 + Duration::from_millis((tries - tries.min(SHORT_TRIES)) as u64);
    let pause = if tries < SHORT_TRIES { SHORT } else { Duration::from_millis(1) };
    (waited + pause <= SQLITE_BUSY_WAIT).then_some(pause)
}

/// [`sqlite_busy_pause`] as SQLite's busy handler: sleeps and says "try again", or gives up.
pub fn sqlite_busy(tries: i32) -> bool {
    match sqlite_busy_pause(tries) {
        Some(pause) => {
            std::thread::sleep(pause);
            true
        }
        None => false,
    }
}

/// Every SQLite connection: WAL lets readers proceed while the single writer commits; the busy
/// handler ([`sqlite_busy`], installed by [`connect`] on each connection in place of this busy
/// timeout's) makes a writer wait for the lock instead of failing with `SQLITE_BUSY`; and
/// `synchronous = FULL` fsyncs the WAL at every commit, so a `202` (answered after the commit)
/// survives a power loss or an OS crash, not only a crash of the process. `NORMAL` would fsync
/// only at checkpoints: faster per commit, but the last commits before a power loss could be
/// rolled back after they were acknowledged. Group commit (`ingest::writer`) pays the fsync once
/// per batch of events (docs/scaling.md#durability). No connection checkpoints the WAL when it
/// commits (`wal_autocheckpoint = 0`): [`wal::run`] does, in the background, so that a
/// commit that happens to cross the WAL's threshold does not copy it into the database while
/// every request of its batch waits (the writer's tail latency).
fn sqlite_options(o: sqlx::sqlite::SqliteConnectOptions) -> sqlx::sqlite::SqliteConnectOptions {
    o.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(SQLITE_BUSY_WAIT)
        .foreign_keys(true)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .pragma("wal_autocheckpoint", "0")
}

pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None).await?;
    Ok(())
}

/// True when every known migration has been applied (for `/readyz`).
pub async fn is_migrated(db: &DatabaseConnection) -> Result<bool, sea_orm::DbErr> {
    Ok(Migrator::get_pending_migrations(db).await?.is_empty())
}

/// Starts a transaction that no other `begin_tenant_write` of the same tenant runs alongside:
/// for read-then-write sequences whose outcome depends on what was read (appending to the
/// tenant's consent hash chain, switching its active config).
///
/// PostgreSQL: `SELECT … FOR NO KEY UPDATE` on the tenant row, so other tenants are not held up
/// (and, unlike `FOR UPDATE`, foreign-key checks of rows inserted for the tenant elsewhere —
/// events, audit entries — are not blocked either).
/// SQLite: `BEGIN IMMEDIATE`, which takes the database's single write lock up front (SQLite
/// serialises all writers anyway; a deferred transaction that read first would instead fail
/// with `SQLITE_BUSY` when it tries to write after another writer committed).
pub async fn begin_tenant_write(
    db: &DatabaseConnection,
    tenant_id: Uuid,
) -> Result<DatabaseTransaction, sea_orm::DbErr> {
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            db.begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
        }
        backend => {
            let txn = db.begin().await?;
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                "SELECT id FROM tenant WHERE id = $1 FOR NO KEY UPDATE",
                [tenant_id.into()],
            ))
            .await?;
            Ok(txn)
        }
    }
}

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`, taking the write lock
/// up front: a deferred transaction that reads and then writes fails with `SQLITE_BUSY` (which the
/// busy timeout cannot wait out) when another connection wrote in between. PostgreSQL ignores
/// the option.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, sea_orm::DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// True when `e` says the database cannot be reached or cannot serve right now (connection
/// refused or lost, pool exhausted or closed, PostgreSQL shutting down or the database gone,
/// SQLite's file unreadable, locked or full), as opposed to a fault in the statement or the
/// data. Requests failing this way get 503 with `Retry-After`, not 500.
pub fn is_unavailable(e: &sea_orm::DbErr) -> bool {
    matches!(e, sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_))
        || sqlx_error(e).is_some_and(sqlx_unavailable)
}

/// The driver's error behind a failed statement, if that is what `e` is.
fn sqlx_error(e: &sea_orm::DbErr) -> Option<&sqlx::Error> {
    use sea_orm::{DbErr, RuntimeErr::SqlxError};
    match e {
        DbErr::Exec(SqlxError(e)) | DbErr::Query(SqlxError(e)) => Some(e),
        _ => None,
    }
}

/// The SQLSTATE (PostgreSQL) or result code (SQLite) of a statement the database refused.
pub fn database_code(e: &sea_orm::DbErr) -> Option<String> {
    match sqlx_error(e)? {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                code.parse().is_ok_and(sqlite_unavailable)
            } else {
                postgres_unavailable(&code)
            }
        }
        _ => false,
    }
}

/// SQLite result codes that mean "not now": the primary code is the low byte of the extended
/// one. BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
pub(crate) fn sqlite_unavailable(extended: u32) -> bool {
    matches!(extended & 0xff, 5 | 6 | 8 | 10 | 11 | 13 | 14 | 26)
}

/// PostgreSQL SQLSTATEs that mean "not now": connection exceptions (08…), operator intervention
/// (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now), the database dropped
/// (3D000), too many connections (53300), out of disk or memory (53100, 53200).
fn postgres_unavailable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "3D000" | "53300" | "53100" | "53200")
}

/// `items` padded to a power-of-two length by repeating the last one, for an `IN (…)` list: a
/// statement's text depends on how many parameters it has, and the driver prepares (and keeps,
/// per connection) each text it sees — with any length allowed, every batch size would be a
/// statement of its own. A repeated value changes nothing in an `IN` list.
pub fn padded_for_in<T: Clone>(mut items: Vec<T>) -> Vec<T> {
    if let Some(last) = items.last().cloned() {
        items.resize(items.len().next_power_of_two(), last);
    }
    items
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{SQLITE_BUSY_WAIT, padded_for_in, postgres_unavailable, sqlite_busy_pause, sqlite_unavailable};

    /// The code of a statement the database refused, read through sea-orm's error: SQLite's
    /// extended result code here (PostgreSQL's SQLSTATE the same way); none for other failures.
    #[tokio::test]
    async fn a_refused_statement_says_its_code() {
        use sea_orm::ConnectionTrait;
        let settings = crate::config::DatabaseSettings { url: "sqlite::memory:".into(), max_connections: 1 };
        let db = super::connect(&settings).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (x INTEGER UNIQUE); INSERT INTO t VALUES (1)").await.unwrap();
        let e = db.execute_unprepared("INSERT INTO t VALUES (1)").await.unwrap_err();
        assert_eq!(super::database_code(&e).as_deref(), Some("2067"), "SQLITE_CONSTRAINT_UNIQUE: {e}");
        assert!(!super::is_unavailable(&e), "a client's mistake, not an outage");
        let e = sea_orm::DbErr::Custom("not from the driver".into());
        assert_eq!(super::database_code(&e), None);
    }

    /// Without stable plans SQLite prepares a statement with `LIMIT ?` again at each new binding
    /// (the prepare counter of the statement counts it); with them, never. Every SQLite connection
    /// the gateway opens has them: the pool's and the ingest writer's.
    #[tokio::test]
    async fn sqlite_connections_plan_once_whatever_the_limit_bound() {
        use rusqlite::StatementStatus::RePrepare;
        let reprepares = |stable: bool| {
            let conn = rusqlite::Connection::open_in_memory().unwrap();
            conn.set_db_config(super::STABLE_PLANS, stable).unwrap();
            conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2), (3)").unwrap();
            let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x LIMIT ?1").unwrap();
            for n in [1, 2, 3, 1, 2] {
                let rows: Vec<i64> = stmt.query_map([n], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
                assert_eq!(rows.len(), n as usize);
            }
            stmt.get_status(RePrepare)
        };
        assert!(reprepares(false) >= 4, "SQLite's default: prepared again at each binding");
        assert_eq!(reprepares(true), 0);

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("p.db").display());
        let db =
            super::connect(&crate::config::DatabaseSettings { url: url.clone(), max_connections: 2 }).await.unwrap();
        let mut conn = db.get_sqlite_connection_pool().acquire().await.unwrap();
        let mut handle = conn.lock_handle().await.unwrap();
        // SAFETY: the handle is the connection's open database, locked; borrowed, not closed.
        let pooled = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }.unwrap();
        assert!(pooled.db_config(super::STABLE_PLANS).unwrap(), "the pool's connections");
        let writer = crate::ingest::sqlite::open(&url).unwrap();
        assert!(writer.db_config(super::STABLE_PLANS).unwrap(), "the ingest writer's");
    }

    /// Migration 000017 undoes and redoes cleanly (a deploy rolled back with `down`): its
    /// `down` restores the index by visitor. Rolled back by name, so that migrations added after
    /// it are undone first and the test stays about this one.
    #[tokio::test]
    async fn migration_000017_goes_down_and_up_again() {
        use migration::{Migrator, MigratorTrait};
        use sea_orm::{ConnectionTrait, DbBackend, Statement};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let db = super::connect(&crate::config::DatabaseSettings { url, max_connections: 1 }).await.unwrap();
        let indexes = async || -> Vec<String> {
            let sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'delivery' \
                       AND name LIKE 'ix_delivery_%lookup%' ORDER BY name";
            let rows = db.query_all_raw(Statement::from_string(DbBackend::Sqlite, sql)).await.unwrap();
            rows.iter().map(|r| r.try_get_by_index::<String>(0).unwrap()).collect()
        };
        super::migrate(&db).await.unwrap();
        assert_eq!(indexes().await, ["ix_delivery_lookup_waiting"]);
        let all = Migrator::migrations();
        let at = all.iter().position(|m| m.name() == "m20261130_000017_waiting_lookup_ids_by_time").unwrap();
        Migrator::down(&db, Some((all.len() - at) as u32)).await.unwrap();
        assert_eq!(indexes().await, ["ix_delivery_consent_lookup_id"]);
        super::migrate(&db).await.unwrap();
        assert_eq!(indexes().await, ["ix_delivery_lookup_waiting"]);
        assert!(super::is_migrated(&db).await.unwrap());
    }

    #[test]
    fn a_busy_connection_retries_in_short_pauses_then_longer_ones_and_gives_up_after_the_wait() {
        let us = |n: u64| Some(Duration::from_micros(n));
        for (tries, pause) in [(0, us(100)), (1, us(100)), (199, us(100)), (200, us(1000)), (5000, us(1000))] {
            assert_eq!(sqlite_busy_pause(tries), pause, "after {tries} tries");
        }
        assert_eq!(sqlite_busy_pause(-1), us(100), "a negative count is read as none");
        // In all: the pauses before giving up add up to the wait, not beyond.
        let mut waited = Duration::ZERO;
        let mut tries = 0;
        while let Some(p) = sqlite_busy_pause(tries) {
            waited += p;
            tries += 1;
        }
        assert!(waited <= SQLITE_BUSY_WAIT && waited + Duration::from_millis(1) >= SQLITE_BUSY_WAIT, "{waited:?}");
        assert_eq!(sqlite_busy_pause(i32::MAX), None);
    }

    #[test]
    fn in_lists_are_padded_to_powers_of_two_with_their_last_value() {
        for (items, want) in [
            (vec![], vec![]),
            (vec![1], vec![1]),
            (vec![1, 2], vec![1, 2]),
            (vec![1, 2, 3], vec![1, 2, 3, 3]),
            (vec![1, 2, 3, 4, 5], vec![1, 2, 3, 4, 5, 5, 5, 5]),
        ] {
            assert_eq!(padded_for_in(items.clone()), want, "{items:?}");
        }
        assert_eq!(padded_for_in((0..300).collect::<Vec<_>>()).len(), 512);
    }

    #[test]
    fn sqlite_unavailable_codes() {
        for (code, unavailable) in [
            (5, true),     // SQLITE_BUSY
            (261, true),   // SQLITE_BUSY_RECOVERY
            (10, true),    // SQLITE_IOERR
            (3850, true),  // SQLITE_IOERR_LOCK
            (14, true),    // SQLITE_CANTOPEN
            (26, true),    // SQLITE_NOTADB
            (2067, false), // SQLITE_CONSTRAINT_UNIQUE
            (787, false),  // SQLITE_CONSTRAINT_FOREIGNKEY
            (1, false),    // SQLITE_ERROR
        ] {
            assert_eq!(sqlite_unavailable(code), unavailable, "{code}");
        }
    }

    #[test]
    fn postgres_unavailable_codes() {
        for (code, unavailable) in [
            ("08006", true),  // connection_failure
            ("08001", true),  // sqlclient_unable_to_establish_sqlconnection
            ("57P01", true),  // admin_shutdown
            ("3D000", true),  // invalid_catalog_name: the database was dropped
            ("53300", true),  // too_many_connections
            ("23505", false), // unique_violation
            ("23503", false), // foreign_key_violation
            ("40001", false), // serialization_failure
            ("42P01", false), // undefined_table
        ] {
            assert_eq!(postgres_unavailable(code), unavailable, "{code}");
        }
    }
}
