//! SQLite's ingest writer: the group-commit transaction of [`writer`](super::writer) on a
//! connection of its own, driven directly (rusqlite) from a thread of its own.
//!
//! **Why not through sea-orm**, like every other query: on SQLite this transaction is ingest's
//! bottleneck — one write lock, one writer, and every request of a batch waits for it. Through
//! sea-orm and sqlx each statement is built by sea-query, bound value by value and handed to
//! sqlx's worker thread and back: measured at ~32 events per commit, BEGIN took 0.4 ms, the
//! records read 1.0 ms and the inserts 4.6 ms (docs/scaling.md). Here each statement is prepared
//! once per connection and reused, and rows are bound straight from the planned models.
//!
//! **Same rows.** Everything else reads these rows through sea-orm, so they are written exactly
//! as sea-orm writes them on SQLite: uuids as 16-byte blobs, times as RFC 3339 text with
//! `+00:00` ([`time_text`]), JSON as compact text, booleans as integers. A test writes the same
//! models both ways and compares every column's stored value and type.
//!
//! **Same transaction.** What [`writer`](super::writer) does on PostgreSQL through sea-orm:
//! `BEGIN IMMEDIATE` (the write lock first, so the records read cannot go stale), the batch's
//! latest consent records in one query, [`decide`](super::decide), the batch's idempotency keys
//! in one query ([`store::fates`]), one row per event (its decisions in it) and delivery, the usage counts,
//! `COMMIT`. The connection's settings are the pool's ([`open`]; a test compares them).

use std::{collections::HashMap, str::FromStr};

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use entity::{analytics_event, consent_record, delivery};
use rusqlite::{Connection, OpenFlags, Row, TransactionBehavior, params};
use sea_orm::{DbErr, RuntimeErr, TryIntoModel};
use serde_json::Value;
use uuid::Uuid;

use super::{
    Accepted, CommitTimes, Prepared, decide_all,
    decisions::DecisionView,
    remembered::Remembered,
    store::{self, Fate, PlannedEvent, StoredKey},
};
use crate::consent;

/// Opens the writer's connection to the database of `url` (a `sqlite:` URL, already migrated by
/// the pool), with the settings every connection of the pool has (`db::sqlite_options`).
///
/// One setting differs: `synchronous = NORMAL` instead of `FULL`. Its commits are made durable by
/// [`wal_sync`](super::wal_sync) (the WAL's fsync off the write lock) before any request is
/// answered.
pub fn open(url: &str) -> Result<Connection, DbErr> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(database_path(url)?, flags).map_err(db_err)?;
    crate::db::sqlite_connection_setup(&conn).map_err(db_err)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0)).map_err(db_err)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")
        .map_err(db_err)?;
    // The pages the writer keeps going back to (the indexes' right edges and hot leaves): 16 MiB
    // instead of SQLite's 2 MiB default, kept across its transactions while no other connection
    // writes.
    conn.execute_batch(&format!("PRAGMA cache_size = -{}", WRITER_CACHE_KIB)).map_err(db_err)?;
    Ok(conn)
}

/// The database file of a `sqlite:` URL.
pub fn database_path(url: &str) -> Result<std::path::PathBuf, DbErr> {
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(|e| DbErr::Custom(e.to_string()))?;
    Ok(options.get_filename().to_path_buf())
}

/// Decides and stores `events` in one transaction on `conn` and returns each one's answer (see
/// [`store::store`], which does the same through sea-orm on PostgreSQL).
pub fn store_in_one_transaction(
    conn: &mut Connection,
    events: &[&Prepared],
    remembered: &mut Remembered,
) -> Result<Vec<Result<Accepted, crate::error::Error>>, DbErr> {
    let mut times = CommitTimes::start();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    times.begun();
    let records = records_of(&tx, events, remembered)?;
    times.read();
    let planned = decide_all(events, &records);
    times.decided();
    let planned: Vec<&PlannedEvent> = planned.iter().collect();
    let existing = existing(&tx, &planned)?;
    let fates = store::fates(&planned, &existing);
    let mut denied = store::DeniedCounts::default();
    for (e, fate) in planned.iter().zip(&fates) {
        if *fate == Fate::Store {
            insert(&tx, e)?;
            denied.add(e);
        }
    }
    for (config, n) in denied.in_order() {
        tx.prepare_cached(
            "UPDATE provider_config SET events_denied_by_consent = events_denied_by_consent + ?1 WHERE id = ?2",
        )
        .map_err(db_err)?
        .execute(params![n as i64, config.as_bytes()])
        .map_err(db_err)?;
    }
    let mut earlier = HashMap::new();
    for fate in &fates {
        if let Fate::RepeatOfStored(r) = *fate
            && let std::collections::hash_map::Entry::Vacant(slot) = earlier.entry(existing[r].id)
        {
            let decisions = decisions_of(&tx, *slot.key())?;
            slot.insert(decisions);
        }
    }
    let answers = store::answers(&planned, &fates, &existing, &earlier);
    times.stored();
    tx.commit().map_err(db_err)?;
    times.committed(events.len());
    Ok(answers)
}

