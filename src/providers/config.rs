//! Provider configurations: one `provider_config` row per destination, for every provider. The
//! fields every provider shares (name, status, required category, credential references, usage)
//! are handled here once; the provider's own fields are its typed `Settings`, stored as JSON.
//!
//! Status lifecycle: `draft → active ⇄ paused`, `active → error` (set by the outbox after repeated
//! 401/403, never by an admin), `error → active | paused`, and `decommissioned` from anywhere,
//! terminal. Only `active` configs have their deliveries sent; `paused` and `error` ones keep them
//! waiting until the config is active again.
//!
//! Fail closed, per config: a row whose stored `status` or `required_category` is not one of its
//! values (a hand edit, a downgrade, damage) is *invalid*. It is read like any other row — never
//! with a guessed value, and without failing the query for the tenant's other configs — and:
//! its events are denied `denied:config_invalid` and its deliveries wait; the API shows it with
//! `"status": "invalid"` and a `problem` naming the column and the stored value; it cannot be
//! activated: an admin may only pause it (with every field valid again) or decommission it, and
//! activates it after that, as a deliberate second step.

use chrono::{DateTime, Utc};
use entity::provider_config;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, ExprTrait,
    IntoActiveModel, QueryFilter, QueryOrder, QuerySelect, Set, sea_query::Expr,
};
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{MapAccess, Visitor},
};
use serde_json::{Map, Value};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{AllOfBuilder, OneOfBuilder, Schema},
    },
};
use uuid::Uuid;

use super::AnyProvider;
use crate::{
    audit,
    consent::{ProviderStatus, RequiredCategory},
    error::{Error, Result},
};

/// The fields every provider config has, as an admin writes them (documentation of the body).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CommonConfigFields {
    /// 1–100 characters.
    display_name: String,
    /// `draft` (default) or `active` at creation; later `active`, `paused` or `decommissioned`
    /// (`error` is set by the gateway).
    #[schema(value_type = Option<String>, example = "active")]
    status: Option<String>,
    /// `none` (default for Plausible and Umami), `functional`, `analytics` or `marketing`.
    #[schema(value_type = Option<String>, example = "none")]
    required_category: Option<String>,
    /// Secret references only (`env:NAME`, `file:/path`, `keyvault://…`).
    #[schema(value_type = Option<Object>)]
    credentials: Option<Value>,
    /// The provider's privacy policy (https), linked from the banner's per-provider choices.
    privacy_policy_url: Option<String>,
}

/// Usage counters, kept by the ingest transaction (denied) and the delivery workers (the rest).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Usage {
    pub events_sent: i64,
    pub events_failed: i64,
    pub events_denied_by_consent: i64,
    pub events_dropped: i64,
    /// Deliveries waiting after at least one failed attempt, now — and, while the config's
    /// circuit is open, every one of its pending deliveries, tried or not (they end delivered,
    /// or dead at the retry horizon): trouble shows here while it happens, not only in
    /// `events_failed`.
    pub events_retrying: i64,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// The config's circuit ([`crate::outbox::circuit`]): set by the outbox, never by an admin.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CircuitView {
    /// `closed` (sending), `open` (the provider keeps failing: one probe every
    /// `delivery.circuit_probe_secs`) or `half_open` (a probe in flight).
    pub state: String,
    /// When it last changed (open: when the last probe was sent).
    pub since: Option<DateTime<Utc>>,
    /// Failed requests in a row (timeouts, connection errors, 408, 429, 5xx).
    pub consecutive_failures: i32,
}

