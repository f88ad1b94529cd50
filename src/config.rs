//! Typed configuration: defaults, then an optional TOML file, then `CONSENTGATE__…` environment
//! variables (`CONSENTGATE__DATABASE__URL` overrides `database.url`). Unknown keys are errors, so
//! a typo stops start-up with a message naming the key instead of being silently ignored.

use std::{net::SocketAddr, path::Path};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub log: LogSettings,
    pub geo: GeoSettings,
    pub consent: ConsentSettings,
    pub rate_limit: RateLimitSettings,
    pub delivery: DeliverySettings,
    pub ingest: IngestSettings,
    pub retention: RetentionSettings,
    pub secrets: crate::secrets::SecretsSettings,
    pub cache: crate::cache::CacheSettings,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address to listen on. Port 0 picks a free port (tests).
    pub bind: SocketAddr,
    /// Public base URL of the gateway, used in printed links and the demo page.
    /// Empty: derived from `bind`.
    pub public_url: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Header carrying the client IP when the gateway runs behind a proxy (e.g.
    /// `X-Forwarded-For`). Empty: the socket peer address. Read only on requests whose socket peer
    /// is in `trusted_proxies`; from any other peer it is ignored and the peer is the client.
    pub client_ip_header: String,
    /// The networks the proxies that write `client_ip_header` connect from. Default: loopback
    /// and the private ranges (`10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7`). A
    /// request from elsewhere reached the gateway around the proxy, and its header is the
    /// client's own word.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How many proxies in front of the gateway add an entry to `client_ip_header`: the client
    /// IP is the entry this many from the right (1: the last one, which the nearest proxy
    /// wrote). Entries further left come from the client and are never trusted.
    pub client_ip_hops: usize,
    /// Seconds to wait for in-flight requests on shutdown.
    pub shutdown_grace_secs: u64,
    /// Seconds a client has to send a complete request head (request line and headers), counted
    /// from the moment the connection opens or its previous response was written: this is also
    /// how long an idle keep-alive connection stays open.
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may go without a byte read or written, even mid-request (a body
    /// trickling in, a response nobody reads), before it is closed.
    pub idle_timeout_secs: u64,
    /// Connections served at once; a connection beyond gets a 503 and is closed.
    pub max_connections: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: String::new(),
            max_body_bytes: 64 * 1024,
            client_ip_header: String::new(),
            trusted_proxies: ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
                .into_iter()
                .map(|n| n.parse().expect("a valid network"))
                .collect(),
            client_ip_hops: 1,
            shutdown_grace_secs: 20,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://consentgate.db?mode=rwc` (embedded default, file created on first start)
    /// or `postgres://user@host/db`.
    pub url: String,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self { url: "sqlite://consentgate.db?mode=rwc".into(), max_connections: 10 }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A `tracing` filter, e.g. `info` or `consentgate=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Human }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoSettings {
    /// Trusted header with the visitor's ISO 3166 country (e.g. `CF-IPCountry`). Empty: unused.
    pub country_header: String,
    /// Trusted header with the visitor's ISO 3166-2 subdivision (e.g. `X-Region` = `CA`),
    /// so `US-CA` style regions can be matched. Empty: unused.
    pub region_header: String,
    /// A MaxMind-format database (GeoIP2/GeoLite2 Country or City) used when the country
    /// header is unset or absent. Empty: unused.
    pub mmdb_path: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsentSettings {
    /// Consent writes (`POST`/`DELETE …/consent`) accepted per client IP (IPv6: per /64) and
    /// tenant per minute, with bursts up to the same number. The consent routes are public, so
    /// this bounds how fast one client can grow the hash chain. 0 disables the limit. The count is
    /// kept in memory per instance: behind a proxy set `server.client_ip_header`, or every visitor
    /// shares the proxy's budget.
    pub writes_per_minute_per_ip: u32,
}

impl Default for ConsentSettings {
    fn default() -> Self {
        Self { writes_per_minute_per_ip: 120 }
    }
}

/// Limits on event ingestion (docs/rate-limits.md). Each is events per minute with bursts of as
/// many; 0 disables it. A request is refused (`429`, `Retry-After`) if any limit that applies to
/// it is used up, and then counts against none of them.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Per ingest key, for keys without their own `rate_limit_per_minute` (which wins).
    pub per_key_per_minute: u32,
    /// Public keys only: per client IP (IPv6: per /64) and tenant. Secret keys are exempt: a
    /// site's server posts for many visitors from one address. Behind a proxy set
    /// `server.client_ip_header`, or every visitor shares the proxy's budget.
    pub per_ip_per_minute: u32,
    /// Per tenant, over all its keys.
    pub per_tenant_per_minute: u32,
    /// `redis://127.0.0.1:6379/0`: count in Redis, shared by every instance that names it.
    /// Empty: each instance counts in its own memory (N instances allow up to N × each limit).
    /// While Redis cannot be reached, each instance counts on its own (fails open).
    pub redis_url: String,
    /// How long a Redis check may take before the instance counts on its own, in milliseconds.
    pub redis_timeout_ms: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            per_key_per_minute: 0,
            per_ip_per_minute: 600,
            per_tenant_per_minute: 0,
            redis_url: String::new(),
            redis_timeout_ms: 100,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Run delivery workers in this process.
    pub enabled: bool,
    /// How often an idle worker looks for due deliveries, in milliseconds.
    pub poll_interval_ms: u64,
    /// Requests a worker starts per round and provider, at most (each carrying up to the
    /// provider's batch limit of deliveries); also bounded by the configs' free in-flight slots.
    pub batch_size: u64,
    /// Requests in flight at once to one provider config, per worker: the adaptive window
    /// starts at `in_flight_initial`, grows on answers up to `in_flight_max`, halves on
    /// overload (429, 408, 5xx, timeouts, connection errors) down to `in_flight_min`, and a
    /// `Retry-After` pauses the config (docs/delivery.md#in-flight-limits).
    pub in_flight_initial: usize,
    pub in_flight_min: usize,
    pub in_flight_max: usize,
    /// Deprecated: the fixed per-provider concurrency that the adaptive window replaced. When
    /// set (and `in_flight_max` is not), it is read as `in_flight_max`; start-up warns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_per_provider: Option<usize>,
    /// Timeout of one provider request, in milliseconds.
    pub request_timeout_ms: u64,
    /// How long a claim is held before another worker may take it over, in seconds. Must exceed
    /// `request_timeout_ms` (checked at start-up); the worker also renews it while a request is
    /// in flight.
    pub lease_secs: u64,
    /// Deprecated and ignored: deliveries are retried until the retry horizon
    /// (`retry_horizon_hours`), not for a number of attempts. Still accepted so that existing
    /// config files load; start-up logs a warning when it is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    /// How long a delivery is retried, in hours, counted from the event's arrival: past it, a
    /// delivery still not sent is dead-lettered (and replayable). Shorter for a provider that
    /// refuses older events itself.
    pub retry_horizon_hours: u64,
    /// First retry delay, in milliseconds; doubles each attempt (full jitter).
    pub backoff_base_ms: u64,
    /// Upper bound of one retry delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Failed requests in a row (timeouts, connection errors, 408, 429, 5xx) that open a config's
    /// circuit: its deliveries are then held back and one is sent as a probe every
    /// `circuit_probe_secs`. 0 disables the circuit.
    pub circuit_failures: u32,
    /// Seconds between probes while a config's circuit is open.
    pub circuit_probe_secs: u64,
    /// When a probe succeeds, the config's waiting deliveries are made due again at this many
    /// per second (paced), instead of all at once or at the end of their backoff.
    pub circuit_release_per_sec: u64,
    /// Consecutive 401/403 answers that put a provider config in `error`.
    pub auth_failures_before_error: u32,
    /// Let deliveries reach private, loopback and link-local addresses (a self-hosted provider
    /// on the internal network). Off: a tenant's `instance_url` cannot reach the operator's
    /// internal network (server-side request forgery).
    pub allow_private_destinations: bool,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval_ms: 500,
            batch_size: 50,
            in_flight_initial: 4,
            in_flight_min: 1,
            in_flight_max: 256,
            concurrency_per_provider: None,
            request_timeout_ms: 10_000,
            lease_secs: 60,
            max_attempts: None,
            retry_horizon_hours: 72,
            backoff_base_ms: 1_000,
            backoff_max_ms: 900_000,
            circuit_failures: 5,
            circuit_probe_secs: 30,
            circuit_release_per_sec: 100,
            auth_failures_before_error: 3,
            allow_private_destinations: false,
        }
    }
}

