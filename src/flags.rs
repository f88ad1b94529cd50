//! Feature flags for a visitor, evaluated by PostHog (`POST {instance}/flags?v=2`) behind
//! `POST /v1/tenants/{t}/analytics/posthog/flags` — the banner tracker's `consentgate.flags()`.
//!
//! Whom PostHog evaluates the flags for depends on the visitor's consent, as for events:
//! - **identified** (`distinct_id` = the visitor's analytics id, `anonymous_id`) only when the
//!   visitor's consent *record* grants analytics and the consent decision for the config allows
//!   full identity (a respected DNT/GPC signal, an expired record or a withdrawal do not);
//! - otherwise for the day's **cookieless id** ([`crate::ingest::daily_id`]): the same id the
//!   visitor's anonymous events carry that day, unlinkable across days and tenants;
//! - **not at all** under a DNT/GPC signal the tenant respects (`respect_do_not_track`): "honours
//!   Do Not Track" means not tracked, and a flags call — even under the daily id — tells PostHog
//!   the visitor was there. The answer is then the tracker's default, no flags, with the reason
//!   (`denied:dnt` / `denied:gpc`, as [`consent::decide`] gives it for events).
//!
//! Answers are cached in memory for [`CACHE_TTL`] per (config, distinct id) — a page that asks on
//! every load does not become a PostHog request each time — and PostHog gets [`TIMEOUT`] to answer.
//! The config used is the tenant's first active PostHog config with `enable_feature_flags`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    cache::{Target, TenantConfig},
    config::DeliverySettings,
    consent::{self, Identity, ProviderStatus, Reason, Signals},
    error::{Error, Result},
    ingest::fields::ClientId,
    outbox::destination,
    providers::{
        self,
        posthog::{self, PostHogSettings},
    },
    secrets::Secrets,
};

/// How long an evaluation is reused for the same config and distinct id.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// How long PostHog gets to answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Cached answers at most; past it, expired ones go, then all.
const CACHE_MAX: usize = 10_000;

/// The request body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagsInput {
    /// The consent-lookup id (the banner's `cg_vid`): whose consent decides. Required.
    #[serde(default)]
    #[schema(required = true)]
    pub visitor_id: Option<ClientId>,
    /// The analytics id, used as PostHog's `distinct_id` when consent allows identifying.
    #[serde(default)]
    pub anonymous_id: Option<ClientId>,
}

/// The answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlagsAnswer {
    /// Each flag's value: its variant name, or whether it is on.
    #[schema(value_type = Object, example = json!({"new-checkout": true, "pricing-test": "variant-b"}))]
    pub flags: Map<String, Value>,
    /// True when evaluated for the visitor's analytics id (analytics consent), false when for the
    /// day's anonymous id — or not evaluated at all (`reason`).
    pub identified: bool,
    /// Present only when PostHog was not asked, and why: `denied:dnt` / `denied:gpc` — the
    /// visitor's respected DNT/GPC signal. `flags` is then empty, the tracker's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "denied:gpc")]
    pub reason: Option<Reason>,
}

/// Why flags could not be evaluated (beyond the caller's mistakes).
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    #[error(transparent)]
    Gateway(#[from] Error),
    /// PostHog refused, failed or did not answer in time; the message says which.
    #[error("{0}")]
    Upstream(String),
}

/// (config, distinct id).
type CacheKey = (Uuid, String);
/// When PostHog answered, and the flags.
type Cached = (Instant, Map<String, Value>);

/// The cache and the HTTP client.
pub struct Flags {
    http: reqwest::Client,
    allow_private: bool,
    cache: Mutex<HashMap<CacheKey, Cached>>,
}

impl Flags {
    pub fn new(delivery: &DeliverySettings) -> Result<Self> {
        let mut builder =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(TIMEOUT).no_proxy();
        if !delivery.allow_private_destinations {
            builder = builder.dns_resolver(Arc::new(destination::PublicOnly));
        }
        Ok(Flags {
            http: builder.build().map_err(anyhow::Error::from)?,
            allow_private: delivery.allow_private_destinations,
            cache: Mutex::default(),
        })
    }