/// A provider config as the API shows it: the shared fields, the provider's settings at the top
/// level, credential *references* (never values) and usage.
#[derive(Clone, Debug, Serialize)]
pub struct ProviderConfigView {
    pub id: Uuid,
    pub provider: String,
    pub display_name: String,
    pub status: String,
    /// Why the config is in `error` (the provider's answer).
    pub status_reason: Option<String>,
    /// For an `invalid` config: what cannot be read (see the module docs). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub required_category: String,
    pub credentials: Value,
    /// The provider's privacy policy, linked from the banner's per-provider choices.
    pub privacy_policy_url: Option<String>,
    #[serde(flatten)]
    pub settings: Map<String, Value>,
    pub usage: Usage,
    pub circuit: CircuitView,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Documentation of [`ProviderConfigView`]: the shared read fields and one provider's settings.
#[derive(ToSchema)]
#[allow(dead_code)]
struct ConfigMeta {
    id: Uuid,
    provider: String,
    display_name: String,
    /// `draft`, `active`, `paused`, `error`, `decommissioned`, or `invalid` when the stored
    /// status or required category cannot be read (then `problem` says which).
    status: String,
    status_reason: Option<String>,
    problem: Option<String>,
    required_category: String,
    #[schema(value_type = Object)]
    credentials: Value,
    privacy_policy_url: Option<String>,
    usage: Usage,
    circuit: CircuitView,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl PartialSchema for ProviderConfigView {
    fn schema() -> RefOr<Schema> {
        let mut settings = OneOfBuilder::new();
        for schema in super::input_schemas() {
            settings = settings.item(schema);
        }
        AllOfBuilder::new().item(ConfigMeta::schema()).item(settings).into()
    }
}

impl ToSchema for ProviderConfigView {}

/// The status shown for a config whose row cannot be read; never stored.
pub const INVALID: &str = "invalid";

/// A config's status and required category, or what about them cannot be read.
pub fn state(m: &provider_config::Model) -> std::result::Result<(ProviderStatus, RequiredCategory), String> {
    let status = ProviderStatus::read("status", &m.status);
    let required = RequiredCategory::read("required_category", &m.required_category);
    match (status, required) {
        (Ok(s), Ok(r)) => Ok((s, r)),
        (s, r) => Err([s.err(), r.err()].into_iter().flatten().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")),
    }
}

/// Whether the config's deliveries may be sent now: `active`, and readable.
pub fn sends(m: &provider_config::Model) -> bool {
    matches!(state(m), Ok((ProviderStatus::Active, _)))
}

impl From<provider_config::Model> for ProviderConfigView {
    fn from(m: provider_config::Model) -> Self {
        let problem = state(&m).err();
        ProviderConfigView {
            id: m.id,
            provider: m.provider,
            display_name: m.display_name,
            status: if problem.is_some() { INVALID.to_string() } else { m.status },
            status_reason: m.status_reason,
            problem,
            required_category: m.required_category,
            credentials: m.credentials,
            privacy_policy_url: m.privacy_policy_url,
            settings: match m.settings {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            usage: Usage {
                events_sent: m.events_sent,
                events_failed: m.events_failed,
                events_denied_by_consent: m.events_denied_by_consent,
                events_dropped: m.events_dropped,
                // Counted from the deliveries: see `with_counts`.
                events_retrying: 0,
                last_sent_at: m.last_sent_at,
                last_error_at: m.last_error_at,
                last_error: m.last_error,
            },
            circuit: CircuitView {
                state: m.circuit_state,
                since: m.circuit_since,
                consecutive_failures: m.circuit_failures,
            },
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// Whether an admin may move a config from `from` to `to`. Staying is always allowed.
pub fn admin_may_move(from: ProviderStatus, to: ProviderStatus) -> bool {
    use ProviderStatus::*;
    from == to
        || matches!(
            (from, to),
            (Draft, Active)
                | (Draft, Decommissioned)
                | (Active, Paused)
                | (Active, Decommissioned)
                | (Paused, Active)
                | (Paused, Decommissioned)
                | (Error, Active)
                | (Error, Paused)
                | (Error, Decommissioned)
        )
}

/// A parsed, valid config body: what [`create`] stores.
pub struct ConfigInput {
    display_name: String,
    status: ProviderStatus,
    required_category: RequiredCategory,
    credentials: Value,
    settings: Value,
    privacy_policy_url: Option<String>,
}

/// Fields of the representation that only the gateway sets; a body naming one is refused.
const READ_ONLY: &[&str] = &["id", "provider", "status_reason", "usage", "circuit", "created_at", "updated_at"];

/// A PATCH of a provider config, parsed at the HTTP edge: a JSON merge patch (RFC 7396) of the
/// writable fields (`display_name`, `status`, `required_category`, `credentials`, the provider's
/// settings). A server-set field is refused here, naming it; the rest is checked after merging,
/// like a creation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderConfigPatch(Map<String, Value>);

impl ProviderConfigPatch {
    /// The `credentials` object the patch sets, if any (references, checked against the
    /// operator's enabled schemes before anything is stored).
    pub fn credentials(&self) -> Option<&Value> {
        self.0.get("credentials")
    }
}

impl<'de> Deserialize<'de> for ProviderConfigPatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct PatchVisitor;

        impl<'de> Visitor<'de> for PatchVisitor {
            type Value = ProviderConfigPatch;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<ProviderConfigPatch, A::Error> {
                let mut fields = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if READ_ONLY.contains(&key.as_str()) {
                        // Failing inside the value, so that the error's path names the field.
                        map.next_value::<ReadOnly>()?;
                    }
                    let v = map.next_value()?;
                    fields.insert(key, v);
                }
                Ok(ProviderConfigPatch(fields))
            }
        }

        d.deserialize_map(PatchVisitor)
    }
}

/// A provider config as POSTed, parsed at the HTTP edge: its writable fields, a server-set field
/// refused while parsing, naming it (as for a PATCH). [`ConfigInput::new`] checks the fields
/// against the provider named in the path.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct NewProviderConfig(ProviderConfigPatch);

impl NewProviderConfig {
    /// See [`ProviderConfigPatch::credentials`].
    pub fn credentials(&self) -> Option<&Value> {
        self.0.credentials()
    }
}

impl ConfigInput {
    /// A new config of `provider`, checked; `status` defaults to `draft`.
    pub fn new(provider: &dyn AnyProvider, body: NewProviderConfig) -> Result<Self> {
        parse_input(provider, Value::Object(body.0.0), ProviderStatus::Draft)
    }
}

/// The value of a field only the gateway sets: never accepted.
struct ReadOnly;

impl<'de> Deserialize<'de> for ReadOnly {
    fn deserialize<D: Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
        Err(serde::de::Error::custom("is read-only"))
    }
}

fn parse_input(provider: &dyn AnyProvider, body: Value, status_default: ProviderStatus) -> Result<ConfigInput> {
    let Value::Object(mut map) = body else {
        return Err(Error::Validation { field: None, message: "expected a JSON object".into() });
    };
    if let Some(k) = READ_ONLY.iter().find(|k| map.contains_key(**k)) {
        return Err(Error::validation(*k, "is read-only"));
    }
    let display_name = match map.remove("display_name") {
        Some(Value::String(s)) if (1..=100).contains(&s.trim().chars().count()) => s.trim().to_string(),
        Some(Value::String(_)) => return Err(Error::validation("display_name", "must be 1 to 100 characters long")),
        Some(_) => return Err(Error::validation("display_name", "must be a string")),
        None => return Err(Error::validation("display_name", "is required")),
    };
    let status = match map.remove("status") {
        None | Some(Value::Null) => status_default,
        Some(v) => serde_json::from_value(v)
            .map_err(|_| Error::validation("status", "must be one of draft, active, paused, error, decommissioned"))?,
    };
    let required_category = match map.remove("required_category") {
        None | Some(Value::Null) => provider.default_required_category(),
        Some(v) => serde_json::from_value(v).map_err(|_| {
            Error::validation("required_category", "must be one of none, functional, analytics, marketing")
        })?,
    };
    let credentials = match map.remove("credentials") {
        None | Some(Value::Null) => provider.parse_credentials(Value::Object(Map::new()))?,
        Some(v @ Value::Object(_)) => provider.parse_credentials(v)?,
        Some(_) => return Err(Error::validation("credentials", "must be an object of secret references")),
    };
    let privacy_policy_url = match map.remove("privacy_policy_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(String::from(
            crate::consent::config::spec::HttpsUrl::parse(&u)
                .map_err(|e| Error::validation("privacy_policy_url", e))?,
        )),
        Some(_) => return Err(Error::validation("privacy_policy_url", "must be an https URL or null")),
    };
    let settings = provider.parse_settings(Value::Object(map))?;
    Ok(ConfigInput { display_name, status, required_category, credentials, settings, privacy_policy_url })
}

fn view_json(view: &ProviderConfigView) -> Option<Value> {
    serde_json::to_value(view).ok()
}

pub async fn create(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    provider: &dyn AnyProvider,
    input: ConfigInput,
    actor: &str,
) -> Result<ProviderConfigView> {
    if !matches!(input.status, ProviderStatus::Draft | ProviderStatus::Active) {
        return Err(Error::Conflict(format!("a new config starts as draft or active, not {}", input.status.as_str())));
    }
    let now = Utc::now();
    let txn = crate::db::begin_write(db).await?;
    let model = provider_config::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        provider: Set(provider.name().to_string()),
        display_name: Set(input.display_name),
        status: Set(input.status.as_str().into()),
        status_reason: Set(None),
        required_category: Set(input.required_category.as_str().into()),
        settings: Set(input.settings),
        credentials: Set(input.credentials),
        events_sent: Set(0),
        events_failed: Set(0),
        events_denied_by_consent: Set(0),
        events_dropped: Set(0),
        last_sent_at: Set(None),
        last_error_at: Set(None),
        last_error: Set(None),
        consecutive_auth_failures: Set(0),
        circuit_state: Set(crate::outbox::circuit::CircuitState::Closed.as_str().into()),
        circuit_since: Set(None),
        circuit_failures: Set(0),
        created_at: Set(now),
        updated_at: Set(now),
        privacy_policy_url: Set(input.privacy_policy_url),
    }
    .insert(&txn)
    .await?;
    let view = ProviderConfigView::from(model);
    audit_change(&txn, tenant_id, provider, actor, "create", None, &view).await?;
    crate::cache::generation::bump(&txn, tenant_id).await?;
    txn.commit().await?;
    Ok(view)
}

