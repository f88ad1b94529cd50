//! The write half of ingestion: the rows [`decide`](super::decide) planned for a batch of events, stored
//! in the caller's transaction with one multi-row insert per table (chunked below the databases'
//! bound-parameter limits), and what each event's sender is answered once it commits.
//!
//! **Repeats.** A site retries with the same `idempotency_key` when an answer was lost; that must
//! never store a second event, even when both requests are in the same batch. Keys are scoped by
//! key kind — the unique index is `(tenant_id, idempotency_key, key_kind)`, so a page holding the
//! public key cannot pre-claim a key the site's server will send — and events stored before the
//! kind was recorded (`key_kind` null, migration 000006) are a repeat for either kind: the gateway
//! cannot tell who sent them, and the unique index (where nulls are distinct) does not see them.
//! So the check is made here, inside the writing transaction, with **one** read for the whole
//! batch (every key of the batch, matched by [`is_repeat_of`]) instead of one per event before
//! planning; batch-mates with the same key are resolved in memory (the first is stored, the rest
//! are its repeats). Exact on SQLite (the transaction holds the single write lock). On PostgreSQL
//! a concurrent writer's uncommitted event is invisible to the read: the unique index then fails
//! this batch's insert, the writer retries event by event ([`writer`](super::writer)), and the
//! retry's read sees the committed first event. Legacy null-kind rows are never written again,
//! so nothing can race with them.

use std::collections::{BTreeMap, HashMap};

use entity::{analytics_event, delivery};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, Iterable, QueryFilter, QueryOrder};
use uuid::Uuid;

use super::{Accepted, decisions, decisions::DecisionView, keys::KeyKind};
use crate::{error::Result, providers::config::usage};

/// One event's rows, planned and ready to store: what a request hands the writer.
#[derive(Clone, Debug)]
pub struct PlannedEvent {
    /// The event as stored (an unlinkable event's derived idempotency key already erased).
    pub event: analytics_event::Model,
    /// The idempotency key as posted: what an earlier event is looked up by.
    pub lookup_key: Option<String>,
    pub key_kind: KeyKind,
    /// One per config considered, in order.
    pub decisions: Vec<DecisionView>,
    /// One pending delivery per allowed config.
    pub deliveries: Vec<delivery::ActiveModel>,
    /// The configs whose `events_denied_by_consent` grows by one.
    pub denied_by_consent: Vec<Uuid>,
}

/// What becomes of one event of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Store,
    /// A repeat of an event stored before (index into the existing rows).
    RepeatOfStored(usize),
    /// A repeat of an earlier event of this batch (its index).
    RepeatOfBatchMate(usize),
}

/// What a repeat is matched against: an event stored before, by the columns [`is_repeat_of`] and
/// the answer read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredKey {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub provider: Option<String>,
    pub idempotency_key: Option<String>,
    pub key_kind: Option<String>,
}

impl From<analytics_event::Model> for StoredKey {
    fn from(m: analytics_event::Model) -> Self {
        StoredKey {
            id: m.id,
            tenant_id: m.tenant_id,
            provider: m.provider,
            idempotency_key: m.idempotency_key,
            key_kind: m.key_kind,
        }
    }
}

/// Whether `row` is the first event of a repeat of `key` posted by a sender of `kind` to
/// `tenant`: same tenant and key, and the same kind or none recorded (a legacy row).
pub fn is_repeat_of(row: &StoredKey, tenant: Uuid, key: &str, kind: KeyKind) -> bool {
    row.tenant_id == tenant
        && row.idempotency_key.as_deref() == Some(key)
        && row.key_kind.as_deref().is_none_or(|k| k == kind.as_str())
}

/// The fate of each event of a batch, in order — pure. `existing`: rows stored before with any of
/// the batch's keys. A key is claimed by the first event storing it; an event whose posted key a
/// stored row or an earlier batch-mate holds is a repeat.
pub fn fates(events: &[&PlannedEvent], existing: &[StoredKey]) -> Vec<Fate> {
    let mut claimed: HashMap<(Uuid, &str, &'static str), usize> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        let tenant = e.event.tenant_id;
        let fate = match e.lookup_key.as_deref() {
            Some(key) => match existing.iter().position(|row| is_repeat_of(row, tenant, key, e.key_kind)) {
                Some(r) => Fate::RepeatOfStored(r),
                None => match claimed.get(&(tenant, key, e.key_kind.as_str())) {
                    Some(&first) => Fate::RepeatOfBatchMate(first),
                    None => Fate::Store,
                },
            },
            None => Fate::Store,
        };
        if fate == Fate::Store
            && let Some(stored) = e.event.idempotency_key.as_deref()
        {
            claimed.insert((tenant, stored, e.key_kind.as_str()), i);
        }
        out.push(fate);
    }
    out
}

