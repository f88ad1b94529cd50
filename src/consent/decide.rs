//! The consent decision: may this event go to this provider, and with which identity?
//!
//! Pure functions, no I/O: everything they need is passed in, so every rule is a row in a table
//! test. The legal reason for each rule sits next to it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Necessary,
    Functional,
    Analytics,
    Marketing,
}

impl Category {
    pub const ALL: [Category; 4] =
        [Category::Necessary, Category::Functional, Category::Analytics, Category::Marketing];

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Necessary => "necessary",
            Category::Functional => "functional",
            Category::Analytics => "analytics",
            Category::Marketing => "marketing",
        }
    }
}

/// What is granted per category. `necessary` is not a field: strictly necessary storage needs no
/// consent and cannot be refused (ePrivacy Directive Art. 5(3), second sentence), so it is always
/// granted. Serialised with all four categories, `necessary: true` included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Choices {
    pub functional: bool,
    pub analytics: bool,
    pub marketing: bool,
}

impl Choices {
    pub const fn all() -> Self {
        Choices { functional: true, analytics: true, marketing: true }
    }

    pub const fn none() -> Self {
        Choices { functional: false, analytics: false, marketing: false }
    }

    pub fn get(&self, category: Category) -> bool {
        match category {
            Category::Necessary => true,
            Category::Functional => self.functional,
            Category::Analytics => self.analytics,
            Category::Marketing => self.marketing,
        }
    }

    /// Both granted here and in `other`.
    pub fn and(self, other: Choices) -> Choices {
        Choices {
            functional: self.functional && other.functional,
            analytics: self.analytics && other.analytics,
            marketing: self.marketing && other.marketing,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct ChoicesRepr {
    #[serde(default = "yes")]
    necessary: bool,
    #[serde(default)]
    functional: bool,
    #[serde(default)]
    analytics: bool,
    #[serde(default)]
    marketing: bool,
}

fn yes() -> bool {
    true
}

impl Serialize for Choices {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ChoicesRepr {
            necessary: true,
            functional: self.functional,
            analytics: self.analytics,
            marketing: self.marketing,
        }
        .serialize(s)
    }
}

/// Accepts `{functional, analytics, marketing}` with an optional `necessary`, which must not be
/// `false`: refusing strictly necessary storage is not a choice the visitor has.
impl<'de> Deserialize<'de> for Choices {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = ChoicesRepr::deserialize(d)?;
        if !r.necessary {
            return Err(serde::de::Error::custom("necessary cannot be refused"));
        }
        Ok(Choices { functional: r.functional, analytics: r.analytics, marketing: r.marketing })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    AcceptAll,
    RejectAll,
    Custom,
    Withdraw,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::AcceptAll => "accept_all",
            Action::RejectAll => "reject_all",
            Action::Custom => "custom",
            Action::Withdraw => "withdraw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accept_all" => Some(Action::AcceptAll),
            "reject_all" => Some(Action::RejectAll),
            "custom" => Some(Action::Custom),
            "withdraw" => Some(Action::Withdraw),
            _ => None,
        }
    }
}

/// What the request tells about the visitor, besides their recorded choice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signals {
    /// `DNT: 1`.
    pub dnt: bool,
    /// `Sec-GPC: 1` (Global Privacy Control).
    pub gpc: bool,
    /// ISO 3166-1 alpha-2, upper-case; `None` when unknown.
    pub country: Option<String>,
    /// ISO 3166-2, e.g. `US-CA`; `None` when unknown.
    pub region: Option<String>,
    /// A known crawler or a non-browser client.
    pub bot: bool,
}

/// The parts of the tenant's active cookie consent configuration the decision needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsentPolicy {
    /// 1–730 days.
    pub expiry_days: u32,
    pub geo_targeting_enabled: bool,
    /// ISO 3166-1 country codes (`SE`) and ISO 3166-2 subdivisions (`US-CA`).
    pub consent_required_regions: Vec<String>,
    pub respect_do_not_track: bool,
    /// Categories the configuration offers; a disabled category is never granted.
    pub enabled: Choices,
    /// Pre-set choices, used only outside consent-required regions before the visitor decides.
    pub default_accepted: Choices,
    /// The active (last published) revision.
    pub revision: i32,
    /// Choices recorded under an earlier revision than this must be asked again.
    pub reconsent_revision: i32,
}

