//! `env:NAME`: a variable of the gateway's environment, read at each lookup (so a value set for
//! a restarted process is picked up; the process's own environment does not change otherwise).

use futures_util::future::BoxFuture;
use secrecy::SecretString;

use super::{Failure, Resolver, SecretRef};

pub struct EnvResolver;

impl Resolver for EnvResolver {
    fn resolve<'a>(&'a self, r: &'a SecretRef) -> BoxFuture<'a, Result<SecretString, Failure>> {
        Box::pin(async move {
            let SecretRef::Env(name) = r else { return Err(Failure::permanent("not an env: reference")) };
            lookup(name, std::env::var_os(name))
        })
    }
}

fn lookup(name: &str, value: Option<std::ffi::OsString>) -> Result<SecretString, Failure> {
    let Some(value) = value else {
        return Err(Failure::permanent(format!("the environment variable {name} is not set")));
    };
    let Ok(value) = value.into_string() else {
        return Err(Failure::permanent(format!("the environment variable {name} is not valid UTF-8")));
    };
    if value.trim().is_empty() {
        return Err(Failure::permanent(format!("the environment variable {name} is empty")));
    }
    Ok(SecretString::from(value))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_variable_resolves_to_its_value_and_a_missing_one_names_the_variable() {
        assert_eq!(lookup("K", Some("s3cr3t".into())).unwrap().expose_secret(), "s3cr3t");
        for (value, why) in [(None, "is not set"), (Some(""), "is empty"), (Some("  "), "is empty")] {
            let err = lookup("PLAUSIBLE_KEY", value.map(Into::into)).unwrap_err();
            assert_eq!(err.reason, format!("the environment variable PLAUSIBLE_KEY {why}"));
            assert!(!err.transient);
        }
    }

    #[tokio::test]
    async fn the_resolver_reads_the_process_environment() {
        // PATH is set in every test environment; its value stands in for a secret.
        let r = SecretRef::parse("env:PATH").unwrap();
        let v = EnvResolver.resolve(&r).await.unwrap();
        assert_eq!(v.expose_secret(), std::env::var("PATH").unwrap());
        let missing = SecretRef::parse("env:CONSENTGATE_TEST_SURELY_UNSET_4711").unwrap();
        assert!(EnvResolver.resolve(&missing).await.is_err());
    }
}
