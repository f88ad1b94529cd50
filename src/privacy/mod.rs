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

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use entity::{analytics_event, delivery, provider_config};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Select};
use uuid::Uuid;

use self::erase::Recipient;
use crate::{consent::records::VisitorId, error::Result, outbox::DeliveryStatus};

/// The ids of every event linked to the visitor, oldest first (event ids are UUIDv7).
pub async fn linked_event_ids(db: &impl ConnectionTrait, tenant_id: Uuid, visitor: &VisitorId) -> Result<Vec<Uuid>> {
    let v = visitor.as_str();
    let mut ids = BTreeSet::new();
    for column in IDENTIFIERS {
        ids.extend(events_holding(tenant_id, column, v).into_tuple::<Uuid>().all(db).await?);
    }
    ids.extend(events_waiting_for(tenant_id, v).into_tuple::<Uuid>().all(db).await?);
    Ok(ids.into_iter().collect())
}

/// The event columns that link an event to a visitor.
const IDENTIFIERS: [analytics_event::Column; 2] =
    [analytics_event::Column::AnonymousId, analytics_event::Column::UserId];

/// The events that hold `v` in `column`. One query per column: SQLite's planner reads
/// `anonymous_id = ? OR user_id = ?` through one index's `tenant_id` alone — every event of the
/// tenant, for one visitor's erasure.
fn events_holding(tenant_id: Uuid, column: analytics_event::Column, v: &str) -> Select<analytics_event::Entity> {
    analytics_event::Entity::find()
        .select_only()
        .column(analytics_event::Column::Id)
        .filter(analytics_event::Column::TenantId.eq(tenant_id))
        .filter(column.eq(v))
}

/// The events with a delivery still waiting under `v`'s consent (stored unlinkable, their
/// pending deliveries hold the id until they end): the tenant's waiting deliveries, read from
/// `ix_delivery_lookup_waiting` alone, which is ordered by time so that ingest appends to it
/// (migration 000017) — the outbox's backlog is read, not the delivery table.
fn events_waiting_for(tenant_id: Uuid, v: &str) -> Select<delivery::Entity> {
    delivery::Entity::find()
        .select_only()
        .column(delivery::Column::EventId)
        .filter(delivery::Column::TenantId.eq(tenant_id))
        .filter(delivery::Column::ConsentLookupId.eq(v))
}

/// Event ids are handled in chunks of this many (an `IN (…)` list stays small).
pub(crate) const CHUNK: usize = 200;

/// The deliveries of a visitor's events, counted.
#[derive(Clone, Debug, Default)]
pub struct DeliveryTally {
    /// Deliveries by status (`pending`, `delivered`, `dropped`, `dead`).
    pub by_status: BTreeMap<String, u64>,
    /// Provider configs that already received (or accepted and discarded) the events, by config.
    pub received_by: Vec<Recipient>,
}

/// Counts the deliveries of `events` and names the configs that received them (GDPR Art. 19:
/// the erasure report and the admin pages' visitor view say the same).
pub async fn tally_deliveries(db: &impl ConnectionTrait, tenant_id: Uuid, events: &[Uuid]) -> Result<DeliveryTally> {
    let mut tally = DeliveryTally::default();
    let mut received: BTreeMap<Uuid, Recipient> = BTreeMap::new();
    for chunk in events.chunks(CHUNK) {
        let rows: Vec<(Uuid, String, String, Option<DateTime<Utc>>)> = delivery::Entity::find()
            .select_only()
            .columns([delivery::Column::ConfigId, delivery::Column::Provider, delivery::Column::Status])
            .column(delivery::Column::DeliveredAt)
            .filter(delivery::Column::TenantId.eq(tenant_id))
            .filter(delivery::Column::EventId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        for (config_id, provider, status, delivered_at) in rows {
            if status == DeliveryStatus::Delivered.as_str() || status == DeliveryStatus::Dropped.as_str() {
                let r = received.entry(config_id).or_insert_with(|| Recipient {
                    config_id,
                    provider,
                    display_name: None,
                    deliveries: 0,
                    last_delivered_at: None,
                });
                r.deliveries += 1;
                r.last_delivered_at = r.last_delivered_at.max(delivered_at);
            }
            *tally.by_status.entry(status).or_default() += 1;
        }
    }
    for config in provider_config::Entity::find()
        .filter(provider_config::Column::TenantId.eq(tenant_id))
        .filter(provider_config::Column::Id.is_in(received.keys().copied()))
        .all(db)
        .await?
    {
        if let Some(r) = received.get_mut(&config.id) {
            r.display_name = Some(config.display_name);
        }
    }
    tally.received_by = received.into_values().collect();
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, QueryTrait};

    use super::*;

    /// A visitor's rows are found through the identifier indexes — the tenant's other events are
    /// not read — which hold only the rows that have an identifier (migration 000016): asking for
    /// one id implies it is set.
    #[tokio::test]
    async fn a_visitors_rows_are_found_by_index() {
        let plan = |q: String| crate::outbox::stats::tests::sqlite_plan(q);
        for (column, index) in IDENTIFIERS.into_iter().zip(["anonymous_id", "user_id"]) {
            let events = plan(events_holding(Uuid::nil(), column, "v-1").build(DbBackend::Sqlite).to_string()).await;
            assert_eq!(
                events,
                format!("SEARCH analytics_event USING INDEX ix_analytics_event_{index} (tenant_id=? AND {index}=?)")
            );
        }
        // The waiting deliveries' ids by time (migration 000017): the tenant's waiting deliveries
        // read from the index alone, the visitor's id checked in it.
        let waiting = plan(events_waiting_for(Uuid::nil(), "v-1").build(DbBackend::Sqlite).to_string()).await;
        assert_eq!(waiting, "SEARCH delivery USING COVERING INDEX ix_delivery_lookup_waiting (tenant_id=?)");
    }
}
