//! Serving the consent banner: the tenant's banner config rendered into
//! `templates/banner.js.tera` around the browser source in `banner/` (see `banner/README.md`).
//!
//! The browser source is embedded at compile time (`banner/dist/banner.min.js`, built from
//! `banner/banner.js` by `banner/build.mjs`, and `banner/banner.css`), so the binary serves the
//! banner with no files beside it.

use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tera::{Context, Tera};

use crate::consent::config::{
    guidance::BUILTIN_ENGLISH,
    spec::{ConfigSpec, HexColor},
};

const TEMPLATE: &str = include_str!("../../templates/banner.js.tera");
/// The default build: what every tenant gets unless an option below needs more.
const SCRIPT: &str = include_str!("../../banner/dist/banner.min.js");
/// Build variants (banner/build.mjs): the same source with the per-provider choices UI
/// (`per_provider_choices`) and/or `consentgate.flags()` (an active PostHog config with feature
/// flags) compiled in, so the default banner carries neither.
const SCRIPT_PP: &str = include_str!("../../banner/dist/banner.pp.min.js");
const SCRIPT_FLAGS: &str = include_str!("../../banner/dist/banner.flags.min.js");
const SCRIPT_PP_FLAGS: &str = include_str!("../../banner/dist/banner.pp.flags.min.js");
const CSS: &str = include_str!("../../banner/banner.css");
/// The per-provider rows' styles, appended for the per-provider variant only.
const CSS_PP: &str = include_str!("../../banner/banner-pp.css");

/// Which build of the browser source a tenant's banner is rendered with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Variant {
    /// The preferences list provider configs with their own switches (`per_provider_choices`).
    pub per_provider: bool,
    /// `consentgate.flags()`: PostHog feature flags through the gateway.
    pub flags: bool,
}

impl Variant {
    pub fn script(self) -> &'static str {
        match (self.per_provider, self.flags) {
            (false, false) => SCRIPT,
            (true, false) => SCRIPT_PP,
            (false, true) => SCRIPT_FLAGS,
            (true, true) => SCRIPT_PP_FLAGS,
        }
    }
}

/// Whether the tenant's banner offers `consentgate.flags()`: some provider config is a PostHog
/// one, `active`, with `enable_feature_flags: true` in its settings.
pub fn feature_flags(configs: &[entity::provider_config::Model]) -> bool {
    configs.iter().any(|m| {
        m.provider == "posthog"
            && crate::providers::config::sends(m)
            && m.settings.get("enable_feature_flags") == Some(&Value::Bool(true))
    })
}

/// What the banner of a config with `per_provider_choices` adds to its banner config: the offer's
/// fingerprint (`offer`, kept with the visitor's choice so the banner asks again when it
/// changes) and the configs on offer (`providers`: id, category listed under, name, what it
/// receives, privacy policy link when set).
pub fn add_providers(config: &mut Value, offer: &[crate::consent::offer::Offered]) {
    config["offer"] = crate::consent::offer::offer_fingerprint(offer).into();
    config["providers"] = offer
        .iter()
        .map(|o| {
            let mut v = json!({
                "id": o.id,
                "category": o.category.as_str(),
                "name": o.name,
                "receives": crate::consent::offer::receives(&o.provider),
            });
            if let Some(url) = &o.privacy_policy_url {
                v["privacy_policy_url"] = url.clone().into();
            }
            v
        })
        .collect();
}

/// The part of a tenant's provider configs a rendered banner depends on, as a cache key: the
/// offer as [`add_providers`] writes it and whether feature flags are on.
pub fn provider_key(configs: &[entity::provider_config::Model]) -> String {
    let mut v = json!({});
    add_providers(&mut v, &crate::consent::offer::offered(configs));
    v["flags"] = feature_flags(configs).into();
    crate::crypto::sha256_hex(v.to_string())[..16].to_string()
}

