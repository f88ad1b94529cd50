//! `/v1/tenants/{tenant}/audit-log`: who changed which configuration or key, and when.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    error::ApiResult,
    extract::{ApiQuery, Reader},
    paging::PageLimit,
};
use crate::{
    app::AppState,
    audit::{self, AuditEntry},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_log))
}

/// Unknown parameters are refused (400 naming the parameter): a misspelt filter
/// (`config_id=` for `config=`) must not silently widen the list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Page size, 1–500 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 500)]
    limit: Option<PageLimit>,
    /// `next_cursor` of the previous page.
    cursor: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    items: Vec<AuditEntry>,
    next_cursor: Option<Uuid>,
}

/// The tenant's audit log, newest first.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/audit-log", tag = "audit",
    params(("tenant" = String, Path), AuditQuery),
    responses((status = 200, body = AuditPage)),
    security(("bearer" = []))
)]
async fn list_audit_log(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let limit = PageLimit::or_default(q.limit);
    let items = audit::list(&state.db, caller.tenant.id, q.cursor, limit).await?;
    let next_cursor = (items.len() as u64 == limit).then(|| items.last().map(|e| e.id)).flatten();
    Ok(Json(AuditPage { items, next_cursor }))
}
