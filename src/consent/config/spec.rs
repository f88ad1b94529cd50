//! What a webmaster configures: the banner's look, the four categories, the texts per language,
//! policy links, expiry, regions, signals and allowed origins. Every value is a typed value whose
//! constructor checks it (colours, URLs, language tags, region codes, origins, cookie names);
//! lengths and ranges are checked with `validator`; the rules that span fields live in
//! `ConfigSpec::problems`. A `ConfigSpec` that passed [`ConfigSpec::parse`] is valid.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;

use crate::{
    consent::regions::RegionCode,
    error::{Error, Result, validation_problems},
    origins::OriginPattern,
    string_enum::string_enum,
};

string_enum! {
    /// Lifecycle of a config. `draft → active` only by publishing; `active ⇄ paused`;
    /// `active | paused → decommissioned`, which is terminal (records keep pointing at it).
    #[derive(ToSchema)]
    pub enum Status { Draft = "draft", Active = "active", Paused = "paused", Decommissioned = "decommissioned" }
}

impl Status {
    /// Why `self → to` is not allowed through a status change, or `None` when it is.
    /// (Publishing is the other way to `active`; it is checked in the store.)
    pub fn refuse_change_to(self, to: Status) -> Option<&'static str> {
        use Status::*;
        match (self, to) {
            (a, b) if a == b => None,
            (Draft, Active) => Some("a draft becomes active by publishing it: POST …/publish"),
            (Draft, Decommissioned) => Some("a draft was never shown to visitors: delete it instead"),
            (Active, Paused) | (Paused, Active) | (Active, Decommissioned) | (Paused, Decommissioned) => None,
            (Decommissioned, _) => Some("a decommissioned config is final"),
            (_, Draft) => Some("a published config cannot go back to draft"),
            _ => Some("illegal status transition"),
        }
    }
}

/// A colour as `#rrggbb` (stored lower-case).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HexColor(String);

parsed_string!(HexColor, newtype);

impl HexColor {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(HexColor(s.to_ascii_lowercase()))
        } else {
            Err(format!("{s:?} is not a colour of the form #rrggbb"))
        }
    }

    pub fn rgb(&self) -> [u8; 3] {
        let c = |i: usize| u8::from_str_radix(&self.0[i..i + 2], 16).unwrap_or(0);
        [c(1), c(3), c(5)]
    }

    fn new_unchecked(s: &str) -> Self {
        HexColor(s.to_string())
    }
}

/// An absolute `https://` URL (policy links are shown to visitors; plain http would let a
/// network attacker replace the policy they read).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpsUrl(String);

parsed_string!(HttpsUrl, newtype);

impl HttpsUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() > 2000 {
            return Err("must be at most 2000 characters long".into());
        }
        match url::Url::parse(s.trim()) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some_and(|h| !h.is_empty()) => {
                Ok(HttpsUrl(u.to_string()))
            }
            Ok(_) => Err(format!("{s:?} must be an https:// URL")),
            Err(_) => Err(format!("{s:?} is not a valid URL")),
        }
    }
}

/// A BCP 47 language tag as used for texts: `en`, `sv`, `pt-BR`, `zh-Hant-TW`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LanguageTag(String);

parsed_string!(LanguageTag, newtype);

impl LanguageTag {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut parts = s.split('-');
        let primary = parts.next().unwrap_or_default();
        let ok = s.len() <= 35
            && (2..=3).contains(&primary.len())
            && primary.bytes().all(|b| b.is_ascii_alphabetic())
            && parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
        if ok {
            Ok(LanguageTag(s.to_string()))
        } else {
            Err(format!("{s:?} is not a language tag such as \"en\" or \"pt-BR\""))
        }
    }
}

/// A cookie name the category covers, as shown to visitors; `*` stands for any characters
/// (`_ga_*`). RFC 6265 token characters only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CookieName(String);

parsed_string!(CookieName, newtype);

