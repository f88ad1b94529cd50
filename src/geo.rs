//! Where a visitor is: ISO 3166 country and subdivision, from a trusted proxy header or a
//! MaxMind-format database file (GeoIP2 / GeoLite2 Country or City, or any DB of that shape).
//! Unknown location counts as a consent-required region in the decision engine.

use std::net::IpAddr;

use maxminddb::{PathElement, Reader};

use crate::config::GeoSettings;

/// Country (`SE`) and subdivision (`US-CA`) of a visitor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    pub country: Option<String>,
    pub region: Option<String>,
}

pub struct Geo {
    reader: Option<Reader<Vec<u8>>>,
}

impl Geo {
    /// Opens `geo.mmdb_path` when set. A missing or unreadable file stops start-up: silently
    /// running without geo data would treat every visitor as consent-required, which is safe
    /// but not what the operator configured.
    pub fn open(settings: &GeoSettings) -> anyhow::Result<Self> {
        if settings.mmdb_path.is_empty() {
            return Ok(Geo { reader: None });
        }
        let reader = Reader::open_readfile(&settings.mmdb_path)
            .map_err(|e| anyhow::anyhow!("key `geo.mmdb_path`: cannot open {:?}: {e}", settings.mmdb_path))?;
        Ok(Geo { reader: Some(reader) })
    }

    pub fn disabled() -> Self {
        Geo { reader: None }
    }

    /// Looks `ip` up in the database; `Location::default()` when there is none or no match.
    pub fn lookup(&self, ip: IpAddr) -> Location {
        let Some(reader) = &self.reader else { return Location::default() };
        let Ok(found) = reader.lookup(ip) else { return Location::default() };
        let text = |path: &[PathElement<'_>]| -> Option<String> {
            found.decode_path::<String>(path).ok().flatten().map(|s| s.to_ascii_uppercase())
        };
        let country = text(&[PathElement::Key("country"), PathElement::Key("iso_code")]).filter(|c| is_alpha(c, 2));
        let region = country.as_ref().and_then(|c| {
            text(&[PathElement::Key("subdivisions"), PathElement::Index(0), PathElement::Key("iso_code")])
                .filter(|s| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
                .map(|s| format!("{c}-{s}"))
        });
        Location { country, region }
    }
}

fn is_alpha(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo() -> Geo {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/geoip-test.mmdb");
        Geo::open(&GeoSettings { mmdb_path: path.into(), ..Default::default() }).unwrap()
    }

    #[test]
    fn looks_up_country_and_subdivision() {
        let g = geo();
        let at = |ip: &str| g.lookup(ip.parse().unwrap());
        assert_eq!(at("192.0.2.7"), Location { country: Some("SE".into()), region: None });
        assert_eq!(at("198.51.100.1"), Location { country: Some("US".into()), region: Some("US-CA".into()) });
        assert_eq!(at("2001:db8::1"), Location { country: Some("DE".into()), region: None });
        assert_eq!(at("127.0.0.1"), Location::default());
    }

    #[test]
    fn a_missing_file_is_an_error_naming_the_key() {
        let err = Geo::open(&GeoSettings { mmdb_path: "/nope.mmdb".into(), ..Default::default() }).err().unwrap();
        assert!(err.to_string().contains("geo.mmdb_path"));
        assert_eq!(Geo::disabled().lookup("192.0.2.7".parse().unwrap()), Location::default());
    }
}
