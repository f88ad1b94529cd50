//! `/v1/tenants/{tenant}/analytics/{provider}/configs[/{id}]`: provider configurations, for
//! every registered provider (`plausible`, `umami`, …) through the same handlers; the provider's
//! own fields are parsed by its module.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::{Admin, ApiJson, ApiPath, Reader},
};
use crate::{
    app::AppState,
    consent::ProviderStatus,
    outbox,
    providers::{
        self, AnyProvider, ProviderConfigInput,
        config::{self, NewProviderConfig, ProviderConfigPatch, ProviderConfigView},
    },
    secrets::check::CheckReport,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_configs, create_config))
        .routes(routes!(get_config, patch_config, delete_config))
        .routes(routes!(replay_dead_letters))
        .routes(routes!(check_config))
}

#[derive(Deserialize)]
pub struct ProviderPath {
    #[allow(dead_code)]
    tenant: String,
    provider: String,
}

#[derive(Deserialize)]
pub struct ConfigPath {
    #[allow(dead_code)]
    tenant: String,
    provider: String,
    id: Uuid,
}

/// A provider named in a path; an unknown one is a 404 like any unknown route.
pub(crate) fn provider(name: &str) -> ApiResult<&'static dyn AnyProvider> {
    providers::get(name).ok_or(ApiError::NotFound)
}

