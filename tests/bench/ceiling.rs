//! The ceiling for `scripts/bench.sh`: a bare axum server that takes the gateway's event route,
//! parses the JSON body and discards it — what this machine's HTTP stack and JSON parser allow
//! before any of the gateway's work (authentication, validation, consent, storage).
//!
//! Listens on 127.0.0.1 (`BENCH_PORT`, else a free port) and prints `{"port": N}` on stdout.

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, StatusCode, header},
    routing::post,
};

#[path = "listen.rs"]
mod listen;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new().route("/v1/tenants/{tenant}/events", post(event));
    axum::serve(listen::listen().await?, app).await
}

/// Refuses what the gateway would refuse before its own work (no key, not JSON); answers `202`
/// with an id, as the gateway does.
async fn event(headers: HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    if !headers.contains_key(header::AUTHORIZATION) {
        return (StatusCode::UNAUTHORIZED, r#"{"error":{"code":"unauthorized"}}"#);
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) if v.is_object() => (StatusCode::ACCEPTED, r#"{"id":"00000000-0000-0000-0000-000000000000"}"#),
        _ => (StatusCode::BAD_REQUEST, r#"{"error":{"code":"bad_request"}}"#),
    }
}