/// The latest consent record of each visitor of `events`, as [`super::records_of`] reads them
/// through sea-orm (`consent::records::latest_models`): what `remembered` holds of them (checked
/// first, in this transaction), the others in one query per tenant of the batch — then remembered.
fn records_of(
    tx: &Connection,
    events: &[&Prepared],
    remembered: &mut Remembered,
) -> Result<HashMap<(Uuid, String), consent::RecordedChoice>, DbErr> {
    let usable = remembered.check(tx);
    let mut out = HashMap::new();
    for (tenant_id, (cached, visitors)) in super::visitors_by_tenant(events) {
        let mut by_hash = consent::records::by_hash(&cached.tenant, visitors);
        let active = cached.active_consent_config();
        if usable {
            by_hash.retain(|hash, id| match remembered.get(tenant_id, hash, active) {
                Some(latest) => {
                    if let Some(choice) = latest {
                        out.insert((tenant_id, id.clone()), choice);
                    }
                    false
                }
                None => true,
            });
        }
        if by_hash.is_empty() {
            continue;
        }
        let hashes =
            serde_json::to_string(&by_hash.keys().collect::<Vec<_>>()).map_err(|e| DbErr::Json(e.to_string()))?;
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, tenant_id, seq, visitor_id, visitor_hash, config_id, revision, texts_hash, language, \
                 choices, action, source, dnt, gpc, country, ip_truncated, user_agent, created_at, expires_at, \
                 prev_hash, hash, provider_choices, canonical_version FROM consent_record \
                 WHERE tenant_id = ?1 AND seq IN (SELECT MAX(seq) FROM consent_record WHERE tenant_id = ?1 \
                 AND visitor_hash IN (SELECT value FROM json_each(?2)) AND visitor_id IS NOT NULL \
                 GROUP BY visitor_hash)",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query(params![tenant_id.as_bytes(), hashes]).map_err(db_err)?;
        while let Some(row) = rows.next().map_err(db_err)? {
            let m = consent_record_of(row)?;
            if let Some(id) = by_hash.remove(&m.visitor_hash) {
                let recorded = consent::records::recorded_choice(&m).map_err(store::into_db)?;
                out.insert((tenant_id, id), consent::records::under_config(recorded.clone(), m.config_id, active));
                if usable {
                    remembered.put(tenant_id, m.visitor_hash, Some((m.config_id, recorded)));
                }
            }
        }
        // The visitors left have no record (none, or every one erased).
        if usable {
            for hash in by_hash.into_keys() {
                remembered.put(tenant_id, hash, None);
            }
        }
    }
    Ok(out)
}

fn consent_record_of(r: &Row<'_>) -> Result<consent_record::Model, DbErr> {
    Ok(consent_record::Model {
        id: uuid_at(r, 0)?,
        tenant_id: uuid_at(r, 1)?,
        seq: get(r, 2)?,
        visitor_id: get(r, 3)?,
        visitor_hash: get(r, 4)?,
        config_id: uuid_at(r, 5)?,
        revision: get(r, 6)?,
        texts_hash: get(r, 7)?,
        language: get(r, 8)?,
        choices: json_at(r, 9)?.unwrap_or(Value::Null),
        action: get(r, 10)?,
        source: get(r, 11)?,
        dnt: get(r, 12)?,
        gpc: get(r, 13)?,
        country: get(r, 14)?,
        ip_truncated: get(r, 15)?,
        user_agent: get(r, 16)?,
        created_at: time_at(r, 17)?,
        expires_at: time_at(r, 18)?,
        prev_hash: get(r, 19)?,
        hash: get(r, 20)?,
        provider_choices: json_at(r, 21)?,
        canonical_version: get(r, 22)?,
    })
}

