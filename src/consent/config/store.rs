//! Cookie consent configs in the database: create, read, merge-patch, status changes, publish
//! (immutable revisions), delete. Every change writes an audit log row.
//!
//! The config row is the *working copy* an admin edits. What visitors see — the banner, the
//! policy the decision engine applies, the allowed origins — comes from the latest published
//! revision's snapshot, so an edit takes effect only when it is published and every consent
//! record's `revision`/`texts_hash` names exactly what the visitor was shown.
//!
//! One active config per tenant: publishing or re-activating a config *pauses* the one that was
//! active, in the same transaction (so a site switches configs without a moment without a
//! banner). A partial unique index makes two active configs impossible even under races.
//!
//! Fail closed, per config (as for provider configs, see `crate::string_enum`): a row whose
//! stored `status` is not one of its values is *invalid*. It is listed and shown with
//! `"status": "invalid"` and a `problem`, never read with a guessed status and never failing the
//! list of the tenant's other configs. It is never the tenant's active config (only a row whose
//! status reads `active` is), so visitors get what they get without a config: no banner, no
//! optional category granted. It cannot be published or activated: an admin pauses it (a
//! published one) or decommissions or deletes it, and publishes it after that, deliberately.

use chrono::{DateTime, Utc};
use entity::{consent_config_revision as revision, cookie_consent_config as config};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel, ModelTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    guidance,
    patch::ConsentConfigPatch,
    spec::{ConfigSpec, Status},
};
/// Kept here for callers of the store; the one implementation is [`crate::json::merge_patch`].
pub use crate::json::merge_patch;
use crate::{
    audit,
    consent::{Choices, ConsentPolicy},
    db,
    error::{Error, Result},
};

/// A config as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConsentConfigView {
    pub id: Uuid,
    /// `draft`, `active`, `paused`, `decommissioned`, or `invalid` when the stored status cannot
    /// be read (then `problem` says why). `None`: invalid.
    #[serde(serialize_with = "shown_status")]
    #[schema(value_type = String, example = "active")]
    pub status: Option<Status>,
    /// For an `invalid` config: what cannot be read. Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(flatten)]
    pub spec: ConfigSpec,
    /// The last published revision (0: never published).
    pub revision: i32,
    /// Choices made under a revision below this one are asked again.
    pub reconsent_revision: i32,
    pub published_at: Option<DateTime<Utc>>,
    /// The working copy differs from the published revision (publish to show the changes).
    pub unpublished_changes: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Settings that contradict regulator guidance; only in responses to writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

/// The status shown for a config whose stored status cannot be read; never stored.
pub const INVALID: &str = "invalid";

fn shown_status<S: serde::Serializer>(status: &Option<Status>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(status.map_or(INVALID, Status::as_str))
}

impl ConsentConfigView {
    /// Refuses to change an invalid config except to a status that takes it out of use; see the
    /// module docs. `to`: the status the change asks for.
    fn refuse_if_invalid(&self, to: Option<Status>) -> Result<()> {
        let Some(problem) = &self.problem else { return Ok(()) };
        let never_published = self.revision == 0;
        match to {
            Some(Status::Paused | Status::Decommissioned) if !never_published => Ok(()),
            _ if never_published => {
                Err(Error::Conflict(format!("the config is invalid ({problem}) and was never published: delete it")))
            }
            _ => Err(Error::Conflict(format!(
                "the config is invalid ({problem}); it can only be paused or decommissioned, and published after that"
            ))),
        }
    }

    fn with_warnings(mut self) -> Self {
        self.warnings = Some(guidance::warnings(&self.spec));
        self
    }

    /// The view for the audit log (no warnings).
    fn audit_value(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("warnings");
        }
        v
    }
}

/// A published revision: what visitors were shown from `published_at` on.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RevisionView {
    pub config_id: Uuid,
    pub revision: i32,
    pub requires_reconsent: bool,
    pub texts_hash: String,
    pub published_at: DateTime<Utc>,
    pub published_by: Option<String>,
    /// The config as published.
    pub snapshot: Value,
}

