//! Forwarding: a per-config count of consecutive authentication failures, so that repeated
//! 401/403 answers put a provider config into status `error` no matter which gateway instance
//! received them (the count lives in the database, not in one process's memory), and an index for
//! the outbox's "due deliveries of this provider" claim.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ProviderConfig {
    Table,
    ConsecutiveAuthFailures,
}

#[derive(DeriveIden)]
enum Delivery {
    Table,
    Provider,
    Status,
    NextAttemptAt,
    EventId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ProviderConfig::Table)
                .add_column(integer(ProviderConfig::ConsecutiveAuthFailures).default(0))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_delivery_provider_due")
                .table(Delivery::Table)
                .col(Delivery::Provider)
                .col(Delivery::Status)
                .col(Delivery::NextAttemptAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("ix_delivery_event").table(Delivery::Table).col(Delivery::EventId).to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("ix_delivery_event").table(Delivery::Table).to_owned()).await?;
        m.drop_index(Index::drop().name("ix_delivery_provider_due").table(Delivery::Table).to_owned()).await?;
        m.alter_table(
            Table::alter().table(ProviderConfig::Table).drop_column(ProviderConfig::ConsecutiveAuthFailures).to_owned(),
        )
        .await?;
        Ok(())
    }
}