pub async fn list(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    provider: &dyn AnyProvider,
) -> Result<Vec<ProviderConfigView>> {
    let rows = provider_config::Entity::find()
        .filter(provider_config::Column::TenantId.eq(tenant_id))
        .filter(provider_config::Column::Provider.eq(provider.name()))
        .order_by_asc(provider_config::Column::CreatedAt)
        .all(db)
        .await?;
    with_counts(db, rows.into_iter().map(ProviderConfigView::from).collect()).await
}

/// Completes the usage of `views` with what is counted outside the config's row:
/// `events_retrying`, their pending deliveries with a failed attempt and, while a config's
/// circuit is not closed, all its pending deliveries — those never tried wait because of the
/// provider's trouble too (an unreadable circuit state counts as open); and the consent denials
/// PostgreSQL's ingest writers counted in `ingest_usage` ([`usage::denied_by_consent_n`]).
pub async fn with_counts(
    db: &impl ConnectionTrait,
    mut views: Vec<ProviderConfigView>,
) -> Result<Vec<ProviderConfigView>> {
    use crate::outbox::circuit::CircuitState;
    use entity::delivery;
    if views.is_empty() {
        return Ok(views);
    }
    let (tripped, closed): (Vec<&ProviderConfigView>, Vec<&ProviderConfigView>) =
        views.iter().partition(|v| CircuitState::stored(&v.circuit.state) != CircuitState::Closed);
    let retrying = sea_orm::Condition::any()
        .add(delivery::Column::ConfigId.is_in(tripped.iter().map(|v| v.id)))
        .add(delivery::Column::ConfigId.is_in(closed.iter().map(|v| v.id)).and(delivery::Column::Attempts.gt(0)));
    let counts: Vec<(Uuid, i64)> = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::ConfigId)
        .column_as(Expr::col(delivery::Column::Id).count(), "n")
        .filter(delivery::Column::Status.eq(crate::outbox::DeliveryStatus::Pending.as_str()))
        .filter(retrying)
        .group_by(delivery::Column::ConfigId)
        .into_tuple()
        .all(db)
        .await?;
    let denied: Vec<(Uuid, i64)> = entity::ingest_usage::Entity::find()
        .select_only()
        .column(entity::ingest_usage::Column::ConfigId)
        .column_as(Expr::cust("CAST(COALESCE(SUM(events_denied_by_consent), 0) AS BIGINT)"), "n")
        .filter(entity::ingest_usage::Column::ConfigId.is_in(views.iter().map(|v| v.id)))
        .group_by(entity::ingest_usage::Column::ConfigId)
        .into_tuple()
        .all(db)
        .await?;
    let of = |counts: &[(Uuid, i64)], id: Uuid| counts.iter().find(|(c, _)| *c == id).map_or(0, |(_, n)| *n);
    for v in &mut views {
        v.usage.events_retrying = of(&counts, v.id);
        v.usage.events_denied_by_consent += of(&denied, v.id);
    }
    Ok(views)
}

