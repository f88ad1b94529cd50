//! `/v1/tenants/{tenant}/consent-records`: the proof of consent for auditors — filter and page
//! through records, export them (CSV, NDJSON; streamed), verify the hash chain — and erasure of
//! a visitor id for admins (GDPR Art. 17).

use axum::{
    Json,
    body::Body,
    extract::{RawQuery, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::{Admin, ApiQuery, Reader},
    paging::PageLimit,
};
use crate::{
    app::AppState,
    audit,
    consent::{
        chain::{self, Verification},
        export::{self, Format},
        records::{self, RecordFilter, RecordItem, VisitorId},
    },
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_records, erase_visitor))
        .routes(routes!(export_records))
        .routes(routes!(verify_chain))
}

/// Query parameters of the filter, so a misspelt one (`analytic=true`) is refused instead of
/// silently widening an auditor's result.
const FILTER_KEYS: [&str; 10] = [
    "visitor_id",
    "visitor_hash",
    "from",
    "to",
    "action",
    "functional",
    "analytics",
    "marketing",
    "revision",
    "config_id",
];

fn check_keys(query: Option<&str>, extra: &[&str]) -> ApiResult<()> {
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let key = pair.split('=').next().unwrap_or_default();
        if !FILTER_KEYS.contains(&key) && !extra.contains(&key) {
            return Err(ApiError::bad_request(key, format!("unknown query parameter {key:?}")));
        }
    }
    Ok(())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page size, 1–500 (default 100).
    #[param(value_type = Option<u64>, minimum = 1, maximum = 500)]
    limit: Option<PageLimit>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{0,18}$")]
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RecordPage {
    items: Vec<RecordItem>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
}

/// Consent records matching the filter, in chain order (`seq`).
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/consent-records", tag = "consent records",
    params(("tenant" = String, Path), RecordFilter, Paging),
    responses((status = 200, body = RecordPage), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn list_records(
    State(state): State<AppState>,
    Reader(caller): Reader,
    RawQuery(raw): RawQuery,
    ApiQuery(filter): ApiQuery<RecordFilter>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<Json<RecordPage>> {
    check_keys(raw.as_deref(), &["limit", "cursor"])?;
    let limit = PageLimit::or_default(paging.limit);
    let after = match paging.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => c.parse::<i64>().map_err(|_| ApiError::bad_request("cursor", "not a cursor from next_cursor"))?,
    };
    let rows = records::page(&state.db, &caller.tenant, &filter, after, limit).await?;
    let next_cursor = (rows.len() as u64 == limit).then(|| rows.last().map(|m| m.seq.to_string())).flatten();
    Ok(Json(RecordPage { items: rows.into_iter().map(RecordItem::from).collect(), next_cursor }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportFormat {
    /// `csv` or `ndjson`.
    #[param(value_type = String)]
    format: Format,
}

/// Every record matching the filter as CSV or NDJSON, streamed in chain order.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/consent-records/export", tag = "consent records",
    params(("tenant" = String, Path), ExportFormat, RecordFilter),
    responses(
        (status = 200, description = "CSV for format=csv, NDJSON for format=ndjson",
            content((String = "text/csv"), (String = "application/x-ndjson"))),
        (status = 400, body = ErrorBody)
    ),
    security(("bearer" = []))
)]
async fn export_records(
    State(state): State<AppState>,
    Reader(caller): Reader,
    RawQuery(raw): RawQuery,
    ApiQuery(filter): ApiQuery<RecordFilter>,
    ApiQuery(ExportFormat { format }): ApiQuery<ExportFormat>,
) -> ApiResult<Response> {
    check_keys(raw.as_deref(), &["format"])?;
    Ok(export_response(&state, caller.tenant, filter, format))
}

/// The export as a streamed download (`Content-Disposition: attachment`, never cached): the API's
/// and the admin pages' (`/admin/records/export`).
pub(crate) fn export_response(
    state: &AppState,
    tenant: entity::tenant::Model,
    filter: RecordFilter,
    format: Format,
) -> Response {
    let disposition = format!(
        "attachment; filename=\"consent-records-{}-{}.{}\"",
        tenant.slug,
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    let body = Body::from_stream(export::stream(state.db.clone(), tenant, filter, format));
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Walk the tenant's hash chain and report the first record that does not fit.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/consent-records/verify", tag = "consent records",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Verification)),
    security(("bearer" = []))
)]
async fn verify_chain(State(state): State<AppState>, Reader(caller): Reader) -> ApiResult<Json<Verification>> {
    Ok(Json(chain::verify(&state.db, &caller.tenant).await?))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EraseQuery {
    /// The visitor whose id is erased.
    #[param(value_type = String)]
    visitor_id: VisitorId,
}

#[derive(Serialize, ToSchema)]
pub struct Erased {
    /// Records whose visitor id was removed.
    erased: u64,
    /// The pseudonym the records remain under (the proof stays; the id is gone).
    visitor_hash: String,
}

/// Erase a visitor id from the consent records: removed from every record of that visitor; the
/// records, their `visitor_hash` and the chain stay, so the proof of consent remains verifiable.
/// The visitor counts as undecided afterwards. Their events and deliveries are not touched: for a
/// request under GDPR Art. 17 use `DELETE /v1/tenants/{tenant}/visitors/{visitor_id}`.
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/consent-records", tag = "consent records",
    params(("tenant" = String, Path), EraseQuery),
    responses((status = 200, body = Erased), (status = 400, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn erase_visitor(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiQuery(EraseQuery { visitor_id }): ApiQuery<EraseQuery>,
) -> ApiResult<Json<Erased>> {
    // The erasure and its audit entry commit together: neither stands without the other.
    let txn = crate::db::begin_write(&state.db).await?;
    let erased = records::erase_visitor_in(&txn, &caller.tenant, &visitor_id).await?;
    let visitor_hash = records::visitor_hash(&caller.tenant, &visitor_id);
    // The audit entry names the pseudonym only: writing the erased id here would undo the erasure.
    audit::record(
        &txn,
        audit::Change {
            tenant_id: caller.tenant.id,
            actor: &caller.actor(),
            action: "consent_record.erase",
            entity_type: "consent_record",
            entity_id: Some(visitor_hash.clone()),
            before: None,
            after: Some(serde_json::json!({"visitor_hash": visitor_hash, "records": erased})),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Json(Erased { erased, visitor_hash }))
}