/// Rows stored before with a key some event of the batch was posted with (one query per tenant
/// of the batch).
fn existing(tx: &Connection, events: &[&PlannedEvent]) -> Result<Vec<StoredKey>, DbErr> {
    let mut by_tenant: HashMap<Uuid, Vec<&str>> = HashMap::new();
    for e in events {
        if let Some(key) = e.lookup_key.as_deref() {
            by_tenant.entry(e.event.tenant_id).or_default().push(key);
        }
    }
    let mut out = Vec::new();
    for (tenant, mut keys) in by_tenant {
        keys.sort_unstable();
        keys.dedup();
        let keys = serde_json::to_string(&keys).map_err(|e| DbErr::Json(e.to_string()))?;
        let mut stmt = tx
            .prepare_cached(
                "SELECT id, tenant_id, provider, idempotency_key, key_kind FROM analytics_event \
                 WHERE tenant_id = ?1 AND idempotency_key IN (SELECT value FROM json_each(?2))",
            )
            .map_err(db_err)?;
        let mut rows = stmt.query(params![tenant.as_bytes(), keys]).map_err(db_err)?;
        while let Some(r) = rows.next().map_err(db_err)? {
            out.push(StoredKey {
                id: uuid_at(r, 0)?,
                tenant_id: uuid_at(r, 1)?,
                provider: get(r, 2)?,
                idempotency_key: get(r, 3)?,
                key_kind: get(r, 4)?,
            });
        }
    }
    // The first event stored with a key is the one a repeat answers with (ids grow with time).
    out.sort_by_key(|k| k.id);
    Ok(out)
}

/// The decisions stored with an earlier event (`decisions::for_event`).
fn decisions_of(tx: &Connection, event_id: Uuid) -> Result<Vec<DecisionView>, DbErr> {
    let mut stmt = tx.prepare_cached("SELECT decisions FROM analytics_event WHERE id = ?1").map_err(db_err)?;
    let mut rows = stmt.query(params![event_id.as_bytes()]).map_err(db_err)?;
    let Some(row) = rows.next().map_err(db_err)? else { return Ok(Vec::new()) };
    let column = json_at(row, 0)?.unwrap_or(Value::Null);
    super::decisions::stored(&column).map_err(|e| DbErr::Json(e.to_string()))
}

/// One event's rows: the event (its decisions in it), its deliveries.
fn insert(tx: &Connection, e: &PlannedEvent) -> Result<(), DbErr> {
    insert_event(tx, &e.event)?;
    for d in &e.deliveries {
        let d = d.clone().try_into_model()?;
        insert_delivery(tx, &d)?;
    }
    Ok(())
}

fn insert_event(tx: &Connection, m: &analytics_event::Model) -> Result<(), DbErr> {
    tx.prepare_cached(
        "INSERT INTO analytics_event (id, tenant_id, provider, event_name, event_properties, user_id, \
         anonymous_id, session_id, page_url, referrer, title, user_agent, language, screen, revenue, context, \
         occurred_at, received_at, ip_truncated, country, dnt, gpc, idempotency_key, key_kind, decisions) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, \
         ?22, ?23, ?24, ?25)",
    )
    .map_err(db_err)?
    .execute(params![
        m.id.as_bytes(),
        m.tenant_id.as_bytes(),
        m.provider,
        m.event_name,
        json_text(&m.event_properties),
        m.user_id,
        m.anonymous_id,
        m.session_id,
        m.page_url,
        m.referrer,
        m.title,
        m.user_agent,
        m.language,
        m.screen,
        m.revenue.as_ref().map(json_text),
        json_text(&m.context),
        time_text(&m.occurred_at),
        time_text(&m.received_at),
        m.ip_truncated,
        m.country,
        m.dnt,
        m.gpc,
        m.idempotency_key,
        m.key_kind,
        json_text(&m.decisions),
    ])
    .map_err(db_err)?;
    Ok(())
}

