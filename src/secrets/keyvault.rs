//! `keyvault://<vault>.vault.azure.net/secrets/<name>[/<version>]` through the Azure SDK
//! (`azure_security_keyvault_secrets` 1.x, `azure_identity` for the gateway's identity). The SDK
//! does the challenge-based authentication, token caching and its own bounded retries; this
//! module picks the credential from `[secrets.keyvault]`, keeps one client per vault, and turns
//! the SDK's errors into reasons an operator can act on (never containing a value).

use std::{collections::HashMap, sync::Arc, time::Duration};

use azure_core::{
    credentials::{Secret, TokenCredential},
    error::ErrorKind,
    http::{ClientOptions, ExponentialRetryOptions, RetryOptions, Transport},
};
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions, models::SecretClientGetSecretOptions};
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;

use super::{
    Failure, Resolver, SecretRef,
    settings::{AzureCredential, KeyVaultSettings},
};

pub struct KeyVaultResolver {
    settings: KeyVaultSettings,
    http: reqwest::Client,
    /// Made on first use: a managed identity on a machine that never names a vault costs nothing.
    credential: OnceCell<Result<Arc<dyn TokenCredential>, String>>,
    clients: std::sync::Mutex<HashMap<String, Arc<SecretClient>>>,
    /// Resolves the client secret reference of `credential = "client_secret"` (env or file).
    bootstrap: Arc<dyn Resolver>,
}

impl KeyVaultResolver {
    pub fn new(settings: KeyVaultSettings, bootstrap: Arc<dyn Resolver>) -> Result<Self, String> {
        let http = match &settings.http_client {
            Some(c) => c.clone(),
            None => reqwest::Client::builder()
                .timeout(Duration::from_millis(settings.request_timeout_ms.max(100)))
                .build()
                .map_err(|e| format!("cannot build the Key Vault HTTP client: {e}"))?,
        };
        Ok(KeyVaultResolver { settings, http, credential: OnceCell::new(), clients: Default::default(), bootstrap })
    }

    /// The SDK's pipeline options: our HTTP client, and a retry policy bounded in count and time
    /// (the SDK default retries 8 times over up to a minute, holding a delivery that long).
    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(Arc::new(self.http.clone()))),
            retry: if self.settings.max_retries == 0 {
                RetryOptions::none()
            } else {
                RetryOptions::exponential(ExponentialRetryOptions {
                    max_retries: self.settings.max_retries,
                    initial_delay: azure_core::time::Duration::milliseconds(200),
                    max_total_elapsed: azure_core::time::Duration::seconds(10),
                    max_delay: azure_core::time::Duration::seconds(5),
                })
            },
            cloud: self.cloud(),
            ..Default::default()
        }
    }

    fn cloud(&self) -> Option<Arc<azure_core::cloud::CloudConfiguration>> {
        if self.settings.authority_host.is_empty() {
            return None;
        }
        let mut custom = azure_core::cloud::CustomConfiguration::default();
        custom.authority_host = self.settings.authority_host.clone();
        Some(Arc::new(azure_core::cloud::CloudConfiguration::Custom(custom)))
    }

    async fn credential(&self) -> Result<Arc<dyn TokenCredential>, Failure> {
        let made = self.credential.get_or_init(|| self.make_credential()).await;
        made.clone().map_err(Failure::permanent)
    }

    async fn make_credential(&self) -> Result<Arc<dyn TokenCredential>, String> {
        let s = &self.settings;
        let some = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_string());
        let made: azure_core::Result<Arc<dyn TokenCredential>> = match s.credential {
            AzureCredential::ManagedIdentity => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: some(&s.client_id).map(UserAssignedId::ClientId),
                    client_options: self.client_options(),
                }))
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            AzureCredential::WorkloadIdentity => {
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions { client_options: self.client_options() },
                    client_id: some(&s.client_id),
                    tenant_id: some(&s.tenant_id),
                    token_file_path: some(&s.token_file).map(Into::into),
                }))
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            AzureCredential::ClientSecret => {
                let reference = SecretRef::parse(&s.client_secret_ref)
                    .map_err(|_| "secrets.keyvault.client_secret_ref is not an env: or file: reference".to_string())?;
                let secret = self.bootstrap.resolve(&reference).await.map_err(|f| {
                    format!("the Key Vault client secret ({reference}) could not be resolved: {}", f.reason)
                })?;
                ClientSecretCredential::new(
                    s.tenant_id.trim(),
                    s.client_id.trim().to_string(),
                    Secret::new(secret.expose_secret().to_string()),
                    Some(ClientSecretCredentialOptions { client_options: self.client_options() }),
                )
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            AzureCredential::AzureCli => AzureCliCredential::new(Some(AzureCliCredentialOptions {
                tenant_id: some(&s.tenant_id),
                ..Default::default()
            }))
            .map(|c| c as Arc<dyn TokenCredential>),
        };
        made.map_err(|e| {
            format!("the Azure credential ({:?}) cannot be set up: {}", s.credential, one_line(&e.to_string()))
        })
    }

    async fn client(&self, vault: &str) -> Result<Arc<SecretClient>, Failure> {
        if let Some(c) = self.clients.lock().expect("never poisoned").get(vault) {
            return Ok(c.clone());
        }
        let credential = self.credential().await?;
        let options = SecretClientOptions { client_options: self.client_options(), ..Default::default() };
        let client = SecretClient::new(&format!("https://{vault}.vault.azure.net/"), credential, Some(options))
            .map_err(|e| Failure::permanent(format!("cannot make a Key Vault client: {}", one_line(&e.to_string()))))?;
        let client = Arc::new(client);
        self.clients.lock().expect("never poisoned").insert(vault.to_string(), client.clone());
        Ok(client)
    }
}

