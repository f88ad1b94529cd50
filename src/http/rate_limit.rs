//! A small in-memory token bucket per (tenant, client), for public write routes. It is a brake
//! on abuse, not an exact quota: each instance counts on its own, and a restart forgets. Nothing
//! depends on it for correctness.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

/// Buckets kept before idle ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(Uuid, IpAddr), Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// Takes one token for `client` of `tenant`, allowing `per_minute` per minute with bursts of
    /// as many (0: unlimited). `Err(wait)` when the bucket is empty.
    pub fn check(&self, tenant: Uuid, client: IpAddr, per_minute: u32) -> Result<(), Duration> {
        self.check_at(tenant, crate::ip::client_key(client), per_minute, Instant::now())
    }

    fn check_at(&self, tenant: Uuid, client: IpAddr, per_minute: u32, now: Instant) -> Result<(), Duration> {
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            // A bucket idle for a minute is full again: forgetting it changes nothing.
            buckets.retain(|_, b| now.duration_since(b.updated) < Duration::from_secs(60));
        }
        let b = buckets.entry((tenant, client)).or_insert(Bucket { tokens: capacity, updated: now });
        b.tokens = (b.tokens + now.duration_since(b.updated).as_secs_f64() * per_sec).min(capacity);
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
        let (t, ip) = (Uuid::nil(), "198.51.100.7".parse().unwrap());
        let start = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at(t, ip, 3, start).is_ok());
        }
        let wait = l.check_at(t, ip, 3, start).unwrap_err();
        assert!(wait <= Duration::from_secs(20) && wait > Duration::from_secs(19), "{wait:?}");
        // Another client and another tenant have their own buckets.
        assert!(l.check_at(t, "198.51.100.8".parse().unwrap(), 3, start).is_ok());
        assert!(l.check_at(Uuid::max(), ip, 3, start).is_ok());
        // One token back after 20 s (3 per minute).
        assert!(l.check_at(t, ip, 3, start + Duration::from_secs(20)).is_ok());
        assert!(l.check_at(t, ip, 3, start + Duration::from_secs(20)).is_err());
    }

    #[test]
    fn zero_means_unlimited() {
        let l = RateLimiter::default();
        for _ in 0..1000 {
            assert!(l.check(Uuid::nil(), "::1".parse().unwrap(), 0).is_ok());
        }
    }
}
