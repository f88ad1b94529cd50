//! Non-blocking warnings: settings that are valid but contradict regulator guidance. They are
//! returned with every write (`warnings`), so a webmaster sees them while editing, and never
//! stop a save — some sites have reasons (a banner shown only outside the EU, say).

use super::spec::{ConfigSpec, HexColor, Texts};

/// WCAG 2.x contrast ratio of two colours (1.0–21.0).
pub fn contrast_ratio(a: &HexColor, b: &HexColor) -> f64 {
    fn channel(c: u8) -> f64 {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    }
    fn luminance(c: &HexColor) -> f64 {
        let [r, g, b] = c.rgb();
        0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)
    }
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// Every warning for `spec`, each starting with the field it is about.
pub fn warnings(spec: &ConfigSpec) -> Vec<String> {
    let mut w = Vec::new();
    let b = &spec.banner;
    if !b.show_reject_all {
        w.push("banner.show_reject_all: applies only outside consent_required_regions; for visitors in a consent-required region (or of unknown region) the first layer always offers \"Reject all\" next to \"Accept all\", since refusing must be as easy as accepting (EDPB cookie banner taskforce 2023, CNIL 2020)".to_string());
    }
    if !b.show_preferences {
        w.push("banner.show_preferences: without preferences visitors cannot choose per purpose; consent must be specific (GDPR Art. 4(11))".to_string());
    }
    let text = contrast_ratio(&b.text_color, &b.background_color);
    if text < 4.5 {
        w.push(format!(
            "banner.text_color: contrast with background_color is {text:.2}:1, below the 4.5:1 WCAG 2.1 minimum (1.4.3); the banner must be readable to be informed consent"
        ));
    }
    // The banner renders "Reject all" and "Accept all" as background_color text on a
    // primary_color button (and the other buttons' borders in primary_color): the labels are text.
    let button = contrast_ratio(&b.primary_color, &b.background_color);
    if button < 4.5 {
        w.push(format!(
            "banner.primary_color: the \"Reject all\" and \"Accept all\" labels are background_color text on primary_color, a contrast of {button:.2}:1, below the 4.5:1 WCAG 2.1 minimum for text (1.4.3)"
        ));
    }
    for (name, c) in spec.categories.iter().into_iter().skip(1) {
        if c.enabled && c.default_accepted {
            w.push(format!(
                "categories.{name}.default_accepted: pre-ticked consent is not valid consent (CJEU Planet49, C-673/17); this default applies only outside consent-required regions"
            ));
        }
    }
    let default_texts = spec.texts.get(&spec.default_language);
    for (lang, t) in &spec.texts {
        let missing: Vec<&str> = [("accept_all", &t.accept_all), ("reject_all", &t.reject_all)]
            .into_iter()
            .filter(|(_, v)| v.as_deref().is_none_or(|s| s.trim().is_empty()))
            .map(|(k, _)| k)
            .collect();
        if !missing.is_empty() && *lang == spec.default_language {
            w.push(format!(
                "texts.{lang}: no {} text; the banner falls back to English placeholders",
                missing.join(" and ")
            ));
        } else if !missing.is_empty() {
            w.push(format!(
                "texts.{lang}: no {} text; visitors reading {lang} see the {} text instead",
                missing.join(" and "),
                spec.default_language
            ));
        }
        // The banner's built-in fallbacks are English: a visitor reading another language would
        // get an English link label, close button or switch note in the middle of their texts.
        if is_english(lang.as_str()) {
            continue;
        }
        let english: Vec<&str> = builtin_texts_used(spec)
            .into_iter()
            .filter(|&k| {
                !has_text(t, k)
                    && !default_texts.is_some_and(|d| has_text(d, k) && !is_english(spec.default_language.as_str()))
            })
            .collect();
        if !english.is_empty() {
            w.push(format!(
                "texts.{lang}: no {} text; visitors reading {lang} see English there (the banner's built-in {})",
                english.join(", "),
                english.iter().map(|k| format!("\"{}\"", builtin_english(k))).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    // What each provider receives (`offer::receives`) is written by the gateway, in English only.
    if spec.per_provider_choices {
        let other: Vec<&str> = spec.texts.keys().map(|l| l.as_str()).filter(|l| !is_english(l)).collect();
        if !other.is_empty() {
            w.push(format!(
                "per_provider_choices: what each provider receives is described in English only; visitors reading {} see that English text under each provider",
                other.join(", ")
            ));
        }
    }
    if spec.privacy_policy_url.is_none() {
        w.push("privacy_policy_url: not set; consent must be informed, and visitors look for the privacy policy in the banner".to_string());
    }
    if spec.consent_expiry_days > 395 {
        w.push(format!(
            "consent_expiry_days: {} days is longer than 13 months; CNIL recommends asking again after about 6 months",
            spec.consent_expiry_days
        ));
    }
    if spec.geo_targeting_enabled && spec.consent_required_regions.is_empty() {
        w.push("consent_required_regions: empty while geo targeting is on, so no known country requires consent and category defaults apply everywhere".to_string());
    }
    if spec.allowed_origins.is_empty() {
        w.push(
            "allowed_origins: empty; browsers on your site cannot record consent until their origin is listed"
                .to_string(),
        );
    }
    w
}

/// The texts the banner has built-in English for (banner.js `DEF`), as far as this config shows
/// them: the policy link labels only with their URL, the signal note only when a signal can lock
/// a switch (GPC always locks marketing).
fn builtin_texts_used(spec: &ConfigSpec) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if spec.privacy_policy_url.is_some() {
        keys.push("privacy_policy");
    }
    if spec.cookie_policy_url.is_some() {
        keys.push("cookie_policy");
    }
    keys.extend(["close", "always_on"]);
    if spec.respect_do_not_track || spec.categories.marketing.enabled {
        keys.push("signal_denied");
    }
    keys
}

/// The banner's built-in English for the texts a config may leave out: what a language without
/// its own shows (the gateway adds them to the default language's texts in the banner config).
pub const BUILTIN_ENGLISH: [(&str, &str); 5] = [
    ("privacy_policy", "Privacy policy"),
    ("cookie_policy", "Cookie policy"),
    ("close", "Close"),
    ("always_on", "Always on"),
    ("signal_denied", "Off: your browser's privacy signal"),
];

fn builtin_english(key: &str) -> &'static str {
    BUILTIN_ENGLISH.iter().find(|(k, _)| *k == key).map_or("", |(_, text)| text)
}

fn has_text(t: &Texts, key: &str) -> bool {
    let v = match key {
        "privacy_policy" => &t.privacy_policy,
        "cookie_policy" => &t.cookie_policy,
        "close" => &t.close,
        "always_on" => &t.always_on,
        _ => &t.signal_denied,
    };
    v.as_deref().is_some_and(|s| !s.trim().is_empty())
}

fn is_english(lang: &str) -> bool {
    lang.split('-').next().is_some_and(|p| p.eq_ignore_ascii_case("en"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::consent::config::spec::tests::minimal;

    fn spec(patch: serde_json::Value) -> ConfigSpec {
        let mut v = minimal();
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        ConfigSpec::parse(v).unwrap()
    }

    fn warned(s: &ConfigSpec, field: &str) -> bool {
        warnings(s).iter().any(|w| w.starts_with(&format!("{field}:")))
    }

    #[test]
    fn contrast_ratios_match_wcag() {
        let c = |s| HexColor::parse(s).unwrap();
        assert!((contrast_ratio(&c("#000000"), &c("#ffffff")) - 21.0).abs() < 0.01);
        assert!((contrast_ratio(&c("#ffffff"), &c("#ffffff")) - 1.0).abs() < 0.001);
        // #767676 on white is the classic just-passing grey (4.54:1).
        let grey = contrast_ratio(&c("#767676"), &c("#ffffff"));
        assert!(grey > 4.5 && grey < 4.6, "{grey}");
        assert!(contrast_ratio(&c("#777777"), &c("#ffffff")) < 4.5);
    }

    #[test]
    fn a_good_config_has_no_warnings() {
        assert_eq!(warnings(&spec(json!({}))), Vec::<String>::new());
    }

    #[test]
    fn settings_against_guidance_are_warned_about() {
        let table = [
            (json!({"banner": {"show_reject_all": false}}), "banner.show_reject_all"),
            (json!({"banner": {"show_preferences": false}}), "banner.show_preferences"),
            (json!({"banner": {"text_color": "#999999", "background_color": "#ffffff"}}), "banner.text_color"),
            (json!({"banner": {"primary_color": "#eeeeee"}}), "banner.primary_color"),
            (json!({"categories": {"analytics": {"default_accepted": true}}}), "categories.analytics.default_accepted"),
            (json!({"texts": {"en": {"title": "t", "body": "b", "accept_all": "Accept all"}}}), "texts.en"),
            (
                json!({"texts": {"en": {"title": "t", "body": "b", "accept_all": "A", "reject_all": "R"}, "sv": {"title": "t", "privacy_policy": "Integritetspolicy", "close": "Stäng", "always_on": "Alltid på", "signal_denied": "Av: din webbläsare ber om att inte spåras"}}}),
                "texts.sv",
            ),
            (
                json!({"texts": {"en": {"title": "t", "body": "b", "accept_all": "A", "reject_all": "R"}, "sv": {"title": "t", "accept_all": "Godkänn", "reject_all": "Avvisa"}}}),
                "texts.sv",
            ),
            (json!({"banner": {"primary_color": "#4a90e2"}}), "banner.primary_color"),
            (json!({"privacy_policy_url": null}), "privacy_policy_url"),
            (json!({"consent_expiry_days": 400}), "consent_expiry_days"),
            (json!({"consent_required_regions": []}), "consent_required_regions"),
            (json!({"allowed_origins": []}), "allowed_origins"),
        ];
        for (patch, field) in table {
            let s = spec(patch.clone());
            assert!(warned(&s, field), "{field}: {patch} gave {:?}", warnings(&s));
            assert_eq!(warnings(&s).len(), 1, "{patch}: {:?}", warnings(&s));
        }
    }

    #[test]
    fn button_labels_need_text_contrast() {
        // #4a90e2 on white is 3.29:1: visible as a shape, too faint for the white label on it.
        let s = spec(json!({"banner": {"primary_color": "#4a90e2", "background_color": "#ffffff"}}));
        let w = warnings(&s);
        assert!(w[0].contains("3.29:1") && w[0].contains("4.5:1"), "{w:?}");
        assert!(!warned(&spec(json!({"banner": {"primary_color": "#1a56db"}})), "banner.primary_color"));
    }

    #[test]
    fn hiding_reject_all_says_where_it_still_shows() {
        let w = warnings(&spec(json!({"banner": {"show_reject_all": false}})));
        assert!(w[0].contains("consent-required region") && w[0].contains("always offers \"Reject all\""), "{w:?}");
    }

    #[test]
    fn missing_built_in_strings_are_named_per_language() {
        let sv = json!({"title": "t", "accept_all": "Godkänn", "reject_all": "Avvisa"});
        let en = json!({"title": "t", "body": "b", "accept_all": "A", "reject_all": "R"});
        let w = warnings(&spec(json!({"texts": {"en": en, "sv": sv}, "cookie_policy_url": "https://example.com/c"})));
        assert_eq!(w.len(), 1, "{w:?}");
        for k in ["privacy_policy", "cookie_policy", "close", "always_on", "signal_denied", "\"Close\""] {
            assert!(w[0].contains(k), "{k}: {w:?}");
        }
        // English variants need none; a language that has them all draws none.
        let en_gb = json!({"title": "t", "body": "b", "accept_all": "A", "reject_all": "R"});
        assert_eq!(
            warnings(&spec(json!({"texts": {"en-GB": en_gb}, "default_language": "en-GB"}))),
            Vec::<String>::new()
        );
        let ar = json!({"title": "t", "body": "b", "accept_all": "A", "reject_all": "R", "privacy_policy": "p", "close": "c", "always_on": "a", "signal_denied": "s"});
        assert_eq!(warnings(&spec(json!({"texts": {"ar": ar}, "default_language": "ar"}))), Vec::<String>::new());
        // A text given in a non-English default language covers the other languages.
        let de = json!({"title": "t", "body": "b", "accept_all": "A", "reject_all": "R", "privacy_policy": "p", "close": "c", "always_on": "a", "signal_denied": "s"});
        let fr = json!({"title": "t", "accept_all": "A", "reject_all": "R"});
        assert_eq!(
            warnings(&spec(json!({"texts": {"de": de, "fr": fr}, "default_language": "de"}))),
            Vec::<String>::new()
        );
    }

    #[test]
    fn per_provider_choices_warn_that_what_providers_receive_is_english_only() {
        let en = json!({"title": "t", "body": "b", "accept_all": "A", "reject_all": "R"});
        let full = |title: &str| json!({"title": title, "body": "b", "accept_all": "A", "reject_all": "R", "privacy_policy": "p", "close": "c", "always_on": "a", "signal_denied": "s"});
        let texts = json!({"en": en, "sv": full("t"), "ar": full("t")});
        // Off (the default): nothing to warn about, whatever the languages.
        assert_eq!(warnings(&spec(json!({"texts": texts.clone()}))), Vec::<String>::new());
        let w = warnings(&spec(json!({"texts": texts, "per_provider_choices": true})));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("per_provider_choices:") && w[0].contains("English only"), "{w:?}");
        assert!(w[0].contains("visitors reading ar, sv see"), "names the other languages, not English: {w:?}");
        // English variants only: nothing is out of language.
        let en_only =
            json!({"texts": {"en-GB": en.clone(), "en": en}, "default_language": "en", "per_provider_choices": true});
        assert_eq!(warnings(&spec(en_only)), Vec::<String>::new());
    }

    #[test]
    fn a_disabled_category_defaulting_on_is_not_warned_about() {
        let s = spec(json!({"categories": {"marketing": {"enabled": false, "default_accepted": true}}}));
        assert!(!warned(&s, "categories.marketing.default_accepted"));
    }
}
