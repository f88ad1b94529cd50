//! Credentials: provider configs hold secret *references* ([`SecretRef`]); this module turns them
//! into values when a request needs one.
//!
//! - one [`Resolver`] per scheme: [`env`](mod@env), [`file`](mod@file), [`keyvault`] (Azure Key Vault through the SDK);
//! - [`Secrets`], the service the outbox and the `check` endpoint use: the operator's scheme
//!   switches (`[secrets]`), a cache per reference with a TTL ([`cache`]: one lookup in flight per
//!   reference, failures kept briefly), and a refresh for a value a provider refused;
//! - [`check`]: resolves a config's references and, where the provider has one, makes one harmless
//!   authenticated call.
//!
//! Values are `secrecy::SecretString` from the first byte read. No type here prints one: reasons
//! ([`Failure`]) name the reference and what went wrong, never the value.

pub mod cache;
pub mod check;
pub mod env;
pub mod file;
pub mod keyvault;
mod reference;
pub mod scope;
pub mod settings;

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
pub use reference::{NotAReference, Scheme, SecretRef};
use secrecy::SecretString;
use serde_json::Value;
pub use settings::SecretsSettings;

use self::cache::{Cache, Refresh};
use crate::error::Error;

/// Why a reference could not be resolved. The reason is for operators and admins: it names the
/// variable, file, vault or secret and the cause — never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    pub reason: String,
    /// Worth trying again soon (throttling, a vault or network hiccup), as opposed to a
    /// reference that is wrong until someone fixes it.
    pub transient: bool,
    /// How long the source asked us to wait (Key Vault's `Retry-After`).
    pub retry_after: Option<Duration>,
    /// Handed out again from the cache (kept for `failure_ttl_secs`) rather than found by a
    /// lookup now: it says nothing new, so it must not count again towards a config's `error`
    /// status (one bad read, replayed for every round until the entry expires, would).
    pub replayed: bool,
}

impl Failure {
    pub fn permanent(reason: impl Into<String>) -> Self {
        Failure { reason: reason.into(), transient: false, retry_after: None, replayed: false }
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        Failure { reason: reason.into(), transient: true, retry_after: None, replayed: false }
    }
}

/// Looks one kind of reference up. No caching here: [`Secrets`] does that once for all schemes.
pub trait Resolver: Send + Sync {
    fn resolve<'a>(&'a self, r: &'a SecretRef) -> BoxFuture<'a, Result<SecretString, Failure>>;
}

/// A config's references, resolved. `Debug` shows the fields and references, never the values.
#[derive(Clone, Default)]
pub struct Credentials {
    /// By field name (`api_key_ref`).
    fields: BTreeMap<String, Resolved>,
    /// The tenant they were resolved for (its slug): a refresh resolves for the same one.
    tenant: String,
}

#[derive(Clone)]
struct Resolved {
    reference: SecretRef,
    value: SecretString,
    generation: u64,
}

impl Credentials {
    /// The value of a credentials field (`api_key_ref`), if the config has it.
    pub fn get(&self, field: &str) -> Option<&SecretString> {
        self.fields.get(field).map(|r| &r.value)
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Resolved values for a provider's table tests: `(field, value)` pairs, each under an
    /// `env:` reference named after the field.
    #[cfg(test)]
    pub fn for_tests(values: &[(&str, &str)]) -> Self {
        let fields = values
            .iter()
            .map(|(field, value)| {
                let reference = SecretRef::parse(&format!("env:{}", field.to_ascii_uppercase())).expect("a reference");
                ((*field).to_string(), Resolved { reference, value: SecretString::from(*value), generation: 0 })
            })
            .collect();
        Credentials { fields, tenant: String::new() }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.fields.iter().map(|(k, r)| (k, format!("{} = [REDACTED]", r.reference)))).finish()
    }
}

/// A config's reference that could not be resolved: names the field, the reference and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("credentials.{field} ({reference}) could not be resolved: {}", failure.reason)]
pub struct Unresolved {
    pub field: String,
    pub reference: String,
    pub failure: Failure,
}

