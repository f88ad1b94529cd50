//! Fake Plausible, Umami and PostHog servers, run as a separate process by the integration tests so that
//! the gateway talks real HTTP to something outside itself.
//!
//! Listens on 127.0.0.1:0 and prints `{"port": N, "keyvault_port": M}` as its first stdout line
//! (M: the fake Key Vault and Entra token endpoint over HTTPS, see `keyvault.rs`). Routes:
//! - `POST /plausible/api/event` — Plausible's Events API (see `plausible.rs`)
//! - `POST /umami/api/send`, `POST /umami/api/batch` — Umami's Collect API (see `umami.rs`)
//! - `POST /ga4/mp/collect`, `POST /ga4/debug/mp/collect` — GA4's Measurement Protocol and its
//!   validation server (see `ga4.rs`)
//! - `GET /_fake/providers` — the providers faked here (see [`providers`])
//! - `GET /_fake/received` — every request received, with headers, body, answer and outcome (each
//!   event of a batch on its own)
//! - `GET /_fake/batches` — every batch request received: provider, path, size, status
//! - `GET /_fake/traffic`, `POST /_fake/traffic` — requests in flight per provider, the most seen
//!   at once, a timeline of arrivals and answers, and a latency added to every provider request
//!   (`--latency-ms N` / `FAKE_LATENCY_MS` at start; see `traffic.rs`)
//! - `POST /_fake/behaviour` — `{"plausible": {...}, "umami": {...}}`: `fail_next` + `status`
//!   (answer the next n requests with that status), `status` alone (answer every request so until
//!   changed; `null` clears), `retry_after`, `delay_ms`, `domains` (Plausible sites),
//!   `websites` (Umami website ids), `datacenter_ips` (Plausible), `formula_guard`,
//!   `ignore_ips` and `refuse_batches_containing` (Umami)
//! - `POST /plausible/api/v2/query` — Plausible's Stats API (a bearer key from `api_keys`)
//! - `POST /umami/api/auth/login`, `GET /umami/api/me` — Umami's login (`users`) and `/me`
//!   (`api_keys` as `x-umami-api-key`)
//! - `POST /posthog/batch/`, `/posthog/i/v0/e/`, `/posthog/capture/`, `/posthog/flags?v=2` —
//!   PostHog's capture and flags services; `POST /_fake/posthog` steers them and
//!   `GET /_fake/posthog/events` lists what PostHog stored (see `posthog.rs`)
//! - `POST /_fake/reset` — forget everything received and all behaviour (not PostHog's)
//! - `POST /_fake/ga4` — validation messages GA4's validation server adds (see `ga4.rs`)
//! - `POST /_fake/keyvault`, `GET /_fake/keyvault/requests` — steer and read the fake Key Vault
//! - any other path — `200` with an HTML page, as a catch-all web server at a wrong
//!   `instance_url` answers (see `catch_all.rs`)
//!
//! Each fake validates requests as the real service does (shared/docs/providers-sources.md):
//! what the real one refuses, the fake refuses with the same status and body shape; what the
//! real one silently drops, the fake answers with the same success-looking answer and records as
//! `dropped`.

mod catch_all;
mod ga4;
mod keyvault;
mod plausible;
mod posthog;
mod state;
mod traffic;
mod umami;

use std::{io::Write, net::SocketAddr, sync::Arc};

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
    let vault = keyvault::Vault::default();
    let control = Router::new()
        .route("/_fake/keyvault", post(configure_vault))
        .route("/_fake/keyvault/requests", get(vault_requests))
        .with_state(vault.clone());
    let posthog = posthog::PostHog::new(fakes.clone());
    let traffic = traffic::Traffic::new(traffic::latency_from_env());
    let mut app = Router::new();
    let mut names = Vec::new();
    for (name, routes) in providers(&posthog) {
        let t = traffic.clone();
        let routes = routes.layer(axum::middleware::from_fn(move |req, next| {
            let t = t.clone();
            async move { t.track(name, req, next).await }
        }));
        app = app.nest(&format!("/{name}"), routes);
        names.push(name);
    }
    let traffic_routes =
        Router::new().route("/_fake/traffic", get(traffic::get).post(traffic::post)).with_state(traffic);
    let app = app
        .route("/_fake/providers", get(move || async move { Json(json!(names)) }))
        .route("/_fake/received", get(received))
        .route("/_fake/batches", get(batches))
        .route("/_fake/behaviour", post(behaviour))
        .route("/_fake/reset", post(reset))
        .route("/_fake/ga4", post(ga4::steer))
        .fallback(catch_all::page)
        .with_state(fakes.clone())
        .merge(control)
        .merge(traffic_routes)
        .merge(posthog.control());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let tls = TlsListener::bind().await?;
    let keyvault_port = tls.tcp.local_addr()?.port();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", json!({"port": port, "keyvault_port": keyvault_port}))?;
        out.flush()?;
    }
    let vault_app = Router::new().fallback(keyvault::serve).with_state(vault);
    tokio::spawn(async move { axum::serve(tls, vault_app).await });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
}

/// Every provider the fakes stand in for, by the name the gateway's `providers::all()` gives it
/// (its path prefix here), with its routes. A provider's fake is one module and one line here;
/// `GET /_fake/providers` lists them, and an API test fails for a provider of the gateway that
/// has no fake.
fn providers(posthog: &posthog::PostHog) -> Vec<(&'static str, Router<Fakes>)> {
    vec![
        ("plausible", plausible::routes()),
        ("umami", umami::routes()),
        ("posthog", posthog.routes()),
        ("ga4", ga4::routes()),
    ]
}

async fn configure_vault(State(vault): State<keyvault::Vault>, Json(body): Json<Value>) -> Json<Value> {
    Json(vault.configure(&body))
}

async fn vault_requests(State(vault): State<keyvault::Vault>) -> Json<Value> {
    Json(vault.requests())
}

/// HTTPS on 127.0.0.1 with the test certificate (tests/fixtures/keyvault-test-*.pem).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsListener {
    async fn bind() -> std::io::Result<Self> {
        use tokio_rustls::rustls::{
            ServerConfig,
            crypto::aws_lc_rs,
            pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        };
        let invalid = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        let certs = CertificateDer::pem_slice_iter(include_bytes!("../fixtures/keyvault-test-cert.pem"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_slice(include_bytes!("../fixtures/keyvault-test-key.pem"))
            .map_err(|e| invalid(&e))?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(&e))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(&e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Ok(TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)) })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else { continue };
            // A failed handshake (a client that does not trust the test CA) ends that connection only.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn received(State(fakes): State<Fakes>) -> Json<Value> {
    Json(json!(fakes.received()))
}

async fn batches(State(fakes): State<Fakes>) -> Json<Value> {
    Json(json!(fakes.batches()))
}

async fn behaviour(State(fakes): State<Fakes>, Json(body): Json<Value>) -> Json<Value> {
    Json(fakes.set_behaviour(&body))
}

async fn reset(State(fakes): State<Fakes>) -> Json<Value> {
    fakes.reset();
    Json(json!({"reset": true}))
}
