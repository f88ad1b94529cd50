//! The delivery worker: claims due deliveries provider by provider (no more than the free slots
//! of their configs' in-flight windows — one per request, [`super::inflight`] — can carry, so a
//! lease only ever covers a request about to be sent or in flight), groups them into requests
//! ([`super::batch`]: per config and batch key, at most the provider's batch limit), sends each
//! with the request the provider module built, tells the window what the answer said, and
//! records what it means for each delivery — the outcomes of the requests answered meanwhile
//! together, one transaction for all ([`super::group`]).
//!
//! Retry policy. Timeouts, connection errors, 408, 429 and 5xx are retried with capped backoff
//! until the delivery's retry horizon ([`super::horizon`]), then dead-lettered saying so; failed
//! requests in a row open the config's circuit ([`super::circuit`]). Plausible and Umami have no idempotency key, so a request
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
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    DeliveryStatus, Outbox, backoff, batch, circuit, claim, destination, ending, horizon,
    inflight::{self, Limit, Signal, Ticket},
};
use crate::{
    config::DeliverySettings,
    consent::Identity,
    error::Result,
    providers::{
        self, Answer, AnyProvider, Item, Outcome, Outgoing, ProviderRequest, ProviderResponse, StoredSettings,
    },
    secrets::Credentials,
};

/// The first and last waits before writing a batch of outcomes again (50 ms, 200 ms, 800 ms,
/// 3.2 s: about 4 s in all, far within any lease).
const OUTCOME_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(50);
const OUTCOME_RETRY_LAST: std::time::Duration = std::time::Duration::from_millis(3_200);

/// Bytes of a provider's answer read at most: enough for any error message, and for a batch's
/// per-item answer (Umami's for 20 events, each failure with its error, stays far below), while
/// a catch-all page at a wrong URL cannot fill memory, request after request.
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
    /// The adaptive in-flight window of each provider config ([`inflight`]): a delivery is only
    /// claimed into a free slot of its config, so a lease only ever covers a request about to be
    /// sent or in flight.
    limits: Limits,
    bounds: inflight::Bounds,
    /// Outcomes of requests answered at about the same time, written in one transaction.
    outcomes: super::group::Group<Recorded, Option<Vec<Attempted>>>,
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
    /// Ended in the dead letters: a final error, a failure at the retry horizon (the last
    /// second before it), consent withdrawn since ingest, the event gone or older than the
    /// provider accepts.
    pub dead: usize,
    /// Given back without an attempt: the config is no longer `active`, or the round claimed
    /// more requests' worth than it had free slots for (due again at once).
    pub released: usize,
    /// Attempted, but the lease had passed to another worker before the outcome was recorded.
    pub lease_lost: usize,
    /// Not claimed but dead-lettered before the claim: pending past their retry horizon.
    pub expired: usize,
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
        self.expired += o.expired;
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

/// A provider's deliveries leased by this worker in one claim, with the in-flight slots of their
/// configs they were claimed into (one per request at most).
struct Round {
    provider: &'static dyn AnyProvider,
    deliveries: Vec<delivery::Model>,
    slots: HashMap<Uuid, Vec<Slot>>,
}

type Limits = Arc<std::sync::Mutex<HashMap<Uuid, Limit>>>;

/// One request's place in its config's in-flight window: reserved at the claim, told the answer
/// ([`Slot::answered`]), taken again for a part of a split request ([`Slot::again`]). Dropped
/// unused, it is given back.
struct Slot {
    limits: Limits,
    provider: &'static str,
    config: Uuid,
    ticket: Option<Ticket>,
}

impl Slot {
    fn answered(&mut self, signal: Signal, max_pause: std::time::Duration) {
        if let Some(ticket) = self.ticket.take()
            && let Some(limit) = self.limits.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&self.config)
        {
            let before = limit.window();
            limit.finish(ticket, signal, std::time::Instant::now(), max_pause);
            let window = limit.window();
            if window < before {
                tracing::debug!(config = %self.config, window, "in-flight window shrunk");
            }
            if window != before {
                metrics::gauge!("consentgate_delivery_in_flight_window", "provider" => self.provider,
                    "config" => self.config.to_string())
                .set(window as f64);
            }
        }
    }

    /// Waits while the config is paused (a `Retry-After`), also for a request claimed before the
    /// answer that paused it.
    async fn unpaused(&self) {
        loop {
            let until = {
                let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
                limits.get(&self.config).and_then(|l| l.paused_until(std::time::Instant::now()))
            };
            match until {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => return,
            }
        }
    }

    fn again(&mut self) {
        if self.ticket.is_none()
            && let Some(limit) = self.limits.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&self.config)
        {
            self.ticket = Some(limit.start());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.ticket.take().is_some()
            && let Some(limit) = self.limits.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&self.config)
        {
            limit.cancel();
        }
    }
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
    settings: StoredSettings,
    credentials: Arc<Credentials>,
    members: Vec<Ready>,
    items: Vec<Item>,
}

