//! The delivery worker: claims due deliveries provider by provider (no more than its free
//! concurrency slots — one per request — can carry, so a lease only ever covers a request about
//! to be sent or in flight), groups them into requests ([`super::batch`]: per config and batch
//! key, at most the provider's batch limit), sends each with the request the provider module
//! built, and records what the answer means for each delivery, one transaction per request.
//!
//! Retry policy. Timeouts, connection errors, 408, 429 and 5xx are retried with backoff, then
//! dead-lettered after `max_attempts`. Plausible and Umami have no idempotency key, so a request
//! that timed out after the provider had taken it is counted twice when retried; the gateway
//! accepts that rare double count rather than losing events on every slow answer. Other 4xx go to
//! the dead letters at once with the provider's answer. 401/403 count towards the config's
//! `error` status and never dead-letter the event: the event is fine, the config is not.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::Arc,
    time::Instant,
};

use chrono::{DateTime, Utc};
use entity::{analytics_event, delivery, provider_config};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    Set,
};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{DeliveryStatus, Outbox, backoff, batch, claim, destination};
use crate::{
    config::DeliverySettings,
    consent::Identity,
    error::Result,
    providers::{self, Answer, AnyProvider, Item, Outcome, Outgoing, ProviderRequest, ProviderResponse, config::usage},
    secrets::Credentials,
};

/// Bytes of a provider's answer read at most (enough for any error message).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Sends claimed deliveries and records their outcomes. The background loop ([`run`]) and
/// [`Worker::run_once`] (tests, tools) share everything but the scheduling: the same claim into
/// free concurrency slots and the same attempt per delivery.
pub struct Worker {
    db: DatabaseConnection,
    settings: DeliverySettings,
    http: reqwest::Client,
    /// The lease owner name of this worker (unique per worker).
    owner: String,
    /// Free concurrency slots per provider: a delivery is only claimed into a free slot, so a
    /// lease only ever covers a request about to be sent or in flight.
    slots: HashMap<&'static str, Arc<Semaphore>>,
    /// Resolves the config's credential references before its requests are built.
    secrets: Arc<crate::secrets::Secrets>,
}

/// What one pass of [`Worker::run_once`] did, one count per claimed delivery by what became of it
/// (plus the claims or attempts that failed on the database).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Deliveries this pass leased.
    pub claimed: usize,
    /// Accepted by the provider.
    pub delivered: usize,
    /// Answered with success but discarded by the provider (`dropped`).
    pub dropped: usize,
    /// Failed (a transient error or a 401/403) and due again after a backoff.
    pub retried: usize,
    /// Ended in the dead letters: a final error, attempts used up, consent withdrawn since
    /// ingest, or the event gone.
    pub dead: usize,
    /// Given back without an attempt: the config is no longer `active`, or the round claimed
    /// more requests' worth than it had free slots for (due again at once).
    pub released: usize,
    /// Attempted, but the lease had passed to another worker before the outcome was recorded.
    pub lease_lost: usize,
    /// A claim or an attempt failed on the database (logged); what was leased is due again once
    /// its lease has passed.
    pub errors: usize,
}

impl Pass {
    fn count(&mut self, done: Attempted) {
        let n = match done {
            Attempted::Delivered => &mut self.delivered,
            Attempted::Dropped => &mut self.dropped,
            Attempted::Retried => &mut self.retried,
            Attempted::Dead => &mut self.dead,
            Attempted::Released => &mut self.released,
            Attempted::LeaseLost => &mut self.lease_lost,
            Attempted::Failed => &mut self.errors,
        };
        *n += 1;
    }
}

impl std::ops::AddAssign for Pass {
    fn add_assign(&mut self, o: Pass) {
        self.claimed += o.claimed;
        self.delivered += o.delivered;
        self.dropped += o.dropped;
        self.retried += o.retried;
        self.dead += o.dead;
        self.released += o.released;
        self.lease_lost += o.lease_lost;
        self.errors += o.errors;
    }
}

/// What became of one claimed delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempted {
    Delivered,
    Dropped,
    Retried,
    Dead,
    Released,
    LeaseLost,
    Failed,
}

/// A provider's deliveries leased by this worker in one claim, with the concurrency slots they
/// were claimed into (one per request at most).
struct Round {
    provider: &'static dyn AnyProvider,
    deliveries: Vec<delivery::Model>,
    slots: Vec<OwnedSemaphorePermit>,
}

