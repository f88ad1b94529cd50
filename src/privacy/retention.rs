//! Retention: how long events and consent records are kept, and the job that purges the rest in
//! small batches (docs/operations.md, docs/consent-model.md).
//!
//! - **Events** are purged `events_days` after they were received, once none of their deliveries
//!   is pending (delivered, dropped, dead, or never forwarded), with their forwarding decisions
//!   and deliveries. An event with a pending delivery is never touched.
//! - **Consent records** are purged `consent_records_days` after they were made, only once they
//!   have expired too, and only from the *start* of the tenant's hash chain: the oldest records
//!   go, after checking that they still link up, and the last one's `seq` and `hash` become the
//!   chain's checkpoint ([`crate::consent::chain`]), which the first remaining record links to.
//!   The newest record always stays, so the chain continues from it.
//! - **What ended deliveries held of the visitor** (full client IP, consent-lookup id, user
//!   agent, granted categories, daily pseudonymous id) is cleared. The outbox clears it when a
//!   delivery ends; this catches any left over (an older release, a crash in between). Pending
//!   deliveries keep theirs: Plausible and Umami count visitors by them at send time.
//!
//! The periods come from `[retention]` (`crate::config::RetentionSettings`), overridden per tenant
//! through `PUT /v1/tenants/{tenant}/retention`.

use std::ops::RangeInclusive;

use chrono::{DateTime, Utc};
use entity::{analytics_event, consent_chain_checkpoint, consent_record, delivery, retention_policy, tenant};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    config::RetentionSettings,
    consent::chain::{self, Verifier},
    error::{Error, Result},
    ingest::decisions,
    outbox::DeliveryStatus,
};

/// Allowed retention periods, in days (up to ten years).
pub const DAYS: RangeInclusive<u32> = 1..=3650;

/// A tenant's retention periods: the effective ones, and the tenant's own overrides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Policy {
    pub events_days: u32,
    pub consent_records_days: u32,
    /// The tenant's own periods; `null`: the gateway's default (`[retention]`).
    pub overrides: Overrides,
}

/// A tenant's own retention periods. `null` (or absent) falls back to the gateway's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// 1–3650 days.
    pub events_days: Option<u32>,
    /// 1–3650 days; records are purged only once expired as well.
    pub consent_records_days: Option<u32>,
}

impl Overrides {
    pub fn check(&self) -> Result<()> {
        for (field, days) in [("events_days", self.events_days), ("consent_records_days", self.consent_records_days)] {
            if let Some(d) = days
                && !DAYS.contains(&d)
            {
                return Err(Error::validation(field, format!("must be {}-{} days", DAYS.start(), DAYS.end())));
            }
        }
        Ok(())
    }
}

fn resolve(settings: &RetentionSettings, row: Option<retention_policy::Model>) -> Policy {
    let days = |v: Option<i32>| v.and_then(|d| u32::try_from(d).ok()).filter(|d| DAYS.contains(d));
    let overrides = row.map_or_else(Overrides::default, |r| Overrides {
        events_days: days(r.events_days),
        consent_records_days: days(r.consent_records_days),
    });
    Policy {
        events_days: overrides.events_days.unwrap_or(settings.events_days),
        consent_records_days: overrides.consent_records_days.unwrap_or(settings.consent_records_days),
        overrides,
    }
}

pub async fn policy(db: &impl ConnectionTrait, settings: &RetentionSettings, tenant_id: Uuid) -> Result<Policy> {
    Ok(resolve(settings, retention_policy::Entity::find_by_id(tenant_id).one(db).await?))
}

