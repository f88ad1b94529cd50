//! Crash and fault tests (issue 14): the real `consentgate` binary run as separate processes, the
//! fake providers as another, load from concurrent clients on 127.0.0.1 — then `kill -9`, or
//! PostgreSQL's connections cut — and the promise checked from outside: every event answered 2xx
//! is stored and delivered, none is lost, a retried key never becomes a second event.
//!
//! Each test is bounded (seconds of load, a bounded wait for the outbox to drain) and every
//! process it starts is killed when it ends, an assertion failing included (`Gateway`'s and
//! `FakeProviders`' `Drop`). The SQLite test runs under `cargo test`; the PostgreSQL ones need
//! `TEST_DATABASE_URL` (see `on_postgres`).

#[allow(dead_code)] // the crash tests use a few of the API tests' fixtures
#[path = "../api/fakes.rs"]
mod fakes;
mod gateway;
#[path = "../api/helpers.rs"]
mod helpers;
mod load;
mod on_postgres;
mod sqlite;
