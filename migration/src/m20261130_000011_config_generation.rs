//! Cross-instance invalidation of the in-memory config cache (issue 14, docs/caching.md): one
//! row per tenant whose `generation` grows by one in the same transaction as every change to what
//! the cache holds (ingest keys, consent configs, provider configs). Each instance polls the
//! generations of the tenants it has cached and drops an entry whose generation moved.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConfigGeneration {
    Table,
    TenantId,
    Generation,
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
                .table(ConfigGeneration::Table)
                .col(uuid(ConfigGeneration::TenantId).primary_key())
                .col(big_integer(ConfigGeneration::Generation))
                .foreign_key(
                    ForeignKey::create()
                        .from(ConfigGeneration::Table, ConfigGeneration::TenantId)
                        .to(Tenant::Table, Tenant::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ConfigGeneration::Table).to_owned()).await
    }
}
