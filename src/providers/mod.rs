//! Analytics providers. Each provider is one module that only *maps* and *classifies*:
//!
//! - which events its config accepts at all (custom events switched off, a page on a domain the
//!   config does not allow, an event name the provider would refuse) — answered at ingest, so the
//!   forwarding decision says why an event was not sent;
//! - the item for one delivery (its JSON, built from the stored event, the identity level and
//!   the categories the consent decision allowed and the visitor's IP), and the request carrying
//!   one or more items with the config's resolved credentials — pure, no I/O;
//! - what the provider's answer means, for the whole request or per item (delivered, silently
//!   dropped, retry, dead, bad credentials).
//!
//! Sending, batching, splitting a refused batch, retries, backoff, leases and metrics live once,
//! in [`crate::outbox`]. Configuration storage and the status lifecycle live once, in [`config`].
//! Adding a provider is one module implementing [`Provider`], one line in [`all`] and one in
//! `input_schemas()` (its OpenAPI body) — plus, for the tests, its fake in `tests/fakes` and its
//! mapping table (`Provider::mapping_cases`); a test fails for a provider without any of them
//! (docs/delivery.md, "Adding a provider").

pub mod config;
#[cfg(test)]
mod consent_table;
pub mod ga4;
pub mod plausible;
pub mod posthog;
pub mod umami;

use std::{any::Any, borrow::Cow, collections::BTreeMap, net::IpAddr, sync::Arc};

use entity::analytics_event;
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{AllOfBuilder, OneOfBuilder, Schema},
    },
};
use uuid::Uuid;

use crate::{
    consent::{Blocked, Choices, Identity, Reason, RequiredCategory},
    error::Result,
    secrets::{Credentials, check::AuthCheck},
};

/// One provider's wire contract. Implementations are unit structs; all state is in `Settings`.
///
/// Sending goes in two pure steps: each delivery becomes an [`Item`] ([`Provider::item`]), and
/// up to [`Provider::batch_limit`] items of one config that share a [`Provider::batch_key`]
/// become one request ([`Provider::request`]), built with the config's resolved credentials.
/// [`Provider::classify`] says what the answer means — for the whole request or per item. The
/// outbox does the rest (claiming, grouping, splitting a refused batch, retries, recording).
pub trait Provider: Send + Sync + 'static {
    /// The provider's fields of a config (`site_id`, `website_id`, `instance_url`, toggles),
    /// stored in `provider_config.settings`. Deserialising must validate (parse, don't validate)
    /// and fill defaults, and must refuse unknown fields.
    type Settings: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// Secret *references* the config may hold (`credentials`), refusing unknown fields.
    type Credentials: Serialize + DeserializeOwned + Default + Send + Sync;

    /// The name in URLs and in `provider_config.provider`: `plausible`, `umami`.
    const NAME: &'static str;

    /// The consent category a new config requires unless the admin says otherwise. Cookie-free
    /// providers (Plausible, Umami) need none.
    fn default_required_category() -> RequiredCategory {
        RequiredCategory::None
    }

    /// Whether the provider can take an anonymous event when its category is not granted
    /// (PostHog's cookieless mode). Plausible and Umami never need it: they require no category.
    fn cookieless_fallback(_settings: &Self::Settings) -> bool {
        false
    }

    /// Whether the config may only receive an event when a consent *record* grants its required
    /// category — the config's defaults outside consent regions are not enough (GA4's
    /// `require_cookie_consent`). Passed to the decision as `ProviderPolicy::requires_record`.
    fn requires_record(_settings: &Self::Settings) -> bool {
        false
    }

    /// Whether a delivery sent at `identity` needs the visitor's full IP and user agent, which are
    /// kept on the pending delivery until it ends and never on the event. The default: it does —
    /// Plausible and Umami count visitors by them, GA4 forwards them for its geography and device
    /// reports. PostHog uses the IP only with full identity.
    fn needs_client_context(_identity: Identity) -> bool {
        true
    }

    /// `Err(reason)` when this config must not receive the event whatever the consent, e.g.
    /// `denied:custom_events_disabled`. Checked at ingest (the reason goes into the forwarding
    /// decision) and again before [`Provider::item`] at send time, since settings may have changed.
    fn accepts(settings: &Self::Settings, event: &analytics_event::Model) -> Result<(), Blocked>;

    /// The oldest event the provider still takes (GA4: 72 hours), counted from the event's time
    /// (`occurred_at`); `None` (the default): no limit of its own. The outbox never sends an
    /// older event: such a delivery is dead-lettered saying so, its retry horizon is at most this
    /// long, and a replay of it is refused.
    fn max_event_age() -> Option<chrono::Duration> {
        None
    }

    /// The most deliveries one request may carry: 1 (the default) sends one request per event.
    fn batch_limit(_settings: &Self::Settings) -> usize {
        1
    }

    /// Deliveries whose keys differ never share a request (GA4: one `client_id` per request).
    fn batch_key(_settings: &Self::Settings, _out: &Outgoing<'_>) -> String {
        String::new()
    }

    /// One delivery mapped to its item — pure, no I/O. `Err` is a permanent refusal of this item
    /// only: the delivery is dead-lettered with that reason, the others still go.
    fn item(settings: &Self::Settings, out: &Outgoing<'_>) -> Result<Item, String>;

    /// The request carrying `items` (1 to [`Provider::batch_limit`], in order), with the config's
    /// resolved credentials. `Err` is a permanent refusal of these items.
    fn request(settings: &Self::Settings, credentials: &Credentials, items: &[Item])
    -> Result<ProviderRequest, String>;

    /// What the provider's answer to a request of `items` items means: one outcome for all of
    /// them, or one per item, in order.
    fn classify(response: &ProviderResponse<'_>, items: usize) -> Answer;

    /// Harmless calls proving the config's credentials (and settings) work, for
    /// `POST …/configs/{id}/check`, built for the resolved credentials present. None by default.
    fn checks(_settings: &Self::Settings, _credentials: &Credentials) -> Vec<AuthCheck> {
        Vec::new()
    }

    /// Test builds only: the provider's mapping table — deliveries and what the request built
    /// for each must (not) carry. Run for every provider in [`all`] by
    /// `providers::testing::every_provider_has_a_mapping_table`, which fails for a provider
    /// whose table is empty.
    #[cfg(test)]
    fn mapping_cases() -> Vec<testing::MappingCase> {
        Vec::new()
    }
}

/// One event on its way to one config.
pub struct Outgoing<'a> {
    pub event: &'a analytics_event::Model,
    /// The delivery's id: stable across retries and replays (an idempotency key where the
    /// provider takes one).
    pub delivery_id: Uuid,
    /// What the consent decision allowed: full identifiers, or none.
    pub identity: Identity,
    /// The optional categories the visitor has granted: the ingest decision's effective choices,
    /// intersected with a newer decision at send time (a refusal, GPC → `marketing: false`).
    /// Unknown (a replay after the delivery first ended) counts as none granted.
    pub granted: Choices,
    /// A pseudonymous visitor id computed at ingest and kept on the delivery (PostHog's
    /// cookieless daily id); `None` for most providers.
    pub pseudonymous_id: Option<&'a str>,
    /// The visitor's IP. The full address while the delivery is pending (the transient
    /// `delivery.client_ip`); for a replay after the full address was erased, the stored
    /// truncated one.
    pub client_ip: Option<IpAddr>,
    /// The visitor's user agent: the transient `delivery.user_agent` while pending, else the
    /// event's (kept only when some decision granted full identity).
    pub user_agent: Option<&'a str>,
}

