//! The config cache (issue 14, docs/caching.md): what an event needs of its tenant that rarely
//! changes — the tenant, its live ingest keys, its active consent policy (parsed once), its
//! provider configs and today's cookieless salt — held in memory per instance, so that an event
//! reads none of it from the database. Only the visitor's latest consent record and the
//! idempotency check stay exact per event.
//!
//! Invalidation: every change to those rows bumps the tenant's row in `config_generation` in the
//! same transaction ([`generation::bump`]). The instance that made the change drops the tenant's
//! entry as soon as it committed ([`ConfigCache::forget`]); every instance polls the generations
//! of the tenants it holds each `cache.refresh_ms` and drops those that moved. Whatever the
//! polls say, an entry is read again `cache.max_age_ms` after its load (fail closed: if that
//! read fails, so does the request).

pub mod freshness;
pub mod generation;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, Utc};
use entity::{ingest_key, provider_config, tenant};
use sea_orm::{ConnectionTrait, DatabaseConnection};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    consent::{self, ConsentPolicy},
    error::Result,
    ingest::{daily_id, keys},
};

/// `[cache]`: how fast a change made on one instance reaches the others.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// How often each instance polls for changes made elsewhere, in milliseconds. A change made
    /// on another instance takes effect within about this long (plus one poll's round trip).
    pub refresh_ms: u64,
    /// The longest an entry is used after its load, in milliseconds; then it is read again.
    /// Bounds staleness when polls fail or the database was edited directly. Above `refresh_ms`.
    pub max_age_ms: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { refresh_ms: 1000, max_age_ms: 5000 }
    }
}

impl CacheSettings {
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.refresh_ms < 10 {
            return Err("key `cache.refresh_ms`: must be at least 10".into());
        }
        if self.max_age_ms <= self.refresh_ms {
            return Err(format!(
                "key `cache.max_age_ms` ({}) must exceed `cache.refresh_ms` ({}): entries would expire between polls",
                self.max_age_ms, self.refresh_ms
            ));
        }
        Ok(())
    }
}

/// The tenant's active consent config, as the decision engine applies it.
#[derive(Clone, Debug)]
pub struct ActiveConsent {
    /// The active config's id (a record under another config is `other_config`).
    pub config_id: Uuid,
    /// Its published policy; `None` when it cannot be applied (no published revision, an
    /// unreadable status): nothing optional is granted then.
    pub policy: Option<ConsentPolicy>,
}

/// A forwarding target as the decision reads it: the config, its provider, and what the decision
/// engine needs of it — read once per load rather than parsed from the settings per event.
pub struct Target {
    pub config: provider_config::Model,
    pub provider: &'static dyn crate::providers::AnyProvider,
    /// The config's settings as its provider reads them.
    pub settings: crate::providers::StoredSettings,
    pub policy: consent::ProviderPolicy,
}

/// A live ingest key, and when this instance last recorded its use.
struct LiveKey {
    model: ingest_key::Model,
    last_used_at: Mutex<Option<DateTime<Utc>>>,
}

