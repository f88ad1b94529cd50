//! The per-config circuit: a provider that keeps failing is not sent every waiting delivery on
//! its backoff schedule; after `delivery.circuit_failures` failed requests in a row the config's
//! circuit *opens*: its deliveries are held back and one of them is sent as a *probe* every
//! `delivery.circuit_probe_secs` (`half_open` while the probe is in flight). When a probe gets an
//! answer that is not a failure the circuit *closes* and the config's waiting deliveries are
//! released — made due again at `delivery.circuit_release_per_sec`, instead of each waiting out
//! a backoff that grew during the outage.
//!
//! Stored on the config (`circuit_state`, `circuit_since`, `circuit_failures`), not in its
//! lifecycle `status`: an open circuit is the provider's trouble, not the admin's decision, and
//! ends by itself. A failure is a whole request answered `Retry` (timeout, connection error,
//! 408, 429, 5xx); any other answer — including a refusal of the event or of the credentials —
//! shows the provider is up. An unreadable stored state fails closed: it counts as `open`.

use chrono::{DateTime, Duration, Utc};
use entity::{delivery, provider_config};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, SimpleExpr},
};
use uuid::Uuid;

use super::DeliveryStatus;
use crate::{error::Result, string_enum::string_enum};

string_enum! {
    /// `provider_config.circuit_state`.
    #[derive(utoipa::ToSchema)]
    pub enum CircuitState {
        /// Sending as usual.
        Closed = "closed",
        /// The provider keeps failing: only a probe now and then.
        Open = "open",
        /// A probe is in flight.
        HalfOpen = "half_open",
    }
}

impl CircuitState {
    /// The stored state; an unreadable one counts as open (fail closed: probes only).
    pub fn stored(s: &str) -> Self {
        CircuitState::parse(s).unwrap_or(CircuitState::Open)
    }
}

/// What a claim may take of a config's deliveries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admits {
    /// Every due delivery.
    All,
    /// One delivery, as the probe (due or not: probes keep a steady pace).
    Probe,
    /// Nothing now.
    Nothing,
}

/// What a claim at `now` may take of a config whose circuit is `state` since `since`.
pub fn admits(state: CircuitState, since: Option<DateTime<Utc>>, now: DateTime<Utc>, probe_every: Duration) -> Admits {
    match state {
        CircuitState::Closed => Admits::All,
        // A half-open circuit whose probe never came back (the worker died) is probed again at the
        // same pace.
        CircuitState::Open | CircuitState::HalfOpen => match since {
            Some(at) if at + probe_every > now => Admits::Nothing,
            _ => Admits::Probe,
        },
    }
}

/// The circuit after a request: `failed` (answered `Retry`) or not, with `failures` failed
/// requests in a row before it. A `threshold` of 0 never opens it.
pub fn after(state: CircuitState, failures: i32, failed: bool, threshold: u32) -> (CircuitState, i32) {
    if !failed {
        return (CircuitState::Closed, 0);
    }
    let failures = failures.saturating_add(1);
    let opens = match state {
        CircuitState::Closed => threshold > 0 && failures >= threshold as i32,
        // A failed probe.
        CircuitState::Open | CircuitState::HalfOpen => true,
    };
    (if opens { CircuitState::Open } else { CircuitState::Closed }, failures)
}

/// How a request changed the circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Opened,
    /// The provider answered again: the config's waiting deliveries are to be released.
    Closed,
}