/// One delivery, mapped: its part of a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Item {
    /// The item's JSON (an event of a batch, or the whole body of a one-event request).
    pub body: Value,
    /// Headers the item needs when it travels alone (Plausible reads the visitor's agent and IP
    /// from headers). A provider that batches must carry per-visitor data in `body`: headers
    /// are the request's, shared by its items.
    pub headers: Vec<(&'static str, String)>,
    /// What the mapping changed to fit the provider's limits (a property cut to 2,000 bytes, the
    /// 31st property left out). Stored as the delivery's warning, so nothing is changed silently.
    pub adjustments: Vec<String>,
}

/// What an answer means for the items of the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// One outcome for every item (a status that judges the request, a transport failure).
    All(Outcome),
    /// One outcome per item, in the items' order (Umami's `/api/batch` details).
    PerItem(Vec<Outcome>),
}

/// A provider request, ready for the outbox to send.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl ProviderRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// The one item of a request for a provider that sends one event per request
/// ([`Provider::batch_limit`] 1); `Err` for any other count (an outbox defect, never sent).
pub fn single<'a>(provider: &str, items: &'a [Item]) -> Result<&'a Item, String> {
    match items {
        [one] => Ok(one),
        _ => Err(format!("{provider} takes one event per request, not {}", items.len())),
    }
}

/// The provider's answer, as the outbox received it.
pub struct ProviderResponse<'a> {
    pub status: u16,
    pub headers: &'a Headers,
    pub body: &'a [u8],
}

/// An answer's headers, as providers read them: the text ones, looked up case-insensitively.
/// (Plain strings, so that provider modules and their tests need no HTTP library types.)
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// From any name/value pairs, e.g. an HTTP client's header map; values that are not text are
/// left out.
impl<K: AsRef<str>, V: AsRef<[u8]>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        Headers(
            pairs
                .into_iter()
                .filter_map(|(k, v)| Some((k.as_ref().to_string(), std::str::from_utf8(v.as_ref()).ok()?.to_string())))
                .collect(),
        )
    }
}

