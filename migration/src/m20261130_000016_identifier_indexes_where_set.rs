//! The indexes that find a visitor's rows by identifier hold only the rows that have one:
//! `ix_analytics_event_user_id` the events with a `user_id` (most page views have none, and each
//! one still added an entry to this index), `ix_delivery_consent_lookup_id` the deliveries that
//! still hold a consent-lookup id (only pending ones do: it is erased when a delivery ends, and
//! the entry then left the index's `NULL`s for good). Every query that reads them asks for one
//! identifier (`= ?`), which implies `IS NOT NULL`, so SQLite and PostgreSQL use them as before
//! (`privacy::linked_event_ids`; a test reads the plan). Issue 14: one B-tree insertion less per
//! event on SQLite's one writer, and an index as small as the outbox's backlog.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (index, table, columns, the column that must be set).
const INDEXES: [(&str, &str, &str, &str); 2] = [
    ("ix_analytics_event_user_id", "analytics_event", "tenant_id, user_id", "user_id"),
    ("ix_delivery_consent_lookup_id", "delivery", "tenant_id, consent_lookup_id", "consent_lookup_id"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for (name, table, cols, set) in INDEXES {
            // One call, so one connection: another of SQLite's pool, its schema not yet reloaded,
            // would still see the dropped index and refuse to create it ("already exists").
            db.execute_unprepared(&format!(
                "DROP INDEX {name}; CREATE INDEX {name} ON {table} ({cols}) WHERE {set} IS NOT NULL"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        for (name, table, cols, _) in INDEXES {
            db.execute_unprepared(&format!("DROP INDEX {name}; CREATE INDEX {name} ON {table} ({cols})")).await?;
        }
        Ok(())
    }
}