/// The banner config (`CG_CONFIG`, banner/README.md) of a published config: only what the browser
/// reads, since every byte counts against the banner's 6 KB gzip budget. Enabled categories only,
/// without `enabled` and `required` (only `necessary` is required, and it is always on), and
/// without a category's own name (as `label`) and description when every language has its own;
/// settings at their default (`show_*: true`, `default_accepted: false`, no cookie names) are
/// left out. A right-to-left language says so (`texts.{lang}.dir`), and the default language
/// carries the built-in English of the texts it leaves out ([`BUILTIN_ENGLISH`]).
pub fn browser_config(spec: &ConfigSpec, config_id: uuid::Uuid, revision: i64, reconsent_revision: i64) -> Value {
    let mut categories = Map::new();
    for (name, c) in spec.categories.iter() {
        if !c.enabled {
            continue;
        }
        // Defaults are left out (false, none); `necessary` is always granted, so its default and
        // cookies are never consulted.
        let mut v = json!({});
        if name != "necessary" && c.default_accepted {
            v["default_accepted"] = true.into();
        }
        if name != "necessary" && !c.cookie_names.is_empty() {
            v["cookie_names"] = json!(c.cookie_names);
        }
        let translated = spec.texts.values().all(|t| {
            let ct = &t.categories;
            let text = match name {
                "necessary" => &ct.necessary,
                "functional" => &ct.functional,
                "analytics" => &ct.analytics,
                _ => &ct.marketing,
            };
            text.as_ref().is_some_and(|t| t.label.is_some() && t.description.is_some())
        });
        if !translated {
            v["label"] = c.display_name.clone().into();
            v["description"] = c.description.clone().into();
        }
        categories.insert(name.into(), v);
    }
    let mut texts = Map::new();
    for (lang, t) in &spec.texts {
        let mut v = serde_json::to_value(t).unwrap_or_default();
        // Only `rtl` is said: the banner reads no `dir` as `ltr`.
        if direction(lang.as_str()) == "rtl" {
            v["dir"] = "rtl".into();
        }
        // The default language carries the built-in English of the texts it leaves out, which
        // every language falls back to.
        if *lang == spec.default_language
            && let Some(v) = v.as_object_mut()
        {
            for (key, text) in BUILTIN_ENGLISH {
                v.entry(key).or_insert_with(|| text.into());
            }
        }
        texts.insert(lang.to_string(), v);
    }
    // The first layer's buttons are shown unless switched off.
    let mut banner = json!(spec.banner);
    for key in ["show_reject_all", "show_preferences"] {
        if banner[key] == true {
            banner.as_object_mut().map(|b| b.remove(key));
        }
    }
    json!({
        "config_id": config_id,
        "revision": revision,
        "reconsent_revision": reconsent_revision,
        "expiry_days": spec.consent_expiry_days,
        "respect_do_not_track": spec.respect_do_not_track,
        "geo_targeting_enabled": spec.geo_targeting_enabled,
        "consent_required_regions": spec.consent_required_regions,
        "banner": banner,
        "categories": categories,
        "texts": texts,
        "default_language": spec.default_language,
        "privacy_policy_url": spec.privacy_policy_url,
        "cookie_policy_url": spec.cookie_policy_url,
    })
}

/// `rtl` for languages written right to left — by primary subtag (Arabic, Dhivehi, Persian,
/// Hebrew, Pashto, Sindhi, Uyghur, Urdu, Yiddish, Central Kurdish, and the old code `iw`) or by an
/// explicit script subtag (Arab, Hebr, Thaa, Syrc, Nkoo) — `ltr` otherwise.
pub fn direction(lang: &str) -> &'static str {
    const RTL_LANGUAGES: [&str; 11] = ["ar", "dv", "fa", "he", "ps", "sd", "ug", "ur", "yi", "ckb", "iw"];
    const RTL_SCRIPTS: [&str; 5] = ["arab", "hebr", "thaa", "syrc", "nkoo"];
    let lower = lang.to_ascii_lowercase();
    let mut parts = lower.split('-');
    let primary = parts.next().unwrap_or_default();
    let script = parts.find(|p| p.len() == 4 && p.bytes().all(|b| b.is_ascii_alphabetic()));
    match script {
        Some(s) if RTL_SCRIPTS.contains(&s) => "rtl",
        Some(_) => "ltr",
        None if RTL_LANGUAGES.contains(&primary) => "rtl",
        None => "ltr",
    }
}

/// Rendered banners by (config id, revision, [`provider_key`]). A published revision never
/// changes, and the provider key covers what the banner takes from the provider configs, so an
/// entry never goes stale; the map is bounded by clearing it when full.
#[derive(Default)]
pub struct Cache {
    entries: std::sync::Mutex<std::collections::HashMap<(uuid::Uuid, i64, String), std::sync::Arc<Rendered>>>,
}

const CACHE_ENTRIES: usize = 1_000;

