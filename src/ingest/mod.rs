//! Ingestion: one posted event becomes one stored event, a forwarding decision per provider config
//! and a delivery per allowed config — committed before the site gets its `202`.
//!
//! At the edge, [`prepare`] (no database read): validate ([`event`]) → enrich ([`enrich`]) → a
//! [`Prepared`] event. The write half, [`writer`] (group commit): the prepared events of every
//! request waiting go into one transaction, which reads the latest consent record of every visitor
//! of the batch in one query ([`records_of`]), [`decide`]s per config (`consent::decide`, then the
//! provider's own acceptance) and stores the rows ([`store`]: the events, their [`decisions`],
//! `outbox::pending` deliveries, usage counts; a repeated idempotency key is found there too).
//! Each request is answered once it is committed.
//!
//! What is stored depends on the decisions: unless some config's decision grants full identity,
//! the event is stored *unlinkable* — no analytics id, user id, session id, user agent or
//! identity-derived idempotency key. The consent-lookup id, the user agent and the full IP travel
//! only on the pending deliveries that need them, and are erased when those end.

pub mod copy_ahead;
pub mod daily_id;
pub mod decisions;
pub mod enrich;
pub mod event;
pub mod fields;
pub mod keys;
pub mod remembered;
pub mod sqlite;
pub mod store;
pub mod wal_sync;
pub mod writer;

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use entity::analytics_event;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use self::{
    decisions::DecisionView,
    event::{EventInput, Sender, ValidEvent},
    keys::KeyKind,
};
use crate::{
    cache::TenantConfig,
    consent::{self, Decision, ProviderPolicy, ProviderStatus, Reason, RequiredCategory, Signals},
    error::{Error, Result},
    geo::Geo,
    providers,
};

/// What became of one posted event.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub id: Uuid,
    /// True when the idempotency key was seen before: `id` is the first event's, nothing new was
    /// stored or sent.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    pub decisions: Vec<DecisionView>,
}

/// One event validated and enriched at the edge, waiting for its decisions: what a request hands
/// the [`writer`]. Made without reading the database ([`prepare`]); the writer reads the latest
/// consent record of every visitor of its batch in one query, inside its transaction, and
/// [`decide`]s.
pub struct Prepared {
    /// The tenant's configuration from the config cache when the event arrived: the policy, the
    /// provider configs and the daily salt are not read from the database.
    pub cached: Arc<TenantConfig>,
    /// Forwarding restricted to this provider's configs (the per-provider endpoint).
    pub provider: Option<&'static str>,
    /// The event as it will be stored, before `make_unlinkable`.
    pub event: analytics_event::Model,
    /// The idempotency key as posted.
    pub lookup_key: Option<String>,
    pub key_kind: KeyKind,
    /// Whose consent decides: the id the visitor's choice is remembered under.
    pub consent_lookup_id: Option<String>,
    signals: Signals,
    client_ip: Option<std::net::IpAddr>,
    user_agent: Option<String>,
    /// The cookieless daily id, when some target may send it (computed now: the salt is the
    /// day's, and a retry days later must not need it).
    daily_id: Option<String>,
    /// Per target (in `cached.targets(provider)` order), the provider's own refusal of the event,
    /// if any (custom events switched off, a page on another domain, a name it refuses): checked
    /// here, at the edge, since it depends on the event and the config only — not in the writer.
    refused: Vec<Option<consent::Blocked>>,
    /// The rows this event writes at most (an event, and per config a decision and a delivery or
    /// a usage count): what the writer's `max_batch_rows` counts.
    pub rows: usize,
    now: DateTime<Utc>,
}

