//! Writing a batch of delivery outcomes ([`super::group`]'s one transaction): the deliveries'
//! rows by guarded `UPDATE`s — no read before them: the claim already holds what the outcome
//! needs, and `WHERE id IN (…) AND lease_owner = … AND status = 'pending'` tells by its row
//! count (one delivery) or the ids it returns (`RETURNING id`, several whose rows end the same
//! way: delivered without a warning, most often) whose lease was lost (then nothing of that
//! delivery is written: another worker has it) — and each config's row once per batch: its usage counters summed
//! ([`crate::providers::config::usage::Tally`]) and its circuit worked out request by request
//! ([`super::circuit::record_all`]), in one `UPDATE`, configs in id order (a `BTreeMap`), so that
//! two writers on PostgreSQL always lock config rows in the same order.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use entity::delivery;
use sea_orm::{ConnectionTrait, EntityTrait, ExprTrait, QueryFilter, QueryTrait, sea_query::Expr};
use uuid::Uuid;

use super::{DeliveryStatus, circuit};
use crate::{error::Result, providers::config::usage::Tally};

/// Ids in one multi-row `UPDATE` at most (far below SQLite's and PostgreSQL's limits on bound
/// parameters).
const MAX_IDS_PER_UPDATE: usize = 500;

/// What becomes of one delivery's row: the values its guarded `UPDATE` sets (besides those every
/// outcome sets: `attempts + 1`, the lease cleared, `updated_at`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RowEnd {
    /// The delivery ends (`delivered`, `dropped`, `dead`): what was kept only to send it goes.
    /// `None`: it stays pending, due again at `next_attempt_at`.
    pub status: Option<DeliveryStatus>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    /// `None`: left as it is.
    pub warning: Option<Option<String>>,
    pub delivered: bool,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// What a written outcome does to its config's usage.
#[derive(Clone, Debug)]
pub enum Usage {
    Sent,
    Dropped {
        warning: String,
    },
    Failed {
        error: String,
        dead: bool,
    },
    DeniedByConsent,
    /// A 401/403; `counted` towards the config's `error` status (once per request).
    AuthFailed {
        error: String,
        counted: bool,
    },
}

/// One delivery's outcome, ready to write.
#[derive(Clone, Debug)]
pub struct Ending {
    pub id: Uuid,
    pub config: Uuid,
    pub row: RowEnd,
    pub usage: Usage,
}

/// What [`write`](fn@write) did.
#[derive(Debug, Default)]
pub struct Written {
    /// Per ending, in order: whether its row was written (false: the lease was lost).
    pub written: Vec<bool>,
    /// Per config, how each of its requests changed its circuit, in order.
    pub circuits: BTreeMap<Uuid, Vec<circuit::Change>>,
    /// Configs put into `error` (repeated 401/403s), with the last one's reason.
    pub to_error: Vec<(Uuid, String)>,
}

/// Thresholds of the config-level effects.
#[derive(Clone, Copy, Debug)]
pub struct Thresholds {
    /// Failed requests in a row that open a circuit.
    pub circuit_failures: u32,
    /// 401/403s in a row that put a config into `error`.
    pub auth_failures: u32,
}

