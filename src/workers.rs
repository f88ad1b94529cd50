//! Background workers started with the app. Each watches the shutdown token and returns when it
//! fires, after finishing the unit of work it is in.

use chrono::{DateTime, Duration, Utc};
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{app::AppState, ingest::daily_id};

pub fn spawn(state: &AppState, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    if state.settings.delivery.enabled {
        // One delivery worker per process: on SQLite that is the rule (one writer), on PostgreSQL
        // each instance runs one and they share the outbox through leases. Concurrency comes
        // from the per-provider limits inside the worker.
        workers.push(tokio::spawn(crate::outbox::worker::run(
            state.db.clone(),
            state.settings.delivery.clone(),
            state.outbox.clone(),
            shutdown.clone(),
        )));
    }
    workers.push(tokio::spawn(salt_sweep(state.db.clone(), shutdown.clone())));
    // SQLite: the WAL is checkpointed here, not by the commit that crosses its threshold.
    workers.push(tokio::spawn(crate::db::wal::run(
        state.db.clone(),
        state.settings.database.url.clone(),
        std::time::Duration::from_millis(250),
        shutdown.clone(),
    )));
    // PostgreSQL: statistics for the tables ingest writes while they are young (plans made at a
    // few hundred rows are not kept at a million).
    workers.push(tokio::spawn(crate::db::statistics::run(state.db.clone(), shutdown.clone())));
    // Changes made by other instances reach this one's config cache within `cache.refresh_ms`.
    workers.push(tokio::spawn(state.config_cache.clone().run(state.db.clone(), shutdown.clone())));
    if state.settings.retention.enabled {
        // Small batches, each its own short transaction: safe to run on every instance.
        workers.push(tokio::spawn(crate::privacy::retention::run(
            state.db.clone(),
            state.settings.retention.clone(),
            shutdown.clone(),
        )));
    }
    workers
}

/// Deletes past days' cookieless salts ([`daily_id`]) at each UTC midnight — a salt is never
/// stored past its day, even on a day no event makes a new one — and every hour besides, so a
/// sweep missed (the database down at midnight, a suspended host) is made up within the hour.
pub async fn salt_sweep(db: DatabaseConnection, shutdown: CancellationToken) {
    loop {
        if let Err(e) = daily_id::forget_past_days(&db, Utc::now()).await {
            tracing::warn!(error = %e, "deleting past days' cookieless salts failed; trying again at the next sweep");
        }
        let wake = next_salt_sweep(Utc::now());
        // The monotonic clock the timer runs on and the wall clock may disagree by a little:
        // never sweep before the wall clock has reached the wake time, or midnight's sweep would
        // find yesterday still "today".
        while let Ok(left) = (wake - Utc::now()).to_std()
            && !left.is_zero()
        {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(left) => {}
            }
        }
    }
}

/// When the salt sweep wakes next after `now`: the next UTC midnight, or an hour from now if that
/// comes first — pure.
pub fn next_salt_sweep(now: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = daily_id::day_of(now).succ_opt().expect("a date before the year 262143");
    let midnight = tomorrow.and_time(chrono::NaiveTime::MIN).and_utc();
    midnight.min(now + Duration::hours(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_salt_sweep_wakes_at_the_next_utc_midnight_or_within_the_hour() {
        #[rustfmt::skip]
        let table = [
            // (now, next wake)
            ("2026-11-29T10:15:00Z", "2026-11-29T11:15:00Z"),        // the hourly fallback
            ("2026-11-29T22:59:59Z", "2026-11-29T23:59:59Z"),
            ("2026-11-29T23:00:00Z", "2026-11-30T00:00:00Z"),        // both at once
            ("2026-11-29T23:00:00.001Z", "2026-11-30T00:00:00Z"),    // midnight comes first
            ("2026-11-29T23:59:59.999Z", "2026-11-30T00:00:00Z"),
            ("2026-11-30T00:00:00Z", "2026-11-30T01:00:00Z"),        // just swept: an hour on
            ("2026-11-30T23:30:00Z", "2026-12-01T00:00:00Z"),        // end of a month
            ("2026-12-31T23:45:00Z", "2027-01-01T00:00:00Z"),        // end of a year
            ("2028-02-28T23:10:00Z", "2028-02-29T00:00:00Z"),        // a leap day
            ("2026-11-30T01:30:00+02:00", "2026-11-30T00:00:00Z"),   // UTC midnight, not local
        ];
        for (now, want) in table {
            assert_eq!(next_salt_sweep(at(now)), at(want), "after {now}");
        }
    }

    #[test]
    fn the_salt_sweep_always_wakes_later_and_within_the_hour_and_never_skips_a_midnight() {
        let mut now = at("2026-11-29T00:00:00Z");
        let end = at("2026-12-03T00:00:00Z");
        while now < end {
            let wake = next_salt_sweep(now);
            assert!(wake > now && wake - now <= Duration::hours(1), "{now} -> {wake}");
            // No UTC midnight lies strictly between now and the wake.
            assert!(daily_id::day_of(wake - Duration::nanoseconds(1)) == daily_id::day_of(now), "{now} -> {wake}");
            now += Duration::minutes(7) + Duration::seconds(13);
        }
    }
}