/// The resolving service: scheme switches, resolvers and the cache.
pub struct Secrets {
    settings: SecretsSettings,
    env: Arc<dyn Resolver>,
    file: Arc<dyn Resolver>,
    keyvault: Arc<dyn Resolver>,
    cache: Cache,
}

impl Secrets {
    /// The resolvers of the settings. Fails only on a Key Vault client that cannot be built.
    pub fn new(settings: &SecretsSettings) -> Result<Self, String> {
        let env: Arc<dyn Resolver> = Arc::new(env::EnvResolver);
        let file: Arc<dyn Resolver> = Arc::new(file::FileResolver);
        // The Key Vault client secret itself comes from the environment or a file.
        let bootstrap: Arc<dyn Resolver> = Arc::new(Bootstrap { env: env.clone(), file: file.clone() });
        let keyvault = Arc::new(keyvault::KeyVaultResolver::new(settings.keyvault.clone(), bootstrap)?);
        Ok(Self::with_resolvers(settings, env, file, keyvault))
    }

    pub fn with_resolvers(
        settings: &SecretsSettings,
        env: Arc<dyn Resolver>,
        file: Arc<dyn Resolver>,
        keyvault: Arc<dyn Resolver>,
    ) -> Self {
        Secrets {
            cache: Cache::new(
                Duration::from_secs(settings.cache_ttl_secs),
                Duration::from_secs(settings.failure_ttl_secs),
            ),
            settings: settings.clone(),
            env,
            file,
            keyvault,
        }
    }

    pub fn allows(&self, scheme: Scheme) -> bool {
        self.settings.allows(scheme)
    }

    /// On save: a reference to a scheme the operator switched off, or to a secret outside the
    /// tenant's namespace ([`scope`]), is a 422 naming the field. `credentials` is the request's
    /// (already parsed) credentials object; `tenant` the slug of the tenant saving it.
    pub fn refuse_unusable(&self, tenant: &str, credentials: Option<&Value>) -> Result<(), Error> {
        for (field, r) in references(credentials) {
            let Ok(r) = r else { continue };
            if !self.allows(r.scheme()) {
                return Err(Error::validation(
                    format!("credentials.{field}"),
                    format!(
                        "{}: references are switched off on this gateway (secrets.allow_{} = false); use one of: {}",
                        r.scheme().as_str(),
                        r.scheme().as_str(),
                        self.allowed_list()
                    ),
                ));
            }
            self.in_scope(tenant, &r).map_err(|why| Error::validation(format!("credentials.{field}"), why))?;
        }
        Ok(())
    }

    /// Whether the tenant `tenant` (its slug) may name `r` ([`scope`]).
    fn in_scope(&self, tenant: &str, r: &SecretRef) -> Result<(), String> {
        scope::check(self.settings.scope, &self.settings.file_root, tenant, r)
    }

    fn allowed_list(&self) -> String {
        let on: Vec<_> = Scheme::ALL.iter().filter(|s| self.allows(**s)).map(|s| format!("{}:", s.as_str())).collect();
        if on.is_empty() { "none (every scheme is switched off)".into() } else { on.join(", ") }
    }

    /// Warnings about references that work but should be fixed (a file others can read).
    pub fn warnings(&self, credentials: Option<&Value>) -> Vec<String> {
        references(credentials)
            .filter_map(|(field, r)| match r {
                Ok(SecretRef::File(path)) => {
                    file::loose_permissions(&path).map(|w| format!("credentials.{field}: {w}"))
                }
                _ => None,
            })
            .collect()
    }

    /// Forgets the cached values and failures of these references: an admin set the config
    /// `active` again after fixing one, and its waiting deliveries must not meet the old failure.
    pub fn forget(&self, credentials: &Value) {
        for (_, r) in references(Some(credentials)) {
            if let Ok(r) = r {
                self.cache.forget(&r.to_string());
            }
        }
    }

    /// One reference's value, from the cache when it is fresh.
    pub async fn resolve(&self, r: &SecretRef) -> Result<SecretString, Failure> {
        self.lookup(r, Refresh::No).await.map(|c| c.value)
    }