/// A request's outcomes (or those of deliveries that were not sent), waiting to be recorded with
/// others ([`super::group`]).
struct Recorded {
    provider: &'static dyn AnyProvider,
    members: Vec<Ready>,
    config: Arc<provider_config::Model>,
    /// The request's answer; `None` with `sent` false: not sent (decided not to, refused at
    /// mapping, its credentials did not resolve).
    answered: Answered,
    sent: bool,
    outcomes: Vec<Outcome>,
    /// Per member, what the mapping adjusted to fit the provider's limits (its warning).
    adjusted: Vec<Option<String>>,
    /// Its 401/403s repeat a failure already counted (a failed credential lookup the cache
    /// handed out again): they neither count towards the config's `error` status nor end a run.
    auth_repeated: bool,
}

/// What the HTTP exchange gave: the status and `Retry-After` when an answer came.
type Answered = Option<(u16, Option<std::time::Duration>)>;

/// How often the background loop dead-letters what waited past its retry horizon: a delivery
/// claimed meanwhile is still refused by the provider's age limit (`horizon::too_old`) and a
/// retry is never scheduled past the horizon.
const EXPIRE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
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
    let mut expired_at: Option<Instant> = None;
    tracing::info!(owner = %worker.owner, "delivery worker started");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let now = Utc::now();
        let started = Instant::now();
        // Looking for deliveries past their horizon reads every waiting one: once per
        // `EXPIRE_EVERY` at most, not once per round (hundreds per second under load).
        let failed_expiry = if expired_at.is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
            expired_at = Some(started);
            worker.expire(now).await.1
        } else {
            0
        };
        let expired = started.elapsed();
        let (rounds, failed_claims) = worker.claim_due(now).await;
        tracing::debug!(expire = ?expired, claim = ?(started.elapsed() - expired),
            claimed = rounds.iter().map(|r| r.deliveries.len()).sum::<usize>(), "claim round");
        let claimed_any = !rounds.is_empty();
        let claim_failed = failed_claims + failed_expiry > 0;
        for round in rounds {
            let w = worker.clone();
            in_flight.spawn(async move { w.deliver(round).await });
        }
        claim_wait = if claim_failed { (claim_wait * 2).min(CLAIM_BACKOFF_MAX.max(poll)) } else { poll };
        while let Some(joined) = in_flight.try_join_next() {
            log_if_panicked(joined);
        }
        if claimed_any {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = outbox.woken().notified() => {}
            _ = tokio::time::sleep(claim_wait) => {}
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => log_if_panicked(joined),
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
            .timeout(std::time::Duration::from_millis(settings.request_timeout_ms))
            // No HTTP(S)_PROXY from the environment: a proxy resolves the name itself, past the
            // private-address guard below (a tenant's instance_url could reach internal hosts).
            .no_proxy();
        if !settings.allow_private_destinations {
            builder = builder.dns_resolver(Arc::new(destination::PublicOnly));
        }
        let http = builder.build().map_err(anyhow::Error::from)?;
        let bounds = settings.in_flight_bounds();
        Ok(Worker {
            db,
            owner: owner_name(Uuid::new_v4(), &instance()),
            settings,
            http,
            limits: Default::default(),
            bounds,
            outcomes: Default::default(),
            secrets,
        })
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
        let (expired, expire_errors) = self.expire(now).await;
        let (rounds, errors) = self.claim_due(now).await;
        let claimed = rounds.iter().map(|r| r.deliveries.len()).sum();
        let mut pass = Pass { claimed, expired, errors: errors + expire_errors, ..Pass::default() };
        for done in futures_util::future::join_all(rounds.into_iter().map(|r| self.deliver(r))).await {
            done.into_iter().for_each(|d| pass.count(d));
        }
        pass
    }

    /// Dead-letters what waited past its retry horizon at `now`, claimed or not (paused configs,
    /// open circuits), before anything is claimed. Returns how many, and 1 if it failed.
    async fn expire(&self, now: DateTime<Utc>) -> (usize, usize) {
        match super::horizon::expire(&self.db, self.settings.retry_horizon(), now).await {
            Ok(n) => (n as usize, 0),
            Err(e) => {
                if let Some(suppressed) = CLAIM_LOG.allow() {
                    tracing::warn!(error = %e, suppressed, "dead-lettering deliveries past their horizon failed");
                }
                (0, 1)
            }
        }
    }

    /// Leases the deliveries due at `now`, provider by provider, for as many requests as their
    /// configs have free in-flight slots (reserved right after the claim, before anything else
    /// can claim, so concurrent rounds never lease more than they can send). Returns them with
    /// the number of providers whose claim failed.
    async fn claim_due(&self, now: DateTime<Utc>) -> (Vec<Round>, usize) {
        let lease = chrono::Duration::seconds(self.settings.lease_secs.max(1) as i64);
        let probe_every = chrono::Duration::seconds(self.settings.circuit_probe_secs.max(1) as i64);
        let mut rounds = Vec::new();
        let mut errors = 0;
        let requests = self.settings.batch_size.max(1);
        for provider in providers::all() {
            let free = |config: Uuid| -> u64 {
                let at = std::time::Instant::now();
                let limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
                limits.get(&config).map_or(self.bounds.initial, |l| l.free(at)) as u64
            };
            match claim::claim_probing(&self.db, *provider, &self.owner, requests, &free, lease, now, probe_every).await
            {
                Ok(claimed) if claimed.deliveries.is_empty() => {}
                Ok(claimed) => {
                    let slots = self.reserve(provider.name(), &claimed);
                    rounds.push(Round { provider: *provider, deliveries: claimed.deliveries, slots });
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

    /// Reserves, per config of `claimed`, a slot of its in-flight window for each request its
    /// deliveries make at most (deliveries ÷ batch limit, rounded up), within its free slots.
    fn reserve(&self, provider: &'static str, claimed: &claim::Claimed) -> HashMap<Uuid, Vec<Slot>> {
        let mut per_config: HashMap<Uuid, usize> = HashMap::new();
        for d in &claimed.deliveries {
            *per_config.entry(d.config_id).or_default() += 1;
        }
        let at = std::time::Instant::now();
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        per_config
            .into_iter()
            .map(|(config, n)| {
                let limit = limits.entry(config).or_insert_with(|| Limit::new(self.bounds));
                let per_request = claimed.batch_limits.get(&config).copied().unwrap_or(1).max(1);
                // A probe is claimed whatever the window: it gets a slot of its own.
                let k = n.div_ceil(per_request).min(limit.free(at).max(1));
                let slot = |ticket| Slot { limits: self.limits.clone(), provider, config, ticket: Some(ticket) };
                let slots = (0..k).map(|_| slot(limit.start())).collect();
                (config, slots)
            })
            .collect()
    }

    /// Sends one round: its deliveries grouped into requests, one request per slot of its
    /// config; what has no slot left goes back at once (due again, for the next round). Returns
    /// what became of each delivery; the slots are free again when this returns.
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
        // The configs' preparations run concurrently (each reads its config, its events and its
        // visitors' decisions, and may decide again): a round of several configs is ready when
        // the slowest is, not after the sum of them.
        let prepared = futures_util::future::join_all(by_config.into_iter().map(|(config_id, ds)| async move {
            let count = ds.len();
            let started = Instant::now();
            let mut done = Vec::new();
            let prepared = self.prepare(provider, config_id, ds, &mut done).await;
            tracing::debug!(provider = provider.name(), deliveries = count, elapsed = ?started.elapsed(), "deliveries prepared");
            let ready = match prepared {
                Ok(ready) => ready,
                Err(e) => {
                    tracing::warn!(config = %config_id, error = %e,
                        "deliveries could not be prepared; they are retried after their lease");
                    done.extend(std::iter::repeat_n(Attempted::Failed, count - done.len()));
                    Vec::new()
                }
            };
            (done, ready)
        }))
        .await;
        for (d, ready) in prepared {
            done.extend(d);
            chunks.push(ready);
        }
        let mut slots = slots;
        let mut sends = Vec::new();
        let mut surplus = Vec::new();
        // Requests go out config by config in turns (each one's first request, then each one's
        // second, …); each takes a slot of its own config's window.
        for chunk in batch::round_robin(chunks) {
            match slots.get_mut(&chunk.config.id).and_then(Vec::pop) {
                Some(slot) => sends.push(self.send_chunk(provider, chunk, slot)),
                None => surplus.extend(chunk.members.iter().map(|m| m.delivery.id)),
            }
        }
        drop(slots);
        if !surplus.is_empty() {
            let released = match claim::release(&self.db, &surplus, &self.owner).await {
                Ok(()) => Attempted::Released,
                Err(_) => Attempted::Failed,
            };
            done.extend(std::iter::repeat_n(released, surplus.len()));
        }
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
            let ids: Vec<Uuid> = ds.iter().map(|d| d.id).collect();
            claim::release(&self.db, &ids, &self.owner).await?;
            done.extend(std::iter::repeat_n(Attempted::Released, ids.len()));
            return Ok(Vec::new());
        };
        let config = Arc::new(config);
        let settings = provider.read_settings(&config.settings);
        let events: HashMap<Uuid, analytics_event::Model> = analytics_event::Entity::find()
            .filter(analytics_event::Column::Id.is_in(ds.iter().map(|d| d.event_id)))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|e| (e.id, e))
            .collect();
        // The tenant and when each visitor last decided, once for all: only a visitor who decided
        // after the event needs deciding again.
        let tenant = crate::tenants::get(&self.db, config.tenant_id).await?;
        let lookups = ds.iter().filter_map(|d| {
            d.consent_lookup_id.as_deref().or(events.get(&d.event_id).and_then(|e| e.anonymous_id.as_deref()))
        });
        let decided = crate::consent::records::latest_times(&self.db, &tenant, lookups).await?;
        let backend = self.db.get_database_backend();
        // The tenant's consent config, read once for the round if any delivery is decided again.
        let consent_now = crate::ingest::ConsentNow::default();
        let mut keyed = Vec::new();
        // What must not or cannot go, recorded together (with other requests' outcomes).
        let mut unsent = Vec::new();
        for d in ds {
            let Some(event) = events.get(&d.event_id) else {
                let gone = Outcome::Dead { reason: "the event no longer exists".into() };
                unsent.push((Ready { delivery: d, occurred_at: Utc::now() }, gone));
                continue;
            };
            let ready = |d| Ready { delivery: d, occurred_at: event.occurred_at };
            // Never an event older than the provider takes (it would refuse or misdate it).
            if let Some(reason) =
                super::horizon::too_old(provider.name(), event.occurred_at, provider.max_event_age(), Utc::now())
            {
                unsent.push((ready(d), Outcome::Dead { reason }));
                continue;
            }
            let lookup = d.consent_lookup_id.as_deref().or(event.anonymous_id.as_deref());
            let decided_since = lookup
                .and_then(|l| decided.get(l))
                .is_some_and(|at| crate::consent::records::maybe_unseen(*at, event.received_at, backend));
            match self.item((provider, &config, &settings), (&tenant, &consent_now), &d, event, decided_since).await? {
                Ok((key, item)) => keyed.push((key, (ready(d), item))),
                Err(outcome) => unsent.push((ready(d), outcome)),
            }
        }
        // A reference that does not resolve counts like a refused credential: the deliveries
        // wait (backoff) and, persisting, the config goes to `error` naming the reference. Only a
        // lookup's own failure counts: the cache hands a failure out again for every round until
        // it expires, and one bad read (a file caught mid-rewrite) must not count three times.
        let mut auth_repeated = false;
        let credentials = if keyed.is_empty() {
            None
        } else {
            match self.secrets.resolve_config(&tenant.slug, &config.credentials).await {
                Ok(c) => Some(Arc::new(c)),
                Err(unresolved) => {
                    auth_repeated = unresolved.failure.replayed;
                    let outcome = if unresolved.failure.transient {
                        Outcome::Retry { reason: unresolved.to_string() }
                    } else {
                        Outcome::AuthFailure { reason: unresolved.to_string() }
                    };
                    // Counted once towards the config's `error` status, like a request's 401.
                    unsent.extend(keyed.drain(..).map(|(_, (ready, _))| (ready, outcome.clone())));
                    None
                }
            }
        };
        if !unsent.is_empty() {
            let n = unsent.len();
            let (members, outcomes): (Vec<Ready>, Vec<Outcome>) = unsent.into_iter().unzip();
            let adjusted = vec![None; n];
            let recorded = Recorded {
                provider,
                members,
                config: config.clone(),
                answered: None,
                sent: false,
                outcomes,
                adjusted,
                auth_repeated,
            };
            match self.record_grouped(recorded).await {
                Some(v) => done.extend(v),
                None => done.extend(std::iter::repeat_n(Attempted::Failed, n)),
            }
        }
        let Some(credentials) = credentials else { return Ok(Vec::new()) };
        let limit = provider.batch_limit(&settings);
        Ok(batch::chunks(keyed, limit)
            .into_iter()
            .map(|c| {
                let (members, items) = c.into_iter().unzip();
                let (config, settings) = (config.clone(), settings.clone());
                Chunk { config, settings, credentials: credentials.clone(), members, items }
            })
            .collect())
    }

    /// The delivery decided again (consent may have changed since ingest) and mapped to its item
    /// and batch key (for the config, its provider and its settings read once for the round);
    /// `Err` is the outcome to record instead (a withdrawal, a refused item).
    async fn item(
        &self,
        (provider, config, settings): (&'static dyn AnyProvider, &provider_config::Model, &StoredSettings),
        (tenant, consent_now): (&entity::tenant::Model, &crate::ingest::ConsentNow),
        d: &delivery::Model,
        event: &analytics_event::Model,
        decided_since: bool,
    ) -> Result<std::result::Result<(String, Item), Outcome>> {
        // An identity that cannot be read sends nothing identifying.
        let mut identity = Identity::parse(&d.identity).unwrap_or(Identity::Anonymous);
        let mut granted = super::read_granted(d.granted.as_deref());
        // A newer decision of the visitor can only take away: never more than ingest allowed.
        // The lookup id is on the waiting delivery. `decided_since`: the round's one query found
        // a record of the visitor newer than the event; without one the ingest decision stands
        // and nothing is read again.
        // A replayed delivery lost its lookup id and granted categories when it first ended
        // (ingest always writes the categories): it is decided afresh under the event's analytics
        // id, the only id left — a visitor not found under it (a site whose consent-lookup id is
        // another value) is decided as one who never chose, so a replay never sends more than a
        // decision made now allows, a withdrawal included.
        let replayed = d.granted.is_none();
        let lookup = match replayed {
            true => event.anonymous_id.as_deref(),
            false => d.consent_lookup_id.as_deref().or(event.anonymous_id.as_deref()).filter(|_| decided_since),
        };
        let target = (config, provider as &dyn AnyProvider);
        if let Some(now) =
            crate::ingest::redecide(&self.db, tenant, event, lookup, replayed, target, consent_now).await?
        {
            match now.decision.identity() {
                None => {
                    let reason = format!("{} ({}); not sent", super::CONSENT_CHANGED, now.decision.reason());
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
        Ok(match provider.item(settings, &out) {
            Ok(item) => Ok((provider.batch_key(settings, &out), item)),
            Err(reason) => Err(Outcome::Dead { reason }),
        })
    }

    /// Sends one request's worth and records the outcomes. A whole-request refusal of several
    /// items is split and the parts sent again at once (each under a renewed lease), so only the
    /// item to blame ends dead. Holds `slot` (one request in flight at a time) and tells it each
    /// answer: whether the provider was overloaded, and its `Retry-After`.
    async fn send_chunk(&self, provider: &'static dyn AnyProvider, chunk: Chunk, mut slot: Slot) -> Vec<Attempted> {
        let Chunk { config, settings, mut credentials, members, items } = chunk;
        let lease = chrono::Duration::seconds(self.settings.lease_secs.max(1) as i64);
        let mut done = Vec::new();
        let mut parts = VecDeque::from([(members, items)]);
        let mut first = true;
        while let Some((mut members, mut items)) = parts.pop_front() {
            let again = !std::mem::take(&mut first);
            if again {
                slot.again();
            }
            // A part sent again, or a first send whose claim has aged past a third of the lease
            // (a slow preparation, a starved CPU, a Retry-After pause): renew first and send only
            // what is still this worker's, so that no other worker can be sending it too.
            if again || lease_aging(members.iter().map(|m| m.delivery.lease_until), lease, Utc::now()) {
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
            let ids: Vec<Uuid> = members.iter().map(|m| m.delivery.id).collect();
            let send = async {
                slot.unpaused().await;
                self.exchange(provider, &config, &settings, &mut credentials, &items).await
            };
            let (next, answered) = self.renewing(&ids, lease, send).await;
            slot.answered(signal(&next, answered), std::time::Duration::from_millis(self.settings.backoff_max_ms));
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
                    let adjusted =
                        items.iter().map(|i| (!i.adjustments.is_empty()).then(|| i.adjustments.join("; "))).collect();
                    drop(items);
                    let recorded = Recorded {
                        provider,
                        members,
                        config: config.clone(),
                        answered,
                        sent: true,
                        outcomes,
                        adjusted,
                        auth_repeated: false,
                    };
                    match self.record_grouped(recorded).await {
                        Some(v) => done.extend(v),
                        None => done.extend(std::iter::repeat_n(Attempted::Failed, n)),
                    }
                }
            }
        }
        done
    }

    /// Runs `request` while renewing this worker's lease on `ids` every third of the lease, so
    /// that a claim never passes while its request is in flight (a slow answer, a retried
    /// refusal of the credentials) and another worker cannot send the same deliveries again.
    async fn renewing<T>(&self, ids: &[Uuid], lease: chrono::Duration, request: impl Future<Output = T>) -> T {
        let every = (lease / 3).to_std().unwrap_or_default().max(std::time::Duration::from_millis(50));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut request = std::pin::pin!(request);
        loop {
            tokio::select! {
                done = &mut request => return done,
                _ = tick.tick() => match claim::renew(&self.db, ids, &self.owner, lease, Utc::now()).await {
                    Ok(kept) if kept.len() < ids.len() => tracing::warn!(
                        lost = ids.len() - kept.len(),
                        "a lease passed while its request was in flight; its outcome will not be recorded"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "a lease could not be renewed while its request was in flight"),
                },
            }
        }
    }

    /// Builds the request for `items`, sends it and says what the answer means per item. A
    /// refusal of the credentials is tried once more with them looked up again (rotated since
    /// cached).
    async fn exchange(
        &self,
        provider: &dyn AnyProvider,
        config: &provider_config::Model,
        settings: &StoredSettings,
        credentials: &mut Arc<Credentials>,
        items: &[Item],
    ) -> (batch::Next, Answered) {
        let n = items.len();
        let build = |c: &Credentials| provider.request(settings, c, items);
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
        let body = read_limited(response, MAX_ANSWER_BYTES).await;
        let response = ProviderResponse { status, headers: &headers.iter().collect(), body: &body };
        (provider.classify(&response, items), Some((status, retry_after)))
    }

    /// Records the outcomes of a request together with those of the other requests answered
    /// meanwhile: one write transaction for all of them ([`super::group`]). `None` if that
    /// transaction failed (logged); the deliveries are then retried after their lease.
    async fn record_grouped(&self, outcome: Recorded) -> Option<Vec<Attempted>> {
        self.outcomes.submit(outcome, |batch| self.record_batch(batch)).await.flatten()
    }

    /// Writes a batch of requests' outcomes in one transaction ([`super::ending`]); one answer
    /// per request.
    async fn record_batch(&self, batch: Vec<Recorded>) -> Vec<Option<Vec<Attempted>>> {
        let n = batch.len();
        let deliveries: usize = batch.iter().map(|r| r.members.len()).sum();
        metrics::histogram!("consentgate_delivery_outcomes_per_commit").record(deliveries as f64);
        let now = Utc::now();
        let mut endings = Vec::with_capacity(deliveries);
        let mut attempted = Vec::with_capacity(deliveries);
        let mut requests = Vec::with_capacity(n);
        let mut providers: HashMap<Uuid, &'static dyn AnyProvider> = HashMap::new();
        for r in &batch {
            providers.insert(r.config.id, r.provider);
            self.conclude(r, now, &mut endings, &mut attempted);
            if r.sent {
                // The provider failed the whole request (its circuit counts it) or answered
                // (closes it).
                let failed = !r.outcomes.is_empty() && r.outcomes.iter().all(|o| matches!(o, Outcome::Retry { .. }));
                requests.push((r.config.id, failed));
            }
        }
        let thresholds = ending::Thresholds {
            circuit_failures: self.settings.circuit_failures,
            auth_failures: self.settings.auth_failures_before_error,
        };
        let write = || async {
            let started = Instant::now();
            let txn = crate::db::begin_write(&self.db).await?;
            let begun = started.elapsed();
            let written = ending::write(&txn, &self.owner, &endings, &requests, thresholds, now).await?;
            let wrote = started.elapsed();
            txn.commit().await?;
            tracing::debug!(requests = n, deliveries, begin = ?begun, write = ?(wrote - begun),
                commit = ?(started.elapsed() - wrote), "outcomes committed");
            Ok::<_, crate::error::Error>(written)
        };
        // The requests were answered: an outcome not written now is sent again once the lease
        // ends — a duplicate wherever the provider has no idempotency key. A failed write (a lock
        // conflict, a deadlock PostgreSQL broke, a connection dropped) is rolled back whole and
        // its `UPDATE`s are guarded by the lease, so writing it again is safe: tried again while
        // the lease is young, then left to the lease.
        let mut wait = OUTCOME_RETRY_FIRST;
        let written = loop {
            match write().await {
                Ok(w) => break w,
                Err(e) if wait <= OUTCOME_RETRY_LAST => {
                    tracing::warn!(error = %e, requests = n, deliveries, retry_in = ?wait,
                        "outcomes could not be recorded; writing them again");
                    metrics::counter!("consentgate_delivery_outcome_write_retries_total").increment(1);
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
                Err(e) => {
                    tracing::error!(error = %e, requests = n, deliveries,
                        "outcomes could not be recorded; the deliveries are sent again after their lease");
                    return (0..n).map(|_| None).collect();
                }
            }
        };
        for (config, reason) in &written.to_error {
            let provider = providers.get(config).map_or("?", |p| p.name());
            tracing::warn!(%config, provider, %reason,
                "provider config put into status error after repeated authentication failures");
        }
        for (config, changes) in &written.circuits {
            if let Some(provider) = providers.get(config) {
                for change in changes {
                    self.circuit_changed(*provider, *config, *change).await;
                }
            }
        }
        let mut done = attempted.into_iter().zip(&written.written).zip(&endings).map(|((a, w), e)| {
            if *w {
                a
            } else {
                tracing::warn!(delivery = %e.id, "lease lost before the outcome was recorded");
                Attempted::LeaseLost
            }
        });
        batch.iter().map(|r| Some(done.by_ref().take(r.members.len()).collect())).collect()
    }

    /// What each outcome of `r` means for its delivery's row and its config's usage, at `now`
    /// (pushed on `endings`, with what becomes of the delivery if written on `attempted`), with
    /// the metrics of what was sent. A 401/403 counts once towards the config's `error` status,
    /// however many deliveries the request carried, and not at all when it repeats a failed
    /// credential lookup the cache handed out again.
    fn conclude(
        &self,
        r: &Recorded,
        now: DateTime<Utc>,
        endings: &mut Vec<ending::Ending>,
        attempted: &mut Vec<Attempted>,
    ) {
        let provider = r.provider;
        // Retried until the horizon: the last retry is scheduled just before it.
        let horizon = horizon::for_provider(self.settings.retry_horizon(), provider.max_event_age());
        let mut auth_counted = r.auth_repeated;
        // The metrics' handles once per request, not per delivery.
        let mut counted: Vec<(&'static str, u64)> = Vec::new();
        let lag =
            r.sent.then(|| metrics::histogram!("consentgate_delivery_lag_seconds", "provider" => provider.name()));
        for ((m, outcome), adjusted) in r.members.iter().zip(&r.outcomes).zip(&r.adjusted) {
            let d = &m.delivery;
            let deadline = horizon::deadline(d.expires_at, d.created_at, horizon);
            // A failure at the horizon ends the delivery: counted as what it became.
            let at_horizon = matches!(outcome, Outcome::Retry { .. } | Outcome::AuthFailure { .. })
                && now >= deadline - chrono::Duration::seconds(1);
            let label = if at_horizon { "dead" } else { outcome.label() };
            if let Some(lag) = &lag {
                match counted.iter_mut().find(|(l, _)| *l == label) {
                    Some((_, n)) => *n += 1,
                    None => counted.push((label, 1)),
                }
                if matches!(outcome, Outcome::Delivered | Outcome::Dropped { .. }) {
                    lag.record((now - m.occurred_at).num_milliseconds().max(0) as f64 / 1000.0);
                }
            }
            tracing::debug!(delivery = %d.id, provider = provider.name(), outcome = label, "delivery outcome");
            let counted = !auth_counted;
            auth_counted |= matches!(outcome, Outcome::AuthFailure { .. });
            let attempts = d.attempts + 1;
            let retry_at = || -> DateTime<Utc> {
                let wait = backoff::delay(
                    attempts,
                    self.settings.backoff_base_ms,
                    self.settings.backoff_max_ms,
                    backoff::unit_random(),
                    r.answered.and_then(|(_, ra)| ra),
                );
                let at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                at.min(deadline - chrono::Duration::seconds(1)).max(now)
            };
            let row = ending::RowEnd {
                status: None,
                last_status: r.answered.map(|(s, _)| s as i32),
                last_error: None,
                warning: None,
                delivered: false,
                next_attempt_at: None,
            };
            let end = |status, last_error| ending::RowEnd { status: Some(status), last_error, ..row.clone() };
            let (row, usage, done) = match outcome {
                Outcome::Delivered => (
                    ending::RowEnd {
                        delivered: true,
                        warning: Some(adjusted.clone()),
                        ..end(DeliveryStatus::Delivered, None)
                    },
                    ending::Usage::Sent,
                    Attempted::Delivered,
                ),
                Outcome::Dropped { warning } => (
                    ending::RowEnd {
                        warning: Some(Some(match adjusted {
                            Some(a) => format!("{warning}; {a}"),
                            None => warning.clone(),
                        })),
                        ..end(DeliveryStatus::Dropped, None)
                    },
                    ending::Usage::Dropped { warning: warning.clone() },
                    Attempted::Dropped,
                ),
                Outcome::Dead { reason } => (
                    end(DeliveryStatus::Dead, Some(reason.clone())),
                    ending::Usage::Failed { error: reason.clone(), dead: true },
                    Attempted::Dead,
                ),
                // Ends like a dead letter (with its reason on the delivery), but counts as a
                // consent denial and leaves the config's `last_error` alone: nothing is wrong
                // with the config.
                Outcome::ConsentDenied { reason } => {
                    (end(DeliveryStatus::Dead, Some(reason.clone())), ending::Usage::DeniedByConsent, Attempted::Dead)
                }
                Outcome::Retry { reason } | Outcome::AuthFailure { reason } if at_horizon => {
                    let reason = horizon::reached(horizon, Some(reason));
                    (
                        end(DeliveryStatus::Dead, Some(reason.clone())),
                        ending::Usage::Failed { error: reason, dead: true },
                        Attempted::Dead,
                    )
                }
                Outcome::Retry { reason } => (
                    ending::RowEnd { next_attempt_at: Some(retry_at()), last_error: Some(reason.clone()), ..row },
                    ending::Usage::Failed { error: reason.clone(), dead: false },
                    Attempted::Retried,
                ),
                Outcome::AuthFailure { reason } => (
                    ending::RowEnd { next_attempt_at: Some(retry_at()), last_error: Some(reason.clone()), ..row },
                    ending::Usage::AuthFailed { error: reason.clone(), counted },
                    Attempted::Retried,
                ),
            };
            endings.push(ending::Ending { id: d.id, config: r.config.id, row, usage });
            attempted.push(done);
        }
        for (outcome, n) in counted {
            metrics::counter!("consentgate_deliveries_total", "provider" => provider.name(), "outcome" => outcome)
                .increment(n);
        }
    }

    /// After the commit that changed a config's circuit: logged; a closed circuit releases the
    /// config's waiting deliveries.
    async fn circuit_changed(&self, provider: &dyn AnyProvider, config: Uuid, change: circuit::Change) {
        match change {
            circuit::Change::Opened => tracing::warn!(%config, provider = provider.name(),
                failures = self.settings.circuit_failures, "circuit opened: deliveries held back, probing"),
            circuit::Change::Closed => {
                // The outcomes are recorded; a release that fails leaves the deliveries on their
                // own schedule (the circuit is closed), so it is only logged.
                let per_sec = self.settings.circuit_release_per_sec;
                match circuit::release(&self.db, config, per_sec, Utc::now()).await {
                    Ok(released) => tracing::info!(%config, provider = provider.name(),
                        released, per_sec, "circuit closed: waiting deliveries released"),
                    Err(e) => tracing::warn!(%config, error = %e,
                        "circuit closed, but its waiting deliveries could not be released; they keep their schedule"),
                }
            }
            circuit::Change::Unchanged => {}
        }
    }
}

/// What an answer says about the provider's capacity: overloaded when the whole request is to be
/// retried (timeout, connection error, 408, 429, 5xx), with the `Retry-After` it gave.
/// True when some lease (of deliveries about to be sent) has less than two thirds of `lease` left
/// at `now`, or is not there at all.
fn lease_aging(
    leases: impl IntoIterator<Item = Option<DateTime<Utc>>>,
    lease: chrono::Duration,
    now: DateTime<Utc>,
) -> bool {
    leases.into_iter().any(|until| until.is_none_or(|until| until - now < lease * 2 / 3))
}

fn signal(next: &batch::Next, answered: Answered) -> Signal {
    match next {
        batch::Next::Record(outcomes)
            if !outcomes.is_empty() && outcomes.iter().all(|o| matches!(o, Outcome::Retry { .. })) =>
        {
            Signal::Overloaded { retry_after: answered.and_then(|(_, ra)| ra) }
        }
        _ => Signal::Answered,
    }
}

/// This instance, for lease owner names: the host name and process id.
fn instance() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// A delivery task that panicked: its deliveries stay leased until their lease ends, then another
/// round takes them — said in the log, not lost silently.
fn log_if_panicked<T>(joined: Result<T, tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!(error = %e, "a delivery task panicked; its deliveries are retried once their lease ends");
    }
}

/// A worker's lease owner name: unique per worker (`worker-<uuid>`), naming the instance it runs
/// in (`@<host>:<pid>`), so that a delivery's `in_flight.owner` says where it is being sent from.
fn owner_name(id: Uuid, instance: &str) -> String {
    format!("worker-{id}@{instance}")
}

/// The first `limit` bytes of the answer. A body cut short (by the limit or a broken connection)
/// is what a provider's parser then refuses: a batch is retried, never guessed delivered.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= limit {
                    tracing::debug!(limit, status = response.status().as_u16(), "answer cut at the limit");
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %describe(e), read = body.len(), "answer cut short");
                break;
            }
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

    #[test]
    fn a_claim_older_than_a_third_of_its_lease_is_renewed_before_sending() {
        let now = Utc::now();
        let lease = chrono::Duration::seconds(60);
        let left = |secs: i64| Some(now + chrono::Duration::seconds(secs));
        for (leases, aging) in [
            (vec![left(60)], false),
            (vec![left(41)], false),
            (vec![left(39)], true),
            (vec![left(60), left(-1)], true),
            (vec![left(60), None], true),
            (vec![], false),
        ] {
            assert_eq!(lease_aging(leases.clone(), lease, now), aging, "{leases:?}");
        }
    }

    #[test]
    fn a_lease_owner_names_the_worker_and_its_instance() {
        let name = owner_name(Uuid::nil(), &instance());
        let (worker, at) = name.split_once('@').unwrap();
        assert_eq!(worker, format!("worker-{}", Uuid::nil()));
        assert!(at.ends_with(&format!(":{}", std::process::id())), "{name}");
    }

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
