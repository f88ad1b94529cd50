use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ingest_key")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `public` (browsers, checked against `allowed_origins`) or `secret` (servers).
    pub kind: String,
    pub name: String,
    /// The first characters of the key, for recognising it in lists.
    pub prefix: String,
    #[sea_orm(unique)]
    pub key_hash: String,
    /// Public keys are published in every page that embeds them, so they are kept readable.
    pub public_key: Option<String>,
    #[sea_orm(column_type = "JsonBinary")]
    pub allowed_origins: Json,
    pub rate_limit_per_minute: Option<i32>,
    pub created_at: DateTimeUtc,
    pub last_used_at: Option<DateTimeUtc>,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
