//! The domain layer's error: what went wrong, in terms a caller can act on. The HTTP layer maps
//! it to a status code once, in `http::error`.

use sea_orm::DbErr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks a rule; `field` names the offending field (dotted path) when there is one.
    #[error("{message}")]
    Validation { field: Option<String>, message: String },
    #[error("not found")]
    NotFound,
    /// The request is valid but conflicts with the current state (an illegal status transition,
    /// a stale revision, a duplicate name).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// Too much is waiting already (the ingest queue is full): try again in a moment. 503 with a
    /// short `Retry-After`.
    #[error("{0}")]
    Busy(String),
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation { field: Some(field.into()), message: message.into() }
    }

    /// The error with its field named below `prefix` (`batch[2]` and `page_url`:
    /// `batch[2].page_url`).
    pub fn at(self, prefix: &str) -> Self {
        match self {
            Error::Validation { field, message } => {
                Error::Validation { field: crate::json::join(prefix, field.as_deref().unwrap_or_default()), message }
            }
            other => other,
        }
    }

    /// One error for several rejected fields: `field` names the first (by path), the message
    /// names every one (`banner.primary_color: …; consent_expiry_days: …`), so a client fixes
    /// all of them in one round trip.
    pub fn from_problems(mut problems: Vec<(String, String)>) -> Self {
        problems.sort();
        problems.dedup();
        match problems.len() {
            0 => Error::Validation { field: None, message: "invalid input".into() },
            1 => {
                let (field, message) = problems.remove(0);
                Error::Validation { field: (!field.is_empty()).then_some(field), message }
            }
            _ => Error::Validation {
                field: Some(problems[0].0.clone()),
                message: problems.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join("; "),
            },
        }
    }
}

/// Every failing field of `errors` as (dotted path below `prefix`, message).
pub fn validation_problems(errors: &validator::ValidationErrors, prefix: &str) -> Vec<(String, String)> {
    use validator::ValidationErrorsKind as K;
    let mut out = Vec::new();
    for (name, kind) in errors.errors() {
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        match kind {
            K::Field(list) => out.extend(list.iter().map(|e| {
                (path.clone(), e.message.as_ref().map(|m| m.to_string()).unwrap_or_else(|| describe_rule(e)))
            })),
            K::Struct(inner) => out.extend(validation_problems(inner, &path)),
            K::List(items) => {
                for (i, inner) in items {
                    out.extend(validation_problems(inner, &format!("{path}[{i}]")));
                }
            }
        }
    }
    out.sort();
    out
}

/// Validation failures from `validator` derive, reported by the first offending field. Nested
/// structs and lists give dotted paths (`banner.primary_color`, `batch[2].event_name`).
impl From<validator::ValidationErrors> for Error {
    fn from(errors: validator::ValidationErrors) -> Self {
        let (field, message) =
            first_validation_error(&errors, String::new()).unwrap_or_else(|| (String::new(), "invalid input".into()));
        Error::Validation { field: (!field.is_empty()).then_some(field), message }
    }
}

fn first_validation_error(errors: &validator::ValidationErrors, prefix: String) -> Option<(String, String)> {
    use validator::ValidationErrorsKind as K;
    let mut fields: Vec<_> = errors.errors().iter().collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    for (name, kind) in fields {
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        match kind {
            K::Field(list) => {
                if let Some(e) = list.first() {
                    let message = e.message.as_ref().map(|m| m.to_string()).unwrap_or_else(|| describe_rule(e));
                    return Some((path, message));
                }
            }
            K::Struct(inner) => return first_validation_error(inner, path),
            K::List(items) => {
                if let Some((i, inner)) = items.iter().next() {
                    return first_validation_error(inner, format!("{path}[{i}]"));
                }
            }
        }
    }
    None
}

fn describe_rule(e: &validator::ValidationError) -> String {
    let param = |k: &str| e.params.get(k).map(|v| v.to_string());
    match e.code.as_ref() {
        "length" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("must be {min} to {max} characters long"),
            (None, Some(max)) => format!("must be at most {max} characters long"),
            (Some(min), None) => format!("must be at least {min} characters long"),
            _ => "has an invalid length".into(),
        },
        "range" => match (param("min"), param("max")) {
            (Some(min), Some(max)) => format!("must be between {min} and {max}"),
            (None, Some(max)) => format!("must be at most {max}"),
            (Some(min), None) => format!("must be at least {min}"),
            _ => "is out of range".into(),
        },
        "url" => "must be a valid URL".into(),
        "email" => "must be a valid email address".into(),
        code => format!("fails the rule `{code}`"),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
