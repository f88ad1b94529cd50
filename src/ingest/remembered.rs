//! The visitors' latest consent records as SQLite's ingest writer last read them, kept between its
//! batches so that an event of a visitor seen before reads nothing (issue 14: the records' read
//! was ~10 % of the writer's time, docs/scaling.md) — and exact all the same.
//!
//! **Why it cannot go stale.** It is checked at the start of each batch, inside the batch's write
//! transaction (`BEGIN IMMEDIATE`: no other connection can commit until it ends), against two
//! numbers the database keeps: `consent_record`'s largest rowid, which grows with every new record
//! (the visitors of the records added since the last check are forgotten, and read again), and
//! the count in `consent_record_changes`, which triggers bump at every update or deletion of a
//! record (an erasure, retention: everything is forgotten; migration 000018). What is read is
//! what the tenant's records say now; the record as the decision reads it does not depend on the
//! time ([`consent::decide`] compares its expiry with the event's), and whether it was made
//! under the active config is worked out at each use.
//!
//! Bounded: past [`REMEMBERED_MAX`] visitors it starts over.

use std::collections::HashMap;

use rusqlite::Connection;
use uuid::Uuid;

use crate::consent::{self, RecordedChoice};

/// How many visitors' records (or their having none) are kept at most: ~250 bytes each.
pub const REMEMBERED_MAX: usize = 20_000;

/// A visitor's latest record: the config it was made under, and the choice as recorded.
type Latest = Option<(Uuid, RecordedChoice)>;

#[derive(Default)]
pub struct Remembered {
    /// `consent_record_changes.n` and `consent_record`'s largest rowid at the last check.
    seen: Option<(i64, i64)>,
    /// By tenant, then visitor hash; `None`: the visitor had no record.
    latest: HashMap<Uuid, HashMap<String, Latest>>,
}