/// A delivery whose item is built, waiting for its request.
struct Ready {
    delivery: delivery::Model,
    occurred_at: DateTime<Utc>,
}

/// One request's worth: deliveries of one config sharing a batch key, at most its batch limit,
/// with their items in the same order.
struct Chunk {
    config: Arc<provider_config::Model>,
    credentials: Arc<Credentials>,
    members: Vec<Ready>,
    items: Vec<Item>,
}

/// What the HTTP exchange gave: the status and `Retry-After` when an answer came.
type Answered = Option<(u16, Option<std::time::Duration>)>;

/// The longest wait between claim rounds while claiming fails.
const CLAIM_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// One "claiming failed" line per minute at most, with the count of the ones folded into it.
static CLAIM_LOG: crate::telemetry::LogThrottle =
    crate::telemetry::LogThrottle::new(std::time::Duration::from_secs(60));

/// Runs until `shutdown`, then waits for the requests in flight.
///
/// Each round is [`Worker::run_once`]'s claim, but the attempts are spawned instead of awaited
/// together: the next round claims into the slots that free up while slow requests are still in
/// flight, so one slow provider (up to `request_timeout_ms`) never holds up another's deliveries.
pub async fn run(db: DatabaseConnection, settings: DeliverySettings, outbox: Outbox, shutdown: CancellationToken) {
    let worker = match Worker::new(db, settings, outbox.secrets()) {
        Ok(w) => Arc::new(w),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the delivery HTTP client; deliveries stay pending");
            return;
        }
    };
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
        let (rounds, failed_claims) = worker.claim_due(Utc::now()).await;
        let claimed_any = !rounds.is_empty();
        let claim_failed = failed_claims > 0;
        for round in rounds {
            let w = worker.clone();
            in_flight.spawn(async move { w.deliver(round).await });
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
    /// A worker with its own lease owner name, HTTP client and concurrency slots.
    pub fn new(
        db: DatabaseConnection,
        settings: DeliverySettings,
        secrets: Arc<crate::secrets::Secrets>,
    ) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            // Provider URLs come from config; a redirect would turn the POST into a GET elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_millis(settings.request_timeout_ms));
        if !settings.allow_private_destinations {
            builder = builder.dns_resolver(Arc::new(destination::PublicOnly));
        }
        let http = builder.build().map_err(anyhow::Error::from)?;
        let slots = providers::all()
            .iter()
            .map(|p| (p.name(), Arc::new(Semaphore::new(settings.concurrency_per_provider))))
            .collect();
        Ok(Worker { db, owner: format!("worker-{}", Uuid::new_v4()), settings, http, slots, secrets })
    }

    /// One pass: claims what is due at `now` (every provider, as many requests' worth as it has
    /// free concurrency slots, at most `batch_size` requests), sends them, records the outcomes,
    /// and returns what it did, per delivery.
    ///
    /// `now` is the instant the pass takes for the present when it chooses what is due: a
    /// delivery whose `next_attempt_at` is not after it, whose lease (if any) ended before it. The
    /// background loop passes the clock; a test passes a later instant to reach a backoff or a
    /// lease's end without waiting for it. What the pass records is stamped with the real clock.
    pub async fn run_once(&self, now: DateTime<Utc>) -> Pass {
        let (rounds, errors) = self.claim_due(now).await;
        let claimed = rounds.iter().map(|r| r.deliveries.len()).sum();
        let mut pass = Pass { claimed, errors, ..Pass::default() };
        for done in futures_util::future::join_all(rounds.into_iter().map(|r| self.deliver(r))).await {
            done.into_iter().for_each(|d| pass.count(d));
        }
        pass
    }

    /// Leases the deliveries due at `now`, provider by provider, for as many requests as it has
    /// free concurrency slots (taken before the claim, so concurrent rounds never lease more than
    /// they can send). Returns them with the number of providers whose claim failed.
    async fn claim_due(&self, now: DateTime<Utc>) -> (Vec<Round>, usize) {
        let lease = chrono::Duration::seconds(self.settings.lease_secs.max(1) as i64);
        let mut rounds = Vec::new();
        let mut errors = 0;
        for provider in providers::all() {
            let slot = &self.slots[provider.name()];
            let mut free = Vec::new();
            while (free.len() as u64) < self.settings.batch_size.max(1) {
                let Ok(permit) = slot.clone().try_acquire_owned() else { break };
                free.push(permit);
            }
            if free.is_empty() {
                continue;
            }
            match claim::claim(&self.db, *provider, &self.owner, free.len() as u64, lease, now).await {
                Ok(due) if due.is_empty() => {}
                Ok(due) => {
                    free.truncate(due.len());
                    rounds.push(Round { provider: *provider, deliveries: due, slots: free });
                }
                Err(e) => {
                    errors += 1;
                    if let Some(suppressed) = CLAIM_LOG.allow() {
                        tracing::warn!(error = %e, suppressed, "claiming deliveries failed; retrying with backoff");
                    }
                }
            }
        }
        (rounds, errors)
    }

    /// Sends one round: its deliveries grouped into requests, one request per slot; what has no
    /// slot left goes back at once (due again, for the next round). Returns what became of each
    /// delivery; the slots are free again when this returns.
    async fn deliver(&self, round: Round) -> Vec<Attempted> {
        let Round { provider, deliveries, slots } = round;
        let mut done = Vec::new();
        let mut chunks = Vec::new();
        // Per config, in the order of its oldest due delivery.
        let mut by_config: Vec<(Uuid, Vec<delivery::Model>)> = Vec::new();
        for d in deliveries {
            match by_config.iter_mut().find(|(c, _)| *c == d.config_id) {
                Some((_, ds)) => ds.push(d),
                None => by_config.push((d.config_id, vec![d])),
            }
        }
        for (config_id, ds) in by_config {
            let (count, before) = (ds.len(), done.len());
            match self.prepare(provider, config_id, ds, &mut done).await {
                Ok(ready) => chunks.push(ready),
                Err(e) => {
                    tracing::warn!(config = %config_id, error = %e,
                        "deliveries could not be prepared; they are retried after their lease");
                    done.extend(std::iter::repeat_n(Attempted::Failed, count - (done.len() - before)));
                }
            }
        }
        let mut slots = slots.into_iter();
        let mut sends = Vec::new();
        // The slots go round the configs (each one's first request, then each one's second, …),
        // so a config with many one-event requests does not take every slot from the others.
        for chunk in batch::round_robin(chunks) {
            match slots.next() {
                Some(slot) => sends.push(self.send_chunk(provider, chunk, slot)),
                None => {
                    for m in chunk.members {
                        done.push(match claim::release(&self.db, m.delivery.id, &self.owner).await {
                            Ok(()) => Attempted::Released,
                            Err(_) => Attempted::Failed,
                        });
                    }
                }
            }
        }
        drop(slots);
        for sent in futures_util::future::join_all(sends).await {
            done.extend(sent);
        }
        done
    }

    /// One config's deliveries of a round, made ready: each decided again and mapped to its item
    /// (what must not or cannot go is recorded here, alone), the config's credentials resolved
    /// once, and the items cut into requests. What was recorded is pushed on `done`.
    async fn prepare(
        &self,
        provider: &'static dyn AnyProvider,
        config_id: Uuid,
        ds: Vec<delivery::Model>,
        done: &mut Vec<Attempted>,
    ) -> Result<Vec<Chunk>> {
        let config = provider_config::Entity::find_by_id(config_id).one(&self.db).await?;
        let Some(config) = config.filter(crate::providers::config::sends) else {
            for d in ds {
                claim::release(&self.db, d.id, &self.owner).await?;
                done.push(Attempted::Released);
            }
            return Ok(Vec::new());
        };
        let events: HashMap<Uuid, analytics_event::Model> = analytics_event::Entity::find()
            .filter(analytics_event::Column::Id.is_in(ds.iter().map(|d| d.event_id)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|e| (e.id, e))
            .collect();
        let mut keyed = Vec::new();
        for d in ds {
            let Some(event) = events.get(&d.event_id) else {
                let gone = Outcome::Dead { reason: "the event no longer exists".into() };
                done.push(self.record(&d, &config, None, gone, &[]).await?);
                continue;
            };
            match self.item(provider, &config, &d, event).await? {
                Ok((key, item)) => keyed.push((key, (Ready { delivery: d, occurred_at: event.occurred_at }, item))),
                Err(outcome) => done.push(self.record(&d, &config, None, outcome, &[]).await?),
            }
        }
        if keyed.is_empty() {
            return Ok(Vec::new());
        }
        // A reference that does not resolve counts like a refused credential: the deliveries
        // wait (backoff) and, persisting, the config goes to `error` naming the reference.
        let credentials = match self.secrets.resolve_config(&config.credentials).await {
            Ok(c) => Arc::new(c),
            Err(unresolved) => {
                let outcome = if unresolved.failure.transient {
                    Outcome::Retry { reason: unresolved.to_string() }
                } else {
                    Outcome::AuthFailure { reason: unresolved.to_string() }
                };
                let (members, items): (Vec<Ready>, Vec<Item>) = keyed.into_iter().map(|(_, m)| m).unzip();
                let outcomes = vec![outcome; members.len()];
                done.extend(self.record_request(provider, &members, &config, None, outcomes, &items, false).await?);
                return Ok(Vec::new());
            }
        };
        let config = Arc::new(config);
        let limit = provider.batch_limit(&config.settings);
        Ok(batch::chunks(keyed, limit)
            .into_iter()
            .map(|c| {
                let (members, items) = c.into_iter().unzip();
                Chunk { config: config.clone(), credentials: credentials.clone(), members, items }
            })
            .collect())
    }

    /// The delivery decided again (consent may have changed since ingest) and mapped to its item
    /// and batch key; `Err` is the outcome to record instead (a withdrawal, a refused item).
    async fn item(
        &self,
        provider: &'static dyn AnyProvider,
        config: &provider_config::Model,
        d: &delivery::Model,
        event: &analytics_event::Model,
    ) -> Result<std::result::Result<(String, Item), Outcome>> {
        // An identity that cannot be read sends nothing identifying.
        let mut identity = Identity::parse(&d.identity).unwrap_or(Identity::Anonymous);
        let mut granted = super::read_granted(d.granted.as_deref());
        // A newer decision of the visitor can only take away: never more than ingest allowed.
        // The lookup id is on the waiting delivery; a replayed one (erased when it first ended)
        // falls back to the event's analytics id, which older sites sent as the same value.
        let lookup = d.consent_lookup_id.as_deref().or(event.anonymous_id.as_deref());
        if let Some(now) = crate::ingest::redecide(&self.db, event, lookup, config, provider).await? {
            match now.decision.identity() {
                None => {
                    let reason = format!("consent changed before delivery ({}); not sent", now.decision.reason());
                    return Ok(Err(Outcome::ConsentDenied { reason }));
                }
                Some(Identity::Anonymous) => identity = Identity::Anonymous,
                Some(Identity::Full) => {}
            }
            granted = granted.and(now.granted);
        }
        // The full IP while pending; after a replay (it was erased when the delivery first
        // ended) the stored truncated one, which still locates the visitor's network.
        let client_ip: Option<IpAddr> =
            d.client_ip.as_deref().or(event.ip_truncated.as_deref()).and_then(|ip| ip.parse().ok());
        // Likewise the user agent: the delivery's while pending, else what the event kept.
        let user_agent = d.user_agent.as_deref().or(event.user_agent.as_deref());
        let out = Outgoing {
            event,
            delivery_id: d.id,
            identity,
            granted,
            pseudonymous_id: d.pseudonymous_id.as_deref(),
            client_ip,
            user_agent,
        };
        Ok(match provider.item(&config.settings, &out) {
            Ok(item) => Ok((provider.batch_key(&config.settings, &out), item)),
            Err(reason) => Err(Outcome::Dead { reason }),
        })
    }

    /// Sends one request's worth and records the outcomes. A whole-request refusal of several
    /// items is split and the parts sent again at once (each under a renewed lease), so only the
    /// item to blame ends dead. Holds `_slot` (one request in flight at a time) until it returns.
    async fn send_chunk(
        &self,
        provider: &'static dyn AnyProvider,
        chunk: Chunk,
        _slot: OwnedSemaphorePermit,
    ) -> Vec<Attempted> {
        let Chunk { config, mut credentials, members, items } = chunk;
        let lease = chrono::Duration::seconds(self.settings.lease_secs.max(1) as i64);
        let mut done = Vec::new();
        let mut parts = VecDeque::from([(members, items)]);
        let mut first = true;
        while let Some((mut members, mut items)) = parts.pop_front() {
            if !std::mem::take(&mut first) {
                let ids: Vec<Uuid> = members.iter().map(|m| m.delivery.id).collect();
                match claim::renew(&self.db, &ids, &self.owner, lease, Utc::now()).await {
                    Ok(kept) => {
                        let (mut still, mut still_items) = (Vec::new(), Vec::new());
                        for (m, i) in members.into_iter().zip(items) {
                            if kept.contains(&m.delivery.id) {
                                still.push(m);
                                still_items.push(i);
                            } else {
                                tracing::warn!(delivery = %m.delivery.id, "lease lost before the delivery was sent again");
                                done.push(Attempted::LeaseLost);
                            }
                        }
                        (members, items) = (still, still_items);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a lease could not be renewed; the deliveries are retried after it");
                        done.extend(std::iter::repeat_n(Attempted::Failed, members.len()));
                        continue;
                    }
                }
                if members.is_empty() {
                    continue;
                }
            }
            let (next, answered) = self.exchange(provider, &config, &mut credentials, &items).await;
            match next {
                batch::Next::Split => {
                    tracing::debug!(
                        provider = provider.name(),
                        items = items.len(),
                        "whole request refused; splitting it"
                    );
                    let (m1, m2) = batch::halves(members);
                    let (i1, i2) = batch::halves(items);
                    parts.push_front((m2, i2));
                    parts.push_front((m1, i1));
                }
                batch::Next::Record(outcomes) => {
                    let n = members.len();
                    match self.record_request(provider, &members, &config, answered, outcomes, &items, true).await {
                        Ok(v) => done.extend(v),
                        Err(e) => {
                            tracing::warn!(error = %e, "outcomes could not be recorded; the deliveries are retried after their lease");
                            done.extend(std::iter::repeat_n(Attempted::Failed, n));
                        }
                    }
                }
            }
        }
        done
    }

    /// Builds the request for `items`, sends it and says what the answer means per item. A
    /// refusal of the credentials is tried once more with them looked up again (rotated since
    /// cached).
    async fn exchange(
        &self,
        provider: &dyn AnyProvider,
        config: &provider_config::Model,
        credentials: &mut Arc<Credentials>,
        items: &[Item],
    ) -> (batch::Next, Answered) {
        let n = items.len();
        let build = |c: &Credentials| provider.request(&config.settings, c, items);
        let request = match build(credentials) {
            Ok(r) => r,
            Err(reason) => return (batch::judge(Answer::All(Outcome::Dead { reason }), n, provider.name()), None),
        };
        let started = Instant::now();
        let (mut answer, mut answered) = self.send(provider, &request, n).await;
        if matches!(answer, Answer::All(Outcome::AuthFailure { .. })) && !credentials.is_empty() {
            match self.secrets.refresh_config(&config.credentials, credentials).await {
                Ok(Some(fresh)) => {
                    if let Ok(again) = build(&fresh) {
                        (answer, answered) = self.send(provider, &again, n).await;
                    }
                    *credentials = Arc::new(fresh);
                }
                Ok(None) => {}
                Err(unresolved) => answer = Answer::All(Outcome::AuthFailure { reason: unresolved.to_string() }),
            }
        }
        let elapsed = started.elapsed();
        metrics::histogram!("consentgate_delivery_duration_seconds", "provider" => provider.name())
            .record(elapsed.as_secs_f64());
        tracing::debug!(provider = provider.name(), items = n, ?elapsed, "delivery request");
        (batch::judge(answer, n, provider.name()), answered)
    }

    /// Sends the request; transport failures are retries.
    async fn send(&self, provider: &dyn AnyProvider, req: &ProviderRequest, items: usize) -> (Answer, Answered) {
        let all = |o: Outcome| (Answer::All(o), None);
        if !self.settings.allow_private_destinations
            && let Err(refused) = destination::check_literal(&req.url)
        {
            return all(Outcome::Dead { reason: refused.to_string() });
        }
        let mut builder = self.http.post(&req.url);
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        let body = match serde_json::to_vec(&req.body) {
            Ok(b) => b,
            Err(e) => return all(Outcome::Dead { reason: format!("cannot encode the request: {e}") }),
        };
        let response = match builder.body(body).send().await {
            Ok(r) => r,
            Err(e) if e.is_builder() => {
                return all(Outcome::Dead { reason: format!("cannot build the request: {}", describe(e)) });
            }
            Err(e) if destination::refused(&e).is_some() => {
                let reason = destination::refused(&e).map(ToString::to_string).unwrap_or_default();
                return all(Outcome::Dead { reason });
            }
            Err(e) if e.is_timeout() => {
                let ms = self.settings.request_timeout_ms;
                return all(Outcome::Retry { reason: format!("{} did not answer within {ms} ms", provider.name()) });
            }
            Err(e) => {
                let kind = if e.is_connect() { "connection failed" } else { "request failed" };
                return all(Outcome::Retry { reason: format!("{}: {kind}: {}", provider.name(), describe(e)) });
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let retry_after = headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| backoff::parse_retry_after(v, Utc::now()));
        let body = read_limited(response).await;
        let response = ProviderResponse { status, headers: &headers.iter().collect(), body: &body };
        (provider.classify(&response, items), Some((status, retry_after)))
    }

    /// Records the outcomes of one request (or of deliveries that were not sent: `sent` false),
    /// one per delivery, in one transaction, with the metrics of what was sent. A 401/403 counts
    /// once towards the config's `error` status, however many deliveries the request carried.
    #[allow(clippy::too_many_arguments)]
    async fn record_request(
        &self,
        provider: &dyn AnyProvider,
        members: &[Ready],
        config: &provider_config::Model,
        answered: Answered,
        outcomes: Vec<Outcome>,
        items: &[Item],
        sent: bool,
    ) -> Result<Vec<Attempted>> {
        let txn = crate::db::begin_write(&self.db).await?;
        let mut done = Vec::with_capacity(members.len());
        let mut auth_counted = false;
        for ((m, outcome), item) in members.iter().zip(outcomes).zip(items) {
            if sent {
                metrics::counter!("consentgate_deliveries_total", "provider" => provider.name(), "outcome" => outcome.label())
                    .increment(1);
                if matches!(outcome, Outcome::Delivered | Outcome::Dropped { .. }) {
                    let lag = (Utc::now() - m.occurred_at).num_milliseconds().max(0) as f64 / 1000.0;
                    metrics::histogram!("consentgate_delivery_lag_seconds", "provider" => provider.name()).record(lag);
                }
            }
            tracing::debug!(delivery = %m.delivery.id, provider = provider.name(), outcome = outcome.label(), "delivery outcome");
            let counted = auth_counted;
            auth_counted |= matches!(outcome, Outcome::AuthFailure { .. });
            done.push(self.record_in(&txn, &m.delivery, config, answered, outcome, &item.adjustments, !counted).await?);
        }
        txn.commit().await?;
        Ok(done)
    }

    /// Records one delivery's outcome alone, in its own transaction.
    async fn record(
        &self,
        d: &delivery::Model,
        config: &provider_config::Model,
        answered: Answered,
        outcome: Outcome,
        adjustments: &[String],
    ) -> Result<Attempted> {
        let txn = crate::db::begin_write(&self.db).await?;
        let done = self.record_in(&txn, d, config, answered, outcome, adjustments, true).await?;
        txn.commit().await?;
        Ok(done)
    }

    /// Records an attempt's outcome on the delivery (only while this worker holds its lease) and
    /// the config's usage, inside `txn`; returns what became of the delivery. `count_auth`: a
    /// 401/403 counts towards the config's `error` status (once per request).
    #[allow(clippy::too_many_arguments)]
    async fn record_in(
        &self,
        txn: &DatabaseTransaction,
        d: &delivery::Model,
        config: &provider_config::Model,
        answer: Answered,
        outcome: Outcome,
        adjustments: &[String],
        count_auth: bool,
    ) -> Result<Attempted> {
        let now = Utc::now();
        let Some(current) = delivery::Entity::find_by_id(d.id)
            .filter(delivery::Column::LeaseOwner.eq(self.owner.as_str()))
            .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
            .one(txn)
            .await?
        else {
            tracing::warn!(delivery = %d.id, "lease lost before the outcome was recorded");
            return Ok(Attempted::LeaseLost);
        };
        let attempts = current.attempts + 1;
        let mut row = current.into_active_model();
        row.attempts = Set(attempts);
        row.last_status = Set(answer.map(|(s, _)| s as i32));
        row.lease_owner = Set(None);
        row.lease_until = Set(None);
        row.updated_at = Set(now);
        let adjusted = (!adjustments.is_empty()).then(|| adjustments.join("; "));
        let end = |row: &mut delivery::ActiveModel, st: DeliveryStatus| {
            row.status = Set(st.as_str().into());
            // The visitor's full IP, lookup id and agent were only needed to send; they go when
            // the delivery ends.
            row.client_ip = Set(None);
            row.consent_lookup_id = Set(None);
            row.user_agent = Set(None);
            row.granted = Set(None);
            row.pseudonymous_id = Set(None);
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
        let done = match &outcome {
            Outcome::Delivered => {
                end(&mut row, DeliveryStatus::Delivered);
                row.delivered_at = Set(Some(now));
                row.last_error = Set(None);
                row.warning = Set(adjusted);
                row.update(txn).await?;
                usage::sent(txn, config.id, now).await?;
                Attempted::Delivered
            }
            Outcome::Dropped { warning } => {
                end(&mut row, DeliveryStatus::Dropped);
                row.last_error = Set(None);
                row.warning = Set(Some(match adjusted {
                    Some(a) => format!("{warning}; {a}"),
                    None => warning.clone(),
                }));
                row.update(txn).await?;
                usage::dropped(txn, config.id, warning, now).await?;
                Attempted::Dropped
            }
            Outcome::Dead { reason } => {
                end(&mut row, DeliveryStatus::Dead);
                row.last_error = Set(Some(reason.clone()));
                row.update(txn).await?;
                usage::failed(txn, config.id, reason, true, now).await?;
                Attempted::Dead
            }
            Outcome::ConsentDenied { reason } => {
                // Ends like a dead letter (with its reason on the delivery), but counts as a
                // consent denial and leaves the config's `last_error` alone: nothing is wrong
                // with the config.
                end(&mut row, DeliveryStatus::Dead);
                row.last_error = Set(Some(reason.clone()));
                row.update(txn).await?;
                usage::denied_by_consent(txn, config.id).await?;
                Attempted::Dead
            }
            Outcome::Retry { reason } if attempts >= self.settings.max_attempts => {
                let reason = format!("gave up after {attempts} attempts; last: {reason}");
                end(&mut row, DeliveryStatus::Dead);
                row.last_error = Set(Some(reason.clone()));
                row.update(txn).await?;
                usage::failed(txn, config.id, &reason, true, now).await?;
                Attempted::Dead
            }
            Outcome::Retry { reason } => {
                row.next_attempt_at = Set(retry_at(retry_after));
                row.last_error = Set(Some(reason.clone()));
                row.update(txn).await?;
                usage::failed(txn, config.id, reason, false, now).await?;
                Attempted::Retried
            }
            Outcome::AuthFailure { reason } => {
                row.next_attempt_at = Set(retry_at(retry_after));
                row.last_error = Set(Some(reason.clone()));
                row.update(txn).await?;
                let threshold = self.settings.auth_failures_before_error.max(1);
                if count_auth && usage::auth_failed(txn, config.id, reason, threshold, now).await? {
                    tracing::warn!(config = %config.id, provider = %config.provider, %reason,
                        "provider config put into status error after repeated authentication failures");
                }
                Attempted::Retried
            }
        };
        Ok(done)
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

/// A request error for `last_error` and logs, without the URL: reqwest's text includes it, and a
/// credential may travel in the query string (GA4's `api_secret`).
pub(crate) fn describe(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_errors_are_described_without_the_url_and_its_query() {
        // A closed port: the connection fails, and reqwest's own error text carries the URL —
        // with GA4's api_secret in the query string.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/mp/collect?measurement_id=G-1&api_secret=s3cr3t-in-query");
        let e = reqwest::Client::new().post(&url).send().await.unwrap_err();
        assert!(error_chain(&e).contains("s3cr3t-in-query"), "reqwest's text holds the URL: {}", error_chain(&e));
        let described = describe(e);
        assert!(!described.contains("s3cr3t-in-query") && !described.contains("/mp/collect"), "{described}");
        assert!(!described.is_empty());
    }
}
