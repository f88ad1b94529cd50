//! Builds the application: connects and migrates the database, binds the listener, serves the
//! router and runs the background workers until shutdown. Returns the bound address, so tests
//! can start the real server on port 0 and talk HTTP to it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use sea_orm::DatabaseConnection;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{config::Settings, db, geo::Geo, http};

/// What every request and worker shares, behind one `Arc`: axum clones the state for each
/// extractor of each request, and cloning this is one counter, not one per field (the field-wise
/// clone and drop were 1–2 % of the process's time under the benchmark's load).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub db: DatabaseConnection,
    pub settings: Arc<Settings>,
    /// The base URL the gateway is reached at (for links and the demo page).
    pub public_url: Arc<str>,
    pub geo: Arc<Geo>,
    /// Group commit: requests hand their planned events to the ingest writers.
    pub ingest: crate::ingest::writer::Writer,
    /// Wakes this process's delivery workers when new deliveries are due.
    pub outbox: crate::outbox::Outbox,
    /// Resolves credential references (cached); shared with the delivery workers.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Ingest rate limits: in memory per instance, or shared through Redis (`[rate_limit]`).
    pub ingest_limits: Arc<crate::rate_limit::IngestLimits>,
    /// Rendered banner scripts by published revision.
    pub banners: Arc<crate::banner::Cache>,
    /// PostHog feature flags: the short answer cache and the HTTP client.
    pub flags: Arc<crate::flags::Flags>,
    /// Admin-pages sessions and the sign-in brake (in memory, per instance).
    pub admin_sessions: Arc<crate::http::admin::session::Sessions>,
    /// Each tenant's keys, consent policy, provider configs and daily salt, so that an event
    /// reads none of them (docs/caching.md). Call `forget` after committing a change to them.
    pub config_cache: Arc<crate::cache::ConfigCache>,
}

pub struct App {
    pub addr: SocketAddr,
    pub state: AppState,
    shutdown: CancellationToken,
    server: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
    /// The ingest writers: idle once the server has drained (every request waits for its commit).
    writers: Vec<JoinHandle<()>>,
}

impl App {
    /// Connects, migrates, binds and starts serving in the background.
    pub async fn start(settings: Settings) -> anyhow::Result<App> {
        let db = db::connect(&settings.database).await?;
        db::migrate(&db).await?;
        App::start_with(settings, db).await
    }

    /// Starts on an already connected and migrated database.
    pub async fn start_with(settings: Settings, db: DatabaseConnection) -> anyhow::Result<App> {
        crate::telemetry::init_metrics();
        let geo = Arc::new(Geo::open(&settings.geo)?);
        for key in settings.delivery.deprecated_keys() {
            match key {
                "delivery.concurrency_per_provider" => tracing::warn!(
                    key,
                    "deprecated configuration key: read as `delivery.in_flight_max` (the in-flight \
                    window per provider config adapts between `in_flight_min` and `in_flight_max`)"
                ),
                _ => tracing::warn!(
                    key,
                    "deprecated configuration key ignored: deliveries are retried until \
                    `delivery.retry_horizon_hours`, not for a number of attempts"
                ),
            }
        }
        let listener = TcpListener::bind(settings.server.bind)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.server.bind))?;
        let addr = listener.local_addr()?;
        let secrets = Arc::new(crate::secrets::Secrets::new(&settings.secrets).map_err(anyhow::Error::msg)?);
        let (ingest, writers) =
            crate::ingest::writer::Writer::start(db.clone(), &settings.database.url, &settings.ingest)
                .map_err(|e| anyhow::anyhow!("cannot open the ingest writer's connection: {e}"))?;
        let state = AppState(Arc::new(Shared {
            ingest,
            db,
            public_url: settings.public_url(addr).into(),
            geo,
            outbox: crate::outbox::Outbox::new(secrets.clone()),
            secrets,
            ingest_limits: Arc::new(crate::rate_limit::IngestLimits::new(&settings.rate_limit)?),
            banners: Default::default(),
            flags: Arc::new(crate::flags::Flags::new(&settings.delivery)?),
            admin_sessions: Default::default(),
            config_cache: Arc::new(crate::cache::ConfigCache::new(settings.cache.clone())),
            settings: Arc::new(settings),
        }));
        let shutdown = CancellationToken::new();
        let workers = crate::workers::spawn(&state, &shutdown);
        let router = http::router(state.clone());
        let limits = http::serve::Limits::from_settings(&state.settings.server);
        let server = tokio::spawn(http::serve::serve(listener, router, limits, shutdown.clone()));
        tracing::info!(%addr, "consentgate listening");
        Ok(App { addr, state, shutdown, server, workers, writers })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A handle that stops the app: no new connections, in-flight requests finish.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token fires, then waits up to the grace period for in-flight
    /// requests and workers.
    pub async fn wait(self) -> anyhow::Result<()> {
        let grace = Duration::from_secs(self.state.settings.server.shutdown_grace_secs);
        let mut server = self.server;
        tokio::select! {
            result = &mut server => return Ok(result?),
            _ = self.shutdown.cancelled() => {}
        }
        let drain = async {
            let _ = server.await;
            for w in self.workers {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!(?grace, "shutdown grace period over; stopping with work in flight");
        }
        for w in self.writers {
            w.abort();
        }
        self.state.db.clone().close().await.ok();
        Ok(())
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = terminate => {} }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
