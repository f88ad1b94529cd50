//! Rate limits: how fast a client may write. Every limit is "N per minute, bursts of N" (a token
//! bucket; in Redis the same thing as GCRA), and 0 disables it.
//!
//! - `memory`: a counter in this instance's memory. Consent writes always use it; ingestion uses
//!   it unless `[rate_limit] redis_url` is set, and while Redis cannot be reached.
//! - [`shared`]: the same limits counted in Redis, so that every instance naming it shares them.
//! - [`IngestLimits`]: the limits an event post meets (per ingest key, per client IP for public
//!   keys, per tenant — [`ingest_checks`]), checked all at once: a refused request counts
//!   against none of them.
//!
//! docs/rate-limits.md is the reference.

mod memory;
pub mod shared;

use std::{net::IpAddr, time::Duration};

pub use memory::RateLimiter;
use uuid::Uuid;

use crate::{config::RateLimitSettings, ingest::keys::KeyKind};

/// What a limit counts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// One ingest key.
    IngestKey(Uuid),
    /// One client (its address; IPv6: its /64) posting to one tenant with a public key.
    ClientIp(Uuid, IpAddr),
    /// Everything posted to one tenant.
    Tenant(Uuid),
}

impl LimitKey {
    /// The name of what was limited, for the error message and the metric label.
    pub fn scope(&self) -> &'static str {
        match self {
            LimitKey::IngestKey(_) => "ingest_key",
            LimitKey::ClientIp(..) => "client_ip",
            LimitKey::Tenant(_) => "tenant",
        }
    }

    /// The Redis key its counter lives under.
    fn redis_key(&self) -> String {
        match self {
            LimitKey::IngestKey(k) => format!("cg:rl:key:{k}"),
            LimitKey::ClientIp(t, ip) => format!("cg:rl:ip:{t}:{ip}"),
            LimitKey::Tenant(t) => format!("cg:rl:tenant:{t}"),
        }
    }
}

/// One limit a request must be within.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub key: LimitKey,
    pub per_minute: u32,
}

/// The ingest limits that apply to one event post: the key's own limit (or the configured
/// default), the client's address for public keys only (a site's server posts for many visitors
/// from one address), and the tenant's. Limits that are off (0) are left out.
pub fn ingest_checks(
    settings: &RateLimitSettings,
    tenant: Uuid,
    key_id: Uuid,
    key_limit: Option<i32>,
    kind: KeyKind,
    client_ip: Option<IpAddr>,
) -> Vec<Check> {
    let per_key = key_limit.map_or(settings.per_key_per_minute, |l| l.max(1) as u32);
    let mut checks = vec![Check { key: LimitKey::IngestKey(key_id), per_minute: per_key }];
    if kind == KeyKind::Public
        && let Some(ip) = client_ip
    {
        let ip = crate::ip::client_key(ip);
        checks.push(Check { key: LimitKey::ClientIp(tenant, ip), per_minute: settings.per_ip_per_minute });
    }
    checks.push(Check { key: LimitKey::Tenant(tenant), per_minute: settings.per_tenant_per_minute });
    checks.retain(|c| c.per_minute > 0);
    checks
}

/// A refusal: which limit, and how long until the request would pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub scope: &'static str,
    pub wait: Duration,
}

impl Refused {
    /// `Retry-After` in whole seconds, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        (self.wait.as_millis().div_ceil(1000) as u64).max(1)
    }
}

/// The ingest limits of this instance: in memory, or shared through Redis when configured (with
/// the memory counter standing in while Redis cannot be reached).
pub struct IngestLimits {
    local: RateLimiter<LimitKey>,
    shared: Option<shared::Redis>,
}

impl IngestLimits {
    /// Does not connect: the first check does (and every check after Redis was lost, at most
    /// once a second).
    pub fn new(settings: &RateLimitSettings) -> anyhow::Result<Self> {
        let shared = match settings.redis_url.as_str() {
            "" => None,
            url => Some(shared::Redis::new(url, Duration::from_millis(settings.redis_timeout_ms))?),
        };
        Ok(IngestLimits { local: RateLimiter::default(), shared })
    }

    /// Takes one from each limit, or from none.
    pub async fn check(&self, checks: &[Check]) -> Result<(), Refused> {
        if checks.is_empty() {
            return Ok(());
        }
        if let Some(redis) = &self.shared
            && let Some(outcome) = redis.check(checks).await
        {
            return outcome.map_err(|(i, wait)| Refused { scope: checks[i].key.scope(), wait });
        }
        let limits: Vec<(LimitKey, u32)> = checks.iter().map(|c| (c.key.clone(), c.per_minute)).collect();
        self.local.check_all(&limits).map_err(|(i, wait)| Refused { scope: checks[i].key.scope(), wait })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_limits_apply() {
        let settings = |key, ip, tenant| RateLimitSettings {
            per_key_per_minute: key,
            per_ip_per_minute: ip,
            per_tenant_per_minute: tenant,
            ..Default::default()
        };
        let (t, k) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let ip: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        let block: IpAddr = "2001:db8:1:2::".parse().unwrap();
        let scopes = |checks: Vec<Check>| checks.into_iter().map(|c| (c.key, c.per_minute)).collect::<Vec<_>>();
        // (settings, key's own limit, kind, ip) → the checks
        let cases = [
            (settings(0, 600, 0), None, KeyKind::Public, Some(ip), vec![(LimitKey::ClientIp(t, block), 600)]),
            (settings(0, 600, 0), None, KeyKind::Secret, Some(ip), vec![]),
            (settings(0, 600, 0), None, KeyKind::Public, None, vec![]),
            (
                settings(100, 600, 5000),
                None,
                KeyKind::Secret,
                Some(ip),
                vec![(LimitKey::IngestKey(k), 100), (LimitKey::Tenant(t), 5000)],
            ),
            (settings(100, 0, 0), Some(7), KeyKind::Secret, None, vec![(LimitKey::IngestKey(k), 7)]),
            (settings(0, 0, 0), Some(0), KeyKind::Secret, None, vec![(LimitKey::IngestKey(k), 1)]),
        ];
        for (s, own, kind, ip, want) in cases {
            assert_eq!(scopes(ingest_checks(&s, t, k, own, kind, ip)), want, "{own:?} {kind:?} {ip:?}");
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        let r = |ms| Refused { scope: "tenant", wait: Duration::from_millis(ms) }.retry_after_secs();
        assert_eq!([r(0), r(1), r(999), r(1000), r(1001), r(20_000)], [1, 1, 1, 1, 2, 20]);
    }

    #[tokio::test]
    async fn in_memory_limits_refuse_with_the_scope() {
        let limits = IngestLimits::new(&RateLimitSettings::default()).unwrap();
        let checks = [
            Check { key: LimitKey::IngestKey(Uuid::from_u128(1)), per_minute: 10 },
            Check { key: LimitKey::Tenant(Uuid::from_u128(2)), per_minute: 1 },
        ];
        assert!(limits.check(&checks).await.is_ok());
        let refused = limits.check(&checks).await.unwrap_err();
        assert_eq!(refused.scope, "tenant");
        assert!(limits.check(&[]).await.is_ok());
    }
}
