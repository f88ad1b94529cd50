//! One posted event: its wire shape ([`EventInput`], every field a checked type from
//! [`super::fields`]), who sent it ([`Sender`]), and the valid event the rest of the pipeline
//! works with. Every violation names its field.

use std::net::IpAddr;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use super::fields::{
    ClientId, ClientTime, EventName, IdempotencyKey, PageUrl, Properties, Revenue, Screen, Title, UserAgent, VisitorIp,
};
use super::keys::KeyKind;
use crate::{
    consent::{
        Signals,
        config::spec::LanguageTag,
        regions::{CountryCode, RegionCode},
    },
    crypto,
    error::{Error, Result},
};

/// How old a client's `occurred_at` may be: providers that accept a time (GA4) refuse older ones.
pub const MAX_AGE: Duration = Duration::hours(72);
/// How far ahead a client's clock may be.
pub const MAX_SKEW: Duration = Duration::minutes(5);

/// An event as posted (the seed's AnalyticsEvent), parsed at the HTTP edge: each field is valid
/// by its type. The fields a server may add about its visitor (`user_agent`, `ip`, `dnt`, `gpc`,
/// `country`) are refused from browsers (public keys): a browser's own request headers say that,
/// and letting a page override them would let it dodge the bot and DNT/GPC rules.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    pub event_name: EventName,
    #[serde(default)]
    pub event_properties: Option<Properties>,
    pub user_id: Option<ClientId>,
    /// The consent-lookup id (the banner's `cg_vid`): the visitor's consent is looked up under
    /// it. Never stored on the event (see docs/glossary.md). Without it, `anonymous_id` is used.
    #[serde(rename = "visitor_id")]
    pub consent_lookup_id: Option<ClientId>,
    /// The analytics id: stored and sent to providers only when some provider config's decision
    /// grants full identity. Send it only with the visitor's analytics consent. Without
    /// `visitor_id` (older sites) it is also the consent-lookup id.
    pub anonymous_id: Option<ClientId>,
    pub session_id: Option<ClientId>,
    /// Required.
    #[schema(required = true)]
    pub page_url: Option<PageUrl>,
    #[serde(default, deserialize_with = "super::fields::referrer")]
    #[schema(value_type = Option<String>)]
    pub referrer: Option<PageUrl>,
    pub title: Option<Title>,
    #[schema(value_type = Option<String>, example = "sv-SE")]
    pub language: Option<LanguageTag>,
    pub screen: Option<Screen>,
    pub revenue: Option<Revenue>,
    /// RFC 3339; at most 72 hours old and 5 minutes ahead. Default: the time of receipt.
    pub occurred_at: Option<ClientTime>,
    pub idempotency_key: Option<IdempotencyKey>,
    /// Secret keys only: the visitor's user agent.
    pub user_agent: Option<UserAgent>,
    /// Secret keys only: the visitor's IP.
    pub ip: Option<VisitorIp>,
    /// Secret keys only.
    pub dnt: Option<bool>,
    /// Secret keys only.
    pub gpc: Option<bool>,
    /// Secret keys only: ISO 3166-1 alpha-2.
    pub country: Option<CountryCode>,
    /// Secret keys only, with `country`: the ISO 3166-2 subdivision (`US-CA`). Where a consent
    /// region is a subdivision of the visitor's country, a visitor whose subdivision is not
    /// given counts as in it.
    #[schema(value_type = Option<String>, example = "US-CA")]
    pub region: Option<RegionCode>,
}

/// What a request says about the visitor behind it. For a browser, its own request headers (and
/// the country and region located from them); for a server, what the body says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VisitorFacts {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// DNT, GPC, country and subdivision. `bot` is left false here: it is read from the user
    /// agent when the event is enriched.
    pub signals: Signals,
}

/// Who sent an event, as its ingest key says: a page (public key), whose own request headers
/// describe the visitor, or a server (secret key), whose body speaks for its visitor.
#[derive(Clone, Debug)]
pub enum Sender {
    Browser(VisitorFacts),
    Server,
}

