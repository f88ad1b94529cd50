//! An in-memory token bucket per key: the brake on public write routes (consent writes per
//! tenant and client IP) and on ingest keys (`rate_limit_per_minute`).
//!
//! Each instance counts on its own and a restart forgets, so behind a load balancer with N
//! instances a client may get up to N × the limit. That is what these limits are for — stopping
//! a runaway or abusive page — and it keeps the hot path free of a database write per request.
//! Nothing depends on it for correctness. A bucket holds a minute's worth and refills
//! continuously; `per_minute` is given per call, because each ingest key has its own limit.

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

impl<K: Hash + Eq> RateLimiter<K> {
    /// Takes one token for `key`, allowing `per_minute` per minute with bursts of as many
    /// (0: unlimited). `Err(wait)` when the bucket is empty: the time until a token is back.
    pub fn check(&self, key: K, per_minute: u32) -> Result<(), Duration> {
        self.check_at(key, per_minute, Instant::now())
    }

    fn check_at(&self, key: K, per_minute: u32, now: Instant) -> Result<(), Duration> {
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let per_sec = capacity / 60.0;
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
        let b = state.map.entry(key).or_insert(Bucket { tokens: capacity, updated: now });
        b.tokens = (b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_sec).min(capacity);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_sec))
        }
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
