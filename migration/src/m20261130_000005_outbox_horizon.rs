//! Deliveries that ride out a long provider outage (issue 13).
//!
//! - `delivery.expires_at`: the retry horizon of a delivery — when it is dead-lettered if still
//!   not delivered. `NULL` (every delivery as it is enqueued, and those pending from before):
//!   `created_at` (the instant the event was received) plus the configured horizon
//!   (`delivery.retry_horizon_hours`, shorter for a provider with its own age limit). A replay
//!   sets it to a new horizon counted from the replay.
//! - `delivery.claimed_at`: when the current lease was taken (with `lease_owner`, what the
//!   deliveries API shows as `in_flight`); `NULL` when not leased.
//! - `provider_config.circuit_state` (`closed`, `open`, `half_open`), `circuit_since` and
//!   `circuit_failures` (failed requests in a row): the per-config circuit. Not a lifecycle
//!   status: an open circuit only holds the config's deliveries back while the provider fails.
//! - Indexes for what each worker pass and each `/metrics` scrape now ask of the pending
//!   deliveries: by arrival (the horizon sweep, the oldest pending) and by config (the circuit's
//!   release, `events_retrying`, the outbox depth).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Delivery {
    Table,
    ExpiresAt,
    ClaimedAt,
    Status,
    CreatedAt,
    ConfigId,
}

#[derive(DeriveIden)]
enum ProviderConfig {
    Table,
    CircuitState,
    CircuitSince,
    CircuitFailures,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for col in [Delivery::ExpiresAt, Delivery::ClaimedAt] {
            m.alter_table(
                Table::alter().table(Delivery::Table).add_column(timestamp_with_time_zone_null(col)).to_owned(),
            )
            .await?;
        }
        m.alter_table(
            Table::alter()
                .table(ProviderConfig::Table)
                .add_column(string(ProviderConfig::CircuitState).default("closed"))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(ProviderConfig::Table)
                .add_column(timestamp_with_time_zone_null(ProviderConfig::CircuitSince))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(ProviderConfig::Table)
                .add_column(integer(ProviderConfig::CircuitFailures).default(0))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_delivery_status_created")
                .table(Delivery::Table)
                .col(Delivery::Status)
                .col(Delivery::CreatedAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_delivery_config_status")
                .table(Delivery::Table)
                .col(Delivery::ConfigId)
                .col(Delivery::Status)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for ix in ["ix_delivery_config_status", "ix_delivery_status_created"] {
            m.drop_index(Index::drop().name(ix).table(Delivery::Table).to_owned()).await?;
        }
        for col in [ProviderConfig::CircuitFailures, ProviderConfig::CircuitSince, ProviderConfig::CircuitState] {
            m.alter_table(Table::alter().table(ProviderConfig::Table).drop_column(col).to_owned()).await?;
        }
        for col in [Delivery::ClaimedAt, Delivery::ExpiresAt] {
            m.alter_table(Table::alter().table(Delivery::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
