//! The forwarding decisions move from a table of their own into a column of their event
//! (`analytics_event.decisions`, a JSON array of `{config_id, provider, decision, identity,
//! reason}` in the order they were made).
//!
//! Why (issue 14, docs/scaling.md): an event with two provider configs wrote two decision rows,
//! each in three B-trees (the rows, the key's index, `ix_forwarding_decision_event`) — six of the
//! ~26 B-tree insertions of an event on SQLite's one writer, for rows that are written once with
//! their event, never change, and are read only with it (the event's page, the delivery log,
//! erasure and retention, which delete them with it). Every stored decision is carried over
//! unchanged: they are audit history (tests/api/upgrade.rs reads each reason back).

use sea_orm_migration::sea_orm::DbBackend;
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AnalyticsEvent {
    Table,
    Id,
    Decisions,
}

#[derive(DeriveIden)]
enum ForwardingDecision {
    Table,
    Id,
    TenantId,
    EventId,
    ConfigId,
    Provider,
    Decision,
    Identity,
    Reason,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Tenant {
    Table,
    Id,
}

/// A uuid as SQLite holds it (sqlx writes 16-byte blobs) in the text form serde gives a `Uuid`.
fn sqlite_uuid_text(col: &str) -> String {
    let hex = format!("lower(hex({col}))");
    format!(
        "CASE WHEN typeof({col}) = 'blob' THEN substr({hex}, 1, 8) || '-' || substr({hex}, 9, 4) || '-' || \
         substr({hex}, 13, 4) || '-' || substr({hex}, 17, 4) || '-' || substr({hex}, 21) ELSE {col} END"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(AnalyticsEvent::Table)
                .add_column(json_binary(AnalyticsEvent::Decisions).default("[]"))
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        let copy = match m.get_database_backend() {
            DbBackend::Sqlite => format!(
                "UPDATE analytics_event SET decisions = (SELECT json_group_array(json_object('config_id', {}, \
                   'provider', d.provider, 'decision', d.decision, 'identity', d.identity, 'reason', d.reason) \
                   ORDER BY d.id) FROM forwarding_decision d WHERE d.event_id = analytics_event.id) \
                 WHERE id IN (SELECT event_id FROM forwarding_decision)",
                sqlite_uuid_text("d.config_id")
            ),
            _ => "UPDATE analytics_event e SET decisions = d.list FROM (SELECT event_id, \
                    jsonb_agg(jsonb_build_object('config_id', config_id, 'provider', provider, 'decision', decision, \
                    'identity', identity, 'reason', reason) ORDER BY id) AS list \
                    FROM forwarding_decision GROUP BY event_id) d \
                  WHERE e.id = d.event_id"
                .to_string(),
        };
        db.execute_unprepared(&copy).await?;
        m.drop_table(Table::drop().table(ForwardingDecision::Table).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use ForwardingDecision as F;
        m.create_table(
            Table::create()
                .table(F::Table)
                .col(pk_uuid(F::Id))
                .col(uuid(F::TenantId))
                .col(uuid(F::EventId))
                .col(uuid(F::ConfigId))
                .col(string(F::Provider))
                .col(string(F::Decision))
                .col(string_null(F::Identity))
                .col(string(F::Reason))
                .col(timestamp_with_time_zone(F::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .from(F::Table, F::TenantId)
                        .to(Tenant::Table, Tenant::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(F::Table, F::EventId)
                        .to(AnalyticsEvent::Table, AnalyticsEvent::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_forwarding_decision_event").table(F::Table).col(F::EventId).to_owned())
            .await?;
        let backend = m.get_database_backend();
        // Rows in the array's order get ids in that order (the event's id, then the position).
        let copy = match backend {
            DbBackend::Sqlite => "INSERT INTO forwarding_decision \
                 (id, tenant_id, event_id, config_id, provider, decision, identity, reason, created_at) \
                 SELECT unhex(substr(hex(e.id), 1, 28) || printf('%04X', d.key)), e.tenant_id, e.id, \
                   unhex(replace(d.value ->> 'config_id', '-', '')), d.value ->> 'provider', \
                   d.value ->> 'decision', d.value ->> 'identity', d.value ->> 'reason', e.received_at \
                 FROM analytics_event e, json_each(e.decisions) d"
                .to_string(),
            _ => "INSERT INTO forwarding_decision \
                 (id, tenant_id, event_id, config_id, provider, decision, identity, reason, created_at) \
                 SELECT overlay(e.id::text placing lpad(to_hex(d.n::int), 4, '0') from 33 for 4)::uuid, \
                   e.tenant_id, e.id, (d.value ->> 'config_id')::uuid, d.value ->> 'provider', \
                   d.value ->> 'decision', d.value ->> 'identity', d.value ->> 'reason', e.received_at \
                 FROM analytics_event e, jsonb_array_elements(e.decisions) WITH ORDINALITY d(value, n)"
                .to_string(),
        };
        m.get_connection().execute_unprepared(&copy).await?;
        m.alter_table(Table::alter().table(AnalyticsEvent::Table).drop_column(AnalyticsEvent::Decisions).to_owned())
            .await
    }
}
