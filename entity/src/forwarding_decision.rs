use sea_orm::entity::prelude::*;

/// Why an event was (or was not) forwarded to one provider config. Written once, with the event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "forwarding_decision")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_id: Uuid,
    pub config_id: Uuid,
    pub provider: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// `full` or `anonymous` when allowed.
    pub identity: Option<String>,
    pub reason: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