/// Stores `events` in `db` (the writer's transaction) and returns each one's answer, valid once
/// the transaction commits: `Ok` stored or a repeat, or a 409 for a key reused for another target.
/// A database error fails the whole batch (the writer then retries event by event). `shard`: the
/// writer's row of each config in `ingest_usage`, where its consent denials are counted
/// (`usage::denied_by_consent_n`).
pub async fn store(
    db: &impl ConnectionTrait,
    events: &[&PlannedEvent],
    shard: i32,
) -> Result<Vec<Result<Accepted>>, DbErr> {
    let existing = existing(db, events).await?;
    let fates = fates(events, &existing);
    let stored = || events.iter().zip(&fates).filter(|(_, f)| **f == Fate::Store).map(|(e, _)| *e);

    insert_chunked(db, stored().map(|e| analytics_event::ActiveModel::from(e.event.clone())).collect()).await?;
    insert_chunked(db, stored().flat_map(|e| e.deliveries.iter().cloned()).collect()).await?;
    let mut denied = DeniedCounts::default();
    stored().for_each(|e| denied.add(e));
    for (config, n) in denied.in_order() {
        usage::denied_by_consent_n(db, shard, config, n).await.map_err(into_db)?;
    }
    let mut earlier = HashMap::new();
    for fate in &fates {
        if let Fate::RepeatOfStored(r) = *fate
            && !earlier.contains_key(&existing[r].id)
        {
            let id = existing[r].id;
            earlier.insert(id, decisions::for_event(db, id).await.map_err(into_db)?);
        }
    }
    Ok(answers(events, &fates, &existing, &earlier))
}

/// How much each config's `events_denied_by_consent` grows in a batch, given out in one order
/// (a `BTreeMap`'s) in every batch: PostgreSQL writers updating the same configs never deadlock.
#[derive(Default)]
pub struct DeniedCounts(BTreeMap<Uuid, u64>);

impl DeniedCounts {
    pub fn add(&mut self, event: &PlannedEvent) {
        for config in &event.denied_by_consent {
            *self.0.entry(*config).or_default() += 1;
        }
    }

    pub fn in_order(self) -> impl Iterator<Item = (Uuid, u64)> {
        self.0.into_iter()
    }
}

/// Each event's answer, valid once its batch commits — pure. A stored event is answered with its
/// decisions; a repeat with the first event's (`earlier`: those of the stored ones, by id), or a
/// 409 when the key was used for an event sent elsewhere (`repeat`).
pub fn answers(
    events: &[&PlannedEvent],
    fates: &[Fate],
    existing: &[StoredKey],
    earlier: &HashMap<Uuid, Vec<DecisionView>>,
) -> Vec<Result<Accepted>> {
    let target = |e: &PlannedEvent| e.event.provider.clone();
    events
        .iter()
        .zip(fates)
        .map(|(e, fate)| match *fate {
            Fate::Store => Ok(Accepted { id: e.event.id, duplicate: false, decisions: e.decisions.clone() }),
            Fate::RepeatOfStored(r) => {
                let first = &existing[r];
                let decisions = earlier.get(&first.id).cloned().unwrap_or_default();
                super::repeat(first.id, first.provider.as_deref(), target(e).as_deref(), decisions)
            }
            Fate::RepeatOfBatchMate(i) => {
                let first = events[i];
                super::repeat(
                    first.event.id,
                    first.event.provider.as_deref(),
                    target(e).as_deref(),
                    first.decisions.clone(),
                )
            }
        })
        .collect()
}

/// Rows stored before with a key some event of the batch was posted with (one read).
async fn existing(db: &impl ConnectionTrait, events: &[&PlannedEvent]) -> Result<Vec<StoredKey>, DbErr> {
    let mut keys: Vec<&str> = events.iter().filter_map(|e| e.lookup_key.as_deref()).collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    keys.sort_unstable();
    keys.dedup();
    let mut tenants: Vec<Uuid> = events.iter().map(|e| e.event.tenant_id).collect();
    tenants.sort_unstable();
    tenants.dedup();
    analytics_event::Entity::find()
        .filter(analytics_event::Column::TenantId.is_in(crate::db::padded_for_in(tenants)))
        .filter(analytics_event::Column::IdempotencyKey.is_in(crate::db::padded_for_in(keys)))
        .order_by_asc(analytics_event::Column::Id)
        .all(db)
        .await
        .map(|rows| rows.into_iter().map(StoredKey::from).collect())
}

