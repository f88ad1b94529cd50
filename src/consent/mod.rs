//! Consent: the pure decision engine (`decide`), and — around it — consent configuration,
//! consent records and their proof (the hash chain, GDPR Art. 7(1)), and the regions where
//! consent is required.

pub mod canonical;
pub mod chain;
pub mod config;
mod decide;
pub mod export;
pub mod offer;
mod reason;
pub mod records;
pub mod regions;
pub mod visitors;

pub use config::store::policy_for;
pub use decide::{
    Action, Category, Choices, ConsentPolicy, Decision, Effective, Identity, ProviderPolicy, ProviderStatus,
    RecordedChoice, RequiredCategory, Signals, Standing, Undecided, consent_required, decide, effective, not_tracked,
};
pub use offer::ProviderChoices;
pub use reason::{Blocked, Reason, Refused};
