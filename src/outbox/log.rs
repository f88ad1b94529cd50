//! The delivery log: each delivery with its attempts, the provider's last answer and the
//! forwarding decision behind it; dead letters (`status=dead`); replays.

use chrono::{DateTime, Utc};
use entity::{analytics_event, delivery, provider_config};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait, sea_query::Expr,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

pub use super::DeliveryStatus;
use crate::{
    audit,
    consent::ProviderStatus,
    error::{Error, Result},
    ingest::decisions::{self, DecisionView},
};

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub event_id: Uuid,
    pub config_id: Uuid,
    pub provider: String,
    /// `full` or `anonymous`: what the decision allowed to be sent.
    pub identity: String,
    /// `pending`, `delivered`, `dropped` (the provider answered success but discarded the event)
    /// or `dead`.
    pub status: String,
    pub attempts: i32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The provider's last HTTP status; none for a transport failure.
    pub last_status: Option<i32>,
    /// The provider's answer (an excerpt) or the transport error of the last failed attempt.
    pub last_error: Option<String>,
    /// Why a `dropped` delivery was discarded, or what was changed to fit the provider's limits.
    pub warning: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// A pending delivery claimed by a worker whose lease is live: its request is being built,
    /// is in flight or its answer is being recorded. Absent otherwise (tells a delivery being
    /// sent from a stuck one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    /// When a pending delivery is dead-lettered if still not delivered (its retry horizon).
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The forwarding decision this delivery carries out.
    pub decision: Option<DecisionView>,
}

/// Who is sending a delivery, since when.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct InFlight {
    /// When the worker claimed it.
    pub since: Option<DateTime<Utc>>,
    /// The worker holding it: `worker-<uuid>@<host>:<pid>` (the instance it runs in; the log
    /// lines of that worker name it as `owner`).
    pub owner: String,
    /// Until when its lease runs (renewed while the request is in flight).
    pub lease_until: DateTime<Utc>,
}

