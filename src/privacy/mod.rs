//! Privacy operations (issue 15): what the gateway holds about one visitor, erased
//! ([`erase`], GDPR Art. 17 and 19) or exported ([`dsar`], Art. 15), and how long anything is
//! kept at all ([`retention`], Art. 5(1)(e)).
//!
//! **What links a stored row to a visitor** (docs/glossary.md): an event's `anonymous_id` or
//! `user_id` (kept only when some decision granted full identity), a pending delivery's
//! `consent_lookup_id` (the id their consent is looked up under), and consent records by
//! `visitor_hash` (the tenant-salted hash of the id). An event stored unlinkable carries none of
//! these once its deliveries ended, so nothing finds it — by design, nothing ties it to anyone.

pub mod dsar;
pub mod erase;
pub mod retention;

use std::collections::BTreeSet;

use entity::{analytics_event, delivery};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use crate::{consent::records::VisitorId, error::Result};

/// The ids of every event linked to the visitor, oldest first (event ids are UUIDv7).
pub async fn linked_event_ids(db: &impl ConnectionTrait, tenant_id: Uuid, visitor: &VisitorId) -> Result<Vec<Uuid>> {
    let v = visitor.as_str();
    let mut ids: BTreeSet<Uuid> = analytics_event::Entity::find()
        .select_only()
        .column(analytics_event::Column::Id)
        .filter(analytics_event::Column::TenantId.eq(tenant_id))
        .filter(
            Condition::any().add(analytics_event::Column::AnonymousId.eq(v)).add(analytics_event::Column::UserId.eq(v)),
        )
        .into_tuple::<Uuid>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    ids.extend(
        delivery::Entity::find()
            .select_only()
            .column(delivery::Column::EventId)
            .filter(delivery::Column::TenantId.eq(tenant_id))
            .filter(delivery::Column::ConsentLookupId.eq(v))
            .into_tuple::<Uuid>()
            .all(db)
            .await?,
    );
    Ok(ids.into_iter().collect())
}

/// Event ids are handled in chunks of this many (an `IN (…)` list stays small).
pub(crate) const CHUNK: usize = 200;
