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
//! again for any worker. The worker renews the lease while a request is in flight, so a claim
//! never passes under a live request.
//!
//! A config whose circuit is open ([`super::circuit`]) has none of its deliveries claimed, but
//! one (the one due soonest — earliest `next_attempt_at` — due or not) as the probe every
//! `circuit_probe_secs`.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use entity::{delivery, provider_config};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, LockBehavior, LockType},
};
use uuid::Uuid;

use super::{
    DeliveryStatus,
    circuit::{self, Admits, CircuitState},
};
use crate::{
    consent::{ProviderStatus, RequiredCategory},
    error::Result,
    providers::AnyProvider,
};

fn due(now: DateTime<Utc>) -> Condition {
    claimable(now).add(delivery::Column::NextAttemptAt.lte(now))
}

/// Pending and not held by a live lease.
fn claimable(now: DateTime<Utc>) -> Condition {
    Condition::all().add(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str())).add(unleased(now))
}

/// Not held by a live lease.
fn unleased(now: DateTime<Utc>) -> Condition {
    Condition::any().add(delivery::Column::LeaseUntil.is_null()).add(delivery::Column::LeaseUntil.lt(now))
}

/// The probe pace [`claim`] assumes (`delivery.circuit_probe_secs`' default).
const DEFAULT_PROBE_EVERY: Duration = Duration::seconds(30);

