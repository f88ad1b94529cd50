//! Where a visitor is: ISO 3166 country and subdivision, from a trusted proxy header or a
//! MaxMind-format database file (GeoIP2 / GeoLite2 Country or City, or any DB of that shape).
//! Unknown location counts as a consent-required region in the decision engine.

use std::net::IpAddr;

use maxminddb::{PathElement, Reader};

use crate::{config::GeoSettings, consent::regions::is_country};

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
        // An assigned code only: a database's `EU`, `ZZ` or `XX` is no country.
        let country = text(&[PathElement::Key("country"), PathElement::Key("iso_code")]).filter(|c| is_country(c));
        let region = country.as_ref().and_then(|c| {
            text(&[PathElement::Key("subdivisions"), PathElement::Index(0), PathElement::Key("iso_code")])
                .filter(|s| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
                .map(|s| format!("{c}-{s}"))
        });
        Location { country, region }
    }
}

/// Where a request is, from the values of the trusted headers (`None`: not configured, or the
/// request has none) and the database's answer for its IP — pure.
///
/// A country header the request carries decides alone: a placeholder in it (Cloudflare's `XX`,
/// unknown, or `T1`, Tor) is an unknown country — consent-required —, not a reason to ask the
/// database, which would give a Tor exit node's country to a visitor who may be anywhere. The
/// region header's `CA` is read as a subdivision of the country used, `US-CA` as is; the
/// database's subdivision only counts with the country it belongs to.
pub fn locate(country_header: Option<&str>, region_header: Option<&str>, looked_up: Location) -> Location {
    let country = match country_header {
        Some(c) => Some(c.to_ascii_uppercase()).filter(|c| is_country(c)),
        None => looked_up.country.filter(|c| is_country(c)),
    };
    let region = region_header.map(str::to_ascii_uppercase).and_then(|r| match (&country, r.contains('-')) {
        (_, true) => Some(r),
        (Some(c), false) => Some(format!("{c}-{r}")),
        (None, false) => None,
    });
    let region = region.or(looked_up
        .region
        .filter(|r| country.as_deref().is_some_and(|c| r.strip_prefix(c).is_some_and(|rest| rest.starts_with('-')))));
    Location { country, region }
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
    fn a_country_header_decides_alone_and_a_placeholder_in_it_is_unknown() {
        let us_ca = || Location { country: Some("US".into()), region: Some("US-CA".into()) };
        let loc = |c: Option<&str>, r: Option<&str>| Location { country: c.map(Into::into), region: r.map(Into::into) };
        #[rustfmt::skip]
        let cases: [(Option<&str>, Option<&str>, Location, Location); 10] = [
            // header country, header region, the database's answer → where the visitor is
            (None, None, us_ca(), us_ca()),
            (Some("se"), None, us_ca(), loc(Some("SE"), None)),
            (Some("US"), None, us_ca(), us_ca()),
            // Tor, unknown, not assigned: unknown, whatever the database says of the exit node.
            (Some("T1"), None, us_ca(), loc(None, None)),
            (Some("XX"), None, us_ca(), loc(None, None)),
            (Some("EU"), None, us_ca(), loc(None, None)),
            (Some("DE"), Some("BY"), us_ca(), loc(Some("DE"), Some("DE-BY"))),
            (Some("T1"), Some("CA"), us_ca(), loc(None, None)),
            (None, Some("US-TX"), Location::default(), loc(None, Some("US-TX"))),
            // A database's placeholder is no country either.
            (None, None, loc(Some("ZZ"), Some("ZZ-1")), loc(None, None)),
        ];
        for (header, region, looked_up, want) in cases {
            assert_eq!(locate(header, region, looked_up.clone()), want, "{header:?} {region:?} {looked_up:?}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_the_key() {
        let err = Geo::open(&GeoSettings { mmdb_path: "/nope.mmdb".into(), ..Default::default() }).err().unwrap();
        assert!(err.to_string().contains("geo.mmdb_path"));
        assert_eq!(Geo::disabled().lookup("192.0.2.7".parse().unwrap()), Location::default());
    }
}
