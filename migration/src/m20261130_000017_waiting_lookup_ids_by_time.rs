//! A pending delivery's `consent_lookup_id` (the visitor id its consent is looked up under, kept
//! only until the delivery ends) is found through an index ordered by time instead of by visitor:
//! `ix_delivery_lookup_waiting` (`tenant_id, created_at, consent_lookup_id, event_id`, the rows
//! that hold one) replaces `ix_delivery_consent_lookup_id` (`tenant_id, consent_lookup_id`).
//!
//! Issue 14: ordered by visitor, every delivery's entry went to a page of its own visitor — one
//! random index page per delivery in each ingest commit, written to the WAL and again by the
//! checkpoint, and the same again when the delivery ended and its id was erased. Measured on
//! SQLite's writer: 27–28 KB written per event with it, 22 KB without (docs/scaling.md). Ordered
//! by time, the entries of a commit share the index's last pages, and a drain erases them
//! oldest first.
//!
//! What it costs: a visitor's waiting deliveries (an erasure, an access request) are found by
//! reading the tenant's waiting deliveries from this index alone (`consent_lookup_id = ?` checked
//! in it, nothing looked up in the table but the matches) — the outbox's backlog, not the
//! delivery table: a few entries when the outbox keeps up, a scan of ~50 bytes an entry during a
//! provider's outage.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One call, so one connection (see migration 000016).
        m.get_connection()
            .execute_unprepared(
                "DROP INDEX ix_delivery_consent_lookup_id; \
                 CREATE INDEX ix_delivery_lookup_waiting ON delivery (tenant_id, created_at, consent_lookup_id, event_id) \
                 WHERE consent_lookup_id IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.get_connection()
            .execute_unprepared(
                "DROP INDEX ix_delivery_lookup_waiting; \
                 CREATE INDEX ix_delivery_consent_lookup_id ON delivery (tenant_id, consent_lookup_id) \
                 WHERE consent_lookup_id IS NOT NULL",
            )
            .await?;
        Ok(())
    }
}