impl Cache {
    pub fn get(&self, config_id: uuid::Uuid, revision: i64, providers: &str) -> Option<std::sync::Arc<Rendered>> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(config_id, revision, providers.to_string()))
            .cloned()
    }

    /// Stores what was rendered for `config` under the config id and revision it names and the
    /// provider key it was rendered with.
    pub fn put(&self, config: &serde_json::Value, providers: &str, rendered: Rendered) -> std::sync::Arc<Rendered> {
        let rendered = std::sync::Arc::new(rendered);
        let key = config["config_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .zip(config["revision"].as_i64())
            .map(|(id, rev)| (id, rev, providers.to_string()));
        if let Some(key) = key {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= CACHE_ENTRIES {
                entries.clear();
            }
            entries.insert(key, rendered.clone());
        }
        rendered
    }
}

/// The rendered script, compressed once (gzip at level 9, brotli at quality 11: it is served
/// many times per render), with a strong validator per encoding.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub body: String,
    /// A strong ETag (quoted) over the exact bytes served: source, CSS and the config revision
    /// all change it.
    pub etag: String,
    pub gzip: Vec<u8>,
    pub br: Vec<u8>,
}

/// A content coding banner.js is served in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Br,
}

impl Encoding {
    /// The best coding `Accept-Encoding` allows (RFC 9110 §12.5.3): br, then gzip, then none.
    /// `q=0` refuses a coding; `*` stands for any coding not listed.
    pub fn negotiate<'a>(accept_encoding: impl IntoIterator<Item = &'a str>) -> Encoding {
        let (mut br, mut gzip, mut any) = (None, None, None);
        for item in accept_encoding.into_iter().flat_map(|v| v.split(',')) {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let weight = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .map(|w| w.trim().parse::<f32>().unwrap_or(0.0))
                .next()
                .unwrap_or(1.0);
            match coding.as_str() {
                "br" => br = Some(weight),
                "gzip" | "x-gzip" => gzip = Some(weight),
                "*" => any = Some(weight),
                _ => {}
            }
        }
        let accepted = |w: Option<f32>| w.or(any).is_some_and(|w| w > 0.0);
        if accepted(br) {
            Encoding::Br
        } else if accepted(gzip) {
            Encoding::Gzip
        } else {
            Encoding::Identity
        }
    }

    pub fn header_value(self) -> Option<&'static str> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some("gzip"),
            Encoding::Br => Some("br"),
        }
    }
}

impl Rendered {
    /// The bytes and the ETag of the representation in `encoding`. Each encoding has its own
    /// strong ETag: the bytes differ, so a cache must not answer one with the other's 304.
    pub fn representation(&self, encoding: Encoding) -> (&[u8], String) {
        let tag = self.etag.trim_end_matches('"');
        match encoding {
            Encoding::Identity => (self.body.as_bytes(), self.etag.clone()),
            Encoding::Gzip => (&self.gzip, format!("{tag}-gzip\"")),
            Encoding::Br => (&self.br, format!("{tag}-br\"")),
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params =
        brotli::enc::BrotliEncoderParams { quality: 11, lgwin: 22, size_hint: data.len(), ..Default::default() };
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).expect("compressing into a Vec cannot fail");
    out
}

fn tera() -> &'static Tera {
    static TERA: OnceLock<Tera> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut tera = Tera::default();
        // JavaScript, not HTML: values are escaped for a script context by `script_json`.
        tera.autoescape_on(vec![]);
        tera.add_raw_template("banner.js", TEMPLATE).expect("templates/banner.js.tera parses");
        tera
    })
}

