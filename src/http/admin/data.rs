//! The delivery figures the admin pages show, read from the database: counts per provider
//! config, the outbox depth, and per config the deliveries per day and the delivery lag.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use entity::delivery;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Func},
};
use serde::Serialize;
use uuid::Uuid;

use super::sql;
use crate::{error::Result, outbox::log::DeliveryStatus};

/// Deliveries of one config by state. `retrying` are the pending ones that failed at least once;
/// the pages then set it from the API's `usage.events_retrying` (the same, and while the
/// config's circuit is not closed, every pending one).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub retrying: i64,
    pub delivered: i64,
    pub dropped: i64,
    pub dead: i64,
}

/// Counts per config id.
pub async fn delivery_counts(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<HashMap<Uuid, DeliveryCounts>> {
    let rows: Vec<(Uuid, String, i64)> = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::ConfigId)
        .column(delivery::Column::Status)
        .column_as(Expr::from(Func::count(Expr::col(delivery::Column::Id))), "n")
        .filter(delivery::Column::TenantId.eq(tenant_id))
        .group_by(delivery::Column::ConfigId)
        .group_by(delivery::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let retrying: Vec<(Uuid, i64)> = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::ConfigId)
        .column_as(Expr::from(Func::count(Expr::col(delivery::Column::Id))), "n")
        .filter(delivery::Column::TenantId.eq(tenant_id))
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(delivery::Column::Attempts.gt(0))
        .group_by(delivery::Column::ConfigId)
        .into_tuple()
        .all(db)
        .await?;
    let mut out: HashMap<Uuid, DeliveryCounts> = HashMap::new();
    for (config, status, n) in rows {
        let c = out.entry(config).or_default();
        match DeliveryStatus::parse(&status) {
            Some(DeliveryStatus::Pending) => c.pending += n,
            Some(DeliveryStatus::Delivered) => c.delivered += n,
            Some(DeliveryStatus::Dropped) => c.dropped += n,
            // An unreadable status counts as dead: it needs a look.
            Some(DeliveryStatus::Dead) | None => c.dead += n,
        }
    }
    for (config, n) in retrying {
        out.entry(config).or_default().retrying = n;
    }
    Ok(out)
}

/// The tenant's outbox: deliveries waiting, and when the oldest was created.
pub async fn outbox_depth(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<(i64, Option<DateTime<Utc>>)> {
    let row: Option<(i64, Option<DateTime<Utc>>)> = delivery::Entity::find()
        .select_only()
        .column_as(Expr::from(Func::count(Expr::col(delivery::Column::Id))), "n")
        .column_as(Expr::from(Func::min(Expr::col(delivery::Column::CreatedAt))), "oldest")
        .filter(delivery::Column::TenantId.eq(tenant_id))
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .into_tuple()
        .one(db)
        .await?;
    Ok(row.unwrap_or((0, None)))
}

/// The deliveries of one config whose event arrived on `date`, by where they are now.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeliveryDay {
    pub date: NaiveDate,
    pub delivered: i64,
    pub dropped: i64,
    /// Pending, never tried or not failed yet.
    pub waiting: i64,
    /// Pending after at least one failure.
    pub retrying: i64,
    pub dead: i64,
}

