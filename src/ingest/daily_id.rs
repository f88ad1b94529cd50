//! The cookieless daily id: what PostHog gets as `distinct_id` for a visitor whose consent does not
//! allow identifiers (`$process_person_profile: false`). Counting stays possible within a day —
//! one visitor's events that day share the id — but no visitor can be followed across days or
//! tenants, and nothing about the id leads back to the visitor.
//!
//! `id = "cgd_" + hex(HMAC-SHA256(salt, tenant ‖ day ‖ visitor))[..32]`, where
//! - `visitor` is the consent-lookup id (`visitor_id`, see docs/glossary.md); an event without
//!   one (a server's) counts as a visitor of its own (`event:<event id>`);
//! - `day` is the UTC day the gateway *received* the event (a late event gets the id of the day
//!   it arrived: the salt of the day it happened may be gone);
//! - `salt` is 32 random bytes for (tenant, day), made on the tenant's first such event of the
//!   day and kept in the `daily_salt` table **for that day only**: the rows of past days are
//!   deleted when any tenant's first salt of a new day is made, and by a sweep at every UTC
//!   midnight (`workers::salt_sweep`). Once a
//!   day's salt is gone, nobody — operator, database backup or attacker with the server's secrets
//!   — can compute that day's id of a visitor again, so ids of different days cannot be joined.
//!   (A salt *derived* from a server secret would have been simpler and could never be deleted:
//!   whoever holds the secret could recompute every past day's ids, which is exactly the link
//!   this must not allow.) The table, not process memory, so that every gateway instance and a
//!   restart mid-day give a visitor the same id.
//!
//! The id is computed at ingest and stored on the delivery (`delivery.pseudonymous_id`, erased
//! when the delivery ends): a retry days later needs no salt, and the event itself may hold no
//! visitor id at all. The salt never appears in a response, a log or an error.

use chrono::{DateTime, NaiveDate, Utc};
use entity::daily_salt;
use hmac::{Hmac, KeyInit, Mac};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::Result;

/// The prefix that marks a distinct id as a cookieless daily id (never a site's own id).
pub const PREFIX: &str = "cgd_";

/// A tenant's salt for one day. `Debug` never shows it.
pub struct Salt(SecretString);

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt([REDACTED])")
    }
}

impl Salt {
    pub fn random() -> Self {
        Salt(SecretString::from(crate::crypto::random_hex(32)))
    }
}

/// The day key of an instant: `YYYY-MM-DD`, UTC.
pub fn day_of(at: DateTime<Utc>) -> NaiveDate {
    at.date_naive()
}

/// The visitor's id for that tenant and day — pure.
pub fn daily_id(salt: &Salt, tenant: Uuid, visitor: &str, day: NaiveDate) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(salt.0.expose_secret().as_bytes()).expect("HMAC takes any key");
    // Fixed-length fields first, the visitor (any length) last: no two inputs collide.
    mac.update(tenant.as_bytes());
    mac.update(day.format("%Y-%m-%d").to_string().as_bytes());
    mac.update(visitor.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!("{PREFIX}{}", hex::encode(&digest[..16]))
}

/// The tenant's salt for the day of `now`, made (and the past days' salts deleted) on first use.
pub async fn salt_for(db: &impl ConnectionTrait, tenant: Uuid, now: DateTime<Utc>) -> Result<Salt> {
    let day = day_of(now).format("%Y-%m-%d").to_string();
    if let Some(s) = find(db, tenant, &day).await? {
        return Ok(s);
    }
    forget_past_days(db, now).await?;
    let row = daily_salt::ActiveModel {
        tenant_id: Set(tenant),
        day: Set(day.clone()),
        salt: Set(Salt::random().0.expose_secret().to_string()),
        created_at: Set(now),
    };
    // Another request (or instance) may have made it first: theirs is kept, and used.
    daily_salt::Entity::insert(row)
        .on_conflict_do_nothing_on([daily_salt::Column::TenantId, daily_salt::Column::Day])
        .exec_without_returning(db)
        .await?;
    find(db, tenant, &day).await?.ok_or_else(|| anyhow::anyhow!("the daily salt was not stored").into())
}

async fn find(db: &impl ConnectionTrait, tenant: Uuid, day: &str) -> Result<Option<Salt>> {
    Ok(daily_salt::Entity::find()
        .filter(daily_salt::Column::TenantId.eq(tenant))
        .filter(daily_salt::Column::Day.eq(day))
        .one(db)
        .await?
        .map(|r| Salt(SecretString::from(r.salt))))
}

/// Deletes every tenant's salts of days before `now`'s. Returns how many went.
pub async fn forget_past_days(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64> {
    let today = day_of(now).format("%Y-%m-%d").to_string();
    Ok(daily_salt::Entity::delete_many().filter(daily_salt::Column::Day.lt(today)).exec(db).await?.rows_affected)
}

/// The visitor's id for the tenant today (the salt made if needed).
pub async fn today(db: &impl ConnectionTrait, tenant: Uuid, visitor: &str, now: DateTime<Utc>) -> Result<String> {
    let salt = salt_for(db, tenant, now).await?;
    Ok(daily_id(&salt, tenant, visitor, day_of(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn ids_differ_across_days_tenants_salts_and_visitors_and_never_show_the_visitor() {
        let salt = Salt::random();
        let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
        let v = "3f2c9a1e-visitor";
        let base = daily_id(&salt, t1, v, day("2026-11-30"));
        assert_eq!(base, daily_id(&salt, t1, v, day("2026-11-30")), "stable within the day");
        let others = [
            daily_id(&salt, t1, v, day("2026-12-01")),
            daily_id(&salt, t2, v, day("2026-11-30")),
            daily_id(&Salt::random(), t1, v, day("2026-11-30")),
            daily_id(&salt, t1, "another-visitor", day("2026-11-30")),
        ];
        for o in &others {
            assert_ne!(&base, o);
        }
        for id in std::iter::once(&base).chain(&others) {
            assert!(id.starts_with(PREFIX) && id.len() == PREFIX.len() + 32, "{id}");
            assert_ne!(id, v);
            assert!(!id.contains(v) && !id.contains("3f2c9a"), "{id}");
        }
    }

    #[test]
    fn the_salt_is_never_printed() {
        let salt = Salt::random();
        let secret = salt.0.expose_secret().to_string();
        assert!(!format!("{salt:?}").contains(&secret));
        let id = daily_id(&salt, Uuid::nil(), "v", day("2026-11-30"));
        assert!(!id.contains(&secret[..8]));
    }
}
