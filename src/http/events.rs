//! `POST /v1/tenants/{tenant}/events` (post once, forwarded to every allowed provider),
//! `POST /v1/tenants/{tenant}/analytics/{provider}/events` (that provider's configs only),
//! their CORS preflights, and `GET /v1/tenants/{tenant}/events/{id}` (the event and why each
//! provider did or did not receive it).
//!
//! Authentication is an ingest key, not an admin token: a public key (`?key=` or `X-Ingest-Key`)
//! from a page of one of its allowed origins, or a secret key (`Authorization: Bearer sk_…`)
//! from a server. Bodies are JSON sent as `application/json` or `text/plain` (so
//! `navigator.sendBeacon` and preflight-free `fetch` work).

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    error::{ApiError, ApiResult, ErrorBody, ErrorDetail},
    extract::{ApiPath, ApiQuery, Reader, Visitor, bearer, check_json_content_type, parse_json},
    provider_configs::provider,
};
use crate::{
    app::AppState,
    error::Error,
    ingest::{
        self, Accepted, EventView,
        event::Caller,
        keys::{self, KeyKind},
    },
    tenants,
};

/// Events in one batch at most.
pub const MAX_BATCH: usize = 100;
/// An events request body at most (bytes), whatever `server.max_body_bytes` allows elsewhere.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(post_events, preflight_events))
        .routes(routes!(post_provider_events, preflight_provider_events))
        .routes(routes!(get_event))
}

#[derive(Deserialize)]
pub struct TenantPath {
    tenant: String,
}

#[derive(Deserialize)]
pub struct ProviderEventsPath {
    tenant: String,
    provider: String,
}

#[derive(Deserialize)]
pub struct EventPath {
    #[allow(dead_code)]
    tenant: String,
    id: Uuid,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// A public ingest key (`pk_…`), for browsers that cannot set headers (`sendBeacon`).
    key: Option<String>,
}

/// Documentation of the body: one event, or `{"batch": [...]}` of at most 100.
#[derive(ToSchema)]
#[allow(dead_code)]
struct EventBody {
    event_name: String,
    #[schema(value_type = Option<Object>)]
    event_properties: Option<Value>,
    user_id: Option<String>,
    /// The visitor id.
    anonymous_id: Option<String>,
    session_id: Option<String>,
    page_url: String,
    referrer: Option<String>,
    title: Option<String>,
    language: Option<String>,
    /// `1920x1080`.
    screen: Option<String>,
    /// `{"amount": 12.5, "currency": "EUR"}`.
    #[schema(value_type = Option<Object>)]
    revenue: Option<Value>,
    /// RFC 3339, at most 72 h old and 5 min ahead; default now.
    occurred_at: Option<String>,
    idempotency_key: Option<String>,
    /// Secret keys only: the visitor's user agent.
    user_agent: Option<String>,
    /// Secret keys only: the visitor's IP.
    ip: Option<String>,
    /// Secret keys only.
    dnt: Option<bool>,
    /// Secret keys only.
    gpc: Option<bool>,
    /// Secret keys only: ISO 3166-1 alpha-2.
    country: Option<String>,
    /// Instead of one event: up to 100 events.
    #[schema(value_type = Option<Vec<Object>>)]
    batch: Option<Vec<Value>>,
}

/// One item of a batch answer.
#[derive(Serialize, ToSchema)]
pub struct BatchItem {
    index: usize,
    /// 202 stored, 200 a repeat of an earlier event, 4xx refused.
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decisions: Option<Vec<ingest::decisions::DecisionView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorDetail>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchResult {
    results: Vec<BatchItem>,
}

/// Post one event (or a batch); it is stored once and forwarded to every provider config the
/// visitor's consent allows. Answers 202 with each config's decision; a repeated idempotency key
/// answers 200 with the first event's id.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/events", tag = "events",
    params(("tenant" = String, Path), KeyQuery),
    request_body(content = EventBody, content_type = "application/json"),
    responses(
        (status = 202, body = Accepted), (status = 200, body = Accepted, description = "a repeat"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "idempotency_key used for another target"),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)
    )
)]
async fn post_events(
    State(state): State<AppState>,
    ApiPath(TenantPath { tenant }): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<KeyQuery>,
    visitor: Visitor,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    ingest_request(state, &tenant, None, q.key, visitor, headers, body).await
}

/// Post events for one provider only (the per-provider API): forwarded to that provider's
/// configs, decided like `/events`.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/analytics/{provider}/events", tag = "events",
    params(("tenant" = String, Path), ("provider" = String, Path, description = "plausible or umami"), KeyQuery),
    request_body(content = EventBody, content_type = "application/json"),
    responses(
        (status = 202, body = Accepted), (status = 200, body = Accepted, description = "a repeat"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "idempotency_key used for another target"),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)
    )
)]
async fn post_provider_events(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ProviderEventsPath>,
    ApiQuery(q): ApiQuery<KeyQuery>,
    visitor: Visitor,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let p = match provider(&path.provider) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    ingest_request(state, &path.tenant, Some(p.name()), q.key, visitor, headers, body).await
}

