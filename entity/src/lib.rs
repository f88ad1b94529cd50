//! sea-orm entities: one module per table. The application crate wraps them in its own
//! functions; handlers never build queries from these directly.

pub mod analytics_event;
pub mod api_token;
pub mod audit_log;
pub mod config_generation;
pub mod consent_chain_checkpoint;
pub mod consent_config_revision;
pub mod consent_record;
pub mod cookie_consent_config;
pub mod daily_salt;
pub mod delivery;
pub mod ingest_key;
pub mod ingest_usage;
pub mod provider_config;
pub mod retention_policy;
pub mod tenant;
