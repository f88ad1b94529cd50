//! Cookie consent configs: what the webmaster sets ([`spec`]), the warnings against regulator
//! guidance ([`guidance`]) and the stored lifecycle with published revisions ([`store`]).

pub mod guidance;
pub mod patch;
pub mod spec;
pub mod store;

pub use patch::{ConsentConfigPatch, NewConsentConfig};
pub use spec::{ConfigSpec, Status};
pub use store::{ConsentConfigView, Published, RevisionView, active_banner_config};
