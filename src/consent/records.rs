//! Consent records: the append-only proof of each visitor's decisions (GDPR Art. 7(1)). Only
//! this module writes them. A change of mind or a withdrawal is a new record; the only update
//! ever made is erasure of the visitor id (Art. 17), which the hash chain survives because it
//! covers the salted `visitor_hash` instead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use entity::{consent_record, tenant};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Select, SqlErr, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{Action, Category, Choices, ProviderChoices, RecordedChoice, chain};
use crate::{
    crypto::sha256_hex,
    db,
    error::{Error, Result},
};

/// A visitor id: a UUID (what the banner and the server issue) or an opaque token of up to 64
/// safe characters (`A–Z a–z 0–9 . _ ~ -`) for sites that bring their own ids. It ends up in a
/// cookie, a URL path and CSV exports, so nothing else is accepted. UUIDs are kept lower-case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String)]
pub struct VisitorId(String);

parsed_string!(VisitorId, newtype);

impl VisitorId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(uuid) = lower_case_uuid(s) {
            return Ok(VisitorId(uuid));
        }
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"._~-".contains(&b);
        if (1..=64).contains(&s.len()) && s.bytes().all(safe) {
            Ok(VisitorId(s.to_string()))
        } else {
            Err("must be a UUID or 1-64 characters of letters, digits and . _ ~ -".into())
        }
    }

    /// A fresh random (v4) visitor id.
    pub fn generate() -> Self {
        VisitorId(Uuid::new_v4().hyphenated().to_string())
    }
}

/// `s` in lower case when it is a hyphenated UUID (how visitor ids, and the client ids of events,
/// are kept: the same visitor in either case).
pub(crate) fn lower_case_uuid(s: &str) -> Option<String> {
    Uuid::parse_str(s).ok().filter(|_| s.len() == 36).map(|u| u.hyphenated().to_string())
}

/// The pseudonym a visitor's records are chained and found under: `sha256_hex(salt ":" id)`
/// with the tenant's secret salt, so the same id in two tenants gives unrelated hashes and a
/// leaked export cannot be joined back to ids without the salt.
pub fn visitor_hash(tenant: &tenant::Model, visitor: &VisitorId) -> String {
    sha256_hex(format!("{}:{}", tenant.salt, visitor.as_str()))
}

/// A decision to record. `created_at` is set when it is appended.
#[derive(Clone, Debug)]
pub struct NewRecord {
    pub visitor: VisitorId,
    pub config_id: Uuid,
    pub revision: i32,
    pub texts_hash: String,
    pub language: String,
    pub choices: Choices,
    pub action: Action,
    pub source: String,
    pub dnt: bool,
    pub gpc: bool,
    pub country: Option<String>,
    pub ip_truncated: Option<String>,
    pub user_agent: Option<String>,
    pub expiry_days: u32,
    /// Per-provider choices, when the config offers them (`consent::offer`).
    pub provider_choices: Option<ProviderChoices>,
}

/// Attempts at appending before giving up. With the per-tenant write lock the first attempt
/// normally succeeds; the unique `(tenant_id, seq)` index is the backstop that makes a fork
/// impossible even if two appends raced anyway.
const APPEND_ATTEMPTS: u32 = 8;

/// Appends a record to the tenant's chain: read the head, link to it, insert — under the
/// tenant's write lock, retried on a `(tenant_id, seq)` conflict.
pub async fn append(db: &DatabaseConnection, tenant: &tenant::Model, new: &NewRecord) -> Result<consent_record::Model> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_append(db, tenant, new).await {
            Err(Error::Db(e)) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                if attempt >= APPEND_ATTEMPTS {
                    return Err(Error::Internal(anyhow::anyhow!(
                        "consent chain of tenant {} stayed contended after {attempt} attempts",
                        tenant.id
                    )));
                }
                let jitter = u64::from(crate::crypto::random_hex(1).as_bytes()[0] % 16);
                tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt) + jitter)).await;
            }
            other => return other,
        }
    }
}

