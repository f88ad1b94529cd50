//! The delivery worker: claims due deliveries provider by provider (never more than the
//! provider's free concurrency slots, so a lease only ever covers a request in flight), sends
//! each with the request the provider module built, and records what the answer means.
//!
//! Retry policy. Timeouts, connection errors, 408, 429 and 5xx are retried with backoff, then
//! dead-lettered after `max_attempts`. Plausible and Umami have no idempotency key, so a request
//! that timed out after the provider had taken it is counted twice when retried; the gateway
//! accepts that rare double count rather than losing events on every slow answer. Other 4xx go to
//! the dead letters at once with the provider's answer. 401/403 count towards the config's
//! `error` status and never dead-letter the event: the event is fine, the config is not.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use entity::{analytics_event, delivery, provider_config};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter, Set};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Outbox, backoff, claim, destination, status};
use crate::{
    config::DeliverySettings,
    consent::Identity,
    error::Result,
    providers::{self, AnyProvider, Outcome, Outgoing, ProviderRequest, ProviderResponse, config::usage},
};

/// Bytes of a provider's answer read at most (enough for any error message).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

struct Worker {
    db: DatabaseConnection,
    settings: DeliverySettings,
    http: reqwest::Client,
    owner: String,
}

/// The longest wait between claim rounds while claiming fails.
const CLAIM_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// One "claiming failed" line per minute at most, with the count of the ones folded into it.
static CLAIM_LOG: crate::telemetry::LogThrottle =
    crate::telemetry::LogThrottle::new(std::time::Duration::from_secs(60));

/// Runs until `shutdown`, then waits for the requests in flight.
pub async fn run(db: DatabaseConnection, settings: DeliverySettings, outbox: Outbox, shutdown: CancellationToken) {
    let mut builder = reqwest::Client::builder()
        // Provider URLs come from config; a redirect would turn the POST into a GET elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_millis(settings.request_timeout_ms));
    if !settings.allow_private_destinations {
        builder = builder.dns_resolver(Arc::new(destination::PublicOnly));
    }
    let http = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the delivery HTTP client; deliveries stay pending");
            return;
        }
    };
    let worker = Arc::new(Worker { db, owner: format!("worker-{}", Uuid::new_v4()), settings, http });
    let slots: HashMap<&'static str, Arc<Semaphore>> = providers::all()
        .iter()
        .map(|p| (p.name(), Arc::new(Semaphore::new(worker.settings.concurrency_per_provider))))
        .collect();
    let lease = chrono::Duration::seconds(worker.settings.lease_secs.max(1) as i64);
    let poll = std::time::Duration::from_millis(worker.settings.poll_interval_ms.max(10));
    let mut in_flight = JoinSet::new();
    // While claiming fails (the database is unreachable), wait longer each round, up to
    // `CLAIM_BACKOFF_MAX`, and log one line per period instead of one per provider and round.
    let mut claim_wait = poll;
    tracing::info!(owner = %worker.owner, "delivery worker started");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let mut claimed_any = false;
        let mut claim_failed = false;
        for provider in providers::all() {
            let slot = &slots[provider.name()];
            let free = slot.available_permits() as u64;
            if free == 0 {
                continue;
            }
            let n = free.min(worker.settings.batch_size.max(1));
            match claim::claim(&worker.db, provider.name(), &worker.owner, n, lease).await {
                Ok(claimed) => {
                    for d in claimed {
                        let Ok(permit) = slot.clone().try_acquire_owned() else { break };
                        claimed_any = true;
                        let w = worker.clone();
                        in_flight.spawn(async move { w.process(*provider, d, permit).await });
                    }
                }
                Err(e) => {
                    claim_failed = true;
                    if let Some(suppressed) = CLAIM_LOG.allow() {
                        tracing::warn!(error = %e, suppressed, "claiming deliveries failed; retrying with backoff");
                    }
                }
            }
        }
        claim_wait = if claim_failed { (claim_wait * 2).min(CLAIM_BACKOFF_MAX.max(poll)) } else { poll };
        while in_flight.try_join_next().is_some() {}
        if claimed_any {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = outbox.woken().notified() => {}
            _ = tokio::time::sleep(claim_wait) => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
    tracing::info!(owner = %worker.owner, "delivery worker stopped");
}

