//! Extractors, so that a handler's signature says who may call it and what it receives:
//! `Admin` (an admin token of the tenant in the path), `Reader` (admin or auditor), `ApiJson`,
//! `ApiPath`, `ApiQuery` (whose rejections are JSON errors naming the field), and `Visitor`
//! (the request's client IP, user agent, DNT/GPC signals and country).

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request, rejection::PathRejection},
    http::{HeaderMap, header, request::Parts},
};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::{
    app::AppState,
    consent::Signals,
    geo::Location,
    ingest::event::VisitorFacts,
    tokens::{self, Role, TokenHolder},
};

/// A caller holding an admin token of the tenant named in the path.
pub struct Admin(pub TokenHolder);

/// A caller holding an admin or auditor token of the tenant named in the path.
pub struct Reader(pub TokenHolder);

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
async fn caller_for_path(parts: &mut Parts, state: &AppState) -> Result<TokenHolder, ApiError> {
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

/// `Query`, with a JSON 400 naming the parameter on bad input (`field: "limit"`).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de).map(ApiQuery).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // A parameter the endpoint does not know (its query type denies unknown fields): a
            // misspelt filter would otherwise widen the result silently.
            let field = crate::json::field_named(&path, &message, &["unknown"]);
            ApiError::BadRequest { message: format!("invalid query string: {message}"), field }
        })
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
        check_json_content_type(req.headers())?;
        let bytes = body_bytes(req, state).await?;
        parse_json_object(&bytes).map(ApiJson)
    }
}

/// An optional JSON body (`None` when the body is empty or only whitespace), with the same
/// rules as `ApiJson` otherwise: Content-Type, size limit, one well-formed value.
pub struct ApiJsonOrEmpty<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ApiJsonOrEmpty(None));
        }
        check_json_content_type(&headers)?;
        parse_json_object(&bytes).map(|v| ApiJsonOrEmpty(Some(v)))
    }
}

/// No body: for an irreversible operation that takes none (erasing a visitor), a request
/// carrying one — options the route does not have, e.g. a hoped-for dry run — is refused with a
/// 400 instead of being carried out as if the body were not there.
pub struct NoBody;

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(NoBody)
        } else {
            Err(ApiError::bad_request("body", "this route takes no request body"))
        }
    }
}

/// The request body within `DefaultBodyLimit`; over it, 413 in the API's error shape (axum's
/// own rejection is plain text).
pub async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(body_rejected)
}

/// A body that could not be read: `413` over the router's limit, `400` otherwise. Every handler
/// taking `Result<Bytes, BytesRejection>` maps its rejection here, so "too large" is one answer.
pub fn body_rejected(e: axum::extract::rejection::BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else {
        ApiError::BadRequest { field: None, message: e.body_text() }
    }
}

/// A JSON body may come as `application/json`, `*+json` or `text/plain` (or without a type).
pub fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or_default().trim();
    if mime == "application/json" || mime == "text/plain" || mime.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "expected Content-Type application/json or text/plain, found {mime}"
        )))
    }
}

/// Whether a JSON text is an object (its first non-blank byte opens one).
pub fn opens_object(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// [`parse_json`] for a body that must be a JSON object: every typed request body is one. A
/// well-formed body of another kind is a 422 naming `body` ("must be a JSON object", where serde
/// would name the Rust type it expected).
pub fn parse_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if !opens_object(bytes) {
        // Malformed JSON stays a 400 (from `parse_json`); well-formed, it is the wrong kind.
        parse_json::<serde::de::IgnoredAny>(bytes)?;
        return Err(ApiError::Unprocessable { field: Some("body".into()), message: "must be a JSON object".into() });
    }
    parse_json(bytes)
}