/// Replaces the tenant's overrides (`null`: back to the default).
///
/// The change and its audit entry (`retention.update`, by `actor`) commit together.
pub async fn set_overrides(
    db: &DatabaseConnection,
    settings: &RetentionSettings,
    tenant_id: Uuid,
    overrides: Overrides,
    actor: &str,
) -> Result<Policy> {
    overrides.check()?;
    let row = retention_policy::ActiveModel {
        tenant_id: Set(tenant_id),
        events_days: Set(overrides.events_days.map(|d| d as i32)),
        consent_records_days: Set(overrides.consent_records_days.map(|d| d as i32)),
        updated_at: Set(Utc::now()),
    };
    let txn = crate::db::begin_write(db).await?;
    let before = policy(&txn, settings, tenant_id).await?;
    if retention_policy::Entity::find_by_id(tenant_id).one(&txn).await?.is_some() {
        row.update(&txn).await?;
    } else {
        row.insert(&txn).await?;
    }
    let after = policy(&txn, settings, tenant_id).await?;
    crate::audit::record(
        &txn,
        crate::audit::Change {
            tenant_id,
            actor,
            action: "retention.update",
            entity_type: "retention",
            entity_id: None,
            before: serde_json::to_value(before.overrides).ok(),
            after: serde_json::to_value(after.overrides).ok(),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(after)
}

/// What one round purged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    pub events: u64,
    pub forwarding_decisions: u64,
    pub deliveries: u64,
    pub consent_records: u64,
    /// Refusals carried over: a purged record that was its visitor's latest and refused a
    /// category, appended again to the chain (`source: retention`) so the refusal still stands.
    pub refusals_carried_over: u64,
    /// Ended deliveries whose visitor data (full IP and the rest) was cleared.
    pub delivery_visitor_data: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.events + self.forwarding_decisions + self.deliveries + self.consent_records + self.delivery_visitor_data
    }

    fn add(&mut self, o: Purged) {
        self.events += o.events;
        self.forwarding_decisions += o.forwarding_decisions;
        self.deliveries += o.deliveries;
        self.consent_records += o.consent_records;
        self.refusals_carried_over += o.refusals_carried_over;
        self.delivery_visitor_data += o.delivery_visitor_data;
    }

    fn count_in_metrics(&self) {
        for (what, n) in [
            ("events", self.events),
            ("forwarding_decisions", self.forwarding_decisions),
            ("deliveries", self.deliveries),
            ("consent_records", self.consent_records),
            ("refusals_carried_over", self.refusals_carried_over),
            ("delivery_visitor_data", self.delivery_visitor_data),
        ] {
            metrics::counter!("consentgate_retention_purged_total", "what" => what).increment(n);
        }
    }
}

/// One round of the purge, taking `now` for the present: per tenant at most `batch_size` events
/// and `batch_size` consent records, then at most `batch_size` ended deliveries' visitor data.
/// The background job runs rounds until one purges nothing; tests call it with a chosen `now`.
pub async fn run_once(db: &DatabaseConnection, settings: &RetentionSettings, now: DateTime<Utc>) -> Result<Purged> {
    let mut purged = Purged::default();
    let tenants: Vec<Uuid> =
        tenant::Entity::find().select_only().column(tenant::Column::Id).into_tuple().all(db).await?;
    for tenant_id in tenants {
        let p = policy(db, settings, tenant_id).await?;
        let events_cutoff = now - chrono::Duration::days(i64::from(p.events_days));
        purged.add(purge_events(db, tenant_id, events_cutoff, settings.batch_size).await?);
        let records_cutoff = now - chrono::Duration::days(i64::from(p.consent_records_days));
        let (records, carried) = purge_records(db, tenant_id, records_cutoff, now, settings.batch_size).await?;
        purged.consent_records += records;
        purged.refusals_carried_over += carried;
    }
    purged.delivery_visitor_data += clear_ended_deliveries(db, settings.batch_size).await?;
    purged.count_in_metrics();
    Ok(purged)
}

/// No pending delivery of the event (`analytics_event` being the outer query's table).
const NOTHING_PENDING: &str =
    "NOT EXISTS (SELECT 1 FROM delivery d WHERE d.event_id = analytics_event.id AND d.status = 'pending')";