fn insert_delivery(tx: &Connection, m: &delivery::Model) -> Result<(), DbErr> {
    tx.prepare_cached(
        "INSERT INTO delivery (id, tenant_id, event_id, config_id, provider, identity, status, attempts, \
         next_attempt_at, lease_owner, lease_until, last_status, last_error, warning, delivered_at, client_ip, \
         consent_lookup_id, user_agent, granted, pseudonymous_id, expires_at, claimed_at, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, \
         ?22, ?23, ?24)",
    )
    .map_err(db_err)?
    .execute(params![
        m.id.as_bytes(),
        m.tenant_id.as_bytes(),
        m.event_id.as_bytes(),
        m.config_id.as_bytes(),
        m.provider,
        m.identity,
        m.status,
        m.attempts,
        time_text(&m.next_attempt_at),
        m.lease_owner,
        m.lease_until.as_ref().map(time_text),
        m.last_status,
        m.last_error,
        m.warning,
        m.delivered_at.as_ref().map(time_text),
        m.client_ip,
        m.consent_lookup_id,
        m.user_agent,
        m.granted,
        m.pseudonymous_id,
        m.expires_at.as_ref().map(time_text),
        m.claimed_at.as_ref().map(time_text),
        time_text(&m.created_at),
        time_text(&m.updated_at),
    ])
    .map_err(db_err)?;
    Ok(())
}

/// The writer's page cache (KiB).
const WRITER_CACHE_KIB: u32 = 16 * 1024;

/// Copies the WAL into the database file, run by the writer between two batches (PASSIVE: it
/// never waits for a reader). Only here can a checkpoint catch up: one on another connection
/// (`db::wal::run`) copies what was committed when it started while the writer goes on
/// appending, so under sustained ingest the WAL was never fully copied, never started over, and
/// grew by ~130 MB/s in the benchmark — every page read searching an ever larger WAL index, every
/// append extending the file. Copied completely while no one writes, the WAL starts over at the
/// next write (its size then stays what a few batches need). Returns the WAL's frames and how
/// many of them are now in the database.
pub fn checkpoint(conn: &Connection) -> Result<(i64, i64), DbErr> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?))).map_err(db_err)
}

/// A time as sqlx stores a `DateTime<Utc>` on SQLite (what sea-orm's queries compare against).
pub fn time_text(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// JSON as sqlx stores a `serde_json::Value` on SQLite.
fn json_text(v: &Value) -> String {
    v.to_string()
}

fn get<T: rusqlite::types::FromSql>(r: &Row<'_>, i: usize) -> Result<T, DbErr> {
    r.get(i).map_err(db_err)
}

fn uuid_at(r: &Row<'_>, i: usize) -> Result<Uuid, DbErr> {
    let bytes: Vec<u8> = get(r, i)?;
    Uuid::from_slice(&bytes).map_err(|e| DbErr::Type(format!("column {i}: {e}")))
}

fn json_at(r: &Row<'_>, i: usize) -> Result<Option<Value>, DbErr> {
    let text: Option<String> = get(r, i)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| DbErr::Json(e.to_string()))).transpose()
}

/// A stored time: RFC 3339 (what sqlx writes), or `YYYY-MM-DD HH:MM:SS[.f]` as UTC (what SQLite's
/// own `CURRENT_TIMESTAMP` writes), as sqlx reads them.
fn time_at(r: &Row<'_>, i: usize) -> Result<DateTime<Utc>, DbErr> {
    let text: String = get(r, i)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(&text, "%F %T%.f").map(|t| t.and_utc()))
        .map_err(|e| DbErr::Type(format!("column {i}: {text:?} is not a time: {e}")))
}

/// A rusqlite error as the writer's callers read database errors: a database that cannot be
/// used now (busy beyond the timeout, I/O, full disk, …) is `DbErr::Conn`, which
/// `db::is_unavailable` answers `503`; anything else is a failed statement.
pub fn db_err(e: rusqlite::Error) -> DbErr {
    let unavailable = e.sqlite_error().is_some_and(|f| crate::db::sqlite_unavailable(f.extended_code as u32));
    let e = RuntimeErr::Internal(e.to_string());
    if unavailable { DbErr::Conn(e) } else { DbErr::Exec(e) }
}

