//! The audit log: who changed which configuration or key, when, with the state before and after.
//! Callers pass views that hold secret *references* only, so no secret value can end up here.

use chrono::Utc;
use entity::audit_log;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::Result;

pub struct Change<'a> {
    pub tenant_id: Uuid,
    pub actor: &'a str,
    pub action: &'a str,
    pub entity_type: &'a str,
    pub entity_id: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

pub async fn record(db: &impl ConnectionTrait, change: Change<'_>) -> Result<()> {
    audit_log::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(change.tenant_id),
        actor: Set(change.actor.to_string()),
        action: Set(change.action.to_string()),
        entity_type: Set(change.entity_type.to_string()),
        entity_id: Set(change.entity_id),
        before: Set(change.before),
        after: Set(change.after),
        created_at: Set(Utc::now()),
    }
    .insert(db)
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub actor: String,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub created_at: chrono::DateTime<Utc>,
}

/// Newest first; `before` is an entry id (UUIDv7, so ids order by time) to page from.
pub async fn list(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    before: Option<Uuid>,
    limit: u64,
) -> Result<Vec<AuditEntry>> {
    let mut q = audit_log::Entity::find().filter(audit_log::Column::TenantId.eq(tenant_id));
    if let Some(b) = before {
        q = q.filter(audit_log::Column::Id.lt(b));
    }
    let rows = q.order_by_desc(audit_log::Column::Id).limit(limit).all(db).await?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

/// The tenant's newest entry of `action` on `entity_id` (e.g. a visitor's erasure, kept under the
/// visitor's hash).
pub async fn latest(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    action: &str,
    entity_id: &str,
) -> Result<Option<AuditEntry>> {
    let row = audit_log::Entity::find()
        .filter(audit_log::Column::TenantId.eq(tenant_id))
        .filter(audit_log::Column::Action.eq(action))
        .filter(audit_log::Column::EntityId.eq(entity_id))
        .order_by_desc(audit_log::Column::Id)
        .one(db)
        .await?;
    Ok(row.map(AuditEntry::from))
}

impl From<audit_log::Model> for AuditEntry {
    fn from(m: audit_log::Model) -> Self {
        AuditEntry {
            id: m.id,
            actor: m.actor,
            action: m.action,
            entity_type: m.entity_type,
            entity_id: m.entity_id,
            before: m.before,
            after: m.after,
            created_at: m.created_at,
        }
    }
}