impl Resolver for KeyVaultResolver {
    fn resolve<'a>(&'a self, r: &'a SecretRef) -> BoxFuture<'a, Result<SecretString, Failure>> {
        Box::pin(async move {
            let SecretRef::KeyVault { vault, name, version } = r else {
                return Err(Failure::permanent("not a keyvault:// reference"));
            };
            let client = self.client(vault).await?;
            let options = SecretClientGetSecretOptions { secret_version: version.clone(), ..Default::default() };
            let secret = match client.get_secret(name, Some(options)).await {
                Ok(response) => response.into_model().map_err(|e| {
                    Failure::transient(format!("Key Vault's answer could not be read: {}", one_line(&e.to_string())))
                })?,
                Err(e) => return Err(failure(&e, vault, name)),
            };
            match secret.value {
                Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
                _ => Err(Failure::permanent(format!("Key Vault returned secret {name} without a value"))),
            }
        })
    }
}

/// What an SDK error means for the operator. Built from the status and Key Vault's error code,
/// not from the SDK's full text (which can carry a whole response body).
fn failure(e: &azure_core::Error, vault: &str, name: &str) -> Failure {
    match e.kind() {
        ErrorKind::HttpResponse { status, error_code, raw_response } => {
            let status = u16::from(*status);
            let code = error_code.as_deref().map(|c| format!(" {c}")).unwrap_or_default();
            let retry_after = raw_response
                .as_ref()
                .and_then(|r| r.headers().get_optional_str(&azure_core::http::headers::RETRY_AFTER))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            match status {
                404 => Failure::permanent(format!("Key Vault {vault} has no secret {name} (404{code})")),
                401 | 403 => Failure::permanent(format!(
                    "the gateway's identity may not read secrets in Key Vault {vault} ({status}{code}); \
                     it needs the Key Vault Secrets User role"
                )),
                429 => Failure {
                    reason: format!("Key Vault {vault} is throttling the gateway (429{code})"),
                    transient: true,
                    retry_after,
                    replayed: false,
                },
                500..=599 => Failure {
                    reason: format!("Key Vault {vault} answered {status}{code}"),
                    transient: true,
                    retry_after,
                    replayed: false,
                },
                _ => Failure::permanent(format!("Key Vault {vault} answered {status}{code} for secret {name}")),
            }
        }
        ErrorKind::Credential => Failure::transient(format!(
            "the gateway could not get an Azure token for Key Vault: {}",
            one_line(&e.to_string())
        )),
        ErrorKind::Connection | ErrorKind::Io => {
            Failure::transient(format!("Key Vault {vault} could not be reached: {}", one_line(&e.to_string())))
        }
        _ => Failure::transient(format!("Key Vault {vault}: {}", one_line(&e.to_string()))),
    }
}

/// The first line, at most 300 characters: enough to act on, never a whole response body.
fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    crate::providers::truncate_chars(line, 300).into_owned()
}
