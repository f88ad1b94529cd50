//! Database migrations, shared by SQLite and PostgreSQL.
//!
//! Never edit a migration that has landed: add a new file and list it in [`Migrator`].

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;
mod m20261126_000001_one_active_consent_config;
mod m20261126_000002_forwarding;
mod m20261129_000001_unlinkable_events;
mod m20261130_000001_delivery_batches;
mod m20261130_000002_daily_salts;
mod m20261130_000004_provider_choices;
mod m20261130_000005_outbox_horizon;
mod m20261130_000006_idempotency_by_key_kind;
mod m20261130_000007_retention;
mod m20261130_000011_config_generation;
mod m20261130_000012_drop_duplicate_delivery_index;
mod m20261130_000013_drop_unused_delivery_due_index;
mod m20261130_000014_outbox_indexes_that_answer;
mod m20261130_000015_decisions_with_the_event;
mod m20261130_000016_identifier_indexes_where_set;
mod m20261130_000017_waiting_lookup_ids_by_time;
mod m20261201_000018_consent_record_changes;
mod m20261201_000019_ingest_usage;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261126_000001_one_active_consent_config::Migration),
            Box::new(m20261126_000002_forwarding::Migration),
            Box::new(m20261129_000001_unlinkable_events::Migration),
            Box::new(m20261130_000001_delivery_batches::Migration),
            Box::new(m20261130_000002_daily_salts::Migration),
            Box::new(m20261130_000004_provider_choices::Migration),
            Box::new(m20261130_000005_outbox_horizon::Migration),
            Box::new(m20261130_000006_idempotency_by_key_kind::Migration),
            Box::new(m20261130_000007_retention::Migration),
            Box::new(m20261130_000011_config_generation::Migration),
            Box::new(m20261130_000012_drop_duplicate_delivery_index::Migration),
            Box::new(m20261130_000013_drop_unused_delivery_due_index::Migration),
            Box::new(m20261130_000014_outbox_indexes_that_answer::Migration),
            Box::new(m20261130_000015_decisions_with_the_event::Migration),
            Box::new(m20261130_000016_identifier_indexes_where_set::Migration),
            Box::new(m20261130_000017_waiting_lookup_ids_by_time::Migration),
            Box::new(m20261201_000018_consent_record_changes::Migration),
            Box::new(m20261201_000019_ingest_usage::Migration),
        ]
    }
}
