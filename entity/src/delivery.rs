use sea_orm::entity::prelude::*;

/// One event on its way to one provider config: the outbox row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "delivery")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub event_id: Uuid,
    pub config_id: Uuid,
    pub provider: String,
    /// `full` or `anonymous`: what the decision allowed to be sent.
    pub identity: String,
    /// `pending`, `delivered`, `dropped` (accepted but discarded by the provider), `dead`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTimeUtc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub warning: Option<String>,
    pub delivered_at: Option<DateTimeUtc>,
    /// The visitor's full IP, kept only while the delivery is pending; cleared when it ends.
    pub client_ip: Option<String>,
    /// The consent-lookup id, for deciding again at send time; kept only while pending.
    pub consent_lookup_id: Option<String>,
    /// The visitor's user agent, kept only while pending (an event stored unlinkable has none).
    pub user_agent: Option<String>,
    /// The optional categories the visitor had granted (`analytics,marketing`; empty: none),
    /// kept only while pending; unknown (`NULL`) counts as none.
    pub granted: Option<String>,
    /// A pseudonymous visitor id computed at ingest (PostHog's cookieless daily id), kept only
    /// while pending.
    pub pseudonymous_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