/// Validates and enriches one event (parsed at the HTTP edge) — no database read but the daily
/// salt's, once a day. `provider` restricts forwarding to that provider's configs (the
/// per-provider endpoint). Field names in errors are relative to the event. Whether the
/// idempotency key was seen before is found when the rows are stored ([`store`]), not here.
pub async fn prepare(
    db: &DatabaseConnection,
    geo: &Geo,
    cached: &Arc<TenantConfig>,
    sender: &Sender,
    provider: Option<&'static str>,
    input: EventInput,
) -> Result<Prepared> {
    let now = Utc::now();
    let mut ev = event::validate(input, sender, provider, now)?;
    // A server's visitor: located by the IP the server passed, unless it said the country.
    if matches!(sender, Sender::Server)
        && ev.visitor.signals.country.is_none()
        && let Some(ip) = ev.visitor.ip
    {
        let loc = geo.lookup(ip);
        ev.visitor.signals.country = loc.country;
        ev.visitor.signals.region = loc.region;
    }
    let key_kind = sender.key_kind();
    let lookup_key = ev.idempotency_key.as_ref().map(|k| k.as_str().to_string());

    let agent = enrich::agent_of(ev.visitor.user_agent.as_deref());
    let signals = Signals { bot: agent.bot, ..ev.visitor.signals.clone() };
    let client_ip = ev.visitor.ip;
    let user_agent = ev.visitor.user_agent.clone();
    let consent_lookup_id = ev.posted.lookup_id().map(|v| v.as_str().to_string());
    let event = stored_event(cached.tenant.id, provider, key_kind, ev, &agent, now);
    let refused: Vec<Option<consent::Blocked>> =
        cached.targets(provider).map(|t| t.provider.accepts(&t.settings, &event).err()).collect();
    let targets = refused.len();
    // Not for a visitor whose respected DNT/GPC denies every provider: no salt is made for them.
    let cookieless = cached.targets(provider).any(|t| t.policy.cookieless_fallback)
        && consent::not_tracked(cached.policy(), &signals).is_none();
    // An event without any visitor id counts as a visitor of its own.
    let daily_id = if cookieless {
        let visitor = consent_lookup_id.clone().unwrap_or_else(|| format!("event:{}", event.id));
        Some(cached.daily_id(db, &visitor, now).await?)
    } else {
        None
    };
    Ok(Prepared {
        cached: cached.clone(),
        provider,
        event,
        lookup_key,
        key_kind,
        consent_lookup_id,
        signals,
        client_ip,
        user_agent,
        daily_id,
        refused,
        rows: 1 + 2 * targets,
        now,
    })
}

/// The rows of a prepared event, given the visitor's latest consent record (under the tenant's
/// active config; `None`: none) — pure. Per config: `consent::decide`, then the provider's own
/// acceptance (custom events switched off, a page on another domain, a name the provider
/// refuses — checked by [`prepare`], see `Prepared::refused`); a delivery for each allowed
/// config; the event made unlinkable unless some decision grants full identity.
pub fn decide(p: &Prepared, record: Option<&consent::RecordedChoice>) -> store::PlannedEvent {
    let tenant = &p.cached.tenant;
    let now = p.now;
    let mut model = p.event.clone();
    let policy = p.cached.policy();
    // The categories the visitor has granted, passed on with each delivery (GA4's consent fields).
    let granted = consent::effective(policy, record, &p.signals, now).choices;

    struct Planned {
        view: DecisionView,
        config_id: Uuid,
        identity: Option<consent::Identity>,
        /// The delivery keeps the full IP and the user agent.
        client_context: bool,
        denied_by_consent: bool,
        /// The delivery carries the cookieless daily id (see [`daily_id`]).
        pseudonymous: bool,
    }
    let mut planned = Vec::new();
    for (target, refused) in p.cached.targets(p.provider).zip(&p.refused) {
        let (config, provider) = (&target.config, target.provider);
        let mut decision = consent::decide(policy, record, &p.signals, &target.policy, now);
        let denied_by_consent = decision.reason().is_consent_denial();
        if decision.is_allowed()
            && let Some(why) = refused
        {
            decision = Decision::Deny { reason: Reason::Blocked(*why) };
        }
        // A provider with a cookieless fallback (PostHog) sends the daily id instead of the
        // visitor's when the decision allows no identifiers, when the event has no id of its own,
        // or when a withdrawal before sending takes full identity away — so every delivery it
        // is allowed carries one.
        let pseudonymous = decision.is_allowed() && target.policy.cookieless_fallback;
        planned.push(Planned {
            view: DecisionView::new(config.id, provider.name(), &decision),
            config_id: config.id,
            identity: decision.identity(),
            client_context: decision.identity().is_some_and(|i| provider.needs_client_context(i)),
            denied_by_consent,
            pseudonymous,
        });
    }

    if !planned.iter().any(|p| p.identity == Some(consent::Identity::Full)) {
        make_unlinkable(&mut model);
    }

    let mut decisions = Vec::with_capacity(planned.len());
    let mut deliveries = Vec::new();
    let mut denied_by_consent = Vec::new();
    for d in planned {
        match d.identity {
            Some(identity) => deliveries.push(crate::outbox::pending(
                crate::outbox::NewDelivery {
                    tenant_id: tenant.id,
                    event_id: model.id,
                    config_id: d.config_id,
                    provider: &d.view.provider,
                    identity,
                    client_ip: p.client_ip.filter(|_| d.client_context),
                    consent_lookup_id: p.consent_lookup_id.as_deref(),
                    user_agent: p.user_agent.as_deref().filter(|_| d.client_context),
                    granted,
                    pseudonymous_id: p.daily_id.as_deref().filter(|_| d.pseudonymous),
                },
                now,
            )),
            None if d.denied_by_consent => denied_by_consent.push(d.config_id),
            None => {}
        }
        decisions.push(d.view);
    }
    model.decisions = decisions::column(&decisions);
    store::PlannedEvent {
        event: model,
        lookup_key: p.lookup_key.clone(),
        key_kind: p.key_kind,
        decisions,
        deliveries,
        denied_by_consent,
    }
}