impl Sender {
    /// The kind of key behind this sender: idempotency keys are scoped by it, so a page (anyone,
    /// with the published public key) cannot pre-claim a key the site's server sends later.
    pub fn key_kind(&self) -> KeyKind {
        match self {
            Sender::Browser(_) => KeyKind::Public,
            Sender::Server => KeyKind::Secret,
        }
    }
}

impl EventInput {
    /// The id the visitor's consent is looked up under: `visitor_id`, or for sites that post only
    /// `anonymous_id` (before the two were separated), that one.
    pub fn lookup_id(&self) -> Option<&ClientId> {
        self.consent_lookup_id.as_ref().or(self.anonymous_id.as_ref())
    }
}

/// A valid event, ready to be enriched and stored.
#[derive(Debug)]
pub struct ValidEvent {
    /// The posted fields. `page_url`, `occurred_at`, `idempotency_key` and the server-only visitor
    /// fields have been taken out of it and resolved into the fields below.
    pub posted: EventInput,
    pub page_url: PageUrl,
    pub occurred_at: DateTime<Utc>,
    /// The client's key, or one derived from (session or visitor, name, client time).
    pub idempotency_key: Option<IdempotencyKey>,
    /// The visitor as far as the event is concerned (headers, or a server's body fields).
    pub visitor: VisitorFacts,
}