/// What an answer means for the delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted and stored.
    Delivered,
    /// Answered with success but discarded (Plausible's `x-plausible-dropped`, Umami's
    /// `{"beep":"boop"}`): the delivery ends as `dropped`, never as success. (Formerly
    /// `DeliveredButDropped`; it was never delivered. The stored state was always `dropped`.)
    Dropped { warning: String },
    /// Try again later (timeout, 408, 429, 5xx).
    Retry { reason: String },
    /// Will never succeed as it is (other 4xx): dead-letter at once, with the provider's answer.
    Dead { reason: String },
    /// 401/403: the config's credentials (or an auth proxy in front of the provider) refuse us.
    /// Repeated, this puts the config into `error`.
    AuthFailure { reason: String },
    /// Not sent: the visitor's consent, decided again at send time, no longer allows it (a
    /// withdrawal after ingest). A consent denial like one at ingest, not a failure of the config.
    ConsentDenied { reason: String },
}

impl Outcome {
    /// The `outcome` label of the `consentgate_deliveries_total` metric.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Dropped { .. } => "dropped",
            Outcome::Retry { .. } => "retry",
            Outcome::Dead { .. } => "dead",
            Outcome::AuthFailure { .. } => "auth_failure",
            Outcome::ConsentDenied { .. } => "denied_by_consent",
        }
    }
}

/// The object-safe face of a [`Provider`], working on stored JSON. Implemented for every
/// provider by the blanket impl below; the rest of the crate only sees this.
pub trait AnyProvider: Send + Sync {
    fn name(&self) -> &'static str;
    fn default_required_category(&self) -> RequiredCategory;
    /// Parses (validates, fills defaults) settings; the error names the field.
    fn parse_settings(&self, raw: Value) -> Result<Value>;
    /// Parses credentials (secret references only); the error names the field under `credentials`.
    fn parse_credentials(&self, raw: Value) -> Result<Value>;
    fn cookieless_fallback(&self, settings: &Value) -> bool;
    /// Settings that cannot be read require a record (the stricter answer).
    fn requires_record(&self, settings: &Value) -> bool;
    fn needs_client_context(&self, identity: Identity) -> bool;
    /// A config's stored settings read into this provider's type, once for the calls below.
    fn read_settings(&self, settings: &Value) -> StoredSettings;
    /// `Err(ConfigInvalid)` when the stored settings cannot be read.
    fn accepts(&self, settings: &StoredSettings, event: &analytics_event::Model) -> Result<(), Blocked>;
    fn max_event_age(&self) -> Option<chrono::Duration>;
    /// At least 1; 1 when the stored settings cannot be read.
    fn batch_limit(&self, settings: &StoredSettings) -> usize;
    fn batch_key(&self, settings: &StoredSettings, out: &Outgoing<'_>) -> String;
    /// [`Provider::accepts`] again (settings may have changed since ingest), then [`Provider::item`].
    fn item(&self, settings: &StoredSettings, out: &Outgoing<'_>) -> Result<Item, String>;
    fn request(
        &self,
        settings: &StoredSettings,
        credentials: &Credentials,
        items: &[Item],
    ) -> Result<ProviderRequest, String>;
    fn classify(&self, response: &ProviderResponse<'_>, items: usize) -> Answer;
    fn checks(&self, settings: &Value, credentials: &Credentials) -> Vec<AuthCheck>;
    #[cfg(test)]
    fn mapping_cases(&self) -> Vec<testing::MappingCase>;
}

impl<P: Provider> AnyProvider for P {
    fn name(&self) -> &'static str {
        P::NAME
    }

    fn default_required_category(&self) -> RequiredCategory {
        P::default_required_category()
    }

    fn parse_settings(&self, raw: Value) -> Result<Value> {
        let typed: P::Settings = from_json_value(raw, "")?;
        Ok(serde_json::to_value(typed).map_err(anyhow::Error::from)?)
    }

    fn parse_credentials(&self, raw: Value) -> Result<Value> {
        let typed: P::Credentials = from_json_value(raw, "credentials")?;
        Ok(serde_json::to_value(typed).map_err(anyhow::Error::from)?)
    }

    fn cookieless_fallback(&self, settings: &Value) -> bool {
        stored_settings::<P>(settings).map(|s| P::cookieless_fallback(&s)).unwrap_or(false)
    }

    fn requires_record(&self, settings: &Value) -> bool {
        stored_settings::<P>(settings).map(|s| P::requires_record(&s)).unwrap_or(true)
    }

    fn needs_client_context(&self, identity: Identity) -> bool {
        P::needs_client_context(identity)
    }

    fn read_settings(&self, settings: &Value) -> StoredSettings {
        StoredSettings(stored_settings::<P>(settings).map(|s| Arc::new(s) as Arc<dyn Any + Send + Sync>))
    }

    fn accepts(&self, settings: &StoredSettings, event: &analytics_event::Model) -> Result<(), Blocked> {
        let settings = settings.of::<P>().map_err(|_| Blocked::ConfigInvalid)?;
        P::accepts(settings, event)
    }

    fn max_event_age(&self) -> Option<chrono::Duration> {
        P::max_event_age()
    }

    fn batch_limit(&self, settings: &StoredSettings) -> usize {
        settings.of::<P>().map(P::batch_limit).unwrap_or(1).max(1)
    }

    fn batch_key(&self, settings: &StoredSettings, out: &Outgoing<'_>) -> String {
        settings.of::<P>().map(|s| P::batch_key(s, out)).unwrap_or_default()
    }

    fn item(&self, settings: &StoredSettings, out: &Outgoing<'_>) -> Result<Item, String> {
        let settings = settings.of::<P>()?;
        P::accepts(settings, out.event).map_err(|why| Reason::Blocked(why).to_string())?;
        P::item(settings, out)
    }

    fn request(
        &self,
        settings: &StoredSettings,
        credentials: &Credentials,
        items: &[Item],
    ) -> Result<ProviderRequest, String> {
        P::request(settings.of::<P>()?, credentials, items)
    }

    fn classify(&self, response: &ProviderResponse<'_>, items: usize) -> Answer {
        P::classify(response, items)
    }

    fn checks(&self, settings: &Value, credentials: &Credentials) -> Vec<AuthCheck> {
        stored_settings::<P>(settings).map(|s| P::checks(&s, credentials)).unwrap_or_default()
    }

    #[cfg(test)]
    fn mapping_cases(&self) -> Vec<testing::MappingCase> {
        P::mapping_cases()
    }
}

fn stored_settings<P: Provider>(settings: &Value) -> Result<P::Settings, String> {
    serde_json::from_value(settings.clone()).map_err(|e| format!("the stored {} settings are invalid: {e}", P::NAME))
}

/// A config's stored settings read once into its provider's own type ([`AnyProvider::read_settings`]),
/// for the calls made per event and per delivery — reading them (a URL parsed, defaults filled)
/// on each call was ~2 % of ingest's CPU (docs/scaling.md). Settings that could not be read keep
/// the reason, and every call through them refuses or takes the stricter answer (fail closed), as
/// do settings read by another provider.
#[derive(Clone)]
pub struct StoredSettings(std::result::Result<Arc<dyn Any + Send + Sync>, String>);

impl StoredSettings {
    fn of<P: Provider>(&self) -> std::result::Result<&P::Settings, String> {
        match &self.0 {
            Ok(any) => any.downcast_ref().ok_or_else(|| format!("these settings are not {}'s", P::NAME)),
            Err(reason) => Err(reason.clone()),
        }
    }
}

/// Every provider the gateway can forward to. Adding one is a module and a line here.
pub fn all() -> &'static [&'static dyn AnyProvider] {
    &[&plausible::Plausible, &umami::Umami, &posthog::PostHog, &ga4::Ga4]
}

pub fn get(name: &str) -> Option<&'static dyn AnyProvider> {
    all().iter().copied().find(|p| p.name() == name)
}