/// [`decide`] for each event of a batch, given the batch's latest consent records (by tenant and
/// consent-lookup id, as [`records_of`] returns them) — pure.
pub fn decide_all(
    events: &[&Prepared],
    records: &HashMap<(Uuid, String), consent::RecordedChoice>,
) -> Vec<store::PlannedEvent> {
    events
        .iter()
        .map(|p| {
            let record = p.consent_lookup_id.as_ref().and_then(|v| records.get(&(p.cached.tenant.id, v.clone())));
            decide(p, record)
        })
        .collect()
}

/// Where a commit's time went, at each step's end since `started` (the benchmark's
/// `BENCH_LOG=warn,consentgate::ingest=debug`).
pub(crate) struct CommitTimes {
    started: std::time::Instant,
    begun: std::time::Duration,
    read: std::time::Duration,
    decided: std::time::Duration,
    stored: std::time::Duration,
}

impl CommitTimes {
    pub(crate) fn start() -> Self {
        let zero = std::time::Duration::ZERO;
        CommitTimes { started: std::time::Instant::now(), begun: zero, read: zero, decided: zero, stored: zero }
    }

    pub(crate) fn begun(&mut self) {
        self.begun = self.started.elapsed();
    }

    pub(crate) fn read(&mut self) {
        self.read = self.started.elapsed();
    }

    pub(crate) fn decided(&mut self) {
        self.decided = self.started.elapsed();
    }

    pub(crate) fn stored(&mut self) {
        self.stored = self.started.elapsed();
    }

    /// Logs the steps at debug, once committed.
    pub(crate) fn committed(&self, events: usize) {
        let us = |d: std::time::Duration| d.as_micros() as u64;
        tracing::debug!(
            events,
            begin_us = us(self.begun),
            records_us = us(self.read - self.begun),
            decide_us = us(self.decided - self.read),
            store_us = us(self.stored - self.decided),
            commit_us = us(self.started.elapsed() - self.stored),
            "batch committed"
        );
    }
}

/// The consent-lookup ids of `events` by tenant, with the tenant's cached configuration: what a
/// batch's records read asks for, one query per tenant (`records_of`, `sqlite::records_of`).
pub(crate) fn visitors_by_tenant<'a>(events: &[&'a Prepared]) -> HashMap<Uuid, (&'a TenantConfig, Vec<&'a str>)> {
    let mut by_tenant: HashMap<Uuid, (&TenantConfig, Vec<&str>)> = HashMap::new();
    for p in events {
        if let Some(v) = p.consent_lookup_id.as_deref() {
            by_tenant.entry(p.cached.tenant.id).or_insert_with(|| (&p.cached, Vec::new())).1.push(v);
        }
    }
    by_tenant
}

/// The latest consent record of each visitor of `events` (by tenant and consent-lookup id), as
/// the decision engine reads it under the tenant's active config: one query per tenant of the
/// batch, in the writer's transaction.
pub async fn records_of(
    db: &impl ConnectionTrait,
    events: &[&Prepared],
) -> Result<HashMap<(Uuid, String), consent::RecordedChoice>> {
    let mut out = HashMap::new();
    for (tenant_id, (cached, visitors)) in visitors_by_tenant(events) {
        let active = cached.active_consent_config();
        for (visitor, m) in consent::records::latest_models(db, &cached.tenant, visitors).await? {
            out.insert((tenant_id, visitor), consent::records::under(&m, active)?);
        }
    }
    Ok(out)
}

