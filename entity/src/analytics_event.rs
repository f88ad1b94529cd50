use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "analytics_event")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Set when posted to a per-provider endpoint: only that provider's configs receive it.
    pub provider: Option<String>,
    pub event_name: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub event_properties: Json,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    pub page_url: Option<String>,
    pub referrer: Option<String>,
    pub title: Option<String>,
    pub user_agent: Option<String>,
    pub language: Option<String>,
    pub screen: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    pub revenue: Option<Json>,
    /// Enrichment: UTM parameters, parsed user agent.
    #[sea_orm(column_type = "JsonBinary")]
    pub context: Json,
    pub occurred_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    pub ip_truncated: Option<String>,
    pub country: Option<String>,
    pub dnt: bool,
    pub gpc: bool,
    pub idempotency_key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