/// CORS preflight for `/events`: allowed when the `Origin` is allowed by the key in `?key=`, or
/// (no key in the URL, as with `X-Ingest-Key`) by any live public key of the tenant.
#[utoipa::path(
    options, path = "/v1/tenants/{tenant}/events", tag = "events",
    params(("tenant" = String, Path), KeyQuery),
    responses((status = 204, description = "allowed"), (status = 403, body = ErrorBody))
)]
async fn preflight_events(
    State(state): State<AppState>,
    ApiPath(TenantPath { tenant }): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<KeyQuery>,
    headers: HeaderMap,
) -> Response {
    preflight(&state, &tenant, q.key.as_deref(), &headers).await.unwrap_or_else(IntoResponse::into_response)
}

/// CORS preflight for the per-provider endpoint.
#[utoipa::path(
    options, path = "/v1/tenants/{tenant}/analytics/{provider}/events", tag = "events",
    params(("tenant" = String, Path), ("provider" = String, Path), KeyQuery),
    responses((status = 204, description = "allowed"), (status = 403, body = ErrorBody))
)]
async fn preflight_provider_events(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ProviderEventsPath>,
    ApiQuery(q): ApiQuery<KeyQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = provider(&path.provider) {
        return e.into_response();
    }
    preflight(&state, &path.tenant, q.key.as_deref(), &headers).await.unwrap_or_else(IntoResponse::into_response)
}

