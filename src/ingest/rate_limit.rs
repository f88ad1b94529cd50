//! `rate_limit_per_minute` of an ingest key: a token bucket per key, in this process's memory.
//!
//! Each instance enforces the limit on the requests it receives, so behind a load balancer with
//! N instances a key may get up to N × its limit. That is acceptable for what the limit is for
//! (stopping a runaway or abusive page from flooding the tenant's providers), and it keeps the
//! hot path free of a database write per request. A request (single event or batch) costs one
//! token; the bucket holds a minute's worth, refilled continuously.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// Takes a token for `key`; `Err(wait)` when none is left, with the time until one is.
    pub fn check(&self, key: Uuid, per_minute: u32) -> Result<(), Duration> {
        self.check_at(key, per_minute, Instant::now())
    }

    fn check_at(&self, key: Uuid, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(per_minute.max(1));
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(key).or_insert(Bucket { tokens: capacity, at: now });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
        b.at = now;
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
    fn a_minutes_worth_then_refill() {
        let rl = RateLimiter::default();
        let key = Uuid::nil();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check_at(key, 3, t0).is_ok());
        }
        let wait = rl.check_at(key, 3, t0).unwrap_err();
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(rl.check_at(key, 3, t0 + Duration::from_secs(20)).is_ok(), "one token back after 20 s");
        assert!(rl.check_at(Uuid::from_u128(1), 3, t0).is_ok(), "keys have their own buckets");
    }
}
