//! consentgate: a tenant-scoped consent management and analytics forwarding gateway.
//!
//! Webmasters configure a cookie-consent banner and analytics providers per tenant; visitors'
//! decisions become append-only, hash-chained consent records; sites post each analytics event
//! once, and the gateway forwards it to every provider the visitor's consent allows, through a
//! durable outbox. The user-facing documentation is `README.md` and `docs/` in the repository.
//!
//! # Module tour
//!
//! Each module owns one thing; the HTTP layer only parses, authenticates and maps errors: every
//! body is parsed there into a typed input (`EventInput`, `NewConsentConfig`,
//! `ConsentConfigPatch`, `NewProviderConfig`, …) whose errors name the dotted field path, and
//! domain functions take domain types. The words used here are defined in `docs/glossary.md`.
//!
//! | module | owns |
//! |---|---|
//! | [`app`] | building the application: database, router, workers, listener, graceful shutdown |
//! | [`config`] | typed settings: defaults < TOML file < `CONSENTGATE__…` environment |
//! | [`http`] | the HTTP surface: one module per resource, auth extractors, the one HTTP error mapping, the OpenAPI document |
//! | [`tenants`] | tenants, the unit of isolation |
//! | [`cache`] | what an event needs of its tenant that rarely changes (keys, consent policy, provider configs, daily salt), in memory per instance, invalidated on change across instances (docs/caching.md) |
//! | [`tokens`] | admin and auditor API tokens, stored as hashes |
//! | [`audit`] | the audit log of every change to tokens, keys and configurations |
//! | [`consent`] | the pure decision engine, cookie consent configs and revisions, consent records and their hash chain, consent-required regions |
//! | [`banner`] | rendering and serving the banner script per tenant (browser source in `banner/`) |
//! | [`ingest`] | one posted event → a stored event, a forwarding decision per provider config and the deliveries, in one transaction; ingest keys; PostHog's cookieless daily ids |
//! | [`outbox`] | the deliveries: enqueue, claim under a lease, batch, send, split a refused batch, retry with backoff, the delivery log and replays |
//! | [`providers`] | one module per analytics provider that maps an event to a request and classifies the answer; provider configs |
//! | [`flags`] | feature flags for a visitor through PostHog, identified only with analytics consent; a short cache |
//! | [`privacy`] | privacy operations: erasure of a whole visitor, their data export (DSAR), retention and its purge job |
//! | [`workers`] | the background tasks started with the app (the delivery worker, the sweep of past days' cookieless salts, the retention purge) |
//! | [`secrets`] | secret *references* (`env:`, `file:`, `keyvault://`) held by configs instead of secrets |
//! | [`geo`] | the visitor's country and subdivision from a header or a MaxMind-format file |
//! | [`ip`] | client IPs, truncated before they are stored |
//! | [`origins`] | allowed browser origins of consent configs and public ingest keys |
//! | [`rate_limit`] | rate limits on public writes and ingestion: in memory per instance, or shared through Redis |
//! | [`json`] | deserialising JSON into domain types with the failing field named; the one JSON merge patch (RFC 7396) |
//! | [`string_enum`] | closed sets of stored values (statuses, categories, reasons) read per row, failing closed |
//! | [`error`] | the domain layer's error type (mapped to HTTP once, in [`http::error`]) |
//! | [`db`] | connecting (SQLite or PostgreSQL) and migrating |
//! | [`crypto`] | random tokens and SHA-256 digests |
//! | [`telemetry`] | logging and Prometheus metrics |
//! | [`demo`] | the `demo` tenant and demo page of `serve --demo` |
//!
//! The tables are in the `entity` crate, their migrations in the `migration` crate. Status and
//! category columns are text read through [`string_enum`]: a row holding a value outside its enum
//! is shown as `invalid` and denies (`denied:config_invalid`) or grants nothing — for that row
//! only, never failing the query for the tenant's other rows.
//!
//! # One event's way
//!
//! 1. [`http`] (`http/events.rs`): the `IngestKey` extractor (`http/ingest_key.rs`)
//!    finds the tenant's cached configuration ([`cache`]), authenticates the key against it
//!    ([`ingest::keys`]) and checks its origin and rate limit; the body is
//!    parsed into an `EventInput` ([`ingest::event`]), every field a checked type
//!    ([`ingest::fields`]), and the request's facts about the visitor into `VisitorFacts`.
//! 2. [`ingest`]: the event is enriched ([`ingest::enrich`]: UTM, user agent, truncated IP,
//!    country via [`geo`]).
//! 3. [`consent`]: the visitor's latest record and the active config's policy give
//!    [`consent::effective`]; [`consent::decide`] then decides per provider config, and the
//!    provider's own rules ([`providers::Provider::accepts`]) may still refuse.
//! 4. The planned rows go to the ingest writer ([`ingest::writer`], group commit): one
//!    transaction stores the events of every request waiting — each event, a forwarding decision
//!    per config and a delivery per allowed config ([`ingest::store`], which also answers a
//!    repeated idempotency key) — and each site gets its `202` with the decisions once that
//!    transaction is committed.
//! 5. [`outbox`]: a worker ([`workers`], [`outbox::worker`]) claims due deliveries
//!    ([`outbox::claim`]), decides again if the visitor withdrew meanwhile, has the provider
//!    module map each delivery to an item ([`providers::Provider::item`]) and build one request
//!    per batch of items ([`providers::Provider::request`], [`outbox::batch`]).
//! 6. The answer is classified, for the whole request or per item
//!    ([`providers::Provider::classify`]); a refused batch is split. Each delivery is delivered, dropped, retried
//!    ([`outbox::backoff`], until the retry horizon: [`outbox::horizon`]; a failing config's
//!    circuit holds its deliveries back: [`outbox::circuit`]) or dead; the config's usage and the metrics ([`telemetry`]) are
//!    updated, and the delivery log ([`outbox::log`]) shows it.

/// Serde glue for a string type whose only constructor is `parse(&str) -> Result<Self, String>`
/// (parse, don't validate): `#[serde(try_from = "String", into = "String")]` then needs these.
/// `newtype` also derives `Display` and `as_str` from the wrapped `String`.
macro_rules! parsed_string {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $t::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    };
    ($t:ident, newtype) => {
        parsed_string!($t);

        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

pub mod string_enum;

pub mod app;
pub mod audit;
pub mod banner;
pub mod cache;
pub mod config;
pub mod consent;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod error;
pub mod flags;
pub mod geo;
pub mod http;
pub mod ingest;
pub mod ip;
pub mod json;
pub mod origins;
pub mod outbox;
pub mod privacy;
pub mod providers;
pub mod rate_limit;
pub mod secrets;
pub mod telemetry;
pub mod tenants;
pub mod tokens;
pub mod workers;
