//! A fake Azure Key Vault and Entra token endpoint, served over HTTPS (the Azure SDK refuses
//! anything else) with the test certificate in tests/fixtures (`keyvault-test-cert.pem`, signed
//! by `keyvault-test-ca.pem`, for `*.vault.azure.net` and `login.microsoftonline.com`). The
//! tests map those names to 127.0.0.1 in their own HTTP client, so the SDK's code path — the
//! challenge, the token request, its checks of the challenge's resource — runs unchanged.
//!
//! As the real services do (Key Vault REST API 7.x / 2025-07-01, Entra v2 token endpoint):
//! - `GET /secrets/{name}[/{version}]?api-version=…` without a bearer token → 401 with
//!   `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
//!   resource="https://vault.azure.net"`; with an unknown token → 401 too;
//! - found → 200 `{"value", "id", "attributes"}`; unknown name or version → 404 `SecretNotFound`;
//!   the identity without a role (`forbidden`) → 403 `Forbidden` / `ForbiddenByRbac`;
//!   throttled (`fail_next` + `status: 429` + `retry_after`) → 429 `Throttled` with `Retry-After`;
//! - `GET /secrets/{name}/versions` → `{"value": [{"id", "attributes"}], "nextLink": null}`;
//! - `POST /{tenant}/oauth2/v2.0/token` (form): `client_credentials` with `client_secret`, or
//!   with a `client_assertion` (workload identity's federated token); a wrong pair → 401
//!   `invalid_client` (AADSTS7000215) — else `{"token_type": "Bearer", "access_token", …}`.
//!
//! Steered over the plain control port: `POST /_fake/keyvault` merges
//! `{"secrets": {name: value}}` (each value a new version), `"clients": [{tenant, client_id,
//! secret}]`, `"federated": [{tenant, client_id, token}]`, `"forbidden"`, `"fail_next"`,
//! `"status"`, `"retry_after"`; `GET /_fake/keyvault/requests` lists what was asked.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json,
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub struct Vault {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// name → versions (oldest first): (version id, value).
    secrets: BTreeMap<String, Vec<(String, String)>>,
    clients: Vec<(String, String, String)>,
    federated: Vec<(String, String, String)>,
    tokens: Vec<String>,
    forbidden: bool,
    fail_next: u32,
    status: Option<u16>,
    retry_after: Option<String>,
    requests: Vec<Asked>,
}

/// One request as the fake saw it.
#[derive(Clone, Serialize)]
struct Asked {
    host: String,
    method: String,
    path: String,
    /// Whether it carried a token this fake issued.
    authorized: bool,
    status: u16,
}

const TENANT_AUTHORITY: &str = "https://login.microsoftonline.com";

impl Vault {
    pub fn configure(&self, body: &Value) -> Value {
        let mut inner = self.inner.lock().unwrap();
        if let Some(secrets) = body["secrets"].as_object() {
            for (name, value) in secrets {
                let versions = inner.secrets.entry(name.clone()).or_default();
                let version = format!("{:032x}", versions.len() as u128 + 0xabc0);
                versions.push((version, value.as_str().unwrap_or_default().to_string()));
            }
        }
        let triples = |v: &Value, third: &str| -> Vec<(String, String, String)> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    Some((c["tenant"].as_str()?.into(), c["client_id"].as_str()?.into(), c[third].as_str()?.into()))
                })
                .collect()
        };
        if body.get("clients").is_some() {
            inner.clients = triples(&body["clients"], "secret");
        }
        if body.get("federated").is_some() {
            inner.federated = triples(&body["federated"], "token");
        }
        if let Some(f) = body["forbidden"].as_bool() {
            inner.forbidden = f;
        }
        if let Some(n) = body["fail_next"].as_u64() {
            inner.fail_next = n as u32;
        }
        if body.get("status").is_some() {
            inner.status = body["status"].as_u64().map(|s| s as u16);
        }
        if body.get("retry_after").is_some() {
            inner.retry_after = body["retry_after"].as_str().map(String::from);
        }
        let versions: BTreeMap<_, _> = inner
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()))
            .collect();
        json!({"versions": versions})
    }

    pub fn requests(&self) -> Value {
        json!(self.inner.lock().unwrap().requests)
    }

    fn log(&self, headers: &HeaderMap, method: &str, path: &str, authorized: bool, status: StatusCode) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        self.inner.lock().unwrap().requests.push(Asked {
            host,
            method: method.into(),
            path: path.into(),
            authorized,
            status: status.as_u16(),
        });
    }
}

