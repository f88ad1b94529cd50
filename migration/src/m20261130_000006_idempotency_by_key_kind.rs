//! Idempotency keys scoped by the kind of ingest key that posted the event (issue 14): a public
//! key is published in every page, so anyone can post with it; if its keys shared one namespace
//! with the secret key's, a page could pre-claim the key a site's server will send later
//! (`order-1001`) and that server's event would be answered as a "repeat" and never stored.
//!
//! - `analytics_event.key_kind`: `public` or `secret`, the kind of key that posted the event.
//!   Events stored before this migration keep `NULL` ("not recorded"): the gateway cannot tell
//!   who sent them, so a repeat from either kind still finds them (see `ingest::find_by_key`).
//! - The unique index the insert-time duplicate check relies on becomes
//!   `(tenant_id, idempotency_key, key_kind)`. `NULL`s are distinct in a unique index on both
//!   databases, so the old rows (already unique per tenant and key) never block a new one.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AnalyticsEvent {
    Table,
    TenantId,
    IdempotencyKey,
    KeyKind,
}

const OLD_INDEX: &str = "ux_analytics_event_idempotency";
const NEW_INDEX: &str = "ux_analytics_event_idempotency_kind";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter().table(AnalyticsEvent::Table).add_column(string_null(AnalyticsEvent::KeyKind)).to_owned(),
        )
        .await?;
        m.drop_index(Index::drop().name(OLD_INDEX).table(AnalyticsEvent::Table).to_owned()).await?;
        m.create_index(
            Index::create()
                .name(NEW_INDEX)
                .table(AnalyticsEvent::Table)
                .col(AnalyticsEvent::TenantId)
                .col(AnalyticsEvent::IdempotencyKey)
                .col(AnalyticsEvent::KeyKind)
                .unique()
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Going back to one namespace per tenant: where both kinds used a key, the public key's
        // event loses it (the secret key's is the one a server will retry).
        let db = m.get_connection();
        db.execute_unprepared(
            "UPDATE analytics_event SET idempotency_key = NULL \
             WHERE key_kind = 'public' AND idempotency_key IS NOT NULL AND EXISTS ( \
               SELECT 1 FROM analytics_event s WHERE s.tenant_id = analytics_event.tenant_id \
                 AND s.idempotency_key = analytics_event.idempotency_key AND (s.key_kind IS NULL OR s.key_kind <> 'public'))",
        )
        .await?;
        m.drop_index(Index::drop().name(NEW_INDEX).table(AnalyticsEvent::Table).to_owned()).await?;
        m.create_index(
            Index::create()
                .name(OLD_INDEX)
                .table(AnalyticsEvent::Table)
                .col(AnalyticsEvent::TenantId)
                .col(AnalyticsEvent::IdempotencyKey)
                .unique()
                .to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table(AnalyticsEvent::Table).drop_column(AnalyticsEvent::KeyKind).to_owned())
            .await?;
        Ok(())
    }
}
