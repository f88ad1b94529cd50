//! Claiming due deliveries under a lease.
//!
//! One code path for both backends, inside one transaction:
//! 1. select up to `n` due deliveries of the provider's `active` configs — on PostgreSQL with
//!    `FOR UPDATE SKIP LOCKED`, so concurrent workers of other instances skip rows being claimed
//!    instead of waiting for or double-claiming them; SQLite has no row locks (sea-query drops the
//!    clause) and instead runs the whole transaction `BEGIN IMMEDIATE`, i.e. under its single
//!    write lock — hence one worker per process on SQLite;
//! 2. set `lease_owner`/`lease_until` on them, repeating the due conditions in the `UPDATE`;
//! 3. read back exactly the rows this round leased.
//!
//! A lease that passes without the outcome being recorded (the worker crashed) makes the row due
//! again for any worker.

use chrono::{DateTime, Duration, Utc};
use entity::{delivery, provider_config};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, LockBehavior, LockType},
};
use uuid::Uuid;

use super::DeliveryStatus;
use crate::{
    consent::{ProviderStatus, RequiredCategory},
    error::Result,
    providers::AnyProvider,
};

fn due(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .add(delivery::Column::NextAttemptAt.lte(now))
        .add(Condition::any().add(delivery::Column::LeaseUntil.is_null()).add(delivery::Column::LeaseUntil.lt(now)))
}

/// Leases deliveries of `provider` due at `now` to `owner` until `now + lease`, enough for
/// `requests` requests: up to `requests` × the largest batch limit among its active configs;
/// returns them, oldest due first.
pub async fn claim(
    db: &DatabaseConnection,
    provider: &dyn AnyProvider,
    owner: &str,
    requests: u64,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<delivery::Model>> {
    if requests == 0 {
        return Ok(Vec::new());
    }
    let txn = crate::db::begin_write(db).await?;
    let active: Vec<(Uuid, serde_json::Value)> = provider_config::Entity::find()
        .select_only()
        .column(provider_config::Column::Id)
        .column(provider_config::Column::Settings)
        .filter(provider_config::Column::Provider.eq(provider.name()))
        .filter(provider_config::Column::Status.eq(ProviderStatus::Active.as_str()))
        // An invalid config (unreadable category) sends nothing: its deliveries are not claimed.
        .filter(provider_config::Column::RequiredCategory.is_in(RequiredCategory::ALL.iter().map(|c| c.as_str())))
        .into_tuple()
        .all(&txn)
        .await?;
    if active.is_empty() {
        txn.commit().await?;
        return Ok(Vec::new());
    }
    let limit = active.iter().map(|(_, settings)| provider.batch_limit(settings)).max().unwrap_or(1) as u64;
    let active: Vec<Uuid> = active.into_iter().map(|(id, _)| id).collect();
    let n = requests.saturating_mul(limit.max(1));
    let ids: Vec<Uuid> = due_ids(provider.name(), active, now, n).into_tuple().all(&txn).await?;
    if ids.is_empty() {
        txn.commit().await?;
        return Ok(Vec::new());
    }
    let until = now + lease;
    delivery::Entity::update_many()
        .col_expr(delivery::Column::LeaseOwner, Expr::value(owner))
        .col_expr(delivery::Column::LeaseUntil, Expr::value(until))
        .filter(delivery::Column::Id.is_in(ids.clone()))
        .filter(due(now))
        .exec(&txn)
        .await?;
    let claimed = delivery::Entity::find()
        .filter(delivery::Column::Id.is_in(ids))
        .filter(delivery::Column::LeaseOwner.eq(owner))
        .filter(delivery::Column::LeaseUntil.eq(until))
        .order_by_asc(delivery::Column::NextAttemptAt)
        .all(&txn)
        .await?;
    txn.commit().await?;
    Ok(claimed)
}

/// The ids of due deliveries of `provider` to the `active` configs, oldest due first, locked on
/// PostgreSQL (`FOR UPDATE SKIP LOCKED`).
fn due_ids(provider: &str, active: Vec<Uuid>, now: DateTime<Utc>, n: u64) -> sea_orm::Select<delivery::Entity> {
    delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Id)
        .filter(delivery::Column::Provider.eq(provider))
        .filter(delivery::Column::ConfigId.is_in(active))
        .filter(due(now))
        .order_by_asc(delivery::Column::NextAttemptAt)
        .limit(n)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
}

/// Extends this worker's lease on `ids` to `now + lease`, for a request sent again (a part of a
/// refused batch), so that the lease covers it. Returns the ids whose lease was still this
/// worker's and is now extended; the others may be another worker's by now and must not be sent.
pub async fn renew(
    db: &DatabaseConnection,
    ids: &[Uuid],
    owner: &str,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>> {
    let until = now + lease;
    let mine = || {
        Condition::all()
            .add(delivery::Column::Id.is_in(ids.iter().copied()))
            .add(delivery::Column::LeaseOwner.eq(owner))
            .add(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
    };
    delivery::Entity::update_many()
        .col_expr(delivery::Column::LeaseUntil, Expr::value(until))
        .filter(mine())
        .filter(delivery::Column::LeaseUntil.gte(now))
        .filter(delivery::Column::LeaseUntil.lt(until))
        .exec(db)
        .await?;
    Ok(delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Id)
        .filter(mine())
        .filter(delivery::Column::LeaseUntil.gte(until))
        .into_tuple()
        .all(db)
        .await?)
}

/// Gives a claimed delivery back without an attempt (its config is no longer active, or the
/// round claimed more requests' worth than it had free slots for).
pub async fn release(db: &DatabaseConnection, id: Uuid, owner: &str) -> Result<()> {
    delivery::Entity::update_many()
        .col_expr(delivery::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(delivery::Column::Id.eq(id))
        .filter(delivery::Column::LeaseOwner.eq(owner))
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, QueryTrait};

    use super::*;

    #[test]
    fn postgres_skips_rows_other_workers_are_claiming_and_sqlite_relies_on_its_write_lock() {
        let q = due_ids("umami", vec![Uuid::nil()], Utc::now(), 5);
        let pg = q.clone().build(DbBackend::Postgres).to_string();
        assert!(pg.ends_with("FOR UPDATE SKIP LOCKED"), "{pg}");
        assert!(pg.contains(r#""lease_until" IS NULL OR "delivery"."lease_until" <"#), "{pg}");
        let lite = q.build(DbBackend::Sqlite).to_string();
        assert!(!lite.contains("FOR UPDATE"), "SQLite has no row locks: {lite}");
    }
}