/// JSON that is safe inside a `<script>` element and a JavaScript string context: `<`, `>` and
/// `&` are escaped so a text holding `</script>` or `<!--` cannot end the script, and U+2028 /
/// U+2029 (valid in JSON, line terminators in older JavaScript) are escaped too.
pub fn script_json(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).expect("serialising a JSON value cannot fail");
    let mut out = String::with_capacity(json.len() + 16);
    for ch in json.chars() {
        match ch {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the banner for one banner config ([`browser_config`]) with the default build.
pub fn render(config: &serde_json::Value) -> Result<Rendered, tera::Error> {
    render_variant(config, Variant::default())
}

/// Renders the banner for one banner config ([`browser_config`]) with a build variant. The
/// banner's colours become custom properties at the top of its stylesheet (`--cg-p`, `--cg-b`,
/// `--cg-t`), so they leave the config: one place, no script to apply them.
pub fn render_variant(config: &serde_json::Value, variant: Variant) -> Result<Rendered, tera::Error> {
    let body = render_script(config, variant)?;
    let etag = format!("\"{}\"", &crate::crypto::sha256_hex(&body)[..32]);
    let (gzip, br) = (gzip(body.as_bytes()), brotli(body.as_bytes()));
    Ok(Rendered { body, etag, gzip, br })
}

/// The script alone, uncompressed: what [`render_variant`] serves, for the admin pages' preview
/// of a draft (rendered per request, so not worth compressing).
pub fn render_script(config: &serde_json::Value, variant: Variant) -> Result<String, tera::Error> {
    let mut config = config.clone();
    // `all: initial` keeps the site's styles out; custom properties are not reset by it.
    let mut css = String::from(":host{all:initial;");
    for (key, var) in [("primary_color", "p"), ("background_color", "b"), ("text_color", "t")] {
        let colour = config.get_mut("banner").and_then(Value::as_object_mut).and_then(|b| b.remove(key));
        // Only #rrggbb reaches the stylesheet, whatever the config holds.
        if let Some(c) = colour.as_ref().and_then(Value::as_str).and_then(|c| HexColor::parse(c).ok()) {
            css.push_str(&format!("--cg-{var}:{};", String::from(c)));
        }
    }
    css.push('}');
    // One rule a line in the source; no line breaks served (every byte counts against the budget).
    css.extend(CSS.lines());
    if variant.per_provider {
        css.extend(CSS_PP.lines());
    }
    let mut ctx = Context::new();
    ctx.insert("config_json", &script_json(&config));
    ctx.insert("css", &script_json(&css));
    ctx.insert("script", variant.script());
    tera().render("banner.js", &ctx)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn accept_encoding_negotiation() {
        let table = [
            (vec![], Encoding::Identity),
            (vec!["gzip, deflate, br, zstd"], Encoding::Br),
            (vec!["gzip"], Encoding::Gzip),
            (vec!["GZIP;q=0.5", "identity"], Encoding::Gzip),
            (vec!["br;q=0, gzip"], Encoding::Gzip),
            (vec!["br;q=0, gzip;q=0"], Encoding::Identity),
            (vec!["*"], Encoding::Br),
            (vec!["*;q=0, identity"], Encoding::Identity),
            (vec!["x-gzip"], Encoding::Gzip),
            (vec!["deflate"], Encoding::Identity),
            (vec!["br;q=bad"], Encoding::Identity),
        ];
        for (header, want) in table {
            assert_eq!(Encoding::negotiate(header.iter().copied()), want, "{header:?}");
        }
    }

    #[test]
    fn brotli_is_smaller_than_gzip_and_each_encoding_has_its_own_etag() {
        let config = browser_config(
            &ConfigSpec::parse({
                let mut v: Value = serde_json::from_str(include_str!("../../banner/sample-config.json")).unwrap();
                v.as_object_mut().unwrap().remove("id");
                v
            })
            .unwrap(),
            uuid::Uuid::nil(),
            1,
            0,
        );
        let r = render(&config).unwrap();
        assert!(r.br.len() < r.gzip.len(), "br {} B, gzip {} B", r.br.len(), r.gzip.len());
        let mut decoded = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.gzip[..]), &mut decoded).unwrap();
        assert_eq!(decoded, r.body);
        let mut decoded = Vec::new();
        brotli::BrotliDecompress(&mut &r.br[..], &mut decoded).unwrap();
        assert_eq!(decoded, r.body.as_bytes());
        let tags: std::collections::HashSet<String> =
            [Encoding::Identity, Encoding::Gzip, Encoding::Br].map(|e| r.representation(e).1).into();
        assert_eq!(tags.len(), 3, "{tags:?}");
        assert!(tags.iter().all(|t| t.starts_with('"') && t.ends_with('"') && t.len() > 30));
    }

    #[test]
    fn colours_go_into_the_stylesheet_and_only_as_colours() {
        let r = render(&json!({"revision": 1, "banner": {"style": "bar", "primary_color": "#1a56db", "background_color": "#ffffff", "text_color": "red;}*{x:y"}}))
            .unwrap();
        assert!(r.body.contains("CG_CSS=\":host{all:initial;--cg-p:#1a56db;--cg-b:#ffffff;}"), "{}", &r.body[..300]);
        assert!(
            r.body.contains("var CG_CONFIG={\"banner\":{\"style\":\"bar\"},\"revision\":1},"),
            "{}",
            &r.body[..300]
        );
        assert!(!r.body.contains("x:y"));
    }

    #[test]
    fn writing_direction_by_language_and_script() {
        let table = [
            ("en", "ltr"),
            ("ar", "rtl"),
            ("AR-eg", "rtl"),
            ("he", "rtl"),
            ("fa-IR", "rtl"),
            ("ckb", "rtl"),
            ("pt-BR", "ltr"),
            ("pa-Arab", "rtl"),
            ("az-Arab-IR", "rtl"),
            ("uz-Latn", "ltr"),
            ("ar-Latn", "ltr"),
            ("arn", "ltr"),
        ];
        for (lang, want) in table {
            assert_eq!(direction(lang), want, "{lang}");
        }
    }

    #[test]
    fn the_browser_config_holds_what_the_banner_reads() {
        let mut sample: Value = serde_json::from_str(include_str!("../../banner/sample-config.json")).unwrap();
        sample.as_object_mut().unwrap().remove("id");
        sample["texts"]["ar"] = json!({"title": "ملفات تعريف الارتباط"});
        sample["categories"]["marketing"]["enabled"] = json!(false);
        let spec = ConfigSpec::parse(sample).unwrap();
        let c = browser_config(&spec, uuid::Uuid::nil(), 3, 2);
        assert_eq!(c["revision"], 3);
        assert_eq!(c["reconsent_revision"], 2);
        assert_eq!(c["texts"]["ar"]["dir"], "rtl");
        assert!(c["texts"]["sv"].get("dir").is_none(), "left to right needs no word");
        assert_eq!(c["texts"]["sv"]["accept_all"], "Godkänn alla");
        // The built-in English the banner falls back to: with the default language, once.
        assert_eq!(
            (c["texts"]["en"]["close"].as_str(), c["texts"]["en"]["always_on"].as_str()),
            (Some("Close"), Some("Always on"))
        );
        assert!(c["texts"]["sv"].get("close").is_none());
        let cats = c["categories"].as_object().unwrap();
        assert_eq!(cats.keys().collect::<Vec<_>>(), ["analytics", "functional", "necessary"], "enabled ones only");
        assert!(cats["necessary"].get("default_accepted").is_none() && cats["necessary"].get("cookie_names").is_none());
        // Arabic has no category texts, so the categories' own names are the fallback.
        assert_eq!(cats["analytics"]["label"], "Analytics");
        assert_eq!(cats["analytics"]["default_accepted"], true);
        assert!(cats["functional"].get("default_accepted").is_none(), "false is the default");
        assert!(c["banner"].get("show_reject_all").is_none() && c["banner"]["style"] == "box");
        assert_eq!(cats["analytics"]["cookie_names"], json!(["_ga", "_ga_*", "ph_*"]));
        assert!(cats["analytics"].get("enabled").is_none() && cats["analytics"].get("required").is_none());
        // Without it every language names every category itself.
        let mut sample: Value = serde_json::from_str(include_str!("../../banner/sample-config.json")).unwrap();
        sample.as_object_mut().unwrap().remove("id");
        let c = browser_config(&ConfigSpec::parse(sample).unwrap(), uuid::Uuid::nil(), 1, 0);
        assert!(c["categories"]["analytics"].get("label").is_none(), "{}", c["categories"]);
    }

    #[test]
    fn script_json_cannot_break_out_of_the_script() {
        let hostile = json!({"title": "</script><script>alert(1)</script>", "body": "a\u{2028}b\u{2029}c <!-- & -->"});
        let s = script_json(&hostile);
        for bad in ["</script", "<script", "<!--", "\u{2028}", "\u{2029}", "&"] {
            assert!(!s.contains(bad), "{bad:?} in {s}");
        }
        // And it is still the same JSON value.
        assert_eq!(serde_json::from_str::<serde_json::Value>(&s).unwrap(), hostile);
    }

    #[test]
    fn the_rendered_banner_embeds_the_config_and_changes_etag_with_it() {
        let a = render(&json!({"revision": 1, "tenant": "demo"})).unwrap();
        let b = render(&json!({"revision": 2, "tenant": "demo"})).unwrap();
        assert!(a.body.contains("var CG_CONFIG={\"revision\":1,\"tenant\":\"demo\"},"), "{}", &a.body[..200]);
        assert!(a.body.contains("CG_CSS=\":host{all:initial;}"), "no colours, no custom properties");
        assert!(a.body.contains(SCRIPT.trim()));
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.etag, render(&json!({"revision": 1, "tenant": "demo"})).unwrap().etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
    }
}