/// [`with_counts`] of one config, from its row.
pub async fn counted(db: &impl ConnectionTrait, model: provider_config::Model) -> Result<ProviderConfigView> {
    Ok(with_counts(db, vec![model.into()]).await?.remove(0))
}

pub async fn find(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    provider: &str,
    id: Uuid,
) -> Result<provider_config::Model> {
    by_id(tenant_id, provider, id).one(db).await?.ok_or(Error::NotFound)
}

/// The tenant's config `id` of `provider`.
fn by_id(tenant_id: Uuid, provider: &str, id: Uuid) -> sea_orm::Select<provider_config::Entity> {
    provider_config::Entity::find_by_id(id)
        .filter(provider_config::Column::TenantId.eq(tenant_id))
        .filter(provider_config::Column::Provider.eq(provider))
}

/// [`find`] inside a write transaction, the row locked until it ends (`FOR UPDATE` on
/// PostgreSQL; SQLite's write transaction holds the whole database): a change is made to the row
/// as it is, not as another transaction left it meanwhile — two admins' edits, or an edit and a
/// decommission at once, must not undo each other (last writer wins would revive a
/// decommissioned config).
async fn find_for_update(
    txn: &DatabaseTransaction,
    tenant_id: Uuid,
    provider: &str,
    id: Uuid,
) -> Result<provider_config::Model> {
    by_id(tenant_id, provider, id).lock_exclusive().one(txn).await?.ok_or(Error::NotFound)
}

pub async fn get(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    provider: &dyn AnyProvider,
    id: Uuid,
) -> Result<ProviderConfigView> {
    counted(db, find(db, tenant_id, provider.name(), id).await?).await
}

/// The writable representation of a stored config, onto which a PATCH is merged.
fn writable(m: &provider_config::Model) -> Map<String, Value> {
    let mut doc = match &m.settings {
        Value::Object(s) => s.clone(),
        _ => Map::new(),
    };
    doc.insert("display_name".into(), Value::String(m.display_name.clone()));
    // An unreadable status is not carried over: the patch must say where the config goes.
    if ProviderStatus::parse(&m.status).is_some() {
        doc.insert("status".into(), Value::String(m.status.clone()));
    }
    doc.insert("required_category".into(), Value::String(m.required_category.clone()));
    doc.insert("credentials".into(), m.credentials.clone());
    if let Some(url) = &m.privacy_policy_url {
        doc.insert("privacy_policy_url".into(), Value::String(url.clone()));
    }
    doc
}

/// JSON merge patch (RFC 7396) of `patch` onto the stored config, then the same validation as a
/// creation: a PATCH can never leave a config that a POST would have refused. `credentials`
/// merges per reference (`null` removes one), as RFC 7396 merges any object.
pub async fn patch(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    provider: &dyn AnyProvider,
    id: Uuid,
    patch: ProviderConfigPatch,
    actor: &str,
) -> Result<ProviderConfigView> {
    let txn = crate::db::begin_write(db).await?;
    let current = find_for_update(&txn, tenant_id, provider.name(), id).await?;
    // `None`: the stored row cannot be read (invalid); see the module docs.
    let from = state(&current).ok().map(|(s, _)| s);
    if from == Some(ProviderStatus::Decommissioned) {
        return Err(Error::Conflict("the config is decommissioned; that is final".into()));
    }
    if let Err(problem) = state(&current) {
        let to = patch.0.get("status").and_then(Value::as_str).and_then(ProviderStatus::parse);
        if !matches!(to, Some(ProviderStatus::Paused | ProviderStatus::Decommissioned)) {
            return Err(Error::Conflict(format!(
                "the config is invalid ({problem}); it can only be paused (with every field valid) or \
                 decommissioned, and activated after that"
            )));
        }
    }
    let mut doc = Value::Object(writable(&current));
    crate::json::merge_patch(&mut doc, &Value::Object(patch.0));
    // The status is in `doc` (carried over, or required above for an invalid config).
    let input = parse_input(provider, doc, from.unwrap_or(ProviderStatus::Paused))?;
    let to = input.status;
    if let Some(from) = from {
        if to == ProviderStatus::Error && from != ProviderStatus::Error {
            return Err(Error::Conflict(
                "status error is set by the gateway when the provider refuses the credentials".into(),
            ));
        }
        if !admin_may_move(from, to) {
            return Err(Error::Conflict(format!("a {} config cannot become {}", from.as_str(), to.as_str())));
        }
    }
    let moved = from != Some(to);
    // The snapshots carry the usage the API shows, counted rows included.
    let before = counted(&txn, current.clone()).await?;
    let mut active = current.into_active_model();
    active.display_name = Set(input.display_name);
    active.status = Set(to.as_str().into());
    active.required_category = Set(input.required_category.as_str().into());
    active.settings = Set(input.settings);
    active.credentials = Set(input.credentials);
    active.privacy_policy_url = Set(input.privacy_policy_url);
    active.updated_at = Set(Utc::now());
    if moved {
        active.status_reason = Set(None);
        active.consecutive_auth_failures = Set(0);
    }
    let model = active.update(&txn).await?;
    match to {
        _ if !moved => {}
        // Waiting deliveries go out now rather than at the end of their backoff.
        ProviderStatus::Active => crate::outbox::resume_config(&txn, id).await?,
        ProviderStatus::Decommissioned => {
            crate::outbox::end_for_config(&txn, id, "the config was decommissioned").await?
        }
        _ => {}
    }
    let view = counted(&txn, model).await?;
    audit_change(&txn, tenant_id, provider, actor, "update", Some(&before), &view).await?;
    crate::cache::generation::bump(&txn, tenant_id).await?;
    txn.commit().await?;
    Ok(view)
}