/// The longest retry delay `delivery.backoff_max_ms` may set: a day.
const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;

impl DeliverySettings {
    /// The retry horizon, counted from an event's arrival.
    pub fn retry_horizon(&self) -> chrono::Duration {
        chrono::Duration::hours(self.retry_horizon_hours.min(100_000) as i64)
    }

    /// The deprecated keys set in this configuration, for a start-up warning.
    pub fn deprecated_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.max_attempts.is_some() {
            keys.push("delivery.max_attempts");
        }
        if self.concurrency_per_provider.is_some() {
            keys.push("delivery.concurrency_per_provider");
        }
        keys
    }

    /// The bounds of each provider config's in-flight window. A deprecated
    /// `concurrency_per_provider` caps it when `in_flight_max` is left at its default.
    pub fn in_flight_bounds(&self) -> crate::outbox::inflight::Bounds {
        let max = match self.concurrency_per_provider {
            Some(n) if self.in_flight_max == Self::default().in_flight_max => n,
            _ => self.in_flight_max,
        };
        crate::outbox::inflight::Bounds {
            min: self.in_flight_min.min(max),
            initial: self.in_flight_initial.min(max),
            max,
        }
    }

    /// `in_flight_*` keys that do not make a window: `Err` names the key and the rule.
    fn check_in_flight(&self) -> Result<(), String> {
        const MAX: usize = 10_000;
        let range = |key: &str, v: usize| {
            if (1..=MAX).contains(&v) {
                Ok(())
            } else {
                Err(format!("key `delivery.{key}`: must be 1 to {MAX}, not {v}"))
            }
        };
        range("in_flight_min", self.in_flight_min)?;
        range("in_flight_initial", self.in_flight_initial)?;
        range("in_flight_max", self.in_flight_max)?;
        if let Some(n) = self.concurrency_per_provider {
            range("concurrency_per_provider", n)?;
        }
        if self.in_flight_min > self.in_flight_initial || self.in_flight_initial > self.in_flight_max {
            return Err(format!(
                "keys `delivery.in_flight_min` ({}), `delivery.in_flight_initial` ({}) and `delivery.in_flight_max` ({}): \
                 must be in that order (min <= initial <= max)",
                self.in_flight_min, self.in_flight_initial, self.in_flight_max
            ));
        }
        Ok(())
    }
}