/// Documentation only: the body of a provider config, one of the registered providers' shapes.
pub struct ProviderConfigInput;

impl PartialSchema for ProviderConfigInput {
    fn schema() -> RefOr<Schema> {
        let mut one_of = OneOfBuilder::new();
        for schema in input_schemas() {
            one_of = one_of.item(schema);
        }
        one_of.into()
    }
}

/// The OpenAPI schema of each registered provider's config body (the shared fields and the
/// provider's settings). Kept beside [`all`] but outside the [`Provider`] trait, which stays free of
/// documentation types; a test checks that every provider in [`all`] is documented here.
pub(crate) fn input_schemas() -> Vec<RefOr<Schema>> {
    vec![
        input_schema::<plausible::Plausible>(),
        input_schema::<umami::Umami>(),
        input_schema::<posthog::PostHog>(),
        input_schema::<ga4::Ga4>(),
    ]
}

fn input_schema<P: Provider>() -> RefOr<Schema>
where
    P::Settings: ToSchema,
{
    AllOfBuilder::new()
        .item(config::CommonConfigFields::schema())
        .item(P::Settings::schema())
        .title(Some(format!("{} config", P::NAME)))
        .into()
}

impl ToSchema for ProviderConfigInput {}

pub(crate) fn from_json_value<T: DeserializeOwned>(raw: Value, prefix: &str) -> Result<T> {
    crate::json::from_value(raw, prefix)
}

// ---------------------------------------------------------------------------------------------
// Validated setting types shared by providers.

/// A provider's base URL: `http(s)://host[:port][/path]`, no query, fragment or credentials
/// (credentials belong in secret references), stored without a trailing slash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(value_type = String, example = "https://plausible.io")]
pub struct InstanceUrl(String);

impl InstanceUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        let u = url::Url::parse(s.trim()).map_err(|e| format!("must be an absolute http(s) URL: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err("must be an absolute http(s) URL".into());
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err("must not contain credentials; use the credentials references".into());
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err("must not have a query or fragment".into());
        }
        Ok(InstanceUrl(u.as_str().trim_end_matches('/').to_string()))
    }

    /// `{base}{path}`, e.g. `https://plausible.io/api/event`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }
}

impl<'de> Deserialize<'de> for InstanceUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        InstanceUrl::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A host name (`example.com`) or a wildcard for its subdomains (`*.example.com`), lower-case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(value_type = String, example = "*.example.com")]
pub struct DomainPattern(String);