/// The audit entry of an admin's change to a config: `<provider>_config.<verb>`.
async fn audit_change(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    provider: &dyn AnyProvider,
    actor: &str,
    verb: &str,
    before: Option<&ProviderConfigView>,
    after: &ProviderConfigView,
) -> Result<()> {
    audit::record(
        db,
        audit::Change {
            tenant_id,
            actor,
            action: &format!("{}_config.{verb}", provider.name()),
            entity_type: "provider_config",
            entity_id: Some(after.id.to_string()),
            before: before.and_then(view_json),
            after: view_json(after),
        },
    )
    .await?;
    Ok(())
}

/// `DELETE`: decommissions the config. The row stays, so the delivery log and the forwarding
/// decisions that name it remain explainable to an auditor. Deleting twice is harmless.
pub async fn decommission(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    provider: &dyn AnyProvider,
    id: Uuid,
    actor: &str,
) -> Result<ProviderConfigView> {
    let current = find(db, tenant_id, provider.name(), id).await?;
    match state(&current) {
        Ok((ProviderStatus::Decommissioned, _)) => counted(db, current).await,
        Ok(_) => {
            let mut fields = Map::new();
            fields.insert("status".into(), ProviderStatus::Decommissioned.as_str().into());
            patch(db, tenant_id, provider, id, ProviderConfigPatch(fields), actor).await
        }
        // An invalid row cannot pass a PATCH's validation (its category may be what is
        // unreadable), and retiring it must not need a repair first: only the status changes.
        Err(_) => {
            let txn = crate::db::begin_write(db).await?;
            let current = find_for_update(&txn, tenant_id, provider.name(), id).await?;
            if current.status == ProviderStatus::Decommissioned.as_str() {
                return counted(&txn, current).await;
            }
            let before = counted(&txn, current.clone()).await?;
            let mut active = current.into_active_model();
            active.status = Set(ProviderStatus::Decommissioned.as_str().into());
            active.updated_at = Set(Utc::now());
            let model = active.update(&txn).await?;
            crate::outbox::end_for_config(&txn, id, "the config was decommissioned").await?;
            // After its deliveries ended, as `patch` counts: none is retrying any more.
            let view = counted(&txn, model).await?;
            audit_change(&txn, tenant_id, provider, actor, "update", Some(&before), &view).await?;
            crate::cache::generation::bump(&txn, tenant_id).await?;
            txn.commit().await?;
            Ok(view)
        }
    }
}

/// The configs an event may be forwarded to, and so gets a decision for: `active` and `error`
/// ones (an `error` config is decided like an active one; its deliveries wait), `paused` ones
/// (decided `denied:config_paused`, for the record) and rows whose status cannot be read
/// (`denied:config_invalid`: an unreadable row is recorded as refused, not silently skipped) —
/// everything but `draft` and `decommissioned`. Optionally only one provider's.
pub async fn forwarding_targets(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    provider: Option<&str>,
) -> Result<Vec<provider_config::Model>> {
    let mut q = provider_config::Entity::find().filter(provider_config::Column::TenantId.eq(tenant_id)).filter(
        provider_config::Column::Status
            .is_not_in([ProviderStatus::Draft.as_str(), ProviderStatus::Decommissioned.as_str()]),
    );
    if let Some(p) = provider {
        q = q.filter(provider_config::Column::Provider.eq(p));
    }
    Ok(q.order_by_asc(provider_config::Column::CreatedAt).all(db).await?)
}

/// Usage counters. Increments are single `UPDATE … SET n = n + 1` statements, so concurrent
/// workers and requests never lose a count.
pub mod usage {
    use super::*;

    /// `n` events denied by consent at once (one commit of PostgreSQL's ingest writer `shard`):
    /// added to the config's row of that shard in `ingest_usage`, not to the config's own row —
    /// which every writer's batch and the outbox's outcomes would otherwise take turns on, each
    /// waiting for the other's commit (migration 000019). Read back by [`with_counts`].
    pub async fn denied_by_consent_n(db: &impl ConnectionTrait, shard: i32, config_id: Uuid, n: u64) -> Result<()> {
        use entity::ingest_usage::{ActiveModel, Column, Entity};
        let row = ActiveModel { config_id: Set(config_id), shard: Set(shard), events_denied_by_consent: Set(n as i64) };
        Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns([Column::ConfigId, Column::Shard])
                    .value(
                        Column::EventsDeniedByConsent,
                        Expr::col((Entity, Column::EventsDeniedByConsent)).add(n as i64),
                    )
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        Ok(())
    }

    /// `n` deliveries dead-lettered at once (at the retry horizon): `events_failed` grows by `n`;
    /// `last_error` stays the provider's (the reason they could not be sent).
    pub async fn failed_many(db: &impl ConnectionTrait, config_id: Uuid, n: u64) -> Result<()> {
        provider_config::Entity::update_many()
            .col_expr(
                provider_config::Column::EventsFailed,
                Expr::col(provider_config::Column::EventsFailed).add(n as i64),
            )
            .filter(provider_config::Column::Id.eq(config_id))
            .exec(db)
            .await?;
        Ok(())
    }