/// List the tenant's configs of a provider.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/analytics/{provider}/configs", tag = "providers",
    params(("tenant" = String, Path), ("provider" = String, Path, description = "plausible, umami, posthog or ga4")),
    responses((status = 200, body = Vec<ProviderConfigView>), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn list_configs(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiPath(path): ApiPath<ProviderPath>,
) -> ApiResult<Json<Vec<ProviderConfigView>>> {
    let p = provider(&path.provider)?;
    Ok(Json(config::list(&state.db, caller.tenant.id, p).await?))
}

/// Create a provider config. Credentials are secret *references* only; a raw secret, or a
/// reference to a scheme the operator switched off (`[secrets]`), is refused with 422 naming the
/// field. `warnings` lists references that work but should be fixed (a file others can read).
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/analytics/{provider}/configs", tag = "providers",
    params(("tenant" = String, Path), ("provider" = String, Path, description = "plausible, umami, posthog or ga4")),
    request_body = ProviderConfigInput,
    responses((status = 201, body = ProviderConfigView, description = "The config, plus `warnings` (strings) when a reference should be fixed"), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn create_config(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(path): ApiPath<ProviderPath>,
    ApiJson(body): ApiJson<NewProviderConfig>,
) -> ApiResult<(StatusCode, Json<Saved>)> {
    let p = provider(&path.provider)?;
    state.secrets.refuse_unusable(&caller.tenant.slug, body.credentials())?;
    let input = config::ConfigInput::new(p, body)?;
    let view = config::create(&state.db, caller.tenant.id, p, input, &caller.actor()).await?;
    state.config_cache.forget(caller.tenant.id);
    Ok((StatusCode::CREATED, Json(with_warnings(&state, view))))
}

/// One provider config, with its usage.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/analytics/{provider}/configs/{id}", tag = "providers",
    params(("tenant" = String, Path), ("provider" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = ProviderConfigView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn get_config(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiPath(path): ApiPath<ConfigPath>,
) -> ApiResult<Json<ProviderConfigView>> {
    let p = provider(&path.provider)?;
    Ok(Json(config::get(&state.db, caller.tenant.id, p, path.id).await?))
}

/// Change a provider config (JSON merge patch, validated like a creation). `status` follows the
/// lifecycle draft → active ⇄ paused, error → active | paused, any → decommissioned (final);
/// other moves are 409. Setting an `error` config `active` again resumes its waiting deliveries.
#[utoipa::path(
    patch, path = "/v1/tenants/{tenant}/analytics/{provider}/configs/{id}", tag = "providers",
    params(("tenant" = String, Path), ("provider" = String, Path), ("id" = Uuid, Path)),
    request_body = ProviderConfigInput,
    responses((status = 200, body = ProviderConfigView, description = "The config, plus `warnings` (strings) when a reference should be fixed"), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn patch_config(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(path): ApiPath<ConfigPath>,
    ApiJson(patch): ApiJson<ProviderConfigPatch>,
) -> ApiResult<Json<Saved>> {
    let p = provider(&path.provider)?;
    state.secrets.refuse_unusable(&caller.tenant.slug, patch.credentials())?;
    let view = config::patch(&state.db, caller.tenant.id, p, path.id, patch, &caller.actor()).await?;
    state.config_cache.forget(caller.tenant.id);
    if view.status == ProviderStatus::Active.as_str() {
        // Fixed references must not meet their cached failure.
        state.secrets.forget(&view.credentials);
        state.outbox.wake();
    }
    Ok(Json(with_warnings(&state, view)))
}

/// Decommission a provider config (final). The config stays readable, so its delivery log and the
/// decisions naming it remain explainable; its waiting deliveries end as dead.
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/analytics/{provider}/configs/{id}", tag = "providers",
    params(("tenant" = String, Path), ("provider" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = ProviderConfigView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn delete_config(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(path): ApiPath<ConfigPath>,
) -> ApiResult<Json<ProviderConfigView>> {
    let p = provider(&path.provider)?;
    let view = config::decommission(&state.db, caller.tenant.id, p, path.id, &caller.actor()).await?;
    state.config_cache.forget(caller.tenant.id);
    Ok(Json(view))
}

#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// Dead deliveries set pending again.
    replayed: u64,
}

/// Send every dead delivery of this config again.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/analytics/{provider}/configs/{id}/replay-dead-letters", tag = "deliveries",
    params(("tenant" = String, Path), ("provider" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = Replayed), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn replay_dead_letters(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(path): ApiPath<ConfigPath>,
) -> ApiResult<Json<Replayed>> {
    let p = provider(&path.provider)?;
    let config = config::find(&state.db, caller.tenant.id, p.name(), path.id).await?;
    if config.status == ProviderStatus::Decommissioned.as_str() {
        return Err(ApiError::Conflict("the config is decommissioned".into()));
    }
    let replayed = outbox::log::replay_dead_letters(
        &state.db,
        caller.tenant.id,
        config.id,
        &caller.actor(),
        state.settings.delivery.retry_horizon(),
    )
    .await?;
    state.outbox.wake();
    Ok(Json(Replayed { replayed }))
}

/// A saved config and, when there are any, warnings about its references. Documented as
/// `ProviderConfigView` (plus `warnings`) in OpenAPI.
#[derive(Serialize)]
pub struct Saved {
    #[serde(flatten)]
    config: ProviderConfigView,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

fn with_warnings(state: &AppState, config: ProviderConfigView) -> Saved {
    let warnings = state.secrets.warnings(Some(&config.credentials));
    Saved { config, warnings }
}

/// Check a config's credentials: each secret reference is resolved now (not from the cache, so a
/// rotated value shows at once) and, where the provider offers one, used in one harmless
/// authenticated call (Plausible's Stats API, Umami's login or `/me`). Per reference: `ok`, or
/// `failed` with the reason. Values are never shown. Admins only.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/analytics/{provider}/configs/{id}/check", tag = "providers",
    params(("tenant" = String, Path), ("provider" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = CheckReport), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn check_config(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(path): ApiPath<ConfigPath>,
) -> ApiResult<Json<CheckReport>> {
    let p = provider(&path.provider)?;
    let config = config::find(&state.db, caller.tenant.id, p.name(), path.id).await?;
    Ok(Json(
        crate::secrets::check::check(&state.secrets, &caller.tenant.slug, p, &config, &state.settings.delivery).await,
    ))
}