impl Worker {
    async fn process(&self, provider: &'static dyn AnyProvider, d: delivery::Model, _permit: OwnedSemaphorePermit) {
        let id = d.id;
        if let Err(e) = self.try_process(provider, d).await {
            tracing::warn!(delivery = %id, error = %e, "delivery could not be processed; it is retried after its lease");
        }
    }

    async fn try_process(&self, provider: &'static dyn AnyProvider, d: delivery::Model) -> Result<()> {
        let config = provider_config::Entity::find_by_id(d.config_id).one(&self.db).await?;
        let Some(config) = config.filter(|c| c.status == "active") else {
            return claim::release(&self.db, d.id, &self.owner).await;
        };
        let Some(event) = analytics_event::Entity::find_by_id(d.event_id).one(&self.db).await? else {
            return self
                .record(&d, &config, None, Outcome::Dead { reason: "the event no longer exists".into() }, &[])
                .await;
        };
        let mut identity = if d.identity == "full" { Identity::Full } else { Identity::Anonymous };
        // A newer decision of the visitor can only take away: never more than ingest allowed.
        if let Some(now) = crate::ingest::redecide(&self.db, &event, &config, provider).await? {
            match now.identity() {
                None => {
                    let reason = format!("consent changed before delivery ({}); not sent", now.reason());
                    return self.record(&d, &config, None, Outcome::Dead { reason }, &[]).await;
                }
                Some(Identity::Anonymous) => identity = Identity::Anonymous,
                Some(Identity::Full) => {}
            }
        }
        // The full IP while pending; after a replay (it was erased when the delivery first
        // ended) the stored truncated one, which still locates the visitor's network.
        let client_ip: Option<IpAddr> =
            d.client_ip.as_deref().or(event.ip_truncated.as_deref()).and_then(|ip| ip.parse().ok());
        let request = match provider.build(&config.settings, &Outgoing { event: &event, identity, client_ip }) {
            Ok(r) => r,
            Err(reason) => return self.record(&d, &config, None, Outcome::Dead { reason }, &[]).await,
        };
        let started = Instant::now();
        let (outcome, http_status) = self.send(provider, &request).await;
        let elapsed = started.elapsed();
        metrics::histogram!("consentgate_delivery_duration_seconds", "provider" => provider.name())
            .record(elapsed.as_secs_f64());
        metrics::counter!("consentgate_deliveries_total", "provider" => provider.name(), "outcome" => outcome.label())
            .increment(1);
        if matches!(outcome, Outcome::Delivered | Outcome::DeliveredButDropped { .. }) {
            let lag = (Utc::now() - event.occurred_at).num_milliseconds().max(0) as f64 / 1000.0;
            metrics::histogram!("consentgate_delivery_lag_seconds", "provider" => provider.name()).record(lag);
        }
        tracing::debug!(delivery = %d.id, provider = provider.name(), outcome = outcome.label(), ?elapsed, "delivery attempt");
        self.record(&d, &config, http_status, outcome, &request.adjustments).await
    }

    /// Sends the request; transport failures are retries.
    async fn send(
        &self,
        provider: &dyn AnyProvider,
        req: &ProviderRequest,
    ) -> (Outcome, Option<(u16, Option<std::time::Duration>)>) {
        if !self.settings.allow_private_destinations
            && let Err(refused) = destination::check_literal(&req.url)
        {
            return (Outcome::Dead { reason: refused.to_string() }, None);
        }
        let mut builder = self.http.post(&req.url);
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        let body = match serde_json::to_vec(&req.body) {
            Ok(b) => b,
            Err(e) => return (Outcome::Dead { reason: format!("cannot encode the request: {e}") }, None),
        };
        let response = match builder.body(body).send().await {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return (Outcome::Dead { reason: format!("cannot build the request: {e}") }, None);
            }
            Err(e) if destination::refused(&e).is_some() => {
                let reason = destination::refused(&e).map(ToString::to_string).unwrap_or_default();
                return (Outcome::Dead { reason }, None);
            }
            Err(e) if e.is_timeout() => {
                let ms = self.settings.request_timeout_ms;
                return (Outcome::Retry { reason: format!("{} did not answer within {ms} ms", provider.name()) }, None);
            }
            Err(e) => {
                let kind = if e.is_connect() { "connection failed" } else { "request failed" };
                return (Outcome::Retry { reason: format!("{}: {kind}: {}", provider.name(), error_chain(&e)) }, None);
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| backoff::parse_retry_after(v, Utc::now()));
        let body = read_limited(response).await;
        let outcome = provider.classify(&ProviderResponse { status, headers: &headers, body: &body });
        (outcome, Some((status, retry_after)))
    }