impl CookieName {
    pub fn parse(s: &str) -> Result<Self, String> {
        let token = |b: u8| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b);
        if (1..=100).contains(&s.len()) && s.bytes().all(token) {
            Ok(CookieName(s.to_string()))
        } else {
            Err(format!("{s:?} is not a cookie name (1-100 characters, no spaces or separators)"))
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Position {
    #[default]
    Bottom,
    Top,
    Center,
    BottomLeft,
    BottomRight,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    #[default]
    Bar,
    Box,
    Cloud,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Banner {
    #[serde(default)]
    pub position: Position,
    #[serde(default)]
    pub style: Style,
    #[serde(default = "default_primary")]
    #[schema(value_type = String, example = "#1a73e8")]
    pub primary_color: HexColor,
    #[serde(default = "default_background")]
    #[schema(value_type = String, example = "#ffffff")]
    pub background_color: HexColor,
    #[serde(default = "default_text")]
    #[schema(value_type = String, example = "#202124")]
    pub text_color: HexColor,
    /// "Reject all" on the first layer, as visible as "Accept all" (EDPB cookie banner
    /// taskforce 2023, CNIL 2020). Switching it off draws a warning.
    #[serde(default = "yes")]
    pub show_reject_all: bool,
    #[serde(default = "yes")]
    pub show_preferences: bool,
}

fn default_primary() -> HexColor {
    HexColor::new_unchecked("#1a73e8")
}
fn default_background() -> HexColor {
    HexColor::new_unchecked("#ffffff")
}
fn default_text() -> HexColor {
    HexColor::new_unchecked("#202124")
}

impl Default for Banner {
    fn default() -> Self {
        Banner {
            position: Position::default(),
            style: Style::default(),
            primary_color: default_primary(),
            background_color: default_background(),
            text_color: default_text(),
            show_reject_all: true,
            show_preferences: true,
        }
    }
}

/// One category as configured. Stored and shown complete; input may leave fields out
/// ([`CategoryInput`]), which then take the category's defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Validate, ToSchema)]
pub struct CategorySettings {
    pub enabled: bool,
    /// Only `necessary` may be required: anything else needs a free choice (ePrivacy Art. 5(3)).
    pub required: bool,
    /// Applies only outside consent-required regions, before the visitor decides: inside them
    /// every non-necessary category starts off (CJEU Planet49, C-673/17).
    pub default_accepted: bool,
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub display_name: String,
    #[validate(length(max = 2000))]
    #[schema(max_length = 2000)]
    pub description: String,
    #[validate(length(max = 100))]
    #[schema(value_type = Vec<String>, max_items = 100)]
    pub cookie_names: Vec<CookieName>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryInput {
    enabled: Option<bool>,
    required: Option<bool>,
    default_accepted: Option<bool>,
    display_name: Option<String>,
    description: Option<String>,
    cookie_names: Option<Vec<CookieName>>,
}

impl CategoryInput {
    fn complete(self, necessary: bool, name: &str) -> CategorySettings {
        CategorySettings {
            enabled: self.enabled.unwrap_or(true),
            required: self.required.unwrap_or(necessary),
            default_accepted: self.default_accepted.unwrap_or(necessary),
            display_name: self.display_name.unwrap_or_else(|| name.to_string()),
            description: self.description.unwrap_or_default(),
            cookie_names: self.cookie_names.unwrap_or_default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(from = "CategoriesInput")]
pub struct Categories {
    #[validate(nested)]
    pub necessary: CategorySettings,
    #[validate(nested)]
    pub functional: CategorySettings,
    #[validate(nested)]
    pub analytics: CategorySettings,
    #[validate(nested)]
    pub marketing: CategorySettings,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoriesInput {
    #[serde(default)]
    necessary: CategoryInput,
    #[serde(default)]
    functional: CategoryInput,
    #[serde(default)]
    analytics: CategoryInput,
    #[serde(default)]
    marketing: CategoryInput,
}

impl From<CategoriesInput> for Categories {
    fn from(i: CategoriesInput) -> Self {
        Categories {
            necessary: i.necessary.complete(true, "Strictly necessary"),
            functional: i.functional.complete(false, "Functional"),
            analytics: i.analytics.complete(false, "Analytics"),
            marketing: i.marketing.complete(false, "Marketing"),
        }
    }
}

impl Default for Categories {
    fn default() -> Self {
        CategoriesInput::default().into()
    }
}

impl Categories {
    /// (name, settings) of each category, `necessary` first.
    pub fn iter(&self) -> [(&'static str, &CategorySettings); 4] {
        [
            ("necessary", &self.necessary),
            ("functional", &self.functional),
            ("analytics", &self.analytics),
            ("marketing", &self.marketing),
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(max = 2000))]
    #[schema(max_length = 2000)]
    pub description: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryTexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub necessary: Option<CategoryText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub functional: Option<CategoryText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub analytics: Option<CategoryText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub marketing: Option<CategoryText>,
}

/// The banner's texts in one language. Missing texts fall back to the default language in the
/// banner; missing Accept/Reject texts draw a warning.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Texts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 5000))]
    #[schema(min_length = 1, max_length = 5000)]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub accept_all: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub reject_all: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub preferences: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub save: Option<String>,
    /// The label of the persistent "Cookie settings" link (withdrawing is as easy as giving).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub settings: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub privacy_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub cookie_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub close: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub always_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 200))]
    #[schema(min_length = 1, max_length = 200)]
    pub signal_denied: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    #[validate(nested)]
    pub categories: CategoryTexts,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_expiry() -> i64 {
    180
}

fn default_regions() -> Vec<RegionCode> {
    RegionCode::defaults()
}

/// Everything a webmaster sets on a cookie consent config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    #[validate(length(min = 1, max = 100))]
    #[schema(min_length = 1, max_length = 100)]
    pub display_name: String,
    #[serde(default)]
    pub banner: Banner,
    #[serde(default)]
    #[validate(nested)]
    pub categories: Categories,
    /// Texts per language; the default language must be present with a title and a body.
    #[schema(value_type = BTreeMap<String, Texts>)]
    pub texts: BTreeMap<LanguageTag, Texts>,
    #[schema(value_type = String, example = "en")]
    pub default_language: LanguageTag,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub privacy_policy_url: Option<HttpsUrl>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub cookie_policy_url: Option<HttpsUrl>,
    /// Days a choice is kept before the visitor is asked again (1–730; CNIL suggests about 6
    /// months).
    #[serde(default = "default_expiry")]
    #[validate(range(min = 1, max = 730))]
    #[schema(minimum = 1, maximum = 730)]
    pub consent_expiry_days: i64,
    #[serde(default = "yes")]
    pub geo_targeting_enabled: bool,
    /// ISO 3166-1 countries or ISO 3166-2 subdivisions where consent is required. Default:
    /// EU/EEA, GB, CH and US-CA.
    #[serde(default = "default_regions")]
    #[validate(length(max = 300))]
    #[schema(value_type = Vec<String>, max_items = 300)]
    pub consent_required_regions: Vec<RegionCode>,
    #[serde(default = "yes")]
    pub respect_do_not_track: bool,
    /// The banner's preferences list, under each category, the tenant's provider configs that
    /// need it, each with its own switch, and the consent record holds those per-provider choices
    /// (docs/consent-model.md). Off by default.
    #[serde(default)]
    pub per_provider_choices: bool,
    /// Origins whose browsers may call the public consent routes.
    #[serde(default)]
    #[validate(length(max = 100))]
    #[schema(value_type = Vec<String>, max_items = 100)]
    pub allowed_origins: Vec<OriginPattern>,
}

impl ConfigSpec {
    /// Parses and checks a config from JSON. Type errors (a bad colour, an unknown field) name
    /// their field; range, length and cross-field rules are all reported together.
    pub fn parse(value: serde_json::Value) -> Result<Self> {
        Self::check(value).map_err(Error::from_problems)
    }

    /// [`Self::parse`] with every problem apart, as (field, rule): the admin pages show each
    /// beside its field. A type error is the only problem (the rest cannot be checked without
    /// the value); its field is `""` when it is the whole body.
    pub fn check(value: serde_json::Value) -> std::result::Result<Self, Vec<(String, String)>> {
        let mut spec: ConfigSpec = serde_path_to_error::deserialize(crate::json::ObjectsOnly(value)).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            vec![(if path == "." { String::new() } else { path }, message)]
        })?;
        spec.normalise();
        let mut problems = match spec.validate() {
            Ok(()) => Vec::new(),
            Err(e) => validation_problems(&e, ""),
        };
        problems.extend(spec.problems());
        if problems.is_empty() { Ok(spec) } else { Err(problems) }
    }

    /// Duplicates in lists carry no meaning; drop them (keeping the first).
    fn normalise(&mut self) {
        dedup(&mut self.consent_required_regions);
        dedup(&mut self.allowed_origins);
        self.display_name = self.display_name.trim().to_string();
    }

    /// The rules that span fields.
    fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let necessary = &self.categories.necessary;
        for (field, ok) in [
            ("enabled", necessary.enabled),
            ("required", necessary.required),
            ("default_accepted", necessary.default_accepted),
        ] {
            if !ok {
                p.push((
                    format!("categories.necessary.{field}"),
                    "strictly necessary storage needs no consent and cannot be switched off: must be true".into(),
                ));
            }
        }
        for (name, c) in self.categories.iter().into_iter().skip(1) {
            if c.required {
                p.push((
                    format!("categories.{name}.required"),
                    "only strictly necessary storage may be required; every other category needs a free choice (ePrivacy Art. 5(3))".into(),
                ));
            }
        }
        for (name, c) in self.categories.iter() {
            if c.display_name.trim().is_empty() {
                p.push((format!("categories.{name}.display_name"), "must not be blank".into()));
            }
        }
        if self.texts.is_empty() {
            p.push(("texts".into(), "at least one language is needed".into()));
        }
        if self.texts.len() > 50 {
            p.push(("texts".into(), "at most 50 languages".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (lang, texts) in &self.texts {
            if !seen.insert(lang.as_str().to_ascii_lowercase()) {
                p.push((
                    format!("texts.{lang}"),
                    "the same language is given twice (tags are case-insensitive)".into(),
                ));
            }
            if let Err(e) = texts.validate() {
                p.extend(validation_problems(&e, &format!("texts.{lang}")));
            }
        }
        match self.texts.get(&self.default_language) {
            None if !self.texts.is_empty() => p.push((
                "default_language".into(),
                format!("no texts for the default language {:?}", self.default_language.as_str()),
            )),
            Some(t) => {
                let lang = &self.default_language;
                if t.title.as_deref().is_none_or(|s| s.trim().is_empty()) {
                    p.push((format!("texts.{lang}.title"), "the default language needs a title".into()));
                }
                if t.body.as_deref().is_none_or(|s| s.trim().is_empty()) {
                    p.push((format!("texts.{lang}.body"), "the default language needs a body".into()));
                }
            }
            None => {}
        }
        p
    }

    /// The parts of the config a visitor reads and chooses from, whose hash (`texts_hash`)
    /// every consent record carries: texts, categories and the policy links.
    pub fn shown_to_visitors(&self) -> serde_json::Value {
        serde_json::json!({
            "texts": self.texts,
            "categories": self.categories,
            "privacy_policy_url": self.privacy_policy_url,
            "cookie_policy_url": self.cookie_policy_url,
        })
    }

    /// `sha256` of the canonical JSON of [`Self::shown_to_visitors`], hex.
    pub fn texts_hash(&self) -> String {
        crate::crypto::sha256_hex(crate::consent::canonical::to_string(&self.shown_to_visitors()))
    }
}

fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    *v = out;
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::{Value, json};

    use super::*;

    pub(crate) fn minimal() -> Value {
        json!({
            "display_name": "Main site",
            "texts": {"en": {"title": "Cookies", "body": "We use cookies.", "accept_all": "Accept all", "reject_all": "Reject all"}},
            "default_language": "en",
            "privacy_policy_url": "https://example.com/privacy",
            "allowed_origins": ["https://example.com"]
        })
    }

    fn with(mut base: Value, path: &[&str], v: Value) -> Value {
        let mut cur = &mut base;
        for (i, k) in path.iter().enumerate() {
            if i == path.len() - 1 {
                cur[*k] = v;
                break;
            }
            cur = &mut cur[*k];
        }
        base
    }

    fn field_of(r: Result<ConfigSpec>) -> (Option<String>, String) {
        match r {
            Err(Error::Validation { field, message }) => (field, message),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let spec = ConfigSpec::parse(minimal()).unwrap();
        assert_eq!(spec.consent_expiry_days, 180);
        assert!(spec.geo_targeting_enabled && spec.respect_do_not_track);
        assert_eq!(spec.consent_required_regions.len(), 33);
        assert!(spec.categories.necessary.required && spec.categories.necessary.default_accepted);
        assert!(!spec.categories.analytics.default_accepted && spec.categories.analytics.enabled);
        assert_eq!(spec.categories.marketing.display_name, "Marketing");
        assert_eq!(spec.banner.primary_color.rgb(), [0x1a, 0x73, 0xe8]);
    }

    #[test]
    fn the_sample_config_is_valid() {
        let mut sample: Value = serde_json::from_str(include_str!("../../../banner/sample-config.json")).unwrap();
        sample.as_object_mut().unwrap().remove("id");
        ConfigSpec::parse(sample).unwrap();
    }

    #[test]
    fn each_rejected_field_is_named() {
        let table: Vec<(Value, &str)> = vec![
            (with(minimal(), &["banner"], json!({"primary_color": "blue"})), "banner.primary_color"),
            (with(minimal(), &["banner"], json!({"position": "left"})), "banner.position"),
            (with(minimal(), &["consent_expiry_days"], json!(0)), "consent_expiry_days"),
            (with(minimal(), &["consent_expiry_days"], json!(731)), "consent_expiry_days"),
            (with(minimal(), &["privacy_policy_url"], json!("http://example.com/p")), "privacy_policy_url"),
            (with(minimal(), &["cookie_policy_url"], json!("not a url")), "cookie_policy_url"),
            (with(minimal(), &["consent_required_regions"], json!(["SE", "XX"])), "consent_required_regions[1]"),
            (with(minimal(), &["allowed_origins"], json!(["*"])), "allowed_origins[0]"),
            (with(minimal(), &["default_language"], json!("fr")), "default_language"),
            (with(minimal(), &["default_language"], json!("english!")), "default_language"),
            (with(minimal(), &["display_name"], json!("")), "display_name"),
            (
                with(minimal(), &["categories"], json!({"necessary": {"enabled": false}})),
                "categories.necessary.enabled",
            ),
            (
                with(minimal(), &["categories"], json!({"necessary": {"required": false}})),
                "categories.necessary.required",
            ),
            (
                with(minimal(), &["categories"], json!({"analytics": {"required": true}})),
                "categories.analytics.required",
            ),
            (with(minimal(), &["categories"], json!({"ads": {}})), "categories"),
            (
                with(minimal(), &["categories"], json!({"marketing": {"cookie_names": ["a b"]}})),
                "categories.marketing.cookie_names[0]",
            ),
            (with(minimal(), &["texts", "en", "title"], json!("")), "texts.en.title"),
            (with(minimal(), &["texts", "en", "body"], Value::Null), "texts.en.body"),
            (with(minimal(), &["texts", "en", "accept_all"], json!("x".repeat(101))), "texts.en.accept_all"),
            (with(minimal(), &["texts", "en", "colour"], json!("x")), "texts.en"),
            (with(minimal(), &["unknown"], json!(1)), "unknown"),
        ];
        for (input, want) in table {
            let (field, message) = field_of(ConfigSpec::parse(input.clone()));
            let field = field.unwrap_or_else(|| ".".into());
            assert!(field.starts_with(want), "{want}: got field {field:?} ({message}) for {input}");
            assert!(!message.is_empty());
        }
    }

    #[test]
    fn several_problems_are_reported_together() {
        let input = with(with(minimal(), &["consent_expiry_days"], json!(0)), &["display_name"], json!(""));
        let (field, message) = field_of(ConfigSpec::parse(input));
        assert_eq!(field.as_deref(), Some("consent_expiry_days"));
        assert!(message.contains("consent_expiry_days") && message.contains("display_name"), "{message}");
    }

    #[test]
    fn values_are_normalised() {
        let input = with(
            with(minimal(), &["consent_required_regions"], json!(["se", "SE", "us-ca"])),
            &["banner"],
            json!({"primary_color": "#AABBCC"}),
        );
        let spec = ConfigSpec::parse(input).unwrap();
        assert_eq!(serde_json::to_value(&spec.consent_required_regions).unwrap(), json!(["SE", "US-CA"]));
        assert_eq!(String::from(spec.banner.primary_color), "#aabbcc");
    }

    #[test]
    fn the_texts_hash_covers_texts_categories_and_policy_links_only() {
        let a = ConfigSpec::parse(minimal()).unwrap();
        let mut b = a.clone();
        b.banner.show_preferences = false;
        b.consent_expiry_days = 30;
        assert_eq!(a.texts_hash(), b.texts_hash());
        b.categories.analytics.description = "changed".into();
        assert_ne!(a.texts_hash(), b.texts_hash());
        let mut c = a.clone();
        c.privacy_policy_url = None;
        assert_ne!(a.texts_hash(), c.texts_hash());
        assert_eq!(a.texts_hash().len(), 64);
    }

    #[test]
    fn status_transitions() {
        use Status::*;
        let allowed =
            [(Active, Paused), (Paused, Active), (Active, Decommissioned), (Paused, Decommissioned), (Active, Active)];
        for from in [Draft, Active, Paused, Decommissioned] {
            for to in [Draft, Active, Paused, Decommissioned] {
                let ok = from == to || allowed.contains(&(from, to));
                assert_eq!(from.refuse_change_to(to).is_none(), ok, "{from} -> {to}");
            }
        }
    }
}