async fn try_append(db: &DatabaseConnection, tenant: &tenant::Model, new: &NewRecord) -> Result<consent_record::Model> {
    let txn = db::begin_tenant_write(db, tenant.id).await?;
    let head = consent_record::Entity::find()
        .filter(consent_record::Column::TenantId.eq(tenant.id))
        .order_by_desc(consent_record::Column::Seq)
        .one(&txn)
        .await?;
    // Microseconds: what both databases store, so the hash recomputes from the stored row.
    let now = micros(Utc::now());
    let mut m = consent_record::Model {
        id: Uuid::now_v7(),
        tenant_id: tenant.id,
        seq: head.as_ref().map_or(1, |h| h.seq + 1),
        visitor_id: Some(new.visitor.as_str().to_string()),
        visitor_hash: visitor_hash(tenant, &new.visitor),
        config_id: new.config_id,
        revision: new.revision,
        texts_hash: new.texts_hash.clone(),
        language: new.language.clone(),
        choices: serde_json::to_value(new.choices).unwrap_or_default(),
        action: new.action.as_str().to_string(),
        source: new.source.clone(),
        dnt: new.dnt,
        gpc: new.gpc,
        country: new.country.clone(),
        ip_truncated: new.ip_truncated.clone(),
        user_agent: new.user_agent.clone(),
        created_at: now,
        expires_at: now + chrono::Duration::days(i64::from(new.expiry_days)),
        prev_hash: head.map_or_else(|| chain::GENESIS.to_string(), |h| h.hash),
        hash: String::new(),
        provider_choices: new.provider_choices.as_ref().map(|p| serde_json::to_value(p).unwrap_or_default()),
        canonical_version: chain::CANONICAL_VERSION,
    };
    m.hash = chain::link_hash(&m);
    let stored = consent_record::ActiveModel::from(m).insert(&txn).await?;
    txn.commit().await?;
    Ok(stored)
}

/// `t` to the microsecond: what both databases store, so a hash over it recomputes from the row.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound;
    t.duration_trunc(chrono::Duration::microseconds(1)).unwrap_or(t)
}

/// What the decision engine needs of a stored record.
///
/// A record whose choices or action cannot be read counts as a refusal of everything: the
/// decision fails closed (a refusal also stands where defaults would apply), and one damaged
/// row does not turn the visitor's every event into a 500. The record itself stays readable
/// as stored through the auditor's API.
pub fn recorded_choice(m: &consent_record::Model) -> Result<RecordedChoice> {
    let choices = serde_json::from_value::<Choices>(m.choices.clone());
    let action = Action::read("action", &m.action);
    let providers = m.provider_choices.clone().map(serde_json::from_value::<ProviderChoices>).transpose();
    let (choices, action, providers) = match (choices, action, providers) {
        (Ok(c), Ok(a), Ok(p)) => (c, a, p),
        (c, a, p) => {
            tracing::warn!(record = %m.id, choices_ok = c.is_ok(), provider_choices_ok = p.is_ok(),
                action = ?a.err().map(|e| e.to_string()), "consent record cannot be read; it counts as a refusal");
            (Choices::none(), Action::RejectAll, None)
        }
    };
    Ok(RecordedChoice {
        choices,
        action,
        revision: m.revision,
        created_at: m.created_at,
        expires_at: m.expires_at,
        other_config: false,
        dnt: m.dnt,
        gpc: m.gpc,
        providers,
    })
}

/// The visitor's latest record, or `None`.
///
/// A record the visitor made under *another* config than the tenant's active one is marked
/// `other_config`: a different config shows different texts and purposes, so the choice was not
/// informed about this one and the visitor is asked again (the banner does the same) — while a
/// refusal in it still stands. Erased records (visitor id removed on request) do not count: the
/// visitor asked to be forgotten, so they are asked afresh.
pub async fn latest_for_visitor(
    db: &impl ConnectionTrait,
    tenant: &tenant::Model,
    visitor_id: &str,
) -> Result<Option<RecordedChoice>> {
    let Some(m) = latest_model(db, tenant, visitor_id).await? else { return Ok(None) };
    let active = super::config::store::active_id(db, tenant.id).await?;
    Ok(Some(under(&m, active)?))
}

/// [`latest_for_visitor`] when the id of the tenant's active config is known (`active`, from
/// the config cache): one read, the record's.
pub async fn latest_under(
    db: &impl ConnectionTrait,
    tenant: &tenant::Model,
    visitor_id: &str,
    active: Option<Uuid>,
) -> Result<Option<RecordedChoice>> {
    let Some(m) = latest_model(db, tenant, visitor_id).await? else { return Ok(None) };
    Ok(Some(under(&m, active)?))
}

/// `m` as the decision engine reads it, under the tenant's `active` config (a record made under
/// another config is `other_config`).
pub fn under(m: &consent_record::Model, active: Option<Uuid>) -> Result<RecordedChoice> {
    Ok(under_config(recorded_choice(m)?, m.config_id, active))
}

/// A record's choice (made under `config`), read under the tenant's `active` config.
pub fn under_config(mut view: RecordedChoice, config: Uuid, active: Option<Uuid>) -> RecordedChoice {
    view.other_config = active.is_some_and(|a| a != config);
    view
}

