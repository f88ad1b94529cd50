use sea_orm::entity::prelude::*;

/// How often a tenant's cached configuration (ingest keys, consent configs, provider configs)
/// has changed: bumped in the same transaction as each change, polled by every instance to drop
/// its stale cache entries (docs/caching.md). No row: never changed since the table exists (0).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "config_generation")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    pub generation: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
