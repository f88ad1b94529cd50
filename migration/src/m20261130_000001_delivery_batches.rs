//! Batched deliveries with the visitor's consent signals (issue 12).
//!
//! - `delivery.granted`: the optional categories the visitor had granted when the event arrived
//!   (`analytics,marketing`; empty: none), for providers whose payload carries consent (GA4's
//!   `consent` object). `NULL` (a delivery that ended, or one pending from before) counts as none.
//! - `delivery.pseudonymous_id`: a pseudonymous visitor id computed at ingest (PostHog's
//!   cookieless daily id), so a retry days later does not need the day's salt.
//!
//! Both are kept only while the delivery is pending, like `client_ip` and `user_agent`.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Delivery {
    Table,
    Granted,
    PseudonymousId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for col in [Delivery::Granted, Delivery::PseudonymousId] {
            m.alter_table(Table::alter().table(Delivery::Table).add_column(string_null(col)).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in [Delivery::PseudonymousId, Delivery::Granted] {
            m.alter_table(Table::alter().table(Delivery::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
