//! `/v1/tenants/{tenant}/tokens`: API tokens for admins and auditors.

use axum::{Json, extract::State, http::StatusCode};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use validator::Validate;

use super::{
    error::ApiResult,
    extract::{Admin, ApiJson, ApiPath, Reader},
};
use crate::{
    app::AppState,
    audit,
    tokens::{self, Role, TokenView},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_token, list_tokens)).routes(routes!(revoke_token))
}

#[derive(Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    role: Role,
}

#[derive(Deserialize)]
pub struct TokenPath {
    #[allow(dead_code)]
    tenant: String,
    id: Uuid,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    token: TokenView,
    /// The token itself. Shown only in this response; store it now.
    secret: String,
}

/// Create a token. The secret is returned once and cannot be retrieved again.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/tokens", tag = "tokens",
    params(("tenant" = String, Path)), request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = []))
)]
async fn create_token(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    body.validate()?;
    // The token and its audit row commit together: a token nobody can account for must not exist.
    let txn = crate::db::begin_write(&state.db).await?;
    let (model, secret) = tokens::create(&txn, caller.tenant.id, body.role, &body.name).await?;
    let view = TokenView::from(model);
    audit::record(
        &txn,
        audit::Change {
            tenant_id: caller.tenant.id,
            actor: &caller.actor(),
            action: "token.create",
            entity_type: "api_token",
            entity_id: Some(view.id.to_string()),
            before: None,
            after: Some(serde_json::to_value(&view).unwrap_or_default()),
        },
    )
    .await?;
    txn.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token: view, secret: secret.expose_secret().to_string() })))
}

/// List the tenant's tokens (never their secrets).
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/tokens", tag = "tokens",
    params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<TokenView>)),
    security(("bearer" = []))
)]
async fn list_tokens(State(state): State<AppState>, Reader(caller): Reader) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = tokens::list(&state.db, caller.tenant.id).await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// Revoke a token. It stops working at once.
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/tokens/{id}", tag = "tokens",
    params(("tenant" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = TokenView), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = []))
)]
async fn revoke_token(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(TokenPath { id, .. }): ApiPath<TokenPath>,
) -> ApiResult<Json<TokenView>> {
    let txn = crate::db::begin_write(&state.db).await?;
    let view = TokenView::from(tokens::revoke(&txn, caller.tenant.id, id).await?);
    audit::record(
        &txn,
        audit::Change {
            tenant_id: caller.tenant.id,
            actor: &caller.actor(),
            action: "token.revoke",
            entity_type: "api_token",
            entity_id: Some(id.to_string()),
            before: None,
            after: Some(serde_json::to_value(&view).unwrap_or_default()),
        },
    )
    .await?;
    txn.commit().await?;
    Ok(Json(view))
}
