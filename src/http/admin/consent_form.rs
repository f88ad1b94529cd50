//! The consent config editor's form, both ways. [`patch_of`] turns a posted form into the JSON
//! merge patch the API's `PATCH …/configs/{id}` takes (so a save from the page is that PATCH);
//! [`editor`] lays a config (as JSON, possibly with a rejected edit merged in) out as labelled
//! fields in sections, each validation problem and regulator warning placed beside the field it
//! names (the API's field paths: `texts.en.title`, `consent_required_regions[1]`).
//!
//! Form field names are the config's dotted paths. A checkbox is sent as a hidden `false`
//! followed by the box's `true`, the last value winning, so a form that leaves a field out
//! leaves it unchanged. Two names are not config fields: `add_language` (a language tag: new
//! empty texts) and `remove_language.{tag}`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::consent::config::spec::LanguageTag;

const BOOLS: [&str; 8] = [
    "enabled",
    "required",
    "default_accepted",
    "show_reject_all",
    "show_preferences",
    "geo_targeting_enabled",
    "respect_do_not_track",
    "per_provider_choices",
];
const LISTS: [&str; 3] = ["cookie_names", "consent_required_regions", "allowed_origins"];
const CATEGORIES: [&str; 4] = ["necessary", "functional", "analytics", "marketing"];
const TEXTS: [(&str, &str, Kind); 12] = [
    ("title", "Title", Kind::Text),
    ("body", "Body", Kind::Textarea),
    ("accept_all", "“Accept all” button", Kind::Text),
    ("reject_all", "“Reject all” button", Kind::Text),
    ("preferences", "“Preferences” button and dialog title", Kind::Text),
    ("save", "“Save” button (preferences)", Kind::Text),
    ("settings", "“Cookie settings” button (after a choice)", Kind::Text),
    ("privacy_policy", "Privacy policy link", Kind::Text),
    ("cookie_policy", "Cookie policy link", Kind::Text),
    ("close", "Close button (label for screen readers)", Kind::Text),
    ("always_on", "Why strictly necessary is always on", Kind::Text),
    ("signal_denied", "Why a switch is off by a browser signal", Kind::Text),
];

/// The merge patch of a posted form, and the problems with fields that are not config fields
/// (`add_language`). Fields the form does not send are left out, so they stay as they are.
pub fn patch_of(form: &[(String, String)]) -> (Map<String, Value>, Vec<(String, String)>) {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in form {
        if k != "csrf" && k != "view" && k != "updated_at" {
            fields.insert(k, v);
        }
    }
    let mut patch = Value::Object(Map::new());
    let mut problems = Vec::new();
    if let Some(tag) = fields.remove("add_language").map(str::trim).filter(|t| !t.is_empty()) {
        match LanguageTag::parse(tag) {
            Ok(_) => set(&mut patch, &["texts", tag], json!({})),
            Err(m) => problems.push(("add_language".to_string(), m)),
        }
    }
    let mut removed = Vec::new();
    for (k, v) in fields {
        if let Some(tag) = k.strip_prefix("remove_language.") {
            if v == "true" {
                removed.push(tag);
            }
            continue;
        }
        let path: Vec<&str> = k.split('.').collect();
        set(&mut patch, &path, typed(k, path.last().copied().unwrap_or_default(), v));
    }
    // A category's texts left empty in every field: not given (rather than an empty object,
    // which would count as a change).
    if let Some(texts) = patch.get_mut("texts").and_then(Value::as_object_mut) {
        for lang in texts.values_mut() {
            let Some(cats) = lang.get_mut("categories").and_then(Value::as_object_mut) else { continue };
            for c in cats.values_mut() {
                if c.as_object().is_some_and(|o| o.values().all(Value::is_null)) {
                    *c = Value::Null;
                }
            }
        }
    }
    for tag in removed {
        set(&mut patch, &["texts", tag], Value::Null);
    }
    let Value::Object(patch) = patch else { unreachable!("built as an object") };
    (patch, problems)
}

