//! Why an event was or was not forwarded to a provider config: the machine-readable reason
//! stored with every forwarding decision (a `reason` in `analytics_event.decisions`).
//!
//! The strings are audit history — an auditor reads decisions stored years ago — so the
//! serialised form of every variant is fixed: `consent_granted:<category>`,
//! `consent_default:<category>`, `anonymous:<why>`, `denied:<why>`. The table test below pins
//! each string; docs/decision-reasons.md explains each one.

use std::fmt;

use super::decide::Category;
use crate::string_enum::string_enum;

string_enum! {
    /// Why an optional category is not granted to the visitor right now: nothing asked yet, the
    /// record expired or must be asked again, refused, withdrawn, a DNT/GPC signal, or not
    /// offered. The rule behind each is in `consent::effective`; docs/decision-reasons.md
    /// lists them. `no_record`: a config that requires a consent record (GA4's
    /// `require_cookie_consent`) where only the config's defaults would grant the category; only
    /// ever a denial (such a config has no anonymous fallback), so `anonymous:no_record` is not a
    /// reason.
    pub enum Refused {
        NoConsent = "no_consent", Expired = "expired", Reconsent = "reconsent", Rejected = "rejected",
        Withdrawn = "withdrawn", Dnt = "dnt", Gpc = "gpc", CategoryDisabled = "category_disabled",
        /// Per-provider choices: the visitor switched this provider config off.
        ProviderRefused = "provider_refused",
        /// Per-provider choices: the config was not offered when the visitor chose (added
        /// since); refused until they are asked again.
        ProviderNotOffered = "provider_not_offered",
        NoRecord = "no_record",
    }
}

string_enum! {
    /// A denial that is not the visitor's consent speaking: the client, the provider config's
    /// state, or the provider's own rules (see each provider's `accepts`).
    pub enum Blocked {
        /// A known crawler or a non-browser client.
        Bot = "bot",
        ConfigPaused = "config_paused",
        ConfigDraft = "config_draft",
        ConfigDecommissioned = "config_decommissioned",
        /// The config's stored status or required category cannot be read: fail closed.
        ConfigInvalid = "config_invalid",
        /// Plausible / Umami with custom events switched off.
        CustomEventsDisabled = "custom_events_disabled",
        /// Plausible: the page is not on the site's domain.
        DomainNotAllowed = "domain_not_allowed",
        /// Umami: event names are at most 50 characters.
        EventNameTooLong = "event_name_too_long",
        /// Umami: names Umami would treat as a formula (`=`, `+`, `-`, `@`).
        EventNameUnsafePrefix = "event_name_unsafe_prefix",
        /// Umami with outbound-link tracking switched off.
        OutboundLinksDisabled = "outbound_links_disabled",
        /// PostHog: names starting with `$` are PostHog's own events (`$identify`, `$create_alias`);
        /// Plausible: `engagement`, its tracker's own (refused without the tracker's fields).
        EventNameReserved = "event_name_reserved",
    }
}

/// The reason of one forwarding decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `consent_granted:<category>`: the visitor's valid record grants it.
    Granted(Category),
    /// `consent_default:<category>`: no valid decision yet, outside a consent-required region,
    /// and the category is on by default.
    Default(Category),
    /// `anonymous:<why>`: allowed without identifiers (a cookie-free provider, or PostHog's
    /// cookieless fallback) because the category is not granted, for this reason.
    Anonymous(Refused),
    /// `denied:<why>`: the visitor's consent (or its absence) refuses it.
    Denied(Refused),
    /// `denied:<why>`: refused for a reason other than consent.
    Blocked(Blocked),
}

impl Reason {
    /// A denial that is the visitor's consent (or its absence) speaking — counted in the
    /// config's `events_denied_by_consent` — as opposed to a bot, the config's state or the
    /// provider's own rules.
    pub fn is_consent_denial(self) -> bool {
        matches!(self, Reason::Denied(_))
    }