/// The config's deliveries of the last `days` days (today included), per UTC day of the event's
/// arrival (`delivery.created_at`): each delivery counts once, on its arrival day, under its
/// status now.
pub async fn delivery_days(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    config_id: Uuid,
    days: i64,
    now: DateTime<Utc>,
) -> Result<Vec<DeliveryDay>> {
    let (first, since) = period_start(days, now);
    let day = sql::utc_day(db.get_database_backend(), "created_at");
    let rows: Vec<(String, String, i64, i64)> = delivery::Entity::find()
        .select_only()
        .column_as(Expr::cust(day.clone()), "day")
        .column(delivery::Column::Status)
        .column_as(Expr::from(Func::count(Expr::col(delivery::Column::Id))), "n")
        .column_as(Expr::cust(sql::count_where("attempts > 0")), "failed")
        .filter(delivery::Column::TenantId.eq(tenant_id))
        .filter(delivery::Column::ConfigId.eq(config_id))
        .filter(delivery::Column::CreatedAt.gte(since))
        .group_by(Expr::cust(day))
        .group_by(delivery::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let rows = rows.into_iter().filter_map(|(date, status, n, failed)| {
        Some((NaiveDate::parse_from_str(&date, "%Y-%m-%d").ok()?, status, n, failed))
    });
    Ok(tally_days(first, days, rows))
}

/// The first day of a period of `days` days ending today, and its midnight (UTC).
fn period_start(days: i64, now: DateTime<Utc>) -> (NaiveDate, DateTime<Utc>) {
    let first = now.date_naive() - Duration::days(days - 1);
    (first, first.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
}

/// Pure counting: `(day, status, n, failed)` rows into one entry per day from `first`, every day
/// present. Of pending deliveries, `failed` retry; an unreadable status counts as dead (it needs
/// a look), as in [`delivery_counts`].
pub fn tally_days(
    first: NaiveDate,
    days: i64,
    rows: impl Iterator<Item = (NaiveDate, String, i64, i64)>,
) -> Vec<DeliveryDay> {
    let mut by_day: BTreeMap<NaiveDate, DeliveryDay> = (0..days)
        .map(|i| first + Duration::days(i))
        .map(|date| (date, DeliveryDay { date, ..DeliveryDay::default() }))
        .collect();
    for (date, status, n, failed) in rows {
        let Some(d) = by_day.get_mut(&date) else { continue };
        match DeliveryStatus::parse(&status) {
            Some(DeliveryStatus::Pending) => {
                d.retrying += failed;
                d.waiting += n - failed;
            }
            Some(DeliveryStatus::Delivered) => d.delivered += n,
            Some(DeliveryStatus::Dropped) => d.dropped += n,
            Some(DeliveryStatus::Dead) | None => d.dead += n,
        }
    }
    by_day.into_values().collect()
}

/// How long delivered events took from arrival to delivery, over a period: nearest-rank
/// percentiles in milliseconds (`None` without deliveries).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Lag {
    pub delivered: i64,
    pub p50: Option<i64>,
    pub p90: Option<i64>,
    pub p99: Option<i64>,
}

/// The 0-based position of the `p`th percentile among `n` sorted values, by the nearest-rank
/// method (the smallest value at least `p` % of them are at or below).
pub fn rank(p: u32, n: u64) -> u64 {
    (u64::from(p) * n).div_ceil(100).max(1) - 1
}

/// The lag of the config's deliveries whose event arrived in the last `days` days (today
/// included). The database sorts; one value per percentile is read.
pub async fn delivery_lag(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    config_id: Uuid,
    days: i64,
    now: DateTime<Utc>,
) -> Result<Lag> {
    let (_, since) = period_start(days, now);
    let delivered = || {
        delivery::Entity::find()
            .filter(delivery::Column::TenantId.eq(tenant_id))
            .filter(delivery::Column::ConfigId.eq(config_id))
            .filter(delivery::Column::Status.eq(DeliveryStatus::Delivered.as_str()))
            .filter(delivery::Column::DeliveredAt.is_not_null())
            .filter(delivery::Column::CreatedAt.gte(since))
    };
    let n: i64 = delivered()
        .select_only()
        .column_as(Expr::from(Func::count(Expr::col(delivery::Column::Id))), "n")
        .into_tuple()
        .one(db)
        .await?
        .unwrap_or(0);
    let mut lag = Lag { delivered: n, ..Lag::default() };
    if n == 0 {
        return Ok(lag);
    }
    let millis = sql::millis_between(db.get_database_backend(), "created_at", "delivered_at");
    for (p, slot) in [(50, &mut lag.p50), (90, &mut lag.p90), (99, &mut lag.p99)] {
        *slot = delivered()
            .select_only()
            .column_as(Expr::cust(millis.clone()), "lag")
            .order_by(Expr::cust(millis.clone()), Order::Asc)
            .order_by(delivery::Column::Id, Order::Asc)
            .offset(rank(p, n as u64))
            .limit(1)
            .into_tuple::<i64>()
            .one(db)
            .await?;
    }
    Ok(lag)
}

/// A lag for people: `850 ms`, `1.2 s`, `2 min 5 s`, `3 h 4 min`, `2 d 1 h`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{}.{} s", s, (ms % 1000) / 100),
        60_000..3_600_000 => format!("{} min {} s", s / 60, s % 60),
        3_600_000..86_400_000 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_days_count_each_status_and_split_pending() {
        let d1 = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let d2 = d1 + Duration::days(1);
        let rows = vec![
            (d1, "delivered".to_string(), 5, 1),
            (d1, "pending".to_string(), 4, 3),
            (d2, "dropped".to_string(), 2, 0),
            (d2, "dead".to_string(), 1, 1),
            (d2, "gone-strange".to_string(), 1, 0),
            (d1 - Duration::days(1), "delivered".to_string(), 9, 0),
        ];
        let days = tally_days(d1, 3, rows.into_iter());
        assert_eq!(days.len(), 3, "every day, quiet ones too");
        assert_eq!(days[0], DeliveryDay { date: d1, delivered: 5, waiting: 1, retrying: 3, ..DeliveryDay::default() });
        assert_eq!(days[1], DeliveryDay { date: d2, dropped: 2, dead: 2, ..DeliveryDay::default() });
        assert_eq!(days[2], DeliveryDay { date: d2 + Duration::days(1), ..DeliveryDay::default() });
    }

    #[test]
    fn nearest_rank_percentiles() {
        // (percentile, values, 0-based position)
        for (p, n, want) in [
            (50, 1, 0),
            (99, 1, 0),
            (50, 2, 0),
            (90, 2, 1),
            (50, 10, 4),
            (90, 10, 8),
            (99, 10, 9),
            (99, 100, 98),
            (99, 101, 99),
            (50, 101, 50),
        ] {
            assert_eq!(rank(p, n), want, "p{p} of {n}");
        }
    }

    #[test]
    fn durations_read_naturally() {
        for (ms, want) in [
            (-5, "0 ms"),
            (850, "850 ms"),
            (1_250, "1.2 s"),
            (59_999, "59.9 s"),
            (125_000, "2 min 5 s"),
            (3 * 3_600_000 + 4 * 60_000, "3 h 4 min"),
            (2 * 86_400_000 + 3_600_000, "2 d 1 h"),
        ] {
            assert_eq!(duration(ms), want, "{ms}");
        }
    }
}