/// The visitor's latest consent record, as far as the decision is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordView {
    pub choices: Choices,
    pub action: Action,
    pub revision: i32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Made under another config than the tenant's active one: other texts and purposes, so it
    /// is asked again like a re-consent revision.
    pub other_config: bool,
}

/// Why the visitor counts as not having decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Undecided {
    NoRecord,
    Expired,
    Reconsent,
}

impl Undecided {
    pub fn as_str(self) -> &'static str {
        match self {
            Undecided::NoRecord => "no_record",
            Undecided::Expired => "expired",
            Undecided::Reconsent => "reconsent",
        }
    }
}

/// What the visitor's consent amounts to right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effective {
    /// Granted categories after the record, the defaults and the DNT/GPC signals.
    pub choices: Choices,
    /// `Some` when the banner must ask: no valid decision exists.
    pub undecided: Option<Undecided>,
    /// The visitor is in a region where consent is required (unknown region counts as one).
    pub consent_required: bool,
    /// Why each category is granted or not, for decision reasons.
    why: Why,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Why {
    functional: &'static str,
    analytics: &'static str,
    marketing: &'static str,
}

impl Why {
    fn get(&self, category: Category) -> &'static str {
        match category {
            Category::Necessary => "granted",
            Category::Functional => self.functional,
            Category::Analytics => self.analytics,
            Category::Marketing => self.marketing,
        }
    }

    fn set(&mut self, category: Category, why: &'static str) {
        match category {
            Category::Necessary => {}
            Category::Functional => self.functional = why,
            Category::Analytics => self.analytics = why,
            Category::Marketing => self.marketing = why,
        }
    }
}

impl Effective {
    /// Why `category` is granted or refused: `granted`, `default`, `no_consent`, `expired`,
    /// `reconsent`, `rejected`, `withdrawn`, `dnt`, `gpc`, `category_disabled`.
    pub fn why(&self, category: Category) -> &'static str {
        self.why.get(category)
    }
}

const OPTIONAL: [Category; 3] = [Category::Functional, Category::Analytics, Category::Marketing];

/// Is consent required for a visitor from `signals`' location under `policy`?
///
/// Unknown location counts as required: without knowing where the visitor is, the gateway must
/// assume the strictest law applies (GDPR Art. 3(2) reaches visitors in the EU wherever the site is).
pub fn consent_required(policy: &ConsentPolicy, signals: &Signals) -> bool {
    if !policy.geo_targeting_enabled {
        return true;
    }
    let Some(country) = signals.country.as_deref() else { return true };
    policy.consent_required_regions.iter().any(|r| {
        r.eq_ignore_ascii_case(country) || signals.region.as_deref().is_some_and(|sub| r.eq_ignore_ascii_case(sub))
    })
}

