//! Whose secrets a reference may name. A provider config's admin chooses both its references and
//! its `instance_url`, where the resolved values are sent (and `check` sends them on demand). On a
//! gateway shared by tenants, a reference that could name *any* secret the gateway can read would
//! let one tenant's admin have another tenant's key — or the gateway's own database URL, Redis URL
//! or Azure client secret — sent to a server of their choosing. So by default
//! (`secrets.scope = "tenant"`) a tenant names only secrets in its own namespace:
//!
//! | scheme | a tenant `acme-shop` may name |
//! |---|---|
//! | `env:` | `CONSENTGATE_TENANT_ACME_SHOP__<NAME>` |
//! | `file:` | a file under `<secrets.file_root>/acme-shop/` (none while `file_root` is empty) |
//! | `keyvault://` | secrets named `acme-shop--<name>`, in any vault the gateway reads |
//!
//! `<NAME>` and `<name>` may not contain the separator (`__`, `--`): the slug `a-b` is encoded
//! `A_B`, so without that rule the tenant `abc` could name `CONSENTGATE_TENANT_ABC__D__KEY`, which
//! belongs to the tenant `abc--d`. A single-tenant gateway (one operator, who is also every
//! tenant's admin) sets `secrets.scope = "gateway"`: any reference then.
//!
//! Checked when a config is saved (422 naming the field and the name it would need) and again
//! whenever a reference is resolved, so a reference stored before the rule (or behind the API's
//! back) fails closed instead of resolving.

use serde::{Deserialize, Serialize};

use super::SecretRef;

/// `[secrets] scope`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Each tenant names only its own secrets (the default: a gateway shared by tenants).
    #[default]
    Tenant,
    /// Any reference the operator's scheme switches allow (a single-tenant gateway).
    Gateway,
}

/// Whether the tenant `slug` may name `r`, and if not why, with the form it would need — pure
/// (the file rule is lexical: no `.` or `..` component, nothing outside the tenant's directory).
pub fn check(scope: Scope, file_root: &str, slug: &str, r: &SecretRef) -> Result<(), String> {
    if scope == Scope::Gateway {
        return Ok(());
    }
    let refused = |needed: String| {
        Err(format!(
            "{r} is not tenant {slug}'s: on a gateway shared by tenants (secrets.scope = \"tenant\") a \
             tenant names only its own secrets — {needed}"
        ))
    };
    match r {
        SecretRef::Env(name) => {
            let prefix = env_prefix(slug);
            match name.strip_prefix(&prefix) {
                Some(rest) if !rest.is_empty() && !rest.contains("__") => Ok(()),
                _ => refused(format!("env:{prefix}<NAME>, the name without \"__\"")),
            }
        }
        SecretRef::File(path) => {
            let root = file_root.trim_end_matches('/');
            if root.is_empty() {
                return refused("file: references need secrets.file_root, which is not set on this gateway".into());
            }
            let dir = format!("{root}/{slug}/");
            let inside = path.strip_prefix(&dir).is_some_and(|rest| {
                !rest.is_empty() && rest.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
            });
            if inside { Ok(()) } else { refused(format!("file:{dir}<path>")) }
        }
        SecretRef::KeyVault { name, .. } => {
            let prefix = format!("{slug}--");
            // Key Vault compares secret names without regard to case.
            let lower = name.to_ascii_lowercase();
            match lower.strip_prefix(&prefix) {
                Some(rest) if !rest.is_empty() && !rest.contains("--") => Ok(()),
                _ => refused(format!("a secret named {prefix}<name>, the name without \"--\"")),
            }
        }
    }
}

/// `CONSENTGATE_TENANT_<SLUG>__`: the slug upper-cased, `-` as `_`.
fn env_prefix(slug: &str) -> String {
    format!("CONSENTGATE_TENANT_{}__", slug.to_ascii_uppercase().replace('-', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(scope: Scope, slug: &str, reference: &str) -> bool {
        check(scope, "/run/secrets/consentgate/", slug, &SecretRef::parse(reference).unwrap()).is_ok()
    }

    #[test]
    fn a_tenant_names_only_its_own_secrets() {
        #[rustfmt::skip]
        let cases: [(&str, &str, bool); 22] = [
            ("acme-shop", "env:CONSENTGATE_TENANT_ACME_SHOP__PLAUSIBLE_KEY", true),
            ("acme-shop", "env:PLAUSIBLE_KEY", false),
            // The gateway's own settings and credentials.
            ("acme-shop", "env:CONSENTGATE__DATABASE__URL", false),
            ("acme-shop", "env:AZURE_CLIENT_SECRET", false),
            ("acme-shop", "env:CONSENTGATE_TENANT_ACME_SHOP__", false),
            // Another tenant's, whose encoded slug starts like this one's.
            ("abc", "env:CONSENTGATE_TENANT_ABC__D__KEY", false),
            ("abc--d", "env:CONSENTGATE_TENANT_ABC__D__KEY", true),
            ("abc-d", "env:CONSENTGATE_TENANT_ABC__D__KEY", false),
            ("abc-d", "env:CONSENTGATE_TENANT_ABC_D__KEY", true),
            ("acme-shop", "file:/run/secrets/consentgate/acme-shop/umami-password", true),
            ("acme-shop", "file:/run/secrets/consentgate/acme-shop/umami/password", true),
            ("acme-shop", "file:/run/secrets/consentgate/acme-shop/../other/key", false),
            ("acme-shop", "file:/run/secrets/consentgate/acme-shop/./key", false),
            ("acme-shop", "file:/run/secrets/consentgate/acme-shop//key", false),
            ("acme-shop", "file:/run/secrets/consentgate/acme-shop/", false),
            ("acme", "file:/run/secrets/consentgate/acme-shop/key", false),
            ("acme-shop", "file:/proc/self/environ", false),
            ("acme-shop", "keyvault://acmevault.vault.azure.net/secrets/acme-shop--plausible-key", true),
            ("acme-shop", "keyvault://acmevault.vault.azure.net/secrets/ACME-SHOP--key/0123456789abcdef0123456789abcdef", true),
            ("acme-shop", "keyvault://acmevault.vault.azure.net/secrets/plausible-key", false),
            ("abc", "keyvault://acmevault.vault.azure.net/secrets/abc--d--key", false),
            ("abc--d", "keyvault://acmevault.vault.azure.net/secrets/abc--d--key", true),
        ];
        for (slug, reference, want) in cases {
            assert_eq!(allowed(Scope::Tenant, slug, reference), want, "{slug}: {reference}");
            assert!(allowed(Scope::Gateway, slug, reference), "any reference on a single-tenant gateway");
        }
    }

    #[test]
    fn without_a_file_root_a_tenant_names_no_file() {
        let r = SecretRef::parse("file:/run/secrets/consentgate/acme/key").unwrap();
        let why = check(Scope::Tenant, "", "acme", &r).unwrap_err();
        assert!(why.contains("secrets.file_root"), "{why}");
        assert!(check(Scope::Gateway, "", "acme", &r).is_ok());
    }

    #[test]
    fn a_refusal_names_the_form_the_tenant_would_need() {
        let r = SecretRef::parse("env:PLAUSIBLE_KEY").unwrap();
        let why = check(Scope::Tenant, "", "acme-shop", &r).unwrap_err();
        assert!(why.contains("env:CONSENTGATE_TENANT_ACME_SHOP__<NAME>"), "{why}");
    }
}