/// Group commit of ingested events (docs/scaling.md#group-commit): requests hand their planned
/// rows to a writer through a bounded queue and are answered once the batch holding them is
/// committed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Requests waiting for the writer, at most; one more is answered `503` with `Retry-After`
    /// at once (backpressure) instead of waiting.
    pub queue_capacity: usize,
    /// Rows (events, decisions, deliveries, usage counts) one commit takes, at most; a single
    /// request larger than this is committed alone.
    pub max_batch_rows: usize,
    /// Writers on PostgreSQL, each committing its own batches on its own connection (SQLite has
    /// one writer whatever this says). Must be below `database.max_connections`.
    pub pg_writers: usize,
    /// On SQLite, how often (milliseconds, 10–60000) a thread of its own copies the WAL into the
    /// database (`ingest::copy_ahead`), after which the writer checkpoints, between two batches,
    /// what was appended meanwhile (docs/scaling.md#durability): shorter, each pause is shorter
    /// but hot pages are copied more often; longer, the WAL grows larger between copies.
    pub sqlite_checkpoint_ms: u64,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self { queue_capacity: 512, max_batch_rows: 2000, pg_writers: 2, sqlite_checkpoint_ms: 200 }
    }
}

/// How long data is kept (docs/operations.md). Tenants may override the periods through
/// `PUT /v1/tenants/{tenant}/retention`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Run the purge job in this process.
    pub enabled: bool,
    /// Days an event is kept once none of its deliveries is pending (delivered, dropped, dead, or
    /// never forwarded). An event with a pending delivery is never purged.
    pub events_days: u32,
    /// Days a consent record is kept; it is purged only once it has also expired, and only
    /// from the start of the hash chain (docs/consent-model.md).
    pub consent_records_days: u32,
    /// Rows purged per statement, so the job never holds a long write lock.
    pub batch_size: u64,
    /// Seconds between purge rounds.
    pub interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self { enabled: true, events_days: 30, consent_records_days: 1095, batch_size: 500, interval_secs: 3600 }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Loads defaults, then `file` (which must exist when given explicitly), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("consentgate.toml").exists() => {
                figment = figment.merge(Toml::file_exact("consentgate.toml"))
            }
            None => {}
        }
        Self::from_figment(figment.merge(Env::prefixed("CONSENTGATE__").split("__")))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment.extract().map_err(|e| {
            // figment's own message names the key ("for key `default.server.bind`"); keep each
            // error on its own line so several mistakes are all reported.
            ConfigError(e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))
        })?;
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let url = &self.database.url;
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError(format!(
                "key `database.url`: expected a sqlite: or postgres:// URL, found {:?}",
                redact_url(url)
            )));
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError("key `database.max_connections`: must be at least 1".into()));
        }
        for (key, days) in
            [("events_days", self.retention.events_days), ("consent_records_days", self.retention.consent_records_days)]
        {
            if !crate::privacy::retention::DAYS.contains(&days) {
                return Err(ConfigError(format!(
                    "key `retention.{key}`: must be {}-{} days",
                    crate::privacy::retention::DAYS.start(),
                    crate::privacy::retention::DAYS.end()
                )));
            }
        }
        if self.retention.batch_size == 0 || self.retention.interval_secs == 0 {
            return Err(ConfigError(
                "keys `retention.batch_size` and `retention.interval_secs`: must be at least 1".into(),
            ));
        }
        let d = &self.delivery;
        if d.lease_secs.saturating_mul(1000) <= d.request_timeout_ms {
            return Err(ConfigError(format!(
                "key `delivery.lease_secs` ({} s) must exceed `delivery.request_timeout_ms` ({} ms): a claim \
                 that ends before its request can be taken over and the event sent twice",
                d.lease_secs, d.request_timeout_ms
            )));
        }
        if d.retry_horizon_hours == 0 {
            return Err(ConfigError("key `delivery.retry_horizon_hours`: must be at least 1".into()));
        }
        // 0 would retry a failing provider in a tight loop; beyond a day, one answer would park
        // a delivery for most of its horizon.
        if d.backoff_base_ms == 0 || d.backoff_base_ms > d.backoff_max_ms || d.backoff_max_ms > MAX_BACKOFF_MS {
            return Err(ConfigError(format!(
                "keys `delivery.backoff_base_ms` ({}) and `delivery.backoff_max_ms` ({}): must be \
                 1 <= backoff_base_ms <= backoff_max_ms <= {MAX_BACKOFF_MS} (a day)",
                d.backoff_base_ms, d.backoff_max_ms
            )));
        }
        if d.circuit_probe_secs == 0 {
            return Err(ConfigError("key `delivery.circuit_probe_secs`: must be at least 1".into()));
        }
        if d.circuit_release_per_sec == 0 {
            return Err(ConfigError("key `delivery.circuit_release_per_sec`: must be at least 1".into()));
        }
        self.delivery.check_in_flight().map_err(ConfigError)?;
        if self.server.header_read_timeout_secs == 0 {
            return Err(ConfigError("key `server.header_read_timeout_secs`: must be at least 1".into()));
        }
        if self.server.idle_timeout_secs == 0 {
            return Err(ConfigError("key `server.idle_timeout_secs`: must be at least 1".into()));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError("key `server.max_connections`: must be at least 1".into()));
        }
        self.secrets.check().map_err(ConfigError)?;
        self.cache.check().map_err(ConfigError)?;
        let redis = &self.rate_limit.redis_url;
        if !redis.is_empty() && url::Url::parse(redis).map_or(true, |u| u.scheme() != "redis" || u.host().is_none()) {
            // The value is not echoed: it may hold a password.
            return Err(ConfigError(
                "key `rate_limit.redis_url`: must be a redis://host:port/db URL (TLS is not supported)".into(),
            ));
        }
        if self.rate_limit.redis_timeout_ms == 0 {
            return Err(ConfigError("key `rate_limit.redis_timeout_ms`: must be at least 1".into()));
        }
        let i = &self.ingest;
        for (key, n) in
            [("queue_capacity", i.queue_capacity), ("max_batch_rows", i.max_batch_rows), ("pg_writers", i.pg_writers)]
        {
            if n == 0 {
                return Err(ConfigError(format!("key `ingest.{key}`: must be at least 1")));
            }
        }
        if !(10..=60_000).contains(&i.sqlite_checkpoint_ms) {
            return Err(ConfigError(format!(
                "key `ingest.sqlite_checkpoint_ms` ({}): must be between 10 and 60000",
                i.sqlite_checkpoint_ms
            )));
        }
        if !url.starts_with("sqlite:") && i.pg_writers >= self.database.max_connections as usize {
            return Err(ConfigError(format!(
                "key `ingest.pg_writers` ({}) must be below `database.max_connections` ({}): requests need \
                 connections to read while the writers hold theirs",
                i.pg_writers, self.database.max_connections
            )));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError("key `server.max_body_bytes`: must be at least 1024".into()));
        }
        Ok(())
    }

    /// The base URL visitors and admins reach the gateway at.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        if self.server.public_url.is_empty() {
            format!("http://{bound}")
        } else {
            self.server.public_url.trim_end_matches('/').to_string()
        }
    }
}