impl DomainPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        let host = s.strip_prefix("*.").unwrap_or(&s);
        if is_hostname(host) {
            Ok(DomainPattern(s))
        } else {
            Err(format!("{s:?} is not a host name (example.com) or a subdomain wildcard (*.example.com)"))
        }
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        match self.0.strip_prefix("*.") {
            Some(parent) => {
                host.len() > parent.len() + 1 && host.ends_with(parent) && {
                    let cut = host.len() - parent.len();
                    host.as_bytes()[cut - 1] == b'.'
                }
            }
            None => host == self.0,
        }
    }
}

impl<'de> Deserialize<'de> for DomainPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DomainPattern::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Letters, digits, `-` and `.`, labels of 1–63 characters, at most 253 in all (RFC 1123).
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

// ---------------------------------------------------------------------------------------------
// Mapping helpers shared by providers.

/// The event name the gateway uses for page views.
pub const PAGEVIEW: &str = "pageview";
/// The event name the gateway uses for outbound link clicks (`event_properties.url`).
pub const OUTBOUND_LINK_CLICK: &str = "outbound-link-click";

/// The host of the event's page URL, lower-case.
pub fn page_host(event: &analytics_event::Model) -> Option<String> {
    let u = url::Url::parse(event.page_url.as_deref()?).ok()?;
    u.host_str().map(|h| h.trim_end_matches('.').to_ascii_lowercase())
}

/// Whether a property name looks like it carries an identifier of a person or device, and so must
/// not leave the gateway when the decision allowed only anonymous forwarding (no analytics
/// consent: GDPR art. 6(1)(a) / ePrivacy art. 5(3) cover identifiers, not aggregate counts).
pub fn is_identifier_key(key: &str) -> bool {
    let normal: String = key.chars().filter(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
    const EXACT: &[&str] = &[
        "id",
        "uid",
        "uuid",
        "guid",
        "email",
        "emailaddress",
        "mail",
        "phone",
        "phonenumber",
        "mobile",
        "ip",
        "ipaddress",
        "username",
        "login",
        "distinctid",
        "fingerprint",
        "token",
        "cookie",
    ];
    if EXACT.contains(&normal.as_str()) {
        return true;
    }
    // `user_id`, `userId`, `customer-id`, `visitor_uuid`, `clientID`: an "id" word at the end.
    let lower = key.to_ascii_lowercase();
    let camel_id = key.ends_with("Id") || key.ends_with("ID");
    let sep_id = ["_id", "-id", ".id", " id", "_uuid", "-uuid", "_guid"].iter().any(|s| lower.ends_with(s));
    let email_like = normal.contains("email");
    camel_id || sep_id || email_like
}

/// Whether a string value looks like an email address (kept out of anonymous events too).
pub fn looks_like_email(v: &str) -> bool {
    let v = v.trim();
    match v.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !local.contains(' ') && domain.contains('.') && !domain.contains(' ')
        }
        None => false,
    }
}

/// The event's properties, without identifier-like ones when the identity is anonymous — at any
/// depth, since a provider may flatten nested objects (`customer.email`) into its own fields.
/// Returns the kept properties and the (dotted) names left out.
pub fn properties_for(event: &analytics_event::Model, identity: Identity) -> (Map<String, Value>, Vec<String>) {
    let mut removed = Vec::new();
    let kept = match &event.event_properties {
        Value::Object(props) if identity == Identity::Anonymous => strip_identifiers(props, "", &mut removed),
        Value::Object(props) => props.clone(),
        _ => Map::new(),
    };
    (kept, removed)
}

fn strip_identifiers(props: &Map<String, Value>, prefix: &str, removed: &mut Vec<String>) -> Map<String, Value> {
    let mut kept = Map::new();
    for (k, v) in props {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        if is_identifier_key(k) || v.as_str().is_some_and(looks_like_email) {
            removed.push(path);
            continue;
        }
        if let Some(v) = strip_value(v, &path, removed) {
            kept.insert(k.clone(), v);
        }
    }
    kept
}

/// `None` when the value itself identifies (an email address).
fn strip_value(v: &Value, path: &str, removed: &mut Vec<String>) -> Option<Value> {
    match v {
        Value::String(s) if looks_like_email(s) => {
            removed.push(path.to_string());
            None
        }
        Value::Object(m) => Some(Value::Object(strip_identifiers(m, path, removed))),
        Value::Array(items) => Some(Value::Array(
            items.iter().enumerate().filter_map(|(i, x)| strip_value(x, &format!("{path}[{i}]"), removed)).collect(),
        )),
        other => Some(other.clone()),
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn truncate_bytes(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(s[..end].to_string())
}

/// `s` cut to at most `max` characters (Unicode scalar values, as PostgreSQL's `varchar(n)` counts).
pub fn truncate_chars(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => Cow::Borrowed(s),
        Some((i, _)) => Cow::Owned(s[..i].to_string()),
    }
}

/// The first bytes of a provider's answer, printable, for `last_error` (enough to read a
/// validation message; never the whole body).
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let clean = clean.trim();
    let cut = truncate_chars(clean, 500);
    if cut.len() < clean.len() { format!("{cut}…") } else { cut.into_owned() }
}

