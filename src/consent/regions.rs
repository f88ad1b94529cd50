//! Regions: the ISO 3166 codes a config names as consent-required, and which country codes a
//! request may carry. Locating the visitor (trusted header, GeoIP file) is `crate::geo`'s job.
//!
//! An unknown country (no header, or a placeholder such as Cloudflare's `XX` / `T1`) counts as a
//! consent-required region: the gateway cannot show that GDPR does *not* apply, so it asks.

use serde::{Deserialize, Serialize};

/// ISO 3166-1 alpha-2 codes currently assigned, plus `XK` (Kosovo, user-assigned but sent by
/// every major CDN). Sorted, for binary search.
const COUNTRIES: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "XK", "YE", "YT",
    "ZA", "ZM", "ZW",
];

/// The default consent-required regions: the EU member states and the rest of the EEA (GDPR and
/// the ePrivacy Directive), the United Kingdom (UK GDPR, PECR), Switzerland (revFADP) and
/// California (CCPA/CPRA).
pub const DEFAULT_CONSENT_REGIONS: &[&str] = &[
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT", "LV", "LT", "LU", "MT",
    "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO", "GB", "CH", "US-CA",
];

/// True for an assigned ISO 3166-1 alpha-2 code (upper case). Anything else a country header
/// may carry (`XX`, `T1`, …) must count as unknown, which is consent-required.
pub fn is_country(code: &str) -> bool {
    COUNTRIES.binary_search(&code).is_ok()
}

/// An assigned ISO 3166-1 alpha-2 country code, upper case (`SE`); input in any case. Shared by
/// everything that takes a country from a client, so a placeholder such as `XX` is refused the
/// same way everywhere (as a country it would read as "outside every consent region").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "SE")]
pub struct CountryCode(String);

parsed_string!(CountryCode, newtype);

impl CountryCode {
    pub fn parse(s: &str) -> Result<Self, String> {
        let code = s.trim().to_ascii_uppercase();
        if is_country(&code) {
            Ok(CountryCode(code))
        } else {
            Err("must be an ISO 3166-1 alpha-2 code such as SE".into())
        }
    }
}

/// An ISO 3166-1 alpha-2 country (`SE`) or an ISO 3166-2 subdivision of one (`US-CA`),
/// upper case. Input is accepted in any case.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionCode(String);

parsed_string!(RegionCode, newtype);

impl RegionCode {
    pub fn parse(s: &str) -> Result<Self, String> {
        let code = s.trim().to_ascii_uppercase();
        let (country, sub) = match code.split_once('-') {
            Some((c, sub)) => (c, Some(sub)),
            None => (code.as_str(), None),
        };
        if !is_country(country) {
            return Err(format!(
                "{s:?} is not an ISO 3166-1 alpha-2 country code (e.g. \"SE\") or subdivision (\"US-CA\")"
            ));
        }
        if let Some(sub) = sub
            && !((1..=3).contains(&sub.len()) && sub.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(format!("{s:?} is not an ISO 3166-2 subdivision code such as \"US-CA\""));
        }
        Ok(RegionCode(code))
    }

    pub fn defaults() -> Vec<RegionCode> {
        DEFAULT_CONSENT_REGIONS.iter().map(|c| RegionCode(c.to_string())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_country_table_is_sorted_and_complete() {
        assert!(COUNTRIES.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(COUNTRIES.len(), 250, "249 assigned codes + XK");
        assert!(DEFAULT_CONSENT_REGIONS.iter().all(|r| RegionCode::parse(r).is_ok()));
    }

    #[test]
    fn region_codes() {
        for (input, want) in [("SE", "SE"), ("se", "SE"), (" gb ", "GB"), ("US-CA", "US-CA"), ("us-ca", "US-CA")] {
            assert_eq!(RegionCode::parse(input).unwrap().as_str(), want, "{input}");
        }
        for bad in ["", "S", "SWE", "XX", "EU", "T1", "US-", "US-CALI", "US_CA", "ZZ-CA", "US-C@"] {
            assert!(RegionCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn country_codes() {
        assert_eq!(CountryCode::parse(" se").unwrap().as_str(), "SE");
        for bad in ["Sweden", "XX", "T1", "", "S"] {
            assert!(CountryCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholder_countries_are_not_countries() {
        assert!(is_country("SE") && is_country("XK"));
        for placeholder in ["XX", "T1", "", "EU", "A1", "se"] {
            assert!(!is_country(placeholder), "{placeholder}");
        }
    }
}
