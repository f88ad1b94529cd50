//! The consent decision: may this event go to this provider, and with which identity?
//!
//! Pure functions, no I/O: everything they need is passed in, so every rule is a row in a table
//! test. The legal reason for each rule sits next to it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    offer::ProviderChoices,
    reason::{Blocked, Reason, Refused},
};
use crate::string_enum::string_enum;

string_enum! {
    pub enum Category {
        Necessary = "necessary", Functional = "functional", Analytics = "analytics", Marketing = "marketing",
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

string_enum! {
    /// What the visitor did (`consent_record.action`).
    pub enum Action { AcceptAll = "accept_all", RejectAll = "reject_all", Custom = "custom", Withdraw = "withdraw" }
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

/// The visitor's latest recorded choice: the decision's input from their consent record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedChoice {
    pub choices: Choices,
    pub action: Action,
    pub revision: i32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Made under another config than the tenant's active one: other texts and purposes, so it
    /// is asked again like a re-consent revision.
    pub other_config: bool,
    /// The request that made the record sent `DNT: 1` / `Sec-GPC: 1`.
    pub dnt: bool,
    pub gpc: bool,
    /// The visitor's per-provider choices, when they were offered them (see `consent::offer`).
    pub providers: Option<ProviderChoices>,
}

impl RecordedChoice {
    /// Why the record does not grant `category`. A category the visitor's signal locked off in
    /// the banner (`offered` in `visitors`) was never theirs to grant: after "Accept all" (or a
    /// custom choice) under that signal, the signal is the reason, not a refusal.
    fn refusal(&self, category: Category, policy: &ConsentPolicy) -> Refused {
        match self.action {
            Action::Withdraw => Refused::Withdrawn,
            Action::RejectAll => Refused::Rejected,
            Action::AcceptAll | Action::Custom => {
                locked_by(policy, self.dnt, self.gpc, category).unwrap_or(Refused::Rejected)
            }
        }
    }
}

/// The signal that stops all tracking under `policy`: DNT or GPC when the tenant honours them.
/// DNT has no legal force by itself; the tenant opts in with `respect_do_not_track`, and
/// "honours Do Not Track" then means *not tracked* — by no provider, cookie-free ones included.
fn respected_signal(policy: &ConsentPolicy, dnt: bool, gpc: bool) -> Option<Refused> {
    (policy.respect_do_not_track && (dnt || gpc)).then_some(if gpc { Refused::Gpc } else { Refused::Dnt })
}

/// The respected DNT/GPC signal that stops all tracking of this visitor under `policy`, if any —
/// the first consent rule of [`decide`], and what keeps a flags evaluation from reaching PostHog
/// (asking PostHog about a visitor is tracking them too).
pub fn not_tracked(policy: Option<&ConsentPolicy>, signals: &Signals) -> Option<Refused> {
    policy.and_then(|p| respected_signal(p, signals.dnt, signals.gpc))
}

/// The signal that locks `category` off: a respected DNT/GPC every optional category; GPC alone
/// marketing, as a valid opt-out of sale/sharing under CCPA/CPRA (Cal. Code Regs. tit. 11
/// § 7025), whatever the setting.
fn locked_by(policy: &ConsentPolicy, dnt: bool, gpc: bool, category: Category) -> Option<Refused> {
    respected_signal(policy, dnt, gpc).or((gpc && category == Category::Marketing).then_some(Refused::Gpc))
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

/// Where a category stands for the visitor, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Granted by the visitor's valid record.
    Granted,
    /// Granted by the config's default (no valid decision, outside consent-required regions).
    Default,
    /// Not granted, for this reason.
    Refused(Refused),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Why {
    functional: Standing,
    analytics: Standing,
    marketing: Standing,
}

impl Why {
    const fn all(s: Standing) -> Why {
        Why { functional: s, analytics: s, marketing: s }
    }

    fn get(&self, category: Category) -> Standing {
        match category {
            Category::Necessary => Standing::Granted,
            Category::Functional => self.functional,
            Category::Analytics => self.analytics,
            Category::Marketing => self.marketing,
        }
    }

    fn set(&mut self, category: Category, why: Standing) {
        match category {
            Category::Necessary => {}
            Category::Functional => self.functional = why,
            Category::Analytics => self.analytics = why,
            Category::Marketing => self.marketing = why,
        }
    }
}

impl Effective {
    /// Why `category` is granted or refused.
    pub fn why(&self, category: Category) -> Standing {
        self.why.get(category)
    }
}

const OPTIONAL: [Category; 3] = [Category::Functional, Category::Analytics, Category::Marketing];

/// Is consent required for a visitor from `signals`' location under `policy`?
///
/// Unknown location counts as required: without knowing where the visitor is, the gateway must
/// assume the strictest law applies (GDPR Art. 3(2) reaches visitors in the EU wherever the site is).
/// So does an unknown subdivision of a country with a listed one: a visitor from `US` whose state
/// is unknown (a country header alone, a Country database) may be in `US-CA`.
pub fn consent_required(policy: &ConsentPolicy, signals: &Signals) -> bool {
    if !policy.geo_targeting_enabled {
        return true;
    }
    let Some(country) = signals.country.as_deref() else { return true };
    policy.consent_required_regions.iter().any(|r| match r.split_once('-') {
        Some((of, _)) if of.eq_ignore_ascii_case(country) => {
            signals.region.as_deref().is_none_or(|sub| r.eq_ignore_ascii_case(sub))
        }
        Some(_) => false,
        None => r.eq_ignore_ascii_case(country),
    })
}

/// What the visitor's consent amounts to at `now`. With no policy (the tenant has no active
/// consent configuration) nothing optional is granted and the visitor counts as undecided.
pub fn effective(
    policy: Option<&ConsentPolicy>,
    record: Option<&RecordedChoice>,
    signals: &Signals,
    now: DateTime<Utc>,
) -> Effective {
    let Some(policy) = policy else {
        return Effective {
            choices: Choices::none(),
            undecided: Some(Undecided::NoRecord),
            consent_required: true,
            why: Why::all(Standing::Refused(Refused::NoConsent)),
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

    let mut why = Why::all(Standing::Granted);
    let mut choices = match (record, undecided) {
        (Some(r), None) => {
            for c in OPTIONAL {
                if !r.choices.get(c) {
                    why.set(c, Standing::Refused(r.refusal(c, policy)));
                }
            }
            r.choices
        }
        (_, Some(u)) if required => {
            // No pre-ticked boxes where consent is required (CJEU C-673/17 Planet49): nothing
            // optional is granted until the visitor acts.
            let reason = match u {
                Undecided::NoRecord => Refused::NoConsent,
                Undecided::Expired => Refused::Expired,
                Undecided::Reconsent => Refused::Reconsent,
            };
            why = Why::all(Standing::Refused(reason));
            Choices::none()
        }
        _ => {
            // Outside consent-required regions the configured defaults apply until the visitor
            // decides (opt-out regimes) — but never over a refusal: an opt-out stands until the
            // visitor changes it (CCPA, Cal. Civ. Code § 1798.135(c)(4)), even when their choice
            // has expired or a new revision asks them again.
            let stale = record.filter(|r| r.action != Action::AcceptAll);
            let kept = stale.map_or(Choices::all(), |r| r.choices);
            for c in OPTIONAL {
                why.set(
                    c,
                    match (policy.default_accepted.get(c), kept.get(c)) {
                        (false, _) => Standing::Refused(Refused::NoConsent),
                        (true, false) => Standing::Refused(stale.map_or(Refused::Rejected, |r| r.refusal(c, policy))),
                        (true, true) => Standing::Default,
                    },
                );
            }
            policy.default_accepted.and(kept)
        }
    };

    for c in OPTIONAL {
        if !policy.enabled.get(c) {
            why.set(c, Standing::Refused(Refused::CategoryDisabled));
        }
    }
    choices = choices.and(policy.enabled);

    // A respected DNT/GPC refuses every optional category (see `respected_signal`).
    if let Some(reason) = respected_signal(policy, signals.dnt, signals.gpc) {
        for c in OPTIONAL {
            if choices.get(c) {
                why.set(c, Standing::Refused(reason));
            }
        }
        choices = Choices::none();
    }
    // GPC is a valid opt-out of sale/sharing under CCPA/CPRA (Cal. Code Regs. tit. 11 § 7025):
    // it always refuses marketing.
    if signals.gpc && choices.marketing {
        why.set(Category::Marketing, Standing::Refused(Refused::Gpc));
        choices.marketing = false;
    }

    Effective { choices, undecided, consent_required: required, why }
}

string_enum! {
    /// The category a provider config needs before it may receive identified events
    /// (`provider_config.required_category`).
    pub enum RequiredCategory {
        /// Cookie-free providers (Plausible, Umami): always allowed, identified only with analytics.
        None = "none",
        Functional = "functional",
        Analytics = "analytics",
        Marketing = "marketing",
    }
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
}

string_enum! {
    /// A provider config's lifecycle state (`provider_config.status`); see `providers::config`.
    pub enum ProviderStatus {
        Draft = "draft", Active = "active", Paused = "paused", Error = "error", Decommissioned = "decommissioned",
    }
}

/// What the decision needs of a provider config. `status` and `required_category` are `None`
/// when the stored value cannot be read: such a config is denied (`denied:config_invalid`),
/// never guessed — an unreadable category read as `none` would forward without consent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProviderPolicy {
    pub status: Option<ProviderStatus>,
    pub required_category: Option<RequiredCategory>,
    /// Send an anonymous event instead of nothing when the category is not granted (PostHog's
    /// cookieless mode: no person profile, a daily-rotating distinct id).
    pub cookieless_fallback: bool,
    /// Allowed only when the visitor's valid consent *record* grants the required category
    /// (GA4's `require_cookie_consent`): a config default outside the consent-required regions
    /// is not enough, and there is no cookieless fallback. See `needs_a_record`.
    pub requires_record: bool,
    /// The provider config's id: what a visitor's per-provider choices name.
    pub config_id: uuid::Uuid,
}

string_enum! {
    /// What a decision lets through (`delivery.identity`, a decision's `identity` in `analytics_event.decisions`).
    pub enum Identity {
        /// Identifiers (user id, visitor id, session id) may be sent.
        Full = "full",
        /// No identifiers: they are stripped before sending.
        Anonymous = "anonymous",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow { identity: Identity, reason: Reason },
    Deny { reason: Reason },
}

impl Decision {
    pub fn reason(&self) -> Reason {
        match self {
            Decision::Allow { reason, .. } | Decision::Deny { reason } => *reason,
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
/// The reason says why, machine-readably (see [`Reason`] and docs/decision-reasons.md).
pub fn decide(
    policy: Option<&ConsentPolicy>,
    record: Option<&RecordedChoice>,
    signals: &Signals,
    provider: &ProviderPolicy,
    now: DateTime<Utc>,
) -> Decision {
    let blocked = |why: Blocked| Decision::Deny { reason: Reason::Blocked(why) };
    if signals.bot {
        return blocked(Blocked::Bot);
    }
    // Fail closed, per config: a row whose status or category cannot be read forwards nothing.
    let (Some(status), Some(required)) = (provider.status, provider.required_category) else {
        return blocked(Blocked::ConfigInvalid);
    };
    match status {
        ProviderStatus::Active | ProviderStatus::Error => {}
        ProviderStatus::Paused => return blocked(Blocked::ConfigPaused),
        ProviderStatus::Draft => return blocked(Blocked::ConfigDraft),
        ProviderStatus::Decommissioned => return blocked(Blocked::ConfigDecommissioned),
    }
    // Not tracked means no provider gets the event: not even anonymously, not cookie-free ones.
    if let Some(signal) = not_tracked(policy, signals) {
        return Decision::Deny { reason: Reason::Denied(signal) };
    }
    let eff = effective(policy, record, signals, now);
    // Only called for a category that is not granted, so `Granted`/`Default` cannot occur; were
    // it otherwise, refusing is the safe answer.
    let refused = |c: Category| match eff.why(c) {
        Standing::Refused(why) => why,
        Standing::Granted | Standing::Default => Refused::NoConsent,
    };
    let granted = |c: Category| {
        let reason = if eff.why(c) == Standing::Default { Reason::Default(c) } else { Reason::Granted(c) };
        Decision::Allow { identity: Identity::Full, reason }
    };
    let anonymous =
        |c: Category| Decision::Allow { identity: Identity::Anonymous, reason: Reason::Anonymous(refused(c)) };
    if provider.requires_record
        && let Some(denied) = needs_a_record(&eff, required)
    {
        return denied;
    }

    // Within a granted category, the visitor's per-provider choices may still refuse this config:
    // like refusing the category, for this config alone.
    let listed_under = required.category().unwrap_or(Category::Analytics);
    if eff.choices.get(listed_under)
        && let Some(why) = provider_refusal(record, eff.why(listed_under), provider.config_id)
    {
        return match required.category() {
            Some(_) if !provider.cookieless_fallback => Decision::Deny { reason: Reason::Denied(why) },
            _ => Decision::Allow { identity: Identity::Anonymous, reason: Reason::Anonymous(why) },
        };
    }

    match required.category() {
        // Cookie-free providers store nothing on the device, so no consent is needed to count a
        // visit; identifiers are personal data, though, and go only with analytics consent.
        None if eff.choices.analytics => granted(Category::Analytics),
        None => anonymous(Category::Analytics),
        Some(c) if eff.choices.get(c) => granted(c),
        Some(c) if provider.cookieless_fallback => anonymous(c),
        Some(c) => Decision::Deny { reason: Reason::Denied(refused(c)) },
    }
}

/// Why the visitor's per-provider choices refuse a config whose category (`standing`) is granted,
/// if they do. A config they switched off: `provider_refused`, also where defaults apply (a
/// refusal stands). A config that was not in the offer they chose on, under their valid record:
/// `provider_not_offered` — added after their choice, it waits until they are asked again (the
/// banner asks when the offer changed); before a valid decision the defaults cover it like any
/// other. Without per-provider choices in the record, the category decides alone.
fn provider_refusal(record: Option<&RecordedChoice>, standing: Standing, config_id: uuid::Uuid) -> Option<Refused> {
    let providers = record?.providers.as_ref()?;
    match (providers.get(config_id), standing) {
        (Some(true), _) => None,
        (Some(false), _) => Some(Refused::ProviderRefused),
        (None, Standing::Granted) => Some(Refused::ProviderNotOffered),
        (None, _) => None,
    }
}

/// The rule of a config that requires a consent *record* (GA4's `require_cookie_consent`, the
/// customer's card: "refuses to send without a consent record granting analytics"): the visitor's
/// valid record must grant the required category — `analytics` for a config requiring none, since
/// the rule is about the provider's analytics cookie. Defaults outside the consent-required regions
/// do not count (an opt-out regime lets the site count, but the provider's own terms ask for
/// consent), nor does a cookieless fallback. `None` when the record grants it: the ordinary rule
/// decides. Otherwise the denial, with the reason the category is refused — or, where the defaults
/// would have granted it, `no_record` (`expired` / `reconsent` when a record exists but no longer
/// counts).
fn needs_a_record(eff: &Effective, required: RequiredCategory) -> Option<Decision> {
    let category = required.category().unwrap_or(Category::Analytics);
    let why = match eff.why(category) {
        Standing::Granted => return None,
        Standing::Refused(why) => why,
        Standing::Default => match eff.undecided {
            Some(Undecided::Expired) => Refused::Expired,
            Some(Undecided::Reconsent) => Refused::Reconsent,
            Some(Undecided::NoRecord) | None => Refused::NoRecord,
        },
    };
    Some(Decision::Deny { reason: Reason::Denied(why) })
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

    fn record(choices: Choices, action: Action) -> RecordedChoice {
        RecordedChoice {
            choices,
            action,
            revision: 3,
            created_at: now() - Duration::days(1),
            expires_at: now() + Duration::days(179),
            other_config: false,
            dnt: false,
            gpc: false,
            providers: None,
        }
    }

    fn from(country: &str) -> Signals {
        Signals { country: Some(country.into()), ..Default::default() }
    }

    /// Outside the policy's regions: in the US (which has `US-CA` listed), the state known.
    fn texan() -> Signals {
        Signals { region: Some("US-TX".into()), ..from("US") }
    }

    fn provider(required: RequiredCategory) -> ProviderPolicy {
        ProviderPolicy {
            status: Some(ProviderStatus::Active),
            required_category: Some(required),
            cookieless_fallback: false,
            requires_record: false,
            config_id: uuid::Uuid::nil(),
        }
    }

    const ANALYTICS_ONLY: Choices = Choices { functional: false, analytics: true, marketing: false };

    /// (scenario, policy, record, signals, provider, expected decision)
    type Case<'a> = (&'a str, Option<&'a ConsentPolicy>, Option<&'a RecordedChoice>, Signals, ProviderPolicy, Decision);

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
        let expired = RecordedChoice { expires_at: now() - Duration::seconds(1), ..accepted.clone() };
        let stale_revision = RecordedChoice { revision: 1, ..accepted.clone() };
        let current_after_reconsent = RecordedChoice { revision: 2, ..accepted.clone() };
        let other_config = RecordedChoice { other_config: true, ..accepted.clone() };
        let stale_reject = RecordedChoice { revision: 1, ..rejected.clone() };
        let expired_withdrawal = RecordedChoice { expires_at: now() - Duration::seconds(1), ..withdrawn.clone() };
        let rejected_elsewhere = RecordedChoice { other_config: true, ..rejected.clone() };
        // What `visitors::submit` stores for "Accept all" under a signal: what the banner offered.
        let accepted_under_dnt = RecordedChoice { dnt: true, ..record(Choices::none(), Action::AcceptAll) };
        let accepted_under_gpc =
            RecordedChoice { gpc: true, ..record(Choices { marketing: false, ..Choices::all() }, Action::AcceptAll) };
        let rejected_under_dnt = RecordedChoice { dnt: true, ..rejected.clone() };
        let no_geo = ConsentPolicy { geo_targeting_enabled: false, ..p.clone() };
        let ignore_dnt = ConsentPolicy { respect_do_not_track: false, ..p.clone() };
        let marketing_off = ConsentPolicy { enabled: ANALYTICS_ONLY, ..p.clone() };
        // `accepted` was made a day ago with 179 days left; the config now keeps choices 1 day.
        let shortened = ConsentPolicy { expiry_days: 1, ..p.clone() };
        let lengthened = ConsentPolicy { expiry_days: 730, ..p.clone() };
        let dnt = Signals { dnt: true, ..from("SE") };
        let gpc = Signals { gpc: true, ..from("SE") };
        let gpc_us = Signals { gpc: true, ..texan() };
        let californian = Signals { region: Some("US-CA".into()), ..texan() };
        let bot = Signals { bot: true, ..from("SE") };
        // Reasons are written as their stored strings, which the reason table test pins.
        let reason = |r: &str| Reason::parse(r).unwrap_or_else(|| panic!("not a reason: {r}"));
        let allow = |identity, r: &str| Decision::Allow { identity, reason: reason(r) };
        let deny = |r: &str| Decision::Deny { reason: reason(r) };

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
            ("no record, geo targeting off", Some(&no_geo), None, texan(), ga4, deny("denied:no_consent")),
            ("no record outside region: default on", Some(&p), None, texan(), ga4, allow(Full, "consent_default:analytics")),
            ("no record outside region: default off", Some(&p), None, texan(), ads, deny("denied:no_consent")),
            ("subdivision in the list (US-CA)", Some(&p), None, californian, ga4, deny("denied:no_consent")),
            ("US-CA listed, the US state unknown", Some(&p), None, from("US"), ga4, deny("denied:no_consent")),
            ("no subdivision listed for the country", Some(&p), None, from("BR"), ga4, allow(Full, "consent_default:analytics")),
            ("expired record", Some(&p), Some(&expired), from("SE"), ga4, deny("denied:expired")),
            ("expired record outside region: defaults", Some(&p), Some(&expired), texan(), ga4, allow(Full, "consent_default:analytics")),
            ("older than a since shortened expiry", Some(&shortened), Some(&accepted), from("SE"), ga4, deny("denied:expired")),
            ("a lengthened expiry does not stretch a record", Some(&lengthened), Some(&expired), from("SE"), ga4, deny("denied:expired")),
            ("record before a re-consent revision", Some(&p), Some(&stale_revision), from("SE"), ga4, deny("denied:reconsent")),
            ("a record under another config is asked again", Some(&p), Some(&other_config), from("SE"), ga4, deny("denied:reconsent")),
            ("a refusal outlives a re-consent revision (opt-out region)", Some(&p), Some(&stale_reject), texan(), ga4, deny("denied:rejected")),
            ("a withdrawal outlives its expiry (opt-out region)", Some(&p), Some(&expired_withdrawal), texan(), ga4, deny("denied:withdrawn")),
            ("a refusal outlives a config switch (opt-out region)", Some(&p), Some(&rejected_elsewhere), texan(), ga4, deny("denied:rejected")),
            ("a stale acceptance falls back to the defaults", Some(&p), Some(&stale_revision), texan(), ga4, allow(Full, "consent_default:analytics")),
            ("record at the re-consent revision", Some(&p), Some(&current_after_reconsent), from("SE"), ga4, allow(Full, "consent_granted:analytics")),
            ("dnt respected", Some(&p), Some(&accepted), dnt.clone(), ga4, deny("denied:dnt")),
            ("dnt respected: not even cookie-free providers", Some(&p), Some(&accepted), dnt.clone(), plausible, deny("denied:dnt")),
            ("gpc respected: not even cookie-free providers", Some(&p), None, gpc.clone(), plausible, deny("denied:gpc")),
            ("dnt respected: no cookieless fallback either", Some(&p), Some(&rejected), dnt.clone(), posthog, deny("denied:dnt")),
            ("dnt not respected: no effect", Some(&ignore_dnt), Some(&accepted), dnt.clone(), plausible, allow(Full, "consent_granted:analytics")),
            ("gpc not respected: cookie-free providers still count", Some(&ignore_dnt), Some(&accepted), gpc.clone(), plausible, allow(Full, "consent_granted:analytics")),
            ("accept all under dnt: the signal locked it off", Some(&p), Some(&accepted_under_dnt), from("SE"), ga4, deny("denied:dnt")),
            ("accept all under dnt: cookie-free anonymous, for the signal", Some(&p), Some(&accepted_under_dnt), from("SE"), plausible, allow(Anonymous, "anonymous:dnt")),
            ("accept all under gpc (not respected): marketing locked by gpc", Some(&ignore_dnt), Some(&accepted_under_gpc), from("SE"), ads, deny("denied:gpc")),
            ("accept all under gpc (not respected): analytics granted", Some(&ignore_dnt), Some(&accepted_under_gpc), from("SE"), ga4, allow(Full, "consent_granted:analytics")),
            ("reject all under dnt is a refusal", Some(&p), Some(&rejected_under_dnt), from("SE"), ga4, deny("denied:rejected")),
            ("dnt ignored", Some(&ignore_dnt), Some(&accepted), dnt.clone(), ga4, allow(Full, "consent_granted:analytics")),
            ("gpc respected denies analytics", Some(&p), Some(&accepted), gpc.clone(), ga4, deny("denied:gpc")),
            ("gpc always denies marketing", Some(&ignore_dnt), Some(&accepted), gpc.clone(), ads, deny("denied:gpc")),
            ("gpc without dnt setting keeps analytics", Some(&ignore_dnt), Some(&accepted), gpc_us, ga4, allow(Full, "consent_granted:analytics")),
            ("disabled category", Some(&marketing_off), Some(&accepted), from("SE"), ads, deny("denied:category_disabled")),
            ("bot", Some(&p), Some(&accepted), bot, plausible, deny("denied:bot")),
            ("paused config", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { status: Some(ProviderStatus::Paused), ..ga4 }, deny("denied:config_paused")),
            ("draft config", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { status: Some(ProviderStatus::Draft), ..ga4 }, deny("denied:config_draft")),
            ("decommissioned config", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { status: Some(ProviderStatus::Decommissioned), ..ga4 }, deny("denied:config_decommissioned")),
            ("config in error still decides (deliveries wait)", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { status: Some(ProviderStatus::Error), ..ga4 }, allow(Full, "consent_granted:analytics")),
            ("unreadable status", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { status: None, ..plausible }, deny("denied:config_invalid")),
            ("unreadable category", Some(&p), Some(&accepted), from("SE"), ProviderPolicy { required_category: None, ..plausible }, deny("denied:config_invalid")),
            ("posthog cookieless fallback", Some(&p), Some(&rejected), from("SE"), posthog, allow(Anonymous, "anonymous:rejected")),
            ("posthog with consent", Some(&p), Some(&accepted), from("SE"), posthog, allow(Full, "consent_granted:analytics")),
            ("no consent config at all", None, Some(&accepted), from("SE"), ga4, deny("denied:no_consent")),
            ("no consent config: plausible anonymous", None, None, texan(), plausible, allow(Anonymous, "anonymous:no_consent")),
        ];
        for (scenario, policy, record, signals, provider, expected) in cases {
            assert_eq!(decide(policy, record, &signals, &provider, now()), expected, "{scenario}");
        }
    }

    /// A config that requires a consent record (GA4's `require_cookie_consent`): only a valid
    /// record granting the category lets it through — in every region, without fallback.
    #[test]
    fn configs_that_require_a_record() {
        use Identity::*;
        use RequiredCategory as R;
        let ga4 = ProviderPolicy { requires_record: true, ..provider(R::Analytics) };
        let plain = provider(R::Analytics);
        let with_fallback = ProviderPolicy { cookieless_fallback: true, ..ga4 };
        let no_category = ProviderPolicy { requires_record: true, ..provider(R::None) };
        let p = policy();
        let accepted = record(Choices::all(), Action::AcceptAll);
        let analytics_only = record(ANALYTICS_ONLY, Action::Custom);
        let rejected = record(Choices::none(), Action::RejectAll);
        let withdrawn = record(Choices::none(), Action::Withdraw);
        let expired = RecordedChoice { expires_at: now() - Duration::seconds(1), ..accepted.clone() };
        let stale_revision = RecordedChoice { revision: 1, ..accepted.clone() };
        let other_config = RecordedChoice { other_config: true, ..accepted.clone() };
        let ignore_dnt = ConsentPolicy { respect_do_not_track: false, ..p.clone() };
        let everything_on = ConsentPolicy { default_accepted: Choices::all(), ..p.clone() };
        let gpc_us = Signals { gpc: true, ..texan() };
        let dnt = Signals { dnt: true, ..texan() };
        let reason = |r: &str| Reason::parse(r).unwrap_or_else(|| panic!("not a reason: {r}"));
        let allow = |identity, r: &str| Decision::Allow { identity, reason: reason(r) };
        let deny = |r: &str| Decision::Deny { reason: reason(r) };

        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("record grants, consent region", Some(&p), Some(&accepted), from("SE"), ga4, allow(Full, "consent_granted:analytics")),
            ("record grants, opt-out region", Some(&p), Some(&accepted), texan(), ga4, allow(Full, "consent_granted:analytics")),
            ("custom record with analytics", Some(&p), Some(&analytics_only), texan(), ga4, allow(Full, "consent_granted:analytics")),
            ("no record outside consent regions: defaults are not enough", Some(&p), None, texan(), ga4, deny("denied:no_record")),
            ("... where a config without the rule goes by the default", Some(&p), None, texan(), plain, allow(Full, "consent_default:analytics")),
            ("every default on is still not a record", Some(&everything_on), None, texan(), ga4, deny("denied:no_record")),
            ("no record in a consent region", Some(&p), None, from("SE"), ga4, deny("denied:no_consent")),
            ("no record, unknown country", Some(&p), None, Signals::default(), ga4, deny("denied:no_consent")),
            ("expired record outside consent regions", Some(&p), Some(&expired), texan(), ga4, deny("denied:expired")),
            ("record before a re-consent revision, outside", Some(&p), Some(&stale_revision), texan(), ga4, deny("denied:reconsent")),
            ("record under another config, outside", Some(&p), Some(&other_config), texan(), ga4, deny("denied:reconsent")),
            ("rejected", Some(&p), Some(&rejected), texan(), ga4, deny("denied:rejected")),
            ("withdrawn", Some(&p), Some(&withdrawn), from("SE"), ga4, deny("denied:withdrawn")),
            ("no cookieless fallback without a record", Some(&p), None, texan(), with_fallback, deny("denied:no_record")),
            ("no cookieless fallback after a refusal", Some(&p), Some(&rejected), from("SE"), with_fallback, deny("denied:rejected")),
            ("requiring no category: analytics must be recorded", Some(&p), None, texan(), no_category, deny("denied:no_record")),
            ("requiring no category: refused analytics is not anonymous", Some(&p), Some(&rejected), from("SE"), no_category, deny("denied:rejected")),
            ("requiring no category: recorded analytics", Some(&p), Some(&accepted), texan(), no_category, allow(Full, "consent_granted:analytics")),
            ("no consent config at all", None, Some(&accepted), texan(), ga4, deny("denied:no_consent")),
            ("dnt respected comes first", Some(&p), Some(&accepted), dnt, ga4, deny("denied:dnt")),
            ("gpc not respected: analytics still recorded", Some(&ignore_dnt), Some(&accepted), gpc_us, ga4, allow(Full, "consent_granted:analytics")),
            ("bot", Some(&p), Some(&accepted), Signals { bot: true, ..texan() }, ga4, deny("denied:bot")),
            ("paused", Some(&p), Some(&accepted), texan(), ProviderPolicy { status: Some(ProviderStatus::Paused), ..ga4 }, deny("denied:config_paused")),
        ];
        for (scenario, policy, record, signals, provider, expected) in cases {
            assert_eq!(decide(policy, record, &signals, &provider, now()), expected, "{scenario}");
        }
    }

    /// Per-provider choices: within a granted category, each config as the visitor switched it;
    /// a config not in the offer they chose on is refused until they are asked again.
    #[test]
    fn per_provider_choices() {
        use Identity::*;
        use RequiredCategory as R;
        let id = uuid::Uuid::from_u128;
        let on = |n: u128, required| ProviderPolicy { config_id: id(n), ..provider(required) };
        let (plausible, ga4, ga4_refused, ga4_added, ads) =
            (on(1, R::None), on(2, R::Analytics), on(3, R::Analytics), on(9, R::Analytics), on(4, R::Marketing));
        let plausible_refused = on(5, R::None);
        let posthog_refused = ProviderPolicy { cookieless_fallback: true, ..on(6, R::Analytics) };
        let choices = |pairs: &[(u128, bool)]| ProviderChoices {
            offer: "0123456789abcdef".into(),
            providers: pairs.iter().map(|&(n, b)| (id(n), b)).collect(),
        };
        let shown = choices(&[(1, true), (2, true), (3, false), (4, false), (5, false), (6, false)]);
        let p = policy();
        let analytics_only =
            RecordedChoice { providers: Some(shown.clone()), ..record(ANALYTICS_ONLY, Action::Custom) };
        let accepted = RecordedChoice {
            providers: Some(choices(&[(1, true), (2, true), (4, true)])),
            ..record(Choices::all(), Action::AcceptAll)
        };
        let rejected = RecordedChoice {
            providers: Some(choices(&[(1, false), (2, false)])),
            ..record(Choices::none(), Action::RejectAll)
        };
        let category_only = record(ANALYTICS_ONLY, Action::Custom);
        let expired = RecordedChoice { expires_at: now() - Duration::seconds(1), ..analytics_only.clone() };
        let stale_accept = RecordedChoice { revision: 1, ..accepted.clone() };
        let dnt = Signals { dnt: true, ..from("SE") };
        let reason = |r: &str| Reason::parse(r).unwrap_or_else(|| panic!("not a reason: {r}"));
        let allow = |identity, r: &str| Decision::Allow { identity, reason: reason(r) };
        let deny = |r: &str| Decision::Deny { reason: reason(r) };

        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("switched on, category granted", Some(&p), Some(&analytics_only), from("SE"), ga4, allow(Full, "consent_granted:analytics")),
            ("switched off within a granted category", Some(&p), Some(&analytics_only), from("SE"), ga4_refused, deny("denied:provider_refused")),
            ("added after the choice", Some(&p), Some(&analytics_only), from("SE"), ga4_added, deny("denied:provider_not_offered")),
            ("cookie-free, switched on: identified", Some(&p), Some(&analytics_only), from("SE"), plausible, allow(Full, "consent_granted:analytics")),
            ("cookie-free, switched off: anonymous", Some(&p), Some(&analytics_only), from("SE"), plausible_refused, allow(Anonymous, "anonymous:provider_refused")),
            ("cookie-free, added after: anonymous", Some(&p), Some(&accepted), from("SE"), on(7, R::None), allow(Anonymous, "anonymous:provider_not_offered")),
            ("cookieless fallback, switched off", Some(&p), Some(&analytics_only), from("SE"), posthog_refused, allow(Anonymous, "anonymous:provider_refused")),
            ("the category refused wins over a switch", Some(&p), Some(&analytics_only), from("SE"), ads, deny("denied:rejected")),
            ("accept all: every shown config", Some(&p), Some(&accepted), from("SE"), ads, allow(Full, "consent_granted:marketing")),
            ("accept all: a config not shown", Some(&p), Some(&accepted), from("SE"), ga4_refused, deny("denied:provider_not_offered")),
            ("reject all: the category is the reason", Some(&p), Some(&rejected), from("SE"), ga4, deny("denied:rejected")),
            ("no per-provider choices: the category decides", Some(&p), Some(&category_only), from("SE"), ga4_added, allow(Full, "consent_granted:analytics")),
            ("a respected signal first", Some(&p), Some(&analytics_only), dnt, ga4, deny("denied:dnt")),
            ("expired, consent region: asked again", Some(&p), Some(&expired), from("SE"), ga4, deny("denied:expired")),
            ("expired, opt-out region: a switched-off config stays off", Some(&p), Some(&expired), texan(), ga4_refused, deny("denied:provider_refused")),
            ("expired, opt-out region: others get the defaults", Some(&p), Some(&expired), texan(), ga4_added, allow(Full, "consent_default:analytics")),
            ("stale acceptance, opt-out region: defaults cover configs not shown", Some(&p), Some(&stale_accept), texan(), ga4_added, allow(Full, "consent_default:analytics")),
            ("paused config: its state first", Some(&p), Some(&analytics_only), from("SE"), ProviderPolicy { status: Some(ProviderStatus::Paused), ..ga4_refused }, deny("denied:config_paused")),
        ];
        for (scenario, policy, record, signals, provider, expected) in cases {
            assert_eq!(decide(policy, record, &signals, &provider, now()), expected, "{scenario}");
        }
    }

    /// The strings stored in the database for each value: fixed, like the reasons — rows
    /// written by every earlier release must keep reading back.
    #[test]
    fn stored_strings_are_fixed() {
        fn check<T: Copy + std::fmt::Debug + PartialEq>(
            all: &[T],
            as_str: fn(T) -> &'static str,
            parse: fn(&str) -> Option<T>,
            expected: &[&str],
        ) {
            let strings: Vec<&str> = all.iter().map(|v| as_str(*v)).collect();
            assert_eq!(strings, expected);
            for v in all {
                assert_eq!(parse(as_str(*v)), Some(*v));
            }
            assert_eq!(parse(""), None);
            assert_eq!(parse(&expected[0].to_uppercase()), None, "exact strings only");
        }
        check(Category::ALL, Category::as_str, Category::parse, &["necessary", "functional", "analytics", "marketing"]);
        check(Action::ALL, Action::as_str, Action::parse, &["accept_all", "reject_all", "custom", "withdraw"]);
        check(
            RequiredCategory::ALL,
            RequiredCategory::as_str,
            RequiredCategory::parse,
            &["none", "functional", "analytics", "marketing"],
        );
        check(
            ProviderStatus::ALL,
            ProviderStatus::as_str,
            ProviderStatus::parse,
            &["draft", "active", "paused", "error", "decommissioned"],
        );
        check(Identity::ALL, Identity::as_str, Identity::parse, &["full", "anonymous"]);
        use crate::outbox::DeliveryStatus as D;
        check(D::ALL, D::as_str, D::parse, &["pending", "delivered", "dropped", "dead"]);
        for r in RequiredCategory::ALL {
            assert_eq!(r.category().map_or("none", Category::as_str), r.as_str());
        }
        let e = ProviderStatus::read("status", "actve").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"stored status "actve" is not one of draft, active, paused, error or decommissioned"#
        );
    }

    #[test]
    fn effective_state_for_the_banner() {
        let p = policy();
        let e = effective(Some(&p), None, &from("SE"), now());
        assert_eq!((e.undecided, e.consent_required, e.choices), (Some(Undecided::NoRecord), true, Choices::none()));
        let e = effective(Some(&p), None, &texan(), now());
        assert_eq!((e.undecided, e.consent_required), (Some(Undecided::NoRecord), false));
        assert_eq!(e.choices, p.default_accepted);
        let e = effective(Some(&p), Some(&record(ANALYTICS_ONLY, Action::Custom)), &from("SE"), now());
        assert_eq!((e.undecided, e.choices), (None, ANALYTICS_ONLY));
        let e = effective(Some(&p), Some(&record(Choices::none(), Action::Withdraw)), &from("SE"), now());
        assert_eq!((e.undecided, e.why(Category::Analytics)), (None, Standing::Refused(Refused::Withdrawn)));
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
            let provider = ProviderPolicy { status: Some(ProviderStatus::Active), required_category: Some(required), cookieless_fallback: fallback, requires_record: false, config_id: uuid::Uuid::nil() };
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

        /// A config that requires a record is allowed only with a valid record (not expired, not
        /// before a re-consent revision, under the active config) that grants its category
        /// (`analytics` when it requires none) — whatever the region, defaults, signals or
        /// fallback — and then always with full identity (never an anonymous send).
        #[test]
        fn a_config_that_requires_a_record_is_never_allowed_without_one(
            choices in arb_choices(),
            defaults in arb_choices(),
            required in prop_oneof![Just(RequiredCategory::None), arb_required()],
            fallback in any::<bool>(),
            dnt in any::<bool>(), gpc in any::<bool>(), respect in any::<bool>(), geo in any::<bool>(),
            country in prop_oneof![Just(None), Just(Some("SE".to_string())), Just(Some("US".to_string()))],
            has_record in any::<bool>(), expired in any::<bool>(), revision in 1..4i32, other_config in any::<bool>(),
            action in prop_oneof![Just(Action::AcceptAll), Just(Action::Custom), Just(Action::RejectAll), Just(Action::Withdraw)],
        ) {
            let p = ConsentPolicy { default_accepted: defaults, respect_do_not_track: respect, geo_targeting_enabled: geo, ..policy() };
            let mut r = RecordedChoice { revision, other_config, ..record(choices, action) };
            if expired {
                r.expires_at = now() - Duration::seconds(1);
            }
            let signals = Signals { dnt, gpc, country, ..Default::default() };
            let provider = ProviderPolicy { cookieless_fallback: fallback, requires_record: true, ..provider(required) };
            let d = decide(Some(&p), has_record.then_some(&r), &signals, &provider, now());
            if d.is_allowed() {
                let category = required.category().unwrap_or(Category::Analytics);
                prop_assert!(has_record, "{:?}", d);
                prop_assert!(!expired && !other_config && revision >= p.reconsent_revision, "{:?}", d);
                prop_assert!(choices.get(category), "{:?}", d);
                prop_assert_eq!(d.identity(), Some(Identity::Full));
            }
        }

        /// Whatever else holds: a provider config the visitor switched off, or was not offered, is
        /// never allowed with identifiers.
        #[test]
        fn never_identify_for_a_provider_the_visitor_switched_off(
            choices in arb_choices(),
            defaults in arb_choices(),
            required in prop_oneof![Just(RequiredCategory::None), arb_required()],
            switched in prop_oneof![Just(None), Just(Some(false))],
            fallback in any::<bool>(),
            dnt in any::<bool>(), gpc in any::<bool>(), respect in any::<bool>(), geo in any::<bool>(),
            country in prop_oneof![Just(None), Just(Some("SE".to_string())), Just(Some("US".to_string()))],
        ) {
            let p = ConsentPolicy { default_accepted: defaults, respect_do_not_track: respect, geo_targeting_enabled: geo, ..policy() };
            let config_id = uuid::Uuid::from_u128(7);
            let providers = ProviderChoices { offer: "x".into(), providers: switched.map(|b| (config_id, b)).into_iter().collect() };
            let r = RecordedChoice { providers: Some(providers), ..record(choices, Action::Custom) };
            let signals = Signals { dnt, gpc, country, ..Default::default() };
            let provider = ProviderPolicy { cookieless_fallback: fallback, config_id, ..provider(required) };
            let d = decide(Some(&p), Some(&r), &signals, &provider, now());
            // Switched off: never identified. Not offered: never under the record that was made
            // without it (a valid one); the defaults may cover it where no valid decision exists.
            if switched == Some(false) || effective(Some(&p), Some(&r), &signals, now()).undecided.is_none() {
                prop_assert_ne!(d.identity(), Some(Identity::Full), "{:?}", d);
            }
        }

        /// In a consent-required region, without a valid decision nothing goes identified.
        #[test]
        fn nothing_identified_before_a_decision_where_consent_is_required(
            defaults in arb_choices(),
            required in prop_oneof![Just(RequiredCategory::None), arb_required()],
        ) {
            let p = ConsentPolicy { default_accepted: defaults, ..policy() };
            let provider = ProviderPolicy { status: Some(ProviderStatus::Active), required_category: Some(required), cookieless_fallback: false, requires_record: false, config_id: uuid::Uuid::nil() };
            let d = decide(Some(&p), None, &from("SE"), &provider, now());
            prop_assert_ne!(d.identity(), Some(Identity::Full));
        }
    }
}
