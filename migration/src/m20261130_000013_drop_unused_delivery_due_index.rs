//! `ix_delivery_due` — `(status, next_attempt_at)`, from the first schema — serves no query
//! since the outbox claims per provider: the claim reads `ix_delivery_provider_due`
//! (`provider, status, next_attempt_at`), the depth and a config's waiting deliveries read
//! `ix_delivery_config` (`config_id, status`), the horizon's expiry `ix_delivery_status_created`.
//! Every delivery written still updated it: one more B-tree page per delivery in each ingest
//! commit and each outcome (docs/scaling.md).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Delivery {
    Table,
    Status,
    NextAttemptAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("ix_delivery_due").table(Delivery::Table).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_delivery_due")
                .table(Delivery::Table)
                .col(Delivery::Status)
                .col(Delivery::NextAttemptAt)
                .to_owned(),
        )
        .await
    }
}