async fn purge_events(db: &DatabaseConnection, tenant_id: Uuid, cutoff: DateTime<Utc>, batch: u64) -> Result<Purged> {
    let due = || {
        analytics_event::Entity::find()
            .select_only()
            .column(analytics_event::Column::Id)
            .filter(analytics_event::Column::TenantId.eq(tenant_id))
            .filter(analytics_event::Column::ReceivedAt.lt(cutoff))
            .filter(Expr::cust(NOTHING_PENDING))
            .order_by_asc(analytics_event::Column::ReceivedAt)
    };
    // Looked up first without a write lock: most rounds find nothing, and on SQLite a write
    // transaction would hold up ingest for nothing.
    if due().limit(1).into_tuple::<Uuid>().one(db).await?.is_none() {
        return Ok(Purged::default());
    }
    let txn = crate::db::begin_write(db).await?;
    let ids: Vec<Uuid> = due().limit(batch).into_tuple().all(&txn).await?;
    let mut purged = Purged::default();
    for chunk in ids.chunks(super::CHUNK) {
        purged.deliveries += delivery::Entity::delete_many()
            .filter(delivery::Column::EventId.is_in(chunk.iter().copied()))
            .filter(delivery::Column::Status.ne(DeliveryStatus::Pending.as_str()))
            .exec(&txn)
            .await?
            .rows_affected;
        // The decisions go with their event (they are a column of it): counted first.
        purged.forwarding_decisions += decisions::count(
            &txn,
            analytics_event::Entity::find()
                .filter(analytics_event::Column::Id.is_in(chunk.iter().copied()))
                .filter(Expr::cust(NOTHING_PENDING)),
        )
        .await?;
        purged.events += analytics_event::Entity::delete_many()
            .filter(analytics_event::Column::Id.is_in(chunk.iter().copied()))
            .filter(Expr::cust(NOTHING_PENDING))
            .exec(&txn)
            .await?
            .rows_affected;
    }
    txn.commit().await?;
    Ok(purged)
}

/// Purges the oldest records of the chain that are past `cutoff` and expired at `now`, never the
/// newest, never past a record that does not link up; moves the checkpoint to the last purged.
/// Returns how many were purged and how many refusals were carried over.
///
/// **A refusal stands** (docs/consent-model.md): outside consent regions an expired record that
/// refused a category keeps it refused — and no record at all lets the defaults apply. So a
/// purged record that was its visitor's latest (no later record, erased or not) and refused some
/// optional category is appended again at the head of the chain, as it was but for `source`
/// (`retention`), the request's IP and user agent (left out: not needed to honour it) and its
/// `created_at` (now, so that it is not purged again at once; its `expires_at` stays past, so it
/// reads as the expired refusal it was). An erased visitor's record is not carried over: an
/// erased visitor counts as undecided.
async fn purge_records(
    db: &DatabaseConnection,
    tenant_id: Uuid,
    cutoff: DateTime<Utc>,
    now: DateTime<Utc>,
    batch: u64,
) -> Result<(u64, u64)> {
    // Anything due at all? Asked without the chain's lock, which consent writes wait for.
    let any_due = consent_record::Entity::find()
        .filter(consent_record::Column::TenantId.eq(tenant_id))
        .filter(consent_record::Column::CreatedAt.lt(cutoff))
        .filter(consent_record::Column::ExpiresAt.lte(now))
        .one(db)
        .await?;
    if any_due.is_none() {
        return Ok((0, 0));
    }
    let txn = crate::db::begin_tenant_write(db, tenant_id).await?;
    let checkpoint = chain::checkpoint(&txn, tenant_id).await?;
    let Some(head) = consent_record::Entity::find()
        .filter(consent_record::Column::TenantId.eq(tenant_id))
        .order_by_desc(consent_record::Column::Seq)
        .one(&txn)
        .await?
    else {
        return Ok((0, 0));
    };
    let oldest = consent_record::Entity::find()
        .filter(consent_record::Column::TenantId.eq(tenant_id))
        .filter(consent_record::Column::Seq.lt(head.seq))
        .order_by_asc(consent_record::Column::Seq)
        .limit(batch)
        .all(&txn)
        .await?;
    let mut verifier = Verifier::from_checkpoint(checkpoint);
    let mut last: Option<&consent_record::Model> = None;
    for m in &oldest {
        if m.created_at >= cutoff || m.expires_at > now {
            break;
        }
        if let Err(broken) = verifier.check(m) {
            // Purging past a broken link would destroy the evidence of the tampering.
            tracing::warn!(tenant = %tenant_id, seq = broken.seq, reason = %broken.reason,
                "consent chain does not verify here; records from this one on are not purged");
            break;
        }
        last = Some(m);
    }
    let Some(last) = last else { return Ok((0, 0)) };
    let carried = carry_refusals_over(&txn, &oldest, last.seq, &head, now).await?;
    let purged = consent_record::Entity::delete_many()
        .filter(consent_record::Column::TenantId.eq(tenant_id))
        .filter(consent_record::Column::Seq.lte(last.seq))
        .exec(&txn)
        .await?
        .rows_affected;
    let before = consent_chain_checkpoint::Entity::find_by_id(tenant_id).one(&txn).await?;
    let row = consent_chain_checkpoint::ActiveModel {
        tenant_id: Set(tenant_id),
        seq: Set(last.seq),
        hash: Set(last.hash.clone()),
        records_purged: Set(before.as_ref().map_or(0, |b| b.records_purged) + purged as i64),
        updated_at: Set(Utc::now()),
    };
    if before.is_some() {
        row.update(&txn).await?;
    } else {
        row.insert(&txn).await?;
    }
    txn.commit().await?;
    Ok((purged, carried))
}

