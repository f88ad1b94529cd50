//! `/v1/tenants/{tenant}/analytics/cookie-consent/configs`: the webmaster's cookie consent
//! configs — CRUD, merge-patch, status changes, publish, and the published revisions.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    error::{ApiResult, ErrorBody},
    extract::{Admin, ApiJson, ApiJsonOrEmpty, ApiPath, Reader},
};
use crate::{
    app::AppState,
    consent::config::{
        ConfigSpec, ConsentConfigPatch, ConsentConfigView, NewConsentConfig, RevisionView,
        store::{self, Deleted},
    },
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_config, list_configs))
        .routes(routes!(get_config, patch_config, delete_config))
        .routes(routes!(publish_config))
        .routes(routes!(list_revisions))
        .routes(routes!(get_revision))
}

#[derive(Deserialize)]
pub struct ConfigPath {
    #[allow(dead_code)]
    tenant: String,
    id: Uuid,
}

#[derive(Deserialize)]
pub struct RevisionPath {
    #[allow(dead_code)]
    tenant: String,
    id: Uuid,
    revision: i32,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Ask every visitor who decided under an earlier revision again (material change of
    /// purposes or providers). Default false.
    #[serde(default)]
    requires_reconsent: bool,
}

/// Create a config (as a draft). Omitted fields take their defaults; the response carries
/// `warnings` where a setting contradicts regulator guidance.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/analytics/cookie-consent/configs", tag = "cookie consent",
    params(("tenant" = String, Path)), request_body = ConfigSpec,
    responses((status = 201, body = ConsentConfigView), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn create_config(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<NewConsentConfig>,
) -> ApiResult<(StatusCode, Json<ConsentConfigView>)> {
    let view = store::create(&state.db, caller.tenant.id, &caller.actor(), body.spec()?).await?;
    state.config_cache.forget(caller.tenant.id);
    Ok((StatusCode::CREATED, Json(view)))
}

/// List the tenant's configs, oldest first.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/analytics/cookie-consent/configs", tag = "cookie consent",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<ConsentConfigView>)),
    security(("bearer" = []))
)]
async fn list_configs(
    State(state): State<AppState>,
    Reader(caller): Reader,
) -> ApiResult<Json<Vec<ConsentConfigView>>> {
    Ok(Json(store::list(&state.db, caller.tenant.id).await?))
}

/// One config.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/analytics/cookie-consent/configs/{id}", tag = "cookie consent",
    params(("tenant" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = ConsentConfigView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn get_config(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiPath(ConfigPath { id, .. }): ApiPath<ConfigPath>,
) -> ApiResult<Json<ConsentConfigView>> {
    Ok(Json(store::get(&state.db, caller.tenant.id, id).await?))
}

/// Change a config: a JSON merge patch (RFC 7396) of its fields, and/or `{"status": …}`
/// (`active ⇄ paused`, `→ decommissioned`; other transitions are 409). Edits take effect for
/// visitors when the config is published.
#[utoipa::path(
    patch, path = "/v1/tenants/{tenant}/analytics/cookie-consent/configs/{id}", tag = "cookie consent",
    params(("tenant" = String, Path), ("id" = Uuid, Path)), request_body = Object,
    responses(
        (status = 200, body = ConsentConfigView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
async fn patch_config(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(ConfigPath { id, .. }): ApiPath<ConfigPath>,
    ApiJson(patch): ApiJson<ConsentConfigPatch>,
) -> ApiResult<Json<ConsentConfigView>> {
    let view = store::patch(&state.db, caller.tenant.id, id, &caller.actor(), patch).await?;
    state.config_cache.forget(caller.tenant.id);
    Ok(Json(view))
}

/// Delete a draft (204). A published config is never erased — consent records point at it —
/// so deleting one decommissions it (200 with the config).
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/analytics/cookie-consent/configs/{id}", tag = "cookie consent",
    params(("tenant" = String, Path), ("id" = Uuid, Path)),
    responses((status = 204), (status = 200, body = ConsentConfigView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn delete_config(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(ConfigPath { id, .. }): ApiPath<ConfigPath>,
) -> ApiResult<Response> {
    let deleted = store::delete(&state.db, caller.tenant.id, id, &caller.actor()).await?;
    state.config_cache.forget(caller.tenant.id);
    Ok(match deleted {
        Deleted::Erased => StatusCode::NO_CONTENT.into_response(),
        Deleted::Decommissioned(view) => Json(*view).into_response(),
    })
}

/// Publish: snapshot the config as a new immutable revision and make it the active config
/// (the previously active config, if another, is paused). Body optional.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/analytics/cookie-consent/configs/{id}/publish", tag = "cookie consent",
    params(("tenant" = String, Path), ("id" = Uuid, Path)), request_body = PublishRequest,
    responses((status = 200, body = ConsentConfigView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn publish_config(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(ConfigPath { id, .. }): ApiPath<ConfigPath>,
    ApiJsonOrEmpty(req): ApiJsonOrEmpty<PublishRequest>,
) -> ApiResult<Json<ConsentConfigView>> {
    let requires_reconsent = req.is_some_and(|r| r.requires_reconsent);
    let view = store::publish(&state.db, caller.tenant.id, id, &caller.actor(), requires_reconsent).await?;
    state.config_cache.forget(caller.tenant.id);
    Ok(Json(view))
}

/// The config's published revisions, newest first: exactly what visitors were shown.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/analytics/cookie-consent/configs/{id}/revisions", tag = "cookie consent",
    params(("tenant" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = Vec<RevisionView>), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn list_revisions(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiPath(ConfigPath { id, .. }): ApiPath<ConfigPath>,
) -> ApiResult<Json<Vec<RevisionView>>> {
    Ok(Json(store::revisions(&state.db, caller.tenant.id, id).await?))
}

/// One published revision.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/analytics/cookie-consent/configs/{id}/revisions/{revision}", tag = "cookie consent",
    params(("tenant" = String, Path), ("id" = Uuid, Path), ("revision" = i32, Path)),
    responses((status = 200, body = RevisionView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn get_revision(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiPath(RevisionPath { id, revision, .. }): ApiPath<RevisionPath>,
) -> ApiResult<Json<RevisionView>> {
    Ok(Json(store::revision(&state.db, caller.tenant.id, id, revision).await?))
}