    /// What a batch of delivery outcomes does to one config's usage, summed so that the batch
    /// writes the config's row once ([`Tally::write`]) instead of once per delivery. Recorded in
    /// the order the outcomes are written; the row ends as if each had been written in turn:
    ///
    /// - a delivery (`sent`) counts in `events_sent`, sets `last_sent_at` and clears `last_error`
    ///   (and its time): they describe the config's current trouble, and past failures stay in
    ///   `events_failed` and the dead letters;
    /// - a dropped delivery sets `last_error` to the provider's warning; a failed attempt sets it
    ///   always and counts in `events_failed` only when the delivery is dead;
    /// - a consent denial counts in `events_denied_by_consent` and leaves `last_error` alone (a
    ///   withdrawal is not the config's trouble);
    /// - every outcome but a consent denial ends a run of 401/403s; a 401/403 extends it, and puts
    ///   an `active` config into `error` when the run reaches the threshold.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Tally {
        sent: i64,
        dropped: i64,
        failed: i64,
        denied: i64,
        last_sent_at: Option<DateTime<Utc>>,
        /// `last_error` and its time as the batch leaves them: `None` untouched, `Some(None)`
        /// cleared.
        error: Option<Option<(String, DateTime<Utc>)>>,
        /// The 401/403s before the first outcome that ends a run (they extend the stored run,
        /// unknown until written), with their reasons and times.
        auth_before_reset: Vec<(String, DateTime<Utc>)>,
        /// The run's length after the last outcome that ended one; `None`: none did.
        auth_since_reset: Option<i32>,
        /// The first 401/403 after a reset whose run reached the threshold.
        reached_after_reset: Option<(String, DateTime<Utc>)>,
    }

    impl Tally {
        /// A delivery.
        pub fn sent(&mut self, at: DateTime<Utc>) {
            self.sent += 1;
            self.last_sent_at = Some(at);
            self.error = Some(None);
            self.reset();
        }

        /// Answered with success but discarded by the provider.
        pub fn dropped(&mut self, warning: &str, at: DateTime<Utc>) {
            self.dropped += 1;
            self.error = Some(Some((warning.to_string(), at)));
            self.reset();
        }

        /// A failed attempt: `last_error` always, `events_failed` only when the delivery is dead.
        pub fn failed(&mut self, error: &str, dead: bool, at: DateTime<Utc>) {
            if dead {
                self.failed += 1;
            }
            self.error = Some(Some((error.to_string(), at)));
            self.reset();
        }

        /// Not sent: consent withdrawn since ingest.
        pub fn denied_by_consent(&mut self) {
            self.denied += 1;
        }

        /// A 401/403, counted towards the config's `error` status after `threshold` in a row.
        pub fn auth_failed(&mut self, error: &str, threshold: u32, at: DateTime<Utc>) {
            self.error = Some(Some((error.to_string(), at)));
            match &mut self.auth_since_reset {
                None => self.auth_before_reset.push((error.to_string(), at)),
                Some(run) => {
                    *run += 1;
                    if *run >= threshold as i32 && self.reached_after_reset.is_none() {
                        self.reached_after_reset = Some((error.to_string(), at));
                    }
                }
            }
        }

        fn reset(&mut self) {
            self.auth_since_reset = Some(0);
        }

        /// Nothing to write.
        pub fn is_empty(&self) -> bool {
            *self == Tally::default()
        }

        /// The run of 401/403s after the batch, given the stored one (`before`); `None`: unchanged.
        fn run_after(&self, before: i32) -> Option<i32> {
            match self.auth_since_reset {
                Some(run) => Some(run),
                None if self.auth_before_reset.is_empty() => None,
                None => Some(before + self.auth_before_reset.len() as i32),
            }
        }

        /// The 401/403 (reason, time) whose run first reached `threshold`, given the stored run
        /// (`before`): the config goes to `error` then, if it is `active`.
        fn reached(&self, before: i32, threshold: u32) -> Option<&(String, DateTime<Utc>)> {
            let first = Ord::max(threshold as i32 - before, 1) as usize;
            self.auth_before_reset.get(first - 1).or(self.reached_after_reset.as_ref())
        }

        /// Writes the tally on the config's row inside the caller's transaction, with `extra`
        /// columns of the same row (the circuit's) in the same statement: one `UPDATE` — preceded
        /// by a read of the row, locked, only when the batch had 401/403s that extend the stored
        /// run. Returns the last 401/403's reason when the batch put the config into `error`
        /// (every instance's config cache is told).
        pub async fn write(
            &self,
            db: &impl ConnectionTrait,
            config_id: Uuid,
            threshold: u32,
            extra: Vec<(provider_config::Column, sea_orm::sea_query::SimpleExpr)>,
        ) -> Result<Option<String>> {
            use provider_config::Column as C;
            let mut q = provider_config::Entity::update_many().filter(C::Id.eq(config_id));
            let mut empty = true;
            let mut add = |q: sea_orm::UpdateMany<provider_config::Entity>, col: C, n: i64| {
                if n == 0 {
                    return q;
                }
                empty = false;
                q.col_expr(col, Expr::col(col).add(n))
            };
            q = add(q, C::EventsSent, self.sent);
            q = add(q, C::EventsDropped, self.dropped);
            q = add(q, C::EventsFailed, self.failed);
            q = add(q, C::EventsDeniedByConsent, self.denied);
            let mut set = |q: sea_orm::UpdateMany<provider_config::Entity>, col: C, v: sea_orm::Value| {
                empty = false;
                q.col_expr(col, Expr::value(v))
            };
            if let Some(at) = self.last_sent_at {
                q = set(q, C::LastSentAt, at.into());
            }
            match &self.error {
                None => {}
                Some(None) => {
                    q = set(q, C::LastError, Option::<String>::None.into());
                    q = set(q, C::LastErrorAt, Option::<DateTime<Utc>>::None.into());
                }
                Some(Some((e, at))) => {
                    q = set(q, C::LastError, e.clone().into());
                    q = set(q, C::LastErrorAt, (*at).into());
                }
            }
            // A run the batch extends is read first (locked on PostgreSQL until the commit).
            let before = if self.auth_before_reset.is_empty() {
                0
            } else {
                let stored: Option<i32> = provider_config::Entity::find_by_id(config_id)
                    .select_only()
                    .column(C::ConsecutiveAuthFailures)
                    .lock_exclusive()
                    .into_tuple()
                    .one(db)
                    .await?;
                let Some(stored) = stored else { return Ok(None) };
                stored
            };
            if let Some(run) = self.run_after(before) {
                q = set(q, C::ConsecutiveAuthFailures, run.into());
            }
            let reached = self.reached(before, threshold).cloned();
            for (col, value) in extra {
                empty = false;
                q = q.col_expr(col, value);
            }
            if !empty {
                q.exec(db).await?;
            }
            let Some((reason, at)) = reached else { return Ok(None) };
            let moved = provider_config::Entity::update_many()
                .col_expr(C::Status, Expr::value(ProviderStatus::Error.as_str()))
                .col_expr(
                    C::StatusReason,
                    Expr::value(format!("{threshold} authentication failures in a row; last: {reason}")),
                )
                .col_expr(C::UpdatedAt, Expr::value(at))
                .filter(C::Id.eq(config_id))
                .filter(C::Status.eq(ProviderStatus::Active.as_str()))
                .exec(db)
                .await?;
            if moved.rows_affected == 0 {
                return Ok(None);
            }
            // Every instance's config cache picks the status change up within its bound.
            crate::cache::generation::bump_for_provider_config(db, config_id).await?;
            Ok(Some(reason))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The columns of a config's row the usage changes.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        struct Row {
            sent: i64,
            dropped: i64,
            failed: i64,
            denied: i64,
            last_sent_at: Option<DateTime<Utc>>,
            last_error: Option<(String, DateTime<Utc>)>,
            run: i32,
            active: bool,
            status_reason: Option<(String, DateTime<Utc>)>,
        }

        #[derive(Clone, Debug)]
        enum Op {
            Sent,
            Dropped(&'static str),
            Failed(&'static str, bool),
            Denied,
            Auth(&'static str),
        }

        /// One outcome written alone, as the per-delivery statements did before the tally.
        fn one_by_one(row: &mut Row, op: &Op, threshold: u32, at: DateTime<Utc>) {
            match op {
                Op::Sent => {
                    row.sent += 1;
                    row.last_sent_at = Some(at);
                    row.last_error = None;
                    row.run = 0;
                }
                Op::Dropped(w) => {
                    row.dropped += 1;
                    row.last_error = Some((w.to_string(), at));
                    row.run = 0;
                }
                Op::Failed(e, dead) => {
                    row.failed += *dead as i64;
                    row.last_error = Some((e.to_string(), at));
                    row.run = 0;
                }
                Op::Denied => row.denied += 1,
                Op::Auth(e) => {
                    row.run += 1;
                    row.last_error = Some((e.to_string(), at));
                    if row.active && row.run >= threshold as i32 {
                        row.active = false;
                        row.status_reason = Some((format!("{threshold} in a row; last: {e}"), at));
                    }
                }
            }
        }

        /// The tally's single write, as [`Tally::write`] does it.
        fn summed(row: &mut Row, tally: &Tally, threshold: u32) {
            row.sent += tally.sent;
            row.dropped += tally.dropped;
            row.failed += tally.failed;
            row.denied += tally.denied;
            row.last_sent_at = tally.last_sent_at.or(row.last_sent_at);
            if let Some(error) = &tally.error {
                row.last_error = error.clone();
            }
            let before = row.run;
            if let Some(run) = tally.run_after(before) {
                row.run = run;
            }
            if let Some((e, at)) = tally.reached(before, threshold)
                && row.active
            {
                row.active = false;
                row.status_reason = Some((format!("{threshold} in a row; last: {e}"), *at));
            }
        }

        #[test]
        fn a_tally_leaves_the_row_as_its_outcomes_written_one_by_one_would() {
            let ops = [
                Op::Sent,
                Op::Dropped("dropped"),
                Op::Failed("retry", false),
                Op::Failed("dead", true),
                Op::Denied,
                Op::Auth("401 a"),
                Op::Auth("401 b"),
            ];
            let t0 = Utc::now();
            // Every sequence of up to 5 outcomes, from stored runs of 0 to 3 and active or not.
            let mut sequences: Vec<Vec<usize>> = vec![vec![]];
            for _ in 0..5 {
                let longer: Vec<Vec<usize>> = sequences
                    .iter()
                    .filter(|s| s.len() == sequences.last().unwrap().len())
                    .flat_map(|s| (0..ops.len()).map(move |i| [s.clone(), vec![i]].concat()))
                    .collect();
                sequences.extend(longer);
            }
            let mut checked = 0;
            for seq in &sequences {
                for run in 0..4 {
                    for active in [true, false] {
                        for threshold in [1, 2, 3] {
                            let start =
                                Row { run, active, sent: 5, last_error: Some(("old".into(), t0)), ..Row::default() };
                            let (mut expected, mut tally) = (start.clone(), Tally::default());
                            for (k, &i) in seq.iter().enumerate() {
                                let at = t0 + chrono::Duration::seconds(k as i64 + 1);
                                one_by_one(&mut expected, &ops[i], threshold, at);
                                match &ops[i] {
                                    Op::Sent => tally.sent(at),
                                    Op::Dropped(w) => tally.dropped(w, at),
                                    Op::Failed(e, dead) => tally.failed(e, *dead, at),
                                    Op::Denied => tally.denied_by_consent(),
                                    Op::Auth(e) => tally.auth_failed(e, threshold, at),
                                }
                            }
                            let mut got = start.clone();
                            summed(&mut got, &tally, threshold);
                            assert_eq!(
                                got,
                                expected,
                                "{:?} from run {run}, active {active}, threshold {threshold}",
                                seq.iter().map(|&i| &ops[i]).collect::<Vec<_>>()
                            );
                            assert_eq!(tally.is_empty(), seq.is_empty());
                            checked += 1;
                        }
                    }
                }
            }
            assert!(checked > 100_000, "{checked}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{plausible::Plausible, umami::Umami};

    #[test]
    fn a_patch_naming_a_server_set_field_is_refused_naming_it() {
        let parse = |v: Value| crate::json::from_value::<ProviderConfigPatch>(v, "");
        for field in READ_ONLY {
            match parse(serde_json::json!({"display_name": "x", *field: null})) {
                Err(Error::Validation { field: f, message }) => {
                    assert_eq!((f.as_deref(), message.as_str()), (Some(*field), "is read-only"));
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(matches!(parse(serde_json::json!("active")), Err(Error::Validation { field: None, .. })));
        let ok = parse(serde_json::json!({"status": "paused", "credentials": {"api_key_ref": null}})).unwrap();
        assert_eq!(ok.0.len(), 2);
    }

    #[test]
    fn a_new_config_is_parsed_at_the_edge_and_checked_for_its_provider() {
        let new = |v: Value| crate::json::from_value::<NewProviderConfig>(v, "");
        match new(serde_json::json!({"display_name": "x", "created_at": "2026-01-01T00:00:00Z"})) {
            Err(Error::Validation { field, message }) => {
                assert_eq!((field.as_deref(), message.as_str()), (Some("created_at"), "is read-only"))
            }
            other => panic!("{other:?}"),
        }
        let body = new(serde_json::json!({"display_name": "Main", "site_id": "example.com"})).unwrap();
        let input = ConfigInput::new(&Plausible, body.clone()).unwrap();
        assert_eq!((input.status, input.display_name.as_str()), (ProviderStatus::Draft, "Main"));
        match ConfigInput::new(&Umami, body) {
            Err(Error::Validation { field, .. }) => assert_eq!(field.as_deref(), Some("site_id")),
            other => panic!("{:?}", other.map(|i| i.settings)),
        }
    }

    #[test]
    fn the_lifecycle() {
        use ProviderStatus::*;
        let all = [Draft, Active, Paused, Error, Decommissioned];
        let allowed = |f, t| admin_may_move(f, t);
        assert!(allowed(Draft, Active) && allowed(Active, Paused) && allowed(Paused, Active));
        assert!(allowed(Error, Active) && allowed(Error, Paused));
        for s in all {
            assert!(allowed(s, s));
            assert_eq!(allowed(Decommissioned, s), s == Decommissioned, "decommissioned is terminal");
            assert!(allowed(s, Decommissioned));
            if s != Error {
                assert!(!allowed(s, Error), "only the gateway sets error");
            }
            if s != Draft {
                assert!(!allowed(s, Draft), "nothing goes back to draft");
            }
        }
        assert!(!allowed(Draft, Paused));
    }

    #[test]
    fn bodies_are_parsed_with_the_field_named() {
        let p: &dyn AnyProvider = &Plausible;
        let ok = parse_input(
            p,
            serde_json::json!({"display_name": " Main ", "site_id": "example.com",
                               "credentials": {"api_key_ref": "env:PLAUSIBLE_KEY"}}),
            ProviderStatus::Draft,
        )
        .unwrap();
        assert_eq!(ok.display_name, "Main");
        assert_eq!(ok.settings["instance_url"], "https://plausible.io");
        assert_eq!(ok.credentials["api_key_ref"], "env:PLAUSIBLE_KEY");
        let field = |body: Value, provider: &dyn AnyProvider| match parse_input(provider, body, ProviderStatus::Draft) {
            Err(Error::Validation { field, .. }) => field,
            Ok(_) => panic!("accepted"),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            field(
                serde_json::json!({"display_name": "x", "site_id": "example.com", "credentials": {"api_key_ref": "abc123secret"}}),
                p
            ),
            Some("credentials.api_key_ref".into())
        );
        assert_eq!(field(serde_json::json!({"display_name": "x"}), p), Some("site_id".into()));
        assert_eq!(
            field(serde_json::json!({"display_name": "x", "site_id": "a.org", "colour": 1}), p),
            Some("colour".into())
        );
        assert_eq!(field(serde_json::json!({"site_id": "a.org"}), p), Some("display_name".into()));
        assert_eq!(
            field(serde_json::json!({"display_name": "x", "site_id": "a.org", "usage": {}}), p),
            Some("usage".into())
        );
        let u: &dyn AnyProvider = &Umami;
        assert_eq!(field(serde_json::json!({"display_name": "x", "website_id": "nope"}), u), Some("website_id".into()));
        assert_eq!(
            field(
                serde_json::json!({"display_name": "x", "website_id": "5b4b1a52-2f46-4e4a-9a0c-2b7c5a0a1f11", "credentials": {"password_ref": "hunter2"}}),
                u
            ),
            Some("credentials.password_ref".into())
        );
    }
}
