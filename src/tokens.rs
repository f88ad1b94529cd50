//! API tokens for webmasters (`admin`) and auditors (`auditor`). Only a SHA-256 hash is stored:
//! the token is shown once, at creation, and cannot be recovered.

use chrono::{Duration, Utc};
use entity::{api_token, tenant};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set, sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    crypto,
    error::{Error, Result},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and changes everything of its tenant.
    Admin,
    /// Reads consent records, decisions, deliveries and the audit log; changes nothing.
    Auditor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

const PREFIX: &str = "cg_";

/// A token as the API shows it: never the token itself, never its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub created_at: chrono::DateTime<Utc>,
    pub last_used_at: Option<chrono::DateTime<Utc>>,
    pub revoked_at: Option<chrono::DateTime<Utc>>,
}

impl From<api_token::Model> for TokenView {
    fn from(m: api_token::Model) -> Self {
        TokenView {
            id: m.id,
            name: m.name,
            role: Role::parse(&m.role).unwrap_or(Role::Auditor),
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// The holder of an admin or auditor API token: the token and its tenant. (The other kind of
/// caller, a site posting events with an ingest key, is an `ingest::event::Sender`.)
#[derive(Clone, Debug)]
pub struct TokenHolder {
    pub tenant: tenant::Model,
    pub token_id: Uuid,
    pub role: Role,
}

impl TokenHolder {
    /// How this caller is named in the audit log.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }
}

pub async fn create(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    role: Role,
    name: &str,
) -> Result<(api_token::Model, SecretString)> {
    let token = format!("{PREFIX}{}", crypto::random_hex(32));
    let model = api_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        role: Set(role.as_str().into()),
        name: Set(name.to_string()),
        token_hash: Set(crypto::sha256_hex(&token)),
        created_at: Set(Utc::now()),
        last_used_at: Set(None),
        revoked_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok((model, SecretString::from(token)))
}

pub async fn list(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Vec<api_token::Model>> {
    Ok(api_token::Entity::find()
        .filter(api_token::Column::TenantId.eq(tenant_id))
        .order_by_asc(api_token::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Revokes a token of the tenant. Revoking twice is harmless and keeps the first time.
pub async fn revoke(db: &impl ConnectionTrait, tenant_id: Uuid, id: Uuid) -> Result<api_token::Model> {
    let token = api_token::Entity::find_by_id(id)
        .filter(api_token::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound)?;
    if token.revoked_at.is_some() {
        return Ok(token);
    }
    let mut active: api_token::ActiveModel = token.into();
    active.revoked_at = Set(Some(Utc::now()));
    Ok(active.update(db).await?)
}

/// Finds the live token behind a bearer value. `None` for an unknown, malformed or revoked token.
pub async fn authenticate(db: &impl ConnectionTrait, bearer: &SecretString) -> Result<Option<TokenHolder>> {
    let value = bearer.expose_secret();
    if !value.starts_with(PREFIX) || value.len() > 128 {
        return Ok(None);
    }
    let Some(token) = api_token::Entity::find()
        .filter(api_token::Column::TokenHash.eq(crypto::sha256_hex(value)))
        .filter(api_token::Column::RevokedAt.is_null())
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let Some(role) = Role::parse(&token.role) else { return Ok(None) };
    let tenant = crate::tenants::get(db, token.tenant_id).await?;
    // Record use at most once a minute: a write per request would make every read a write.
    let now = Utc::now();
    if token.last_used_at.is_none_or(|t| now - t > Duration::seconds(60)) {
        api_token::Entity::update_many()
            .col_expr(api_token::Column::LastUsedAt, Expr::value(now))
            .filter(api_token::Column::Id.eq(token.id))
            .exec(db)
            .await?;
    }
    Ok(Some(TokenHolder { tenant, token_id: token.id, role }))
}

/// The live token with this id, as its holder: how an admin-pages session, which keeps the token
/// id and never the token, re-checks on every request that the token is not revoked.
pub async fn holder(db: &impl ConnectionTrait, id: Uuid) -> Result<Option<TokenHolder>> {
    let Some(token) = api_token::Entity::find_by_id(id).filter(api_token::Column::RevokedAt.is_null()).one(db).await?
    else {
        return Ok(None);
    };
    let Some(role) = Role::parse(&token.role) else { return Ok(None) };
    let tenant = crate::tenants::get(db, token.tenant_id).await?;
    Ok(Some(TokenHolder { tenant, token_id: token.id, role }))
}
