//! The data subject's export (GDPR Art. 15): everything held about one visitor, as one JSON
//! document, streamed — consent records a page at a time, events a chunk at a time with their
//! forwarding decisions and deliveries — so a visitor with many events costs one page of memory.
//!
//! ```json
//! {"visitor_id": "…", "visitor_hash": "…", "generated_at": "…",
//!  "chain": {"head": {"seq", "hash"}, "checkpoint": {"seq", "hash"} | null},
//!  "consent_records": [{…record as auditors see it…, "proof": {"canonical", "hash_matches"}}],
//!  "events": [{…stored event…, "decisions": [{…}], "deliveries": [{…}]}]}
//! ```
//!
//! A record's proof is the canonical text its hash covers: `sha256_hex(prev_hash ‖ canonical)`
//! must equal `hash`, and `hash` is the next record's `prev_hash` up to the chain head
//! (docs/consent-model.md). Erased records (no visitor id any more) are included: they are found
//! by the visitor's hash.

use std::collections::BTreeMap;

use axum::body::Bytes;
use entity::{analytics_event, consent_record, delivery, tenant};
use futures_util::{Stream, StreamExt, stream};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{CHUNK, erase::Recipient, linked_event_ids, tally_deliveries};
use crate::{
    consent::{
        canonical,
        chain::{self, Head},
        records::{self, RecordFilter, RecordItem, VisitorId},
    },
    error::Result,
    ingest::decisions::{self, DecisionView},
};

/// Consent records per page.
const PAGE: u64 = 500;

enum Step {
    Header,
    Records { after: i64, first: bool },
    Events { next: usize, first: bool },
    Done,
}

struct Cursor {
    db: DatabaseConnection,
    tenant: tenant::Model,
    visitor: VisitorId,
    filter: RecordFilter,
    events: Vec<Uuid>,
    step: Step,
}

/// The export as a byte stream, for `Body::from_stream`.
pub fn stream(
    db: DatabaseConnection,
    tenant: tenant::Model,
    visitor: VisitorId,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let filter =
        RecordFilter { visitor_hash: Some(records::visitor_hash(&tenant, &visitor)), ..RecordFilter::default() };
    let start = Cursor { db, tenant, visitor, filter, events: Vec::new(), step: Step::Header };
    stream::unfold(start, |mut c| async move {
        if matches!(c.step, Step::Done) {
            return None;
        }
        match next_chunk(&mut c).await {
            Ok(chunk) => Some((Ok(Bytes::from(chunk)), c)),
            Err(e) => {
                // The headers are out: all that can be done is to cut the response short, which
                // the client sees as a broken transfer, never as a complete export.
                tracing::error!(error = %e, "visitor export failed");
                c.step = Step::Done;
                Some((Err(std::io::Error::other(e.to_string())), c))
            }
        }
    })
    .fuse()
}

async fn next_chunk(c: &mut Cursor) -> Result<String> {
    match c.step {
        Step::Header => {
            let checkpoint = chain::checkpoint(&c.db, c.tenant.id).await?;
            let head = consent_record::Entity::find()
                .filter(consent_record::Column::TenantId.eq(c.tenant.id))
                .order_by_desc(consent_record::Column::Seq)
                .one(&c.db)
                .await?
                .map(|m| Head { seq: m.seq, hash: m.hash });
            c.events = linked_event_ids(&c.db, c.tenant.id, &c.visitor).await?;
            let head = json!({
                "visitor_id": c.visitor.as_str(),
                "visitor_hash": c.filter.visitor_hash,
                "generated_at": chain::timestamp(&chrono::Utc::now()),
                "chain": {"head": head, "checkpoint": checkpoint},
            });
            let mut out = head.to_string();
            out.pop(); // the closing brace: the arrays follow
            out.push_str(",\"consent_records\":[");
            c.step = Step::Records { after: 0, first: true };
            Ok(out)
        }
        Step::Records { after, first } => {
            let page = records::page(&c.db, &c.tenant, &c.filter, after, PAGE).await?;
            let mut out = String::new();
            let mut first = first;
            for m in &page {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&record_with_proof(m).to_string());
            }
            c.step = match page.last() {
                Some(last) if page.len() as u64 == PAGE => Step::Records { after: last.seq, first },
                _ => {
                    out.push_str("],\"events\":[");
                    Step::Events { next: 0, first: true }
                }
            };
            Ok(out)
        }
        Step::Events { next, first } => {
            let chunk: Vec<Uuid> = c.events.iter().skip(next).take(CHUNK).copied().collect();
            let mut out = String::new();
            let mut first = first;
            for event in events_with_outcomes(&c.db, c.tenant.id, &chunk).await? {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&event.to_string());
            }
            if next + CHUNK >= c.events.len() {
                out.push_str("]}");
                c.step = Step::Done;
            } else {
                c.step = Step::Events { next: next + CHUNK, first };
            }
            Ok(out)
        }
        Step::Done => Ok(String::new()),
    }
}