/// What the visitor's consent amounts to at `now`. With no policy (the tenant has no active
/// consent configuration) nothing optional is granted and the visitor counts as undecided.
pub fn effective(
    policy: Option<&ConsentPolicy>,
    record: Option<&RecordView>,
    signals: &Signals,
    now: DateTime<Utc>,
) -> Effective {
    let Some(policy) = policy else {
        return Effective {
            choices: Choices::none(),
            undecided: Some(Undecided::NoRecord),
            consent_required: true,
            why: Why { functional: "no_consent", analytics: "no_consent", marketing: "no_consent" },
        };
    };
    let required = consent_required(policy, signals);

    // A record counts only while valid: not expired (a choice is not forever; CNIL suggests about
    // six months, the config says how long) and not from before a revision that asks again
    // because purposes or providers changed materially (consent must be specific and informed,
    // GDPR Art. 4(11)).
    // The stricter of the record's own expiry and the config's current lifetime: shortening
    // `consent_expiry_days` (say, to follow CNIL's six months) applies to choices already made,
    // while lengthening it does not stretch what a visitor was told when they chose.
    let undecided = match record {
        None => Some(Undecided::NoRecord),
        Some(r) if r.expires_at <= now || r.created_at + Duration::days(i64::from(policy.expiry_days)) <= now => {
            Some(Undecided::Expired)
        }
        Some(r) if r.other_config || r.revision < policy.reconsent_revision => Some(Undecided::Reconsent),
        Some(_) => None,
    };

    let mut why = Why { functional: "granted", analytics: "granted", marketing: "granted" };
    let mut choices = match (record, undecided) {
        (Some(r), None) => {
            let reason = if r.action == Action::Withdraw { "withdrawn" } else { "rejected" };
            for c in OPTIONAL {
                if !r.choices.get(c) {
                    why.set(c, reason);
                }
            }
            r.choices
        }
        (_, Some(u)) if required => {
            // No pre-ticked boxes where consent is required (CJEU C-673/17 Planet49): nothing
            // optional is granted until the visitor acts.
            let reason = match u {
                Undecided::NoRecord => "no_consent",
                Undecided::Expired => "expired",
                Undecided::Reconsent => "reconsent",
            };
            why = Why { functional: reason, analytics: reason, marketing: reason };
            Choices::none()
        }
        _ => {
            // Outside consent-required regions the configured defaults apply until the visitor
            // decides (opt-out regimes) — but never over a refusal: an opt-out stands until the
            // visitor changes it (CCPA, Cal. Civ. Code § 1798.135(c)(4)), even when their choice
            // has expired or a new revision asks them again.
            let stale = record.filter(|r| r.action != Action::AcceptAll);
            let kept = stale.map_or(Choices::all(), |r| r.choices);
            let refusal = if stale.is_some_and(|r| r.action == Action::Withdraw) { "withdrawn" } else { "rejected" };
            for c in OPTIONAL {
                why.set(
                    c,
                    match (policy.default_accepted.get(c), kept.get(c)) {
                        (false, _) => "no_consent",
                        (true, false) => refusal,
                        (true, true) => "default",
                    },
                );
            }
            policy.default_accepted.and(kept)
        }
    };

    for c in OPTIONAL {
        if !policy.enabled.get(c) {
            why.set(c, "category_disabled");
        }
    }
    choices = choices.and(policy.enabled);

    // DNT has no legal force by itself; the tenant opts in to honouring it, and then it refuses
    // every optional category, as does GPC under that setting.
    if policy.respect_do_not_track && (signals.dnt || signals.gpc) {
        let reason = if signals.gpc { "gpc" } else { "dnt" };
        for c in OPTIONAL {
            if choices.get(c) {
                why.set(c, reason);
            }
        }
        choices = Choices::none();
    }
    // GPC is a valid opt-out of sale/sharing under CCPA/CPRA (Cal. Code Regs. tit. 11 § 7025):
    // it always refuses marketing.
    if signals.gpc && choices.marketing {
        why.set(Category::Marketing, "gpc");
        choices.marketing = false;
    }

    Effective { choices, undecided, consent_required: required, why }
}

/// The category a provider config needs before it may receive identified events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequiredCategory {
    /// Cookie-free providers (Plausible, Umami): always allowed, identified only with analytics.
    #[default]
    None,
    Functional,
    Analytics,
    Marketing,
}