    fn cached(&self, key: &CacheKey) -> Option<Map<String, Value>> {
        let cache = self.cache.lock().unwrap();
        cache.get(key).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, f)| f.clone())
    }

    fn keep(&self, key: CacheKey, flags: Map<String, Value>) {
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), flags));
    }

    /// The visitor's flags from the tenant's PostHog config with flags enabled.
    pub async fn evaluate(
        &self,
        db: &sea_orm::DatabaseConnection,
        secrets: &Secrets,
        cached: &TenantConfig,
        signals: &Signals,
        input: &FlagsInput,
    ) -> std::result::Result<FlagsAnswer, FlagsError> {
        let tenant = &cached.tenant;
        let (target, settings) = flags_config(cached)?;
        let config = &target.config;
        let now = Utc::now();
        let visitor = input.visitor_id.as_ref().ok_or_else(|| Error::validation("visitor_id", "is required"))?.as_str();
        let policy = cached.policy();
        if let Some(signal) = consent::not_tracked(policy, signals) {
            return Ok(FlagsAnswer { flags: Map::new(), identified: false, reason: Some(Reason::Denied(signal)) });
        }
        let record = consent::records::latest_under(db, tenant, visitor, cached.active_consent_config()).await?;
        let decision = consent::decide(policy, record.as_ref(), signals, &target.policy, now);
        let record_grants = record.as_ref().is_some_and(|r| r.choices.analytics);
        let analytics_id = input.anonymous_id.as_ref().map(|a| a.as_str().to_string());
        let (distinct_id, identified) = match analytics_id {
            Some(id) if record_grants && decision.identity() == Some(Identity::Full) => (id, true),
            _ => (cached.daily_id(db, visitor, now).await?, false),
        };
        let key = (config.id, distinct_id.clone());
        if let Some(flags) = self.cached(&key) {
            return Ok(FlagsAnswer { flags, identified, reason: None });
        }
        // The caller may be any browser: reasons that name a reference stay in the log.
        let credentials = secrets.resolve_config(&tenant.slug, &config.credentials).await.map_err(|e| {
            tracing::warn!(config = %config.id, error = %e, "feature flags: the PostHog credentials cannot be resolved");
            FlagsError::Upstream("the PostHog config's project key cannot be resolved now".into())
        })?;
        let project_key = credentials
            .get("project_api_key_ref")
            .ok_or_else(|| FlagsError::Upstream("the PostHog config has no credentials.project_api_key_ref".into()))?;
        let call = posthog::flags_request(&settings, project_key, &distinct_id);
        if !self.allow_private
            && let Err(refused) = destination::check_literal(&call.url)
        {
            tracing::warn!(config = %config.id, %refused, "feature flags: PostHog not called");
            return Err(FlagsError::Upstream(
                "PostHog was not called: the config's instance_url is not allowed".into(),
            ));
        }
        let body = call.json_body.as_ref().map(|b| b.expose_secret().to_string()).unwrap_or_default();
        let res = self
            .http
            .post(&call.url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let why = if e.is_timeout() {
                    format!("PostHog did not answer within {} ms", TIMEOUT.as_millis())
                } else {
                    tracing::warn!(config = %config.id, error = %crate::outbox::worker::describe(e), "feature flags: PostHog unreachable");
                    "PostHog could not be reached".to_string()
                };
                FlagsError::Upstream(why)
            })?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.unwrap_or_default();
        if !(200..300).contains(&status) {
            tracing::warn!(config = %config.id, status, answer = %providers::body_excerpt(&bytes), "feature flags: PostHog refused");
            let hint = if matches!(status, 401 | 403) {
                ": it refused the config's project key (an admin can verify it with POST …/configs/{id}/check)"
            } else {
                ""
            };
            return Err(FlagsError::Upstream(format!("PostHog answered {status}{hint}")));
        }
        let flags = posthog::parse_flags(&bytes).ok_or_else(|| {
            tracing::warn!(config = %config.id, answer = %providers::body_excerpt(&bytes), "feature flags: not a flags answer");
            FlagsError::Upstream("the answer is not PostHog's flags answer; check the config's instance_url".into())
        })?;
        self.keep(key, flags.clone());
        Ok(FlagsAnswer { flags, identified, reason: None })
    }
}

/// The tenant's first active PostHog config with `enable_feature_flags` (from the config cache);
/// 409 saying what is missing otherwise.
fn flags_config(cached: &TenantConfig) -> Result<(&Target, PostHogSettings)> {
    let active: Vec<_> =
        cached.targets(Some(posthog::NAME)).filter(|t| t.policy.status == Some(ProviderStatus::Active)).collect();
    if active.is_empty() {
        return Err(Error::Conflict(
            "this tenant has no active PostHog config; create one with enable_feature_flags: true to serve flags"
                .into(),
        ));
    }
    for t in active {
        if let Ok(s) = serde_json::from_value::<PostHogSettings>(t.config.settings.clone())
            && s.enable_feature_flags
        {
            return Ok((t, s));
        }
    }
    Err(Error::Conflict(
        "no active PostHog config of this tenant has enable_feature_flags: true; set it on the config to serve flags"
            .into(),
    ))
}
