//! `/v1/tenants/{tenant}/visitors/{visitor_id}`: one visitor's data — erased as a whole (admin,
//! GDPR Art. 17 and 19) or exported (admin and auditor, Art. 15). See `crate::privacy`.

use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::{ApiResult, ErrorBody},
    extract::{Admin, ApiPath, NoBody, Reader},
};
use crate::{
    app::AppState,
    consent::records::VisitorId,
    privacy::{dsar, erase},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(erase_visitor)).routes(routes!(export_visitor))
}

#[derive(Deserialize)]
pub struct VisitorPath {
    #[allow(dead_code)]
    tenant: String,
    visitor_id: VisitorId,
}

/// Erase everything held about a visitor: their events with the forwarding decisions and
/// deliveries (pending ones are never sent), and their id from their consent records, which stay
/// under the visitor's hash so the chain still verifies. The answer counts what went and names
/// the provider configs that already received their data (pass the request on: GDPR Art. 19).
/// The audit log names the visitor's hash only. A request with a body is refused (400): the
/// route has no options, and an erasure is not undone.
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/visitors/{visitor_id}", tag = "visitors",
    params(("tenant" = String, Path), ("visitor_id" = String, Path)),
    responses((status = 200, body = erase::Erasure), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn erase_visitor(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(VisitorPath { visitor_id, .. }): ApiPath<VisitorPath>,
    _: NoBody,
) -> ApiResult<Json<erase::Erasure>> {
    Ok(Json(erase::erase(&state.db, &caller.tenant, &visitor_id, &caller.actor()).await?))
}

/// Everything held about a visitor as one JSON document, streamed: consent records with the
/// proof of each (the canonical text its hash covers), events with their forwarding decisions
/// and deliveries (docs/api.md).
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/visitors/{visitor_id}/export", tag = "visitors",
    params(("tenant" = String, Path), ("visitor_id" = String, Path)),
    responses(
        (status = 200, description = "The visitor's data", content_type = "application/json"),
        (status = 400, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
async fn export_visitor(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiPath(VisitorPath { visitor_id, .. }): ApiPath<VisitorPath>,
) -> ApiResult<Response> {
    let body = Body::from_stream(dsar::stream(state.db.clone(), caller.tenant, visitor_id));
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"visitor-export.json\""));
    Ok(res)
}
