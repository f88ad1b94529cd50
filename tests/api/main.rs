//! Integration tests: the real app over HTTP, on SQLite by default and on PostgreSQL when
//! `TEST_DATABASE_URL` is set. One binary, one module per area.

mod helpers;

mod admin;
mod banner;
mod batches;
mod caching;
mod cli;
mod consent_configs;
mod consent_public;
mod consent_records;
mod corpus;
mod fail_closed;
mod fakes;
mod forwarding;
mod foundation;
mod ga4;
mod group_commit;
mod http_edge;
mod ingest;
mod outbox;
mod outbox_inflight;
mod outbox_outage;
mod posthog;
mod privacy;
mod provider_choices;
mod provider_configs;
mod provider_contracts;
mod rate_limits;
mod registry;
mod secrets;
mod site;
mod statistics;
mod upgrade;