    /// The stored form read back; `None` for a string no version of the gateway wrote.
    pub fn parse(s: &str) -> Option<Reason> {
        let (kind, what) = s.split_once(':')?;
        let category = || Category::ALL.iter().copied().find(|c| c.as_str() == what);
        match kind {
            "consent_granted" => category().map(Reason::Granted),
            "consent_default" => category().map(Reason::Default),
            "anonymous" => Refused::parse(what).filter(|r| *r != Refused::NoRecord).map(Reason::Anonymous),
            "denied" => Refused::parse(what).map(Reason::Denied).or_else(|| Blocked::parse(what).map(Reason::Blocked)),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Granted(c) => write!(f, "consent_granted:{}", c.as_str()),
            Reason::Default(c) => write!(f, "consent_default:{}", c.as_str()),
            Reason::Anonymous(why) => write!(f, "anonymous:{why}"),
            Reason::Denied(why) => write!(f, "denied:{why}"),
            Reason::Blocked(why) => write!(f, "denied:{why}"),
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason and its stored string — audit history: a row here never changes.
    #[test]
    fn every_reason_has_its_fixed_string() {
        use {Blocked as B, Category as C, Reason as R, Refused as F};
        #[rustfmt::skip]
        let table: Vec<(Reason, &str)> = vec![
            (R::Granted(C::Functional), "consent_granted:functional"),
            (R::Granted(C::Analytics), "consent_granted:analytics"),
            (R::Granted(C::Marketing), "consent_granted:marketing"),
            (R::Default(C::Functional), "consent_default:functional"),
            (R::Default(C::Analytics), "consent_default:analytics"),
            (R::Default(C::Marketing), "consent_default:marketing"),
            (R::Anonymous(F::NoConsent), "anonymous:no_consent"),
            (R::Anonymous(F::Expired), "anonymous:expired"),
            (R::Anonymous(F::Reconsent), "anonymous:reconsent"),
            (R::Anonymous(F::Rejected), "anonymous:rejected"),
            (R::Anonymous(F::Withdrawn), "anonymous:withdrawn"),
            (R::Anonymous(F::Dnt), "anonymous:dnt"),
            (R::Anonymous(F::Gpc), "anonymous:gpc"),
            (R::Anonymous(F::CategoryDisabled), "anonymous:category_disabled"),
            (R::Anonymous(F::ProviderRefused), "anonymous:provider_refused"),
            (R::Anonymous(F::ProviderNotOffered), "anonymous:provider_not_offered"),
            (R::Denied(F::NoConsent), "denied:no_consent"),
            (R::Denied(F::Expired), "denied:expired"),
            (R::Denied(F::Reconsent), "denied:reconsent"),
            (R::Denied(F::Rejected), "denied:rejected"),
            (R::Denied(F::Withdrawn), "denied:withdrawn"),
            (R::Denied(F::Dnt), "denied:dnt"),
            (R::Denied(F::Gpc), "denied:gpc"),
            (R::Denied(F::CategoryDisabled), "denied:category_disabled"),
            (R::Denied(F::ProviderRefused), "denied:provider_refused"),
            (R::Denied(F::ProviderNotOffered), "denied:provider_not_offered"),
            (R::Denied(F::NoRecord), "denied:no_record"),
            (R::Blocked(B::Bot), "denied:bot"),
            (R::Blocked(B::ConfigPaused), "denied:config_paused"),
            (R::Blocked(B::ConfigDraft), "denied:config_draft"),
            (R::Blocked(B::ConfigDecommissioned), "denied:config_decommissioned"),
            (R::Blocked(B::ConfigInvalid), "denied:config_invalid"),
            (R::Blocked(B::CustomEventsDisabled), "denied:custom_events_disabled"),
            (R::Blocked(B::DomainNotAllowed), "denied:domain_not_allowed"),
            (R::Blocked(B::EventNameTooLong), "denied:event_name_too_long"),
            (R::Blocked(B::EventNameUnsafePrefix), "denied:event_name_unsafe_prefix"),
            (R::Blocked(B::OutboundLinksDisabled), "denied:outbound_links_disabled"),
            (R::Blocked(B::EventNameReserved), "denied:event_name_reserved"),
        ];
        for (reason, text) in &table {
            assert_eq!(reason.to_string(), *text);
            assert_eq!(Reason::parse(text), Some(*reason), "{text}");
            assert_eq!(serde_json::to_value(reason).unwrap(), *text);
        }
        // The table is complete: every refusal (`no_record` only as a denial) and every block.
        assert_eq!(table.len(), 6 + 2 * Refused::ALL.len() - 1 + Blocked::ALL.len());
        for bad in [
            "",
            "denied",
            "denied:",
            "denied:Bot",
            "allowed:bot",
            "consent_granted:none",
            "anonymous:bot",
            "anonymous:no_record",
        ] {
            assert_eq!(Reason::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn which_denials_are_consent() {
        for r in
            ["denied:no_consent", "denied:dnt", "denied:gpc", "denied:withdrawn", "denied:expired", "denied:no_record"]
        {
            assert!(Reason::parse(r).unwrap().is_consent_denial(), "{r}");
        }
        for r in ["denied:bot", "denied:config_paused", "denied:config_draft", "denied:config_invalid", "anonymous:dnt"]
        {
            assert!(!Reason::parse(r).unwrap().is_consent_denial(), "{r}");
        }
    }
}
