//! Allowed browser origins — of a consent config (the sites whose browsers may call the public
//! consent routes) and of a public ingest key (the pages that may post events with it). An entry
//! is an exact origin (`https://example.com`, `http://localhost:3000`) or a wildcard over
//! subdomains (`https://*.example.com`, which matches `https://shop.example.com` and
//! `https://a.b.example.com` but not `https://example.com` itself — list that separately).
//! Scheme and port must match exactly; a bare `*` is refused, because it would let any site
//! write consent records or post events in the tenant's name.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OriginPattern {
    scheme: String,
    /// Lower-case, IDNA (punycode) form; for a wildcard, the part after `*.`.
    host: String,
    wildcard: bool,
    /// The effective port (the scheme's default when none is written).
    port: u16,
}

parsed_string!(OriginPattern);

impl OriginPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "{s:?} is not an origin: expected scheme://host[:port] such as \"https://example.com\" or \"https://*.example.com\""
            )
        };
        let trimmed = s.trim().strip_suffix('/').unwrap_or(s.trim());
        let (scheme, rest) = trimmed.split_once("://").ok_or_else(err)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("{s:?}: the scheme must be http or https"));
        }
        let (wildcard, authority) = match rest.strip_prefix("*.") {
            Some(base) => (true, base),
            None => (false, rest),
        };
        if authority.contains(['*', '/', '?', '#', '@']) || authority.is_empty() {
            return Err(if authority.contains('*') || rest == "*" {
                format!("{s:?}: a wildcard is only allowed as the first label, as in \"https://*.example.com\"")
            } else {
                err()
            });
        }
        let url = url::Url::parse(&format!("{scheme}://{authority}")).map_err(|_| err())?;
        let host = url.host_str().ok_or_else(err)?.to_ascii_lowercase();
        if wildcard && !host.contains('.') {
            return Err(format!("{s:?}: a wildcard needs a domain with at least two labels below it"));
        }
        let port = url.port_or_known_default().ok_or_else(err)?;
        Ok(OriginPattern { scheme, host, wildcard, port })
    }

    /// Whether the browser origin `origin` (the `Origin` header) is allowed by this entry.
    pub fn matches(&self, origin: &str) -> bool {
        let Ok(url) = url::Url::parse(origin) else { return false };
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else { return false };
        if url.scheme() != self.scheme || port != self.port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

impl utoipa::PartialSchema for OriginPattern {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("An exact origin or a subdomain wildcard"))
            .examples(["https://*.example.com"])
            .into()
    }
}

impl utoipa::ToSchema for OriginPattern {}

/// Whether any entry allows `origin`.
pub fn allowed(patterns: &[OriginPattern], origin: &str) -> bool {
    patterns.iter().any(|p| p.matches(origin))
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        write!(f, "{}://{}{}", self.scheme, if self.wildcard { "*." } else { "" }, self.host)?;
        if self.port != default_port {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_normalised() {
        for (input, want) in [
            ("https://example.com", "https://example.com"),
            ("https://Example.COM/", "https://example.com"),
            ("https://example.com:443", "https://example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("https://*.example.com", "https://*.example.com"),
            ("HTTPS://*.Example.com:8443", "https://*.example.com:8443"),
            ("https://bücher.example", "https://xn--bcher-kva.example"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(OriginPattern::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "*",
            "https://*",
            "https://*.com",
            "example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://ex*ample.com",
            "https://a.*.example.com",
            "https://user@example.com",
            "https://example.com?x",
            "null",
            "",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let exact = OriginPattern::parse("https://example.com").unwrap();
        let wild = OriginPattern::parse("https://*.example.com").unwrap();
        let local = OriginPattern::parse("http://localhost:3000").unwrap();
        let table = [
            (&exact, "https://example.com", true),
            (&exact, "https://example.com:443", true),
            (&exact, "http://example.com", false),
            (&exact, "https://example.com:8443", false),
            (&exact, "https://www.example.com", false),
            (&exact, "https://example.com.evil.net", false),
            (&wild, "https://shop.example.com", true),
            (&wild, "https://a.b.example.com", true),
            (&wild, "https://example.com", false),
            (&wild, "https://evilexample.com", false),
            (&wild, "http://shop.example.com", false),
            (&wild, "https://shop.example.com.evil.net", false),
            (&local, "http://localhost:3000", true),
            (&local, "http://localhost:3001", false),
            (&local, "null", false),
            (&local, "garbage", false),
        ];
        for (pattern, origin, want) in table {
            assert_eq!(pattern.matches(origin), want, "{pattern} vs {origin}");
        }
    }
}
