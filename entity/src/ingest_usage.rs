use sea_orm::entity::prelude::*;

/// Consent denials counted by PostgreSQL's ingest writers: one row per provider config and
/// writer shard, so that two writers never wait on one row (migration 000019). A config's
/// `events_denied_by_consent` is its own column plus the sum of its rows here.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ingest_usage")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub config_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub shard: i32,
    pub events_denied_by_consent: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