    async fn lookup(&self, r: &SecretRef, refresh: Refresh) -> Result<cache::Cached, Failure> {
        if !self.allows(r.scheme()) {
            return Err(Failure::permanent(format!(
                "{}: references are switched off on this gateway (secrets.allow_{} = false)",
                r.scheme().as_str(),
                r.scheme().as_str()
            )));
        }
        let resolver = match r.scheme() {
            Scheme::Env => &self.env,
            Scheme::File => &self.file,
            Scheme::KeyVault => &self.keyvault,
        };
        self.cache.get(&r.to_string(), refresh, || resolver.resolve(r)).await
    }

    /// Every reference of a stored `credentials` object of the tenant `tenant` (its slug),
    /// resolved (from the cache when fresh). A reference outside the tenant's namespace
    /// ([`scope`]) is not looked up.
    pub async fn resolve_config(&self, tenant: &str, credentials: &Value) -> Result<Credentials, Unresolved> {
        self.resolve_all(tenant, credentials, |_| Refresh::No).await
    }

    /// After a provider refused `used`: the same references looked up again, unless another
    /// caller already did since. `Ok(None)` when no value changed (sending again is pointless).
    pub async fn refresh_config(
        &self,
        credentials: &Value,
        used: &Credentials,
    ) -> Result<Option<Credentials>, Unresolved> {
        let fresh = self
            .resolve_all(&used.tenant, credentials, |field| match used.fields.get(field) {
                Some(r) => Refresh::Replacing(r.generation),
                None => Refresh::Always,
            })
            .await?;
        let changed = fresh.fields.iter().any(|(k, r)| {
            used.fields.get(k).is_none_or(|u| {
                secrecy::ExposeSecret::expose_secret(&u.value) != secrecy::ExposeSecret::expose_secret(&r.value)
            })
        });
        Ok(changed.then_some(fresh))
    }

    /// Each reference of the tenant `tenant` looked up now, bypassing the cache (and refreshing
    /// it): what `check` shows.
    pub async fn resolve_each_now(
        &self,
        tenant: &str,
        credentials: &Value,
    ) -> Vec<(String, String, Result<SecretString, Failure>)> {
        let mut out = Vec::new();
        for (field, r) in references(Some(credentials)) {
            match r {
                Ok(r) => {
                    let result = match self.in_scope(tenant, &r) {
                        Ok(()) => self.lookup(&r, Refresh::Always).await.map(|c| c.value),
                        Err(why) => Err(Failure::permanent(why)),
                    };
                    out.push((field, r.to_string(), result));
                }
                Err(raw) => out.push((field, raw, Err(Failure::permanent("the stored reference is not valid")))),
            }
        }
        out
    }

    async fn resolve_all(
        &self,
        tenant: &str,
        credentials: &Value,
        refresh: impl Fn(&str) -> Refresh,
    ) -> Result<Credentials, Unresolved> {
        let mut fields = BTreeMap::new();
        for (field, r) in references(Some(credentials)) {
            let r = r.map_err(|raw| Unresolved {
                field: field.clone(),
                reference: raw,
                failure: Failure::permanent("the stored reference is not valid"),
            })?;
            self.in_scope(tenant, &r).map_err(|why| Unresolved {
                field: field.clone(),
                reference: r.to_string(),
                failure: Failure::permanent(why),
            })?;
            let cached = self.lookup(&r, refresh(&field)).await.map_err(|failure| Unresolved {
                field: field.clone(),
                reference: r.to_string(),
                failure,
            })?;
            fields.insert(field, Resolved { reference: r, value: cached.value, generation: cached.generation });
        }
        Ok(Credentials { fields, tenant: tenant.to_string() })
    }
}

impl Default for Secrets {
    /// The default settings' resolvers (env, file, Key Vault with a managed identity).
    fn default() -> Self {
        Secrets::new(&SecretsSettings::default()).expect("the default Key Vault client builds")
    }
}

/// The references of a `credentials` object: (field, parsed reference or the raw text). Stored
/// credentials were parsed on save, so `Err` means a row edited behind the API's back.
fn references(credentials: Option<&Value>) -> impl Iterator<Item = (String, Result<SecretRef, String>)> + '_ {
    credentials.and_then(Value::as_object).into_iter().flatten().filter_map(|(field, v)| {
        let raw = v.as_str()?;
        // Never echo an unparsable stored value: it may be a pasted secret.
        Some((field.clone(), SecretRef::parse(raw).map_err(|_| "(not a reference)".to_string())))
    })
}

