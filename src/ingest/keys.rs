//! Ingest keys: what a site presents to post events.
//!
//! - A *public* key (`pk_…`) is embedded in pages, so it is no secret: it is only valid from the
//!   origins it lists (checked against the browser's `Origin`, which a page cannot forge) and is
//!   kept readable so an admin can look it up again.
//! - A *secret* key (`sk_…`) is for servers, sent as `Authorization: Bearer`, shown once and
//!   stored only as a SHA-256 hash. Servers may pass the visitor's agent, IP, DNT/GPC and country.

use chrono::{DateTime, Duration, Utc};
use entity::ingest_key;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    crypto,
    error::{Error, Result},
    origins::OriginPattern,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    /// Browsers: `?key=` or `X-Ingest-Key`, checked against `allowed_origins`.
    Public,
    /// Servers: `Authorization: Bearer sk_…`.
    Secret,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Public => "public",
            KeyKind::Secret => "secret",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            KeyKind::Public => "pk_",
            KeyKind::Secret => "sk_",
        }
    }
}

/// A new key as an admin asks for it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub kind: KeyKind,
    /// 1–100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
    /// Required (at least one) for public keys; not allowed for secret keys.
    #[serde(default)]
    pub allowed_origins: Vec<OriginPattern>,
    /// Requests per minute, 1–100,000. Absent: unlimited.
    #[schema(minimum = 1, maximum = 100_000)]
    pub rate_limit_per_minute: Option<i32>,
}

