//! Consent: the pure decision engine (`decide`), and — around it — consent configuration,
//! consent records and their proof (the hash chain, GDPR Art. 7(1)), and the regions where
//! consent is required.

/// Serde glue for a string type whose only constructor is `parse(&str) -> Result<Self, String>`
/// (parse, don't validate): `#[serde(try_from = "String", into = "String")]` then needs these.
/// `newtype` also derives `Display` and `as_str` from the wrapped `String`.
macro_rules! parsed_string {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $t::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
    };
    ($t:ident, newtype) => {
        parsed_string!($t);

        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

pub mod canonical;
pub mod chain;
pub mod config;
mod decide;
pub mod export;
pub mod origins;
pub mod records;
pub mod regions;
pub mod visitors;

pub use config::store::policy_for;
pub use decide::{
    Action, Category, Choices, ConsentPolicy, Decision, Effective, Identity, ProviderPolicy, ProviderStatus,
    RecordView, RequiredCategory, Signals, Undecided, consent_required, decide, effective,
};
