//! PostHog's cookieless fallback (issue 12): one random salt per tenant and UTC day, from which
//! the day's pseudonymous `distinct_id` of a visitor is computed at ingest. A row lives only for
//! its day: the gateway deletes the rows of past days (see `ingest::daily_id`), so that after
//! midnight nobody — not even with the database — can compute an earlier day's id again and link
//! the visitor's days together.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DailySalt {
    Table,
    TenantId,
    Day,
    Salt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Tenant {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(DailySalt::Table)
                .col(uuid(DailySalt::TenantId))
                // `YYYY-MM-DD` (UTC): compares as the date does, on both databases.
                .col(string_len(DailySalt::Day, 10))
                .col(string(DailySalt::Salt))
                .col(timestamp_with_time_zone(DailySalt::CreatedAt))
                .primary_key(Index::create().col(DailySalt::TenantId).col(DailySalt::Day))
                .foreign_key(
                    ForeignKey::create()
                        .from(DailySalt::Table, DailySalt::TenantId)
                        .to(Tenant::Table, Tenant::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(DailySalt::Table).to_owned()).await
    }
}