/// No provider may receive identifiers, so the stored event keeps none: nothing on it can be
/// joined to the visitor (issue 10). A client's own idempotency key is kept as given; a derived
/// one goes too, since it hashes the session or visitor id and could be recomputed from it. The
/// price: a repeat of such an event (a server's beacon sent twice without its own key) is stored
/// and forwarded again — a rare double count, never a link. Clients that need exactly-once send
/// their own `idempotency_key`, as the banner's tracker does.
///
/// Identifier properties (`email`, `customer_id`, an email address as a value: what
/// [`providers::properties_for`] strips for an anonymous delivery) go too, and the stored
/// `context.properties_removed` names them (their paths, not their values).
fn make_unlinkable(model: &mut analytics_event::Model) {
    model.user_id = None;
    model.anonymous_id = None;
    model.session_id = None;
    model.user_agent = None;
    if model.idempotency_key.as_deref().is_some_and(|k| k.starts_with(fields::DERIVED_PREFIX)) {
        model.idempotency_key = None;
    }
    let (kept, removed) = providers::properties_for(model, consent::Identity::Anonymous);
    if !removed.is_empty() {
        model.event_properties = Value::Object(kept);
        if let Value::Object(context) = &mut model.context {
            context.insert("properties_removed".into(), json!(removed));
        }
    }
}

/// The answer to a repeat of an accepted event (`first`, with its `decisions`) — pure. Reusing a
/// key for an event sent elsewhere (another provider's endpoint, or all providers) is refused
/// rather than answered as a repeat: silently answering "already have it" would mean that event
/// never reaches the providers it was posted for.
pub(crate) fn repeat(
    first: Uuid,
    first_target: Option<&str>,
    target: Option<&str>,
    decisions: Vec<DecisionView>,
) -> Result<Accepted> {
    if first_target != target {
        let sent_to = first_target.unwrap_or("every provider (/events)");
        return Err(Error::Conflict(format!(
            "idempotency_key was already used for an event sent to {sent_to}; use a new key for this one"
        )));
    }
    Ok(Accepted { id: first, duplicate: true, decisions })
}

fn stored_event(
    tenant_id: Uuid,
    provider: Option<&str>,
    key_kind: KeyKind,
    ev: ValidEvent,
    agent: &enrich::Agent,
    now: DateTime<Utc>,
) -> analytics_event::Model {
    let ValidEvent { posted, page_url, occurred_at, idempotency_key, visitor, .. } = ev;
    let context = json!({
        "utm": enrich::utm(page_url.as_str()),
        "agent": agent,
        "region": visitor.signals.region,
    });
    analytics_event::Model {
        id: Uuid::now_v7(),
        tenant_id,
        provider: provider.map(str::to_string),
        event_name: posted.event_name.into(),
        event_properties: Value::Object(posted.event_properties.unwrap_or_default().into()),
        user_id: posted.user_id.map(String::from),
        // The analytics id (with the consent-lookup id as one for older sites that send only
        // this field); erased by `make_unlinkable` unless some decision grants full identity.
        anonymous_id: posted.anonymous_id.map(String::from),
        session_id: posted.session_id.map(String::from),
        page_url: Some(page_url.into()),
        referrer: posted.referrer.map(String::from),
        title: posted.title.map(String::from),
        user_agent: visitor.user_agent,
        language: posted.language.map(String::from),
        screen: posted.screen.map(String::from),
        revenue: posted.revenue.map(|r| json!(r)),
        context,
        occurred_at,
        received_at: now,
        // Stored: the network only. The full address travels on the pending delivery rows.
        ip_truncated: visitor.ip.map(crate::ip::truncate),
        country: visitor.signals.country,
        dnt: visitor.signals.dnt,
        gpc: visitor.signals.gpc,
        idempotency_key: idempotency_key.map(String::from),
        key_kind: Some(key_kind.as_str().to_string()),
        decisions: json!([]),
    }
}