impl Remembered {
    /// In the batch's write transaction, before anything is read: forgets whatever may have
    /// changed since the last check. `false` when the check itself failed: then nothing is
    /// remembered or used for this batch (every record is read).
    pub fn check(&mut self, tx: &Connection) -> bool {
        let now = tx
            .prepare_cached(
                "SELECT (SELECT n FROM consent_record_changes WHERE id = 1), \
                 (SELECT COALESCE(MAX(rowid), 0) FROM consent_record)",
            )
            .and_then(|mut s| s.query_row([], |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)?))));
        let (changes, top) = match now {
            Ok((Some(changes), top)) => (changes, top),
            Ok((None, _)) | Err(_) => {
                tracing::warn!("the consent records' change count cannot be read; every record is read again");
                self.forget();
                return false;
            }
        };
        match self.seen {
            Some((c, t)) if c == changes && t == top => {}
            Some((c, t)) if c == changes && top > t => {
                if self.forget_added_since(tx, t).is_err() {
                    self.forget();
                    return false;
                }
            }
            _ => self.latest.clear(),
        }
        if self.latest.values().map(HashMap::len).sum::<usize>() >= REMEMBERED_MAX {
            self.latest.clear();
        }
        self.seen = Some((changes, top));
        true
    }

    /// The visitors of the records added after rowid `after` are read again.
    fn forget_added_since(&mut self, tx: &Connection, after: i64) -> rusqlite::Result<()> {
        let mut stmt = tx.prepare_cached("SELECT tenant_id, visitor_hash FROM consent_record WHERE rowid > ?1")?;
        let mut rows = stmt.query([after])?;
        while let Some(row) = rows.next()? {
            // A tenant id that cannot be read: which visitor it was is unknown, so all are forgotten.
            let Ok(tenant) = Uuid::from_slice(&row.get::<_, Vec<u8>>(0)?) else {
                self.latest.clear();
                return Ok(());
            };
            if let Some(visitors) = self.latest.get_mut(&tenant) {
                visitors.remove(&row.get::<_, String>(1)?);
            }
        }
        Ok(())
    }

    fn forget(&mut self) {
        self.seen = None;
        self.latest.clear();
    }

    /// What is remembered of the visitor `hash` of `tenant`, under the tenant's `active` config:
    /// `None` when nothing is (read it), `Some(None)` when the visitor has no record.
    pub fn get(&self, tenant: Uuid, hash: &str, active: Option<Uuid>) -> Option<Option<RecordedChoice>> {
        let latest = self.latest.get(&tenant)?.get(hash)?;
        Some(latest.as_ref().map(|(config, choice)| consent::records::under_config(choice.clone(), *config, active)))
    }

    /// Remembers what was read of the visitor `hash`: their latest record's config and choice as
    /// recorded ([`consent::records::recorded_choice`]), or none.
    pub fn put(&mut self, tenant: Uuid, hash: String, latest: Option<(Uuid, RecordedChoice)>) {
        self.latest.entry(tenant).or_default().insert(hash, latest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated SQLite database, and a connection to it that does not check foreign keys (the
    /// records below have no tenant or config).
    async fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let db = crate::db::connect(&crate::config::DatabaseSettings { url, max_connections: 1 }).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        db.close().await.unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
        (dir, conn)
    }

    /// A record of visitor `hash` of `tenant`: the columns that need a value get one of their type.
    fn add_record(conn: &Connection, tenant: Uuid, hash: &str, seq: i64) {
        let mut stmt = conn.prepare("SELECT name, type FROM pragma_table_info('consent_record') WHERE \"notnull\" = 1 AND dflt_value IS NULL").unwrap();
        let columns: Vec<(String, String)> =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
        let values: Vec<rusqlite::types::Value> = columns
            .iter()
            .map(|(name, kind)| match (name.as_str(), kind.to_ascii_lowercase()) {
                ("id", _) => Uuid::now_v7().as_bytes().to_vec().into(),
                ("tenant_id", _) => tenant.as_bytes().to_vec().into(),
                ("visitor_hash", _) => hash.to_string().into(),
                ("seq", _) => seq.into(),
                (_, k) if k.contains("blob") || k.contains("uuid") => Uuid::nil().as_bytes().to_vec().into(),
                (_, k) if k.contains("int") || k.contains("bool") => 1i64.into(),
                _ => "{}".to_string().into(),
            })
            .collect();
        let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
        let marks = vec!["?"; names.len()].join(", ");
        let sql = format!("INSERT INTO consent_record ({}) VALUES ({marks})", names.join(", "));
        conn.execute(&sql, rusqlite::params_from_iter(values)).unwrap();
    }

    fn held(r: &Remembered, tenant: Uuid, hash: &str) -> bool {
        r.get(tenant, hash, None).is_some()
    }

    #[tokio::test]
    async fn what_may_have_changed_since_the_last_check_is_forgotten() {
        let (_dir, conn) = database().await;
        let (t, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut r = Remembered::default();
        assert!(r.check(&conn));
        for (tenant, hash) in [(t, "a"), (t, "b"), (other, "a")] {
            r.put(tenant, hash.into(), None);
        }
        assert!(r.check(&conn));
        assert!(held(&r, t, "a") && held(&r, t, "b") && held(&r, other, "a"), "nothing changed");
        assert_eq!(r.get(t, "a", None), Some(None), "remembered as having no record");

        // A new record: its visitor only is read again.
        add_record(&conn, t, "a", 1);
        assert!(r.check(&conn));
        assert!(!held(&r, t, "a") && held(&r, t, "b") && held(&r, other, "a"));

        // An update (an erasure) or a deletion (retention) of any record: everything is.
        r.put(t, "a".into(), None);
        conn.execute("UPDATE consent_record SET visitor_id = NULL", []).unwrap();
        assert!(r.check(&conn));
        assert!(!held(&r, t, "a") && !held(&r, t, "b") && !held(&r, other, "a"));
        r.put(t, "b".into(), None);
        conn.execute("DELETE FROM consent_record", []).unwrap();
        assert!(r.check(&conn));
        assert!(!held(&r, t, "b"));

        // The count unreadable: nothing is used (fail closed: every record is read).
        r.put(t, "b".into(), None);
        conn.execute_batch("DELETE FROM consent_record_changes").unwrap();
        assert!(!r.check(&conn));
        assert!(!held(&r, t, "b"));
    }

    #[tokio::test]
    async fn it_starts_over_past_its_bound() {
        let (_dir, conn) = database().await;
        let t = Uuid::now_v7();
        let mut r = Remembered::default();
        assert!(r.check(&conn));
        for i in 0..REMEMBERED_MAX {
            r.put(t, format!("v{i}"), None);
        }
        assert!(held(&r, t, "v0"));
        assert!(r.check(&conn));
        assert!(!held(&r, t, "v0") && !held(&r, t, "v1"));
    }
}