/// Hides a password in a database URL, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(toml: &str) -> Result<Settings, ConfigError> {
        Settings::from_figment(Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(toml)))
    }

    #[test]
    fn defaults_are_valid() {
        let s = from_toml("").unwrap();
        assert!(s.database.url.starts_with("sqlite:"));
        assert_eq!(s.server.bind.port(), 8080);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = from_toml("[server]\nbind = \"not an address\"").unwrap_err().to_string();
        assert!(err.contains("server.bind"), "{err}");
    }

    #[test]
    fn a_redis_url_is_checked() {
        assert!(from_toml("[rate_limit]\nredis_url = \"redis://127.0.0.1:6379/0\"").is_ok());
        for bad in ["rediss://h:1", "http://h", "127.0.0.1:6379", "redis://:secret@"] {
            let err = from_toml(&format!("[rate_limit]\nredis_url = \"{bad}\"")).unwrap_err().to_string();
            assert!(err.contains("rate_limit.redis_url") && !err.contains("secret"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = from_toml("[database]\nulr = \"x\"").unwrap_err().to_string();
        assert!(err.contains("ulr"), "{err}");
    }

    #[test]
    fn an_unsupported_database_is_refused() {
        let err = from_toml("[database]\nurl = \"mysql://root:pw@x/db\"").unwrap_err().to_string();
        assert!(err.contains("database.url") && !err.contains("pw@"), "{err}");
    }

    #[test]
    fn a_lease_not_longer_than_the_request_timeout_is_refused_naming_both_keys() {
        for (lease, timeout) in [("5", "7000"), ("10", "10000")] {
            let err = from_toml(&format!("[delivery]\nlease_secs = {lease}\nrequest_timeout_ms = {timeout}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("delivery.lease_secs") && err.contains("delivery.request_timeout_ms"), "{err}");
        }
        assert!(from_toml("[delivery]\nlease_secs = 11\nrequest_timeout_ms = 10000").is_ok());
    }

    #[test]
    fn a_backoff_that_would_spin_or_overflow_is_refused_naming_both_keys() {
        for (base, max) in [(0, 900_000), (5_000, 1_000), (1_000, 86_400_001), (1_000, i64::MAX as u64)] {
            let err = from_toml(&format!("[delivery]\nbackoff_base_ms = {base}\nbackoff_max_ms = {max}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("delivery.backoff_base_ms") && err.contains("delivery.backoff_max_ms"), "{err}");
        }
        assert!(from_toml("[delivery]\nbackoff_base_ms = 1\nbackoff_max_ms = 86400000").is_ok());
    }

    #[test]
    fn ingest_settings_of_zero_are_refused_naming_the_key() {
        for key in ["queue_capacity", "max_batch_rows", "pg_writers"] {
            let err = from_toml(&format!("[ingest]\n{key} = 0")).unwrap_err().to_string();
            assert!(err.contains(&format!("ingest.{key}")) && err.contains("at least 1"), "{key}: {err}");
        }
        let pg = "[database]\nurl = \"postgres://u@h/db\"\nmax_connections = 4\n[ingest]\npg_writers =";
        let err = from_toml(&format!("{pg} 4")).unwrap_err().to_string();
        assert!(err.contains("ingest.pg_writers") && err.contains("database.max_connections"), "{err}");
        assert!(from_toml(&format!("{pg} 3")).is_ok());
        // SQLite has one writer whatever pg_writers says.
        assert!(from_toml("[database]\nmax_connections = 1\n[ingest]\npg_writers = 4").is_ok());
        for ms in [0, 9, 60_001] {
            let err = from_toml(&format!("[ingest]\nsqlite_checkpoint_ms = {ms}")).unwrap_err().to_string();
            assert!(err.contains("ingest.sqlite_checkpoint_ms") && err.contains("between 10 and 60000"), "{ms}: {err}");
        }
        assert_eq!(from_toml("[ingest]\nsqlite_checkpoint_ms = 50").unwrap().ingest.sqlite_checkpoint_ms, 50);
        let s = from_toml("[ingest]\nqueue_capacity = 8\nmax_batch_rows = 100").unwrap();
        assert_eq!((s.ingest.queue_capacity, s.ingest.max_batch_rows), (8, 100));
    }

    #[test]
    fn max_attempts_still_parses_but_is_deprecated() {
        let s = from_toml("[delivery]\nmax_attempts = 12").unwrap();
        assert_eq!(s.delivery.deprecated_keys(), ["delivery.max_attempts"]);
        assert!(from_toml("").unwrap().delivery.deprecated_keys().is_empty());
        assert_eq!(from_toml("").unwrap().delivery.retry_horizon(), chrono::Duration::hours(72));
    }

    #[test]
    fn in_flight_bounds_are_checked_naming_the_key() {
        let cases = [
            ("in_flight_min = 0", "delivery.in_flight_min"),
            ("in_flight_max = 0", "delivery.in_flight_max"),
            ("in_flight_max = 20000", "delivery.in_flight_max"),
            ("in_flight_initial = 0", "delivery.in_flight_initial"),
            ("in_flight_initial = 300", "delivery.in_flight_initial"),
            ("in_flight_min = 8\nin_flight_initial = 4", "delivery.in_flight_min"),
            ("concurrency_per_provider = 0", "delivery.concurrency_per_provider"),
        ];
        for (toml, key) in cases {
            let err = from_toml(&format!("[delivery]\n{toml}")).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let s = from_toml("[delivery]\nin_flight_min = 2\nin_flight_initial = 8\nin_flight_max = 64").unwrap();
        assert_eq!(s.delivery.in_flight_bounds(), crate::outbox::inflight::Bounds { min: 2, initial: 8, max: 64 });
    }

    #[test]
    fn concurrency_per_provider_is_deprecated_and_read_as_the_in_flight_max() {
        let s = from_toml("[delivery]\nconcurrency_per_provider = 2").unwrap();
        assert_eq!(s.delivery.deprecated_keys(), ["delivery.concurrency_per_provider"]);
        assert_eq!(s.delivery.in_flight_bounds(), crate::outbox::inflight::Bounds { min: 1, initial: 2, max: 2 });
        let s = from_toml("[delivery]\nconcurrency_per_provider = 2\nin_flight_max = 32").unwrap();
        assert_eq!(s.delivery.in_flight_bounds().max, 32, "the new key wins");
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let example = include_str!("../config.example.toml");
        let s = from_toml(example).unwrap();
        let d = Settings::default();
        assert_eq!(serde_json::to_value(&s).unwrap(), serde_json::to_value(&d).unwrap());
    }
}