/// A form value as the config's JSON type, by the field's name. What does not read as its type
/// stays a string, so the config's own parsing names the field and the rule.
fn typed(key: &str, last: &str, v: &str) -> Value {
    let v = v.replace("\r\n", "\n");
    if BOOLS.contains(&last) {
        return match v.as_str() {
            "true" | "on" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(v),
        };
    }
    if last == "consent_expiry_days" {
        return v.trim().parse::<i64>().map_or(Value::String(v), Value::from);
    }
    if LISTS.contains(&last) {
        return v.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()).map(Value::from).collect();
    }
    let optional = key.starts_with("texts.") || key == "privacy_policy_url" || key == "cookie_policy_url";
    if optional && v.trim().is_empty() { Value::Null } else { Value::String(v) }
}

fn set(target: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = target;
    for p in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur.as_object_mut().expect("made an object").entry(p.to_string()).or_insert(Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().expect("made an object").insert(last.to_string(), value);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Text,
    Textarea,
    Colour,
    Checkbox,
    Select,
    Number,
    Url,
    List,
}

#[derive(Clone, Debug, Serialize)]
pub struct Field {
    /// The form name: the config's dotted path.
    pub name: String,
    pub id: String,
    pub label: String,
    pub kind: Kind,
    pub value: String,
    pub checked: bool,
    /// (value, label) of a select.
    pub options: Vec<(String, String)>,
    pub help: Option<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// The ids of the help, errors and warnings shown under it (`aria-describedby`).
    pub described_by: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Section {
    /// The config path the section covers (`texts.sv`, `banner`); problems naming it (or a field
    /// of it not shown) are shown at its top.
    pub key: String,
    pub id: String,
    pub title: String,
    pub note: Option<String>,
    pub fields: Vec<Field>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// A language other than the default: the tag, for its "remove" box.
    pub removable: Option<String>,
}

/// One problem in the list at the top of the page: a link to the field.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Listed {
    pub target: String,
    pub text: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Editor {
    pub sections: Vec<Section>,
    /// Every error, in page order, each linking to where it is shown.
    pub errors: Vec<Listed>,
    pub warnings: Vec<Listed>,
}

fn html_id(name: &str) -> String {
    let id: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    format!("f-{id}")
}

fn at<'a>(v: &'a Value, name: &str) -> &'a Value {
    name.split('.').try_fold(v, |v, k| v.get(k)).unwrap_or(&Value::Null)
}

fn field(shown: &Value, name: &str, label: &str, kind: Kind) -> Field {
    let v = at(shown, name);
    let value = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    Field {
        name: name.to_string(),
        id: html_id(name),
        label: label.to_string(),
        kind,
        value,
        checked: v == &Value::Bool(true),
        options: Vec::new(),
        help: None,
        errors: Vec::new(),
        warnings: Vec::new(),
        described_by: String::new(),
    }
}

fn select(shown: &Value, name: &str, label: &str, options: &[(&str, &str)]) -> Field {
    Field {
        options: options.iter().map(|(v, l)| (v.to_string(), l.to_string())).collect(),
        ..field(shown, name, label, Kind::Select)
    }
}

fn help(mut f: Field, text: &str) -> Field {
    f.help = Some(text.to_string());
    f
}

fn section(key: &str, title: &str, fields: Vec<Field>) -> Section {
    Section {
        key: key.to_string(),
        id: html_id(if key.is_empty() { "general" } else { key }).replacen("f-", "s-", 1),
        title: title.to_string(),
        note: None,
        fields,
        errors: Vec::new(),
        warnings: Vec::new(),
        removable: None,
    }
}

