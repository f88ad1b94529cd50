//! The outbox as `/metrics` shows it, read from the database at each scrape (so every instance
//! reports the shared outbox, and a restarted one at once): per provider config, the pending
//! deliveries (`consentgate_outbox_depth`), the age of the oldest (`consentgate_outbox_oldest_pending_seconds`,
//! counted from the event's arrival), and the circuit (`consentgate_circuit_state`, one line per
//! state, 1 for the current one; `consentgate_circuit_failures`: failed requests in a row).
//! Decommissioned configs are left out.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use entity::{delivery, provider_config};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, QueryFilter, QuerySelect, sea_query::Expr};
use uuid::Uuid;

use super::{DeliveryStatus, circuit::CircuitState};
use crate::{consent::ProviderStatus, error::Result};

/// One config's line of figures.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigStats {
    pub provider: String,
    pub config: Uuid,
    pub depth: i64,
    pub oldest_pending_secs: f64,
    pub circuit: String,
    pub circuit_failures: i32,
}

/// The figures of every config that is not decommissioned, at `now`.
pub async fn collect(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<Vec<ConfigStats>> {
    let configs: Vec<(Uuid, String, String, i32)> = provider_config::Entity::find()
        .select_only()
        .column(provider_config::Column::Id)
        .column(provider_config::Column::Provider)
        .column(provider_config::Column::CircuitState)
        .column(provider_config::Column::CircuitFailures)
        .filter(provider_config::Column::Status.ne(ProviderStatus::Decommissioned.as_str()))
        .into_tuple()
        .all(db)
        .await?;
    let mut out = Vec::with_capacity(configs.len());
    for (config, provider, circuit, circuit_failures) in configs {
        let (depth, oldest) = pending(db, config).await?;
        let oldest_pending_secs = oldest.map_or(0.0, |at| Ord::max((now - at).num_milliseconds(), 0) as f64 / 1000.0);
        out.push(ConfigStats { provider, config, depth, oldest_pending_secs, circuit, circuit_failures });
    }
    Ok(out)
}

/// How many deliveries of `config` wait, and when the oldest was created: one range of
/// `ix_delivery_config_created` (`config_id, status, created_at`), read from the index alone —
/// `COUNT(*)`, not `COUNT(id)`, which would look up every row (migration 000014).
async fn pending(db: &impl ConnectionTrait, config: Uuid) -> Result<(i64, Option<DateTime<Utc>>)> {
    let row: Option<(i64, Option<DateTime<Utc>>)> = pending_query(config).into_tuple().one(db).await?;
    Ok(row.unwrap_or((0, None)))
}

fn pending_query(config: Uuid) -> sea_orm::Select<delivery::Entity> {
    delivery::Entity::find()
        .select_only()
        .column_as(Expr::cust("COUNT(*)"), "depth")
        .column_as(Expr::col(delivery::Column::CreatedAt).min(), "oldest")
        .filter(delivery::Column::ConfigId.eq(config))
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
}

/// The figures in the Prometheus text format.
pub fn render(stats: &[ConfigStats]) -> String {
    let mut out = String::new();
    let labels = |s: &ConfigStats| format!("provider=\"{}\",config=\"{}\"", s.provider, s.config);
    let _ = writeln!(out, "# HELP consentgate_outbox_depth Pending deliveries per provider config.");
    let _ = writeln!(out, "# TYPE consentgate_outbox_depth gauge");
    for s in stats {
        let _ = writeln!(out, "consentgate_outbox_depth{{{}}} {}", labels(s), s.depth);
    }
    let _ = writeln!(
        out,
        "# HELP consentgate_outbox_oldest_pending_seconds Age of the oldest pending delivery per provider config (0: none)."
    );
    let _ = writeln!(out, "# TYPE consentgate_outbox_oldest_pending_seconds gauge");
    for s in stats {
        let _ = writeln!(out, "consentgate_outbox_oldest_pending_seconds{{{}}} {}", labels(s), s.oldest_pending_secs);
    }
    let _ = writeln!(out, "# HELP consentgate_circuit_state Circuit of a provider config: 1 for its current state.");
    let _ = writeln!(out, "# TYPE consentgate_circuit_state gauge");
    for s in stats {
        let current = CircuitState::stored(&s.circuit);
        for state in CircuitState::ALL {
            let on = u8::from(*state == current);
            let _ = writeln!(out, "consentgate_circuit_state{{{},state=\"{}\"}} {on}", labels(s), state.as_str());
        }
    }
    let _ = writeln!(out, "# HELP consentgate_circuit_failures Failed requests in a row per provider config.");
    let _ = writeln!(out, "# TYPE consentgate_circuit_failures gauge");
    for s in stats {
        let _ = writeln!(out, "consentgate_circuit_failures{{{}}} {}", labels(s), s.circuit_failures);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use sea_orm::{DbBackend, QueryTrait, Statement};

    use super::*;

    /// SQLite's plan for `sql` (EXPLAIN QUERY PLAN's details, one per line) on a migrated database.
    pub(crate) async fn sqlite_plan(sql: String) -> String {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("plan.db").display());
        let db = crate::db::connect(&crate::config::DatabaseSettings { url, max_connections: 1 }).await.unwrap();
        crate::db::migrate(&db).await.unwrap();
        let rows = db
            .query_all_raw(Statement::from_string(DbBackend::Sqlite, format!("EXPLAIN QUERY PLAN {sql}")))
            .await
            .unwrap();
        rows.iter().map(|r| r.try_get_by_index::<String>(3).unwrap()).collect::<Vec<_>>().join("\n")
    }

    /// Read at every scrape of `/metrics`: with every waiting delivery behind it, a lookup per row
    /// was most of what a draining outbox did (docs/scaling.md#the-outbox).
    #[tokio::test]
    async fn the_depth_of_a_config_is_read_from_an_index_alone() {
        let plan = sqlite_plan(pending_query(Uuid::nil()).build(DbBackend::Sqlite).to_string()).await;
        assert!(plan.contains("USING COVERING INDEX ix_delivery_config_created"), "{plan}");
    }

    #[test]
    fn figures_render_one_line_per_config_and_one_per_circuit_state() {
        let config = Uuid::nil();
        let text = render(&[ConfigStats {
            provider: "umami".into(),
            config,
            depth: 3,
            oldest_pending_secs: 7.5,
            circuit: "open".into(),
            circuit_failures: 5,
        }]);
        let l = format!("provider=\"umami\",config=\"{config}\"");
        for line in [
            format!("consentgate_outbox_depth{{{l}}} 3"),
            format!("consentgate_outbox_oldest_pending_seconds{{{l}}} 7.5"),
            format!("consentgate_circuit_state{{{l},state=\"open\"}} 1"),
            format!("consentgate_circuit_state{{{l},state=\"closed\"}} 0"),
            format!("consentgate_circuit_state{{{l},state=\"half_open\"}} 0"),
            format!("consentgate_circuit_failures{{{l}}} 5"),
        ] {
            assert!(text.lines().any(|x| x == line), "{line} in\n{text}");
        }
    }
}