impl RequiredCategory {
    pub fn category(self) -> Option<Category> {
        match self {
            RequiredCategory::None => None,
            RequiredCategory::Functional => Some(Category::Functional),
            RequiredCategory::Analytics => Some(Category::Analytics),
            RequiredCategory::Marketing => Some(Category::Marketing),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.category().map_or("none", Category::as_str)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderStatus {
    Draft,
    Active,
    Paused,
    Error,
    Decommissioned,
}

impl ProviderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderStatus::Draft => "draft",
            ProviderStatus::Active => "active",
            ProviderStatus::Paused => "paused",
            ProviderStatus::Error => "error",
            ProviderStatus::Decommissioned => "decommissioned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "draft" => Some(ProviderStatus::Draft),
            "active" => Some(ProviderStatus::Active),
            "paused" => Some(ProviderStatus::Paused),
            "error" => Some(ProviderStatus::Error),
            "decommissioned" => Some(ProviderStatus::Decommissioned),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderPolicy {
    pub status: ProviderStatus,
    pub required_category: RequiredCategory,
    /// Send an anonymous event instead of nothing when the category is not granted (PostHog's
    /// cookieless mode: no person profile, a daily-rotating distinct id).
    pub cookieless_fallback: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    /// Identifiers (user id, visitor id, session id) may be sent.
    Full,
    /// No identifiers: they are stripped before sending.
    Anonymous,
}

impl Identity {
    pub fn as_str(self) -> &'static str {
        match self {
            Identity::Full => "full",
            Identity::Anonymous => "anonymous",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow { identity: Identity, reason: String },
    Deny { reason: String },
}

impl Decision {
    pub fn reason(&self) -> &str {
        match self {
            Decision::Allow { reason, .. } | Decision::Deny { reason } => reason,
        }
    }

    pub fn identity(&self) -> Option<Identity> {
        match self {
            Decision::Allow { identity, .. } => Some(*identity),
            Decision::Deny { .. } => None,
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// May an event of this visitor go to this provider config, and with which identity?
///
/// Reasons are machine-readable: `consent_granted:<category>`, `consent_default:<category>`,
/// `anonymous:<why>`, `denied:<why>`.
pub fn decide(
    policy: Option<&ConsentPolicy>,
    record: Option<&RecordView>,
    signals: &Signals,
    provider: &ProviderPolicy,
    now: DateTime<Utc>,
) -> Decision {
    let deny = |why: &str| Decision::Deny { reason: format!("denied:{why}") };
    if signals.bot {
        return deny("bot");
    }
    match provider.status {
        ProviderStatus::Active | ProviderStatus::Error => {}
        ProviderStatus::Paused => return deny("config_paused"),
        ProviderStatus::Draft => return deny("config_draft"),
        ProviderStatus::Decommissioned => return deny("config_decommissioned"),
    }
    let eff = effective(policy, record, signals, now);
    let granted = |c: Category| {
        let how = if eff.why(c) == "default" { "consent_default" } else { "consent_granted" };
        Decision::Allow { identity: Identity::Full, reason: format!("{how}:{}", c.as_str()) }
    };
    let anonymous = |why: &str| Decision::Allow { identity: Identity::Anonymous, reason: format!("anonymous:{why}") };

    match provider.required_category.category() {
        // Cookie-free providers store nothing on the device, so no consent is needed to count a
        // visit; identifiers are personal data, though, and go only with analytics consent.
        None if eff.choices.analytics => granted(Category::Analytics),
        None => anonymous(eff.why(Category::Analytics)),
        Some(c) if eff.choices.get(c) => granted(c),
        Some(c) if provider.cookieless_fallback => anonymous(eff.why(c)),
        Some(c) => deny(eff.why(c)),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use proptest::prelude::*;

    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-06-01T12:00:00Z".parse().unwrap()
    }

    fn policy() -> ConsentPolicy {
        ConsentPolicy {
            expiry_days: 180,
            geo_targeting_enabled: true,
            consent_required_regions: vec!["SE".into(), "DE".into(), "GB".into(), "US-CA".into()],
            respect_do_not_track: true,
            enabled: Choices::all(),
            default_accepted: Choices { functional: true, analytics: true, marketing: false },
            revision: 3,
            reconsent_revision: 2,
        }
    }

    fn record(choices: Choices, action: Action) -> RecordView {
        RecordView {
            choices,
            action,
            revision: 3,
            created_at: now() - Duration::days(1),
            expires_at: now() + Duration::days(179),
            other_config: false,
        }
    }

    fn from(country: &str) -> Signals {
        Signals { country: Some(country.into()), ..Default::default() }
    }

    fn provider(required: RequiredCategory) -> ProviderPolicy {
        ProviderPolicy { status: ProviderStatus::Active, required_category: required, cookieless_fallback: false }
    }

    const ANALYTICS_ONLY: Choices = Choices { functional: false, analytics: true, marketing: false };

    /// (scenario, policy, record, signals, provider, expected decision)
    type Case<'a> = (&'a str, Option<&'a ConsentPolicy>, Option<&'a RecordView>, Signals, ProviderPolicy, Decision);

    #[test]
    fn decisions() {
        use Identity::*;
        use RequiredCategory as R;
        let ga4 = provider(R::Analytics);
        let plausible = provider(R::None);
        let ads = provider(R::Marketing);
        let posthog = ProviderPolicy { cookieless_fallback: true, ..provider(R::Analytics) };
        let p = policy();
        let accepted = record(Choices::all(), Action::AcceptAll);
        let rejected = record(Choices::none(), Action::RejectAll);
        let withdrawn = record(Choices::none(), Action::Withdraw);
        let analytics_only = record(ANALYTICS_ONLY, Action::Custom);
        let expired = RecordView { expires_at: now() - Duration::seconds(1), ..accepted.clone() };
        let stale_revision = RecordView { revision: 1, ..accepted.clone() };
        let current_after_reconsent = RecordView { revision: 2, ..accepted.clone() };
        let other_config = RecordView { other_config: true, ..accepted.clone() };
        let stale_reject = RecordView { revision: 1, ..rejected.clone() };
        let expired_withdrawal = RecordView { expires_at: now() - Duration::seconds(1), ..withdrawn.clone() };
        let rejected_elsewhere = RecordView { other_config: true, ..rejected.clone() };
        let no_geo = ConsentPolicy { geo_targeting_enabled: false, ..p.clone() };
        let ignore_dnt = ConsentPolicy { respect_do_not_track: false, ..p.clone() };
        let marketing_off = ConsentPolicy { enabled: ANALYTICS_ONLY, ..p.clone() };
        // `accepted` was made a day ago with 179 days left; the config now keeps choices 1 day.
        let shortened = ConsentPolicy { expiry_days: 1, ..p.clone() };
        let lengthened = ConsentPolicy { expiry_days: 730, ..p.clone() };
        let dnt = Signals { dnt: true, ..from("SE") };
        let gpc = Signals { gpc: true, ..from("SE") };
        let gpc_us = Signals { gpc: true, ..from("US") };
        let californian = Signals { region: Some("US-CA".into()), ..from("US") };
        let bot = Signals { bot: true, ..from("SE") };
        let allow = |identity, reason: &str| Decision::Allow { identity, reason: reason.into() };
        let deny = |reason: &str| Decision::Deny { reason: reason.into() };

        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("accept all, consent region", Some(&p), Some(&accepted), from("SE"), ga4, allow(Full, "consent_granted:analytics")),
            ("reject all sends nothing to ga4", Some(&p), Some(&rejected), from("SE"), ga4, deny("denied:rejected")),
            ("reject all: plausible anonymous", Some(&p), Some(&rejected), from("SE"), plausible, allow(Anonymous, "anonymous:rejected")),
            ("accept all: plausible identified", Some(&p), Some(&accepted), from("SE"), plausible, allow(Full, "consent_granted:analytics")),
            ("withdrawn", Some(&p), Some(&withdrawn), from("SE"), ga4, deny("denied:withdrawn")),
            ("custom: analytics yes", Some(&p), Some(&analytics_only), from("SE"), ga4, allow(Full, "consent_granted:analytics")),
            ("custom: marketing no", Some(&p), Some(&analytics_only), from("SE"), ads, deny("denied:rejected")),
            ("no record in consent region", Some(&p), None, from("SE"), ga4, deny("denied:no_consent")),
            ("no record, unknown country", Some(&p), None, Signals::default(), ga4, deny("denied:no_consent")),
            ("no record, geo targeting off", Some(&no_geo), None, from("US"), ga4, deny("denied:no_consent")),
            ("no record outside region: default on", Some(&p), None, from("US"), ga4, allow(Full, "consent_default:analytics")),
            ("no record outside region: default off", Some(&p), None, from("US"), ads, deny("denied:no_consent")),
            ("subdivision in the list (US-CA)", Some(&p), None, californian, ga4, deny("denied:no_consent")),
            ("expired record", Some(&p), Some(&expired), from("SE"), ga4, deny("denied:expired")),
            ("expired record outside region: defaults", Some(&p), Some(&expired), from("US"), ga4, allow(Full, "consent_default:analytics")),
            ("older than a since shortened expiry", Some(&shortened), Some(&accepted), from("SE"), ga4, deny("denied:expired")),
            ("a lengthened expiry does not stretch a record", Some(&lengthened), Some(&expired), from("SE"), ga4, deny("denied:expired")),
            ("record before a re-consent revision", Some(&p), Some(&stale_revision), from("SE"), ga4, deny("denied:reconsent")),
            ("a record under another config is asked again", Some(&p), Some(&other_config), from("SE"), ga4, deny("denied:reconsent")),
            ("a refusal outlives a re-consent revision (opt-out region)", Some(&p), Some(&stale_reject), from("US"), ga4, deny("denied:rejected")),
            ("a withdrawal outlives its expiry (opt-out region)", Some(&p), Some(&expired_withdrawal), from("US"), ga4, deny("denied:withdrawn")),
            ("a refusal outlives a config switch (opt-out region)", Some(&p), Some(&rejected_elsewhere), from("US"), ga4, deny("denied:rejected")),
            ("a stale acceptance falls back to the defaults", Some(&p), Some(&stale_revision), from("US"), ga4, allow(Full, "consent_default:analytics")),
            ("record at the re-consent revision", Some(&p), Some(&current_after_reconsent), from("SE"), ga4, allow(Full, "consent_granted:analytics")),
            ("dnt respected", Some(&p), Some(&accepted), dnt.clone(), ga4, deny("denied:dnt")),
            ("dnt respected: plausible anonymous", Some(&p), Some(&accepted), dnt.clone(), plausible, allow(Anonymous, "anonymous:dnt")),
            ("dnt ignored", Some(&ignore_dnt), Some(&accepted), dnt.clone(), ga4, allow(Full, "consent_granted:analytics")),
            ("gpc respected denies analytics", Some(&p), Some(&accepted), gpc.clone(), ga4, deny("denied:gpc")),
            ("gpc always denies marketing", Some(&ignore_dnt), Some(&accepted), gpc.clone(), ads, deny("denied:gpc")),
            ("gpc without dnt setting keeps analytics", Some(&ignore_dnt), Some(&accepted), gpc_us, ga4, allow(Full, "consent_granted:analytics")),
            ("disabled category", Some(&marketing_off), Some(&accepted), from("SE"), ads, deny("denied:category_disabled")),
            ("bot", Some(&p), Some(&accepted), bot, plausible, deny("denied:bot")),
            ("paused config", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { status: ProviderStatus::Paused, ..ga4 }, deny("denied:config_paused")),
            ("draft config", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { status: ProviderStatus::Draft, ..ga4 }, deny("denied:config_draft")),
            ("decommissioned config", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { status: ProviderStatus::Decommissioned, ..ga4 }, deny("denied:config_decommissioned")),
            ("config in error still decides (deliveries wait)", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { status: ProviderStatus::Error, ..ga4 }, allow(Full, "consent_granted:analytics")),
            ("posthog cookieless fallback", Some(&p), Some(&rejected), from("SE"), posthog, allow(Anonymous, "anonymous:rejected")),
            ("posthog with consent", Some(&p), Some(&accepted), from("SE"), posthog, allow(Full, "consent_granted:analytics")),
            ("no consent config at all", None, Some(&accepted), from("SE"), ga4, deny("denied:no_consent")),
            ("no consent config: plausible anonymous", None, None, from("US"), plausible, allow(Anonymous, "anonymous:no_consent")),
        ];
        for (scenario, policy, record, signals, provider, expected) in cases {
            assert_eq!(decide(policy, record, &signals, &provider, now()), expected, "{scenario}");
        }
    }

    #[test]
    fn effective_state_for_the_banner() {
        let p = policy();
        let e = effective(Some(&p), None, &from("SE"), now());
        assert_eq!((e.undecided, e.consent_required, e.choices), (Some(Undecided::NoRecord), true, Choices::none()));
        let e = effective(Some(&p), None, &from("US"), now());
        assert_eq!((e.undecided, e.consent_required), (Some(Undecided::NoRecord), false));
        assert_eq!(e.choices, p.default_accepted);
        let e = effective(Some(&p), Some(&record(ANALYTICS_ONLY, Action::Custom)), &from("SE"), now());
        assert_eq!((e.undecided, e.choices), (None, ANALYTICS_ONLY));
        let e = effective(Some(&p), Some(&record(Choices::none(), Action::Withdraw)), &from("SE"), now());
        assert_eq!((e.undecided, e.why(Category::Analytics)), (None, "withdrawn"));
    }

    #[test]
    fn necessary_is_always_granted_and_cannot_be_refused() {
        assert!(Choices::none().get(Category::Necessary));
        let json = serde_json::to_value(Choices::none()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"necessary": true, "functional": false, "analytics": false, "marketing": false})
        );
        assert!(serde_json::from_value::<Choices>(serde_json::json!({"necessary": false})).is_err());
        let c: Choices = serde_json::from_value(serde_json::json!({"analytics": true})).unwrap();
        assert_eq!(c, ANALYTICS_ONLY);
    }

    fn arb_choices() -> impl Strategy<Value = Choices> {
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(functional, analytics, marketing)| Choices {
            functional,
            analytics,
            marketing,
        })
    }

    fn arb_required() -> impl Strategy<Value = RequiredCategory> {
        prop_oneof![
            Just(RequiredCategory::Functional),
            Just(RequiredCategory::Analytics),
            Just(RequiredCategory::Marketing)
        ]
    }

    proptest! {
        /// Whatever the region, defaults, signals or provider: a category the visitor denied in
        /// a valid record is never allowed with identifiers.
        #[test]
        fn never_allow_a_category_the_visitor_denied(
            choices in arb_choices(),
            defaults in arb_choices(),
            required in arb_required(),
            fallback in any::<bool>(),
            dnt in any::<bool>(), gpc in any::<bool>(), respect in any::<bool>(), geo in any::<bool>(),
            country in prop_oneof![Just(None), Just(Some("SE".to_string())), Just(Some("US".to_string()))],
        ) {
            let p = ConsentPolicy { default_accepted: defaults, respect_do_not_track: respect, geo_targeting_enabled: geo, ..policy() };
            let r = record(choices, Action::Custom);
            let signals = Signals { dnt, gpc, country, ..Default::default() };
            let provider = ProviderPolicy { status: ProviderStatus::Active, required_category: required, cookieless_fallback: fallback };
            let d = decide(Some(&p), Some(&r), &signals, &provider, now());
            let category = required.category().unwrap();
            if !choices.get(category) {
                prop_assert_ne!(d.identity(), Some(Identity::Full), "{:?}", d);
            }
            // Marketing never goes identified under GPC.
            if gpc && required == RequiredCategory::Marketing {
                prop_assert_ne!(d.identity(), Some(Identity::Full));
            }
        }

        /// In a consent-required region, without a valid decision nothing goes identified.
        #[test]
        fn nothing_identified_before_a_decision_where_consent_is_required(
            defaults in arb_choices(),
            required in prop_oneof![Just(RequiredCategory::None), arb_required()],
        ) {
            let p = ConsentPolicy { default_accepted: defaults, ..policy() };
            let provider = ProviderPolicy { status: ProviderStatus::Active, required_category: required, cookieless_fallback: false };
            let d = decide(Some(&p), None, &from("SE"), &provider, now());
            prop_assert_ne!(d.identity(), Some(Identity::Full));
        }
    }
}
