//! Rate limits shared by every instance, counted in Redis.
//!
//! One Lua script checks all the limits of a request atomically (GCRA: per key, the "theoretical
//! arrival time" of the next request, which is the token bucket of `memory` written as
//! one number): it takes from every limit or from none, on Redis's clock (instances' clocks do not
//! matter), and each key expires when its bucket would be full again.
//!
//! **Fails open.** When Redis cannot be reached or answers slower than `redis_timeout_ms`, the
//! request is counted by the instance's own memory counter instead (as without Redis), never
//! refused for it: `consentgate_rate_limit_redis_fallbacks_total` counts those requests and the log
//! says so at most once every 10 seconds. A lost connection is retried at most once a second,
//! meanwhile the requests fall back at once rather than wait.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::{AsyncConnectionConfig, Client, Script, aio::MultiplexedConnection};

use super::Check;
use crate::telemetry::LogThrottle;

/// `ARGV[i]`: limit i per minute. Returns `{0, 0}` when every limit had room (and took one from
/// each), else `{i, wait_µs}`: the 1-based limit that waits longest, and how long.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local worst, which = 0, 0
local tats = {}
for i, key in ipairs(KEYS) do
  local per_minute = tonumber(ARGV[i])
  local interval = 60000000 / per_minute
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  tats[i] = tat + interval
  local wait = tats[i] - 60000000 - now
  if wait > 0 and wait > worst then worst, which = wait, i end
end
if which > 0 then return {which, math.ceil(worst)} end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', math.ceil((tats[i] - now) / 1000) + 1000)
end
return {0, 0}
";

/// How long after a failure the next connection attempt waits.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

static FALLBACK_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));

pub struct Redis {
    client: Client,
    config: AsyncConnectionConfig,
    timeout: Duration,
    script: Script,
    conn: Mutex<Conn>,
}

enum Conn {
    Ready(MultiplexedConnection),
    /// One request is connecting; the others do not wait for it.
    Connecting,
    Down {
        retry_at: Instant,
    },
}

impl Redis {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = Client::open(url).map_err(|e| anyhow::anyhow!("rate_limit.redis_url: {e}"))?;
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
        Ok(Redis {
            client,
            config,
            timeout,
            script: Script::new(GCRA),
            conn: Mutex::new(Conn::Down { retry_at: Instant::now() }),
        })
    }

    /// `Some(Ok)` or `Some(Err((index into checks, wait)))` from Redis; `None` when Redis could
    /// not answer (the caller counts locally).
    pub(super) async fn check(&self, checks: &[Check]) -> Option<Result<(), (usize, Duration)>> {
        match self.try_check(checks).await {
            Ok(outcome) => Some(outcome),
            Err(why) => {
                metrics::counter!("consentgate_rate_limit_redis_fallbacks_total").increment(1);
                if let Some(suppressed) = FALLBACK_LOG.allow() {
                    tracing::warn!(
                        error = %why,
                        suppressed,
                        "Redis for the shared rate limits is unavailable; counting on this instance"
                    );
                }
                None
            }
        }
    }

    async fn try_check(&self, checks: &[Check]) -> Result<Result<(), (usize, Duration)>, String> {
        let mut conn = self.connection().await?;
        let mut call = self.script.prepare_invoke();
        for c in checks {
            call.key(c.key.redis_key());
        }
        for c in checks {
            call.arg(c.per_minute);
        }
        let answer = tokio::time::timeout(self.timeout, call.invoke_async::<Vec<i64>>(&mut conn)).await;
        let answer = match answer {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(self.lost(e.to_string())),
            Err(_) => return Err(self.lost(format!("no answer within {:?}", self.timeout))),
        };
        match answer.as_slice() {
            [0, _] => Ok(Ok(())),
            &[i, wait_us] if i >= 1 && (i as usize) <= checks.len() => {
                Ok(Err((i as usize - 1, Duration::from_micros(wait_us.max(0) as u64))))
            }
            other => Err(format!("unexpected answer from the rate limit script: {other:?}")),
        }
    }

    /// The connection, connecting if it is due; `Err` at once while it is down or being made.
    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        {
            let mut state = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            match &*state {
                Conn::Ready(c) => return Ok(c.clone()),
                Conn::Connecting => return Err("connecting".into()),
                Conn::Down { retry_at } if Instant::now() < *retry_at => {
                    return Err("unreachable (retried at most once a second)".into());
                }
                Conn::Down { .. } => *state = Conn::Connecting,
            }
        }
        // Whatever happens to this request (it may be dropped mid-connect), the state leaves
        // `Connecting`.
        let mut guard = ConnectingGuard { conn: &self.conn, done: false };
        let made =
            tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection_with_config(&self.config))
                .await;
        guard.done = true;
        let mut state = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let (next, result) = match made {
            Ok(Ok(c)) => (Conn::Ready(c.clone()), Ok(c)),
            Ok(Err(e)) => (Conn::Down { retry_at: Instant::now() + RECONNECT_AFTER }, Err(e.to_string())),
            Err(_) => (
                Conn::Down { retry_at: Instant::now() + RECONNECT_AFTER },
                Err(format!("no connection within {:?}", self.timeout)),
            ),
        };
        *state = next;
        result
    }

    /// Drops the connection after a failed call; the next attempt waits [`RECONNECT_AFTER`].
    fn lost(&self, why: String) -> String {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) =
            Conn::Down { retry_at: Instant::now() + RECONNECT_AFTER };
        why
    }
}

struct ConnectingGuard<'a> {
    conn: &'a Mutex<Conn>,
    done: bool,
}

impl Drop for ConnectingGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Conn::Down { retry_at: Instant::now() };
        }
    }
}