/// [`claim_probing`] with the default probe pace.
pub async fn claim(
    db: &DatabaseConnection,
    provider: &dyn AnyProvider,
    owner: &str,
    requests: u64,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Vec<delivery::Model>> {
    Ok(claim_probing(db, provider, owner, requests, &|_| requests, lease, now, DEFAULT_PROBE_EVERY).await?.deliveries)
}

/// Leases deliveries of `provider` due at `now` to `owner` until `now + lease`, enough for
/// `requests` requests at most, and for no more than `free(config)` requests of each config (its
/// free in-flight slots, [`super::inflight`]): a probe for each config whose circuit is open and
/// due a probe (every `probe_every`), then up to the remaining requests × the largest batch limit
/// among the active configs with a closed circuit and a free slot; returns them, oldest due
/// first. A config without a free slot has nothing claimed.
#[allow(clippy::too_many_arguments)]
pub async fn claim_probing(
    db: &DatabaseConnection,
    provider: &dyn AnyProvider,
    owner: &str,
    requests: u64,
    free: &(dyn Fn(Uuid) -> u64 + Sync),
    lease: Duration,
    now: DateTime<Utc>,
    probe_every: Duration,
) -> Result<Claimed> {
    if requests == 0 {
        return Ok(Claimed::default());
    }
    // Nothing to claim for a provider without an active config that has a free slot: known from
    // a read, without taking SQLite's write lock (a claim round goes through every provider, and
    // each write transaction may wait in SQLite's busy handler for the outbox's and ingest's
    // commits). The configs are read again inside the transaction, which decides.
    let candidates: Vec<Uuid> =
        configs(provider).select_only().column(provider_config::Column::Id).into_tuple().all(db).await?;
    if candidates.into_iter().all(|config| free(config) == 0) {
        return Ok(Claimed::default());
    }
    let begun = std::time::Instant::now();
    let txn = crate::db::begin_write(db).await?;
    tracing::trace!(provider = provider.name(), waited = ?begun.elapsed(), "claim: write transaction begun");
    type Row = (Uuid, serde_json::Value, String, Option<DateTime<Utc>>);
    let rows: Vec<Row> = configs(provider)
        .select_only()
        .column(provider_config::Column::Id)
        .column(provider_config::Column::Settings)
        .column(provider_config::Column::CircuitState)
        .column(provider_config::Column::CircuitSince)
        .into_tuple()
        .all(&txn)
        .await?;
    let mut active = Vec::new();
    let mut ids: Vec<Uuid> = Vec::new();
    let mut budget = 0u64;
    let mut batch_limits = HashMap::new();
    for (config, settings, state, since) in rows {
        let slots = free(config);
        if slots == 0 {
            continue;
        }
        batch_limits.insert(config, provider.batch_limit(&provider.read_settings(&settings)));
        match circuit::admits(CircuitState::stored(&state), since, now, probe_every) {
            Admits::All => {
                budget = budget.saturating_add(slots);
                active.push(config);
            }
            Admits::Nothing => {}
            Admits::Probe if (ids.len() as u64) < requests => {
                let probe: Option<Uuid> = delivery::Entity::find()
                    .select_only()
                    .column(delivery::Column::Id)
                    .filter(delivery::Column::ConfigId.eq(config))
                    .filter(claimable(now))
                    .order_by_asc(delivery::Column::NextAttemptAt)
                    .limit(1)
                    .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
                    .into_tuple()
                    .one(&txn)
                    .await?;
                if let Some(probe) = probe
                    && circuit::take_probe(&txn, config, &state, since, now).await?
                {
                    ids.push(probe);
                }
            }
            Admits::Probe => {}
        }
    }
    let requests = (requests - ids.len() as u64).min(budget);
    if !active.is_empty() && requests > 0 {
        let limit =
            active.iter().map(|config| batch_limits.get(config).copied().unwrap_or(1)).max().unwrap_or(1) as u64;
        let n = requests.saturating_mul(limit.max(1));
        ids.extend(due_ids(provider.name(), active, now, n).into_tuple::<Uuid>().all(&txn).await?);
    }
    if ids.is_empty() {
        txn.commit().await?;
        return Ok(Claimed::default());
    }
    let until = now + lease;
    lease_to(owner, ids.clone(), until, now).exec(&txn).await?;
    let claimed = delivery::Entity::find()
        .filter(delivery::Column::Id.is_in(ids))
        .filter(delivery::Column::LeaseOwner.eq(owner))
        .filter(delivery::Column::LeaseUntil.eq(until))
        .order_by_asc(delivery::Column::NextAttemptAt)
        .all(&txn)
        .await?;
    txn.commit().await?;
    Ok(Claimed { deliveries: claimed, batch_limits })
}

/// Leases the deliveries `ids` to `owner` until `until`, those still pending and not leased at
/// `now` (the due conditions repeated: a delivery read as due may have ended meanwhile on
/// another instance). Found by id ([`super::pending_by_id`]).
fn lease_to(
    owner: &str,
    ids: Vec<Uuid>,
    until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> sea_orm::UpdateMany<delivery::Entity> {
    delivery::Entity::update_many()
        .col_expr(delivery::Column::LeaseOwner, Expr::value(owner))
        .col_expr(delivery::Column::LeaseUntil, Expr::value(until))
        .col_expr(delivery::Column::ClaimedAt, Expr::value(now))
        .filter(delivery::Column::Id.is_in(ids))
        .filter(super::pending_by_id())
        .filter(unleased(now))
}

/// The active configs of `provider` that can send (an invalid config — an unreadable category —
/// sends nothing: its deliveries are not claimed).
fn configs(provider: &dyn AnyProvider) -> sea_orm::Select<provider_config::Entity> {
    provider_config::Entity::find()
        .filter(provider_config::Column::Provider.eq(provider.name()))
        .filter(provider_config::Column::Status.eq(ProviderStatus::Active.as_str()))
        .filter(provider_config::Column::RequiredCategory.is_in(RequiredCategory::ALL.iter().map(|c| c.as_str())))
}

/// What a claim leased: the deliveries, oldest due first, and the batch limit of each config
/// they belong to (how many of them one request can carry).
#[derive(Debug, Default)]
pub struct Claimed {
    pub deliveries: Vec<delivery::Model>,
    pub batch_limits: HashMap<Uuid, usize>,
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
    let mine = || super::held_by(ids.iter().copied(), owner);
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

/// Gives claimed deliveries back without an attempt (their config is no longer active, or the
/// round claimed more requests' worth than it had free slots for), in one statement.
pub async fn release(db: &DatabaseConnection, ids: &[Uuid], owner: &str) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    delivery::Entity::update_many()
        .col_expr(delivery::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::ClaimedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(delivery::Column::Id.is_in(ids.iter().copied()))
        .filter(delivery::Column::LeaseOwner.eq(owner))
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// The due deliveries are read in `ix_delivery_provider_due_lease`, which holds the config and
    /// the lease too: the in-flight ones, oldest due and so first in the range, are skipped without
    /// a table lookup each (SQLite defers the lookup to the rows it returns).
    #[tokio::test]
    async fn due_deliveries_are_found_in_the_index_that_holds_their_lease() {
        let q = due_ids("plausible", vec![Uuid::nil(), Uuid::max()], Utc::now(), 5).build(DbBackend::Sqlite);
        let plan = crate::outbox::stats::tests::sqlite_plan(q.to_string()).await;
        assert!(
            plan.contains("USING INDEX ix_delivery_provider_due_lease (provider=? AND status=? AND next_attempt_at<?)"),
            "{plan}"
        );
        assert!(!plan.contains("TEMP B-TREE"), "oldest due first, in index order: {plan}");
    }

    /// The plan of a statement that names its deliveries by id.
    pub(crate) async fn found_by_id(sql: String) {
        let plan = crate::outbox::stats::tests::sqlite_plan(sql).await;
        assert_eq!(plan, "SEARCH delivery USING INDEX sqlite_autoindex_delivery_1 (id=?)", "found by primary key");
    }

    /// The pending condition of statements by id is the same SQL on both backends (a custom
    /// placeholder that one backend's builder leaves unsubstituted matches nothing there).
    #[test]
    fn the_pending_condition_by_id_is_standard_sql_on_both_backends() {
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let sql = delivery::Entity::find().filter(super::super::pending_by_id()).build(backend).to_string();
            assert!(sql.ends_with(r#"WHERE ("delivery"."status" || '') = 'pending'"#), "{backend:?}: {sql}");
        }
    }

    /// A claim's lease and a renewal find their deliveries by id — not by scanning every waiting
    /// delivery in `ix_delivery_status_created`, which SQLite's planner preferred for a plain
    /// `status = 'pending'` (docs/scaling.md#the-outbox: 4–5 ms per claim with ~30,000 waiting).
    #[tokio::test]
    async fn leases_find_their_deliveries_by_id() {
        let ids: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        let now = Utc::now();
        found_by_id(lease_to("w", ids.clone(), now, now).build(DbBackend::Sqlite).to_string()).await;
        let renewal = delivery::Entity::update_many()
            .col_expr(delivery::Column::LeaseUntil, Expr::value(now))
            .filter(super::super::held_by(ids, "w"));
        found_by_id(renewal.build(DbBackend::Sqlite).to_string()).await;
    }
}
