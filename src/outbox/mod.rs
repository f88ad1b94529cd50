//! The delivery outbox: every allowed (event, config) pair is a `delivery` row, written in the same
//! transaction as the event, and sent by a worker afterwards — so an event that was answered
//! `202` is delivered even if the process dies right after, and a provider that is down only
//! delays it.
//!
//! - [`claim`]: takes due deliveries of `active` configs under a lease (PostgreSQL: `FOR UPDATE
//!   SKIP LOCKED`, so many instances share the table; SQLite: one worker per process inside an
//!   `IMMEDIATE` transaction, since SQLite ignores row locks). A crashed worker's claims are taken
//!   over once their lease has passed.
//! - [`worker`]: the loop, claiming into free in-flight slots, sending, and recording the outcome;
//!   [`Worker::run_once`] runs one claim + send + record pass and says what it did (tests drive
//!   the outbox with it instead of waiting for the loop).
//! - [`inflight`]: the adaptive in-flight window per provider config (AIMD with slow start;
//!   429/5xx/timeouts halve it, `Retry-After` pauses the config).
//! - [`group`]: group commit — the outcomes of requests answered together, in one transaction.
//! - [`backoff`]: exponential backoff with full jitter, capped; `Retry-After` honoured.
//! - [`horizon`]: retrying by time — a delivery is tried until its horizon (72 h after the
//!   event arrived by default; shorter for a provider with its own age limit), then
//!   dead-lettered saying so, replayable.
//! - [`circuit`]: the per-config circuit — after failed requests in a row a config's deliveries
//!   are held back and probed at a steady pace, and released (paced) once a probe succeeds.
//! - [`stats`]: outbox depth, oldest pending age and circuits per config, for `/metrics`.
//! - [`log`]: the delivery log for admins and auditors, and replays.
//!
//! The one module that updates `delivery` rows; the ingest writer creates them from
//! [`pending`].

pub mod backoff;
pub mod batch;
pub mod circuit;
pub mod claim;
pub mod destination;
mod ending;
pub mod group;
pub mod horizon;
pub mod inflight;
pub mod log;
pub mod stats;
pub mod worker;

pub use worker::{Pass, Worker};

use std::{net::IpAddr, sync::Arc};

use chrono::{DateTime, Utc};
use entity::delivery;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, UpdateMany,
    sea_query::{Expr, SimpleExpr},
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    consent::{Category, Choices, Identity},
    error::Result,
    string_enum::string_enum,
};

/// A handle to wake the workers of this process when new deliveries are due, so that an event
/// goes out at once instead of at the next poll. It also carries the secrets service the workers
/// resolve credentials with (`Default`: the default `[secrets]` settings).
#[derive(Clone, Default)]
pub struct Outbox {
    wake: Arc<Notify>,
    secrets: Arc<crate::secrets::Secrets>,
}

impl Outbox {
    pub fn new(secrets: Arc<crate::secrets::Secrets>) -> Self {
        Outbox { wake: Default::default(), secrets }
    }

    pub fn secrets(&self) -> Arc<crate::secrets::Secrets> {
        self.secrets.clone()
    }

    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    pub(crate) fn woken(&self) -> &Notify {
        &self.wake
    }
}

string_enum! {
    /// Where a delivery is (`delivery.status`). Read back as stored: the delivery log shows the
    /// stored string, so an unknown one is listed, never a 500; only `pending` is ever claimed.
    #[derive(utoipa::ToSchema)]
    pub enum DeliveryStatus {
        Pending = "pending",
        Delivered = "delivered",
        /// The provider answered with success but discarded the event.
        Dropped = "dropped",
        /// Dead-lettered: refused, or not delivered within the retry horizon.
        Dead = "dead",
    }
}

/// A delivery to create: one event to one config.
pub struct NewDelivery<'a> {
    pub tenant_id: Uuid,
    pub event_id: Uuid,
    pub config_id: Uuid,
    pub provider: &'a str,
    /// What the decision allowed to be sent.
    pub identity: Identity,
    /// The visitor's full IP, kept only until the delivery ends.
    pub client_ip: Option<IpAddr>,
    /// The consent-lookup id, for deciding again at send time; kept only until the delivery ends
    /// (the event itself never holds it).
    pub consent_lookup_id: Option<&'a str>,
    /// The visitor's user agent (cookie-free providers count visitors by it with the IP); kept
    /// only until the delivery ends.
    pub user_agent: Option<&'a str>,
    /// The optional categories the decision found granted; kept only until the delivery ends.
    pub granted: Choices,
    /// A pseudonymous visitor id for the provider (PostHog's cookieless daily id); kept only
    /// until the delivery ends.
    pub pseudonymous_id: Option<&'a str>,
}