/// The editor for `shown` (a config's fields as JSON): its sections and fields with `problems`
/// ((field path, rule), as `ConfigSpec::check` gives them) and `warnings` (`guidance::warnings`:
/// "field: text") beside the fields they name; what names no shown field goes to its section, or
/// to the first section.
pub fn editor(shown: &Value, problems: &[(String, String)], warnings: &[String]) -> Editor {
    let s = shown;
    let languages: Vec<String> = at(s, "texts").as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let default_language = at(s, "default_language").as_str().unwrap_or_default().to_string();
    let mut sections = vec![section(
        "",
        "General",
        vec![
            help(field(s, "display_name", "Name", Kind::Text), "For you; visitors do not see it."),
            select(
                s,
                "default_language",
                "Default language",
                &languages.iter().map(|l| (l.as_str(), l.as_str())).collect::<Vec<_>>(),
            ),
            field(s, "privacy_policy_url", "Privacy policy URL (https)", Kind::Url),
            field(s, "cookie_policy_url", "Cookie policy URL (https)", Kind::Url),
            help(
                field(s, "consent_expiry_days", "Days a choice is kept", Kind::Number),
                "1–730; CNIL suggests about 6 months (180).",
            ),
        ],
    )];
    sections.push(section(
        "banner",
        "Banner look",
        vec![
            select(
                s,
                "banner.position",
                "Position",
                &[
                    ("bottom", "Bottom"),
                    ("top", "Top"),
                    ("center", "Centre"),
                    ("bottom-left", "Bottom left"),
                    ("bottom-right", "Bottom right"),
                ],
            ),
            select(s, "banner.style", "Style", &[("bar", "Bar"), ("box", "Box"), ("cloud", "Cloud")]),
            field(s, "banner.primary_color", "Button colour", Kind::Colour),
            field(s, "banner.background_color", "Background colour", Kind::Colour),
            field(s, "banner.text_color", "Text colour", Kind::Colour),
            field(s, "banner.show_reject_all", "Show “Reject all” on the first layer", Kind::Checkbox),
            field(s, "banner.show_preferences", "Show “Preferences” on the first layer", Kind::Checkbox),
        ],
    ));
    for cat in CATEGORIES {
        let p = |f: &str| format!("categories.{cat}.{f}");
        let mut fields = Vec::new();
        if cat != "necessary" {
            fields.push(field(s, &p("enabled"), "Offered to visitors", Kind::Checkbox));
            fields.push(help(
                field(s, &p("default_accepted"), "On by default", Kind::Checkbox),
                "Only outside consent-required regions, before the visitor decides.",
            ));
        }
        fields.push(field(s, &p("display_name"), "Name shown", Kind::Text));
        fields.push(field(s, &p("description"), "Description", Kind::Textarea));
        if cat != "necessary" {
            fields.push(help(
                field(s, &p("cookie_names"), "Cookie names", Kind::List),
                "One per line; * matches any characters (_ga_*). Deleted when the category is refused.",
            ));
        }
        let name = at(s, &p("display_name")).as_str().unwrap_or(cat).to_string();
        let mut sec = section(&format!("categories.{cat}"), &format!("Category: {name}"), fields);
        if cat == "necessary" {
            sec.note = Some("Always on and required: strictly necessary storage needs no consent.".into());
        }
        sections.push(sec);
    }
    sections.push(section(
        "regions",
        "Regions, signals and origins",
        vec![
            field(s, "geo_targeting_enabled", "Geo targeting: ask where consent is required", Kind::Checkbox),
            help(
                field(s, "consent_required_regions", "Regions where consent is required", Kind::List),
                "ISO 3166-1 countries or ISO 3166-2 subdivisions, one per line (SE, US-CA).",
            ),
            field(s, "respect_do_not_track", "Respect Do Not Track", Kind::Checkbox),
            help(
                field(s, "per_provider_choices", "Per-provider choices in the preferences", Kind::Checkbox),
                "Each provider config under its category with its own switch.",
            ),
            help(
                field(s, "allowed_origins", "Allowed origins", Kind::List),
                "One per line (https://shop.example, https://*.shop.example): sites whose pages may record consent.",
            ),
        ],
    ));
    for lang in &languages {
        let p = |f: &str| format!("texts.{lang}.{f}");
        let mut fields: Vec<Field> = TEXTS.iter().map(|(k, label, kind)| field(s, &p(k), label, *kind)).collect();
        for cat in CATEGORIES {
            let name = at(s, &format!("categories.{cat}.display_name")).as_str().unwrap_or(cat).to_string();
            fields.push(field(s, &p(&format!("categories.{cat}.label")), &format!("{name}: label"), Kind::Text));
            fields.push(field(
                s,
                &p(&format!("categories.{cat}.description")),
                &format!("{name}: description"),
                Kind::Textarea,
            ));
        }
        let default = *lang == default_language;
        let mut sec = section(
            &format!("texts.{lang}"),
            &format!("Texts: {lang}{}", if default { " (default language)" } else { "" }),
            fields,
        );
        sec.note = Some(if default {
            "Needs a title and a body. Empty texts fall back to the banner's built-in English.".into()
        } else {
            format!("Empty texts fall back to the default language ({default_language}).")
        });
        if !default {
            sec.removable = Some(lang.clone());
        }
        sections.push(sec);
    }
    sections.push(section(
        "languages",
        "Add a language",
        vec![help(
            field(s, "add_language", "Language tag", Kind::Text),
            "A BCP 47 tag such as de or pt-BR; its texts start empty.",
        )],
    ));

    let mut errors = Vec::new();
    for (path, message) in problems {
        let (target, label) = place(&mut sections, path, message, true);
        errors.push(Listed { target, text: format!("{label}: {message}") });
    }
    let mut listed_warnings = Vec::new();
    for w in warnings {
        let (path, message) = w.split_once(": ").unwrap_or(("", w));
        let (target, label) = place(&mut sections, path, message, false);
        listed_warnings.push(Listed { target, text: format!("{label}: {message}") });
    }
    for f in sections.iter_mut().flat_map(|s| s.fields.iter_mut()) {
        let mut ids: Vec<String> = f.help.iter().map(|_| format!("{}-help", f.id)).collect();
        ids.extend((1..=f.errors.len()).map(|i| format!("{}-e{i}", f.id)));
        ids.extend((1..=f.warnings.len()).map(|i| format!("{}-w{i}", f.id)));
        f.described_by = ids.join(" ");
    }
    Editor { sections, errors, warnings: listed_warnings }
}

