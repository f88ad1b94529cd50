//! PostgreSQL: planner statistics for the tables ingest writes, while they are young.
//!
//! **Why.** PostgreSQL keeps a prepared statement's *generic* plan (sqlx prepares each statement
//! once per connection) until something invalidates it — an `ANALYZE` of a table it reads, a
//! schema change. A plan made while a table is tiny and has no statistics stays as the table
//! grows: in the benchmark the writers' idempotency lookup, planned at a few hundred rows, read
//! `ix_analytics_event_anonymous_id` by `tenant_id` alone and filtered the keys — 130 ms per batch
//! at 200,000 rows instead of 0.1 ms through the unique index (docs/scaling.md). Autovacuum
//! analyzes a table once a tenth of it has changed, but looks only every `autovacuum_naptime`
//! (a minute by default), and a fresh deployment's first minute is when the tables grow ×1000.
//!
//! **What.** Every [`PERIOD`] this task reads `pg_stat_user_tables` for [`TABLES`] and runs
//! `ANALYZE` on each one [`due`]: at least [`MIN_CHANGES`] rows changed since its last analyze,
//! and at least as many as it had then — the statistics describe half of the table or less. So a
//! table is analyzed as it doubles (a dozen times on its way to a million rows, each `ANALYZE`
//! reading a sample of at most 30,000 rows), after which autovacuum's own threshold (a tenth)
//! comes first. Each `ANALYZE` also invalidates every session's cached plans of the table, so
//! the next execution plans again with the new statistics.
//!
//! Every instance runs it; two instances analyzing the same table at once take turns on its lock,
//! and the second usually finds it no longer due. Nothing to do on SQLite (its planner has no
//! statistics unless `ANALYZE` is run, and its plans are kept right by the statements' shapes:
//! `outbox::pending_by_id`). A database user that may not analyze the tables (not their owner)
//! gets one warning and the task stops: autovacuum still analyzes them, only later.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};

/// The tables ingest and the outbox read by key under load.
pub const TABLES: [&str; 3] = ["analytics_event", "delivery", "consent_record"];

/// How often the tables' activity is read.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Fewer changes than this never make a table due. Not more: the benchmark's 100 consent records,
/// never analyzed, were read 100 rows per visitor per batch (a nested loop over
/// `ix_consent_record_created`, 8 M rows read in one 10 s round); analyzed, one row each.
pub const MIN_CHANGES: i64 = 100;

/// A table's counters from `pg_stat_user_tables` (updated by each backend at most once a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Rows in the table now (`n_live_tup`).
    pub live: i64,
    /// Rows inserted, updated or deleted since its last analyze (`n_mod_since_analyze`).
    pub changed: i64,
}

/// Whether a table with `activity` is analyzed now — pure. At least [`MIN_CHANGES`] changes, and
/// at least as many as there were rows at the last analyze (`live - changed` for a table only
/// appended to; for one with updates and deletes, such as the outbox's, it is less, so it is
/// analyzed sooner — its statistics age faster too).
pub fn due(activity: Activity) -> bool {
    activity.changed >= MIN_CHANGES && activity.changed >= activity.live - activity.changed
}

/// Analyzes the tables of [`TABLES`] that are [`due`] and returns their names. Nothing on SQLite.
pub async fn analyze_due(db: &impl ConnectionTrait) -> Result<Vec<&'static str>, DbErr> {
    if db.get_database_backend() != DbBackend::Postgres {
        return Ok(Vec::new());
    }
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT relname::text AS name, n_live_tup AS live, n_mod_since_analyze AS changed \
             FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = ANY($1)",
            [TABLES.iter().map(|t| t.to_string()).collect::<Vec<_>>().into()],
        ))
        .await?;
    let mut analyzed = Vec::new();
    for row in rows {
        let name: String = row.try_get("", "name")?;
        let activity = Activity { live: row.try_get("", "live")?, changed: row.try_get("", "changed")? };
        // Only names of TABLES reach the statement's text.
        let Some(table) = TABLES.iter().find(|t| **t == name) else { continue };
        if due(activity) {
            db.execute_unprepared(&format!("ANALYZE \"{table}\"")).await?;
            tracing::debug!(table, live = activity.live, changed = activity.changed, "analyzed a young table");
            analyzed.push(*table);
        }
    }
    Ok(analyzed)
}

/// Runs [`analyze_due`] every [`PERIOD`] until `shutdown`. A failure is logged and tried again
/// at the next reading; a refusal (`42501`, not the tables' owner) is logged once and ends it.
pub async fn run(db: DatabaseConnection, shutdown: tokio_util::sync::CancellationToken) {
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        match analyze_due(&db).await {
            Ok(_) => failures = 0,
            Err(e) if is_refused(&e) => {
                tracing::warn!(error = %e, "cannot analyze the ingest tables (not their owner): \
                    their statistics come from autovacuum alone");
                return;
            }
            Err(e) => {
                failures += 1;
                // Warn on the first failure of a run and then once a minute of them.
                if failures % 30 == 1 {
                    tracing::warn!(error = %e, failures, "reading or analyzing the ingest tables failed; trying again");
                }
            }
        }
    }
}

/// Whether `e` is PostgreSQL's `insufficient_privilege` (42501).
fn is_refused(e: &DbErr) -> bool {
    super::database_code(e).as_deref() == Some("42501")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_analyzed_as_it_doubles() {
        let at = |live, changed| due(Activity { live, changed });
        // (rows now, changed since the last analyze, due?)
        let table = [
            (0, 0, false),
            (99, 99, false),             // never analyzed, but small
            (100, 100, true),            // never analyzed: every row is a change
            (300, 149, false),           // analyzed at 151 rows, not yet doubled
            (300, 150, true),            // analyzed at 150, now 300
            (1_000_000, 400_000, false), // analyzed at 600,000: autovacuum's tenth came first
            (1_000_000, 500_000, true),
            (30, 500, true), // the outbox: updates and deletes count too
            (50_000, 2_000, false),
        ];
        for (live, changed, expected) in table {
            assert_eq!(at(live, changed), expected, "live {live}, changed {changed}");
        }
    }
}
