//! Secret *references*. Configuration fields that need a credential hold a reference to where the
//! secret lives — `env:NAME`, `file:/path` or
//! `keyvault://<vault>.vault.azure.net/secrets/<name>[/<version>]` — never the secret itself, so
//! that API responses, the audit log and database backups cannot leak it. A value that is not a
//! reference is refused at the edge, naming the field (most likely someone pasted the key itself).
//!
//! Resolving a reference is [`super::Secrets`]' job.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

/// Where a secret lives. Only constructed by [`SecretRef::parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretRef {
    /// An environment variable of the gateway process.
    Env(String),
    /// A file on the gateway host (absolute path), e.g. a mounted Kubernetes secret.
    File(String),
    /// A secret in Azure Key Vault, optionally pinned to one version.
    KeyVault { vault: String, name: String, version: Option<String> },
}

/// The three kinds of reference, each with its own resolver and operator switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    Env,
    File,
    KeyVault,
}

impl Scheme {
    pub const ALL: [Scheme; 3] = [Scheme::Env, Scheme::File, Scheme::KeyVault];

    /// The name in `[secrets]` and in messages: `env`, `file`, `keyvault`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Env => "env",
            Scheme::File => "file",
            Scheme::KeyVault => "keyvault",
        }
    }
}

impl SecretRef {
    pub fn scheme(&self) -> Scheme {
        match self {
            SecretRef::Env(_) => Scheme::Env,
            SecretRef::File(_) => Scheme::File,
            SecretRef::KeyVault { .. } => Scheme::KeyVault,
        }
    }
}

/// Why a value is not a secret reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct NotAReference(String);

const EXPECTED: &str = "must be a secret reference (env:NAME, file:/absolute/path or \
     keyvault://<vault>.vault.azure.net/secrets/<name>[/<version>]), never the secret itself";

impl SecretRef {
    pub fn parse(s: &str) -> Result<Self, NotAReference> {
        let bad =
            |why: &str| NotAReference(if why.is_empty() { EXPECTED.into() } else { format!("{EXPECTED}: {why}") });
        if let Some(name) = s.strip_prefix("env:") {
            let mut chars = name.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && name.len() <= 255 {
                return Ok(SecretRef::Env(name.to_string()));
            }
            return Err(bad("an environment variable name is letters, digits and '_', not starting with a digit"));
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.starts_with('/') && path.len() > 1 && path.len() <= 4096 && !path.contains('\0') {
                return Ok(SecretRef::File(path.to_string()));
            }
            return Err(bad("a file reference needs an absolute path"));
        }
        if let Some(rest) = s.strip_prefix("keyvault://") {
            return parse_keyvault(rest).ok_or_else(|| {
                bad("a Key Vault reference is keyvault://<vault>.vault.azure.net/secrets/<name>[/<version>]")
            });
        }
        Err(bad(""))
    }
}

/// Vault names are 3–24 letters, digits and '-' (Azure's rule); secret names 1–127 letters,
/// digits and '-'; versions 32 hex digits.
fn parse_keyvault(rest: &str) -> Option<SecretRef> {
    let (host, path) = rest.split_once('/')?;
    let vault = host.strip_suffix(".vault.azure.net")?;
    let vault_ok = (3..=24).contains(&vault.len())
        && vault.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && vault.starts_with(|c: char| c.is_ascii_alphabetic())
        && !vault.ends_with('-');
    if !vault_ok {
        return None;
    }
    let mut parts = path.split('/');
    if parts.next()? != "secrets" {
        return None;
    }
    let name = parts.next()?;
    let name_ok = (1..=127).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !name_ok {
        return None;
    }
    let version = match parts.next() {
        None | Some("") => None,
        Some(v) if v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()) => Some(v.to_ascii_lowercase()),
        Some(_) => return None,
    };
    if parts.next().is_some_and(|p| !p.is_empty()) {
        return None;
    }
    Some(SecretRef::KeyVault { vault: vault.to_ascii_lowercase(), name: name.to_string(), version })
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{p}"),
            SecretRef::KeyVault { vault, name, version: None } => {
                write!(f, "keyvault://{vault}.vault.azure.net/secrets/{name}")
            }
            SecretRef::KeyVault { vault, name, version: Some(v) } => {
                write!(f, "keyvault://{vault}.vault.azure.net/secrets/{name}/{v}")
            }
        }
    }
}

impl Serialize for SecretRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Deserialising *is* parsing: a struct with a `SecretRef` field cannot hold a raw secret, and
/// serde's error path names the field (`credentials.api_key_ref`).
impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SecretRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for SecretRef {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A secret reference: env:NAME, file:/path or keyvault://<vault>.vault.azure.net/secrets/<name>[/<version>]"))
            .examples(["env:PLAUSIBLE_API_KEY"])
            .into()
    }
}

impl ToSchema for SecretRef {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_and_print_back() {
        for ok in [
            "env:PLAUSIBLE_KEY",
            "env:_x1",
            "file:/run/secrets/umami",
            "keyvault://my-vault.vault.azure.net/secrets/umami-password",
            "keyvault://myvault.vault.azure.net/secrets/key/0123456789abcdef0123456789abcdef",
        ] {
            let r = SecretRef::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(r.to_string(), ok);
        }
    }

    #[test]
    fn raw_secrets_and_malformed_references_are_refused() {
        for bad in [
            "",
            "hunter2",
            "sk_live_1234567890",
            "env:",
            "env:1ABC",
            "env:A-B",
            "file:relative/path",
            "file:",
            "keyvault://vault.example.com/secrets/x",
            "keyvault://ab.vault.azure.net/secrets/x",
            "keyvault://myvault.vault.azure.net/keys/x",
            "keyvault://myvault.vault.azure.net/secrets/",
            "keyvault://myvault.vault.azure.net/secrets/x/notaversion",
            "keyvault://myvault.vault.azure.net/secrets/x/0123456789abcdef0123456789abcdef/more",
            "https://myvault.vault.azure.net/secrets/x",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_refusal_never_echoes_the_value() {
        let err = SecretRef::parse("super-secret-value").unwrap_err().to_string();
        assert!(!err.contains("super-secret-value"), "{err}");
    }
}
