//! `POST /v1/tenants/{tenant}/analytics/posthog/flags`: a visitor's PostHog feature flags, for the
//! banner tracker's `consentgate.flags()` (see [`crate::flags`]). Authenticated like `/events`:
//! a public ingest key from an allowed origin, or a secret key.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiPath, ApiQuery, check_json_content_type, parse_json_object},
    ingest_key::{IngestKey, KeyQuery},
};
use crate::{
    app::AppState,
    consent::Signals,
    flags::{FlagsAnswer, FlagsError, FlagsInput},
    ingest::{enrich, event::Sender},
};

/// A flags request body at most (bytes).
const MAX_BODY_BYTES: usize = 4 * 1024;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_flags, preflight_flags))
}

#[derive(Deserialize)]
pub struct TenantPath {
    tenant: String,
}

/// Evaluate the visitor's feature flags through the tenant's PostHog config with
/// `enable_feature_flags`. PostHog sees the visitor's analytics id (`anonymous_id`) only when the
/// visitor's consent record grants analytics (`identified: true`); otherwise the day's anonymous
/// id. Under a DNT/GPC signal the tenant respects PostHog is not asked: `200` with no flags and
/// `reason` (`denied:dnt` / `denied:gpc`). Answers are cached for 30 s; PostHog gets 2 s. 409 when no active PostHog config has
/// flags enabled; 502 when PostHog refuses (e.g. a wrong project key), fails or times out.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/analytics/posthog/flags", tag = "events",
    params(("tenant" = String, Path), KeyQuery),
    request_body(content = FlagsInput, content_type = "application/json"),
    responses(
        (status = 200, body = FlagsAnswer),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "no active PostHog config with enable_feature_flags"),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "PostHog refused, failed or did not answer in time")
    )
)]
async fn post_flags(
    State(state): State<AppState>,
    key: IngestKey,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let res = flags(&state, &key, &headers, body).await;
    key.answer(res.unwrap_or_else(IntoResponse::into_response))
}

async fn flags(
    state: &AppState,
    key: &IngestKey,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    check_json_content_type(headers)?;
    let bytes = body.map_err(super::extract::body_rejected)?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let input: FlagsInput = parse_json_object(&bytes)?;
    let signals = match &key.sender {
        Sender::Browser(facts) => {
            Signals { bot: enrich::parse_agent(facts.user_agent.as_deref()).bot, ..facts.signals.clone() }
        }
        Sender::Server => Signals::default(),
    };
    match state.flags.evaluate(&state.db, &state.secrets, &key.config, &signals, &input).await {
        Ok(answer) => Ok((StatusCode::OK, Json(answer)).into_response()),
        Err(FlagsError::Gateway(e)) => Err(e.into()),
        Err(FlagsError::Upstream(why)) => Err(ApiError::BadGateway(why)),
    }
}

/// CORS preflight for the flags endpoint, as for `/events`.
#[utoipa::path(
    options, path = "/v1/tenants/{tenant}/analytics/posthog/flags", tag = "events",
    params(("tenant" = String, Path), KeyQuery),
    responses((status = 204, description = "allowed"), (status = 403, body = ErrorBody))
)]
async fn preflight_flags(
    State(state): State<AppState>,
    ApiPath(TenantPath { tenant }): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<KeyQuery>,
    headers: HeaderMap,
) -> Response {
    super::events::preflight(&state, &tenant, q.key.as_deref(), &headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
