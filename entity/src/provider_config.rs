use sea_orm::entity::prelude::*;

/// One analytics destination of a tenant (Plausible, Umami, PostHog or GA4). The
/// provider-specific fields live in `settings`, typed by the application crate.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "provider_config")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// `plausible`, `umami`, `posthog` or `ga4`.
    pub provider: String,
    pub display_name: String,
    /// `draft`, `active`, `paused`, `error` or `decommissioned`.
    pub status: String,
    pub status_reason: Option<String>,
    /// `none`, `functional`, `analytics` or `marketing`.
    pub required_category: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub settings: Json,
    /// Secret *references* only (`env:`, `file:`, `keyvault://`), never values.
    #[sea_orm(column_type = "JsonBinary")]
    pub credentials: Json,
    pub events_sent: i64,
    pub events_failed: i64,
    pub events_denied_by_consent: i64,
    pub events_dropped: i64,
    pub last_sent_at: Option<DateTimeUtc>,
    pub last_error_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    /// 401/403 answers in a row; reset by any other answer. At the configured threshold the
    /// config goes to `error`.
    pub consecutive_auth_failures: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The provider's privacy policy (https), linked from the banner's per-provider choices.
    pub privacy_policy_url: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