/// Appends, after `head`, the refusals among `oldest` up to `last` (the records about to be
/// purged) that are their visitor's latest — see [`purge_records`]. Returns how many.
async fn carry_refusals_over(
    txn: &impl ConnectionTrait,
    oldest: &[consent_record::Model],
    last: i64,
    head: &consent_record::Model,
    now: DateTime<Utc>,
) -> Result<u64> {
    // Each visitor's latest purged record (they come in `seq` order).
    let mut latest: std::collections::HashMap<&str, &consent_record::Model> = Default::default();
    for m in oldest.iter().filter(|m| m.seq <= last) {
        latest.insert(m.visitor_hash.as_str(), m);
    }
    let hashes: Vec<String> = latest.keys().map(|h| h.to_string()).collect();
    let mut later = std::collections::HashSet::new();
    for chunk in hashes.chunks(super::CHUNK) {
        let found: Vec<String> = consent_record::Entity::find()
            .select_only()
            .column(consent_record::Column::VisitorHash)
            .filter(consent_record::Column::TenantId.eq(head.tenant_id))
            .filter(consent_record::Column::Seq.gt(last))
            .filter(consent_record::Column::VisitorHash.is_in(chunk.iter().cloned()))
            .into_tuple()
            .all(txn)
            .await?;
        later.extend(found);
    }
    let mut standing: Vec<&consent_record::Model> = latest
        .into_values()
        .filter(|m| {
            m.visitor_id.is_some()
                && !later.contains(&m.visitor_hash)
                && m.action != crate::consent::Action::AcceptAll.as_str()
                && refuses_something(&m.choices)
        })
        .collect();
    standing.sort_by_key(|m| m.seq);
    let (mut seq, mut prev_hash) = (head.seq, head.hash.clone());
    let created_at = crate::consent::records::micros(now);
    for m in &standing {
        seq += 1;
        let mut again = consent_record::Model {
            id: Uuid::now_v7(),
            seq,
            source: "retention".into(),
            ip_truncated: None,
            user_agent: None,
            created_at,
            prev_hash: prev_hash.clone(),
            hash: String::new(),
            canonical_version: chain::CANONICAL_VERSION,
            ..(*m).clone()
        };
        again.hash = chain::link_hash(&again);
        prev_hash = again.hash.clone();
        consent_record::ActiveModel::from(again).insert(txn).await?;
    }
    Ok(standing.len() as u64)
}

