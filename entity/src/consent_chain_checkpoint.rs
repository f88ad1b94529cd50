use sea_orm::entity::prelude::*;

/// Where a tenant's consent hash chain starts after its oldest records were purged by retention:
/// the `seq` and `hash` of the last purged record. The first remaining record links to `hash`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consent_chain_checkpoint")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: Uuid,
    pub seq: i64,
    pub hash: String,
    /// Records purged so far (all of them have `seq <= self.seq`).
    pub records_purged: i64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
