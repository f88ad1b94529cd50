//! `/v1/tenants/{tenant}/ingest-keys`: the keys sites post events with.

use axum::{Json, extract::State, http::StatusCode};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    error::{ApiResult, ErrorBody},
    extract::{Admin, ApiJson, ApiPath, Reader},
};
use crate::{
    app::AppState,
    audit,
    ingest::keys::{self, KeyView, NewKey},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_key, list_keys)).routes(routes!(revoke_key))
}

#[derive(Deserialize)]
pub struct KeyPath {
    #[allow(dead_code)]
    tenant: String,
    id: Uuid,
}

/// The audit log's view of a key: never the key itself.
fn audited(view: &KeyView) -> Option<serde_json::Value> {
    let mut v = view.clone();
    v.key = None;
    serde_json::to_value(v).ok()
}

/// Create an ingest key. A secret key (`sk_…`) is shown only in this response; a public key
/// (`pk_…`) is published in pages anyway and stays visible in the list.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/ingest-keys", tag = "ingest",
    params(("tenant" = String, Path)), request_body = NewKey,
    responses((status = 201, body = KeyView), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn create_key(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<NewKey>,
) -> ApiResult<(StatusCode, Json<KeyView>)> {
    // The key and its audit row commit together: a key nobody can account for must not exist.
    let txn = crate::db::begin_write(&state.db).await?;
    let view = keys::create(&txn, caller.tenant.id, body).await?;
    audit::record(
        &txn,
        audit::Change {
            tenant_id: caller.tenant.id,
            actor: &caller.actor(),
            action: "ingest_key.create",
            entity_type: "ingest_key",
            entity_id: Some(view.id.to_string()),
            before: None,
            after: audited(&view),
        },
    )
    .await?;
    txn.commit().await?;
    state.config_cache.forget(caller.tenant.id);
    Ok((StatusCode::CREATED, Json(view)))
}

/// List the tenant's ingest keys (public keys with their key, secret keys without).
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/ingest-keys", tag = "ingest",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<KeyView>)),
    security(("bearer" = []))
)]
async fn list_keys(State(state): State<AppState>, Reader(caller): Reader) -> ApiResult<Json<Vec<KeyView>>> {
    Ok(Json(keys::list(&state.db, caller.tenant.id).await?))
}

/// Revoke an ingest key. It stops working at once.
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/ingest-keys/{id}", tag = "ingest",
    params(("tenant" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = KeyView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn revoke_key(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(KeyPath { id, .. }): ApiPath<KeyPath>,
) -> ApiResult<Json<KeyView>> {
    let txn = crate::db::begin_write(&state.db).await?;
    let view = keys::revoke(&txn, caller.tenant.id, id).await?;
    audit::record(
        &txn,
        audit::Change {
            tenant_id: caller.tenant.id,
            actor: &caller.actor(),
            action: "ingest_key.revoke",
            entity_type: "ingest_key",
            entity_id: Some(id.to_string()),
            before: None,
            after: audited(&view),
        },
    )
    .await?;
    txn.commit().await?;
    state.config_cache.forget(caller.tenant.id);
    Ok(Json(view))
}