/// The circuit after a batch of requests, answered in order (`failed` each), from the stored
/// `state` and `failures`: how each request changed it, and what to store — `None` when the row
/// stays as it is (the usual case: closed, answered, no failures).
fn after_all(state: &str, failures: i32, failed: &[bool], threshold: u32) -> (Vec<Change>, Option<Stored>) {
    let mut changes = Vec::with_capacity(failed.len());
    let (mut now_state, mut now_failures) = (CircuitState::stored(state), failures);
    for &f in failed {
        let was = now_state;
        (now_state, now_failures) = after(was, now_failures, f, threshold);
        changes.push(match (was, now_state) {
            (CircuitState::Closed, CircuitState::Open) => Change::Opened,
            (CircuitState::Open | CircuitState::HalfOpen, CircuitState::Closed) => Change::Closed,
            _ => Change::Unchanged,
        });
    }
    let since = changes.iter().any(|c| *c != Change::Unchanged);
    // A failed probe (`half_open` → `open`) keeps `since`, the instant the probe was claimed:
    // the probes keep their pace from one claim to the next.
    let state = (state != now_state.as_str()).then_some(now_state);
    let stored = (since || state.is_some() || now_failures != failures).then_some(Stored {
        failures: now_failures,
        state,
        since,
    });
    (changes, stored)
}

/// What [`after_all`] stores: the failures in a row, the state if it changed, and whether
/// `circuit_since` becomes the batch's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    failures: i32,
    state: Option<CircuitState>,
    since: bool,
}

/// Records a batch's requests to a config on its circuit, in the order they were answered
/// (`failed` each), inside the caller's transaction: the circuit read once, and the columns to
/// set returned for the caller's one `UPDATE` of the config's row (none when nothing changed),
/// with how each request changed the circuit.
pub async fn record_all(
    db: &impl ConnectionTrait,
    config_id: Uuid,
    failed: &[bool],
    threshold: u32,
    now: DateTime<Utc>,
) -> Result<(Vec<Change>, Vec<(provider_config::Column, SimpleExpr)>)> {
    if failed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let Some((state, failures)) = provider_config::Entity::find_by_id(config_id)
        .select_only()
        .column(provider_config::Column::CircuitState)
        .column(provider_config::Column::CircuitFailures)
        .into_tuple::<(String, i32)>()
        .one(db)
        .await?
    else {
        return Ok((vec![Change::Unchanged; failed.len()], Vec::new()));
    };
    let (changes, stored) = after_all(&state, failures, failed, threshold);
    let mut set = Vec::new();
    if let Some(stored) = stored {
        set.push((provider_config::Column::CircuitFailures, Expr::value(stored.failures)));
        if stored.since {
            set.push((provider_config::Column::CircuitSince, Expr::value(now)));
        }
        if let Some(next) = stored.state {
            set.push((provider_config::Column::CircuitState, Expr::value(next.as_str())));
        }
    }
    Ok((changes, set))
}