/// Bound parameters per statement, at most: SQLite allows 32,766, PostgreSQL 65,535.
const MAX_PARAMS: usize = 30_000;

/// Rows per multi-row insert, at most, whatever the parameter limit allows. Measured on
/// PostgreSQL (docs/scaling.md): a batch whose events went in one statement of 32 rows (800
/// parameters) spent ~50 ms in its inserts, one of 48–63 events ~100 ms — against 5–7 ms for
/// 24–31 events in statements of 16 and 8 — so every large batch, the very ones a backlog makes,
/// stalled its writer (a p99 of 116–135 ms). Cut into statements of at most 16 rows, a batch's
/// inserts grow with its rows (48–63 events: 15 ms) and the writers' inserts cost half as much per
/// event.
pub const ROWS_PER_INSERT: usize = 16;

/// Rows of a table with `columns` columns per multi-row insert.
pub fn rows_per_statement(columns: usize) -> usize {
    (MAX_PARAMS / columns.max(1)).max(1)
}

/// How `n` rows are cut into multi-row inserts of at most `per` rows: into powers of two, largest
/// first. A statement's text depends on its row count, and the driver keeps each text it has
/// prepared (sqlx: per connection): with any count allowed, every batch size became a statement
/// of its own, held in memory (a release benchmark's RSS grew by ~70 MB); with powers of two there
/// are at most log2(per) + 1 texts per table, prepared once and reused.
pub fn chunk_sizes(mut n: usize, per: usize) -> Vec<usize> {
    let cap = 1usize << (usize::BITS - 1 - per.max(1).leading_zeros());
    let mut sizes = Vec::new();
    while n > 0 {
        let size = cap.min(1usize << (usize::BITS - 1 - n.leading_zeros()));
        sizes.push(size);
        n -= size;
    }
    sizes
}

/// The multi-row inserts `rows` rows of a table of `columns` columns go in — pure: powers of two
/// ([`chunk_sizes`]), at most [`ROWS_PER_INSERT`] rows and within the parameter limit.
pub fn insert_sizes(rows: usize, columns: usize) -> Vec<usize> {
    chunk_sizes(rows, rows_per_statement(columns).min(ROWS_PER_INSERT))
}

async fn insert_chunked<A>(db: &impl ConnectionTrait, rows: Vec<A>) -> Result<(), DbErr>
where
    A: ActiveModelTrait + Send,
{
    let sizes = insert_sizes(rows.len(), <A::Entity as EntityTrait>::Column::iter().count());
    let mut rows = rows.into_iter();
    for size in sizes {
        let chunk: Vec<A> = rows.by_ref().take(size).collect();
        A::Entity::insert_many(chunk).exec_without_returning(db).await?;
    }
    Ok(())
}

