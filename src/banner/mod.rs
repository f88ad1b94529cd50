//! Serving the consent banner: the tenant's banner config rendered into
//! `templates/banner.js.tera` around the browser source in `banner/` (see `banner/README.md`).
//!
//! The browser source is embedded at compile time (`banner/dist/banner.min.js`, built from
//! `banner/banner.js` by `banner/build.mjs`, and `banner/banner.css`), so the binary serves the
//! banner with no files beside it.

use std::sync::OnceLock;

use serde::Serialize;
use tera::{Context, Tera};

const TEMPLATE: &str = include_str!("../../templates/banner.js.tera");
const SCRIPT: &str = include_str!("../../banner/dist/banner.min.js");
const CSS: &str = include_str!("../../banner/banner.css");

/// Rendered banners by (config id, revision). A published revision never changes, so an entry
/// never goes stale; the map is bounded by clearing it when full.
#[derive(Default)]
pub struct Cache {
    entries: std::sync::Mutex<std::collections::HashMap<(uuid::Uuid, i64), std::sync::Arc<Rendered>>>,
}

const CACHE_ENTRIES: usize = 1_000;

impl Cache {
    pub fn get(&self, config_id: uuid::Uuid, revision: i64) -> Option<std::sync::Arc<Rendered>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).get(&(config_id, revision)).cloned()
    }

    /// Stores what was rendered for `config` under the config id and revision it names.
    pub fn put(&self, config: &serde_json::Value, rendered: Rendered) -> std::sync::Arc<Rendered> {
        let rendered = std::sync::Arc::new(rendered);
        let key = config["config_id"].as_str().and_then(|id| id.parse().ok()).zip(config["revision"].as_i64());
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

/// The rendered script and its strong validator.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub body: String,
    /// A strong ETag (quoted) over the exact bytes served: source, CSS and the config revision
    /// all change it.
    pub etag: String,
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

/// Renders the banner for one banner config (the JSON object of the API contract).
pub fn render(config: &serde_json::Value) -> Result<Rendered, tera::Error> {
    let mut ctx = Context::new();
    ctx.insert("config_json", &script_json(config));
    ctx.insert("css", &script_json(&CSS));
    ctx.insert("script", SCRIPT);
    let body = tera().render("banner.js", &ctx)?;
    let etag = format!("\"{}\"", &crate::crypto::sha256_hex(&body)[..32]);
    Ok(Rendered { body, etag })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
        assert!(a.body.contains("var CG_CONFIG = {\"revision\":1,\"tenant\":\"demo\"};"), "{}", &a.body[..200]);
        assert!(a.body.contains(SCRIPT.trim()));
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.etag, render(&json!({"revision": 1, "tenant": "demo"})).unwrap().etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
    }
}
