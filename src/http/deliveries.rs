//! `/v1/tenants/{tenant}/deliveries`: the delivery log (dead letters with `status=dead`) and
//! replays.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    error::{ApiResult, ErrorBody},
    extract::{Admin, ApiPath, ApiQuery, Reader},
    paging::PageLimit,
};
use crate::{
    app::AppState,
    outbox::log::{self, DeliveryStatus, DeliveryView, Filter},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_deliveries)).routes(routes!(replay_delivery))
}

/// Unknown parameters are refused (400 naming the parameter): a misspelt filter
/// (`config_id=` for `config=`) must not silently widen the list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `pending`, `delivered`, `dropped` or `dead` (the dead letters).
    status: Option<DeliveryStatus>,
    /// A provider config id.
    config: Option<Uuid>,
    /// An event id.
    event: Option<Uuid>,
    /// Page size, 1–500 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 500)]
    limit: Option<PageLimit>,
    /// `next_cursor` of the previous page.
    cursor: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    items: Vec<DeliveryView>,
    next_cursor: Option<Uuid>,
}

#[derive(Deserialize)]
pub struct DeliveryPath {
    #[allow(dead_code)]
    tenant: String,
    id: Uuid,
}

/// The delivery log, newest first: attempts, the provider's last answer, warnings, and the
/// forwarding decision behind each delivery.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/deliveries", tag = "deliveries",
    params(("tenant" = String, Path), DeliveryQuery),
    responses((status = 200, body = DeliveryPage)),
    security(("bearer" = []))
)]
async fn list_deliveries(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> ApiResult<Json<DeliveryPage>> {
    let limit = PageLimit::or_default(q.limit);
    let filter = Filter { status: q.status, config: q.config, event: q.event, before: q.cursor, limit };
    let items = log::list(&state.db, caller.tenant.id, &filter, state.settings.delivery.retry_horizon()).await?;
    let next_cursor = (items.len() as u64 == limit).then(|| items.last().map(|d| d.id)).flatten();
    Ok(Json(DeliveryPage { items, next_cursor }))
}

/// Send a dead or dropped delivery again, with its attempts reset. Anything else is 409.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/deliveries/{id}/replay", tag = "deliveries",
    params(("tenant" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = DeliveryView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn replay_delivery(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(DeliveryPath { id, .. }): ApiPath<DeliveryPath>,
) -> ApiResult<Json<DeliveryView>> {
    let view =
        log::replay(&state.db, caller.tenant.id, id, &caller.actor(), state.settings.delivery.retry_horizon()).await?;
    state.outbox.wake();
    Ok(Json(view))
}
