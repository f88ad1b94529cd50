//! Tenants: the unit of isolation. Everything else belongs to exactly one tenant.

use std::fmt;

use chrono::Utc;
use entity::tenant;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};

/// A tenant slug: 3–63 characters of lowercase ASCII letters, digits and `-`, starting with a
/// letter or digit and not ending with `-` (so it is safe in URLs, DNS labels and file names).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct TenantSlug(String);

impl TenantSlug {
    pub fn parse(s: &str) -> Result<Self> {
        let ok_len = (3..=63).contains(&s.len());
        let ok_chars = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let ok_ends = !s.starts_with('-') && !s.ends_with('-');
        if ok_len && ok_chars && ok_ends {
            Ok(Self(s.to_string()))
        } else {
            Err(Error::validation(
                "slug",
                "must be 3-63 characters of lowercase letters, digits and '-', not starting or ending with '-'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub async fn create(db: &impl ConnectionTrait, slug: &TenantSlug, name: &str) -> Result<tenant::Model> {
    if find(db, slug.as_str()).await?.is_some() {
        return Err(Error::Conflict(format!("tenant {slug} already exists")));
    }
    let model = tenant::ActiveModel {
        id: Set(Uuid::now_v7()),
        slug: Set(slug.to_string()),
        name: Set(if name.trim().is_empty() { slug.to_string() } else { name.trim().to_string() }),
        salt: Set(crate::crypto::random_hex(32)),
        created_at: Set(Utc::now()),
    };
    Ok(model.insert(db).await?)
}

pub async fn find(db: &impl ConnectionTrait, slug: &str) -> Result<Option<tenant::Model>> {
    Ok(tenant::Entity::find().filter(tenant::Column::Slug.eq(slug)).one(db).await?)
}

pub async fn get(db: &impl ConnectionTrait, id: Uuid) -> Result<tenant::Model> {
    tenant::Entity::find_by_id(id).one(db).await?.ok_or(Error::NotFound)
}

#[cfg(test)]
mod tests {
    use super::TenantSlug;

    #[test]
    fn slugs() {
        for ok in ["demo", "acme-shop", "a1b", "x".repeat(63).as_str()] {
            assert!(TenantSlug::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ab", "Demo", "-abc", "abc-", "a_b", "a.b", "ünï", "x".repeat(64).as_str()] {
            assert!(TenantSlug::parse(bad).is_err(), "{bad}");
        }
    }
}
