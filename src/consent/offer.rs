//! Per-provider choices (a consent config's `per_provider_choices`, off by default): what the
//! banner offers — the tenant's provider configs, each under the category it needs — the offer's
//! fingerprint, and the choices a visitor made on it, as their consent record holds them.
//!
//! A visitor may allow one provider and refuse another within a category. `consent::decide`
//! applies the choices: a config the visitor switched off is refused for them
//! (`provider_refused`), and a config that was not in the offer they chose on — one added later
//! — is refused too (`provider_not_offered`) until they are asked again. The banner asks again
//! when the offer changed: the record keeps the offer's fingerprint, and the visitor's state
//! (`GET /consent/{visitor}`) says `offer_changed` when the current offer's differs.

use std::collections::BTreeMap;

use entity::provider_config;
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Action, Category, Choices, ProviderStatus};
use crate::{crypto::sha256_hex, error::Result};

/// The visitor's per-provider choices, as the consent record holds them
/// (`consent_record.provider_choices`) and the API shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderChoices {
    /// The fingerprint ([`fingerprint`]) of the provider configs the visitor was offered.
    pub offer: String,
    /// Provider config id → allowed. Exactly the configs the visitor was offered.
    #[schema(value_type = BTreeMap<String, bool>)]
    pub providers: BTreeMap<Uuid, bool>,
}

impl ProviderChoices {
    /// The visitor's choice for a config; `None`: it was not offered to them.
    pub fn get(&self, config_id: Uuid) -> Option<bool> {
        self.providers.get(&config_id).copied()
    }
}

/// One provider config as the banner offers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offered {
    pub id: Uuid,
    /// `plausible`, `umami`, `posthog`, `ga4`.
    pub provider: String,
    pub name: String,
    /// The category it is listed under: the one it needs, and `analytics` for cookie-free
    /// configs (`required_category: none`), which identify visitors only with analytics.
    pub category: Category,
    pub privacy_policy_url: Option<String>,
}

/// The configs on offer: those events are decided for (`active`, `error` and `paused`: a
/// paused config is offered so that pausing and resuming it does not ask every visitor again),
/// with a readable status and category. Not `draft` or `decommissioned`, not invalid rows.
pub fn offered(configs: &[provider_config::Model]) -> Vec<Offered> {
    let mut out: Vec<Offered> = configs
        .iter()
        .filter_map(|m| {
            let (status, required) = crate::providers::config::state(m).ok()?;
            matches!(status, ProviderStatus::Active | ProviderStatus::Error | ProviderStatus::Paused).then(|| Offered {
                id: m.id,
                provider: m.provider.clone(),
                name: m.display_name.clone(),
                category: required.category().unwrap_or(Category::Analytics),
                privacy_policy_url: m.privacy_policy_url.clone(),
            })
        })
        .collect();
    out.sort_by_key(|o| o.id);
    out
}

/// The tenant's current offer.
pub async fn current(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Vec<Offered>> {
    Ok(offered(&crate::providers::config::forwarding_targets(db, tenant_id, None).await?))
}

/// A short fingerprint of an offer: 16 hex digits of `sha256` over the sorted `id:category`
/// pairs joined by `,`. It changes when a config is added, removed or moved to another category.
pub fn fingerprint<'a>(offer: impl IntoIterator<Item = (&'a Uuid, Category)>) -> String {
    let mut pairs: Vec<String> = offer.into_iter().map(|(id, c)| format!("{id}:{}", c.as_str())).collect();
    pairs.sort();
    sha256_hex(pairs.join(","))[..16].to_string()
}

/// The fingerprint of the current offer.
pub fn offer_fingerprint(offer: &[Offered]) -> String {
    fingerprint(offer.iter().map(|o| (&o.id, o.category)))
}

/// The per-provider choices to record for a decision. `shown`: the configs the banner showed the
/// visitor, with their switches; only those still on offer count (a config removed since is left
/// out, one added since was not shown and stays out: it is refused until the visitor is asked).
/// "Accept all" allows every shown config, a refusal or withdrawal none, a custom choice what the
/// switches say. A config is allowed only if its category is granted too, so the record says
/// what applies. The fingerprint is the shown part's: it matches the current offer only when the
/// visitor saw all of it.
pub fn record(offer: &[Offered], shown: &BTreeMap<Uuid, bool>, action: Action, choices: Choices) -> ProviderChoices {
    let mut providers = BTreeMap::new();
    let mut seen = Vec::new();
    for o in offer.iter().filter(|o| shown.contains_key(&o.id)) {
        let switch = match action {
            Action::AcceptAll => true,
            Action::RejectAll | Action::Withdraw => false,
            Action::Custom => shown[&o.id],
        };
        providers.insert(o.id, switch && choices.get(o.category));
        seen.push((&o.id, o.category));
    }
    ProviderChoices { offer: fingerprint(seen), providers }
}

