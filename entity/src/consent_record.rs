use sea_orm::entity::prelude::*;

/// Append-only proof of one consent decision. Never updated, except `visitor_id` set to null
/// on erasure (the chain is computed over `visitor_hash`, so it stays verifiable).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consent_record")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Position in the tenant's hash chain, from 1; unique per tenant.
    pub seq: i64,
    pub visitor_id: Option<String>,
    pub visitor_hash: String,
    pub config_id: Uuid,
    pub revision: i32,
    pub texts_hash: String,
    pub language: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub choices: Json,
    pub action: String,
    pub source: String,
    pub dnt: bool,
    pub gpc: bool,
    pub country: Option<String>,
    pub ip_truncated: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
    pub prev_hash: String,
    pub hash: String,
    /// Per-provider choices and the offer they were made on (`{"offer", "providers"}`); null
    /// when the visitor was not offered them.
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub provider_choices: Option<Json>,
    /// The form of the record the hash chain covers: 1 for records written before per-provider
    /// choices, 2 since (see `consent::chain`).
    pub canonical_version: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
