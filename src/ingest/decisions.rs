//! Forwarding decisions: for each event and each provider config it was considered for, whether
//! it may go there, with which identity, and why — written once, in the event's own row
//! (`analytics_event.decisions`), so an auditor can see later exactly why a provider did or did
//! not receive it.

use std::collections::HashMap;

use entity::analytics_event;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Select, prelude::Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    consent::Decision,
    error::{Error, Result},
    string_enum::string_enum,
};

string_enum! {
    /// A decision's `decision` (`analytics_event.decisions`).
    pub enum Verdict { Allow = "allow", Deny = "deny" }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
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

/// The decisions stored with an event (`analytics_event.decisions`). A column that does not
/// hold them is an error, never an empty list: an auditor must not read "no decision" where
/// the store holds something it cannot parse.
pub fn stored(column: &Json) -> Result<Vec<DecisionView>> {
    Vec::<DecisionView>::deserialize(column)
        .map_err(|e| Error::Internal(anyhow::anyhow!("analytics_event.decisions holds no decisions: {e}")))
}

/// The column that stores `decisions` with their event.
pub fn column(decisions: &[DecisionView]) -> Json {
    serde_json::to_value(decisions).expect("decisions serialize to JSON")
}

pub async fn for_event(db: &impl ConnectionTrait, event_id: Uuid) -> Result<Vec<DecisionView>> {
    let column: Option<Json> = analytics_event::Entity::find_by_id(event_id)
        .select_only()
        .column(analytics_event::Column::Decisions)
        .into_tuple()
        .one(db)
        .await?;
    column.as_ref().map(stored).transpose().map(Option::unwrap_or_default)
}

/// The decisions of several events, by (event, config).
pub async fn for_events(db: &impl ConnectionTrait, event_ids: &[Uuid]) -> Result<HashMap<(Uuid, Uuid), DecisionView>> {
    let mut ids = event_ids.to_vec();
    ids.sort();
    ids.dedup();
    let mut out = HashMap::new();
    for chunk in ids.chunks(crate::privacy::CHUNK) {
        let rows: Vec<(Uuid, Json)> = analytics_event::Entity::find()
            .select_only()
            .columns([analytics_event::Column::Id, analytics_event::Column::Decisions])
            .filter(analytics_event::Column::Id.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        for (event_id, column) in rows {
            out.extend(stored(&column)?.into_iter().map(|d| ((event_id, d.config_id), d)));
        }
    }
    Ok(out)
}

/// How many decisions the events `events` selects hold (erasure and retention report them).
pub async fn count(db: &impl ConnectionTrait, events: Select<analytics_event::Entity>) -> Result<u64> {
    let columns: Vec<Json> =
        events.select_only().column(analytics_event::Column::Decisions).into_tuple().all(db).await?;
    columns.iter().try_fold(0, |n, c| Ok(n + stored(c)?.len() as u64))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What the column holds is what the API shows, field for field, in the order decided.
    #[test]
    fn decisions_round_trip_through_their_column() {
        let config = Uuid::now_v7();
        let views = vec![
            DecisionView {
                config_id: config,
                provider: "plausible".into(),
                decision: "allow".into(),
                identity: Some("anonymous".into()),
                reason: "anonymous:no_consent".into(),
            },
            DecisionView {
                config_id: Uuid::nil(),
                provider: "umami".into(),
                decision: "deny".into(),
                identity: None,
                reason: "denied:gpc".into(),
            },
        ];
        let col = column(&views);
        assert_eq!(
            col[0],
            json!({"config_id": config, "provider": "plausible", "decision": "allow",
            "identity": "anonymous", "reason": "anonymous:no_consent"})
        );
        assert_eq!(stored(&col).unwrap(), views);
        assert_eq!(stored(&json!([])).unwrap(), vec![]);
    }

    /// Fail closed: a column that is not a list of decisions is an error, not "no decisions".
    #[test]
    fn a_column_without_decisions_is_an_error() {
        for bad in [
            json!(null),
            json!({}),
            json!([{"provider": "umami"}]),
            json!("[]"),
            json!([{"config_id": "x",
            "provider": "umami", "decision": "allow", "identity": null, "reason": "r"}]),
        ] {
            assert!(stored(&bad).is_err(), "{bad}");
        }
    }
}