/// What the export holds, counted (the admin pages' visitor view, before an erasure).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub visitor_hash: String,
    /// Consent records under the visitor's hash (the export's `consent_records`) …
    pub consent_records: u64,
    /// … of which still carry the visitor's id (an erasure removes it; the records stay).
    pub records_with_id: u64,
    pub events: u64,
    pub forwarding_decisions: u64,
    /// The events' deliveries by status.
    pub deliveries: BTreeMap<String, u64>,
    /// Provider configs that already received the visitor's events.
    pub received_by: Vec<Recipient>,
}

impl Summary {
    /// Nothing held but consent records without the id (what an erasure leaves).
    pub fn only_hashes(&self) -> bool {
        self.records_with_id == 0 && self.events == 0 && self.forwarding_decisions == 0 && self.deliveries.is_empty()
    }
}

/// Counts what [`stream`](fn@stream) would export for the visitor.
pub async fn summary(db: &impl ConnectionTrait, tenant: &tenant::Model, visitor: &VisitorId) -> Result<Summary> {
    let visitor_hash = records::visitor_hash(tenant, visitor);
    let records = || {
        consent_record::Entity::find()
            .filter(consent_record::Column::TenantId.eq(tenant.id))
            .filter(consent_record::Column::VisitorHash.eq(visitor_hash.clone()))
    };
    let consent_records = records().count(db).await?;
    let records_with_id = records().filter(consent_record::Column::VisitorId.is_not_null()).count(db).await?;
    let events = linked_event_ids(db, tenant.id, visitor).await?;
    let mut forwarding_decisions = 0;
    for chunk in events.chunks(CHUNK) {
        forwarding_decisions += decisions::count(
            db,
            analytics_event::Entity::find()
                .filter(analytics_event::Column::TenantId.eq(tenant.id))
                .filter(analytics_event::Column::Id.is_in(chunk.iter().copied())),
        )
        .await?;
    }
    let deliveries = tally_deliveries(db, tenant.id, &events).await?;
    Ok(Summary {
        visitor_hash,
        consent_records,
        records_with_id,
        events: events.len() as u64,
        forwarding_decisions,
        deliveries: deliveries.by_status,
        received_by: deliveries.received_by,
    })
}

/// A record as auditors see it, with the text its hash covers.
pub fn record_with_proof(m: &consent_record::Model) -> Value {
    let canonical = canonical::to_string(&chain::chained_fields(m));
    let mut v = serde_json::to_value(RecordItem::from(m.clone())).unwrap_or_default();
    v["proof"] = json!({
        "canonical": canonical,
        "hash_matches": chain::link_hash(m) == m.hash,
    });
    v
}

async fn events_with_outcomes(db: &DatabaseConnection, tenant_id: Uuid, ids: &[Uuid]) -> Result<Vec<Value>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let events = analytics_event::Entity::find()
        .filter(analytics_event::Column::TenantId.eq(tenant_id))
        .filter(analytics_event::Column::Id.is_in(ids.iter().copied()))
        .order_by_asc(analytics_event::Column::Id)
        .all(db)
        .await?;
    let deliveries = delivery::Entity::find()
        .filter(delivery::Column::TenantId.eq(tenant_id))
        .filter(delivery::Column::EventId.is_in(ids.iter().copied()))
        .order_by_asc(delivery::Column::CreatedAt)
        .all(db)
        .await?;
    events
        .into_iter()
        .map(|e| {
            let mut v = serde_json::to_value(&e).unwrap_or_default();
            v["decisions"] = decisions::stored(&e.decisions)?.iter().map(|d| decision_json(d, &e)).collect();
            v["deliveries"] = deliveries.iter().filter(|d| d.event_id == e.id).map(delivery_json).collect();
            Ok(v)
        })
        .collect()
}

/// A decision as exported: made when its event was received.
fn decision_json(d: &DecisionView, event: &analytics_event::Model) -> Value {
    json!({
        "config_id": d.config_id, "provider": d.provider, "decision": d.decision,
        "identity": d.identity, "reason": d.reason, "created_at": event.received_at,
    })
}

/// Everything a delivery holds, the visitor data of a pending one included (it is theirs).
fn delivery_json(d: &delivery::Model) -> Value {
    json!({
        "id": d.id, "config_id": d.config_id, "provider": d.provider, "identity": d.identity,
        "status": d.status, "attempts": d.attempts, "last_status": d.last_status,
        "delivered_at": d.delivered_at, "created_at": d.created_at,
        "client_ip": d.client_ip, "consent_lookup_id": d.consent_lookup_id, "user_agent": d.user_agent,
        "granted": d.granted, "pseudonymous_id": d.pseudonymous_id,
    })
}
