//! Enrichment of an accepted event: campaign (UTM) parameters from the page URL and the parsed user
//! agent with a bot flag (the IP is truncated for storage by `crate::ip`). Pure functions, and
//! [`agent_of`], which remembers the agents it parsed.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use serde::Serialize;
use serde_json::{Map, Value};

/// The parsed user agent as stored in the event's context.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Agent {
    pub browser: Option<String>,
    pub browser_version: Option<String>,
    pub os: Option<String>,
    /// `desktop`, `mobile`, `feature_phone`, `appliance`, `crawler` or `other`.
    pub device: Option<String>,
    /// A known crawler, or a non-browser client — stored, never forwarded (`denied:bot`).
    pub bot: bool,
}

/// How many distinct user agents [`agent_of`] remembers before it starts over: a site's visitors
/// send a few hundred; a client sending a new one with every event only empties it more often.
const AGENTS_REMEMBERED: usize = 4096;

static AGENTS: LazyLock<Mutex<HashMap<Box<str>, Arc<Agent>>>> = LazyLock::new(Default::default);

/// [`parse_agent`], remembering each user agent's result: woothee's parse was ~2.5 % of ingest's
/// CPU in the benchmark (docs/scaling.md), and the same few agents come back with most events.
pub fn agent_of(ua: Option<&str>) -> Arc<Agent> {
    let Some(ua) = ua.filter(|u| u.len() <= 1024) else {
        return Arc::new(parse_agent(ua));
    };
    let remembered = || AGENTS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(agent) = remembered().get(ua) {
        return agent.clone();
    }
    let agent = Arc::new(parse_agent(Some(ua)));
    let mut agents = remembered();
    if agents.len() >= AGENTS_REMEMBERED {
        agents.clear();
    }
    agents.insert(ua.into(), agent.clone());
    agent
}

/// Parses a user agent with `woothee`. A bare `product/version` agent (`curl/8.5.0`,
/// `python-requests/2.31`, `Go-http-client/1.1`, our own HTTP client) counts as a bot too, as
/// Umami's `isbot` has it: no browser sends one, and forwarding it would make Umami drop the
/// event and Plausible lump such clients into one visitor.
pub fn parse_agent(ua: Option<&str>) -> Agent {
    let Some(ua) = ua.map(str::trim).filter(|u| !u.is_empty()) else {
        return Agent::default();
    };
    let parsed = woothee::parser::Parser::new().parse(ua);
    let known = |s: &str| (!s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN).then(|| s.to_string());
    let mut agent = match &parsed {
        Some(r) => Agent {
            browser: known(r.name),
            browser_version: known(r.version),
            os: known(r.os),
            device: Some(
                match r.category {
                    "pc" => "desktop",
                    "smartphone" => "mobile",
                    "mobilephone" => "feature_phone",
                    "appliance" => "appliance",
                    "crawler" => "crawler",
                    _ => "other",
                }
                .to_string(),
            ),
            bot: r.category == "crawler",
        },
        None => Agent::default(),
    };
    agent.bot = agent.bot || is_bare_product(ua) || is_automation(ua);
    agent
}

/// `name/version` with nothing else (isbot's `^[\w .\-()?:%]+(?:/v?\d+[\w.\-]*)?(?:,|$)`, narrowed
/// to what real clients send): letters, digits and `._-`, one slash, a version.
fn is_bare_product(ua: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    match ua.split_once('/') {
        Some((name, version)) => {
            !name.is_empty()
                && name.chars().all(ok)
                && version.trim_start_matches('v').starts_with(|c: char| c.is_ascii_digit())
                && version.chars().all(ok)
        }
        // A single word with no version at all (`node`, `undici`, `Wget`).
        None => ua.chars().all(ok),
    }
}

/// Headless and automation browsers, which woothee reports as ordinary browsers.
fn is_automation(ua: &str) -> bool {
    const MARKERS: &[&str] = &[
        "headlesschrome",
        "phantomjs",
        "puppeteer",
        "playwright",
        "selenium",
        "lighthouse",
        "bot;",
        "crawler",
        "spider",
        // WebPageTest appends `PTST/<version>` to a real browser's agent (isbot: `ptst[ /]\d`).
        "ptst/",
    ];
    let lower = ua.to_ascii_lowercase();
    MARKERS.iter().any(|m| lower.contains(m))
}

/// The campaign parameters kept, without their `utm_` prefix.
pub const UTM_PARAMS: [&str; 5] = ["source", "medium", "campaign", "term", "content"];

/// `utm_*` parameters of the page URL, as `{"source": …, "medium": …}`.
pub fn utm(page_url: &str) -> Map<String, Value> {
    let mut out = Map::new();
    if let Ok(u) = url::Url::parse(page_url) {
        for (k, v) in u.query_pairs() {
            if let Some(name) = k.strip_prefix("utm_")
                && UTM_PARAMS.contains(&name)
                && !v.is_empty()
                && !out.contains_key(name)
            {
                out.insert(name.to_string(), Value::String(v.chars().take(255).collect()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_agent_is_the_one_parsed() {
        for ua in [
            Some(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            ),
            Some("curl/8.5.0"),
            Some("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
            Some(""),
            None,
        ] {
            let first = super::agent_of(ua);
            assert_eq!(*first, super::parse_agent(ua), "{ua:?}");
            assert_eq!(*super::agent_of(ua), *first, "{ua:?} again");
        }
        let many = (0..super::AGENTS_REMEMBERED + 10).map(|i| format!("Mozilla/5.0 Firefox/{i}.0"));
        for ua in many {
            assert_eq!(*super::agent_of(Some(&ua)), super::parse_agent(Some(&ua)));
        }
        assert!(super::AGENTS.lock().unwrap().len() <= super::AGENTS_REMEMBERED, "bounded");
    }

    const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

    #[test]
    fn browsers_and_bots() {
        let a = parse_agent(Some(CHROME));
        assert_eq!(
            (a.browser.as_deref(), a.os.as_deref(), a.device.as_deref(), a.bot),
            (Some("Chrome"), Some("Windows 10"), Some("desktop"), false)
        );
        let a = parse_agent(Some(IPHONE));
        assert_eq!((a.device.as_deref(), a.bot), (Some("mobile"), false));
        for bot in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "curl/8.5.0",
            "reqwest/0.13",
            "python-requests/2.31.0",
            "Go-http-client/1.1",
            "node",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 PTST/241121.163127",
        ] {
            assert!(parse_agent(Some(bot)).bot, "{bot}");
        }
        assert_eq!(parse_agent(None), Agent::default());
        assert!(!parse_agent(None).bot, "no agent is not a bot (a server may omit it)");
    }

    #[test]
    fn campaign_parameters() {
        let u = utm("https://ex.com/?utm_source=news&utm_medium=email&utm_campaign=bf&x=1&utm_bogus=1");
        assert_eq!(
            serde_json::Value::Object(u),
            serde_json::json!({"source": "news", "medium": "email", "campaign": "bf"})
        );
        assert!(utm("not a url").is_empty());
    }
}
