//! SQLite only: `consent_record_changes`, one row counting the updates and deletions of
//! `consent_record` rows (an erasure, retention), kept by triggers — so that the ingest writer,
//! which remembers the visitors' latest records between its batches (issue 14), knows within its
//! write transaction when anything it remembers may have changed other than by a new record (new
//! records it finds by their rowid). A trigger rather than each writer bumping the count: no code
//! path that changes a record, today's or a later one, can forget it.
//!
//! PostgreSQL: nothing (its writers read the records in each batch).

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        // One call, so one connection (see migration 000016).
        m.get_connection()
            .execute_unprepared(
                "CREATE TABLE consent_record_changes (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL); \
                 INSERT INTO consent_record_changes (id, n) VALUES (1, 0); \
                 CREATE TRIGGER consent_record_updated AFTER UPDATE ON consent_record \
                 BEGIN UPDATE consent_record_changes SET n = n + 1 WHERE id = 1; END; \
                 CREATE TRIGGER consent_record_deleted AFTER DELETE ON consent_record \
                 BEGIN UPDATE consent_record_changes SET n = n + 1 WHERE id = 1; END;",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        m.get_connection()
            .execute_unprepared(
                "DROP TRIGGER consent_record_updated; DROP TRIGGER consent_record_deleted; \
                 DROP TABLE consent_record_changes;",
            )
            .await?;
        Ok(())
    }
}
