//! consentgate: a tenant-scoped consent management and analytics forwarding gateway.
//!
//! One event's way: `http` (extract key, parse body) → `ingest` (validate, enrich, idempotency)
//! → `consent::decide` per provider config → one transaction (event, decisions, deliveries)
//! → `outbox` workers → `providers::<p>` maps and classifies → usage and metrics.

pub mod app;
pub mod audit;
pub mod banner;
pub mod config;
pub mod consent;
pub mod crypto;
pub mod db;
pub mod demo;
pub mod error;
pub mod geo;
pub mod http;
pub mod ingest;
pub mod ip;
pub mod json;
pub mod outbox;
pub mod providers;
pub mod secrets;
pub mod telemetry;
pub mod tenants;
pub mod tokens;
pub mod workers;
