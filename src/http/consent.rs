//! `/v1/tenants/{tenant}/consent`: the public consent routes the banner (and sites' servers)
//! call — record a decision, read a visitor's state, withdraw.
//!
//! No token: anyone may call them, so three things guard them.
//! - CORS limited to the published config's `allowed_origins`. A request carrying an `Origin`
//!   that is not allowed is refused with 403 (not merely left without CORS headers), so a
//!   foreign page cannot write records in the tenant's name even with a "simple" request that
//!   skips the preflight. Requests without `Origin` (server-side callers) are allowed.
//! - A per-client rate limit on writes (`consent.writes_per_minute_per_ip`).
//! - Strict input: visitor ids are UUIDs or short safe tokens; a revision that is not the active
//!   one is refused (409), so a record always names what the visitor was shown.

use std::{net::IpAddr, sync::Arc};

use axum::{
    Extension, Json,
    extract::{FromRequestParts, RawPathParams, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath, Visitor},
};
use crate::{
    app::AppState,
    consent::{
        Action, Choices,
        config::store,
        records::VisitorId,
        visitors::{self, Context, Recorded, Submission, VisitorState},
    },
    origins,
    rate_limit::RateLimiter,
    tenants,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(record_consent, consent_preflight))
        .routes(routes!(visitor_state, withdraw_consent, visitor_preflight))
        .layer(Extension(Arc::new(ConsentWriteLimiter::default())))
}

#[derive(Deserialize)]
pub struct VisitorPath {
    #[allow(dead_code)]
    tenant: String,
    visitor_id: String,
}

/// A decision. Unknown fields are ignored, so an older gateway accepts a newer banner's posts.
#[derive(Deserialize, ToSchema)]
pub struct NewConsent {
    /// The visitor's id; a new UUIDv4 is issued (and set as the `cg_vid` cookie) when absent.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._~-]{1,64}$")]
    visitor_id: Option<VisitorId>,
    #[schema(value_type = String, example = "custom", pattern = "^(accept_all|reject_all|custom|withdraw)$")]
    action: Action,
    /// Needed only for `custom`: `{"functional": bool, "analytics": bool, "marketing": bool}`.
    #[schema(value_type = Option<Object>)]
    choices: Option<Choices>,
    /// The config revision the visitor was shown (from the banner config). Not needed to withdraw.
    revision: Option<i32>,
    /// The cookie consent config the visitor was shown (`config_id` of the banner config): a
    /// revision number is counted per config, so without it a banner of another config could pass
    /// for the active one. A choice granting anything under another config is refused (409); so
    /// is one without it whose revision number another config of the tenant has too.
    config_id: Option<uuid::Uuid>,
    /// The language the banner was shown in.
    language: Option<String>,
    /// `banner` (default from browsers), `api` (default otherwise), or a short label of your own.
    source: Option<String>,
    /// Per-provider switches the banner showed, when the config offers per-provider choices:
    /// provider config id → on. Recorded for `custom`; `accept_all` turns every shown one on,
    /// `reject_all` and `withdraw` off. Ignored when the config does not offer them.
    #[schema(value_type = Option<std::collections::BTreeMap<String, bool>>)]
    providers: Option<std::collections::BTreeMap<uuid::Uuid, bool>>,
}

/// The tenant, the request's visitor and the CORS verdict of one public request. As an
/// extractor it refuses an unknown tenant (404) and a disallowed `Origin` (403) before the
/// handler runs.
struct Gate {
    tenant: entity::tenant::Model,
    visitor: Visitor,
    /// The allowed `Origin`, echoed in `Access-Control-Allow-Origin`.
    origin: Option<String>,
}

