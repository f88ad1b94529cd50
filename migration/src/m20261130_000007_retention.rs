//! Privacy operations (issue 15): retention and whole-visitor erasure.
//!
//! - `retention_policy`: a tenant's own retention periods, overriding the `[retention]` defaults
//!   (`NULL`: the default).
//! - `consent_chain_checkpoint`: where a tenant's hash chain starts once its oldest records were
//!   purged — the `seq` and `hash` of the last purged record, which the first remaining record
//!   links to (docs/consent-model.md).
//! - Indexes for the purge (events by age) and the erasure (events and pending deliveries by the
//!   visitor's ids).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RetentionPolicy {
    Table,
    TenantId,
    EventsDays,
    ConsentRecordsDays,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ConsentChainCheckpoint {
    Table,
    TenantId,
    Seq,
    Hash,
    RecordsPurged,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Tenant {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum AnalyticsEvent {
    Table,
    TenantId,
    ReceivedAt,
    AnonymousId,
    UserId,
}

#[derive(DeriveIden)]
enum Delivery {
    Table,
    TenantId,
    ConsentLookupId,
}

fn tenant_fk(table: impl IntoIden + 'static, column: impl IntoIden + 'static) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, column)
        .to(Tenant::Table, Tenant::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(RetentionPolicy::Table)
                .col(pk_uuid(RetentionPolicy::TenantId))
                .col(integer_null(RetentionPolicy::EventsDays))
                .col(integer_null(RetentionPolicy::ConsentRecordsDays))
                .col(timestamp_with_time_zone(RetentionPolicy::UpdatedAt))
                .foreign_key(&mut tenant_fk(RetentionPolicy::Table, RetentionPolicy::TenantId))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ConsentChainCheckpoint::Table)
                .col(pk_uuid(ConsentChainCheckpoint::TenantId))
                .col(big_integer(ConsentChainCheckpoint::Seq))
                .col(string(ConsentChainCheckpoint::Hash))
                .col(big_integer(ConsentChainCheckpoint::RecordsPurged))
                .col(timestamp_with_time_zone(ConsentChainCheckpoint::UpdatedAt))
                .foreign_key(&mut tenant_fk(ConsentChainCheckpoint::Table, ConsentChainCheckpoint::TenantId))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_analytics_event_received")
                .table(AnalyticsEvent::Table)
                .col(AnalyticsEvent::TenantId)
                .col(AnalyticsEvent::ReceivedAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_analytics_event_anonymous_id")
                .table(AnalyticsEvent::Table)
                .col(AnalyticsEvent::TenantId)
                .col(AnalyticsEvent::AnonymousId)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_analytics_event_user_id")
                .table(AnalyticsEvent::Table)
                .col(AnalyticsEvent::TenantId)
                .col(AnalyticsEvent::UserId)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_delivery_consent_lookup_id")
                .table(Delivery::Table)
                .col(Delivery::TenantId)
                .col(Delivery::ConsentLookupId)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for (name, table) in [
            ("ix_delivery_consent_lookup_id", Delivery::Table.into_iden()),
            ("ix_analytics_event_user_id", AnalyticsEvent::Table.into_iden()),
            ("ix_analytics_event_anonymous_id", AnalyticsEvent::Table.into_iden()),
            ("ix_analytics_event_received", AnalyticsEvent::Table.into_iden()),
        ] {
            m.drop_index(Index::drop().name(name).table(table).to_owned()).await?;
        }
        m.drop_table(Table::drop().table(ConsentChainCheckpoint::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(RetentionPolicy::Table).to_owned()).await?;
        Ok(())
    }
}