/// Checks what a parsed event's types cannot: `page_url` given, `occurred_at` within its window,
/// visitor fields only from servers; and resolves the idempotency key and the visitor.
/// `target`: the provider of a per-provider endpoint (`None`: every provider). It is part of a
/// derived idempotency key, so the same event posted to two providers' endpoints is two events.
/// Field names in errors are relative to the event (a batch adds its `batch[i]`).
pub fn validate(
    mut input: EventInput,
    sender: &Sender,
    target: Option<&str>,
    now: DateTime<Utc>,
) -> Result<ValidEvent> {
    let page_url = input.page_url.take().ok_or_else(|| Error::validation("page_url", "is required"))?;
    let client_time = match input.occurred_at.take() {
        None => None,
        Some(ClientTime(t)) if t < now - MAX_AGE => {
            return Err(Error::validation("occurred_at", "must be at most 72 hours old"));
        }
        Some(ClientTime(t)) if t > now + MAX_SKEW => {
            return Err(Error::validation("occurred_at", "must not be more than 5 minutes in the future"));
        }
        Some(ClientTime(t)) => Some(t),
    };
    // The seed's natural key: the same event of the same session at the same client time is the
    // same event (a beacon sent twice).
    let idempotency_key = input.idempotency_key.take().or_else(|| {
        let t = client_time?;
        let who =
            (input.session_id.as_ref().map(|s| format!("s:{s}"))).or(input.lookup_id().map(|v| format!("v:{v}")))?;
        let stamp = t.to_rfc3339_opts(SecondsFormat::Micros, true);
        let target = target.unwrap_or("*");
        Some(IdempotencyKey::derived(&crypto::sha256_hex(format!("{who}\n{}\n{stamp}\n{target}", input.event_name))))
    });
    let visitor = match sender {
        Sender::Browser(facts) => {
            for (name, given) in [
                ("user_agent", input.user_agent.is_some()),
                ("ip", input.ip.is_some()),
                ("dnt", input.dnt.is_some()),
                ("gpc", input.gpc.is_some()),
                ("country", input.country.is_some()),
                ("region", input.region.is_some()),
            ] {
                if given {
                    return Err(Error::validation(
                        name,
                        "only servers (secret keys) may set this; a browser's own request headers are used",
                    ));
                }
            }
            facts.clone()
        }
        Sender::Server => {
            let country = input.country.take().map(String::from);
            let region = input.region.take().map(String::from);
            let of_the_country =
                |r: &str| country.as_deref().is_some_and(|c| r.split_once('-').is_some_and(|(of, _)| of == c));
            if region.as_deref().is_some_and(|r| !of_the_country(r)) {
                return Err(Error::validation(
                    "region",
                    "must be an ISO 3166-2 subdivision (US-CA) of the event's country, given with it",
                ));
            }
            VisitorFacts {
                ip: input.ip.take().map(|ip| ip.0),
                user_agent: input.user_agent.take().map(String::from).filter(|u| !u.is_empty()),
                signals: Signals {
                    dnt: input.dnt.take().unwrap_or(false),
                    gpc: input.gpc.take().unwrap_or(false),
                    // A server's visitor is located by its IP later, in `accept`, unless it said
                    // the country.
                    country,
                    region,
                    bot: false,
                },
            }
        }
    };
    Ok(ValidEvent { posted: input, page_url, occurred_at: client_time.unwrap_or(now), idempotency_key, visitor })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-26T12:00:00Z".parse().unwrap()
    }

    fn browser() -> Sender {
        Sender::Browser(VisitorFacts::default())
    }

    /// Parses (as the HTTP edge does) and validates.
    fn check(v: Value, sender: &Sender) -> Result<ValidEvent> {
        validate(crate::json::from_value(v, "")?, sender, None, now())
    }

    fn field_of(v: Value, sender: &Sender) -> String {
        match check(v, sender) {
            Err(Error::Validation { field, .. }) => field.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    fn ok(extra: Value) -> Value {
        let mut base = json!({"event_name": "pageview", "page_url": "https://example.com/"});
        base.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        base
    }

    #[test]
    fn each_violation_names_its_field() {
        let b = browser();
        let cases: &[(Value, &str)] = &[
            (json!({"page_url": "https://e.com/"}), "event_name"),
            (ok(json!({"event_name": ""})), "event_name"),
            (ok(json!({"event_name": "x".repeat(121)})), "event_name"),
            (json!({"event_name": "pageview"}), "page_url"),
            (ok(json!({"page_url": "/relative"})), "page_url"),
            (ok(json!({"page_url": format!("https://e.com/{}", "a".repeat(2000))})), "page_url"),
            (ok(json!({"referrer": "nope"})), "referrer"),
            (ok(json!({"event_properties": {"k": "x".repeat(17 * 1024)}})), "event_properties"),
            (ok(json!({"event_properties": {"k".repeat(121): 1}})), "event_properties"),
            (ok(json!({"event_properties": [1]})), "event_properties"),
            (ok(json!({"screen": "big"})), "screen"),
            (ok(json!({"language": "en US"})), "language"),
            (ok(json!({"revenue": {"amount": "a lot", "currency": "EUR"}})), "revenue.amount"),
            (ok(json!({"revenue": {"amount": 1, "currency": "euro"}})), "revenue.currency"),
            (ok(json!({"occurred_at": "yesterday"})), "occurred_at"),
            (ok(json!({"occurred_at": "2026-11-23T11:59:00Z"})), "occurred_at"),
            (ok(json!({"occurred_at": "2026-11-26T12:06:00Z"})), "occurred_at"),
            (ok(json!({"idempotency_key": "auto:x"})), "idempotency_key"),
            (ok(json!({"colour": "red"})), "colour"),
            (ok(json!({"ip": "1.2.3.4"})), "ip"),
            (ok(json!({"user_agent": "x"})), "user_agent"),
            (ok(json!({"user_id": "a\nb"})), "user_id"),
        ];
        for (body, field) in cases {
            assert_eq!(&field_of(body.clone(), &b), field, "{body}");
        }
        assert_eq!(field_of(ok(json!({"ip": "1.2.3"})), &Sender::Server), "ip");
        assert_eq!(field_of(ok(json!({"country": "Sweden"})), &Sender::Server), "country");
        assert_eq!(field_of(ok(json!({"country": "XX"})), &Sender::Server), "country", "a placeholder is no country");
        for region in [
            json!({"region": "US-CA"}),
            json!({"country": "SE", "region": "US-CA"}),
            json!({"country": "US", "region": "US"}),
        ] {
            assert_eq!(field_of(ok(region.clone()), &Sender::Server), "region", "{region}");
        }
        assert_eq!(field_of(ok(json!({"region": "US-CA"})), &browser()), "region", "a browser's headers say that");
        let e = check(ok(json!({"country": "us", "region": "us-ca"})), &Sender::Server).unwrap();
        assert_eq!(
            (e.visitor.signals.country.as_deref(), e.visitor.signals.region.as_deref()),
            (Some("US"), Some("US-CA"))
        );
    }

    #[test]
    fn batch_items_are_named_by_index() {
        match crate::json::from_value::<EventInput>(json!({"page_url": "https://e.com/"}), "batch[3]") {
            Err(Error::Validation { field, .. }) => assert_eq!(field.as_deref(), Some("batch[3].event_name")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ingest_and_consent_share_one_language_tag() {
        let e = check(ok(json!({"language": "sv-SE"})), &browser()).unwrap();
        assert_eq!(e.posted.language.map(String::from).as_deref(), Some("sv-SE"));
        for bad in ["en US", "english!", "e"] {
            assert_eq!(field_of(ok(json!({"language": bad})), &browser()), "language", "{bad}");
            assert!(LanguageTag::parse(bad).is_err(), "the consent config refuses {bad} too");
        }
    }

    #[test]
    fn a_server_speaks_for_its_visitor() {
        let e = check(
            ok(json!({"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 X", "dnt": true, "country": "se"})),
            &Sender::Server,
        )
        .unwrap();
        assert_eq!(e.visitor.ip.unwrap().to_string(), "203.0.113.9");
        assert_eq!(
            (e.visitor.user_agent.as_deref(), e.visitor.signals.dnt, e.visitor.signals.country.as_deref()),
            (Some("Mozilla/5.0 X"), true, Some("SE"))
        );
        // Without a body ip, nothing stands in for the visitor's address.
        let e = check(ok(json!({})), &Sender::Server).unwrap();
        assert!(e.visitor.ip.is_none());
    }

    #[test]
    fn a_browser_is_described_by_its_headers() {
        let signals = Signals { dnt: true, country: Some("SE".into()), ..Default::default() };
        let facts = VisitorFacts { signals, ..Default::default() };
        let e = check(ok(json!({})), &Sender::Browser(facts.clone())).unwrap();
        assert_eq!(e.visitor, facts);
    }

    #[test]
    fn idempotency_keys_are_given_or_derived() {
        let b = browser();
        let key = |extra| check(ok(extra), &b).unwrap().idempotency_key.map(String::from);
        assert_eq!(key(json!({"idempotency_key": "k1"})).as_deref(), Some("k1"));
        assert!(key(json!({})).is_none(), "no client time: nothing to derive from");
        let k1 = key(json!({"session_id": "s1", "occurred_at": "2026-11-26T11:00:00Z"}));
        let k2 = key(json!({"session_id": "s1", "occurred_at": "2026-11-26T11:00:00+00:00"}));
        let k3 = key(json!({"session_id": "s2", "occurred_at": "2026-11-26T11:00:00Z"}));
        assert!(k1.as_deref().unwrap().starts_with("auto:"));
        assert_eq!(k1, k2, "the same instant");
        assert_ne!(k1, k3);
    }

    #[test]
    fn consent_is_looked_up_under_visitor_id_else_an_older_sites_anonymous_id() {
        let lookup = |extra| check(ok(extra), &browser()).unwrap().posted.lookup_id().map(|v| v.as_str().to_string());
        let cases = [
            (json!({"visitor_id": "v", "anonymous_id": "a"}), Some("v")),
            (json!({"visitor_id": "v"}), Some("v")),
            (json!({"anonymous_id": "a"}), Some("a")),
            (json!({"user_id": "u", "session_id": "s"}), None),
        ];
        for (body, want) in cases {
            assert_eq!(lookup(body.clone()).as_deref(), want, "{body}");
        }
        // A key derived without a session is derived from the lookup id, whichever field held it.
        let key = |extra: Value| {
            let mut body = ok(extra);
            body["occurred_at"] = json!("2026-11-26T11:00:00Z");
            check(body, &browser()).unwrap().idempotency_key.map(String::from)
        };
        assert_eq!(key(json!({"visitor_id": "v"})), key(json!({"anonymous_id": "v"})));
        assert_ne!(key(json!({"visitor_id": "v"})), key(json!({"visitor_id": "w"})));
    }

    #[test]
    fn revenue_amounts() {
        let e = check(ok(json!({"revenue": {"amount": "12.50", "currency": "eur"}})), &browser()).unwrap();
        assert_eq!(serde_json::to_value(e.posted.revenue).unwrap(), json!({"amount": 12.5, "currency": "EUR"}));
    }
}