/// Puts a problem (`error`) or a warning beside the field `path` names, else on the section it
/// is in, else on the first section. Returns the element's id and the label it is shown under.
fn place(sections: &mut [Section], path: &str, message: &str, error: bool) -> (String, String) {
    let mut p: String = strip_indices(path);
    loop {
        for sec in sections.iter_mut() {
            if let Some(f) = sec.fields.iter_mut().find(|f| f.name == p) {
                if error { &mut f.errors } else { &mut f.warnings }.push(message.to_string());
                return (f.id.clone(), format!("{} ({})", f.label, sec.title));
            }
        }
        if let Some(sec) = sections.iter_mut().find(|s| !s.key.is_empty() && s.key == p) {
            if error { &mut sec.errors } else { &mut sec.warnings }.push(message.to_string());
            return (sec.id.clone(), sec.title.clone());
        }
        match p.rsplit_once('.') {
            Some((head, _)) => p = head.to_string(),
            None => break,
        }
    }
    let sec = &mut sections[0];
    let shown = if path.is_empty() { message.to_string() } else { format!("{path}: {message}") };
    if error { &mut sec.errors } else { &mut sec.warnings }.push(shown);
    (sec.id.clone(), if path.is_empty() { sec.title.clone() } else { path.to_string() })
}

/// `consent_required_regions[1]` → `consent_required_regions`.
pub fn strip_indices(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut skipping = false;
    for c in path.chars() {
        match c {
            '[' => skipping = true,
            ']' => skipping = false,
            c if !skipping => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_form_becomes_the_merge_patch_of_its_fields() {
        let (patch, problems) = patch_of(&form(&[
            ("csrf", "x"),
            ("display_name", "Shop"),
            ("banner.show_reject_all", "false"),
            ("banner.show_reject_all", "true"),
            ("banner.show_preferences", "false"),
            ("consent_expiry_days", "90"),
            ("consent_required_regions", "SE, DE\r\nUS-CA"),
            ("texts.en.title", "Cookies"),
            ("texts.en.body", "Line one\r\nLine two"),
            ("texts.en.close", ""),
            ("texts.en.categories.analytics.label", ""),
            ("texts.en.categories.analytics.description", ""),
            ("texts.en.categories.marketing.label", "Ads"),
            ("privacy_policy_url", " "),
            ("categories.analytics.cookie_names", "_ga\n_ga_*"),
            ("add_language", "pt-BR"),
            ("remove_language.sv", "true"),
            ("remove_language.de", "false"),
            ("texts.sv.title", "Kakor"),
        ]));
        assert_eq!(problems, vec![]);
        assert_eq!(
            Value::Object(patch),
            json!({
                "display_name": "Shop",
                "banner": {"show_reject_all": true, "show_preferences": false},
                "consent_expiry_days": 90,
                "consent_required_regions": ["SE", "DE", "US-CA"],
                "texts": {
                    "en": {"title": "Cookies", "body": "Line one\nLine two", "close": null,
                           "categories": {"analytics": null, "marketing": {"label": "Ads"}}},
                    "pt-BR": {},
                    "sv": null
                },
                "privacy_policy_url": null,
                "categories": {"analytics": {"cookie_names": ["_ga", "_ga_*"]}}
            })
        );
    }

    #[test]
    fn what_does_not_read_as_its_type_stays_a_string_for_the_config_to_name() {
        let (patch, _) = patch_of(&form(&[("consent_expiry_days", "soon"), ("respect_do_not_track", "maybe")]));
        assert_eq!(Value::Object(patch), json!({"consent_expiry_days": "soon", "respect_do_not_track": "maybe"}));
        let (_, problems) = patch_of(&form(&[("add_language", "english!")]));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "add_language");
    }

    fn shown() -> Value {
        json!({
            "display_name": "Shop",
            "banner": {"position": "bottom", "style": "bar", "primary_color": "#1a73e8", "background_color": "#ffffff",
                       "text_color": "#202124", "show_reject_all": true, "show_preferences": true},
            "categories": {"analytics": {"enabled": true, "display_name": "Statistics", "cookie_names": ["_ga", "_ga_*"]}},
            "texts": {"en": {"title": "Cookies"}, "sv": {"title": "Kakor"}},
            "default_language": "en",
            "consent_required_regions": ["SE", "DE"],
            "consent_expiry_days": 180
        })
    }

    fn find<'a>(e: &'a Editor, name: &str) -> &'a Field {
        e.sections.iter().flat_map(|s| &s.fields).find(|f| f.name == name).unwrap_or_else(|| panic!("{name}"))
    }

    #[test]
    fn fields_show_the_config() {
        let e = editor(&shown(), &[], &[]);
        assert_eq!(find(&e, "texts.sv.title").value, "Kakor");
        assert_eq!(find(&e, "categories.analytics.cookie_names").value, "_ga\n_ga_*");
        assert_eq!(find(&e, "consent_expiry_days").value, "180");
        assert!(find(&e, "banner.show_reject_all").checked);
        assert_eq!(find(&e, "texts.en.categories.analytics.label").label, "Statistics: label");
        let sv = e.sections.iter().find(|s| s.key == "texts.sv").unwrap();
        assert_eq!(sv.removable.as_deref(), Some("sv"));
        assert!(e.sections.iter().find(|s| s.key == "texts.en").unwrap().removable.is_none(), "the default stays");
        assert_eq!(find(&e, "texts.en.title").id, "f-texts-en-title");
    }

    #[test]
    fn problems_and_warnings_go_beside_the_field_they_name() {
        let problems = [
            ("banner.primary_color".to_string(), "\"blue\" is not a colour".to_string()),
            ("consent_required_regions[1]".to_string(), "unknown region".to_string()),
            ("texts.sv.colour".to_string(), "unknown field".to_string()),
            ("".to_string(), "expected an object".to_string()),
        ];
        let warnings = ["texts.sv: no close text".to_string(), "banner.text_color: contrast 2:1".to_string()];
        let e = editor(&shown(), &problems, &warnings);
        assert_eq!(find(&e, "banner.primary_color").errors, ["\"blue\" is not a colour"]);
        assert_eq!(find(&e, "consent_required_regions").errors, ["unknown region"]);
        assert_eq!(find(&e, "banner.text_color").warnings, ["contrast 2:1"]);
        let sv = e.sections.iter().find(|s| s.key == "texts.sv").unwrap();
        assert_eq!(
            (sv.errors.as_slice(), sv.warnings.as_slice()),
            (&["unknown field".to_string()][..], &["no close text".to_string()][..])
        );
        assert_eq!(e.sections[0].errors, ["expected an object"]);
        assert_eq!(
            e.errors[0],
            Listed {
                target: "f-banner-primary_color".into(),
                text: "Button colour (Banner look): \"blue\" is not a colour".into()
            }
        );
        assert_eq!(e.errors.len(), 4);
        assert_eq!(e.warnings.len(), 2);
    }
}
