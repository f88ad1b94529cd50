//! When to try again: exponential backoff with full jitter ("AWS Architecture Blog: Exponential
//! Backoff and Jitter"): the n-th retry waits a uniformly random time in `[0, min(max, base·2ⁿ⁻¹)]`,
//! which spreads the retries of many deliveries that failed together (a provider outage) instead
//! of sending them back in one wave. A provider's `Retry-After` is a lower bound, itself capped by
//! the maximum so that one answer cannot park a delivery for days.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The upper bound of the wait before retry number `attempt` (1 = the first retry).
pub fn ceiling(attempt: i32, base_ms: u64, max_ms: u64) -> Duration {
    let exp = attempt.saturating_sub(1).clamp(0, 62) as u32;
    let ms = base_ms.saturating_mul(1u64.checked_shl(exp).unwrap_or(u64::MAX)).min(max_ms);
    Duration::from_millis(ms)
}

/// The wait before retry number `attempt`: `unit` (uniform in `[0, 1)`) of the ceiling, but at
/// least `retry_after` (capped by `max_ms`).
pub fn delay(attempt: i32, base_ms: u64, max_ms: u64, unit: f64, retry_after: Option<Duration>) -> Duration {
    let jittered = ceiling(attempt, base_ms, max_ms).mul_f64(unit.clamp(0.0, 1.0));
    match retry_after {
        Some(ra) => jittered.max(ra.min(Duration::from_millis(max_ms))),
        None => jittered,
    }
}

/// A uniform random number in `[0, 1)` from the operating system's source.
pub fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let c: Vec<u64> = (1..=6).map(|a| ceiling(a, 50, 400).as_millis() as u64).collect();
        assert_eq!(c, [50, 100, 200, 400, 400, 400]);
        assert_eq!(ceiling(1000, 1_000, 3_600_000), Duration::from_secs(3600), "no overflow");
        assert_eq!(ceiling(0, 50, 400), Duration::from_millis(50));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling() {
        for attempt in 1..10 {
            for unit in [0.0, 0.3, 0.999] {
                let d = delay(attempt, 50, 400, unit, None);
                assert!(d <= ceiling(attempt, 50, 400));
            }
        }
        assert_eq!(delay(3, 100, 10_000, 0.5, None), Duration::from_millis(200));
    }

    #[test]
    fn retry_after_is_a_capped_lower_bound() {
        let ra = Some(Duration::from_secs(2));
        assert_eq!(delay(1, 50, 10_000, 0.0, ra), Duration::from_secs(2));
        assert_eq!(delay(1, 50, 400, 0.0, ra), Duration::from_millis(400));
    }

    #[test]
    fn retry_after_forms() {
        let now: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Thu, 26 Nov 2026 12:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Thu, 26 Nov 2026 11:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn random_units_are_in_range() {
        for _ in 0..100 {
            let u = unit_random();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