impl FromRequestParts<AppState> for Gate {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state).await.map_err(|_| ApiError::NotFound)?;
        let slug = params.iter().find(|(k, _)| *k == "tenant").map(|(_, v)| v.to_string()).ok_or(ApiError::NotFound)?;
        let visitor = Visitor::from_request_parts(parts, state).await?;
        let tenant = tenants::find(&state.db, &slug).await?.ok_or(ApiError::NotFound)?;
        let Some(origin) = visitor.origin.clone() else { return Ok(Gate { tenant, visitor, origin: None }) };
        let allowed = match store::current(&state.db, tenant.id).await? {
            Some(p) => origins::allowed(&p.spec.allowed_origins, &origin),
            None => false,
        };
        if !allowed {
            return Err(ApiError::Forbidden(format!(
                "origin {origin} is not in the allowed origins of this tenant's cookie consent config"
            )));
        }
        Ok(Gate { tenant, visitor, origin: Some(origin) })
    }
}

impl Gate {
    /// Adds the CORS headers to whatever the handler answered, errors included, so the banner
    /// can read a 409 or 422.
    fn respond(&self, result: ApiResult<Response>) -> Response {
        let mut res = result.unwrap_or_else(IntoResponse::into_response);
        cors_headers(res.headers_mut(), self.origin.as_deref());
        res
    }
}

fn cors_headers(h: &mut HeaderMap, origin: Option<&str>) {
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(v) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
}

/// Consent writes per tenant and client (an IPv6 client is its /64).
type ConsentWriteLimiter = RateLimiter<(uuid::Uuid, IpAddr)>;

/// `Some(429 response with Retry-After)` when the client has used up its write budget.
fn rate_limited(state: &AppState, limiter: &ConsentWriteLimiter, gate: &Gate) -> Option<Response> {
    let client = crate::ip::client_key(gate.visitor.ip?);
    let wait = limiter.check((gate.tenant.id, client), state.settings.consent.writes_per_minute_per_ip).err()?;
    let mut res = ApiError::RateLimited("too many consent writes from this address".into()).into_response();
    let secs = wait.as_secs() + 1;
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    Some(res)
}

fn context(visitor: &Visitor) -> Context {
    Context {
        dnt: visitor.signals.dnt,
        gpc: visitor.signals.gpc,
        country: visitor.signals.country.clone(),
        ip: visitor.ip,
        user_agent: visitor.user_agent.clone(),
        from_browser: visitor.origin.is_some(),
    }
}

/// The `cg_vid` cookie of the request, if it holds a valid visitor id.
fn cookie_visitor(headers: &HeaderMap) -> Option<VisitorId> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("cg_vid="))
        .find_map(|v| VisitorId::parse(v).ok())
}

/// 201 with the record and the visitor cookie (`HttpOnly`: scripts have the id in the banner's
/// own storage). It is first-party, and reaches the site's server, only when the gateway is
/// served under the site's origin; cross-origin the browser does not keep it, and the site's
/// server reads the id from the banner's `cg_consent` cookie instead (banner/README.md).
fn created(r: Recorded) -> Response {
    let cookie = format!(
        "cg_vid={}; Path=/; Max-Age={}; Secure; HttpOnly; SameSite=Lax",
        r.visitor_id,
        u64::from(r.expiry_days) * 86_400
    );
    let mut res = (StatusCode::CREATED, Json(r)).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// Record a visitor's decision (accept all, reject all, custom, withdraw). Content-Type
/// `application/json` or `text/plain` (the banner posts without a preflight).
#[utoipa::path(
    post, path = "/v1/tenants/{tenant}/consent", tag = "consent",
    params(("tenant" = String, Path)), request_body = NewConsent,
    responses(
        (status = 201, body = Recorded, headers(("set-cookie" = String, description = "cg_vid=<visitor>; Path=/; Max-Age=…; Secure; HttpOnly; SameSite=Lax"))),
        (status = 403, body = ErrorBody, description = "Origin not allowed"),
        (status = 409, body = ErrorBody, description = "Not the active revision, or no active config"),
        (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)
    )
)]
async fn record_consent(
    State(state): State<AppState>,
    Extension(limiter): Extension<Arc<ConsentWriteLimiter>>,
    gate: Gate,
    headers: HeaderMap,
    body: Result<ApiJson<NewConsent>, ApiError>,
) -> Response {
    let visitor = &gate.visitor;
    let result = async {
        if let Some(res) = rate_limited(&state, &limiter, &gate) {
            return Ok(res);
        }
        let ApiJson(body) = body?;
        let submission = Submission {
            visitor: body.visitor_id.or_else(|| cookie_visitor(&headers)),
            action: body.action,
            choices: body.choices,
            revision: body.revision,
            config_id: body.config_id,
            language: body.language,
            source: body.source,
            providers: body.providers,
        };
        let recorded = visitors::submit(&state.db, &gate.tenant, submission, context(visitor)).await?;
        Ok(created(recorded))
    }
    .await;
    gate.respond(result)
}

