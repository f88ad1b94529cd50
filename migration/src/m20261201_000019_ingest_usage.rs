//! `ingest_usage`: the consent denials PostgreSQL's ingest writers count, one row per provider
//! config and writer shard, instead of `provider_config.events_denied_by_consent` (issue 14).
//!
//! Each batch added its denials to the config's own row; two writers whose batches both had
//! denials for a config — under load, every batch — then took turns on that row's lock, each
//! waiting for the other's commit (and its fsync), and so did the outbox's outcomes, which update
//! the same row. Each writer now adds to a row of its own shard. What a config shows is the
//! column (SQLite's one writer, and counts from before) plus the sum of its rows here
//! (`providers::config::with_counts`). A config's rows go with it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum IngestUsage {
    Table,
    ConfigId,
    Shard,
    EventsDeniedByConsent,
}

#[derive(DeriveIden)]
enum ProviderConfig {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(IngestUsage::Table)
                .col(ColumnDef::new(IngestUsage::ConfigId).uuid().not_null())
                .col(ColumnDef::new(IngestUsage::Shard).integer().not_null())
                .col(ColumnDef::new(IngestUsage::EventsDeniedByConsent).big_integer().not_null().default(0))
                .primary_key(Index::create().col(IngestUsage::ConfigId).col(IngestUsage::Shard))
                .foreign_key(
                    ForeignKey::create()
                        .from(IngestUsage::Table, IngestUsage::ConfigId)
                        .to(ProviderConfig::Table, ProviderConfig::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(IngestUsage::Table).to_owned()).await
    }
}
