use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "cookie_consent_config")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub display_name: String,
    /// `draft`, `active`, `paused` or `decommissioned`.
    pub status: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub banner: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub categories: Json,
    #[sea_orm(column_type = "JsonBinary")]
    pub texts: Json,
    pub default_language: String,
    pub privacy_policy_url: Option<String>,
    pub cookie_policy_url: Option<String>,
    pub consent_expiry_days: i32,
    pub geo_targeting_enabled: bool,
    #[sea_orm(column_type = "JsonBinary")]
    pub consent_required_regions: Json,
    pub respect_do_not_track: bool,
    /// The banner lists each provider config under its category with its own switch.
    pub per_provider_choices: bool,
    #[sea_orm(column_type = "JsonBinary")]
    pub allowed_origins: Json,
    /// The last published revision (0 = never published).
    pub revision: i32,
    /// Choices made under a revision below this one must be asked again.
    pub reconsent_revision: i32,
    pub published_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