/// A key as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeyView {
    pub id: Uuid,
    pub kind: KeyKind,
    pub name: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    pub allowed_origins: Vec<String>,
    pub rate_limit_per_minute: Option<i32>,
    /// Public keys: always (they are published in pages anyway). Secret keys: only in the response
    /// that created them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ingest_key::Model> for KeyView {
    fn from(m: ingest_key::Model) -> Self {
        KeyView {
            id: m.id,
            kind: if m.kind == "secret" { KeyKind::Secret } else { KeyKind::Public },
            name: m.name,
            prefix: m.prefix,
            allowed_origins: serde_json::from_value(m.allowed_origins).unwrap_or_default(),
            rate_limit_per_minute: m.rate_limit_per_minute,
            key: m.public_key,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// Creates a key; the view carries the key itself. Run it in a transaction: it also marks the
/// tenant's cached configuration as changed.
pub async fn create(db: &impl ConnectionTrait, tenant_id: Uuid, new: NewKey) -> Result<KeyView> {
    let name = new.name.trim();
    if !(1..=100).contains(&name.chars().count()) {
        return Err(Error::validation("name", "must be 1 to 100 characters long"));
    }
    match new.kind {
        KeyKind::Public if new.allowed_origins.is_empty() => {
            return Err(Error::validation(
                "allowed_origins",
                "a public key needs at least one origin (it is only valid from those pages)",
            ));
        }
        KeyKind::Secret if !new.allowed_origins.is_empty() => {
            return Err(Error::validation(
                "allowed_origins",
                "secret keys are for servers and are never accepted from browsers; leave this empty",
            ));
        }
        _ => {}
    }
    if new.allowed_origins.len() > 100 {
        return Err(Error::validation("allowed_origins", "at most 100 origins"));
    }
    if let Some(r) = new.rate_limit_per_minute
        && !(1..=100_000).contains(&r)
    {
        return Err(Error::validation("rate_limit_per_minute", "must be between 1 and 100000"));
    }
    let bytes = if new.kind == KeyKind::Public { 16 } else { 24 };
    let key = format!("{}{}", new.kind.prefix(), crypto::random_hex(bytes));
    let origins: Vec<String> = new.allowed_origins.iter().map(ToString::to_string).collect();
    let model = ingest_key::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        kind: Set(new.kind.as_str().into()),
        name: Set(name.to_string()),
        prefix: Set(key[..11].to_string()),
        key_hash: Set(crypto::sha256_hex(&key)),
        public_key: Set((new.kind == KeyKind::Public).then(|| key.clone())),
        allowed_origins: Set(serde_json::json!(origins)),
        rate_limit_per_minute: Set(new.rate_limit_per_minute),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    crate::cache::generation::bump(db, tenant_id).await?;
    let mut view = KeyView::from(model);
    view.key = Some(key);
    Ok(view)
}

pub async fn list(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Vec<KeyView>> {
    let rows = ingest_key::Entity::find()
        .filter(ingest_key::Column::TenantId.eq(tenant_id))
        .order_by_asc(ingest_key::Column::CreatedAt)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(KeyView::from).collect())
}

/// Revokes a key at once. Revoking twice keeps the first time. Run it in a transaction: it also
/// marks the tenant's cached configuration as changed.
pub async fn revoke(db: &impl ConnectionTrait, tenant_id: Uuid, id: Uuid) -> Result<KeyView> {
    let key = ingest_key::Entity::find_by_id(id)
        .filter(ingest_key::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound)?;
    if key.revoked_at.is_some() {
        return Ok(key.into());
    }
    let mut active = key.into_active_model();
    active.revoked_at = Set(Some(Utc::now()));
    let revoked = active.update(db).await?;
    crate::cache::generation::bump(db, tenant_id).await?;
    Ok(revoked.into())
}

/// The stored hash of a presented key, or `None` for something that cannot be a key (so that
/// nothing is looked up for it).
pub fn hash_of_presented(presented: &str) -> Option<String> {
    if presented.len() > 128 || !(presented.starts_with("pk_") || presented.starts_with("sk_")) {
        return None;
    }
    Some(crypto::sha256_hex(presented))
}

/// The tenant's live (unrevoked) keys, for the config cache.
pub async fn live(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Vec<ingest_key::Model>> {
    Ok(ingest_key::Entity::find()
        .filter(ingest_key::Column::TenantId.eq(tenant_id))
        .filter(ingest_key::Column::RevokedAt.is_null())
        .all(db)
        .await?)
}

/// Whether a use at `now` is worth writing to `last_used_at`, last written at `last`: at most
/// once a minute (a write per event would double the ingest cost).
pub fn use_worth_recording(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last.is_none_or(|t| now - t > Duration::seconds(60))
}

pub async fn record_use(db: &impl ConnectionTrait, id: Uuid, now: DateTime<Utc>) -> Result<()> {
    ingest_key::Entity::update_many()
        .col_expr(ingest_key::Column::LastUsedAt, Expr::value(now))
        .filter(ingest_key::Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

pub fn kind_of(key: &ingest_key::Model) -> KeyKind {
    if key.kind == "secret" { KeyKind::Secret } else { KeyKind::Public }
}

/// Whether a public key may be used from `origin`.
pub fn origin_allowed(key: &ingest_key::Model, origin: &str) -> bool {
    let patterns: Vec<OriginPattern> = serde_json::from_value(key.allowed_origins.clone()).unwrap_or_default();
    patterns.iter().any(|p| p.matches(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_key_shaped_input_is_looked_up() {
        let pk = format!("pk_{}", "a".repeat(32));
        assert_eq!(hash_of_presented(&pk), Some(crypto::sha256_hex(&pk)));
        assert!(hash_of_presented("sk_abc").is_some());
        for junk in ["", "abc", "Bearer sk_x", "PK_abc", &format!("sk_{}", "a".repeat(126))] {
            assert_eq!(hash_of_presented(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_use_is_written_at_most_once_a_minute() {
        let t0 = Utc::now();
        for (last, now, due) in [
            (None, t0, true),
            (Some(t0), t0, false),
            (Some(t0), t0 + Duration::seconds(60), false),
            (Some(t0), t0 + Duration::seconds(61), true),
            // A clock that went back is not a reason to write.
            (Some(t0), t0 - Duration::seconds(5), false),
        ] {
            assert_eq!(use_worth_recording(last, now), due, "{last:?} → {now}");
        }
    }
}