/// The valid ones of `visitor_ids` by their salted hash (what records are stored under).
pub(crate) fn by_hash<'a>(
    tenant: &tenant::Model,
    visitor_ids: impl IntoIterator<Item = &'a str>,
) -> std::collections::HashMap<String, String> {
    visitor_ids
        .into_iter()
        .filter_map(|id| VisitorId::parse(id).ok().map(|v| (visitor_hash(tenant, &v), id.to_string())))
        .collect()
}

/// Whether a record made at `created_at` may have been unseen by the ingest decision of an event
/// received at `received_at` (on `backend`), and the event must be decided again before it is
/// sent. A record's time is taken before its transaction commits, and on PostgreSQL the ingest
/// writer does not wait for a consent write: a withdrawal committing just after the writer read
/// the visitor's records can carry a time before the event's, so there records up to
/// [`UNSEEN_MARGIN`] older than the event count (deciding again what was already seen decides the
/// same). On SQLite the record's time is taken under the one write lock the ingest writer holds
/// while it reads: a record older than the event was committed before the writer read.
pub fn maybe_unseen(created_at: DateTime<Utc>, received_at: DateTime<Utc>, backend: sea_orm::DbBackend) -> bool {
    match backend {
        sea_orm::DbBackend::Sqlite => created_at > received_at,
        _ => created_at > received_at - UNSEEN_MARGIN,
    }
}

/// Longer than a consent write takes from its `created_at` to its commit, short enough that the
/// events right after a visitor's decision (each decided again) stay few. A commit slower than
/// this could still slip through.
pub const UNSEEN_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// When each of `visitor_ids` (of `tenant`) last recorded a decision: the newest `created_at` of
/// their records not erased, in one query per 500 visitors instead of one per visitor (the
/// delivery worker asks for a round's visitors at once). Visitors without a record, or whose id
/// is not a valid visitor id, are absent.
pub async fn latest_times<'a>(
    db: &impl ConnectionTrait,
    tenant: &tenant::Model,
    visitor_ids: impl IntoIterator<Item = &'a str>,
) -> Result<std::collections::HashMap<String, DateTime<Utc>>> {
    let by_hash = by_hash(tenant, visitor_ids);
    let hashes: Vec<String> = by_hash.keys().cloned().collect();
    let mut out = std::collections::HashMap::new();
    for part in hashes.chunks(500) {
        let rows: Vec<(String, Option<DateTime<Utc>>)> = consent_record::Entity::find()
            .select_only()
            .column(consent_record::Column::VisitorHash)
            .column_as(sea_orm::ExprTrait::max(Expr::col(consent_record::Column::CreatedAt)), "latest")
            .filter(consent_record::Column::TenantId.eq(tenant.id))
            .filter(consent_record::Column::VisitorHash.is_in(part.iter().cloned()))
            .filter(consent_record::Column::VisitorId.is_not_null())
            .group_by(consent_record::Column::VisitorHash)
            .into_tuple()
            .all(db)
            .await?;
        for (hash, latest) in rows {
            if let (Some(id), Some(at)) = (by_hash.get(&hash), latest) {
                out.insert(id.clone(), at);
            }
        }
    }
    Ok(out)
}

/// The visitor's latest (not erased) record as the stored row, under whichever config.
pub async fn latest_model(
    db: &impl ConnectionTrait,
    tenant: &tenant::Model,
    visitor_id: &str,
) -> Result<Option<consent_record::Model>> {
    let Ok(visitor) = VisitorId::parse(visitor_id) else { return Ok(None) };
    let Some(m) = consent_record::Entity::find()
        .filter(consent_record::Column::TenantId.eq(tenant.id))
        .filter(consent_record::Column::VisitorHash.eq(visitor_hash(tenant, &visitor)))
        .filter(consent_record::Column::VisitorId.is_not_null())
        .order_by_desc(consent_record::Column::Seq)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(m))
}

