//! Consent: the pure decision engine (`decide`), and — around it — consent configuration,
//! consent records and their proof.

mod decide;

pub use decide::{
    Action, Category, Choices, ConsentPolicy, Decision, Effective, Identity, ProviderPolicy, ProviderStatus,
    RecordView, RequiredCategory, Signals, Undecided, consent_required, decide, effective,
};