impl From<revision::Model> for RevisionView {
    fn from(m: revision::Model) -> Self {
        RevisionView {
            config_id: m.config_id,
            revision: m.revision,
            requires_reconsent: m.requires_reconsent,
            texts_hash: m.texts_hash,
            published_at: m.published_at,
            published_by: m.published_by,
            snapshot: m.snapshot,
        }
    }
}

/// A config as visitors see it: the row (status, revision numbers) and its published snapshot.
#[derive(Clone, Debug)]
pub struct Published {
    pub config: config::Model,
    pub status: Status,
    /// The snapshot of revision `config.revision`.
    pub spec: ConfigSpec,
    pub texts_hash: String,
}

/// Reads the working copy of a stored row. Rows are only written from a valid `ConfigSpec`,
/// so a failure here is a server fault, not a client mistake.
fn spec_of(m: &config::Model) -> Result<ConfigSpec> {
    let v = serde_json::json!({
        "display_name": m.display_name,
        "banner": m.banner,
        "categories": m.categories,
        "texts": m.texts,
        "default_language": m.default_language,
        "privacy_policy_url": m.privacy_policy_url,
        "cookie_policy_url": m.cookie_policy_url,
        "consent_expiry_days": m.consent_expiry_days,
        "geo_targeting_enabled": m.geo_targeting_enabled,
        "consent_required_regions": m.consent_required_regions,
        "respect_do_not_track": m.respect_do_not_track,
        "per_provider_choices": m.per_provider_choices,
        "allowed_origins": m.allowed_origins,
    });
    serde_json::from_value(v)
        .map_err(|e| Error::Internal(anyhow::anyhow!("stored consent config {} is unreadable: {e}", m.id)))
}

fn snapshot_of(r: &revision::Model) -> Result<ConfigSpec> {
    serde_json::from_value(r.snapshot.clone()).map_err(|e| {
        Error::Internal(anyhow::anyhow!(
            "snapshot of consent config {} revision {} is unreadable: {e}",
            r.config_id,
            r.revision
        ))
    })
}

fn status_of(m: &config::Model) -> std::result::Result<Status, crate::string_enum::Unreadable> {
    Status::read("status", &m.status)
}

fn set_spec(a: &mut config::ActiveModel, spec: &ConfigSpec) {
    a.display_name = Set(spec.display_name.clone());
    a.banner = Set(json(&spec.banner));
    a.categories = Set(json(&spec.categories));
    a.texts = Set(json(&spec.texts));
    a.default_language = Set(spec.default_language.to_string());
    a.privacy_policy_url = Set(spec.privacy_policy_url.clone().map(String::from));
    a.cookie_policy_url = Set(spec.cookie_policy_url.clone().map(String::from));
    a.consent_expiry_days = Set(spec.consent_expiry_days as i32);
    a.geo_targeting_enabled = Set(spec.geo_targeting_enabled);
    a.consent_required_regions = Set(json(&spec.consent_required_regions));
    a.respect_do_not_track = Set(spec.respect_do_not_track);
    a.per_provider_choices = Set(spec.per_provider_choices);
    a.allowed_origins = Set(json(&spec.allowed_origins));
}

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

async fn latest_revision(db: &impl ConnectionTrait, m: &config::Model) -> Result<Option<revision::Model>> {
    if m.revision == 0 {
        return Ok(None);
    }
    Ok(revision::Entity::find()
        .filter(revision::Column::ConfigId.eq(m.id))
        .filter(revision::Column::Revision.eq(m.revision))
        .one(db)
        .await?)
}

