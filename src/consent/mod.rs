//! Consent: the tenant's cookie consent configs, the visitors' consent records with their hash
//! chain (proof of consent, GDPR Art. 7(1)), and the regions where consent is required.

pub mod canonical;
pub mod config;
pub mod geo;
pub mod origins;