/// The env and file resolvers, for the one secret the Key Vault credential itself needs.
struct Bootstrap {
    env: Arc<dyn Resolver>,
    file: Arc<dyn Resolver>,
}

impl Resolver for Bootstrap {
    fn resolve<'a>(&'a self, r: &'a SecretRef) -> BoxFuture<'a, Result<SecretString, Failure>> {
        match r.scheme() {
            Scheme::Env => self.env.resolve(r),
            Scheme::File => self.file.resolve(r),
            Scheme::KeyVault => {
                Box::pin(async { Err(Failure::permanent("the Key Vault client secret cannot itself be in Key Vault")) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    };

    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    /// A resolver whose answers the test sets: stands in for a scheme's source (an in-memory
    /// environment), so the service's own logic is what is tested.
    #[derive(Default)]
    struct Source {
        values: Mutex<BTreeMap<String, String>>,
        calls: AtomicU32,
    }

    impl Source {
        fn set(&self, r: &str, v: &str) {
            self.values.lock().unwrap().insert(r.into(), v.into());
        }
    }

    impl Resolver for Source {
        fn resolve<'a>(&'a self, r: &'a SecretRef) -> BoxFuture<'a, Result<SecretString, Failure>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let v = self.values.lock().unwrap().get(&r.to_string()).cloned();
            Box::pin(async move { v.map(SecretString::from).ok_or_else(|| Failure::permanent("not there")) })
        }
    }

    /// Any reference: these tests are about the schemes and the cache, not the tenant scope.
    fn gateway() -> SecretsSettings {
        SecretsSettings { scope: scope::Scope::Gateway, ..Default::default() }
    }

    fn service(settings: SecretsSettings) -> (Secrets, Arc<Source>) {
        let src = Arc::new(Source::default());
        (Secrets::with_resolvers(&settings, src.clone(), src.clone(), src.clone()), src)
    }

    #[test]
    fn a_disabled_scheme_is_refused_on_save_naming_the_field() {
        let (s, _) = service(SecretsSettings { allow_file: false, ..gateway() });
        let creds = json!({"api_key_ref": "env:K", "password_ref": "file:/run/secrets/p"});
        match s.refuse_unusable("acme", Some(&creds)).unwrap_err() {
            Error::Validation { field, message } => {
                assert_eq!(field.as_deref(), Some("credentials.password_ref"));
                assert!(message.contains("secrets.allow_file = false") && message.contains("env:"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(s.refuse_unusable("acme", Some(&json!({"api_key_ref": "env:K"}))).is_ok());
        assert!(s.refuse_unusable("acme", None).is_ok());
    }

    #[tokio::test]
    async fn a_stored_reference_to_a_disabled_scheme_does_not_resolve() {
        let (s, src) = service(SecretsSettings { allow_keyvault: false, ..gateway() });
        let r = "keyvault://myvault.vault.azure.net/secrets/k";
        src.set(r, "v");
        let err = s.resolve_config("acme", &json!({"api_key_ref": r})).await.unwrap_err();
        assert!(err.to_string().contains("credentials.api_key_ref (keyvault://"), "{err}");
        assert!(err.to_string().contains("switched off"), "{err}");
        assert_eq!(src.calls.load(Ordering::SeqCst), 0);
    }

    /// A tenant's reference outside its namespace is refused on save and, stored anyway, never
    /// looked up: neither for a delivery nor for `check`.
    #[tokio::test]
    async fn a_reference_outside_the_tenants_namespace_is_never_looked_up() {
        let (s, src) = service(SecretsSettings::default());
        let theirs = json!({"api_key_ref": "env:CONSENTGATE__DATABASE__URL"});
        src.set("env:CONSENTGATE__DATABASE__URL", "postgres://gateway:pw@db/prod");
        match s.refuse_unusable("acme", Some(&theirs)).unwrap_err() {
            Error::Validation { field, message } => {
                assert_eq!(field.as_deref(), Some("credentials.api_key_ref"));
                assert!(message.contains("env:CONSENTGATE_TENANT_ACME__<NAME>"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let err = s.resolve_config("acme", &theirs).await.unwrap_err();
        assert!(err.to_string().contains("is not tenant acme's"), "{err}");
        let checked = s.resolve_each_now("acme", &theirs).await;
        assert!(checked[0].2.as_ref().is_err_and(|f| f.reason.contains("not tenant acme's")));
        assert_eq!(src.calls.load(Ordering::SeqCst), 0, "nothing was looked up");
        let own = json!({"api_key_ref": "env:CONSENTGATE_TENANT_ACME__PLAUSIBLE_KEY"});
        src.set("env:CONSENTGATE_TENANT_ACME__PLAUSIBLE_KEY", "k");
        assert!(s.refuse_unusable("acme", Some(&own)).is_ok());
        let used = s.resolve_config("acme", &own).await.unwrap();
        assert_eq!(used.get("api_key_ref").unwrap().expose_secret(), "k");
        // A refresh resolves for the tenant the values were resolved for.
        assert!(s.refresh_config(&theirs, &used).await.is_err());
    }

    #[tokio::test]
    async fn a_config_resolves_every_reference_and_names_the_one_that_fails() {
        let (s, src) = service(gateway());
        src.set("env:USER_NAME", "ann");
        let ok = s.resolve_config("acme", &json!({"username_ref": "env:USER_NAME"})).await.unwrap();
        assert_eq!(ok.get("username_ref").unwrap().expose_secret(), "ann");
        assert!(!format!("{ok:?}").contains("ann"), "{ok:?}");
        let err = s
            .resolve_config("acme", &json!({"username_ref": "env:USER_NAME", "password_ref": "env:PASSWORD"}))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "credentials.password_ref (env:PASSWORD) could not be resolved: not there");
    }

    #[tokio::test]
    async fn a_refused_value_is_looked_up_once_more_and_reported_only_when_it_changed() {
        let (s, src) = service(gateway());
        let creds = json!({"api_key_ref": "env:K"});
        src.set("env:K", "old");
        let used = s.resolve_config("acme", &creds).await.unwrap();
        // Unchanged: nothing to send again with.
        assert!(s.refresh_config(&creds, &used).await.unwrap().is_none());
        src.set("env:K", "rotated");
        // Still cached (TTL 5 min) for a plain lookup…
        assert_eq!(s.resolve_config("acme", &creds).await.unwrap().get("api_key_ref").unwrap().expose_secret(), "old");
        // …but a refusal of the old value looks up again.
        let stale = s.resolve_config("acme", &creds).await.unwrap();
        let fresh = s.refresh_config(&creds, &stale).await.unwrap().expect("changed");
        assert_eq!(fresh.get("api_key_ref").unwrap().expose_secret(), "rotated");
        assert_eq!(
            s.resolve_config("acme", &creds).await.unwrap().get("api_key_ref").unwrap().expose_secret(),
            "rotated"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotated_file_is_read_again_once_its_ttl_is_over() {
        let settings = SecretsSettings { cache_ttl_secs: 300, ..gateway() };
        let (env, file): (Arc<dyn Resolver>, Arc<dyn Resolver>) =
            (Arc::new(env::EnvResolver), Arc::new(file::FileResolver));
        let s = Secrets::with_resolvers(&settings, env, file.clone(), file);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "first\n").unwrap();
        let creds = json!({"api_key_ref": format!("file:{}", path.display())});
        let value = |c: Credentials| c.get("api_key_ref").unwrap().expose_secret().to_string();
        assert_eq!(value(s.resolve_config("acme", &creds).await.unwrap()), "first");
        std::fs::write(&path, "second\n").unwrap();
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(value(s.resolve_config("acme", &creds).await.unwrap()), "first", "within the TTL");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(value(s.resolve_config("acme", &creds).await.unwrap()), "second", "after the TTL");
    }

    #[test]
    fn a_broken_stored_value_is_never_echoed() {
        let creds = json!({"api_key_ref": "hunter2-raw-secret"});
        let (field, r) = references(Some(&creds)).next().unwrap();
        assert_eq!(field, "api_key_ref");
        assert!(!r.unwrap_err().contains("hunter2"));
    }
}