    /// Records an attempt's outcome on the delivery (only while this worker holds its lease) and
    /// the config's usage, in one transaction.
    async fn record(
        &self,
        d: &delivery::Model,
        config: &provider_config::Model,
        answer: Option<(u16, Option<std::time::Duration>)>,
        outcome: Outcome,
        adjustments: &[String],
    ) -> Result<()> {
        let now = Utc::now();
        let txn = crate::db::begin_write(&self.db).await?;
        let Some(current) = delivery::Entity::find_by_id(d.id)
            .filter(delivery::Column::LeaseOwner.eq(self.owner.as_str()))
            .filter(delivery::Column::Status.eq(status::PENDING))
            .one(&txn)
            .await?
        else {
            tracing::warn!(delivery = %d.id, "lease lost before the outcome was recorded");
            return Ok(());
        };
        let attempts = current.attempts + 1;
        let mut row = current.into_active_model();
        row.attempts = Set(attempts);
        row.last_status = Set(answer.map(|(s, _)| s as i32));
        row.lease_owner = Set(None);
        row.lease_until = Set(None);
        row.updated_at = Set(now);
        let adjusted = (!adjustments.is_empty()).then(|| adjustments.join("; "));
        let end = |row: &mut delivery::ActiveModel, st: &str| {
            row.status = Set(st.into());
            // The visitor's full IP was only needed to send; it goes when the delivery ends.
            row.client_ip = Set(None);
        };
        let retry_at = |ra: Option<std::time::Duration>| -> DateTime<Utc> {
            let wait = backoff::delay(
                attempts,
                self.settings.backoff_base_ms,
                self.settings.backoff_max_ms,
                backoff::unit_random(),
                ra,
            );
            now + chrono::Duration::from_std(wait).unwrap_or_default()
        };
        let retry_after = answer.and_then(|(_, ra)| ra);
        match &outcome {
            Outcome::Delivered => {
                end(&mut row, status::DELIVERED);
                row.delivered_at = Set(Some(now));
                row.last_error = Set(None);
                row.warning = Set(adjusted);
                row.update(&txn).await?;
                usage::sent(&txn, config.id, now).await?;
            }
            Outcome::DeliveredButDropped { warning } => {
                end(&mut row, status::DROPPED);
                row.last_error = Set(None);
                row.warning = Set(Some(match adjusted {
                    Some(a) => format!("{warning}; {a}"),
                    None => warning.clone(),
                }));
                row.update(&txn).await?;
                usage::dropped(&txn, config.id, warning, now).await?;
            }
            Outcome::Dead { reason } => {
                end(&mut row, status::DEAD);
                row.last_error = Set(Some(reason.clone()));
                row.update(&txn).await?;
                usage::failed(&txn, config.id, reason, true, now).await?;
            }
            Outcome::Retry { reason } if attempts >= self.settings.max_attempts => {
                let reason = format!("gave up after {attempts} attempts; last: {reason}");
                end(&mut row, status::DEAD);
                row.last_error = Set(Some(reason.clone()));
                row.update(&txn).await?;
                usage::failed(&txn, config.id, &reason, true, now).await?;
            }
            Outcome::Retry { reason } => {
                row.next_attempt_at = Set(retry_at(retry_after));
                row.last_error = Set(Some(reason.clone()));
                row.update(&txn).await?;
                usage::failed(&txn, config.id, reason, false, now).await?;
            }
            Outcome::AuthFailure { reason } => {
                row.next_attempt_at = Set(retry_at(retry_after));
                row.last_error = Set(Some(reason.clone()));
                row.update(&txn).await?;
                let threshold = self.settings.auth_failures_before_error.max(1);
                if usage::auth_failed(&txn, config.id, reason, threshold, now).await? {
                    tracing::warn!(config = %config.id, provider = %config.provider, %reason,
                        "provider config put into status error after repeated authentication failures");
                }
            }
        }
        txn.commit().await?;
        Ok(())
    }
}

async fn read_limited(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    body
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