/// A stored event with each config's decision and the delivery that carried it out.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/events/{id}", tag = "events",
    params(("tenant" = String, Path), ("id" = Uuid, Path)),
    responses((status = 200, body = EventView), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
async fn get_event(
    State(state): State<AppState>,
    Reader(caller): Reader,
    ApiPath(EventPath { id, .. }): ApiPath<EventPath>,
) -> ApiResult<Json<EventView>> {
    Ok(Json(ingest::event_view(&state.db, caller.tenant.id, id).await?))
}

async fn preflight(state: &AppState, tenant: &str, key: Option<&str>, headers: &HeaderMap) -> ApiResult<Response> {
    let origin = header_text(headers, header::ORIGIN.as_str())
        .ok_or_else(|| ApiError::Forbidden("a preflight needs an Origin header".into()))?;
    let tenant = tenants::find(&state.db, tenant).await?.ok_or(ApiError::NotFound)?;
    let allowed = match key {
        Some(k) => keys::authenticate(&state.db, tenant.id, k)
            .await?
            .is_some_and(|key| keys::kind_of(&key) == KeyKind::Public && keys::origin_allowed(&key, &origin)),
        None => keys::any_public_key_allows(&state.db, tenant.id, &origin).await?,
    };
    if !allowed {
        return Err(ApiError::Forbidden(format!("origin {origin} is not allowed for this tenant's ingest keys")));
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    set_cors(h, &origin);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type, x-ingest-key"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    Ok(res)
}

fn set_cors(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(String::from)
}

/// Authenticates the key, then — once the origin is known to be allowed, so that even errors are
/// readable by the page — answers with CORS headers.
async fn ingest_request(
    state: AppState,
    tenant: &str,
    provider: Option<&'static str>,
    query_key: Option<String>,
    visitor: Visitor,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (origin, result) = match authorize(&state, tenant, query_key, &visitor, &headers).await {
        Err(res) => return res,
        Ok((tenant, caller, origin)) => (origin, ingest_body(&state, &tenant, &caller, provider, &headers, body).await),
    };
    let mut res = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    if let Some(o) = origin {
        set_cors(res.headers_mut(), &o);
    }
    res
}

/// The tenant, who is calling (with what the request says about the visitor) and, for a browser,
/// its allowed origin; or the refusal.
async fn authorize(
    state: &AppState,
    tenant: &str,
    query_key: Option<String>,
    visitor: &Visitor,
    headers: &HeaderMap,
) -> Result<(entity::tenant::Model, Caller, Option<String>), Response> {
    let (tenant, key, origin) =
        authenticate(state, tenant, query_key, visitor, headers).await.map_err(IntoResponse::into_response)?;
    if let Some(limit) = key.rate_limit_per_minute
        && let Err(wait) = state.ingest_limits.check(key.id, limit.max(1) as u32)
    {
        let mut res = ApiError::RateLimited.into_response();
        if let Some(o) = &origin {
            set_cors(res.headers_mut(), o);
        }
        let secs = wait.as_secs().max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(res);
    }
    let kind = keys::kind_of(&key);
    let caller = match kind {
        KeyKind::Public => Caller {
            kind: Some(kind),
            ip: visitor.ip,
            user_agent: visitor.user_agent.clone(),
            dnt: visitor.dnt,
            gpc: visitor.gpc,
            country: visitor.country.clone(),
            region: visitor.region.clone(),
        },
        KeyKind::Secret => Caller { kind: Some(kind), ..Default::default() },
    };
    Ok((tenant, caller, origin))
}

/// The tenant, the live key presented for it, and (public keys) the allowed origin.
async fn authenticate(
    state: &AppState,
    tenant: &str,
    query_key: Option<String>,
    visitor: &Visitor,
    headers: &HeaderMap,
) -> ApiResult<(entity::tenant::Model, entity::ingest_key::Model, Option<String>)> {
    use secrecy::ExposeSecret;
    let tenant = tenants::find(&state.db, tenant).await?.ok_or(ApiError::NotFound)?;
    let from_bearer = bearer(headers).map(|s| s.expose_secret().to_string());
    let from_header = header_text(headers, "x-ingest-key");
    if query_key.as_deref().is_some_and(|k| k.starts_with("sk_"))
        || from_header.as_deref().is_some_and(|k| k.starts_with("sk_"))
    {
        // URLs end up in access logs and browser history.
        return Err(ApiError::Unauthorized(
            "a secret key goes in the Authorization header (never in the URL, where logs keep it)".into(),
        ));
    }
    let presented = from_bearer.or(from_header).or(query_key).ok_or_else(|| {
        ApiError::Unauthorized("missing ingest key (?key=, X-Ingest-Key or Authorization: Bearer)".into())
    })?;
    let key = keys::authenticate(&state.db, tenant.id, &presented)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid or revoked ingest key".into()))?;
    let kind = keys::kind_of(&key);
    let origin = match kind {
        KeyKind::Public => {
            let origin = visitor.origin.clone().ok_or_else(|| {
                ApiError::Forbidden(
                    "a public key is accepted only from pages of its allowed origins (Origin header)".into(),
                )
            })?;
            if !keys::origin_allowed(&key, &origin) {
                return Err(ApiError::Forbidden(format!("origin {origin} is not allowed for this key")));
            }
            Some(origin)
        }
        KeyKind::Secret if visitor.origin.is_some() => {
            // A secret key seen from a browser page is a leaked key.
            return Err(ApiError::Forbidden("secret keys are for servers; pages use a public key".into()));
        }
        KeyKind::Secret => None,
    };
    Ok((tenant, key, origin))
}

async fn ingest_body(
    state: &AppState,
    tenant: &entity::tenant::Model,
    caller: &Caller,
    provider: Option<&'static str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    check_json_content_type(headers)?;
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest { field: None, message: e.body_text() }
        }
    })?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let value: Value = parse_json(&bytes)?;
    let batch = match &value {
        Value::Object(m) if m.contains_key("batch") => {
            if m.len() > 1 {
                let other = m.keys().find(|k| *k != "batch").cloned().unwrap_or_default();
                return Err(ApiError::Unprocessable {
                    field: Some(other),
                    message: "a batch body has only the field batch".into(),
                });
            }
            match m.get("batch") {
                Some(Value::Array(items)) if items.is_empty() => {
                    return Err(ApiError::Unprocessable {
                        field: Some("batch".into()),
                        message: "must not be empty".into(),
                    });
                }
                Some(Value::Array(items)) if items.len() > MAX_BATCH => {
                    return Err(ApiError::Unprocessable {
                        field: Some("batch".into()),
                        message: format!("at most {MAX_BATCH} events per batch"),
                    });
                }
                Some(Value::Array(items)) => Some(items.clone()),
                _ => {
                    return Err(ApiError::Unprocessable {
                        field: Some("batch".into()),
                        message: "must be an array of events".into(),
                    });
                }
            }
        }
        _ => None,
    };
    let Some(items) = batch else {
        let accepted = ingest::accept(&state.db, &state.geo, tenant, caller, provider, value, "").await?;
        state.outbox.wake();
        let status = if accepted.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
        return Ok((status, Json(accepted)).into_response());
    };
    let mut results = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let prefix = format!("batch[{index}]");
        let result = ingest::accept(&state.db, &state.geo, tenant, caller, provider, item, &prefix).await;
        results.push(match result {
            Ok(a) => BatchItem {
                index,
                status: if a.duplicate { 200 } else { 202 },
                id: Some(a.id),
                decisions: Some(a.decisions),
                error: None,
            },
            Err(e) => {
                if matches!(e, Error::Db(_) | Error::Internal(_)) {
                    tracing::error!(error = %e, index, "storing a batch item failed");
                }
                let api = ApiError::from(e);
                BatchItem {
                    index,
                    status: api.status().as_u16(),
                    id: None,
                    decisions: None,
                    error: Some(api.body().error),
                }
            }
        });
    }
    state.outbox.wake();
    Ok((StatusCode::ACCEPTED, Json(BatchResult { results })).into_response())
}