async fn view(db: &impl ConnectionTrait, m: config::Model) -> Result<ConsentConfigView> {
    let spec = spec_of(&m)?;
    let unpublished_changes = match latest_revision(db, &m).await? {
        Some(r) => snapshot_of(&r)? != spec,
        None => true,
    };
    let (status, problem) = match status_of(&m) {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(ConsentConfigView {
        id: m.id,
        status,
        problem,
        spec,
        revision: m.revision,
        reconsent_revision: m.reconsent_revision,
        published_at: m.published_at,
        unpublished_changes,
        created_at: m.created_at,
        updated_at: m.updated_at,
        warnings: None,
    })
}

async fn find(db: &impl ConnectionTrait, tenant_id: Uuid, id: Uuid) -> Result<config::Model> {
    config::Entity::find_by_id(id).filter(config::Column::TenantId.eq(tenant_id)).one(db).await?.ok_or(Error::NotFound)
}

/// Writes the audit log row of one config change (`before`/`after`: config views).
async fn audit_change(
    txn: &impl ConnectionTrait,
    (tenant_id, actor): (Uuid, &str),
    action: &str,
    id: Uuid,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<()> {
    let entity_id = Some(id.to_string());
    audit::record(
        txn,
        audit::Change { tenant_id, actor, action, entity_type: "cookie_consent_config", entity_id, before, after },
    )
    .await
}

/// Creates a draft of a checked config (see [`super::NewConsentConfig`]).
pub async fn create(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    actor: &str,
    spec: ConfigSpec,
) -> Result<ConsentConfigView> {
    let now = Utc::now();
    let mut a = config::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        status: Set(Status::Draft.as_str().into()),
        revision: Set(0),
        reconsent_revision: Set(0),
        published_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    set_spec(&mut a, &spec);
    let txn = db::begin_tenant_write(db, tenant_id).await?;
    let m = a.insert(&txn).await?;
    let v = view(&txn, m).await?;
    audit_change(&txn, (tenant_id, actor), "cookie_consent_config.create", v.id, None, Some(v.audit_value())).await?;
    crate::cache::generation::bump(&txn, tenant_id).await?;
    txn.commit().await?;
    Ok(v.with_warnings())
}

pub async fn list(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Vec<ConsentConfigView>> {
    let rows = config::Entity::find()
        .filter(config::Column::TenantId.eq(tenant_id))
        .order_by_asc(config::Column::CreatedAt)
        .order_by_asc(config::Column::Id)
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for m in rows {
        out.push(view(db, m).await?);
    }
    Ok(out)
}

pub async fn get(db: &impl ConnectionTrait, tenant_id: Uuid, id: Uuid) -> Result<ConsentConfigView> {
    view(db, find(db, tenant_id, id).await?).await
}

/// Applies a merge patch to the working copy, and/or a status change (`{"status": "paused"}`).
pub async fn patch(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    id: Uuid,
    actor: &str,
    patch: ConsentConfigPatch,
) -> Result<ConsentConfigView> {
    let ConsentConfigPatch { status: new_status, echoed, changes } = patch;
    let txn = db::begin_tenant_write(db, tenant_id).await?;
    let m = find(&txn, tenant_id, id).await?;
    let before = view(&txn, m.clone()).await?;
    if before.status == Some(Status::Decommissioned) {
        return Err(Error::Conflict("this config is decommissioned and can no longer change".into()));
    }
    before.refuse_if_invalid(new_status)?;
    let before_json = serde_json::to_value(&before).unwrap_or_default();
    for (key, v) in echoed {
        if Some(&v) != before_json.get(&key) {
            // An `updated_at` echoed from an earlier read: someone saved in between, and this
            // change was made to what they replaced (optimistic concurrency).
            if key == "updated_at" {
                return Err(Error::Conflict(format!(
                    "the config was changed since it was read (updated_at is now {}); read it again and reapply the change",
                    before_json.get(&key).unwrap_or(&Value::Null)
                )));
            }
            return Err(Error::validation(key, "is read-only"));
        }
    }
    let mut a = m.clone().into_active_model();
    let mut content_changed = false;
    if !changes.is_empty() {
        let mut merged = serde_json::to_value(&before.spec).unwrap_or_default();
        merge_patch(&mut merged, &Value::Object(changes));
        let spec = ConfigSpec::parse(merged)?;
        content_changed = spec != before.spec;
        set_spec(&mut a, &spec);
    }
    let mut action = "cookie_consent_config.update";
    if let Some(to) = new_status.filter(|s| Some(*s) != before.status) {
        if let Some(from) = before.status
            && let Some(why) = from.refuse_change_to(to)
        {
            return Err(Error::Conflict(format!("cannot change status from {from} to {to}: {why}")));
        }
        if to == Status::Active {
            pause_others(&txn, tenant_id, id, actor).await?;
        }
        a.status = Set(to.as_str().into());
        action = match to {
            Status::Active => "cookie_consent_config.activate",
            Status::Paused => "cookie_consent_config.pause",
            _ => "cookie_consent_config.decommission",
        };
    } else if !content_changed {
        crate::cache::generation::bump(&txn, tenant_id).await?;
        txn.commit().await?;
        return Ok(before.with_warnings());
        // (nothing changed: no bump)
    }
    a.updated_at = Set(Utc::now());
    let after = view(&txn, a.update(&txn).await?).await?;
    audit_change(&txn, (tenant_id, actor), action, id, Some(before.audit_value()), Some(after.audit_value())).await?;
    crate::cache::generation::bump(&txn, tenant_id).await?;
    txn.commit().await?;
    Ok(after.with_warnings())
}

/// Pauses whichever other config of the tenant is active (the one-active rule).
async fn pause_others(txn: &impl ConnectionTrait, tenant_id: Uuid, except: Uuid, actor: &str) -> Result<()> {
    let others = config::Entity::find()
        .filter(config::Column::TenantId.eq(tenant_id))
        .filter(config::Column::Status.eq(Status::Active.as_str()))
        .filter(config::Column::Id.ne(except))
        .all(txn)
        .await?;
    for other in others {
        let before = view(txn, other.clone()).await?;
        let mut a = other.into_active_model();
        a.status = Set(Status::Paused.as_str().into());
        a.updated_at = Set(Utc::now());
        let after = view(txn, a.update(txn).await?).await?;
        audit_change(
            txn,
            (tenant_id, actor),
            "cookie_consent_config.pause",
            after.id,
            Some(before.audit_value()),
            Some(after.audit_value()),
        )
        .await?;
    }
    Ok(())
}

/// What `DELETE` did.
pub enum Deleted {
    /// A draft, never shown to anyone: gone.
    Erased,
    /// A published config: records point at it, so it is kept, decommissioned.
    Decommissioned(Box<ConsentConfigView>),
}

pub async fn delete(db: &DatabaseConnection, tenant_id: Uuid, id: Uuid, actor: &str) -> Result<Deleted> {
    let txn = db::begin_tenant_write(db, tenant_id).await?;
    let m = find(&txn, tenant_id, id).await?;
    let before = view(&txn, m.clone()).await?;
    match before.status {
        // An invalid row never published was never shown to anyone either.
        Some(Status::Draft) | None if m.revision == 0 => {
            m.delete(&txn).await?;
            audit_change(
                &txn,
                (tenant_id, actor),
                "cookie_consent_config.delete",
                id,
                Some(before.audit_value()),
                None,
            )
            .await?;
            crate::cache::generation::bump(&txn, tenant_id).await?;
            txn.commit().await?;
            Ok(Deleted::Erased)
        }
        Some(Status::Decommissioned) => Ok(Deleted::Decommissioned(Box::new(before))),
        Some(Status::Draft | Status::Active | Status::Paused) | None => {
            let mut a = m.into_active_model();
            a.status = Set(Status::Decommissioned.as_str().into());
            a.updated_at = Set(Utc::now());
            let after = view(&txn, a.update(&txn).await?).await?;
            audit_change(
                &txn,
                (tenant_id, actor),
                "cookie_consent_config.decommission",
                id,
                Some(before.audit_value()),
                Some(after.audit_value()),
            )
            .await?;
            crate::cache::generation::bump(&txn, tenant_id).await?;
            txn.commit().await?;
            Ok(Deleted::Decommissioned(Box::new(after)))
        }
    }
}

/// Publishes the working copy as a new immutable revision and makes the config active
/// (pausing the previously active one). `requires_reconsent`: visitors who decided under an
/// earlier revision are asked again — for material changes to purposes or providers.
pub async fn publish(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    id: Uuid,
    actor: &str,
    requires_reconsent: bool,
) -> Result<ConsentConfigView> {
    let txn = db::begin_tenant_write(db, tenant_id).await?;
    let m = find(&txn, tenant_id, id).await?;
    let before = view(&txn, m.clone()).await?;
    if before.status == Some(Status::Decommissioned) {
        return Err(Error::Conflict("a decommissioned config cannot be published".into()));
    }
    before.refuse_if_invalid(Some(Status::Active))?;
    let next = m.revision + 1;
    let now = Utc::now();
    revision::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        config_id: Set(id),
        revision: Set(next),
        requires_reconsent: Set(requires_reconsent),
        snapshot: Set(serde_json::to_value(&before.spec).unwrap_or_default()),
        texts_hash: Set(before.spec.texts_hash()),
        published_at: Set(now),
        published_by: Set(Some(actor.to_string())),
    }
    .insert(&txn)
    .await?;
    pause_others(&txn, tenant_id, id, actor).await?;
    let mut a = m.into_active_model();
    a.revision = Set(next);
    if requires_reconsent {
        a.reconsent_revision = Set(next);
    }
    a.status = Set(Status::Active.as_str().into());
    a.published_at = Set(Some(now));
    a.updated_at = Set(now);
    let after = view(&txn, a.update(&txn).await?).await?;
    let mut after_audit = after.audit_value();
    after_audit["requires_reconsent"] = Value::Bool(requires_reconsent);
    after_audit["texts_hash"] = Value::String(before.spec.texts_hash());
    audit_change(
        &txn,
        (tenant_id, actor),
        "cookie_consent_config.publish",
        id,
        Some(before.audit_value()),
        Some(after_audit),
    )
    .await?;
    crate::cache::generation::bump(&txn, tenant_id).await?;
    txn.commit().await?;
    Ok(after.with_warnings())
}

/// Every published revision of a config, newest first.
pub async fn revisions(db: &impl ConnectionTrait, tenant_id: Uuid, id: Uuid) -> Result<Vec<RevisionView>> {
    find(db, tenant_id, id).await?;
    Ok(revision::Entity::find()
        .filter(revision::Column::TenantId.eq(tenant_id))
        .filter(revision::Column::ConfigId.eq(id))
        .order_by_desc(revision::Column::Revision)
        .all(db)
        .await?
        .into_iter()
        .map(RevisionView::from)
        .collect())
}

pub async fn revision(db: &impl ConnectionTrait, tenant_id: Uuid, id: Uuid, number: i32) -> Result<RevisionView> {
    revision::Entity::find()
        .filter(revision::Column::TenantId.eq(tenant_id))
        .filter(revision::Column::ConfigId.eq(id))
        .filter(revision::Column::Revision.eq(number))
        .one(db)
        .await?
        .map(RevisionView::from)
        .ok_or(Error::NotFound)
}

async fn published_of(db: &impl ConnectionTrait, m: config::Model) -> Result<Option<Published>> {
    // The callers select rows by a readable status; should one not read, it is no config (fail
    // closed: no banner, nothing optional granted) rather than an error for every visitor.
    let Ok(status) = status_of(&m) else { return Ok(None) };
    let Some(r) = latest_revision(db, &m).await? else { return Ok(None) };
    Ok(Some(Published { status, spec: snapshot_of(&r)?, texts_hash: r.texts_hash, config: m }))
}

/// The tenant's active config, as published.
pub async fn active(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Option<Published>> {
    let Some(m) = config::Entity::find()
        .filter(config::Column::TenantId.eq(tenant_id))
        .filter(config::Column::Status.eq(Status::Active.as_str()))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    published_of(db, m).await
}

/// The id and published revision of the tenant's active config (one cheap indexed lookup).
pub async fn active_revision(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Option<(Uuid, i32)>> {
    Ok(config::Entity::find()
        .select_only()
        .column(config::Column::Id)
        .column(config::Column::Revision)
        .filter(config::Column::TenantId.eq(tenant_id))
        .filter(config::Column::Status.eq(Status::Active.as_str()))
        .into_tuple::<(Uuid, i32)>()
        .one(db)
        .await?)
}

/// The id of the tenant's active config (one cheap indexed lookup).
pub async fn active_id(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Option<Uuid>> {
    Ok(config::Entity::find()
        .select_only()
        .column(config::Column::Id)
        .filter(config::Column::TenantId.eq(tenant_id))
        .filter(config::Column::Status.eq(Status::Active.as_str()))
        .into_tuple::<Uuid>()
        .one(db)
        .await?)
}

impl Published {
    /// What the decision engine applies: the published snapshot with the row's revision numbers.
    pub fn policy(&self) -> ConsentPolicy {
        let c = &self.spec.categories;
        let enabled = Choices {
            functional: c.functional.enabled,
            analytics: c.analytics.enabled,
            marketing: c.marketing.enabled,
        };
        let defaults = Choices {
            functional: c.functional.default_accepted,
            analytics: c.analytics.default_accepted,
            marketing: c.marketing.default_accepted,
        };
        ConsentPolicy {
            expiry_days: self.spec.consent_expiry_days.clamp(1, 730) as u32,
            geo_targeting_enabled: self.spec.geo_targeting_enabled,
            consent_required_regions: self.spec.consent_required_regions.iter().map(|r| r.to_string()).collect(),
            respect_do_not_track: self.spec.respect_do_not_track,
            enabled,
            default_accepted: defaults.and(enabled),
            revision: self.config.revision,
            reconsent_revision: self.config.reconsent_revision,
        }
    }
}

/// The consent policy of the tenant's active config, for the decision engine; `None` when the
/// tenant has no active config (then nothing optional is granted).
pub async fn policy_for(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Option<ConsentPolicy>> {
    Ok(active(db, tenant_id).await?.map(|p| p.policy()))
}

/// The config visitors of the tenant deal with: the active one, else the most recently paused
/// one. A paused config shows no banner and takes no new consent, but its allowed origins still
/// apply, and visitors can still read their state and withdraw (GDPR Art. 7(3)).
pub async fn current(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Option<Published>> {
    if let Some(p) = active(db, tenant_id).await? {
        return Ok(Some(p));
    }
    let Some(m) = config::Entity::find()
        .filter(config::Column::TenantId.eq(tenant_id))
        .filter(config::Column::Status.eq(Status::Paused.as_str()))
        .order_by_desc(config::Column::UpdatedAt)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    published_of(db, m).await
}

/// The texts hash of a published revision of a config, if it exists.
pub async fn texts_hash_of(db: &impl ConnectionTrait, config_id: Uuid, number: i32) -> Result<Option<String>> {
    Ok(revision::Entity::find()
        .filter(revision::Column::ConfigId.eq(config_id))
        .filter(revision::Column::Revision.eq(number))
        .one(db)
        .await?
        .map(|r| r.texts_hash))
}

/// Whether a config of `tenant_id` other than `config_id` has published a revision numbered
/// `number` (revision numbers are counted per config).
pub async fn another_config_has_revision(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    config_id: Uuid,
    number: i32,
) -> Result<bool> {
    Ok(revision::Entity::find()
        .select_only()
        .column(revision::Column::Id)
        .filter(revision::Column::TenantId.eq(tenant_id))
        .filter(revision::Column::ConfigId.ne(config_id))
        .filter(revision::Column::Revision.eq(number))
        .into_tuple::<Uuid>()
        .one(db)
        .await?
        .is_some())
}

/// The banner config JSON (contract, "Banner") of the tenant's active config and the build it is
/// rendered with; `None` when the tenant has none (banner.js answers 404 then). Only enabled
/// categories are included. `providers`: the tenant's provider configs (the offer, when the
/// config has `per_provider_choices`, and whether feature flags are on).
pub async fn active_banner_config(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    providers: &[entity::provider_config::Model],
) -> Result<Option<(Value, crate::banner::Variant)>> {
    let Some(p) = active(db, tenant_id).await? else { return Ok(None) };
    Ok(Some(banner_config(&p.spec, (p.config.id, p.config.revision, p.config.reconsent_revision), providers)))
}

/// The banner config and build of `spec` as the config `(id, revision, reconsent_revision)` with
/// the tenant's provider configs: the served banner (the published snapshot) and the admin
/// pages' preview (a draft) alike.
pub fn banner_config(
    spec: &ConfigSpec,
    (id, revision, reconsent_revision): (Uuid, i32, i32),
    providers: &[entity::provider_config::Model],
) -> (Value, crate::banner::Variant) {
    let mut config = crate::banner::browser_config(spec, id, i64::from(revision), i64::from(reconsent_revision));
    let variant = crate::banner::Variant {
        per_provider: spec.per_provider_choices,
        flags: crate::banner::feature_flags(providers),
    };
    if variant.per_provider {
        crate::banner::add_providers(&mut config, &crate::consent::offer::offered(providers));
    }
    (config, variant)
}
