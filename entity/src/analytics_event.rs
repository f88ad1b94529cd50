use sea_orm::entity::prelude::*;

/// A stored event. The API shows it as it is stored (`EventView` flattens it), so the field
/// comments here are its documentation; only the tenant is left out.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, utoipa::ToSchema)]
#[sea_orm(table_name = "analytics_event")]
#[schema(as = StoredEvent)]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    /// Set when posted to a per-provider endpoint: only that provider's configs receive it.
    pub provider: Option<String>,
    pub event_name: String,
    #[sea_orm(column_type = "JsonBinary")]
    #[schema(value_type = Object)]
    pub event_properties: Json,
    pub user_id: Option<String>,
    /// The analytics id (docs/glossary.md); kept only when some decision granted full identity.
    pub anonymous_id: Option<String>,
    pub session_id: Option<String>,
    pub page_url: Option<String>,
    pub referrer: Option<String>,
    pub title: Option<String>,
    /// The browser's own header, or what a server said about its visitor.
    pub user_agent: Option<String>,
    /// A BCP 47 language tag (`sv-SE`).
    pub language: Option<String>,
    pub screen: Option<String>,
    #[sea_orm(column_type = "JsonBinary", nullable)]
    #[schema(value_type = Option<Object>)]
    pub revenue: Option<Json>,
    /// Enrichment: `utm`, parsed `agent` (with the `bot` flag), `region`.
    #[sea_orm(column_type = "JsonBinary")]
    #[schema(value_type = Object)]
    pub context: Json,
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: DateTimeUtc,
    #[schema(value_type = String, format = DateTime)]
    pub received_at: DateTimeUtc,
    /// IPv4 /24 or IPv6 /48.
    pub ip_truncated: Option<String>,
    pub country: Option<String>,
    pub dnt: bool,
    pub gpc: bool,
    pub idempotency_key: Option<String>,
    /// The kind of ingest key that posted it (`public`: a page, `secret`: a server); idempotency
    /// keys are unique per tenant *and* kind. `null` for events stored before this was recorded.
    pub key_kind: Option<String>,
    /// The forwarding decisions made when it was received: one per provider config considered,
    /// a JSON array of `{config_id, provider, decision, identity, reason}` in the order they
    /// were made (`DecisionView`). Stored with the event rather than as rows of their own: they
    /// are written once, never change, and are read only with their event. The API shows them
    /// beside the event, with their deliveries.
    #[sea_orm(column_type = "JsonBinary")]
    #[serde(skip)]
    pub decisions: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