/// A JSON body as `T`, a struct anywhere in it only from a JSON object
/// ([`ObjectsOnly`](crate::json::ObjectsOnly)): a 400 for malformed JSON, a 422 naming the field
/// for a value of the wrong type.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // U+0000 is valid JSON but no database text type stores it (PostgreSQL refuses it), and no
    // legitimate field needs it: refuse it here, once, for every JSON body, naming the field.
    if contains_nul_escape(bytes) {
        let field = serde_json::from_slice::<serde_json::Value>(bytes).ok().and_then(|v| nul_path(&v, String::new()));
        return Err(ApiError::Unprocessable {
            field,
            message: "text must not contain the NUL character (U+0000)".into(),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(crate::json::ObjectsOnly(&mut *de)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_position(&inner.to_string());
        match inner.classify() {
            serde_json::error::Category::Data => {
                // A repeated key is refused at its object: the field is the key below it.
                let field = crate::json::field_named(&path, &message, &["duplicate"]);
                ApiError::Unprocessable { field, message }
            }
            _ => ApiError::BadRequest { field: None, message: format!("invalid JSON: {message}") },
        }
    })?;
    // One JSON value and nothing after it but whitespace: `{"a":1} xyz` is malformed, not `{"a":1}`.
    de.end().map_err(|e| ApiError::BadRequest {
        field: None,
        message: format!("invalid JSON: {}", strip_position(&e.to_string())),
    })?;
    Ok(value)
}

/// A `\u0000` escape outside an escaped backslash (raw NUL bytes are not valid JSON anyway).
pub(crate) fn contains_nul_escape(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i] == b'\\' {
            i += 1;
        }
        if (i - start) % 2 == 1 && b[i..].starts_with(b"u0000") {
            return true;
        }
    }
    false
}

/// The dotted path of the first string (or key) holding U+0000.
fn nul_path(v: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match v {
        Value::String(s) if s.contains('\0') => Some(if path.is_empty() { ".".into() } else { path }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, x)| nul_path(x, format!("{path}[{i}]"))),
        Value::Object(m) => {
            m.iter().find_map(|(k, x)| if k.contains('\0') { Some(join(k)) } else { nul_path(x, join(k)) })
        }
        _ => None,
    }
}

/// serde_json appends " at line 1 column 42"; the field path says more to an API client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// What the request says about the visitor behind it: the client IP (the configured proxy
/// header's entry the proxies wrote, when the peer is a trusted proxy; else the socket peer), user agent, `DNT`/`Sec-GPC`, the country (the
/// configured trusted header, else the GeoIP file; placeholders are unknown) and subdivision —
/// and the page it came from.
#[derive(Clone, Debug)]
pub struct Visitor {
    pub facts: VisitorFacts,
    /// The `Origin` header.
    pub origin: Option<String>,
}

impl std::ops::Deref for Visitor {
    type Target = VisitorFacts;

    fn deref(&self) -> &VisitorFacts {
        &self.facts
    }
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
        let server = &state.settings.server;
        let ip = match peer {
            Some(p) if !server.client_ip_header.is_empty() => match text(&server.client_ip_header) {
                Some(v) if crate::ip::is_trusted_proxy(p, &server.trusted_proxies) => {
                    crate::ip::forwarded_client(&v, server.client_ip_hops).or(peer)
                }
                Some(_) => {
                    metrics::counter!("consentgate_client_ip_header_ignored_total").increment(1);
                    peer
                }
                None => peer,
            },
            _ => peer,
        };
        let looked_up = ip.map(|ip| state.geo.lookup(ip)).unwrap_or_default();
        let Location { country, region } = crate::geo::locate(
            text(&state.settings.geo.country_header).as_deref(),
            text(&state.settings.geo.region_header).as_deref(),
            looked_up,
        );
        Ok(Visitor {
            facts: VisitorFacts {
                ip,
                user_agent: text("user-agent"),
                signals: Signals {
                    dnt: text("dnt").as_deref() == Some("1"),
                    gpc: text("sec-gpc").as_deref() == Some("1"),
                    country,
                    region,
                    bot: false,
                },
            },
            origin: text("origin"),
        })
    }
}