/// The part of classification every provider shares: what a non-2xx status means.
pub fn classify_failure(provider: &str, status: u16, body: &[u8]) -> Outcome {
    let answer = || {
        let excerpt = body_excerpt(body);
        if excerpt.is_empty() {
            format!("{provider} answered {status}")
        } else {
            format!("{provider} answered {status}: {excerpt}")
        }
    };
    match status {
        401 | 403 => Outcome::AuthFailure { reason: answer() },
        408 | 429 | 500..=599 => Outcome::Retry { reason: answer() },
        300..=399 => Outcome::Dead {
            reason: format!("{provider} answered with a redirect ({status}); check the config's instance_url"),
        },
        _ => Outcome::Dead { reason: answer() },
    }
}

/// The event's revenue, when it has a valid one.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Revenue {
    pub amount: serde_json::Number,
    pub currency: String,
}

pub fn revenue_of(event: &analytics_event::Model) -> Option<Revenue> {
    event.revenue.clone().and_then(|v| serde_json::from_value(v).ok())
}

/// A property map ordered by key, as the mapping keeps it (deterministic requests).
pub type Props = BTreeMap<String, Value>;

#[cfg(test)]
pub(crate) mod testing {
    //! A stored event to map, for the providers' table tests.
    use std::net::IpAddr;

    use chrono::{TimeZone, Utc};
    use entity::analytics_event;
    use serde_json::json;
    use uuid::Uuid;

    use serde_json::Value;

    use super::{Answer, AnyProvider, Outcome, Outgoing, Provider, ProviderRequest, ProviderResponse};
    use crate::{
        consent::{Choices, Identity},
        secrets::Credentials,
    };

