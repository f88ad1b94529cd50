//! Every provider the gateway registers has what the tests need of it.

use crate::fakes::FakeProviders;

/// "Adding a provider is one module plus one line" holds for the tests too: every provider the
/// gateway registers has a fake (its mapping table and OpenAPI body are checked by the unit tests
/// `every_provider_has_a_mapping_table_and_it_holds` and `every_provider_has_a_documented_config_body`).
#[tokio::test]
async fn every_registered_provider_has_a_fake() {
    let fakes = FakeProviders::start().await;
    let mut faked = fakes.providers().await;
    faked.sort();
    let mut registered: Vec<String> = consentgate::providers::all().iter().map(|p| p.name().to_string()).collect();
    registered.sort();
    assert_eq!(faked, registered, "a provider without a fake in tests/fakes (or a fake without a provider)");
}