/// Whether `e` (from [`db_err`]) is a unique-constraint violation.
pub fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e, DbErr::Exec(RuntimeErr::Internal(m)) if m.starts_with("UNIQUE constraint failed"))
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    use super::*;

    const SETTINGS: [&str; 4] = ["journal_mode", "foreign_keys", "busy_timeout", "wal_autocheckpoint"];

    /// The writer's connection is set up as every connection of the pool (`db::connect`): WAL,
    /// foreign keys, the busy handler, no checkpoint at commit — but `synchronous = NORMAL`, where
    /// the pool's are `FULL`: the writer's commits are fsynced by `wal_sync` before anyone is
    /// answered (a `202` survives a power loss), off the write lock.
    #[tokio::test]
    async fn the_writers_connection_has_the_pools_settings() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let settings = crate::config::DatabaseSettings { url: url.clone(), max_connections: 2 };
        let pool = crate::db::connect(&settings).await.unwrap();
        crate::db::migrate(&pool).await.unwrap();
        let writer = open(&url).unwrap();
        for name in SETTINGS {
            let row = pool
                .query_one_raw(Statement::from_string(DbBackend::Sqlite, format!("PRAGMA {name}")))
                .await
                .unwrap()
                .unwrap();
            let pooled = match row.try_get_by_index::<i64>(0) {
                Ok(n) => n.to_string(),
                Err(_) => row.try_get_by_index::<String>(0).unwrap(),
            };
            let own: rusqlite::types::Value = writer.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap();
            let own = match own {
                rusqlite::types::Value::Integer(n) => n.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => panic!("PRAGMA {name}: {other:?}"),
            };
            assert_eq!(own, pooled, "PRAGMA {name}");
        }
        let busy: i64 = writer.query_row("PRAGMA busy_timeout", [], |r| r.get(0)).unwrap();
        assert_eq!(busy, 0, "both wait with db::sqlite_busy, which replaces SQLite's timeout handler");
        let sync: i64 = writer.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 1, "1 = NORMAL: the commit's fsync is wal_sync's");
        let pooled = pool.query_one_raw(Statement::from_string(DbBackend::Sqlite, "PRAGMA synchronous")).await.unwrap();
        assert_eq!(pooled.unwrap().try_get_by_index::<i64>(0).unwrap(), 2, "2 = FULL on the pool's connections");
    }

    /// A checkpoint between two batches copies the whole WAL (no one else writes meanwhile), so
    /// the next write starts it over instead of appending: the WAL's size is what a few batches
    /// need, however long ingest goes on. Without it (a checkpoint from another connection while
    /// the writer appends) the benchmark's WAL grew to 1.3 GB in 10 s.
    #[tokio::test]
    async fn a_checkpoint_between_batches_lets_the_wal_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
        let pool = crate::db::connect(&crate::config::DatabaseSettings { url: url.clone(), max_connections: 2 })
            .await
            .unwrap();
        let mut writer = open(&url).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let batch = |conn: &mut Connection| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
            for _ in 0..200 {
                tx.execute("INSERT INTO t VALUES (randomblob(2000))", []).unwrap();
            }
            tx.commit().unwrap();
        };
        let wal = dir.path().join("c.db-wal");
        for _ in 0..5 {
            batch(&mut writer);
        }
        let (frames, copied) = checkpoint(&writer).unwrap();
        assert!(frames > 100 && copied == frames, "everything copied: {frames} frames, {copied} copied");
        let grown = std::fs::metadata(&wal).unwrap().len();
        // A reader of the pool between batches (as the app's are) does not hold it back.
        pool.execute_unprepared("SELECT COUNT(*) FROM t").await.unwrap();
        for _ in 0..20 {
            batch(&mut writer);
            checkpoint(&writer).unwrap();
        }
        let (frames_after, _) = checkpoint(&writer).unwrap();
        assert!(
            frames_after < frames,
            "the WAL started over: {frames_after} frames after one batch vs {frames} after five"
        );
        assert!(
            std::fs::metadata(&wal).unwrap().len() <= grown,
            "twenty more batches did not grow the WAL past five batches' size"
        );
    }

    /// Times and JSON as sqlx binds them for sea-orm: what sea-orm's queries compare with.
    #[tokio::test]
    async fn times_and_json_are_written_as_sqlx_binds_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let pool = crate::db::connect(&crate::config::DatabaseSettings { url, max_connections: 1 }).await.unwrap();
        for t in ["2026-11-30T01:02:03.123456789Z", "2026-11-30T01:02:03.120Z", "2026-11-30T01:02:03Z"] {
            let t = DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc);
            let stmt = Statement::from_sql_and_values(DbBackend::Sqlite, "SELECT ?", [t.into()]);
            let row = pool.query_one_raw(stmt).await.unwrap().unwrap();
            assert_eq!(time_text(&t), row.try_get_by_index::<String>(0).unwrap(), "{t}");
        }
        let v = serde_json::json!({"b": [1, 2.5, "ü"], "a": null});
        let stmt = Statement::from_sql_and_values(DbBackend::Sqlite, "SELECT ?", [v.clone().into()]);
        let row = pool.query_one_raw(stmt).await.unwrap().unwrap();
        assert_eq!(json_text(&v), row.try_get_by_index::<String>(0).unwrap());
    }
}
