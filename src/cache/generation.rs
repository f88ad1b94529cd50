//! The per-tenant generation counter (table `config_generation`): bumped in the same transaction
//! as every change to what the config cache holds, read by each instance's poll.

use std::collections::HashMap;

use entity::{config_generation, provider_config};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use uuid::Uuid;

use crate::error::Result;

/// Marks the tenant's cached configuration as changed. Call it inside the transaction that makes
/// the change, so that other instances see the bump exactly when they can see the change.
pub async fn bump(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<()> {
    let row = config_generation::ActiveModel { tenant_id: Set(tenant_id), generation: Set(1) };
    config_generation::Entity::insert(row)
        .on_conflict(
            OnConflict::column(config_generation::Column::TenantId)
                .value(
                    config_generation::Column::Generation,
                    Expr::col((config_generation::Entity, config_generation::Column::Generation)).add(1),
                )
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// [`bump`] for the tenant of a provider config (for code that knows only the config).
pub async fn bump_for_provider_config(db: &impl ConnectionTrait, config_id: Uuid) -> Result<()> {
    let tenant = provider_config::Entity::find_by_id(config_id)
        .select_only()
        .column(provider_config::Column::TenantId)
        .into_tuple::<Uuid>()
        .one(db)
        .await?;
    match tenant {
        Some(t) => bump(db, t).await,
        None => Ok(()),
    }
}

/// The tenant's generation now (0: never changed).
pub async fn current(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<i64> {
    Ok(of(db, &[tenant_id]).await?.get(&tenant_id).copied().unwrap_or(0))
}

/// The generations of `tenants` that have a row.
pub async fn of(db: &impl ConnectionTrait, tenants: &[Uuid]) -> Result<HashMap<Uuid, i64>> {
    let mut out = HashMap::with_capacity(tenants.len());
    // Bounded IN lists: SQLite allows 32,766 parameters, PostgreSQL 65,535.
    for chunk in tenants.chunks(500) {
        let rows = config_generation::Entity::find()
            .filter(config_generation::Column::TenantId.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        out.extend(rows.into_iter().map(|r| (r.tenant_id, r.generation)));
    }
    Ok(out)
}
