//! `POST /v1/tenants/{tenant}/events` (post once, forwarded to every allowed provider),
//! `POST /v1/tenants/{tenant}/analytics/{provider}/events` (that provider's configs only),
//! their CORS preflights, and `GET /v1/tenants/{tenant}/events/{id}` (the event and why each
//! provider did or did not receive it).
//!
//! Authentication is an ingest key ([`IngestKey`]), not an admin token: a public key (`?key=` or
//! `X-Ingest-Key`) from a page of one of its allowed origins, or a secret key
//! (`Authorization: Bearer sk_…`) from a server. Bodies are JSON sent as `application/json` or
//! `text/plain` (so `navigator.sendBeacon` and preflight-free `fetch` work), parsed here into
//! typed [`EventInput`]s.

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequestParts, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::{
    error::{ApiError, ApiResult, ErrorBody, ErrorDetail},
    extract::{ApiPath, ApiQuery, Reader, check_json_content_type, parse_json_object},
    ingest_key::{IngestKey, KeyQuery, header_text, set_cors},
    provider_configs::provider,
};
use crate::{
    app::AppState,
    error::Error,
    ingest::{
        self, Accepted, EventView,
        event::EventInput,
        keys::{self, KeyKind},
    },
    json,
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

/// The provider of a per-provider endpoint; an unknown one is a 404 before anything else.
pub struct Target(&'static str);

impl FromRequestParts<AppState> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiPath(path) = ApiPath::<ProviderEventsPath>::from_request_parts(parts, state).await?;
        Ok(Target(provider(&path.provider)?.name()))
    }
}

/// Documentation of the body: one event, or `{"batch": [...]}` of at most 100.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum EventsBody {
    Event(Box<EventInput>),
    Batch {
        /// Up to 100 events.
        batch: Vec<EventInput>,
    },
}

/// One item of a batch answer.
#[derive(Serialize, ToSchema)]
pub struct BatchItem {
    index: usize,
    /// 202 stored, 200 a repeat of an earlier event, 4xx refused, 503 not stored for now (the
    /// database failed it; the whole answer is then 503 with `Retry-After`: send it again).
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
    request_body(content = EventsBody, content_type = "application/json"),
    responses(
        (status = 202, body = Accepted), (status = 200, body = Accepted, description = "a repeat"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "idempotency_key used for another target"),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "too many events waiting to be stored (Retry-After: 1), or the database is unreachable; for a batch of which nothing could be stored, its `results`")
    )
)]
async fn post_events(
    State(state): State<AppState>,
    key: IngestKey,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let res = ingest_body(&state, &key, None, &headers, body).await;
    key.answer(res.unwrap_or_else(IntoResponse::into_response))
}

/// Post events for one provider only (the per-provider API): forwarded to that provider's
/// configs, decided like `/events`.
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/analytics/{provider}/events", tag = "events",
    params(("tenant" = String, Path), ("provider" = String, Path, description = "plausible, umami, posthog or ga4"), KeyQuery),
    request_body(content = EventsBody, content_type = "application/json"),
    responses(
        (status = 202, body = Accepted), (status = 200, body = Accepted, description = "a repeat"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "idempotency_key used for another target"),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "too many events waiting to be stored (Retry-After: 1), or the database is unreachable")
    )
)]
async fn post_provider_events(
    State(state): State<AppState>,
    Target(target): Target,
    key: IngestKey,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let res = ingest_body(&state, &key, Some(target), &headers, body).await;
    key.answer(res.unwrap_or_else(IntoResponse::into_response))
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
    _: Target,
    ApiPath(path): ApiPath<ProviderEventsPath>,
    ApiQuery(q): ApiQuery<KeyQuery>,
    headers: HeaderMap,
) -> Response {
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
    Ok(Json(ingest::event_view(&state.db, caller.tenant.id, id, state.settings.delivery.retry_horizon()).await?))
}

