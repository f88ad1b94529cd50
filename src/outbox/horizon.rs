//! Retrying by time: a delivery is tried until its *horizon*, counted from the event's arrival
//! (`delivery.retry_horizon_hours`, default 72 h), however many attempts that takes — not for a
//! number of attempts, which a provider outage of an hour used up. A provider with its own age
//! limit ([`crate::providers::Provider::max_event_age`], GA4: 72 h) gets a horizon no longer
//! than that limit, and is never sent an event older than it.
//!
//! The horizon of a delivery is `delivery.expires_at` when set (a replay sets a new one), else
//! its `created_at` (written in the ingest transaction, i.e. the event's arrival) plus the
//! horizon. Deliveries of `paused` or `error` configs, or held back by an open circuit, wait
//! against the same horizon: [`expire`] dead-letters every pending delivery past it, claimed or
//! not, saying so in `last_error` (`retry horizon reached …; last: …`); such a delivery is
//! replayable like any dead letter.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use entity::delivery;
use sea_orm::{ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect, sea_query::Expr};
use uuid::Uuid;

use super::DeliveryStatus;
use crate::error::Result;

/// The beginning of `last_error` of a delivery dead-lettered at its horizon.
pub const REACHED: &str = "retry horizon reached";

/// The horizon of a provider's deliveries: the configured one, or the provider's own age limit
/// when shorter.
pub fn for_provider(configured: Duration, max_event_age: Option<Duration>) -> Duration {
    max_event_age.map_or(configured, |age| age.min(configured))
}

/// When a delivery is dead-lettered if still not delivered.
pub fn deadline(expires_at: Option<DateTime<Utc>>, created_at: DateTime<Utc>, horizon: Duration) -> DateTime<Utc> {
    expires_at.unwrap_or(created_at + horizon)
}

/// Why an event that occurred at `occurred_at` may no longer go to a provider taking events at
/// most `max_age` old, at `now`; `None` while it may.
pub fn too_old(
    provider: &str,
    occurred_at: DateTime<Utc>,
    max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> Option<String> {
    let age = max_age?;
    (occurred_at + age <= now)
        .then(|| format!("the event is older than {provider} accepts ({} h after it occurred)", age.num_hours()))
}

/// `last_error` of a delivery dead-lettered at its horizon (`horizon` describes it).
pub fn reached(horizon: Duration, last: Option<&str>) -> String {
    format!(
        "{REACHED} ({} h after the event arrived); last: {}",
        horizon.num_hours(),
        last.unwrap_or("never attempted")
    )
}

/// Dead-letters every pending delivery whose horizon passed before `now` and that no live lease
/// holds (erasing what it held of the visitor, like any delivery that ends), and counts them as
/// failures of their configs. Returns how many.
pub async fn expire(db: &DatabaseConnection, configured: Duration, now: DateTime<Utc>) -> Result<u64> {
    let providers = crate::providers::all();
    let mut past = Condition::any().add(delivery::Column::ExpiresAt.lt(now));
    for p in providers {
        let horizon = for_provider(configured, p.max_event_age());
        past = past.add(
            Condition::all()
                .add(delivery::Column::Provider.eq(p.name()))
                .add(delivery::Column::ExpiresAt.is_null())
                .add(delivery::Column::CreatedAt.lt(now - horizon)),
        );
    }
    let unheld =
        || Condition::any().add(delivery::Column::LeaseUntil.is_null()).add(delivery::Column::LeaseUntil.lt(now));
    let found: Vec<(Uuid, Uuid, String)> = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Id)
        .column(delivery::Column::ConfigId)
        .column(delivery::Column::Provider)
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(past)
        .filter(unheld())
        .limit(1000)
        .into_tuple()
        .all(db)
        .await?;
    if found.is_empty() {
        return Ok(0);
    }
    let mut by_config: HashMap<(Uuid, String), Vec<Uuid>> = HashMap::new();
    for (id, config, provider) in found {
        by_config.entry((config, provider)).or_default().push(id);
    }
    let txn = crate::db::begin_write(db).await?;
    let (mut total, mut ended) = (0, Vec::new());
    for ((config, provider), ids) in by_config {
        let age = crate::providers::get(&provider).and_then(|p| p.max_event_age());
        let horizon = for_provider(configured, age);
        let prefix = reached(horizon, None);
        let prefix = prefix.trim_end_matches("never attempted");
        // `'…; last: ' || COALESCE(last_error, 'never attempted')`: standard SQL, both backends.
        let reason = Expr::cust(format!("'{}' || COALESCE(last_error, 'never attempted')", prefix.replace('\'', "''")));
        let res = super::end_as_dead(reason, Utc::now())
            .filter(delivery::Column::Id.is_in(ids))
            .filter(super::pending_by_id())
            .filter(unheld())
            .exec(&txn)
            .await?;
        if res.rows_affected > 0 {
            crate::providers::config::usage::failed_many(&txn, config, res.rows_affected).await?;
            tracing::warn!(config = %config, provider, n = res.rows_affected, "deliveries dead-lettered at the retry horizon");
            ended.push((provider, res.rows_affected));
        }
        total += res.rows_affected;
    }
    txn.commit().await?;
    // Counted once committed, like the outcomes of the deliveries that were sent.
    for (provider, n) in ended {
        metrics::counter!("consentgate_deliveries_total", "provider" => provider, "outcome" => "dead").increment(n);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_providers_own_age_limit_shortens_the_horizon() {
        let h72 = Duration::hours(72);
        assert_eq!(for_provider(h72, None), h72);
        assert_eq!(for_provider(h72, Some(Duration::hours(24))), Duration::hours(24));
        assert_eq!(for_provider(Duration::hours(12), Some(h72)), Duration::hours(12));
    }

    #[test]
    fn the_deadline_counts_from_arrival_unless_a_replay_set_one() {
        let arrived: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let h = Duration::hours(72);
        assert_eq!(deadline(None, arrived, h), arrived + h);
        let replayed = arrived + Duration::days(10);
        assert_eq!(deadline(Some(replayed), arrived, h), replayed);
    }

    #[test]
    fn an_event_past_the_providers_age_limit_is_too_old() {
        let occurred: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let age = Some(Duration::hours(72));
        assert_eq!(too_old("ga4", occurred, None, occurred + Duration::days(400)), None, "no limit of its own");
        assert_eq!(too_old("ga4", occurred, age, occurred + Duration::hours(71)), None);
        let why = too_old("ga4", occurred, age, occurred + Duration::hours(72)).unwrap();
        assert_eq!(why, "the event is older than ga4 accepts (72 h after it occurred)");
    }

    #[test]
    fn a_dead_letter_at_the_horizon_says_so() {
        let r = reached(Duration::hours(72), Some("umami answered 503"));
        assert_eq!(r, "retry horizon reached (72 h after the event arrived); last: umami answered 503");
        assert!(reached(Duration::hours(1), None).ends_with("last: never attempted"));
    }
}
