//! Page sizes of the list routes (`?limit=`): one type, so every paged route answers an
//! out-of-range `limit` alike — a 400 naming `limit` — instead of clamping it silently.

use serde::{Deserialize, Deserializer, de::Error as _};

/// Smallest and largest page, and the page size when `limit` is absent.
pub const MIN: u64 = 1;
pub const MAX: u64 = 500;
pub const DEFAULT: u64 = 100;

/// A page size within `MIN..=MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimit(u64);

impl PageLimit {
    pub fn parse(n: u64) -> Result<Self, String> {
        if (MIN..=MAX).contains(&n) { Ok(PageLimit(n)) } else { Err(format!("must be between {MIN} and {MAX}")) }
    }

    /// `limit`, or the default page size.
    pub fn or_default(limit: Option<PageLimit>) -> u64 {
        limit.map_or(DEFAULT, |l| l.0)
    }
}

impl<'de> Deserialize<'de> for PageLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)
            .map_err(|_| D::Error::custom(format!("must be a whole number between {MIN} and {MAX}")))?;
        PageLimit::parse(n).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limits() {
        for (n, ok) in
            [(0, false), (1, true), (100, true), (500, true), (501, false), (1 << 63, false), (u64::MAX, false)]
        {
            assert_eq!(PageLimit::parse(n).is_ok(), ok, "{n}");
        }
    }
}
