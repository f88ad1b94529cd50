//! Unlinkable events (issue 10): an event no provider may receive identifiers for keeps none.
//!
//! - `delivery.consent_lookup_id` and `delivery.user_agent`: what a waiting delivery needs of the
//!   visitor (deciding again at send time; the agent cookie-free providers count visitors by),
//!   kept only while it is pending, like `client_ip`. Pending deliveries get them from their event.
//! - Events stored before, for which no forwarding decision granted full identity (a refusal, no
//!   consent, a signal, or no provider at all), lose their visitor id, user id, session id, user
//!   agent and identity-derived idempotency key: under a refusal they linked the visitor's
//!   browsing together. Their decisions, deliveries and everything else stay.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Delivery {
    Table,
    ConsentLookupId,
    UserAgent,
}

/// Events for which some decision allowed full identity keep their identifiers.
const LINKABLE: &str = "EXISTS (SELECT 1 FROM forwarding_decision f \
     WHERE f.event_id = analytics_event.id AND f.decision = 'allow' AND f.identity = 'full')";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for col in [Delivery::ConsentLookupId, Delivery::UserAgent] {
            m.alter_table(Table::alter().table(Delivery::Table).add_column(string_null(col)).to_owned()).await?;
        }
        let db = m.get_connection();
        db.execute_unprepared(
            "UPDATE delivery SET \
               consent_lookup_id = (SELECT e.anonymous_id FROM analytics_event e WHERE e.id = delivery.event_id), \
               user_agent = (SELECT e.user_agent FROM analytics_event e WHERE e.id = delivery.event_id) \
             WHERE status = 'pending'",
        )
        .await?;
        // A derived key (`auto:…`) is a hash over the session or visitor id, so it could be
        // recomputed from that id: it goes too (repeats of these old events are long past).
        db.execute_unprepared(&format!(
            "UPDATE analytics_event SET user_id = NULL, anonymous_id = NULL, session_id = NULL, user_agent = NULL, \
               idempotency_key = CASE WHEN idempotency_key LIKE 'auto:%' THEN NULL ELSE idempotency_key END \
             WHERE NOT {LINKABLE}"
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // The erased identifiers are gone for good; only the columns are dropped.
        for col in [Delivery::UserAgent, Delivery::ConsentLookupId] {
            m.alter_table(Table::alter().table(Delivery::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}