/// What a provider receives, as the banner tells visitors (English; shown under the config's
/// name in the preferences).
pub fn receives(provider: &str) -> &'static str {
    match provider {
        "plausible" | "umami" => {
            "Page views and events, without cookies. Your IP address and browser only to count visitors."
        }
        "posthog" => "Page views and events; an identifier only with your consent, else without cookies.",
        "ga4" => "Page views and events with an identifier (Google Analytics).",
        _ => "Page views and events.",
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn config(n: u128, provider: &str, status: &str, required: &str) -> provider_config::Model {
        provider_config::Model {
            id: Uuid::from_u128(n),
            tenant_id: Uuid::nil(),
            provider: provider.into(),
            display_name: format!("{provider} {n}"),
            status: status.into(),
            status_reason: None,
            required_category: required.into(),
            settings: serde_json::json!({}),
            credentials: serde_json::json!({}),
            events_sent: 0,
            events_failed: 0,
            events_denied_by_consent: 0,
            events_dropped: 0,
            last_sent_at: None,
            last_error_at: None,
            last_error: None,
            consecutive_auth_failures: 0,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            privacy_policy_url: None,
        }
    }

    #[test]
    fn the_offer_is_what_events_are_decided_for() {
        let configs = [
            config(3, "ga4", "active", "analytics"),
            config(1, "plausible", "active", "none"),
            config(2, "umami", "paused", "analytics"),
            config(4, "ga4", "draft", "analytics"),
            config(5, "ga4", "decommissioned", "analytics"),
            config(6, "ga4", "actve", "analytics"),
            config(7, "ga4", "error", "marketing"),
        ];
        let offer = offered(&configs);
        let got: Vec<(u128, Category)> = offer.iter().map(|o| (o.id.as_u128(), o.category)).collect();
        assert_eq!(
            got,
            [(1, Category::Analytics), (2, Category::Analytics), (3, Category::Analytics), (7, Category::Marketing)]
        );
    }

    #[test]
    fn the_fingerprint_changes_with_the_set_and_the_categories_only() {
        let a = offered(&[config(1, "plausible", "active", "none"), config(2, "ga4", "active", "analytics")]);
        let reordered = offered(&[config(2, "ga4", "active", "analytics"), config(1, "plausible", "active", "none")]);
        let renamed = {
            let mut c = config(2, "ga4", "paused", "analytics");
            c.display_name = "Google".into();
            offered(&[config(1, "plausible", "active", "none"), c])
        };
        let added = offered(&[
            config(1, "plausible", "active", "none"),
            config(2, "ga4", "active", "analytics"),
            config(3, "umami", "active", "none"),
        ]);
        let moved = offered(&[config(1, "plausible", "active", "none"), config(2, "ga4", "active", "marketing")]);
        let fp = offer_fingerprint(&a);
        assert_eq!(fp.len(), 16);
        assert_eq!(fp, offer_fingerprint(&reordered));
        assert_eq!(fp, offer_fingerprint(&renamed), "name and status are not the offer");
        assert_ne!(fp, offer_fingerprint(&added));
        assert_ne!(fp, offer_fingerprint(&moved));
        assert_ne!(offer_fingerprint(&[]), fp);
    }

    #[test]
    fn what_a_decision_records() {
        let offer = offered(&[
            config(1, "plausible", "active", "none"),
            config(2, "ga4", "active", "analytics"),
            config(3, "ga4", "active", "marketing"),
        ]);
        let id = Uuid::from_u128;
        let all_shown: BTreeMap<Uuid, bool> = [(id(1), true), (id(2), false), (id(3), true), (id(9), true)].into();
        let analytics = Choices { analytics: true, ..Choices::none() };
        let table = [
            (Action::Custom, analytics, vec![(1, true), (2, false), (3, false)]),
            (Action::AcceptAll, Choices::all(), vec![(1, true), (2, true), (3, true)]),
            (Action::RejectAll, Choices::none(), vec![(1, false), (2, false), (3, false)]),
            (Action::Withdraw, Choices::all(), vec![(1, false), (2, false), (3, false)]),
        ];
        for (action, choices, want) in table {
            let r = record(&offer, &all_shown, action, choices);
            let want: BTreeMap<Uuid, bool> = want.into_iter().map(|(n, b)| (id(n), b)).collect();
            assert_eq!(r.providers, want, "{action:?}");
            assert_eq!(r.offer, offer_fingerprint(&offer), "an id no longer offered (9) is left out");
        }
        // A stale banner showed only 1 and 2: 3 stays out, and the fingerprint says so.
        let r = record(&offer, &[(id(1), true), (id(2), true)].into(), Action::AcceptAll, Choices::all());
        assert_eq!(r.get(id(3)), None);
        assert_ne!(r.offer, offer_fingerprint(&offer));
    }
}