/// Takes the probe of an open circuit for a claim at `now`: marks it `half_open` since `now`,
/// provided it is still as read (`state`, `since`), so that of several workers only one probes.
pub async fn take_probe(
    db: &impl ConnectionTrait,
    config_id: Uuid,
    state: &str,
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<bool> {
    let same_since = match since {
        Some(at) => provider_config::Column::CircuitSince.eq(at),
        None => provider_config::Column::CircuitSince.is_null(),
    };
    let taken = provider_config::Entity::update_many()
        .col_expr(provider_config::Column::CircuitState, Expr::value(CircuitState::HalfOpen.as_str()))
        .col_expr(provider_config::Column::CircuitSince, Expr::value(now))
        .filter(provider_config::Column::Id.eq(config_id))
        .filter(provider_config::Column::CircuitState.eq(state))
        .filter(same_since)
        .exec(db)
        .await?;
    Ok(taken.rows_affected == 1)
}

/// The circuit closed: the config's waiting deliveries are made due again, `per_sec` of them per
/// second from `now` (oldest first), so that a provider just back is not sent the whole backlog
/// at once, nor does the backlog wait out backoffs grown during the outage. Returns how many.
pub async fn release(db: &impl ConnectionTrait, config_id: Uuid, per_sec: u64, now: DateTime<Utc>) -> Result<u64> {
    let waiting: Vec<Uuid> = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Id)
        .filter(delivery::Column::ConfigId.eq(config_id))
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .filter(Condition::any().add(delivery::Column::LeaseUntil.is_null()).add(delivery::Column::LeaseUntil.lt(now)))
        .order_by_asc(delivery::Column::CreatedAt)
        .into_tuple()
        .all(db)
        .await?;
    let mut released = 0;
    for (wave, ids) in waiting.chunks(per_sec.clamp(1, 10_000) as usize).enumerate() {
        let due = now + Duration::seconds(wave as i64);
        let res = delivery::Entity::update_many()
            .col_expr(delivery::Column::NextAttemptAt, Expr::value(due))
            .filter(delivery::Column::Id.is_in(ids.iter().copied()))
            .filter(super::pending_by_id())
            .exec(db)
            .await?;
        released += res.rows_affected;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use CircuitState::*;

    #[test]
    fn failures_in_a_row_open_the_circuit_and_any_answer_closes_it() {
        // (state, failures before, failed, threshold) → (state, failures after)
        let table = [
            ((Closed, 0, true, 3), (Closed, 1)),
            ((Closed, 2, true, 3), (Open, 3)),
            ((Closed, 7, true, 0), (Closed, 8)),
            ((Closed, 2, false, 3), (Closed, 0)),
            ((Open, 3, true, 3), (Open, 4)),
            ((HalfOpen, 3, true, 3), (Open, 4)),
            ((HalfOpen, 9, false, 3), (Closed, 0)),
            ((Open, 9, false, 3), (Closed, 0)),
        ];
        for ((s, f, failed, t), want) in table {
            assert_eq!(after(s, f, failed, t), want, "{s:?} {f} failed={failed} threshold={t}");
        }
    }

    #[test]
    fn a_batch_of_requests_is_the_same_requests_recorded_one_by_one() {
        // (stored state, failures, requests' failed) → changes, what is stored.
        let stored = |failures, state, since| Some(Stored { failures, state, since });
        use Change::{Closed as C, Opened as O, Unchanged as U};
        let table = [
            (("closed", 0, vec![false, false]), (vec![U, U], None)),
            (("closed", 0, vec![true, false]), (vec![U, U], None)),
            (("closed", 1, vec![false]), (vec![U], stored(0, None, false))),
            (("closed", 1, vec![true, true]), (vec![U, O], stored(3, Some(Open), true))),
            (("closed", 1, vec![true, true, false]), (vec![U, O, C], stored(0, None, true))),
            (("half_open", 3, vec![true]), (vec![U], stored(4, Some(Open), false))),
            (("half_open", 3, vec![false, true]), (vec![C, U], stored(1, Some(Closed), true))),
            (("garbled", 0, vec![true]), (vec![U], stored(1, Some(Open), false))),
        ];
        for ((state, failures, failed), want) in table {
            assert_eq!(after_all(state, failures, &failed, 3), want, "{state} {failures} {failed:?}");
        }
    }

    #[test]
    fn an_open_circuit_admits_one_probe_per_interval() {
        let now: DateTime<Utc> = "2026-11-30T12:00:00Z".parse().unwrap();
        let every = Duration::seconds(30);
        assert_eq!(admits(Closed, None, now, every), Admits::All);
        assert_eq!(admits(Open, Some(now - Duration::seconds(10)), now, every), Admits::Nothing);
        assert_eq!(admits(Open, Some(now - Duration::seconds(30)), now, every), Admits::Probe);
        assert_eq!(admits(HalfOpen, Some(now - Duration::seconds(5)), now, every), Admits::Nothing);
        assert_eq!(admits(HalfOpen, Some(now - Duration::seconds(31)), now, every), Admits::Probe, "a lost probe");
        assert_eq!(admits(Open, None, now, every), Admits::Probe);
    }

    #[test]
    fn an_unreadable_state_fails_closed_as_open() {
        assert_eq!(CircuitState::stored("closed"), Closed);
        assert_eq!(CircuitState::stored("half_open"), HalfOpen);
        assert_eq!(CircuitState::stored("CLOSED"), Open);
        assert_eq!(CircuitState::stored(""), Open);
    }
}
