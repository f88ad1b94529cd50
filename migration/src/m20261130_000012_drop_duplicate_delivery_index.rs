//! `ix_delivery_config_status` (migration 000005) indexes exactly what `ix_delivery_config`
//! (000001) already does — `(config_id, status)` — so every delivery written updated the same
//! index twice. Found measuring the ingest writer (docs/scaling.md): a delivery's row is the one
//! with the most indexes, and each index is a page the commit writes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Delivery {
    Table,
    ConfigId,
    Status,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("ix_delivery_config_status").table(Delivery::Table).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name("ix_delivery_config_status")
                .table(Delivery::Table)
                .col(Delivery::ConfigId)
                .col(Delivery::Status)
                .to_owned(),
        )
        .await
    }
}
