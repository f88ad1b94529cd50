//! consentgate: a tenant-scoped consent management and analytics forwarding gateway.
//!
//! One event's way: `http` (extract key, parse body) → `ingest` (validate, enrich, idempotency)
//! → `consent::decide` per provider config → one transaction (event, decisions, deliveries)
//! → `outbox` workers → `providers::<p>` maps and classifies → usage and metrics.

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
pub mod origins;
pub mod outbox;
pub mod providers;
pub mod rate_limit;
pub mod secrets;
pub mod telemetry;
pub mod tenants;
pub mod tokens;
pub mod workers;
