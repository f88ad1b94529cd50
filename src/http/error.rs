//! The HTTP layer's error. Every client mistake becomes a 4xx with the JSON body
//! `{"error": {"code", "message", "field"}}`; server faults become a 500 whose body says nothing
//! about internals (the details go to the log, with the request id).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { field: Option<String>, message: String },
    #[error("{message}")]
    Unprocessable { field: Option<String>, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 429 with `Retry-After` (set by the caller); the message says which limit.
    #[error("{0}")]
    RateLimited(String),
    /// The gateway cannot serve now (the database is unreachable, migrations pending): 503 with
    /// `Retry-After`.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// Too much is waiting to be stored (the ingest queue is full): 503 with `Retry-After: 1`,
    /// answered at once.
    #[error("{0}")]
    Busy(String),
    /// A provider the request needed refused, failed or did not answer in time (502).
    #[error("{0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// The error body, as documented in the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `validation_failed`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, …
    pub code: &'static str,
    pub message: String,
    /// The offending field as a dotted path, when one field is to blame.
    pub field: Option<String>,
}

impl ApiError {
    pub fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest { field: Some(field.into()), message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Unprocessable { .. } => "validation_failed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Unavailable(_) | ApiError::Busy(_) => "unavailable",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The body a client sees. Internal errors are not described to the client.
    pub fn body(&self) -> ErrorBody {
        let field = match self {
            ApiError::BadRequest { field, .. } | ApiError::Unprocessable { field, .. } => field.clone(),
            _ => None,
        };
        ErrorBody { error: ErrorDetail { code: self.code(), message: self.to_string(), field } }
    }
}

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECS: u32 = 5;
/// Seconds a client is asked to wait after a 503 for a full ingest queue: a queue drains in well
/// under a second.
pub const BUSY_RETRY_AFTER_SECS: u32 = 1;

/// One log line per this period while the database is unreachable, however many requests fail.
static UNAVAILABLE_LOG: crate::telemetry::LogThrottle =
    crate::telemetry::LogThrottle::new(std::time::Duration::from_secs(10));

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A 503 was logged (throttled) where its cause was recognised, in `from_db`.
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = ?e, "request failed");
        }
        let retry = match self {
            ApiError::Unavailable(_) => Some(RETRY_AFTER_SECS),
            ApiError::Busy(_) => Some(BUSY_RETRY_AFTER_SECS),
            _ => None,
        };
        let mut res = (self.status(), Json(self.body())).into_response();
        if let Some(secs) = retry {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

/// A database error becomes 503 when the database cannot be reached (the message names no
/// internals; the cause goes to the throttled log line), else 500. This is the one place where
/// connection failures are recognised for the HTTP layer.
fn from_db(e: sea_orm::DbErr) -> ApiError {
    if crate::db::is_unavailable(&e) {
        if let Some(suppressed) = UNAVAILABLE_LOG.allow() {
            tracing::error!(error = %e, suppressed, "the database is unreachable; answering 503");
        }
        ApiError::Unavailable("the database is unreachable; retry later".into())
    } else {
        ApiError::Internal(e.into())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Validation { field, message } => ApiError::Unprocessable { field, message },
            Error::NotFound => ApiError::NotFound,
            Error::Conflict(m) => ApiError::Conflict(m),
            Error::Forbidden(m) => ApiError::Forbidden(m),
            Error::Busy(m) => ApiError::Busy(m),
            Error::Db(e) => from_db(e),
            Error::Internal(e) => match e.downcast::<sea_orm::DbErr>() {
                Ok(db) => from_db(db),
                Err(e) => ApiError::Internal(e),
            },
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        from_db(e)
    }
}

impl From<validator::ValidationErrors> for ApiError {
    fn from(e: validator::ValidationErrors) -> Self {
        Error::from(e).into()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
