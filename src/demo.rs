//! `serve --demo`: a `demo` tenant a newcomer can look at straight away. Idempotent: running it
//! again reuses the tenant and issues a fresh admin token (the old demo token is revoked, since
//! tokens are stored as hashes and cannot be shown twice).

use sea_orm::DatabaseConnection;
use secrecy::SecretString;

use crate::{
    error::Result,
    tenants::{self, TenantSlug},
    tokens::{self, Role},
};

pub const DEMO_TENANT: &str = "demo";
const DEMO_TOKEN_NAME: &str = "demo (serve --demo)";

pub struct Demo {
    pub tenant: entity::tenant::Model,
    pub admin_token: SecretString,
}

pub async fn seed(db: &DatabaseConnection) -> Result<Demo> {
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
    Ok(Demo { tenant, admin_token })
}
