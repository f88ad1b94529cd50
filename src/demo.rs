//! `serve --demo`: a `demo` tenant a newcomer can look at straight away — a published consent
//! config (the banner's sample config) and a public ingest key, both allowing the gateway's own
//! origin, and the demo page at `/demo`, whose banner records consent and posts page views. Idempotent: running it again reuses the tenant and its config, and issues a
//! fresh admin token (the old demo token is revoked: tokens are stored as hashes and cannot be
//! shown twice).

use entity::ingest_key;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
use secrecy::SecretString;
use serde_json::Value;

use crate::{
    app::AppState,
    consent::config::store,
    error::{Error, Result},
    ingest::keys::{self, KeyKind, KeyView, NewKey},
    origins::OriginPattern,
    tenants::{self, TenantSlug},
    tokens::{self, Role},
};

pub const DEMO_TENANT: &str = "demo";
const DEMO_TOKEN_NAME: &str = "demo (serve --demo)";
const ACTOR: &str = "cli:demo";
/// The banner's typical config, also used by its size budget and browser tests.
const SAMPLE_CONFIG: &str = include_str!("../banner/sample-config.json");
const DEMO_TEMPLATE: &str = include_str!("../templates/demo.html.tera");

pub struct Demo {
    pub tenant: entity::tenant::Model,
    pub admin_token: SecretString,
}

/// Creates or refreshes the demo tenant. `origin` is where the demo page is served (the
/// gateway's own public URL), so the banner on it may record consent.
pub async fn seed(db: &DatabaseConnection, origin: &str) -> Result<Demo> {
    let slug = TenantSlug::parse(DEMO_TENANT)?;
    let tenant = match tenants::find(db, DEMO_TENANT).await? {
        Some(t) => t,
        None => tenants::create(db, &slug, "Demo site").await?,
    };
    for old in tokens::list(db, tenant.id).await? {
        if old.name == DEMO_TOKEN_NAME && old.revoked_at.is_none() {
            tokens::revoke(db, tenant.id, old.id).await?;
        }
    }
    let (_, admin_token) = tokens::create(db, tenant.id, Role::Admin, DEMO_TOKEN_NAME).await?;
    ensure_consent_config(db, tenant.id, origin).await?;
    ensure_public_key(db, tenant.id, origin).await?;
    Ok(Demo { tenant, admin_token })
}

/// Publishes the sample config on first run; later runs only add `origin` to the allowed origins
/// when the gateway now runs elsewhere, and otherwise leave the admin's edits alone.
async fn ensure_consent_config(db: &DatabaseConnection, tenant_id: uuid::Uuid, origin: &str) -> Result<()> {
    let internal = |e: serde_json::Error| Error::Internal(e.into());
    match store::current(db, tenant_id).await? {
        None => {
            let mut body: Value = serde_json::from_str(SAMPLE_CONFIG).map_err(internal)?;
            body["display_name"] = "Demo site".into();
            body["allowed_origins"] = serde_json::json!([origin]);
            let created = store::create(db, tenant_id, ACTOR, crate::consent::config::ConfigSpec::parse(body)?).await?;
            store::publish(db, tenant_id, created.id, ACTOR, false).await?;
        }
        Some(current) => {
            let origins = serde_json::to_value(&current.spec.allowed_origins).map_err(internal)?;
            let listed = origins.as_array().is_some_and(|list| list.iter().any(|o| o.as_str() == Some(origin)));
            if !listed {
                let mut list = origins.as_array().cloned().unwrap_or_default();
                list.push(origin.into());
                let mut changes = serde_json::Map::new();
                changes.insert("allowed_origins".into(), list.into());
                let patch = crate::consent::config::ConsentConfigPatch::changes(changes);
                store::patch(db, tenant_id, current.config.id, ACTOR, patch).await?;
                store::publish(db, tenant_id, current.config.id, ACTOR, false).await?;
            }
        }
    }
    Ok(())
}

/// A live public ingest key allowing `origin`, for the demo page's tracker.
async fn ensure_public_key(db: &DatabaseConnection, tenant_id: uuid::Uuid, origin: &str) -> Result<()> {
    let keys = keys::list(db, tenant_id).await?;
    let allows = |k: &KeyView| {
        k.revoked_at.is_none() && k.kind == KeyKind::Public && k.allowed_origins.iter().any(|o| o == origin)
    };
    if !keys.iter().any(allows) {
        let origin = OriginPattern::parse(origin).map_err(|e| Error::Internal(anyhow::anyhow!(e)))?;
        let new = NewKey {
            kind: KeyKind::Public,
            name: "demo page".into(),
            allowed_origins: vec![origin],
            rate_limit_per_minute: None,
        };
        keys::create(db, tenant_id, new).await?;
    }
    Ok(())
}

/// The demo page for the `demo` tenant, with its newest public ingest key for the tracker;
/// `None` when there is no demo tenant.
pub async fn page(state: &AppState) -> Result<Option<String>> {
    let Some(tenant) = tenants::find(&state.db, DEMO_TENANT).await? else { return Ok(None) };
    let key = ingest_key::Entity::find()
        .filter(ingest_key::Column::TenantId.eq(tenant.id))
        .filter(ingest_key::Column::Kind.eq("public"))
        .filter(ingest_key::Column::RevokedAt.is_null())
        .order_by_desc(ingest_key::Column::CreatedAt)
        .one(&state.db)
        .await?
        .and_then(|k| k.public_key)
        .unwrap_or_default();
    let mut ctx = tera::Context::new();
    ctx.insert("tenant", &tenant.slug);
    ctx.insert("public_key", &key);
    ctx.insert("base_url", &*state.public_url);
    let html = tera::Tera::one_off(DEMO_TEMPLATE, &ctx, true).map_err(|e| Error::Internal(e.into()))?;
    Ok(Some(html))
}
