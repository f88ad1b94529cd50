//! What the admin pages show, read from the database: delivery counts per provider config, the
//! outbox depth, and consent decisions per day.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use entity::{consent_record, delivery};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Func},
};
use serde::Serialize;
use uuid::Uuid;

use crate::{consent::Choices, error::Result, outbox::log::DeliveryStatus};

/// Deliveries of one config by state. `retrying` are the pending ones that failed at least once.
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

/// Decisions of one day.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Day {
    pub date: NaiveDate,
    pub accept_all: i64,
    pub reject_all: i64,
    pub custom: i64,
    pub withdraw: i64,
}

impl Day {
    pub fn total(&self) -> i64 {
        self.accept_all + self.reject_all + self.custom + self.withdraw
    }
}

/// A category's grant rate over the period: decisions granting it among all decisions.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GrantRate {
    pub category: &'static str,
    pub granted: i64,
    pub decisions: i64,
    /// Whole percent, rounded down; 0 without decisions.
    pub percent: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Dashboard {
    pub days: Vec<Day>,
    pub rates: Vec<GrantRate>,
    pub total: i64,
}

/// The tenant's consent decisions of the last `days` days (today included), per UTC day.
pub async fn dashboard(db: &impl ConnectionTrait, tenant_id: Uuid, days: i64, now: DateTime<Utc>) -> Result<Dashboard> {
    let first = now.date_naive() - Duration::days(days - 1);
    let since = first.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let rows: Vec<(DateTime<Utc>, String, serde_json::Value)> = consent_record::Entity::find()
        .select_only()
        .column(consent_record::Column::CreatedAt)
        .column(consent_record::Column::Action)
        .column(consent_record::Column::Choices)
        .filter(consent_record::Column::TenantId.eq(tenant_id))
        .filter(consent_record::Column::CreatedAt.gte(since))
        .order_by_asc(consent_record::Column::CreatedAt)
        .into_tuple()
        .all(db)
        .await?;
    Ok(tally(first, days, rows.iter().map(|(at, action, choices)| (at.date_naive(), action.as_str(), choices))))
}

/// Pure counting: one entry per day from `first`, every day present (zero when quiet). An
/// unreadable choice grants nothing, as the decision engine reads it.
pub fn tally<'a>(
    first: NaiveDate,
    days: i64,
    rows: impl Iterator<Item = (NaiveDate, &'a str, &'a serde_json::Value)>,
) -> Dashboard {
    let mut by_day: BTreeMap<NaiveDate, Day> =
        (0..days).map(|i| first + Duration::days(i)).map(|date| (date, Day { date, ..Day::default() })).collect();
    let mut granted = [0i64; 3];
    let mut total = 0;
    for (date, action, choices) in rows {
        let Some(day) = by_day.get_mut(&date) else { continue };
        match action {
            "accept_all" => day.accept_all += 1,
            "reject_all" => day.reject_all += 1,
            "custom" => day.custom += 1,
            "withdraw" => day.withdraw += 1,
            _ => continue,
        }
        total += 1;
        let c = serde_json::from_value::<Choices>(choices.clone()).unwrap_or(Choices::none());
        for (i, yes) in [c.functional, c.analytics, c.marketing].into_iter().enumerate() {
            granted[i] += i64::from(yes);
        }
    }
    let rates = ["functional", "analytics", "marketing"]
        .into_iter()
        .zip(granted)
        .map(|(category, granted)| GrantRate {
            category,
            granted,
            decisions: total,
            percent: if total == 0 { 0 } else { granted * 100 / total },
        })
        .collect();
    Dashboard { days: by_day.into_values().collect(), rates, total }
}

/// The dashboard's numbers as CSV: one row per day, then one per category.
pub fn csv(d: &Dashboard) -> String {
    let mut out = String::from("date,accept_all,reject_all,custom,withdraw\n");
    for day in &d.days {
        out += &format!("{},{},{},{},{}\n", day.date, day.accept_all, day.reject_all, day.custom, day.withdraw);
    }
    out += "\ncategory,granted,decisions,percent\n";
    for r in &d.rates {
        out += &format!("{},{},{},{}\n", r.category, r.granted, r.decisions, r.percent);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn tally_counts_per_day_and_grant_rates() {
        let d1 = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let d2 = d1 + Duration::days(1);
        let all = json!({"functional": true, "analytics": true, "marketing": true});
        let none = json!({"functional": false, "analytics": false, "marketing": false});
        let some = json!({"functional": true, "analytics": true, "marketing": false});
        let broken = json!("oops");
        let rows = vec![
            (d1, "accept_all", &all),
            (d1, "reject_all", &none),
            (d2, "custom", &some),
            (d2, "withdraw", &broken),
            (d2, "unknown", &all),
            (d2 + Duration::days(5), "accept_all", &all),
        ];
        let d = tally(d1, 3, rows.into_iter());
        assert_eq!(d.days.len(), 3, "every day, quiet ones too");
        assert_eq!((d.days[0].accept_all, d.days[0].reject_all), (1, 1));
        assert_eq!((d.days[1].custom, d.days[1].withdraw, d.days[1].total()), (1, 1, 2));
        assert_eq!(d.days[2].total(), 0);
        assert_eq!(d.total, 4);
        let pct: Vec<_> = d.rates.iter().map(|r| (r.category, r.granted, r.percent)).collect();
        assert_eq!(pct, [("functional", 2, 50), ("analytics", 2, 50), ("marketing", 1, 25)]);
        let csv = csv(&d);
        assert!(csv.starts_with("date,accept_all,reject_all,custom,withdraw\n2026-03-01,1,1,0,0\n"), "{csv}");
        assert!(csv.ends_with("marketing,1,4,25\n"), "{csv}");
    }

    #[test]
    fn no_decisions_no_division() {
        let d = tally(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(), 7, std::iter::empty());
        assert!(d.rates.iter().all(|r| r.percent == 0));
    }
}
