//! Two outbox indexes widened so that the outbox's frequent reads are answered from the index
//! instead of a table lookup per row (found profiling the drain, docs/scaling.md#the-outbox):
//!
//! - `ix_delivery_provider_due` (`provider, status, next_attempt_at`) becomes
//!   `ix_delivery_provider_due_lease` (`…, config_id, lease_until`). A claim reads the due
//!   deliveries oldest first, and the oldest are the ones in flight (leased, up to the in-flight
//!   window of every config): each was looked up in the table only to be skipped for its lease
//!   or config. With both in the index, SQLite defers the table lookup to the rows it returns.
//! - `ix_delivery_config` (`config_id, status`) becomes `ix_delivery_config_created`
//!   (`config_id, status, created_at`): the outbox depth and the age of its oldest delivery per
//!   config (`/metrics`, read at every scrape) are then a covering index range, where they read
//!   every waiting delivery's row (and sorted them by config).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Delivery {
    Table,
    Provider,
    Status,
    NextAttemptAt,
    ConfigId,
    LeaseUntil,
    CreatedAt,
}

fn index(name: &str, cols: &[Delivery]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(Delivery::Table);
    for c in cols {
        i.col(*c);
    }
    i.to_owned()
}

fn drop_index(name: &str) -> IndexDropStatement {
    Index::drop().name(name).table(Delivery::Table).to_owned()
}

use Delivery as D;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(index(
            "ix_delivery_provider_due_lease",
            &[D::Provider, D::Status, D::NextAttemptAt, D::ConfigId, D::LeaseUntil],
        ))
        .await?;
        m.drop_index(drop_index("ix_delivery_provider_due")).await?;
        m.create_index(index("ix_delivery_config_created", &[D::ConfigId, D::Status, D::CreatedAt])).await?;
        m.drop_index(drop_index("ix_delivery_config")).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(index("ix_delivery_config", &[D::ConfigId, D::Status])).await?;
        m.drop_index(drop_index("ix_delivery_config_created")).await?;
        m.create_index(index("ix_delivery_provider_due", &[D::Provider, D::Status, D::NextAttemptAt])).await?;
        m.drop_index(drop_index("ix_delivery_provider_due_lease")).await
    }
}
