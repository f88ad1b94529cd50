//! Non-blocking warnings: settings that are valid but contradict regulator guidance. They are
//! returned with every write (`warnings`), so a webmaster sees them while editing, and never
//! stop a save — some sites have reasons (a banner shown only outside the EU, say).

use super::spec::{ConfigSpec, HexColor};

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
        w.push("banner.show_reject_all: refusing must be as easy as accepting; regulators expect \"Reject all\" on the first layer next to \"Accept all\" (EDPB cookie banner taskforce 2023, CNIL 2020)".to_string());
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
    let button = contrast_ratio(&b.primary_color, &b.background_color);
    if button < 3.0 {
        w.push(format!(
            "banner.primary_color: contrast with background_color is {button:.2}:1, below 3:1 (WCAG 2.1 1.4.11); buttons must be clearly visible"
        ));
    }
    for (name, c) in spec.categories.iter().into_iter().skip(1) {
        if c.enabled && c.default_accepted {
            w.push(format!(
                "categories.{name}.default_accepted: pre-ticked consent is not valid consent (CJEU Planet49, C-673/17); this default applies only outside consent-required regions"
            ));
        }
    }
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
                json!({"texts": {"en": {"title": "t", "body": "b", "accept_all": "A", "reject_all": "R"}, "sv": {"title": "t"}}}),
                "texts.sv",
            ),
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
    fn a_disabled_category_defaulting_on_is_not_warned_about() {
        let s = spec(json!({"categories": {"marketing": {"enabled": false, "default_accepted": true}}}));
        assert!(!warned(&s, "categories.marketing.default_accepted"));
    }
}