/// A visitor's current consent state: whether the banner must ask, and what is granted.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/consent/{visitor_id}", tag = "consent",
    params(("tenant" = String, Path), ("visitor_id" = String, Path)),
    responses((status = 200, body = VisitorState), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody))
)]
async fn visitor_state(
    State(state): State<AppState>,
    gate: Gate,
    ApiPath(VisitorPath { visitor_id, .. }): ApiPath<VisitorPath>,
) -> Response {
    let visitor = &gate.visitor;
    let result = async {
        let id = VisitorId::parse(&visitor_id).map_err(|m| ApiError::bad_request("visitor_id", m))?;
        let s = visitors::state(&state.db, &gate.tenant, &id, &visitor.signals, Utc::now()).await?;
        let mut res = Json(s).into_response();
        res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(res)
    }
    .await;
    gate.respond(result)
}

/// Withdraw the visitor's consent: a new record with every optional category refused (GDPR
/// Art. 7(3): withdrawing is as easy as giving). Accepted whatever revision the visitor saw.
#[utoipa::path(
    delete, path = "/v1/tenants/{tenant}/consent/{visitor_id}", tag = "consent",
    params(("tenant" = String, Path), ("visitor_id" = String, Path)),
    responses(
        (status = 201, body = Recorded), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the tenant has no active cookie consent config"),
        (status = 429, body = ErrorBody)
    )
)]
async fn withdraw_consent(
    State(state): State<AppState>,
    Extension(limiter): Extension<Arc<ConsentWriteLimiter>>,
    gate: Gate,
    ApiPath(VisitorPath { visitor_id, .. }): ApiPath<VisitorPath>,
) -> Response {
    let visitor = &gate.visitor;
    let result = async {
        let id = VisitorId::parse(&visitor_id).map_err(|m| ApiError::bad_request("visitor_id", m))?;
        if let Some(res) = rate_limited(&state, &limiter, &gate) {
            return Ok(res);
        }
        let submission = Submission {
            visitor: Some(id),
            action: Action::Withdraw,
            choices: None,
            revision: None,
            config_id: None,
            language: None,
            source: None,
            providers: None,
        };
        Ok(created(visitors::submit(&state.db, &gate.tenant, submission, context(visitor)).await?))
    }
    .await;
    gate.respond(result)
}

/// Answers a CORS preflight: 204 with the allowed methods and headers for an allowed origin
/// (a disallowed one never gets here: the gate answers 403).
fn preflight(gate: &Gate, methods: &'static str) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    h.insert(header::ALLOW, HeaderValue::from_static(methods));
    cors_headers(h, gate.origin.as_deref());
    res
}

/// CORS preflight for recording a decision.
#[utoipa::path(
    options, path = "/v1/tenants/{tenant}/consent", tag = "consent",
    params(("tenant" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody))
)]
async fn consent_preflight(gate: Gate) -> Response {
    preflight(&gate, "POST, OPTIONS")
}

/// CORS preflight for reading a visitor's state and withdrawing.
#[utoipa::path(
    options, path = "/v1/tenants/{tenant}/consent/{visitor_id}", tag = "consent",
    params(("tenant" = String, Path), ("visitor_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody))
)]
async fn visitor_preflight(gate: Gate) -> Response {
    preflight(&gate, "GET, DELETE, OPTIONS")
}