pub(super) fn into_db(e: crate::error::Error) -> DbErr {
    match e {
        crate::error::Error::Db(e) => e,
        other => DbErr::Custom(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn row(tenant: Uuid, key: Option<&str>, kind: Option<&str>) -> analytics_event::Model {
        let now = Utc::now();
        analytics_event::Model {
            id: Uuid::now_v7(),
            tenant_id: tenant,
            provider: None,
            event_name: "pageview".into(),
            event_properties: json!({}),
            user_id: None,
            anonymous_id: None,
            session_id: None,
            page_url: None,
            referrer: None,
            title: None,
            user_agent: None,
            language: None,
            screen: None,
            revenue: None,
            context: json!({}),
            occurred_at: now,
            received_at: now,
            ip_truncated: None,
            country: None,
            dnt: false,
            gpc: false,
            idempotency_key: key.map(String::from),
            key_kind: kind.map(String::from),
            decisions: serde_json::json!([]),
        }
    }

    /// An event posted with `posted` as its key; `stored`: whether the key is kept on the row (a
    /// derived key of an unlinkable event is not).
    fn planned(tenant: Uuid, posted: Option<&str>, kind: KeyKind, stored: bool) -> PlannedEvent {
        let key = posted.filter(|_| stored);
        PlannedEvent {
            event: row(tenant, key, Some(kind.as_str())),
            lookup_key: posted.map(String::from),
            key_kind: kind,
            decisions: vec![],
            deliveries: vec![],
            denied_by_consent: vec![],
        }
    }

    #[test]
    fn repeats_are_found_among_stored_rows_and_batch_mates() {
        use Fate::*;
        use KeyKind::{Public, Secret};
        let (t, other) = (Uuid::now_v7(), Uuid::now_v7());
        let stored = [
            row(t, Some("k-public"), Some("public")),
            // Stored before the kind was recorded: a repeat for either kind.
            row(t, Some("k-legacy"), None),
        ];
        let p = |tenant, key, kind| planned(tenant, key, kind, true);
        for (name, batch, want) in [
            ("no keys", vec![p(t, None, Public), p(t, None, Public)], vec![Store, Store]),
            ("a new key", vec![p(t, Some("new"), Secret)], vec![Store]),
            ("stored, same kind", vec![p(t, Some("k-public"), Public)], vec![RepeatOfStored(0)]),
            ("stored by the other kind", vec![p(t, Some("k-public"), Secret)], vec![Store]),
            ("a legacy row, public", vec![p(t, Some("k-legacy"), Public)], vec![RepeatOfStored(1)]),
            ("a legacy row, secret", vec![p(t, Some("k-legacy"), Secret)], vec![RepeatOfStored(1)]),
            ("another tenant's key", vec![p(other, Some("k-public"), Public)], vec![Store]),
            (
                "batch-mates with one key",
                vec![p(t, Some("x"), Secret), p(t, Some("x"), Secret), p(t, Some("x"), Secret)],
                vec![Store, RepeatOfBatchMate(0), RepeatOfBatchMate(0)],
            ),
            (
                "batch-mates, each kind its own",
                vec![p(t, Some("x"), Secret), p(t, Some("x"), Public), p(t, Some("x"), Public)],
                vec![Store, Store, RepeatOfBatchMate(1)],
            ),
            (
                "batch-mates of a stored key",
                vec![p(t, Some("k-public"), Public), p(t, Some("k-public"), Public)],
                vec![RepeatOfStored(0), RepeatOfStored(0)],
            ),
            (
                "a key not kept claims nothing",
                vec![planned(t, Some("auto:x"), Secret, false), p(t, Some("auto:x"), Secret)],
                vec![Store, Store],
            ),
        ] {
            let refs: Vec<&PlannedEvent> = batch.iter().collect();
            let stored: Vec<StoredKey> = stored.iter().cloned().map(StoredKey::from).collect();
            assert_eq!(fates(&refs, &stored), want, "{name}");
        }
    }

    #[test]
    fn rows_are_cut_into_powers_of_two_within_the_limit() {
        for (n, per, sizes) in [
            (0, 1250, vec![]),
            (1, 1250, vec![1]),
            (7, 1250, vec![4, 2, 1]),
            (64, 1250, vec![64]),
            (100, 1250, vec![64, 32, 4]),
            (2000, 1250, vec![1024, 512, 256, 128, 64, 16]),
            (5, 3, vec![2, 2, 1]),
            (3, 1, vec![1, 1, 1]),
            (3, 0, vec![1, 1, 1]),
        ] {
            let got = chunk_sizes(n, per);
            assert_eq!(got, sizes, "{n} rows, {per} per statement");
            assert_eq!(got.iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn a_batchs_rows_go_in_statements_of_at_most_16_rows() {
        // (rows, columns of the table, statements): events have 25 columns, deliveries 24.
        for (rows, columns, sizes) in [
            (1, 25, vec![1]),
            (16, 25, vec![16]),
            (31, 25, vec![16, 8, 4, 2, 1]),
            (63, 25, vec![16, 16, 16, 8, 4, 2, 1]),
            (126, 24, vec![16, 16, 16, 16, 16, 16, 16, 8, 4, 2]),
            (40, 5_000, vec![4, 4, 4, 4, 4, 4, 4, 4, 4, 4]), // the parameter limit, when lower
        ] {
            assert_eq!(insert_sizes(rows, columns), sizes, "{rows} rows of {columns} columns");
        }
    }

    #[test]
    fn rows_per_statement_stay_below_the_parameter_limits() {
        for (columns, rows) in [(24, 1250), (9, 3333), (1, 30_000), (0, 30_000), (40_000, 1)] {
            assert_eq!(rows_per_statement(columns), rows, "{columns} columns");
            assert!(rows * columns.max(1) <= 32_766 || rows == 1);
        }
    }
}
