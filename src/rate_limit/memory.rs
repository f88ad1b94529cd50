//! The in-memory counter: a token bucket per key, in this instance's memory. The brake on public
//! write routes (consent writes per tenant and client IP) and, unless Redis is configured or
//! while it cannot be reached, on event ingestion.
//!
//! Each instance counts on its own and a restart forgets, so behind a load balancer with N
//! instances a client may get up to N × the limit. Nothing depends on it for correctness. A
//! bucket holds a minute's worth and refills continuously; `per_minute` is given per call,
//! because each ingest key has its own limit.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Buckets kept before idle ones are dropped.
const PRUNE_ABOVE: usize = 10_000;
/// At most one pruning pass this often, so a flood of fresh keys cannot make every request scan
/// the whole map under the lock.
const PRUNE_EVERY: Duration = Duration::from_secs(5);
/// Past this many live buckets the map is reset (everyone starts with a full bucket again): a
/// brake that forgets is better than unbounded memory.
const HARD_CAP: usize = 200_000;

pub struct RateLimiter<K> {
    state: Mutex<Buckets<K>>,
}

struct Buckets<K> {
    map: HashMap<K, Bucket>,
    pruned: Option<Instant>,
}

impl<K> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter { state: Mutex::new(Buckets { map: HashMap::new(), pruned: None }) }
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// Takes one token for `key`, allowing `per_minute` per minute with bursts of as many
    /// (0: unlimited). `Err(wait)` when the bucket is empty: the time until a token is back.
    pub fn check(&self, key: K, per_minute: u32) -> Result<(), Duration> {
        self.check_all_at(&[(key, per_minute)], Instant::now()).map_err(|(_, wait)| wait)
    }

    /// Takes one token from each `(key, per_minute)` bucket, or from none: `Err((i, wait))` names
    /// the limit that waits longest (its index in `limits`) and how long.
    pub fn check_all(&self, limits: &[(K, u32)]) -> Result<(), (usize, Duration)> {
        self.check_all_at(limits, Instant::now())
    }

    fn check_all_at(&self, limits: &[(K, u32)], now: Instant) -> Result<(), (usize, Duration)> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let due = state.pruned.is_none_or(|t| now.saturating_duration_since(t) >= PRUNE_EVERY);
        if state.map.len() > PRUNE_ABOVE && due {
            // A bucket idle for a minute is full again: forgetting it changes nothing.
            state.map.retain(|_, b| now.saturating_duration_since(b.updated) < Duration::from_secs(60));
            state.pruned = Some(now);
        }
        if state.map.len() > HARD_CAP {
            state.map.clear();
        }
        let mut refused: Option<(usize, Duration)> = None;
        for (i, (key, per_minute)) in limits.iter().enumerate() {
            if *per_minute == 0 {
                continue;
            }
            let capacity = f64::from(*per_minute);
            let per_sec = capacity / 60.0;
            let b = state.map.entry(key.clone()).or_insert(Bucket { tokens: capacity, updated: now });
            b.tokens = (b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_sec).min(capacity);
            b.updated = now;
            if b.tokens < 1.0 {
                let wait = Duration::from_secs_f64((1.0 - b.tokens) / per_sec);
                if refused.is_none_or(|(_, w)| wait > w) {
                    refused = Some((i, wait));
                }
            }
        }
        if let Some(r) = refused {
            return Err(r);
        }
        for (key, per_minute) in limits {
            if *per_minute > 0
                && let Some(b) = state.map.get_mut(key)
            {
                b.tokens -= 1.0;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn check_at(&self, key: K, per_minute: u32, now: Instant) -> Result<(), Duration> {
        self.check_all_at(&[(key, per_minute)], now).map_err(|(_, wait)| wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let l = RateLimiter::default();
        let start = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("a", 3, start).is_ok());
        }
        let wait = l.check_at("a", 3, start).unwrap_err();
        assert!(wait <= Duration::from_secs(20) && wait > Duration::from_secs(19), "{wait:?}");
        assert!(l.check_at("b", 3, start).is_ok(), "keys have their own buckets");
        // One token back after 20 s (3 per minute).
        assert!(l.check_at("a", 3, start + Duration::from_secs(20)).is_ok());
        assert!(l.check_at("a", 3, start + Duration::from_secs(20)).is_err());
    }

    #[test]
    fn several_limits_take_a_token_from_each_or_from_none() {
        let l = RateLimiter::default();
        let t = Instant::now();
        // "tenant" allows 2, "key" 5: the third request is refused by the tenant and must not
        // use up the key's budget.
        assert!(l.check_all_at(&[("key", 5), ("tenant", 2)], t).is_ok());
        assert!(l.check_all_at(&[("key", 5), ("tenant", 2)], t).is_ok());
        let (which, wait) = l.check_all_at(&[("key", 5), ("tenant", 2)], t).unwrap_err();
        assert_eq!(which, 1);
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30), "{wait:?}");
        for _ in 0..3 {
            assert!(l.check_at("key", 5, t).is_ok(), "the refused request took nothing from the key");
        }
        assert!(l.check_at("key", 5, t).is_err());
        // The longest wait is the one reported.
        let (which, _) = l.check_all_at(&[("tenant", 2), ("key", 5)], t).unwrap_err();
        assert_eq!(which, 0, "the tenant's bucket waits 30 s, the key's 12 s");
    }

    #[test]
    fn zero_means_unlimited() {
        let l = RateLimiter::default();
        for _ in 0..1000 {
            assert!(l.check("k", 0).is_ok());
        }
    }

    #[test]
    fn idle_buckets_are_pruned() {
        let l = RateLimiter::default();
        let start = Instant::now();
        for k in 0..=PRUNE_ABOVE {
            let _ = l.check_at(k, 1, start);
        }
        let _ = l.check_at(usize::MAX, 1, start + Duration::from_secs(61));
        assert_eq!(l.state.lock().unwrap().map.len(), 1);
        // The next pass waits for PRUNE_EVERY, however many keys arrive meanwhile.
        let first_pass = start + Duration::from_secs(61);
        for k in 0..=PRUNE_ABOVE {
            let _ = l.check_at(k, 1, first_pass + PRUNE_EVERY / 2);
        }
        assert_eq!(l.state.lock().unwrap().pruned, Some(first_pass), "no pass before PRUNE_EVERY");
        let _ = l.check_at(0, 1, first_pass + PRUNE_EVERY);
        assert_eq!(l.state.lock().unwrap().pruned, Some(first_pass + PRUNE_EVERY));
    }
}
