//! `GET /v1/tenants/{tenant}/banner.js`: the consent banner, rendered from the tenant's active
//! cookie consent config; and `GET /demo`: a demo page for the `demo` tenant.

use axum::{
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::{ApiError, ApiResult},
    extract::ApiPath,
};
use crate::{app::AppState, banner, consent::config::store, demo, tenants};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(banner_js)).routes(routes!(demo_page))
}

#[derive(Deserialize)]
pub struct TenantPath {
    tenant: String,
}

/// Short freshness so a published revision reaches visitors within minutes; after that the
/// browser revalidates with `If-None-Match` (a 304 costs a round trip, not the script), and
/// `stale-while-revalidate` lets it use the old copy while it does.
const CACHE_CONTROL: &str = "public, max-age=300, stale-while-revalidate=86400";

/// The consent banner script for a site: `<script src=".../banner.js" data-key="pk_…" async>`.
#[utoipa::path(
    get, path = "/v1/tenants/{tenant}/banner.js", tag = "banner",
    params(("tenant" = String, Path)),
    responses(
        (status = 200, content_type = "application/javascript", description = "The banner script"),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 404, body = super::error::ErrorBody, description = "No such tenant, or no active consent config")
    )
)]
async fn banner_js(
    State(state): State<AppState>,
    ApiPath(TenantPath { tenant }): ApiPath<TenantPath>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let tenant = tenants::find(&state.db, &tenant).await?.ok_or(ApiError::NotFound)?;
    let (config_id, revision) = store::active_revision(&state.db, tenant.id).await?.ok_or(ApiError::NotFound)?;
    // The per-provider offer and feature flags come from the provider configs, which change
    // without a new revision: they are part of the cache key.
    let providers = crate::providers::config::forwarding_targets(&state.db, tenant.id, None).await?;
    let provider_key = banner::provider_key(&providers);
    let rendered = match state.banners.get(config_id, i64::from(revision), &provider_key) {
        Some(hit) => hit,
        None => {
            let (config, variant) =
                store::active_banner_config(&state.db, tenant.id, &providers).await?.ok_or(ApiError::NotFound)?;
            // Brotli at quality 11 takes a moment: off the async workers, once per revision.
            let (config, rendered) = tokio::task::spawn_blocking(move || {
                let rendered = banner::render_variant(&config, variant);
                (config, rendered)
            })
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
            let rendered = rendered.map_err(|e| ApiError::Internal(e.into()))?;
            state.banners.put(&config, &provider_key, rendered)
        }
    };
    // Compressed here, not by the compression layer (which leaves a response with a
    // Content-Encoding alone): the bytes are the same every time, and each encoding has its own
    // ETag, so a 304 always answers for the representation this request would get.
    let encoding =
        banner::Encoding::negotiate(headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()));
    let (bytes, etag) = rendered.representation(encoding);
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.into()))?;
    let mut response = if etag_matches(&headers, &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = bytes.to_vec().into_response();
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/javascript; charset=utf-8"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if let Some(coding) = encoding.header_value() {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        r
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, etag_value);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    Ok(response)
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored, a list
/// matches when any entry does, `*` matches anything.
fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag))
}

/// A demo page with the banner and two scripts marked with consent categories (`serve --demo`).
#[utoipa::path(get, path = "/demo", tag = "banner", responses((status = 200, content_type = "text/html"), (status = 404, body = super::error::ErrorBody)))]
async fn demo_page(State(state): State<AppState>) -> ApiResult<Html<String>> {
    let page = demo::page(&state).await?.ok_or(ApiError::NotFound)?;
    Ok(Html(page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, v.parse().unwrap());
            h
        };
        assert!(etag_matches(&with("\"abc\""), "\"abc\""));
        assert!(etag_matches(&with("W/\"abc\""), "\"abc\""));
        assert!(etag_matches(&with("\"x\", \"abc\""), "\"abc\""));
        assert!(etag_matches(&with("*"), "\"abc\""));
        assert!(!etag_matches(&with("\"abd\""), "\"abc\""));
        assert!(!etag_matches(&HeaderMap::new(), "\"abc\""));
    }
}
