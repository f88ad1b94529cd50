//! `POST …/configs/{id}/check`: each reference of a config resolved now (bypassing the cache, so a
//! rotated value shows at once), and — where the provider offers one — one harmless authenticated
//! call proving the provider accepts it (Plausible's Stats API, Umami's login or `/me`). The
//! answer is per reference: ok, or failed with the reason. Values never leave this module.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use entity::provider_config;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Credentials, Resolved, SecretRef, Secrets};
use crate::{config::DeliverySettings, outbox::destination, providers::AnyProvider};

/// One harmless authenticated request a provider offers to prove credentials work. Built by the
/// provider module (pure); sent here. `Debug` shows where it goes, never what it carries.
pub struct AuthCheck {
    /// What is called, for the report ("Plausible Stats API").
    pub what: &'static str,
    /// The credentials fields this call proves (`api_key_ref`).
    pub proves: Vec<&'static str>,
    pub method: reqwest::Method,
    pub url: String,
    /// Headers carrying a credential (`Authorization`, `x-umami-api-key`).
    pub headers: Vec<(&'static str, SecretString)>,
    /// A JSON body carrying a credential (a login).
    pub json_body: Option<SecretString>,
    /// How to read the answer, for a provider whose answer says more than its status (GA4's
    /// validation server answers `200` with its findings): `(accepted, detail)`. `None`: 2xx
    /// accepted, 401/403 refused, anything else not verifiable.
    pub read: Option<ReadAnswer>,
}

/// Reads a check's answer (status, body) as `(accepted, detail)`; see [`AuthCheck::read`].
pub type ReadAnswer = fn(u16, &[u8]) -> (Option<bool>, String);

impl fmt::Debug for AuthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthCheck")
            .field("what", &self.what)
            .field("method", &self.method)
            // Without the query string: a credential may travel in it (GA4's `api_secret`).
            .field("url", &self.url.split('?').next().unwrap_or_default())
            .field("proves", &self.proves)
            .finish_non_exhaustive()
    }
}

/// The result of `check` for one config.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckReport {
    pub config_id: Uuid,
    /// `ok` when every reference is ok.
    #[schema(example = "ok")]
    pub status: &'static str,
    pub references: Vec<ReferenceCheck>,
}

/// One reference, checked.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferenceCheck {
    /// The credentials field, e.g. `credentials.api_key_ref`.
    #[schema(example = "credentials.api_key_ref")]
    pub field: String,
    #[schema(example = "env:PLAUSIBLE_API_KEY")]
    pub reference: String,
    /// `ok` or `failed`.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Whether the reference resolved to a value.
    pub resolved: bool,
    /// Whether the provider accepted the value in an authenticated call; `null` when the
    /// provider offers no harmless call for it.
    pub accepted_by_provider: Option<bool>,
    /// Why it failed, or how it was verified.
    pub detail: Option<String>,
    /// Things to fix that do not stop it working (a file other users can read).
    pub warnings: Vec<String>,
}

pub async fn check(
    secrets: &Secrets,
    tenant: &str,
    provider: &dyn AnyProvider,
    config: &provider_config::Model,
    delivery: &DeliverySettings,
) -> CheckReport {
    let warnings = secrets.warnings(Some(&config.credentials));
    let mut rows: BTreeMap<String, ReferenceCheck> = BTreeMap::new();
    let mut resolved = Credentials::default();
    for (field, reference, result) in secrets.resolve_each_now(tenant, &config.credentials).await {
        let prefix = format!("credentials.{field}: ");
        let row = ReferenceCheck {
            field: format!("credentials.{field}"),
            reference: reference.clone(),
            status: if result.is_ok() { "ok" } else { "failed" },
            resolved: result.is_ok(),
            accepted_by_provider: None,
            detail: result.as_ref().err().map(|f| f.reason.clone()),
            warnings: warnings.iter().filter_map(|w| w.strip_prefix(&prefix)).map(str::to_string).collect(),
        };
        if let (Ok(value), Ok(parsed)) = (result, SecretRef::parse(&reference)) {
            resolved.fields.insert(field.clone(), Resolved { reference: parsed, value, generation: 0 });
        }
        rows.insert(field, row);
    }
    let calls = provider.checks(&config.settings, &resolved);
    if !calls.is_empty() {
        match client(delivery) {
            Ok(http) => {
                for call in calls {
                    let (accepted, detail) = send(&http, &call, delivery).await;
                    for field in &call.proves {
                        if let Some(row) = rows.get_mut(*field) {
                            row.accepted_by_provider = accepted;
                            row.detail = Some(detail.clone());
                            if accepted != Some(true) {
                                row.status = "failed";
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot build the HTTP client for credential checks"),
        }
    }
    let references: Vec<_> = rows.into_values().collect();
    let status = if references.iter().all(|r| r.status == "ok") { "ok" } else { "failed" };
    CheckReport { config_id: config.id, status, references }
}

/// The same rules as the delivery worker's client: no redirects, a timeout, no proxy from the
/// environment, and (unless the operator allows private destinations) only public addresses.
fn client(settings: &DeliverySettings) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(settings.request_timeout_ms))
        .no_proxy();
    if !settings.allow_private_destinations {
        builder = builder.dns_resolver(Arc::new(destination::PublicOnly));
    }
    builder.build()
}

/// `(Some(true), how)` accepted, `(Some(false), why)` refused, `(None, why)` not verifiable now.
async fn send(http: &reqwest::Client, call: &AuthCheck, settings: &DeliverySettings) -> (Option<bool>, String) {
    if !settings.allow_private_destinations
        && let Err(refused) = destination::check_literal(&call.url)
    {
        return (None, format!("{} not called: {refused}", call.what));
    }
    let mut req = http.request(call.method.clone(), &call.url).header("accept", "application/json");
    for (name, value) in &call.headers {
        req = req.header(*name, value.expose_secret());
    }
    if let Some(body) = &call.json_body {
        req = req.header("content-type", "application/json").body(body.expose_secret().to_string());
    }
    match req.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let body = res.bytes().await.unwrap_or_default();
            if let Some(read) = call.read {
                return read(status, &body);
            }
            match status {
                200..=299 => (Some(true), format!("{} accepted it ({status})", call.what)),
                401 | 403 => {
                    let excerpt = crate::providers::body_excerpt(&body);
                    let why = if excerpt.is_empty() { String::new() } else { format!(": {excerpt}") };
                    (Some(false), format!("{} refused it ({status}{why})", call.what))
                }
                _ => (None, format!("{} answered {status}; the credential could not be verified", call.what)),
            }
        }
        // Without the URL: a credential may travel in a query string.
        Err(e) => (None, format!("{} could not be reached: {}", call.what, crate::outbox::worker::describe(e))),
    }
}
