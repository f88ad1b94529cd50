//! The HTTP surface. One module per resource, each exposing `router()`; this module merges them,
//! adds the cross-cutting layers and serves the OpenAPI document generated from the handlers'
//! annotations (so it cannot drift from the routes: `utoipa_axum::routes!` registers a handler
//! under the very path its annotation documents).

mod audit_log;
mod banner;
mod consent;
mod consent_configs;
mod consent_records;
mod deliveries;
pub mod error;
mod events;
pub mod extract;
mod flags;
mod health;
mod ingest_key;
mod ingest_keys;
mod openapi;
pub mod paging;
mod provider_configs;
pub mod serve;
mod tokens;

use std::sync::OnceLock;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderName, Request, header},
    response::IntoResponse,
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    classify::ServerErrorsFailureClass,
    compression::CompressionLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use self::error::ApiError;
use crate::app::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(OpenApi)]
#[openapi(
    info(title = "consentgate", description = "Consent management and analytics forwarding gateway"),
    modifiers(&BearerAuth),
    // Types the providers' hand-written input schemas refer to by name, so the `$ref`s resolve.
    components(schemas(
        error::ErrorBody,
        crate::outbox::log::DeliveryStatus,
        crate::providers::DomainPattern,
        crate::providers::InstanceUrl,
        crate::providers::plausible::SiteDomain,
        crate::providers::config::Usage,
    ))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Every route of the API, with its OpenAPI description.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(tokens::router())
        .merge(banner::router())
        .merge(audit_log::router())
        .merge(consent_configs::router())
        .merge(consent::router())
        .merge(consent_records::router())
        .merge(ingest_keys::router())
        .merge(events::router())
        .merge(flags::router())
        .merge(provider_configs::router())
        .merge(deliveries::router())
        .routes(routes!(openapi_json))
}

/// The OpenAPI 3.1 document, rendered once.
pub fn openapi_document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, mut doc) = api().split_for_parts();
        openapi::finish(&mut doc);
        let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document serialises");
        openapi::flatten_provider_input(&mut doc);
        openapi::open_provider_view(&mut doc);
        openapi::forbid_nul_in_url_parameters(&mut doc);
        serde_json::to_string_pretty(&doc).expect("the OpenAPI document serialises")
    })
}

/// This document: every route of the API.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", responses((status = 200, content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_document())
}

pub fn router(state: AppState) -> Router {
    let (router, _) = api().split_for_parts();
    let max_body = state.settings.server.max_body_bytes;
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(refuse_nul_in_uri))
        .layer(CompressionLayer::new())
        .layer(CatchPanicLayer::custom(|_| ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                .on_failure(log_failure),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// A failed response, logged at ERROR — except 503s: while the database is down every request
/// fails alike, and `error::from_db` already logs that once per period instead of per request.
fn log_failure(class: ServerErrorsFailureClass, latency: std::time::Duration, _span: &tracing::Span) {
    if matches!(class, ServerErrorsFailureClass::StatusCode(s) if s == axum::http::StatusCode::SERVICE_UNAVAILABLE) {
        return;
    }
    tracing::error!(classification = %class, ?latency, "response failed");
}

/// `%00` decodes to U+0000, which no database text type stores: refuse it in paths and query
/// strings before any handler sees it (JSON bodies are checked in `extract::parse_json`).
async fn refuse_nul_in_uri(req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let has_nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    if has_nul(req.uri().path()) || req.uri().query().is_some_and(has_nul) {
        return ApiError::BadRequest { field: None, message: "the URL must not contain %00 (NUL)".into() }
            .into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