impl DeliveryView {
    /// `horizon`: the configured retry horizon (`delivery.retry_horizon_hours`), for `expires_at`.
    fn new(d: delivery::Model, decision: Option<DecisionView>, horizon: chrono::Duration) -> Self {
        let pending = d.status == DeliveryStatus::Pending.as_str();
        let in_flight = match (&d.lease_owner, d.lease_until) {
            (Some(owner), Some(until)) if pending && until > Utc::now() => {
                Some(InFlight { since: d.claimed_at, owner: owner.clone(), lease_until: until })
            }
            _ => None,
        };
        let expires_at = pending.then(|| {
            let provider = crate::providers::get(&d.provider);
            let horizon = super::horizon::for_provider(horizon, provider.and_then(|p| p.max_event_age()));
            super::horizon::deadline(d.expires_at, d.created_at, horizon)
        });
        DeliveryView {
            in_flight,
            expires_at,
            next_attempt_at: (d.status == DeliveryStatus::Pending.as_str()).then_some(d.next_attempt_at),
            id: d.id,
            event_id: d.event_id,
            config_id: d.config_id,
            provider: d.provider,
            identity: d.identity,
            status: d.status,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            warning: d.warning,
            delivered_at: d.delivered_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
            decision,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub status: Option<DeliveryStatus>,
    pub config: Option<Uuid>,
    pub event: Option<Uuid>,
    /// Page after this delivery id (ids are UUIDv7: they order by creation).
    pub before: Option<Uuid>,
    pub limit: u64,
}

/// Newest first. `horizon`: the configured retry horizon, for each pending delivery's `expires_at`.
pub async fn list(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    f: &Filter,
    horizon: chrono::Duration,
) -> Result<Vec<DeliveryView>> {
    let mut q = delivery::Entity::find().filter(delivery::Column::TenantId.eq(tenant_id));
    if let Some(s) = f.status {
        q = q.filter(delivery::Column::Status.eq(s.as_str()));
    }
    if let Some(c) = f.config {
        q = q.filter(delivery::Column::ConfigId.eq(c));
    }
    if let Some(e) = f.event {
        q = q.filter(delivery::Column::EventId.eq(e));
    }
    if let Some(b) = f.before {
        q = q.filter(delivery::Column::Id.lt(b));
    }
    let rows = q.order_by_desc(delivery::Column::Id).limit(f.limit).all(db).await?;
    with_decisions(db, rows, horizon).await
}

/// The deliveries of one event (`horizon` as for [`list`]).
pub async fn for_event(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    event_id: Uuid,
    horizon: chrono::Duration,
) -> Result<Vec<DeliveryView>> {
    let rows = delivery::Entity::find()
        .filter(delivery::Column::TenantId.eq(tenant_id))
        .filter(delivery::Column::EventId.eq(event_id))
        .order_by_asc(delivery::Column::Id)
        .all(db)
        .await?;
    with_decisions(db, rows, horizon).await
}

async fn with_decisions(
    db: &impl ConnectionTrait,
    rows: Vec<delivery::Model>,
    horizon: chrono::Duration,
) -> Result<Vec<DeliveryView>> {
    let events: Vec<Uuid> = rows.iter().map(|d| d.event_id).collect();
    let mut found = decisions::for_events(db, &events).await?;
    Ok(rows
        .into_iter()
        .map(|d| {
            let decision = found.remove(&(d.event_id, d.config_id));
            DeliveryView::new(d, decision, horizon)
        })
        .collect())
}

/// Sends a dead or dropped delivery again, from a fresh attempt count, with a new retry horizon
/// (`horizon` from now). Refused when the event is older than the provider takes.
pub async fn replay(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    id: Uuid,
    actor: &str,
    horizon: chrono::Duration,
) -> Result<DeliveryView> {
    let txn = crate::db::begin_write(db).await?;
    // Locked until the replay commits (PostgreSQL; SQLite's write transaction holds the whole
    // database): a replay sent twice at once resets the delivery once, and the second sees it
    // pending — never resetting one a worker has claimed since.
    let d = delivery::Entity::find_by_id(id)
        .filter(delivery::Column::TenantId.eq(tenant_id))
        .lock_exclusive()
        .one(&txn)
        .await?
        .ok_or(Error::NotFound)?;
    if d.status != DeliveryStatus::Dead.as_str() && d.status != DeliveryStatus::Dropped.as_str() {
        return Err(Error::Conflict(format!(
            "only dead or dropped deliveries can be replayed; this one is {}",
            d.status
        )));
    }
    if ended_by_consent(d.last_error.as_deref()) {
        return Err(Error::Conflict(
            "the delivery ended because the visitor's consent changed before it was sent; it is never sent again"
                .into(),
        ));
    }
    let config = provider_config::Entity::find_by_id(d.config_id).one(&txn).await?.ok_or(Error::NotFound)?;
    if config.status == ProviderStatus::Decommissioned.as_str() {
        return Err(Error::Conflict("the delivery's config is decommissioned".into()));
    }
    let max_age = crate::providers::get(&d.provider).and_then(|p| p.max_event_age());
    if max_age.is_some() {
        let occurred_at: Option<DateTime<Utc>> = analytics_event::Entity::find_by_id(d.event_id)
            .select_only()
            .column(analytics_event::Column::OccurredAt)
            .into_tuple()
            .one(&txn)
            .await?;
        if let Some(why) = occurred_at.and_then(|at| super::horizon::too_old(&d.provider, at, max_age, Utc::now())) {
            return Err(Error::Conflict(format!("cannot replay: {why}")));
        }
    }
    let before = DeliveryView::new(d.clone(), None, horizon);
    reset(&txn, delivery::Column::Id.eq(id), horizon).await?;
    let after = delivery::Entity::find_by_id(id).one(&txn).await?.ok_or(Error::NotFound)?;
    audit::record(
        &txn,
        audit::Change {
            tenant_id,
            actor,
            action: "delivery.replay",
            entity_type: "delivery",
            entity_id: Some(id.to_string()),
            before: serde_json::to_value(&before).ok(),
            after: None,
        },
    )
    .await?;
    txn.commit().await?;
    let mut views = with_decisions(db, vec![after], horizon).await?;
    Ok(views.remove(0))
}

/// Replays every dead delivery of a config (but those whose event is older than the provider
/// takes); returns how many.
pub async fn replay_dead_letters(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    config_id: Uuid,
    actor: &str,
    horizon: chrono::Duration,
) -> Result<u64> {
    let txn = crate::db::begin_write(db).await?;
    let mut which = delivery::Column::TenantId
        .eq(tenant_id)
        .and(delivery::Column::ConfigId.eq(config_id))
        .and(delivery::Column::Status.eq(DeliveryStatus::Dead.as_str()))
        // Not those the visitor's consent ended (see `replay`).
        .and(
            delivery::Column::LastError
                .is_null()
                .or(delivery::Column::LastError.not_like(format!("{}%", super::CONSENT_CHANGED))),
        );
    let provider: Option<String> = provider_config::Entity::find_by_id(config_id)
        .select_only()
        .column(provider_config::Column::Provider)
        .into_tuple()
        .one(&txn)
        .await?;
    if let Some(age) = provider.as_deref().and_then(crate::providers::get).and_then(|p| p.max_event_age()) {
        let recent = analytics_event::Entity::find()
            .select_only()
            .column(analytics_event::Column::Id)
            .filter(analytics_event::Column::OccurredAt.gt(Utc::now() - age))
            .into_query();
        which = which.and(delivery::Column::EventId.in_subquery(recent));
    }
    let n = reset(&txn, which, horizon).await?;
    audit::record(
        &txn,
        audit::Change {
            tenant_id,
            actor,
            action: "delivery.replay_dead_letters",
            entity_type: "provider_config",
            entity_id: Some(config_id.to_string()),
            before: None,
            after: Some(serde_json::json!({"replayed": n})),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(n)
}

/// Whether a delivery's `last_error` says the visitor's consent ended it.
fn ended_by_consent(last_error: Option<&str>) -> bool {
    last_error.is_some_and(|e| e.starts_with(super::CONSENT_CHANGED))
}

async fn reset(
    db: &impl ConnectionTrait,
    which: sea_orm::sea_query::SimpleExpr,
    horizon: chrono::Duration,
) -> Result<u64> {
    let now = Utc::now();
    let res = delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value(DeliveryStatus::Pending.as_str()))
        .col_expr(delivery::Column::Attempts, Expr::value(0))
        .col_expr(delivery::Column::NextAttemptAt, Expr::value(now))
        .col_expr(delivery::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::LastStatus, Expr::value(Option::<i32>::None))
        .col_expr(delivery::Column::LastError, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::Warning, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::DeliveredAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::ClaimedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::ExpiresAt, Expr::value(now + horizon))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
        .filter(which)
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}
