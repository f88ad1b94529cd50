//! Background workers started with the app. Each watches the shutdown token and returns when it
//! fires, after finishing the unit of work it is in.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;

pub fn spawn(state: &AppState, shutdown: &CancellationToken) -> Vec<JoinHandle<()>> {
    let mut workers = Vec::new();
    if state.settings.delivery.enabled {
        // One delivery worker per process: on SQLite that is the rule (one writer), on PostgreSQL
        // each instance runs one and they share the outbox through leases. Concurrency comes
        // from the per-provider limits inside the worker.
        workers.push(tokio::spawn(crate::outbox::worker::run(
            state.db.clone(),
            state.settings.delivery.clone(),
            state.outbox.clone(),
            shutdown.clone(),
        )));
    }
    workers.push(tokio::spawn(crate::ingest::daily_id::sweep(state.db.clone(), shutdown.clone())));
    // Changes made by other instances reach this one's config cache within `cache.refresh_ms`.
    workers.push(tokio::spawn(state.config_cache.clone().run(state.db.clone(), shutdown.clone())));
    if state.settings.retention.enabled {
        // Small batches, each its own short transaction: safe to run on every instance.
        workers.push(tokio::spawn(crate::privacy::retention::run(
            state.db.clone(),
            state.settings.retention.clone(),
            shutdown.clone(),
        )));
    }
    workers
}
