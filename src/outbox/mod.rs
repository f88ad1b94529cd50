//! The delivery outbox: every allowed (event, config) pair is a `delivery` row, written in the same
//! transaction as the event, and sent by a worker afterwards — so an event that was answered
//! `202` is delivered even if the process dies right after, and a provider that is down only
//! delays it.
//!
//! - [`claim`]: takes due deliveries of `active` configs under a lease (PostgreSQL: `FOR UPDATE
//!   SKIP LOCKED`, so many instances share the table; SQLite: one worker per process inside an
//!   `IMMEDIATE` transaction, since SQLite ignores row locks). A crashed worker's claims are taken
//!   over once their lease has passed.
//! - [`worker`]: the loop, per-provider concurrency limits, sending, and recording the outcome;
//!   [`Worker::run_once`] runs one claim + send + record pass and says what it did (tests drive
//!   the outbox with it instead of waiting for the loop).
//! - [`backoff`]: exponential backoff with full jitter, capped; `Retry-After` honoured.
//! - [`log`]: the delivery log for admins and auditors, and replays.
//!
//! The one module that updates `delivery` rows; the ingest transaction creates them through
//! [`enqueue`].

pub mod backoff;
pub mod claim;
pub mod destination;
pub mod log;
pub mod worker;

pub use worker::{Pass, Worker};

use std::{net::IpAddr, sync::Arc};

use chrono::{DateTime, Utc};
use entity::delivery;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, sea_query::Expr};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{consent::Identity, error::Result, string_enum::string_enum};

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
        /// Dead-lettered: refused, or out of attempts.
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
}

/// A new pending delivery, due at once, inside the caller's (the ingest) transaction.
pub async fn enqueue(db: &impl ConnectionTrait, new: NewDelivery<'_>, now: DateTime<Utc>) -> Result<Uuid> {
    let id = Uuid::now_v7();
    delivery::ActiveModel {
        id: Set(id),
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
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await?;
    Ok(id)
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
/// visitor (client IP, consent-lookup id, user agent) is erased.
pub async fn end_for_config(db: &impl ConnectionTrait, config_id: Uuid, reason: &str) -> Result<()> {
    let now = Utc::now();
    delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value(DeliveryStatus::Dead.as_str()))
        .col_expr(delivery::Column::LastError, Expr::value(reason))
        .col_expr(delivery::Column::ClientIp, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::ConsentLookupId, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::UserAgent, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LeaseOwner, Expr::value(Option::<String>::None))
        .col_expr(delivery::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
        .filter(delivery::Column::ConfigId.eq(config_id))
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .exec(db)
        .await?;
    Ok(())
}
