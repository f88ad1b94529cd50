//! `/v1/tenants/{tenant}/retention`: how long the tenant's events and consent records are kept
//! (`crate::privacy::retention`): read by admins and auditors, set by admins.

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::{ApiResult, ErrorBody},
    extract::{Admin, ApiJson, Reader},
};
use crate::{
    app::AppState,
    privacy::retention::{self, Overrides, Policy},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_retention, put_retention))
}

/// The tenant's retention periods: the effective ones and the tenant's own overrides.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/retention", tag = "retention",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Policy)),
    security(("bearer" = []))
)]
async fn get_retention(State(state): State<AppState>, Reader(caller): Reader) -> ApiResult<Json<Policy>> {
    Ok(Json(retention::policy(&state.db, &state.settings.retention, caller.tenant.id).await?))
}

/// Set the tenant's own retention periods (`null` or absent: the gateway's default).
#[utoipa::path(
    put, path = "/v1/tenants/{tenant}/retention", tag = "retention",
    params(("tenant" = String, Path)),
    request_body = Overrides,
    responses((status = 200, body = Policy), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn put_retention(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(overrides): ApiJson<Overrides>,
) -> ApiResult<Json<Policy>> {
    Ok(Json(
        retention::set_overrides(&state.db, &state.settings.retention, caller.tenant.id, overrides, &caller.actor())
            .await?,
    ))
}
