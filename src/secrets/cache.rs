//! One cache slot per reference. A slot's async lock is held for the whole lookup, so concurrent
//! callers of an expired reference wait for the one lookup in flight instead of each calling the
//! vault. Failures are kept too (briefly), for the same reason.
//!
//! Every stored lookup gets a new *generation*. A caller whose value was refused (a provider's
//! 401) asks for a refresh of the generation it used: if another caller refreshed since, the
//! newer value is returned without a second lookup.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use secrecy::SecretString;
use tokio::{sync::Mutex, time::Instant};

use super::Failure;

/// A value as the cache hands it out.
#[derive(Clone)]
pub struct Cached {
    pub value: SecretString,
    pub generation: u64,
}

/// When a fresh entry must still be looked up again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refresh {
    /// Use a fresh entry.
    No,
    /// Look up again, whatever is stored (`check`).
    Always,
    /// Look up again unless the entry is newer than this generation (the one a refused request used).
    Replacing(u64),
}

pub struct Cache {
    ttl: Duration,
    failure_ttl: Duration,
    slots: std::sync::Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
}

#[derive(Default)]
struct Slot {
    generation: u64,
    entry: Option<(Result<SecretString, Failure>, Instant)>,
}

impl Cache {
    pub fn new(ttl: Duration, failure_ttl: Duration) -> Self {
        Cache { ttl, failure_ttl, slots: Default::default() }
    }

    /// Forgets `key` (a lookup in flight finishes, but its result is not reused).
    pub fn forget(&self, key: &str) {
        self.slots.lock().expect("the secrets cache lock is never poisoned").remove(key);
    }

    /// The value for `key`, from the cache or from `lookup` (run at most once at a time per key).
    pub async fn get<F, Fut>(&self, key: &str, refresh: Refresh, lookup: F) -> Result<Cached, Failure>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SecretString, Failure>>,
    {
        let slot = {
            let mut slots = self.slots.lock().expect("the secrets cache lock is never poisoned");
            slots.entry(key.to_string()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        let now = Instant::now();
        let fresh = slot.entry.as_ref().is_some_and(|(_, until)| now < *until);
        let reuse = fresh
            && match refresh {
                Refresh::No => true,
                Refresh::Always => false,
                Refresh::Replacing(g) => slot.generation != g,
            };
        if reuse && let Some((result, _)) = &slot.entry {
            return match result {
                Ok(value) => Ok(Cached { value: value.clone(), generation: slot.generation }),
                Err(f) => Err(Failure { replayed: true, ..f.clone() }),
            };
        }
        let result = lookup().await;
        let keep = match &result {
            Ok(_) => self.ttl,
            Err(f) => self.failure_ttl.max(f.retry_after.unwrap_or_default()),
        };
        slot.generation += 1;
        slot.entry = Some((result.clone(), Instant::now() + keep));
        result.map(|value| Cached { value, generation: slot.generation })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use secrecy::ExposeSecret;

    use super::*;

    fn counting(calls: &AtomicU32, value: &str) -> impl Future<Output = Result<SecretString, Failure>> {
        calls.fetch_add(1, Ordering::SeqCst);
        let v = SecretString::from(value.to_string());
        async move { Ok(v) }
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_is_reused_until_its_ttl_then_looked_up_again() {
        let cache = Cache::new(Duration::from_secs(300), Duration::from_secs(15));
        let calls = AtomicU32::new(0);
        let a = cache.get("env:K", Refresh::No, || counting(&calls, "one")).await.unwrap();
        let b = cache.get("env:K", Refresh::No, || counting(&calls, "two")).await.unwrap();
        assert_eq!((a.value.expose_secret(), b.value.expose_secret()), ("one", "one"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(301)).await;
        let c = cache.get("env:K", Refresh::No, || counting(&calls, "two")).await.unwrap();
        assert_eq!(c.value.expose_secret(), "two");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(c.generation > a.generation);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_lookup() {
        let cache = Arc::new(Cache::new(Duration::from_secs(300), Duration::from_secs(15)));
        let calls = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get("keyvault://v", Refresh::No, || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // A slow vault: every other caller arrives while this lookup is in flight.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok(SecretString::from("s".to_string()))
                    })
                    .await
                    .unwrap()
                    .generation
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_kept_briefly_and_as_long_as_retry_after_asks() {
        let cache = Cache::new(Duration::from_secs(300), Duration::from_secs(15));
        let calls = AtomicU32::new(0);
        let fail = |retry_after| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Err(Failure { retry_after, ..Failure::transient("throttled") }) }
        };
        let replayed = |r: Result<Cached, Failure>| r.err().map(|f| f.replayed);
        assert_eq!(replayed(cache.get("k", Refresh::No, || fail(None)).await), Some(false), "a lookup's own failure");
        assert_eq!(replayed(cache.get("k", Refresh::No, || fail(None)).await), Some(true), "the stored one, again");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(16)).await;
        assert!(cache.get("k", Refresh::No, || fail(Some(Duration::from_secs(60)))).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(cache.get("k", Refresh::No, || fail(None)).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "Retry-After: 60 keeps the failure 60 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_replaces_only_the_generation_that_was_refused() {
        let cache = Cache::new(Duration::from_secs(300), Duration::from_secs(15));
        let calls = AtomicU32::new(0);
        let first = cache.get("k", Refresh::No, || counting(&calls, "old")).await.unwrap();
        let second = cache.get("k", Refresh::Replacing(first.generation), || counting(&calls, "new")).await.unwrap();
        assert_eq!(second.value.expose_secret(), "new");
        // A second delivery refused with the old value: the new one is already there.
        let third = cache.get("k", Refresh::Replacing(first.generation), || counting(&calls, "newer")).await.unwrap();
        assert_eq!(third.value.expose_secret(), "new");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let forced = cache.get("k", Refresh::Always, || counting(&calls, "newest")).await.unwrap();
        assert_eq!(forced.value.expose_secret(), "newest");
    }
}
