use sea_orm::entity::prelude::*;

/// An immutable published revision: exactly what visitors were shown.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consent_config_revision")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub config_id: Uuid,
    pub revision: i32,
    pub requires_reconsent: bool,
    #[sea_orm(column_type = "JsonBinary")]
    pub snapshot: Json,
    pub texts_hash: String,
    pub published_at: DateTimeUtc,
    pub published_by: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