/// The row of a new pending delivery, due at once: inserted by the ingest writer, many at once,
/// in the transaction that stores the event (`ingest::store`).
pub fn pending(new: NewDelivery<'_>, now: DateTime<Utc>) -> delivery::ActiveModel {
    delivery::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(new.tenant_id),
        event_id: Set(new.event_id),
        config_id: Set(new.config_id),
        provider: Set(new.provider.to_string()),
        identity: Set(new.identity.as_str().into()),
        status: Set(DeliveryStatus::Pending.as_str().into()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        lease_owner: Set(None),
        lease_until: Set(None),
        last_status: Set(None),
        last_error: Set(None),
        warning: Set(None),
        delivered_at: Set(None),
        client_ip: Set(new.client_ip.map(|ip| ip.to_string())),
        consent_lookup_id: Set(new.consent_lookup_id.map(String::from)),
        user_agent: Set(new.user_agent.map(String::from)),
        granted: Set(Some(granted_text(new.granted))),
        pseudonymous_id: Set(new.pseudonymous_id.map(String::from)),
        // The horizon counts from `created_at` (the event's arrival); see `horizon`.
        expires_at: Set(None),
        claimed_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

/// `status = 'pending'` for a statement that names its deliveries by id (`id IN (…)`): written
/// so that no index can serve it, and the deliveries are found by their primary key. As a plain
/// `status = ?` SQLite's planner (no statistics) took `ix_delivery_status_created (status = ?)`
/// over the ids — a scan of every waiting delivery for each claim's lease and each batch of
/// outcomes: 4–5 ms per statement with ~30,000 waiting, 72% of the outbox's database time while
/// draining (docs/scaling.md#the-outbox). `status || ''` is standard SQL on both backends.
pub(crate) fn pending_by_id() -> SimpleExpr {
    use sea_orm::{ExprTrait, sea_query::BinOper};
    Expr::col((delivery::Entity, delivery::Column::Status))
        .binary(BinOper::Custom("||"), "")
        .eq(DeliveryStatus::Pending.as_str())
}

/// The deliveries `ids` still pending and leased to `owner` — found by id
/// ([`pending_by_id`]): what a lease's renewal and an outcome may write, nothing of a delivery
/// whose lease passed to another worker.
pub(crate) fn held_by(ids: impl IntoIterator<Item = Uuid>, owner: &str) -> sea_orm::Condition {
    sea_orm::Condition::all()
        .add(delivery::Column::Id.is_in(ids))
        .add(delivery::Column::LeaseOwner.eq(owner))
        .add(pending_by_id())
}

/// A config became `active` again: its waiting deliveries are due now, not at the end of a
/// backoff that grew while the config was broken.
pub async fn resume_config(db: &impl ConnectionTrait, config_id: Uuid) -> Result<()> {
    let now = Utc::now();
    delivery::Entity::update_many()
        .col_expr(delivery::Column::NextAttemptAt, Expr::value(now))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
        .filter(delivery::Column::ConfigId.eq(config_id))
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// A config was decommissioned: its waiting deliveries end as dead (replayable only if the
/// config were active again, which a decommissioned one never is), and what they held of the
/// visitor (client IP, consent-lookup id, user agent, granted categories, pseudonymous id) is
/// erased.
pub async fn end_for_config(db: &impl ConnectionTrait, config_id: Uuid, reason: &str) -> Result<()> {
    end_as_dead(Expr::value(reason), Utc::now())
        .filter(delivery::Column::ConfigId.eq(config_id))
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

/// How the `last_error` of a delivery ended by the visitor's consent (withdrawn, or expired, before
/// it was sent) begins: such a delivery is never replayed (`log::replay`).
pub const CONSENT_CHANGED: &str = "consent changed before delivery";

/// An update ending deliveries as dead with `last_error` = `reason`: what they held of the
/// visitor (client IP, consent-lookup id, user agent, granted categories, pseudonymous id) and
/// their lease are erased. The caller adds which deliveries.
pub(crate) fn end_as_dead(reason: SimpleExpr, now: DateTime<Utc>) -> UpdateMany<delivery::Entity> {
    delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value(DeliveryStatus::Dead.as_str()))
        .col_expr(delivery::Column::LastError, reason)
        .col_expr(delivery::Column::ClientIp, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::ConsentLookupId, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::UserAgent, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::Granted, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::PseudonymousId, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::ClaimedAt, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
}

/// `delivery.granted`: the granted optional categories, comma-separated (`analytics,marketing`),
/// empty when none is.
pub fn granted_text(c: Choices) -> String {
    [Category::Functional, Category::Analytics, Category::Marketing]
        .into_iter()
        .filter(|k| c.get(*k))
        .map(Category::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// `delivery.granted` read back. Fails closed: unknown (`NULL`) grants nothing, and a word that
/// is not an optional category grants nothing.
pub fn read_granted(stored: Option<&str>) -> Choices {
    let mut c = Choices::none();
    for word in stored.unwrap_or_default().split(',') {
        match Category::parse(word.trim()) {
            Some(Category::Functional) => c.functional = true,
            Some(Category::Analytics) => c.analytics = true,
            Some(Category::Marketing) => c.marketing = true,
            Some(Category::Necessary) | None => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_categories_are_stored_as_text_and_read_back_failing_closed() {
        for c in [
            Choices::none(),
            Choices::all(),
            Choices { functional: false, analytics: true, marketing: false },
            Choices { functional: true, analytics: false, marketing: true },
        ] {
            assert_eq!(read_granted(Some(&granted_text(c))), c);
        }
        assert_eq!(granted_text(Choices::all()), "functional,analytics,marketing");
        assert_eq!(granted_text(Choices::none()), "");
        assert_eq!(read_granted(None), Choices::none(), "unknown grants nothing");
        assert_eq!(
            read_granted(Some("analytics,ads,MARKETING")),
            Choices { functional: false, analytics: true, marketing: false },
            "unreadable words grant nothing"
        );
    }
}
