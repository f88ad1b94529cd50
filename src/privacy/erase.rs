//! Erasure of a whole visitor (GDPR Art. 17): their events, the forwarding decisions and
//! deliveries of those events (pending ones with the consent-lookup id, user agent, full IP and
//! PostHog's daily `pseudonymous_id` on them) are deleted, and their id is removed from their
//! consent records, which stay as the proof of consent under the salted `visitor_hash` — the hash
//! chain covers that hash, not the id, so it still verifies. The report names the provider configs
//! that already received their data, so the controller can pass the request on (Art. 19).

use chrono::{DateTime, Utc};
use entity::{analytics_event, delivery, tenant};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{CHUNK, linked_event_ids, tally_deliveries};
use crate::{
    audit,
    consent::records::{self, VisitorId},
    error::Result,
    ingest::decisions,
    outbox::DeliveryStatus,
};

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Erasure {
    /// The pseudonym the consent records remain under (the proof stays; the id is gone).
    pub visitor_hash: String,
    /// Events deleted.
    pub events: u64,
    /// Forwarding decisions deleted (those of the deleted events).
    pub forwarding_decisions: u64,
    /// Deliveries deleted, whatever their status.
    pub deliveries: u64,
    /// Of those, deliveries that were still waiting to be sent: they never will be.
    pub pending_deliveries: u64,
    /// Consent records whose visitor id was removed.
    pub consent_records: u64,
    /// Provider configs that already received (or accepted and discarded) the visitor's events:
    /// pass the erasure request on to them (GDPR Art. 19).
    pub received_by: Vec<Recipient>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Recipient {
    pub config_id: Uuid,
    pub provider: String,
    /// `null` when the config was deleted since.
    pub display_name: Option<String>,
    /// Deliveries of the visitor's events that reached it.
    pub deliveries: u64,
    pub last_delivered_at: Option<DateTime<Utc>>,
}

/// Erases everything held about `visitor` in one transaction, and writes the audit entry under
/// the visitor's hash (the raw id there would undo the erasure).
pub async fn erase(
    db: &DatabaseConnection,
    tenant: &tenant::Model,
    visitor: &VisitorId,
    actor: &str,
) -> Result<Erasure> {
    let txn = crate::db::begin_write(db).await?;
    let events = linked_event_ids(&txn, tenant.id, visitor).await?;
    let mut report = Erasure {
        visitor_hash: records::visitor_hash(tenant, visitor),
        events: 0,
        forwarding_decisions: 0,
        deliveries: 0,
        pending_deliveries: 0,
        consent_records: 0,
        received_by: Vec::new(),
    };
    let deliveries = tally_deliveries(&txn, tenant.id, &events).await?;
    report.pending_deliveries = deliveries.by_status.get(DeliveryStatus::Pending.as_str()).copied().unwrap_or(0);
    report.received_by = deliveries.received_by;
    for chunk in events.chunks(CHUNK) {
        report.deliveries += delivery::Entity::delete_many()
            .filter(delivery::Column::TenantId.eq(tenant.id))
            .filter(delivery::Column::EventId.is_in(chunk.iter().copied()))
            .exec(&txn)
            .await?
            .rows_affected;
        let events = || {
            analytics_event::Entity::find()
                .filter(analytics_event::Column::TenantId.eq(tenant.id))
                .filter(analytics_event::Column::Id.is_in(chunk.iter().copied()))
        };
        report.forwarding_decisions += decisions::count(&txn, events()).await?;
        report.events += analytics_event::Entity::delete_many()
            .filter(analytics_event::Column::TenantId.eq(tenant.id))
            .filter(analytics_event::Column::Id.is_in(chunk.iter().copied()))
            .exec(&txn)
            .await?
            .rows_affected;
    }
    report.consent_records = records::erase_visitor_in(&txn, tenant, visitor).await?;
    audit::record(
        &txn,
        audit::Change {
            tenant_id: tenant.id,
            actor,
            action: "visitor.erase",
            entity_type: "visitor",
            entity_id: Some(report.visitor_hash.clone()),
            before: None,
            after: Some(serde_json::to_value(&report).unwrap_or_default()),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(report)
}