/// The latest record (not erased) of each of `visitor_ids` of `tenant`, by visitor id, as
/// [`latest_model`] finds one visitor's — in one query per 512 visitors (the ingest writer asks
/// for its whole batch at once, inside its transaction). Ids that are not valid visitor ids, and
/// visitors without a record, are absent.
pub async fn latest_models<'a>(
    db: &impl ConnectionTrait,
    tenant: &tenant::Model,
    visitor_ids: impl IntoIterator<Item = &'a str>,
) -> Result<std::collections::HashMap<String, consent_record::Model>> {
    let by_hash = by_hash(tenant, visitor_ids);
    let hashes: Vec<String> = by_hash.keys().cloned().collect();
    let mut out = std::collections::HashMap::with_capacity(hashes.len());
    for part in hashes.chunks(512) {
        let newest = sea_orm::sea_query::Query::select()
            .expr(sea_orm::ExprTrait::max(Expr::col(consent_record::Column::Seq)))
            .from(consent_record::Entity)
            .and_where(consent_record::Column::TenantId.eq(tenant.id))
            .and_where(consent_record::Column::VisitorHash.is_in(db::padded_for_in(part.to_vec())))
            .and_where(consent_record::Column::VisitorId.is_not_null())
            .group_by_col(consent_record::Column::VisitorHash)
            .to_owned();
        let rows = consent_record::Entity::find()
            .filter(consent_record::Column::TenantId.eq(tenant.id))
            .filter(consent_record::Column::Seq.in_subquery(newest))
            .all(db)
            .await?;
        for m in rows {
            if let Some(id) = by_hash.get(&m.visitor_hash) {
                out.insert(id.clone(), m);
            }
        }
    }
    Ok(out)
}

/// A record as auditors see it. Without `visitor_id`, `prev_hash` and `hash`, this is exactly
/// what the chain hashes (see [`chain`]).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RecordItem {
    pub id: Uuid,
    pub seq: i64,
    /// `null` once erased.
    pub visitor_id: Option<String>,
    pub visitor_hash: String,
    pub config_id: Uuid,
    pub revision: i32,
    pub texts_hash: String,
    pub language: String,
    #[schema(value_type = Object)]
    pub choices: Value,
    pub action: String,
    pub source: String,
    pub signals: SignalsItem,
    pub country: Option<String>,
    pub ip_truncated: Option<String>,
    pub user_agent: Option<String>,
    /// RFC 3339 UTC with six fractional digits, as hashed.
    #[serde(serialize_with = "chain::serialize_timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "chain::serialize_timestamp")]
    pub expires_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
    /// The form the chain hashes this record in (docs/consent-model.md): `2` for records written
    /// since per-provider choices; absent for the older ones (version 1).
    #[serde(skip_serializing_if = "is_version_1")]
    pub canonical_version: i32,
    /// The visitor's per-provider choices (`{"offer", "providers": {config id: allowed}}`),
    /// when they were offered them; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ProviderChoices>)]
    pub provider_choices: Option<Value>,
}

fn is_version_1(v: &i32) -> bool {
    *v == 1
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SignalsItem {
    pub dnt: bool,
    pub gpc: bool,
}

impl From<consent_record::Model> for RecordItem {
    fn from(m: consent_record::Model) -> Self {
        RecordItem {
            id: m.id,
            seq: m.seq,
            visitor_id: m.visitor_id,
            visitor_hash: m.visitor_hash,
            config_id: m.config_id,
            revision: m.revision,
            texts_hash: m.texts_hash,
            language: m.language,
            choices: m.choices,
            action: m.action,
            source: m.source,
            signals: SignalsItem { dnt: m.dnt, gpc: m.gpc },
            country: m.country,
            ip_truncated: m.ip_truncated,
            user_agent: m.user_agent,
            created_at: m.created_at,
            expires_at: m.expires_at,
            prev_hash: m.prev_hash,
            hash: m.hash,
            canonical_version: m.canonical_version,
            // A version 1 record has none (and hashes without them).
            provider_choices: if m.canonical_version == 1 { None } else { m.provider_choices },
        }
    }
}

/// Which records an auditor asks for. Every given condition must hold.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordFilter {
    /// Records of this visitor id (erased records no longer carry it; use `visitor_hash`).
    #[param(value_type = Option<String>)]
    pub visitor_id: Option<VisitorId>,
    /// Records of this pseudonym, erased ones included.
    pub visitor_hash: Option<String>,
    /// Created at or after (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    #[param(value_type = Option<String>)]
    pub action: Option<Action>,
    /// The choice recorded for a category, e.g. `analytics=true`.
    pub functional: Option<bool>,
    pub analytics: Option<bool>,
    pub marketing: Option<bool>,
    pub revision: Option<i32>,
    pub config_id: Option<Uuid>,
}

