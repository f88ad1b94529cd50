//! Fake Plausible and Umami servers, run as a separate process by the integration tests so that
//! the gateway talks real HTTP to something outside itself.
//!
//! Listens on 127.0.0.1:0 and prints `{"port": N}` as its first stdout line. Routes:
//! - `POST /plausible/api/event` — Plausible's Events API (see `plausible.rs`)
//! - `POST /umami/api/send` — Umami's Collect API (see `umami.rs`)
//! - `GET /_fake/received` — every request received, with headers, body, answer and outcome
//! - `POST /_fake/behaviour` — `{"plausible": {...}, "umami": {...}}`: `fail_next` + `status`
//!   (answer the next n requests with that status), `status` alone (answer every request so until
//!   changed; `null` clears), `retry_after`, `delay_ms`, `domains` (Plausible sites),
//!   `websites` (Umami website ids), `datacenter_ips` (Plausible), `formula_guard` and
//!   `ignore_ips` (Umami)
//! - `POST /_fake/reset` — forget everything received and all behaviour
//! - any other path — `200` with an HTML page, as a catch-all web server at a wrong
//!   `instance_url` answers (see `catch_all.rs`)
//!
//! Each fake validates requests as the real service does (shared/docs/providers-sources.md):
//! what the real one refuses, the fake refuses with the same status and body shape; what the
//! real one silently drops, the fake answers with the same success-looking answer and records as
//! `dropped`.

mod catch_all;
mod plausible;
mod state;
mod umami;

use std::{io::Write, net::SocketAddr};

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use serde_json::{Value, json};

use crate::state::Fakes;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let fakes = Fakes::default();
    let app = Router::new()
        .route("/plausible/api/event", post(plausible::event))
        .route("/umami/api/send", post(umami::send))
        .route("/_fake/received", get(received))
        .route("/_fake/behaviour", post(behaviour))
        .route("/_fake/reset", post(reset))
        .fallback(catch_all::page)
        .with_state(fakes);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", json!({"port": port}))?;
        out.flush()?;
    }
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

async fn received(State(fakes): State<Fakes>) -> Json<Value> {
    Json(json!(fakes.received()))
}

async fn behaviour(State(fakes): State<Fakes>, Json(body): Json<Value>) -> Json<Value> {
    Json(fakes.set_behaviour(&body))
}

async fn reset(State(fakes): State<Fakes>) -> Json<Value> {
    fakes.reset();
    Json(json!({"reset": true}))
}