/// At send time: a decision the visitor made *after* the event arrived (or shortly before it:
/// it may not have been committed when ingest decided, [`consent::records::maybe_unseen`])
/// overrides the one taken at ingest, for a delivery still waiting (a retry, a config in error, a replay). Withdrawal takes
/// effect for everything after it (GDPR Art. 7(3)), and sending is processing. `Ok(None)`:
/// nothing newer, the ingest decision stands.
/// `consent_lookup_id`: the one on the waiting delivery (it is never stored on the event).
/// `tenant`: the event's (the delivery worker reads it once per config, not per delivery). One
/// read per delivery: the visitor's latest record; the active config and its policy only when
/// that record may be newer, and then once per round (`consent_now`).
///
/// `afresh` (a replayed delivery, which lost what it held of the visitor when it first ended):
/// decided now whatever is found — under the latest record however old, or as a visitor who never
/// chose when none is found under `consent_lookup_id` — instead of only after a newer record.
pub async fn redecide(
    db: &impl ConnectionTrait,
    tenant: &entity::tenant::Model,
    event: &analytics_event::Model,
    consent_lookup_id: Option<&str>,
    afresh: bool,
    (config, provider): (&entity::provider_config::Model, &dyn providers::AnyProvider),
    consent_now: &ConsentNow,
) -> Result<Option<Redecision>> {
    let latest = match consent_lookup_id {
        Some(id) => consent::records::latest_model(db, tenant, id).await?,
        None => None,
    };
    // Most visitors decided before their events: one indexed read says so, and the ingest
    // decision stands.
    let backend = db.get_database_backend();
    if !afresh
        && latest.as_ref().is_none_or(|m| !consent::records::maybe_unseen(m.created_at, event.received_at, backend))
    {
        return Ok(None);
    }
    let (active, policy) = consent_now.get(db, tenant.id).await?;
    let record = latest.as_ref().map(|m| consent::records::under(m, *active)).transpose()?;
    let signals = Signals {
        dnt: event.dnt,
        gpc: event.gpc,
        country: event.country.clone(),
        region: event.context["region"].as_str().map(String::from),
        bot: false,
    };
    let provider_policy = provider_policy(config, provider);
    let now = Utc::now();
    Ok(Some(Redecision {
        decision: consent::decide(policy.as_ref(), record.as_ref(), &signals, &provider_policy, now),
        granted: consent::effective(policy.as_ref(), record.as_ref(), &signals, now).choices,
    }))
}

/// The tenant's active consent config and its policy as send-time decisions read them: once per
/// delivery round (however many of its deliveries are decided again), not once per delivery.
#[derive(Default)]
pub struct ConsentNow(tokio::sync::OnceCell<(Option<uuid::Uuid>, Option<consent::ConsentPolicy>)>);

impl ConsentNow {
    async fn get(
        &self,
        db: &impl ConnectionTrait,
        tenant_id: uuid::Uuid,
    ) -> Result<&(Option<uuid::Uuid>, Option<consent::ConsentPolicy>)> {
        self.0
            .get_or_try_init(|| async {
                let active = consent::config::store::active(db, tenant_id).await?;
                Ok::<_, crate::error::Error>((active.as_ref().map(|p| p.config.id), active.map(|p| p.policy())))
            })
            .await
    }
}

/// A newer decision of the visitor, taken at send time.
pub struct Redecision {
    pub decision: Decision,
    /// The categories granted now (the delivery keeps only those granted at ingest too).
    pub granted: consent::Choices,
}

/// What the decision engine needs of a provider config. A status or category that cannot be
/// read stays unread (`None`): the decision denies that config (`denied:config_invalid`) rather
/// than guess — a guessed `none` would forward without consent.
pub fn provider_policy(
    config: &entity::provider_config::Model,
    provider: &dyn providers::AnyProvider,
) -> ProviderPolicy {
    ProviderPolicy {
        status: ProviderStatus::parse(&config.status),
        required_category: RequiredCategory::parse(&config.required_category),
        cookieless_fallback: provider.cookieless_fallback(&config.settings),
        requires_record: provider.requires_record(&config.settings),
        config_id: config.id,
    }
}

/// A stored event with the reason each config did or did not receive it. The event's fields
/// are the stored row's, declared (and documented) once, in `entity::analytics_event`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventView {
    #[serde(flatten)]
    pub event: analytics_event::Model,
    pub decisions: Vec<EventDecision>,
}

/// A decision about the event, with the delivery that carried it out (when allowed).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EventDecision {
    #[serde(flatten)]
    pub decision: DecisionView,
    pub delivery: Option<crate::outbox::log::DeliveryView>,
}

/// `horizon`: the configured retry horizon, for a pending delivery's `expires_at`.
pub async fn event_view(
    db: &impl ConnectionTrait,
    tenant_id: Uuid,
    id: Uuid,
    horizon: chrono::Duration,
) -> Result<EventView> {
    let e = analytics_event::Entity::find_by_id(id)
        .filter(analytics_event::Column::TenantId.eq(tenant_id))
        .one(db)
        .await?
        .ok_or(Error::NotFound)?;
    let mut deliveries = crate::outbox::log::for_event(db, tenant_id, id, horizon).await?;
    let decisions = decisions::stored(&e.decisions)?
        .into_iter()
        .map(|d| {
            let delivery = deliveries.iter().position(|x| x.config_id == d.config_id).map(|i| {
                let mut x = deliveries.swap_remove(i);
                x.decision = None;
                x
            });
            EventDecision { decision: d, delivery }
        })
        .collect();
    Ok(EventView { event: e, decisions })
}
