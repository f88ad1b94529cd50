//! [`IngestKey`]: the extractor that says who may post events. A public key (`?key=` or
//! `X-Ingest-Key`) from a page of one of its allowed origins, or a secret key
//! (`Authorization: Bearer sk_…`) from a server; within the rate limits that apply to it (the
//! key's, the client address's for public keys, the tenant's: [`crate::rate_limit`]). A handler
//! that takes an `IngestKey` runs only for such a caller, and knows who sent the event
//! ([`Sender`]).

use std::sync::Arc;

use axum::{
    extract::{FromRequestParts, RawPathParams},
    http::{HeaderMap, HeaderValue, header, request::Parts},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{
    error::{ApiError, ApiResult},
    extract::{ApiQuery, Visitor, bearer},
};
use crate::{
    app::AppState,
    cache::TenantConfig,
    ingest::{
        event::Sender,
        keys::{self, KeyKind},
    },
    rate_limit,
};

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// A public ingest key (`pk_…`), for browsers that cannot set headers (`sendBeacon`).
    pub key: Option<String>,
}

/// A caller holding a live ingest key of the tenant in the path.
pub struct IngestKey {
    pub tenant: entity::tenant::Model,
    /// The tenant's cached configuration (docs/caching.md), for the event's decisions.
    pub config: Arc<TenantConfig>,
    pub sender: Sender,
    /// A browser's allowed `Origin`. Every answer to it carries CORS headers, so that the page can
    /// read even a refusal.
    pub origin: Option<String>,
}

impl IngestKey {
    /// `res` with the CORS headers this caller's page needs to read it.
    pub fn answer(&self, mut res: Response) -> Response {
        if let Some(o) = &self.origin {
            set_cors(res.headers_mut(), o);
        }
        res
    }
}

/// Rejections are complete responses: a rate-limited browser gets CORS headers and
/// `Retry-After`.
impl FromRequestParts<AppState> for IngestKey {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let ApiQuery(KeyQuery { key: query_key }) =
            ApiQuery::<KeyQuery>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let visitor = Visitor::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let params =
            RawPathParams::from_request_parts(parts, state).await.map_err(|_| ApiError::NotFound.into_response())?;
        let slug = params.iter().find(|(k, _)| *k == "tenant").map(|(_, v)| v.to_string());
        let slug = slug.ok_or_else(|| ApiError::NotFound.into_response())?;
        let (config, key, origin) = authenticate(state, &slug, query_key, &visitor, &parts.headers)
            .await
            .map_err(IntoResponse::into_response)?;
        let client_ip = visitor.ip;
        let caller = IngestKey {
            tenant: config.tenant.clone(),
            config,
            sender: match keys::kind_of(&key) {
                KeyKind::Public => Sender::Browser(visitor.facts),
                KeyKind::Secret => Sender::Server,
            },
            origin,
        };
        let checks = rate_limit::ingest_checks(
            &state.settings.rate_limit,
            caller.tenant.id,
            key.id,
            key.rate_limit_per_minute,
            keys::kind_of(&key),
            client_ip,
        );
        if let Err(refused) = state.ingest_limits.check(&checks).await {
            metrics::counter!("consentgate_rate_limited_total", "scope" => refused.scope).increment(1);
            let message = format!("rate limit of this {} reached", refused.scope.replace('_', " "));
            let mut res = caller.answer(ApiError::RateLimited(message).into_response());
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(refused.retry_after_secs()));
            return Err(res);
        }
        Ok(caller)
    }
}

/// The tenant (its cached configuration), the live key presented for it, and (public keys) the
/// allowed origin. Reads nothing from the database while the cache is fresh.
async fn authenticate(
    state: &AppState,
    tenant: &str,
    query_key: Option<String>,
    visitor: &Visitor,
    headers: &HeaderMap,
) -> ApiResult<(Arc<TenantConfig>, entity::ingest_key::Model, Option<String>)> {
    let tenant = state.config_cache.tenant(&state.db, tenant).await?.ok_or(ApiError::NotFound)?;
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
    let key = tenant
        .authenticate(&state.db, &presented)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid or revoked ingest key".into()))?;
    let origin = match keys::kind_of(&key) {
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

pub(super) fn set_cors(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

pub(super) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(String::from)
}
