//! `[secrets]`: which reference schemes the operator allows, how long resolved values are kept,
//! and how the gateway authenticates to Azure Key Vault (`[secrets.keyvault]`).

use serde::{Deserialize, Serialize};

use super::{Scheme, SecretRef, scope::Scope};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSettings {
    /// Whose secrets a tenant's references may name: `tenant` (default: only its own namespace,
    /// see `secrets::scope`) or `gateway` (any — a single-tenant gateway).
    pub scope: Scope,
    /// The directory holding one directory of secret files per tenant (`<file_root>/<slug>/…`),
    /// for `file:` references under `scope = "tenant"`. Empty: tenants name no files.
    pub file_root: String,
    /// Allow `env:NAME` references (the gateway process's environment).
    pub allow_env: bool,
    /// Allow `file:/path` references.
    pub allow_file: bool,
    /// Allow `keyvault://…` references.
    pub allow_keyvault: bool,
    /// Seconds a resolved value is used before it is looked up again.
    pub cache_ttl_secs: u64,
    /// Seconds a failed lookup is remembered (longer when Key Vault asks for it with
    /// `Retry-After`), so a missing secret never becomes a burst of lookups.
    pub failure_ttl_secs: u64,
    /// How the gateway authenticates to Key Vault.
    pub keyvault: KeyVaultSettings,
}

impl Default for SecretsSettings {
    fn default() -> Self {
        Self {
            scope: Scope::Tenant,
            file_root: String::new(),
            allow_env: true,
            allow_file: true,
            allow_keyvault: true,
            cache_ttl_secs: 300,
            failure_ttl_secs: 15,
            keyvault: KeyVaultSettings::default(),
        }
    }
}

impl SecretsSettings {
    pub fn allows(&self, scheme: Scheme) -> bool {
        match scheme {
            Scheme::Env => self.allow_env,
            Scheme::File => self.allow_file,
            Scheme::KeyVault => self.allow_keyvault,
        }
    }

    /// Start-up check: a `[secrets.keyvault]` that cannot work stops start-up naming the key.
    pub fn check(&self) -> Result<(), String> {
        let kv = &self.keyvault;
        if !self.allow_keyvault {
            return Ok(());
        }
        match kv.credential {
            AzureCredential::ClientSecret => {
                if kv.tenant_id.trim().is_empty() {
                    return Err("key `secrets.keyvault.tenant_id`: required for credential = \"client_secret\"".into());
                }
                if kv.client_id.trim().is_empty() {
                    return Err("key `secrets.keyvault.client_id`: required for credential = \"client_secret\"".into());
                }
                match SecretRef::parse(&kv.client_secret_ref) {
                    Ok(SecretRef::Env(_) | SecretRef::File(_)) => {}
                    _ => {
                        return Err("key `secrets.keyvault.client_secret_ref`: required for credential = \
                                    \"client_secret\", as env:NAME or file:/path (never the secret itself)"
                            .into());
                    }
                }
            }
            AzureCredential::ManagedIdentity | AzureCredential::WorkloadIdentity | AzureCredential::AzureCli => {}
        }
        if !kv.authority_host.is_empty() && !kv.authority_host.starts_with("https://") {
            return Err("key `secrets.keyvault.authority_host`: must be an https:// URL".into());
        }
        Ok(())
    }
}

/// How the gateway proves its identity to Key Vault.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AzureCredential {
    /// The managed identity of the VM, App Service or container the gateway runs on.
    #[default]
    ManagedIdentity,
    /// AKS workload identity (a federated Kubernetes service-account token).
    WorkloadIdentity,
    /// An app registration's client secret.
    ClientSecret,
    /// The signed-in Azure CLI (`az login`), for development.
    AzureCli,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyVaultSettings {
    pub credential: AzureCredential,
    /// Entra tenant (directory) id. Required for `client_secret`; workload identity defaults to
    /// `AZURE_TENANT_ID`; `azure_cli` uses it when set.
    pub tenant_id: String,
    /// `client_secret`: the app's client id (required). Workload identity: defaults to
    /// `AZURE_CLIENT_ID`. Managed identity: a user-assigned identity's client id (empty: the
    /// system-assigned identity).
    pub client_id: String,
    /// `client_secret`: where the client secret lives, `env:NAME` or `file:/path`.
    pub client_secret_ref: String,
    /// Workload identity: the federated token file (empty: `AZURE_FEDERATED_TOKEN_FILE`).
    pub token_file: String,
    /// Entra authority, `https://…` (empty: the public cloud, or `AZURE_AUTHORITY_HOST`).
    pub authority_host: String,
    /// Retries of one Key Vault or token request (throttling, 5xx, network), exponential from
    /// 200 ms and never longer than 10 s in all. The SDK's own default is 8.
    pub max_retries: u32,
    /// Timeout of one Key Vault or token request, in milliseconds.
    pub request_timeout_ms: u64,
    /// An HTTP client to reach Azure with, instead of one built from the settings above. Not
    /// configurable from a file: tests use it to trust a local fake's certificate.
    #[serde(skip)]
    pub http_client: Option<reqwest::Client>,
}

impl Default for KeyVaultSettings {
    fn default() -> Self {
        Self {
            credential: AzureCredential::ManagedIdentity,
            tenant_id: String::new(),
            client_id: String::new(),
            client_secret_ref: String::new(),
            token_file: String::new(),
            authority_host: String::new(),
            max_retries: 2,
            request_timeout_ms: 10_000,
            http_client: None,
        }
    }
}