/// Writes `endings` (still this `owner`'s) and `requests` (the sent requests in the order they
/// were answered: their config and whether they failed as a whole) inside `txn`, at `now`.
pub async fn write(
    txn: &impl ConnectionTrait,
    owner: &str,
    endings: &[Ending],
    requests: &[(Uuid, bool)],
    thresholds: Thresholds,
    now: DateTime<Utc>,
) -> Result<Written> {
    let mut written = vec![false; endings.len()];
    // Deliveries whose rows end the same way (most often: delivered, no warning) in one
    // statement; one alone by its row count, several by the ids it returns.
    let mut groups: Vec<(&RowEnd, Vec<usize>)> = Vec::new();
    let mut group_of: HashMap<&RowEnd, usize> = HashMap::new();
    for (i, e) in endings.iter().enumerate() {
        let g = *group_of.entry(&e.row).or_insert_with(|| {
            groups.push((&e.row, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(i);
    }
    for (row, members) in groups {
        for part in members.chunks(MAX_IDS_PER_UPDATE) {
            let q = update(row, now).filter(super::held_by(part.iter().map(|&i| endings[i].id), owner));
            if let [i] = part {
                written[*i] = q.exec(txn).await?.rows_affected == 1;
                continue;
            }
            let mut stmt = q.into_query();
            stmt.returning_col(delivery::Column::Id);
            let mut ids = HashSet::with_capacity(part.len());
            for r in txn.query_all(&stmt).await? {
                ids.insert(r.try_get::<Uuid>("", "id")?);
            }
            for &i in part {
                written[i] = ids.contains(&endings[i].id);
            }
        }
    }
    let mut tallies: BTreeMap<Uuid, Tally> = BTreeMap::new();
    let threshold = Ord::max(thresholds.auth_failures, 1);
    for (e, _) in endings.iter().zip(&written).filter(|(_, w)| **w) {
        let tally = tallies.entry(e.config).or_default();
        match &e.usage {
            Usage::Sent => tally.sent(now),
            Usage::Dropped { warning } => tally.dropped(warning, now),
            Usage::Failed { error, dead } => tally.failed(error, *dead, now),
            Usage::DeniedByConsent => tally.denied_by_consent(),
            Usage::AuthFailed { error, counted: true } => tally.auth_failed(error, threshold, now),
            Usage::AuthFailed { counted: false, .. } => {}
        }
    }
    let mut failed: BTreeMap<Uuid, Vec<bool>> = BTreeMap::new();
    for (config, f) in requests {
        failed.entry(*config).or_default().push(*f);
    }
    let configs: std::collections::BTreeSet<Uuid> = tallies.keys().chain(failed.keys()).copied().collect();
    let mut out = Written { written, ..Written::default() };
    for config in configs {
        let requests = failed.remove(&config).unwrap_or_default();
        let (changes, circuit) = circuit::record_all(txn, config, &requests, thresholds.circuit_failures, now).await?;
        let tally = tallies.remove(&config).unwrap_or_default();
        if let Some(reason) = tally.write(txn, config, threshold, circuit).await? {
            out.to_error.push((config, reason));
        }
        if !changes.is_empty() {
            out.circuits.insert(config, changes);
        }
    }
    Ok(out)
}

/// The `UPDATE` that writes `row` (to be filtered by [`super::held_by`]).
fn update(row: &RowEnd, now: DateTime<Utc>) -> sea_orm::UpdateMany<delivery::Entity> {
    use delivery::Column as C;
    let null = || Expr::value(Option::<String>::None);
    let mut q = delivery::Entity::update_many()
        .col_expr(C::Attempts, Expr::col(C::Attempts).add(1))
        .col_expr(C::LastStatus, Expr::value(row.last_status))
        .col_expr(C::LeaseOwner, null())
        .col_expr(C::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(C::ClaimedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(C::UpdatedAt, Expr::value(now))
        .col_expr(C::LastError, Expr::value(row.last_error.clone()));
    if let Some(status) = row.status {
        // The visitor's full IP, lookup id and agent were only needed to send; they go when the
        // delivery ends.
        q = q
            .col_expr(C::Status, Expr::value(status.as_str()))
            .col_expr(C::ClientIp, null())
            .col_expr(C::ConsentLookupId, null())
            .col_expr(C::UserAgent, null())
            .col_expr(C::Granted, null())
            .col_expr(C::PseudonymousId, null());
    }
    if let Some(warning) = &row.warning {
        q = q.col_expr(C::Warning, Expr::value(warning.clone()));
    }
    if row.delivered {
        q = q.col_expr(C::DeliveredAt, Expr::value(now));
    }
    if let Some(at) = row.next_attempt_at {
        q = q.col_expr(C::NextAttemptAt, Expr::value(at));
    }
    q
}

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, QueryTrait};

    use super::*;

    /// A batch of outcomes finds its deliveries by id, not by scanning every waiting delivery
    /// (`super::pending_by_id`).
    #[tokio::test]
    async fn outcomes_find_their_deliveries_by_id() {
        let row = RowEnd {
            status: Some(DeliveryStatus::Delivered),
            last_status: Some(202),
            last_error: None,
            warning: None,
            delivered: true,
            next_attempt_at: None,
        };
        // A round's worth: with more ids than SQLite's guess of the rows one status matches (10),
        // its planner preferred the status index.
        let ids: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
        let q = update(&row, Utc::now()).filter(super::super::held_by(ids, "w")).build(DbBackend::Sqlite);
        crate::outbox::claim::tests::found_by_id(q.to_string()).await;
    }
}
