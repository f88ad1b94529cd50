//! Liveness, readiness and Prometheus metrics.

use axum::{Json, extract::State, http::header, response::IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ApiResult};
use crate::app::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(metrics))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database answers and every migration has been applied.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = super::error::ErrorBody))
)]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    match crate::db::is_migrated(&state.db).await {
        Ok(true) => Ok(Json(Health { status: "ready" })),
        Ok(false) => Err(ApiError::Unavailable("migrations pending".into())),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::Unavailable("database unreachable".into()))
        }
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = crate::telemetry::render_metrics();
    // The outbox per config, from the database (shared by every instance).
    match crate::outbox::stats::collect(&state.db, chrono::Utc::now()).await {
        Ok(stats) => text.push_str(&crate::outbox::stats::render(&stats)),
        Err(e) => tracing::warn!(error = %e, "outbox figures for /metrics could not be read"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