pub(super) async fn preflight(
    state: &AppState,
    tenant: &str,
    key: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let origin = header_text(headers, header::ORIGIN.as_str())
        .ok_or_else(|| ApiError::Forbidden("a preflight needs an Origin header".into()))?;
    let tenant = state.config_cache.tenant(&state.db, tenant).await?.ok_or(ApiError::NotFound)?;
    let allowed = match key {
        Some(k) => tenant
            .authenticate(&state.db, k)
            .await?
            .is_some_and(|key| keys::kind_of(&key) == KeyKind::Public && keys::origin_allowed(&key, &origin)),
        None => tenant.any_public_key_allows(&origin),
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

/// The body, parsed into typed events (each batch item on its own: one bad item does not refuse
/// the others), and what became of each.
async fn ingest_body(
    state: &AppState,
    key: &IngestKey,
    provider: Option<&'static str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    check_json_content_type(headers)?;
    let bytes = body.map_err(super::extract::body_rejected)?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if let Some(input) = one_well_formed_event(&bytes) {
        return one_event(state, key, provider, input).await;
    }
    let crate::json::UniqueKeys(value) = parse_json_object(&bytes)?;
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
    let plan = async |item: Value, at: &str| -> Result<ingest::Prepared, Error> {
        if !item.is_object() {
            return Err(Error::Validation { field: Some(at.to_string()), message: "must be a JSON object".into() });
        }
        let input: EventInput = json::from_value(item, at)?;
        let planned = ingest::prepare(&state.db, &state.geo, &key.config, &key.sender, provider, input).await;
        planned.map_err(|e| e.at(at))
    };
    let Some(items) = batch else {
        let input: EventInput = json::from_value(value, "")?;
        return one_event(state, key, provider, input).await;
    };
    // Every valid item of the batch goes to the writer as one request's events (one commit, or
    // the backpressure 503 for the whole request); an invalid one is answered on its own.
    let mut results: Vec<Option<Result<Accepted, Error>>> = Vec::with_capacity(items.len());
    let mut planned = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match plan(item, &format!("batch[{index}]")).await {
            Ok(p) => {
                planned.push(p);
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let mut stored = state.ingest.submit(planned).await?.into_iter();
    let results: Vec<BatchItem> = results
        .into_iter()
        .enumerate()
        .map(|(index, result)| {
            let result = result.or_else(|| stored.next()).unwrap_or_else(|| {
                Err(Error::Internal(anyhow::anyhow!("the ingest writer answered fewer events than it was given")))
            });
            match result {
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
            }
        })
        .collect();
    // Nothing of the batch stored, and not for the client's fault (the database or the disk
    // failed it): the request as a whole failed, and says so — a 202 would tell a client that
    // checks only the status (the banner's tracker) to drop events it must send again. The same
    // idempotency keys make the retry safe.
    if results.iter().all(|r| r.status >= 400) && results.iter().any(|r| r.status >= 500) {
        let mut res = (StatusCode::SERVICE_UNAVAILABLE, Json(BatchResult { results })).into_response();
        res.headers_mut().insert(header::RETRY_AFTER, super::error::RETRY_AFTER_SECS.into());
        return Ok(res);
    }
    state.outbox.wake();
    Ok((StatusCode::ACCEPTED, Json(BatchResult { results })).into_response())
}

/// The common body — one event, well-formed — read straight into its type, without the
/// `serde_json::Value` and the field paths that only a refusal needs (the two passes were ~6 % of
/// the runtime threads' time under the benchmark's load, about a third of the handler's own).
/// `None` for anything else: a batch, a body with the NUL escape, any error — which then takes
/// the full path ([`parse_json_object`], [`json::from_value`]), whose answer names the field. What
/// this accepts, the full path reads the same way (a test compares them).
fn one_well_formed_event(bytes: &[u8]) -> Option<EventInput> {
    if !super::extract::opens_object(bytes) || super::extract::contains_nul_escape(bytes) {
        return None;
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let input = EventInput::deserialize(crate::json::ObjectsOnly(&mut *de)).ok()?;
    de.end().ok()?;
    Some(input)
}

/// One event, stored (or found a repeat): its answer.
async fn one_event(
    state: &AppState,
    key: &IngestKey,
    provider: Option<&'static str>,
    input: EventInput,
) -> ApiResult<Response> {
    let planned = ingest::prepare(&state.db, &state.geo, &key.config, &key.sender, provider, input)
        .await
        .map_err(|e| e.at(""))?;
    let accepted = state
        .ingest
        .submit(vec![planned])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the ingest writer answered nothing for an event")))??;
    state.outbox.wake();
    let status = if accepted.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(accepted)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short path for one event accepts only what the full path accepts, read the same way;
    /// everything else (a batch, a duplicate field, the NUL escape, a wrong type, trailing bytes)
    /// goes to the full path, whose refusal names the field.
    #[test]
    fn one_event_is_read_as_the_full_path_reads_it() {
        let full = |body: &str| -> Option<String> {
            let value: Value = parse_json_object(body.as_bytes()).ok()?;
            let input: EventInput = json::from_value(value, "").ok()?;
            Some(format!("{input:?}"))
        };
        let event = r#"{"event_name": "pageview", "page_url": "https://shop.example.com/a?utm_source=x",
            "visitor_id": "v-1", "anonymous_id": "v-1", "referrer": "", "title": "A ü \" title",
            "event_properties": {"plan": "pro", "n": 2.5, "tags": ["a"]}, "revenue": {"amount": "12.50", "currency": "EUR"},
            "occurred_at": null, "idempotency_key": "order-1", "screen": "1920x1080", "language": "sv-SE",
            "dnt": false, "ip": "203.0.113.9", "user_agent": "Mozilla/5.0"}"#;
        let fast = |body: &str| one_well_formed_event(body.as_bytes()).map(|e| format!("{e:?}"));
        assert!(fast(event).is_some(), "a well-formed event takes the short path");
        assert_eq!(fast(event), full(event));
        assert_eq!(
            fast(" {\"event_name\": \"a\", \"page_url\": \"https://x.example/\"}\n"),
            full(" {\"event_name\": \"a\", \"page_url\": \"https://x.example/\"}\n")
        );
        for body in [
            r#"{"batch": [{"event_name": "a", "page_url": "https://x.example/"}]}"#,
            r#"{"event_name": "a", "event_name": "b", "page_url": "https://x.example/"}"#,
            r#"{"event_name": "a\u0000", "page_url": "https://x.example/"}"#,
            r#"{"event_name": 1, "page_url": "https://x.example/"}"#,
            r#"{"event_name": "a", "page_url": "https://x.example/", "extra": 1}"#,
            r#"{"event_name": "a", "page_url": "https://x.example/"} x"#,
            r#"[{"event_name": "a", "page_url": "https://x.example/"}]"#,
        ] {
            assert_eq!(fast(body), None, "{body}");
        }
        // An array in the fields' order would be read as the event by serde; both paths refuse it.
        let positional = r#"["a", null, null, null, null, null, "https://x.example/", null, null, null, null, null, null,
            null, null, null, null, null, null, null]"#;
        assert!(serde_json::from_str::<EventInput>(positional).is_ok(), "serde reads it");
        assert_eq!(fast(positional), None);
        assert_eq!(full(positional), None);
    }

    #[test]
    fn the_documented_event_keeps_its_public_field_names() {
        let (_, doc) = crate::http::api().split_for_parts();
        let doc = serde_json::to_value(doc).unwrap();
        let event = &doc["components"]["schemas"]["EventInput"]["properties"];
        for name in ["event_name", "anonymous_id", "page_url", "referrer", "language", "country", "revenue", "ip"] {
            assert!(event.get(name).is_some(), "{name} in {event}");
        }
        assert!(event.get("consent_lookup_id").is_none(), "the code's name is not the wire's");
    }

    /// The stored event the API shows (`EventView`): the row's fields but its tenant, and the
    /// decisions, each documented under the name the response carries.
    #[test]
    fn the_documented_stored_event_has_the_response_fields() {
        let (_, doc) = crate::http::api().split_for_parts();
        let doc = serde_json::to_value(doc).unwrap();
        let schemas = &doc["components"]["schemas"];
        let mut names: Vec<String> = Vec::new();
        let mut collect = |schema: &serde_json::Value| {
            if let Some(p) = schema["properties"].as_object() {
                names.extend(p.keys().cloned());
            }
        };
        let view = &schemas["EventView"];
        collect(view);
        for part in view["allOf"].as_array().into_iter().flatten() {
            match part["$ref"].as_str() {
                Some(r) => collect(&schemas[r.trim_start_matches("#/components/schemas/")]),
                None => collect(part),
            }
        }
        names.sort();
        let mut want = [
            "id",
            "provider",
            "event_name",
            "event_properties",
            "user_id",
            "anonymous_id",
            "session_id",
            "page_url",
            "referrer",
            "title",
            "user_agent",
            "language",
            "screen",
            "revenue",
            "context",
            "occurred_at",
            "received_at",
            "ip_truncated",
            "country",
            "dnt",
            "gpc",
            "idempotency_key",
            "key_kind",
            "decisions",
        ];
        want.sort();
        assert_eq!(names, want, "{view}");
    }
}