impl RecordFilter {
    fn apply(
        &self,
        tenant: &tenant::Model,
        backend: DbBackend,
        mut q: Select<consent_record::Entity>,
    ) -> Select<consent_record::Entity> {
        use consent_record::Column as C;
        q = q.filter(C::TenantId.eq(tenant.id));
        if let Some(v) = &self.visitor_id {
            q = q.filter(C::VisitorHash.eq(visitor_hash(tenant, v))).filter(C::VisitorId.eq(v.as_str()));
        }
        if let Some(h) = &self.visitor_hash {
            q = q.filter(C::VisitorHash.eq(h.to_ascii_lowercase()));
        }
        if let Some(t) = self.from {
            q = q.filter(C::CreatedAt.gte(t));
        }
        if let Some(t) = self.to {
            q = q.filter(C::CreatedAt.lt(t));
        }
        if let Some(a) = self.action {
            q = q.filter(C::Action.eq(a.as_str()));
        }
        if let Some(r) = self.revision {
            q = q.filter(C::Revision.eq(r));
        }
        if let Some(c) = self.config_id {
            q = q.filter(C::ConfigId.eq(c));
        }
        for (category, wanted) in [
            (Category::Functional, self.functional),
            (Category::Analytics, self.analytics),
            (Category::Marketing, self.marketing),
        ] {
            if let Some(wanted) = wanted {
                // The category name comes from the enum, never from the request. A JSON boolean
                // only, on both backends: a malformed choice (the string "true", the number 1)
                // matches neither `true` nor `false`, as the dashboard counts it (granting nothing).
                let name = category.as_str();
                let sql = match backend {
                    DbBackend::Postgres => format!("(choices -> '{name}') = '{wanted}'::jsonb"),
                    _ => format!("json_type(choices, '$.{name}') = '{wanted}'"),
                };
                q = q.filter(Expr::cust(sql));
            }
        }
        q
    }
}

/// Up to `limit` records matching `filter` with `seq > after`, in chain order.
pub async fn page(
    db: &impl ConnectionTrait,
    tenant: &tenant::Model,
    filter: &RecordFilter,
    after: i64,
    limit: u64,
) -> Result<Vec<consent_record::Model>> {
    let q = filter.apply(tenant, db.get_database_backend(), consent_record::Entity::find());
    Ok(q.filter(consent_record::Column::Seq.gt(after))
        .order_by_asc(consent_record::Column::Seq)
        .limit(limit)
        .all(db)
        .await?)
}

/// Erases a visitor id from all of the tenant's records (GDPR Art. 17), within the caller's
/// transaction (which writes the audit entry too, or erases the whole visitor: `privacy::erase`).
/// The records stay — they are the proof of what was consented to, under the pseudonymous
/// `visitor_hash` — and the chain still verifies. Returns how many records were changed.
pub async fn erase_visitor_in(db: &impl ConnectionTrait, tenant: &tenant::Model, visitor: &VisitorId) -> Result<u64> {
    let res = consent_record::Entity::update_many()
        .col_expr(consent_record::Column::VisitorId, Expr::value(Option::<String>::None))
        .filter(consent_record::Column::TenantId.eq(tenant.id))
        .filter(consent_record::Column::VisitorHash.eq(visitor_hash(tenant, visitor)))
        .filter(consent_record::Column::VisitorId.eq(visitor.as_str()))
        .exec(db)
        .await?;
    Ok(res.rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitor_ids() {
        let u = "3F2504E0-4F89-41D3-9A0C-0305E82C3301";
        assert_eq!(VisitorId::parse(u).unwrap().as_str(), u.to_ascii_lowercase());
        for ok in ["abc", "a.b_c~d-e", &"x".repeat(64), "3f2504e0-4f89-41d3-9a0c-0305e82c3301"] {
            assert!(VisitorId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", &"x".repeat(65), "a b", "a/b", "<script>", "a;b", "ü", "a\nb", "=cmd"] {
            assert!(VisitorId::parse(bad).is_err(), "{bad}");
        }
        assert_ne!(VisitorId::generate(), VisitorId::generate());
        assert_eq!(Uuid::parse_str(VisitorId::generate().as_str()).unwrap().get_version_num(), 4);
    }

    #[test]
    fn visitor_hashes_are_salted_per_tenant() {
        let t = |salt: &str| tenant::Model {
            id: Uuid::nil(),
            slug: "t".into(),
            name: "t".into(),
            salt: salt.into(),
            created_at: Utc::now(),
        };
        let v = VisitorId::parse("visitor-1").unwrap();
        assert_eq!(visitor_hash(&t("a"), &v), visitor_hash(&t("a"), &v));
        assert_ne!(visitor_hash(&t("a"), &v), visitor_hash(&t("b"), &v));
        assert_ne!(visitor_hash(&t("a"), &v), sha256_hex("visitor-1"));
    }
}
