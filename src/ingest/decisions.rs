//! Forwarding decisions: for each event and each provider config it was considered for, whether
//! it may go there, with which identity, and why — written once, with the event, so an auditor
//! can see later exactly why a provider did or did not receive it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use entity::forwarding_decision;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{consent::Decision, error::Result, string_enum::string_enum};

string_enum! {
    /// `forwarding_decision.decision`.
    pub enum Verdict { Allow = "allow", Deny = "deny" }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct DecisionView {
    pub config_id: Uuid,
    pub provider: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// `full` or `anonymous` when allowed.
    pub identity: Option<String>,
    /// `consent_granted:analytics`, `anonymous:no_consent`, `denied:bot`,
    /// `denied:custom_events_disabled`, … (docs/decision-reasons.md). Shown as stored: a stored
    /// reason is audit history and is never rewritten on reading.
    pub reason: String,
}

impl DecisionView {
    pub fn new(config_id: Uuid, provider: &str, d: &Decision) -> Self {
        DecisionView {
            config_id,
            provider: provider.to_string(),
            decision: if d.is_allowed() { Verdict::Allow } else { Verdict::Deny }.as_str().into(),
            identity: d.identity().map(|i| i.as_str().to_string()),
            reason: d.reason().to_string(),
        }
    }
}

impl From<forwarding_decision::Model> for DecisionView {
    fn from(m: forwarding_decision::Model) -> Self {
        DecisionView {
            config_id: m.config_id,
            provider: m.provider,
            decision: m.decision,
            identity: m.identity,
            reason: m.reason,
        }
    }
}

/// The stored row of a decision about `event_id`.
pub fn row(
    tenant_id: Uuid,
    event_id: Uuid,
    view: &DecisionView,
    now: DateTime<Utc>,
) -> forwarding_decision::ActiveModel {
    forwarding_decision::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        event_id: Set(event_id),
        config_id: Set(view.config_id),
        provider: Set(view.provider.clone()),
        decision: Set(view.decision.clone()),
        identity: Set(view.identity.clone()),
        reason: Set(view.reason.clone()),
        created_at: Set(now),
    }
}

pub async fn for_event(db: &impl ConnectionTrait, event_id: Uuid) -> Result<Vec<DecisionView>> {
    let rows = forwarding_decision::Entity::find()
        .filter(forwarding_decision::Column::EventId.eq(event_id))
        .order_by_asc(forwarding_decision::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(DecisionView::from).collect())
}

/// The decisions of several events, by (event, config).
pub async fn for_events(db: &impl ConnectionTrait, event_ids: &[Uuid]) -> Result<HashMap<(Uuid, Uuid), DecisionView>> {
    if event_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut ids = event_ids.to_vec();
    ids.sort();
    ids.dedup();
    let rows =
        forwarding_decision::Entity::find().filter(forwarding_decision::Column::EventId.is_in(ids)).all(db).await?;
    Ok(rows.into_iter().map(|m| ((m.event_id, m.config_id), DecisionView::from(m))).collect())
}