/// Whether a record's choices refuse some optional category; an unreadable one counts as a
/// refusal (fail closed: it is read as refusing everything).
fn refuses_something(choices: &serde_json::Value) -> bool {
    ["functional", "analytics", "marketing"]
        .iter()
        .any(|k| choices.get(*k).and_then(serde_json::Value::as_bool) != Some(true))
}

/// Clears what ended deliveries still hold of the visitor.
async fn clear_ended_deliveries(db: &DatabaseConnection, batch: u64) -> Result<u64> {
    use delivery::Column as C;
    let holding = Condition::any()
        .add(C::ClientIp.is_not_null())
        .add(C::ConsentLookupId.is_not_null())
        .add(C::UserAgent.is_not_null())
        .add(C::Granted.is_not_null())
        .add(C::PseudonymousId.is_not_null());
    let ids: Vec<Uuid> = delivery::Entity::find()
        .select_only()
        .column(C::Id)
        .filter(C::Status.ne(DeliveryStatus::Pending.as_str()))
        .filter(holding)
        .limit(batch)
        .into_tuple()
        .all(db)
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    // One statement, so no transaction; a delivery replayed meanwhile (pending again) is skipped.
    let none = || Expr::value(Option::<String>::None);
    let n = delivery::Entity::update_many()
        .col_expr(C::ClientIp, none())
        .col_expr(C::ConsentLookupId, none())
        .col_expr(C::UserAgent, none())
        .col_expr(C::Granted, none())
        .col_expr(C::PseudonymousId, none())
        .filter(C::Id.is_in(ids))
        .filter(C::Status.ne(DeliveryStatus::Pending.as_str()))
        .exec(db)
        .await?
        .rows_affected;
    Ok(n)
}

/// Rounds in a row before the job rests, however much is left (it continues after the pause).
const ROUNDS_PER_WAKE: usize = 100;

/// The background job: rounds of [`run_once`] until one purges nothing, then a pause of
/// `interval_secs`.
pub async fn run(db: DatabaseConnection, settings: RetentionSettings, shutdown: CancellationToken) {
    loop {
        for _ in 0..ROUNDS_PER_WAKE {
            if shutdown.is_cancelled() {
                return;
            }
            match run_once(&db, &settings, Utc::now()).await {
                Ok(p) if p.total() > 0 => tracing::debug!(?p, "retention purged"),
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "retention purge failed; trying again after the pause");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(settings.interval_secs)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_fall_back_to_the_defaults_and_are_checked() {
        let settings = RetentionSettings::default();
        let row = |e: Option<i32>, r: Option<i32>| retention_policy::Model {
            tenant_id: Uuid::nil(),
            events_days: e,
            consent_records_days: r,
            updated_at: Utc::now(),
        };
        assert_eq!((resolve(&settings, None).events_days, resolve(&settings, None).consent_records_days), (30, 1095));
        let p = resolve(&settings, Some(row(Some(7), None)));
        assert_eq!((p.events_days, p.consent_records_days), (7, 1095));
        assert_eq!(p.overrides, Overrides { events_days: Some(7), consent_records_days: None });
        // An unreadable stored value counts as no override, never as "keep nothing".
        assert_eq!(resolve(&settings, Some(row(Some(0), Some(-3)))).events_days, 30);
        for (o, field) in [
            (Overrides { events_days: Some(0), consent_records_days: None }, "events_days"),
            (Overrides { events_days: None, consent_records_days: Some(3651) }, "consent_records_days"),
        ] {
            match o.check() {
                Err(Error::Validation { field: Some(f), .. }) => assert_eq!(f, field),
                other => panic!("{o:?}: {other:?}"),
            }
        }
        assert!(Overrides { events_days: Some(1), consent_records_days: Some(3650) }.check().is_ok());
    }
}