    pub fn event(name: &str) -> analytics_event::Model {
        analytics_event::Model {
            id: Uuid::nil(),
            tenant_id: Uuid::nil(),
            provider: None,
            event_name: name.into(),
            event_properties: json!({}),
            user_id: None,
            anonymous_id: None,
            session_id: None,
            page_url: Some("https://www.example.com/pricing?utm_source=news".into()),
            referrer: Some("https://search.example.org/".into()),
            title: Some("Pricing".into()),
            user_agent: Some(BROWSER_UA.into()),
            language: Some("sv-SE".into()),
            screen: Some("1920x1080".into()),
            revenue: None,
            context: json!({}),
            occurred_at: Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap(),
            received_at: Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 1).unwrap(),
            ip_truncated: Some("203.0.113.0".into()),
            country: Some("SE".into()),
            dnt: false,
            gpc: false,
            idempotency_key: None,
            key_kind: Some("public".into()),
            decisions: serde_json::json!([]),
        }
    }

    pub const BROWSER_UA: &str =
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    /// The event on its way, as the outbox passes it: everything granted with full identity,
    /// anonymous with nothing granted.
    pub fn outgoing(event: &analytics_event::Model, identity: Identity, client_ip: Option<IpAddr>) -> Outgoing<'_> {
        let granted = if identity == Identity::Full { Choices::all() } else { Choices::none() };
        Outgoing {
            event,
            delivery_id: Uuid::nil(),
            identity,
            granted,
            pseudonymous_id: None,
            client_ip,
            user_agent: event.user_agent.as_deref(),
        }
    }

    /// One delivery sent alone: its request, and what the mapping changed.
    pub struct One {
        pub req: ProviderRequest,
        pub adjustments: Vec<String>,
    }

    impl std::ops::Deref for One {
        type Target = ProviderRequest;
        fn deref(&self) -> &ProviderRequest {
            &self.req
        }
    }

    /// [`Provider::item`] then [`Provider::request`] for that one item, without credentials.
    pub fn one<P: Provider>(settings: &P::Settings, out: &Outgoing<'_>) -> Result<One, String> {
        let item = P::item(settings, out)?;
        let req = P::request(settings, &Credentials::default(), std::slice::from_ref(&item))?;
        Ok(One { req, adjustments: item.adjustments })
    }

    /// What the answer to a one-item request means for that item.
    pub fn outcome<P: Provider>(response: &ProviderResponse<'_>) -> Outcome {
        match P::classify(response, 1) {
            Answer::All(o) => o,
            Answer::PerItem(mut v) if v.len() == 1 => v.remove(0),
            other => panic!("one item, answered {other:?}"),
        }
    }

    /// One row of a provider's mapping table ([`Provider::mapping_cases`]): a delivery as the
    /// outbox passes it, alone in its request, and what that request must carry.
    pub struct MappingCase {
        /// What the row shows, e.g. "a page view with full identity".
        pub name: &'static str,
        /// The config's settings as stored (parsed by the provider, defaults filled).
        pub settings: Value,
        pub event: analytics_event::Model,
        pub identity: Identity,
        pub granted: Choices,
        pub pseudonymous_id: Option<&'static str>,
        /// What the request must carry: JSON pointers into its body (`/payload/name`) with their
        /// value; `Value::Null` means the field must be absent.
        pub body: Vec<(&'static str, Value)>,
        /// Headers with their value; `None` means the header must be absent.
        pub headers: Vec<(&'static str, Option<&'static str>)>,
        /// `Some(part of the reason)`: the item must be refused, nothing sent.
        pub refused: Option<&'static str>,
        /// The config's resolved credentials, `(field, value)`, for a provider that needs one to
        /// build the request (PostHog's project key in the body, GA4's `api_secret` in the
        /// query); none by default.
        pub credentials: Vec<(&'static str, &'static str)>,
    }

    impl MappingCase {
        /// A row sending `event` with `identity` (everything granted with full identity, nothing
        /// with anonymous); fill in what the request must carry.
        pub fn new(name: &'static str, settings: Value, event: analytics_event::Model, identity: Identity) -> Self {
            let granted = if identity == Identity::Full { Choices::all() } else { Choices::none() };
            MappingCase {
                name,
                settings,
                event,
                identity,
                granted,
                pseudonymous_id: None,
                body: Vec::new(),
                headers: Vec::new(),
                refused: None,
                credentials: Vec::new(),
            }
        }
    }

    /// Runs one provider's table through the object-safe face the outbox uses; the failures, each
    /// naming the provider and the row.
    pub fn run_mapping_table(p: &dyn AnyProvider) -> Vec<String> {
        let cases = p.mapping_cases();
        if cases.is_empty() {
            return vec![format!("{}: no mapping table (implement Provider::mapping_cases in its module)", p.name())];
        }
        let mut failures = Vec::new();
        for c in cases {
            let at = format!("{} / {}", p.name(), c.name);
            let settings = match p.parse_settings(c.settings.clone()) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{at}: settings refused: {e:?}"));
                    continue;
                }
            };
            let out = Outgoing {
                event: &c.event,
                delivery_id: Uuid::nil(),
                identity: c.identity,
                granted: c.granted,
                pseudonymous_id: c.pseudonymous_id,
                client_ip: Some("203.0.113.7".parse().unwrap()),
                user_agent: c.event.user_agent.as_deref(),
            };
            let credentials = Credentials::for_tests(&c.credentials);
            let settings = p.read_settings(&settings);
            let req = p
                .item(&settings, &out)
                .and_then(|item| p.request(&settings, &credentials, std::slice::from_ref(&item)));
            match (req, c.refused) {
                (Err(reason), Some(want)) if reason.contains(want) => {}
                (Err(reason), _) => failures.push(format!("{at}: refused: {reason}")),
                (Ok(_), Some(want)) => failures.push(format!("{at}: sent, but must be refused ({want})")),
                (Ok(req), None) => {
                    for (pointer, want) in &c.body {
                        let got = req.body.pointer(pointer).cloned().unwrap_or(Value::Null);
                        if got != *want {
                            failures.push(format!("{at}: body {pointer} is {got}, not {want}"));
                        }
                    }
                    for (name, want) in &c.headers {
                        if req.header(name) != *want {
                            failures.push(format!("{at}: header {name} is {:?}, not {want:?}", req.header(name)));
                        }
                    }
                }
            }
        }
        failures
    }

    /// Whatever a provider's table says: with anonymous identity, no request carries the user's
    /// or the visitor's id, nor an identifier-like property (a refusal is fine: nothing is sent).
    pub fn anonymous_requests_carry_no_identifiers(p: &dyn AnyProvider) -> Vec<String> {
        let mut failures = Vec::new();
        for c in p.mapping_cases() {
            let Ok(settings) = p.parse_settings(c.settings.clone()) else { continue };
            let mut e = c.event.clone();
            e.user_id = Some("user-7f3a-secret".into());
            e.anonymous_id = Some("visitor-9c1b-secret".into());
            e.session_id = Some("session-2d4e-secret".into());
            if let Value::Object(props) = &mut e.event_properties {
                props.insert("email".into(), json!("ann@example.com"));
                props.insert("customer_id".into(), json!("cust-5e6f-secret"));
            }
            let out = Outgoing {
                event: &e,
                delivery_id: Uuid::nil(),
                identity: Identity::Anonymous,
                granted: Choices::none(),
                pseudonymous_id: c.pseudonymous_id,
                client_ip: None,
                user_agent: None,
            };
            let credentials = Credentials::for_tests(&c.credentials);
            let settings = p.read_settings(&settings);
            let Ok(req) = p
                .item(&settings, &out)
                .and_then(|item| p.request(&settings, &credentials, std::slice::from_ref(&item)))
            else {
                continue;
            };
            let text = format!("{} {:?} {}", req.url, req.headers, req.body);
            for secret in [
                "user-7f3a-secret",
                "visitor-9c1b-secret",
                "session-2d4e-secret",
                "ann@example.com",
                "cust-5e6f-secret",
            ] {
                if text.contains(secret) {
                    failures.push(format!("{} / {}: anonymous request carries {secret}: {text}", p.name(), c.name));
                }
            }
        }
        failures
    }

    #[test]
    fn every_provider_has_a_mapping_table_and_it_holds() {
        let failures: Vec<String> = super::all().iter().flat_map(|p| run_mapping_table(*p)).collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn no_provider_sends_identifiers_with_anonymous_identity() {
        let failures: Vec<String> =
            super::all().iter().flat_map(|p| anonymous_requests_carry_no_identifiers(*p)).collect();
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings read once stay as strict as settings read per call: unreadable ones, or another
    /// provider's, refuse every event (fail closed) and send one item per request.
    #[test]
    fn settings_read_once_refuse_when_unreadable_or_another_providers() {
        let event = testing::event("pageview");
        for p in all() {
            let unreadable = p.read_settings(&serde_json::json!({"no_such_field": true}));
            assert_eq!(p.accepts(&unreadable, &event), Err(Blocked::ConfigInvalid), "{}", p.name());
            assert_eq!(p.batch_limit(&unreadable), 1, "{}", p.name());
            for other in all().iter().filter(|o| o.name() != p.name()) {
                for case in other.mapping_cases() {
                    let Ok(valid) = other.parse_settings(case.settings.clone()) else { continue };
                    let theirs = other.read_settings(&valid);
                    assert_eq!(
                        p.accepts(&theirs, &event),
                        Err(Blocked::ConfigInvalid),
                        "{} with {}'s",
                        p.name(),
                        other.name()
                    );
                }
            }
        }
    }

    #[test]
    fn every_provider_has_a_documented_config_body() {
        let titles: Vec<String> = input_schemas()
            .into_iter()
            .map(|s| serde_json::to_value(s).unwrap()["title"].as_str().unwrap_or_default().to_string())
            .collect();
        let names: Vec<String> = all().iter().map(|p| format!("{} config", p.name())).collect();
        assert_eq!(titles, names);
    }

    #[test]
    fn response_headers_are_read_case_insensitively() {
        let h = Headers::from_iter([("X-Plausible-Dropped", "1".as_bytes()), ("x-bin", b"\xff".as_slice())]);
        assert_eq!(h.get("x-plausible-dropped"), Some("1"));
        assert_eq!(h.get("x-bin"), None, "not text: left out");
    }

    #[test]
    fn identifier_keys() {
        for k in
            ["user_id", "userId", "clientID", "email", "E-Mail", "customer-id", "id", "visitor_uuid", "ip", "Phone"]
        {
            assert!(is_identifier_key(k), "{k}");
        }
        for k in ["plan", "url", "valid", "paid", "width", "category", "video", "ideal"] {
            assert!(!is_identifier_key(k), "{k}");
        }
    }

    #[test]
    fn emails() {
        assert!(looks_like_email("ann@example.com"));
        assert!(!looks_like_email("@handle"));
        assert!(!looks_like_email("a@b"));
        assert!(!looks_like_email("plain"));
    }

    #[test]
    fn domain_patterns() {
        let exact = DomainPattern::parse("Example.com").unwrap();
        assert!(exact.matches("example.com") && !exact.matches("www.example.com"));
        let wild = DomainPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("www.example.com") && wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com") && !wild.matches("badexample.com"));
        for bad in ["", "https://example.com", "exa mple.com", "*.", "-a.com", "a..b"] {
            assert!(DomainPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instance_urls() {
        assert_eq!(
            InstanceUrl::parse("https://plausible.io/").unwrap().join("/api/event"),
            "https://plausible.io/api/event"
        );
        assert_eq!(
            InstanceUrl::parse("http://127.0.0.1:9/umami").unwrap().join("/api/send"),
            "http://127.0.0.1:9/umami/api/send"
        );
        for bad in ["plausible.io", "ftp://x.org", "https://u:p@x.org", "https://x.org/?a=1", "https://x.org/#f"] {
            assert!(InstanceUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate_bytes("åäö", 3), "å");
        assert_eq!(truncate_bytes("abc", 5), "abc");
        assert_eq!(truncate_chars("åäö", 2), "åä");
    }

    #[test]
    fn failures_are_classified_once_for_all_providers() {
        assert!(matches!(classify_failure("p", 503, b""), Outcome::Retry { .. }));
        assert!(matches!(classify_failure("p", 429, b""), Outcome::Retry { .. }));
        assert!(matches!(classify_failure("p", 408, b""), Outcome::Retry { .. }));
        assert!(matches!(classify_failure("p", 401, b""), Outcome::AuthFailure { .. }));
        assert!(matches!(classify_failure("p", 302, b""), Outcome::Dead { .. }));
        match classify_failure("Plausible", 400, br#"{"errors":{"url":["is required"]}}"#) {
            Outcome::Dead { reason } => assert!(reason.contains("is required"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