/// Every request on the TLS port: the token endpoint or the vault, by path.
pub async fn serve(State(vault): State<Vault>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let path = parts.uri.path().to_string();
    if parts.method == "POST" && path.ends_with("/oauth2/v2.0/token") {
        return token(&vault, &parts.headers, &path, &body);
    }
    if parts.method == "GET" && path.starts_with("/secrets/") {
        return secret(&vault, &parts.headers, &path);
    }
    let status = StatusCode::NOT_FOUND;
    vault.log(&parts.headers, parts.method.as_str(), &path, false, status);
    (status, Json(json!({"error": {"code": "NotFound", "message": "no such route on the fake"}}))).into_response()
}

fn token(vault: &Vault, headers: &HeaderMap, path: &str, body: &Bytes) -> Response {
    let tenant = path.trim_start_matches('/').split('/').next().unwrap_or("").to_string();
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let mut inner = vault.inner.lock().unwrap();
    let client = get("client_id");
    let by_secret = inner.clients.iter().any(|(t, c, s)| *t == tenant && c == client && s == get("client_secret"));
    let by_assertion = get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        && inner.federated.iter().any(|(t, c, tok)| *t == tenant && c == client && tok == get("client_assertion"));
    let scope_ok = get("scope") == "https://vault.azure.net/.default";
    let (status, answer) = if get("grant_type") != "client_credentials" || !scope_ok {
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "AADSTS900144: unexpected grant_type or scope"}),
        )
    } else if by_secret || by_assertion {
        let access = format!("fake-kv-token-{}", inner.tokens.len() + 1);
        inner.tokens.push(access.clone());
        (
            StatusCode::OK,
            json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access}),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.",
                   "error_codes": [7000215]}),
        )
    };
    drop(inner);
    vault.log(headers, "POST", path, false, status);
    (status, Json(answer)).into_response()
}

fn secret(vault: &Vault, headers: &HeaderMap, path: &str) -> Response {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let mut inner = vault.inner.lock().unwrap();
    let authorized = bearer.is_some_and(|t| inner.tokens.iter().any(|k| k == t));
    let answer = |status: StatusCode, body: Value| (status, Json(body)).into_response();
    let error = |status: StatusCode, code: &str, message: &str| {
        answer(status, json!({"error": {"code": code, "message": message}}))
    };
    let res = if !authorized {
        let mut res =
            error(StatusCode::UNAUTHORIZED, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.");
        let challenge =
            format!(r#"Bearer authorization="{TENANT_AUTHORITY}/fake-tenant", resource="https://vault.azure.net""#);
        res.headers_mut().insert(header::WWW_AUTHENTICATE, challenge.parse().unwrap());
        res
    } else if let Some(status) = inner.status.filter(|_| inner.fail_next > 0) {
        inner.fail_next -= 1;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = error(status, "Throttled", "Request was not allowed because of throttling.");
        if let Some(ra) = inner.retry_after.as_deref() {
            res.headers_mut().insert(header::RETRY_AFTER, ra.parse().unwrap());
        }
        res
    } else if inner.forbidden {
        answer(
            StatusCode::FORBIDDEN,
            json!({"error": {"code": "Forbidden", "message": "Caller is not authorized to perform action on resource. Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'",
                             "innererror": {"code": "ForbiddenByRbac"}}}),
        )
    } else {
        let mut segments = path.trim_start_matches("/secrets/").split('/').filter(|s| !s.is_empty());
        let name = segments.next().unwrap_or("");
        let rest = segments.next();
        let base = format!("https://{host}/secrets/{name}");
        match (inner.secrets.get(name), rest) {
            (Some(versions), Some("versions")) => answer(
                StatusCode::OK,
                json!({"value": versions.iter().map(|(id, _)| json!({"id": format!("{base}/{id}"), "attributes": {"enabled": true}})).collect::<Vec<_>>(),
                       "nextLink": null}),
            ),
            (Some(versions), wanted) => match versions.iter().rev().find(|(id, _)| wanted.is_none_or(|w| w == id)) {
                Some((id, value)) => answer(
                    StatusCode::OK,
                    json!({"value": value, "id": format!("{base}/{id}"),
                           "attributes": {"enabled": true, "recoveryLevel": "Recoverable+Purgeable"}, "tags": {}}),
                ),
                None => error(
                    StatusCode::NOT_FOUND,
                    "SecretNotFound",
                    &format!(
                        "A secret with (name/id) {name}/{} was not found in this key vault.",
                        wanted.unwrap_or("")
                    ),
                ),
            },
            (None, _) => error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                &format!("A secret with (name/id) {name} was not found in this key vault."),
            ),
        }
    };
    drop(inner);
    vault.log(headers, "GET", path, authorized, res.status());
    res
}