/// One tenant's cached configuration.
pub struct TenantConfig {
    pub tenant: tenant::Model,
    /// The generation it was loaded under.
    generation: i64,
    loaded_at: Instant,
    /// Live (unrevoked) keys by the SHA-256 of the key.
    keys: HashMap<String, LiveKey>,
    pub consent: Option<ActiveConsent>,
    /// The forwarding targets ([`crate::providers::config::forwarding_targets`]) of registered
    /// providers, oldest first.
    targets: Vec<Target>,
    /// Today's cookieless salt, once an event needed it. Only one day's, ever.
    salt: Mutex<Option<(NaiveDate, Arc<daily_id::Salt>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TenantConfig {
    /// Reads the tenant's configuration; `None`: no such tenant.
    pub async fn load(db: &impl ConnectionTrait, slug: &str) -> Result<Option<TenantConfig>> {
        let loaded_at = Instant::now();
        let Some(tenant) = crate::tenants::find(db, slug).await? else { return Ok(None) };
        // Read before the rows: a change committed between the two is caught by the next poll.
        let generation = generation::current(db, tenant.id).await?;
        let keys = keys::live(db, tenant.id)
            .await?
            .into_iter()
            .map(|k| (k.key_hash.clone(), LiveKey { last_used_at: Mutex::new(k.last_used_at), model: k }))
            .collect();
        let consent = match consent::config::store::active_id(db, tenant.id).await? {
            Some(config_id) => {
                let policy = consent::policy_for(db, tenant.id).await?;
                Some(ActiveConsent { config_id, policy })
            }
            None => None,
        };
        let targets = crate::providers::config::forwarding_targets(db, tenant.id, None)
            .await?
            .into_iter()
            .filter_map(|config| {
                let provider = crate::providers::get(&config.provider)?;
                let policy = crate::ingest::provider_policy(&config, provider);
                let settings = provider.read_settings(&config.settings);
                Some(Target { config, provider, settings, policy })
            })
            .collect();
        Ok(Some(TenantConfig { tenant, generation, loaded_at, keys, consent, targets, salt: Mutex::new(None) }))
    }

    /// The live key of this tenant behind `presented`, if any; records its use (at most once a
    /// minute per key and instance: a write per event would double the ingest cost).
    pub async fn authenticate(&self, db: &impl ConnectionTrait, presented: &str) -> Result<Option<ingest_key::Model>> {
        let Some(hash) = keys::hash_of_presented(presented) else { return Ok(None) };
        let Some(key) = self.keys.get(&hash) else { return Ok(None) };
        let now = Utc::now();
        let due = {
            let mut last = lock(&key.last_used_at);
            let due = keys::use_worth_recording(*last, now);
            if due {
                *last = Some(now);
            }
            due
        };
        if due {
            keys::record_use(db, key.model.id, now).await?;
        }
        Ok(Some(key.model.clone()))
    }

    /// For a CORS preflight: whether any live public key allows `origin`.
    pub fn any_public_key_allows(&self, origin: &str) -> bool {
        self.keys
            .values()
            .any(|k| keys::kind_of(&k.model) == keys::KeyKind::Public && keys::origin_allowed(&k.model, origin))
    }

    /// The consent policy of the active config (`None`: nothing optional is granted).
    pub fn policy(&self) -> Option<&ConsentPolicy> {
        self.consent.as_ref().and_then(|c| c.policy.as_ref())
    }

    /// The id of the active consent config.
    pub fn active_consent_config(&self) -> Option<Uuid> {
        self.consent.as_ref().map(|c| c.config_id)
    }

    /// The configs an event may be forwarded to; only `provider`'s when given.
    pub fn targets<'a>(&'a self, provider: Option<&'a str>) -> impl Iterator<Item = &'a Target> {
        self.targets.iter().filter(move |t| provider.is_none_or(|p| t.config.provider == p))
    }

    /// The visitor's cookieless daily id ([`daily_id`]); the salt read (or made) once a day.
    pub async fn daily_id(&self, db: &impl ConnectionTrait, visitor: &str, now: DateTime<Utc>) -> Result<String> {
        let day = daily_id::day_of(now);
        let held = lock(&self.salt).as_ref().filter(|(d, _)| *d == day).map(|(_, s)| s.clone());
        let salt = match held {
            Some(s) => s,
            None => {
                let s = Arc::new(daily_id::salt_for(db, self.tenant.id, now).await?);
                *lock(&self.salt) = Some((day, s.clone()));
                s
            }
        };
        Ok(daily_id::daily_id(&salt, self.tenant.id, visitor, day))
    }

    /// Drops a salt of a day before `today`: past days' salts are deleted from the database, and
    /// memory must not keep what the database may no longer hold.
    fn forget_salt_before(&self, today: NaiveDate) {
        let mut salt = lock(&self.salt);
        if salt.as_ref().is_some_and(|(d, _)| *d < today) {
            *salt = None;
        }
    }
}

#[derive(Default)]
struct Entries {
    by_slug: HashMap<String, Arc<TenantConfig>>,
    /// Grows with every removal: a load that began before one does not store what it read.
    epoch: u64,
}

/// Loads of one slug at a time (of the slugs sharing a stripe): when an entry expires under
/// load, one request reads the tenant again and the others wait for it, instead of all reading.
const LOAD_STRIPES: usize = 64;

/// The cache of every tenant this instance has served (one per instance, in `AppState`).
pub struct ConfigCache {
    settings: CacheSettings,
    entries: RwLock<Entries>,
    loading: Vec<tokio::sync::Mutex<()>>,
}

impl ConfigCache {
    pub fn new(settings: CacheSettings) -> Self {
        let loading = (0..LOAD_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        ConfigCache { settings, entries: RwLock::default(), loading }
    }

    /// The entry of `slug`, if it is still fresh.
    fn fresh(&self, slug: &str) -> Option<Arc<TenantConfig>> {
        let max_age = Duration::from_millis(self.settings.max_age_ms);
        let e = self.read();
        e.by_slug.get(slug).filter(|t| freshness::usable(t.loaded_at, Instant::now(), max_age)).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Entries> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's configuration, from memory when fresh, else read (and kept); `None`: no such
    /// tenant (not remembered: a tenant created later is found at once).
    pub async fn tenant(&self, db: &impl ConnectionTrait, slug: &str) -> Result<Option<Arc<TenantConfig>>> {
        if let Some(t) = self.fresh(slug) {
            return Ok(Some(t));
        }
        let stripe = {
            use std::hash::{BuildHasher, BuildHasherDefault};
            let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(slug);
            (h % LOAD_STRIPES as u64) as usize
        };
        let _loading = self.loading[stripe].lock().await;
        // Loaded by the request this one waited for.
        if let Some(t) = self.fresh(slug) {
            return Ok(Some(t));
        }
        let epoch = self.read().epoch;
        let Some(loaded) = TenantConfig::load(db, slug).await? else { return Ok(None) };
        metrics::counter!("consentgate_config_cache_loads_total").increment(1);
        let loaded = Arc::new(loaded);
        let mut e = self.write();
        if e.epoch == epoch {
            e.by_slug.insert(slug.to_string(), loaded.clone());
        }
        Ok(Some(loaded))
    }

    /// Drops the tenant's entry: call after committing a change to its configuration, so that
    /// this instance applies it from the next request on.
    pub fn forget(&self, tenant_id: Uuid) {
        let mut e = self.write();
        e.by_slug.retain(|_, t| t.tenant.id != tenant_id);
        e.epoch += 1;
    }

    /// Drops every entry (for a change made directly in the database, which no generation
    /// reports: without this it applies within `max_age_ms`).
    pub fn clear(&self) {
        let mut e = self.write();
        e.by_slug.clear();
        e.epoch += 1;
    }

    /// One poll: drops the entries whose tenant's generation moved, and past days' salts.
    pub async fn refresh(&self, db: &impl ConnectionTrait) -> Result<()> {
        let cached: Vec<(Uuid, i64)> = self.read().by_slug.values().map(|t| (t.tenant.id, t.generation)).collect();
        let ids: Vec<Uuid> = cached.iter().map(|(id, _)| *id).collect();
        let current = generation::of(db, &ids).await?;
        let stale = freshness::stale(&cached, &current);
        let today = daily_id::day_of(Utc::now());
        let mut e = self.write();
        if !stale.is_empty() {
            metrics::counter!("consentgate_config_cache_invalidations_total").increment(stale.len() as u64);
            e.by_slug.retain(|_, t| !stale.contains(&t.tenant.id));
            e.epoch += 1;
        }
        for t in e.by_slug.values() {
            t.forget_salt_before(today);
        }
        Ok(())
    }

    /// Polls every `refresh_ms` until shutdown. A failing poll is logged once per outage; the
    /// entries still age out `max_age_ms` after their load.
    pub async fn run(self: Arc<Self>, db: DatabaseConnection, shutdown: CancellationToken) {
        let period = Duration::from_millis(self.settings.refresh_ms);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            match self.refresh(&db).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("config cache: polling for changes works again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    metrics::counter!("consentgate_config_cache_poll_failures_total").increment(1);
                    tracing::warn!(error = %e, "config cache: cannot poll for changes; entries are read again cache.max_age_ms after their load");
                }
                Err(_) => metrics::counter!("consentgate_config_cache_poll_failures_total").increment(1),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CacheSettings;

    #[test]
    fn settings_need_a_max_age_above_the_refresh() {
        let ok = |refresh_ms, max_age_ms| CacheSettings { refresh_ms, max_age_ms }.check().is_ok();
        assert!(ok(1000, 5000), "the defaults");
        assert!(ok(10, 11));
        assert!(!ok(1000, 1000), "entries would expire as they are polled");
        assert!(!ok(1000, 500));
        assert!(!ok(5, 5000), "a poll every 5 ms is a busy loop");
        assert!(CacheSettings::default().check().is_ok());
    }
}
