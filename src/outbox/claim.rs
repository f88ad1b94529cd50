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
};

fn due(now: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .add(delivery::Column::NextAttemptAt.lte(now))
        .add(Condition::any().add(delivery::Column::LeaseUntil.is_null()).add(delivery::Column::LeaseUntil.lt(now)))
}

/// Leases up to `n` due deliveries of `provider` to `owner` for `lease`; returns them.
pub async fn claim(
    db: &DatabaseConnection,
    provider: &str,
    owner: &str,
    n: u64,
    lease: Duration,
) -> Result<Vec<delivery::Model>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let txn = crate::db::begin_write(db).await?;
    let now = Utc::now();
    let active: Vec<Uuid> = provider_config::Entity::find()
        .select_only()
        .column(provider_config::Column::Id)
        .filter(provider_config::Column::Provider.eq(provider))
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
    let ids: Vec<Uuid> = due_ids(provider, active, now, n).into_tuple().all(&txn).await?;
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

/// Gives a claimed delivery back without an attempt (its config is no longer active).
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
