//! Cookie consent configs: what the webmaster sets ([`spec`]), the warnings against regulator
//! guidance ([`guidance`]), the stored lifecycle with published revisions ([`store`]) and the
//! differences between two of them ([`diff`]).

pub mod diff;
pub mod guidance;
pub mod patch;
pub mod spec;
pub mod store;

pub use patch::{ConsentConfigPatch, NewConsentConfig};
pub use spec::{ConfigSpec, Status};
pub use store::{ConsentConfigView, Published, RevisionView, active_banner_config};
