//! Extractors, so that a handler's signature says who may call it and what it receives:
//! `Admin` (an admin token of the tenant in the path), `Reader` (admin or auditor), `ApiJson`,
//! `ApiPath`, `ApiQuery` (whose rejections are JSON errors naming the field), and `Visitor`
//! (the request's client IP, user agent, DNT/GPC signals and country).

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Bytes,
    extract::{
        ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request,
        rejection::{PathRejection, QueryRejection},
    },
    http::{HeaderMap, header, request::Parts},
};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::{
    app::AppState,
    tokens::{self, Caller, Role},
};

/// A caller holding an admin token of the tenant named in the path.
pub struct Admin(pub Caller);

/// A caller holding an admin or auditor token of the tenant named in the path.
pub struct Reader(pub Caller);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = caller_for_path(parts, state).await?;
        if caller.role != Role::Admin {
            return Err(ApiError::Forbidden("this token may only read; an admin token is required".into()));
        }
        Ok(Admin(caller))
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(Reader(caller_for_path(parts, state).await?))
    }
}

pub fn bearer(headers: &HeaderMap) -> Option<SecretString> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| SecretString::from(token.trim().to_string()))
}

/// Authenticates the bearer token and checks that it belongs to the tenant in the path. A token
/// of another tenant gets 404, exactly like a tenant that does not exist, so tokens cannot be
/// used to learn which tenants exist.
async fn caller_for_path(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
    let token = bearer(&parts.headers).ok_or_else(|| ApiError::Unauthorized("missing bearer token".into()))?;
    let caller = tokens::authenticate(&state.db, &token)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("invalid or revoked token".into()))?;
    let params = RawPathParams::from_request_parts(parts, state).await.map_err(|_| ApiError::NotFound)?;
    let slug = params.iter().find(|(k, _)| *k == "tenant").map(|(_, v)| v).ok_or(ApiError::NotFound)?;
    if slug != caller.tenant.slug {
        return Err(ApiError::NotFound);
    }
    Ok(caller)
}

/// `Path`, with a JSON 400 naming the parameter on bad input.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest { field: None, message: format!("invalid path: {}", e.body_text()) }
    }
}

/// `Query`, with a JSON 400 naming the parameter on bad input.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::BadRequest { field: None, message: e.body_text() }
    }
}

/// A JSON body. `application/json` and `text/plain` are both accepted (browsers send
/// `text/plain` from `navigator.sendBeacon` and from fetches that avoid a CORS preflight).
/// A type mismatch names the field (`banner.primary_color: invalid type …`) with 422;
/// malformed JSON is a 400; a body over the limit a 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            let mime = ct.split(';').next().unwrap_or_default().trim();
            let json_like = mime == "application/json" || mime == "text/plain" || mime.ends_with("+json");
            if !json_like {
                return Err(ApiError::UnsupportedMediaType(format!(
                    "expected Content-Type application/json, found {mime}"
                )));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest { field: None, message: e.body_text() }
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_position(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::Unprocessable { field: (path != ".").then_some(path), message }
            }
            _ => ApiError::BadRequest { field: None, message: format!("invalid JSON: {message}") },
        }
    })
}

/// serde_json appends " at line 1 column 42"; the field path says more to an API client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// What the request says about the visitor behind it.
#[derive(Clone, Debug)]
pub struct Visitor {
    /// The client IP: the configured proxy header's first entry, else the socket peer.
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// `DNT: 1`.
    pub dnt: bool,
    /// `Sec-GPC: 1`.
    pub gpc: bool,
    /// ISO 3166-1 alpha-2 country, upper-case: the configured trusted header, else the GeoIP file.
    pub country: Option<String>,
    /// ISO 3166-2 subdivision from the configured trusted header (e.g. `US-CA`).
    pub region: Option<String>,
    /// The `Origin` header.
    pub origin: Option<String>,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let headers = &parts.headers;
        let text = |name: &str| -> Option<String> {
            if name.is_empty() {
                return None;
            }
            headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty()).map(String::from)
        };
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let ip_header = &state.settings.server.client_ip_header;
        let ip = if ip_header.is_empty() {
            peer
        } else {
            text(ip_header).and_then(|v| v.split(',').next().and_then(|s| s.trim().parse().ok())).or(peer)
        };
        let looked_up = ip.map(|ip| state.geo.lookup(ip)).unwrap_or_default();
        let country = text(&state.settings.geo.country_header)
            .map(|c| c.to_ascii_uppercase())
            // Placeholders such as Cloudflare's `XX` (unknown) and `T1` (Tor) are not countries:
            // they must count as unknown, which is consent-required, not as "outside the list".
            .filter(|c| crate::consent::regions::is_country(c))
            .or(looked_up.country.clone());
        let region = text(&state.settings.geo.region_header).and_then(|r| {
            let r = r.to_ascii_uppercase();
            match (&country, r.contains('-')) {
                (_, true) => Some(r),
                (Some(c), false) => Some(format!("{c}-{r}")),
                (None, false) => None,
            }
        });
        // A subdivision from the database only counts with the country it belongs to.
        let region = region.or(looked_up.region.filter(|r| country.as_deref().is_some_and(|c| r.starts_with(c))));
        Ok(Visitor {
            ip,
            user_agent: text("user-agent"),
            dnt: text("dnt").as_deref() == Some("1"),
            gpc: text("sec-gpc").as_deref() == Some("1"),
            country,
            region,
            origin: text("origin"),
        })
    }
}
