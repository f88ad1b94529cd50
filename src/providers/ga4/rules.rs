//! GA4's collection rules, as the Measurement Protocol documents them (shared/docs/providers.md,
//! providers-sources.md §4; developers.google.com …/protocol/ga4/sending-events "Limitations"
//! and "Reserved names"; support.google.com/analytics/answer/9267744 "Event collection limits").
//!
//! GA4 answers `2xx` to everything sent to `/mp/collect` and silently drops what breaks these
//! rules, so the gateway must keep to them itself — and record every change it makes.

use std::borrow::Cow;

/// Events per request.
pub const MAX_EVENTS: usize = 25;
/// Parameters per event.
pub const MAX_PARAMS: usize = 25;
/// Event and parameter names (and item parameter names).
pub const MAX_NAME_CHARS: usize = 40;
/// Parameter values, except the page parameters below.
pub const MAX_VALUE_CHARS: usize = 100;
/// `page_location`, `page_referrer`, `page_title`: GA4's own longer limits for these.
pub const MAX_PAGE_LOCATION_CHARS: usize = 1_000;
pub const MAX_PAGE_REFERRER_CHARS: usize = 420;
pub const MAX_PAGE_TITLE_CHARS: usize = 300;
/// `user_id` values.
pub const MAX_USER_ID_CHARS: usize = 256;
/// Items of an ecommerce event.
pub const MAX_ITEMS: usize = 200;
/// Custom parameters of one item ("≤ 10 custom item params"): those not in [`ITEM_PARAMS`].
pub const MAX_CUSTOM_ITEM_PARAMS: usize = 10;
/// GA4's own item parameters (the ecommerce events' `items` reference), which do not count
/// towards [`MAX_CUSTOM_ITEM_PARAMS`].
pub const ITEM_PARAMS: [&str; 23] = [
    "affiliation",
    "coupon",
    "creative_name",
    "creative_slot",
    "discount",
    "index",
    "item_brand",
    "item_category",
    "item_category2",
    "item_category3",
    "item_category4",
    "item_category5",
    "item_id",
    "item_list_id",
    "item_list_name",
    "item_name",
    "item_variant",
    "location_id",
    "price",
    "promotion_id",
    "promotion_name",
    "quantity",
    "google_business_vertical",
];
/// The POST body ("must be smaller than 130KB").
pub const MAX_BODY_BYTES: usize = 130_000;
/// `timestamp_micros` may be at most this far in the past ("events can be backdated up to 72
/// hours").
pub const MAX_AGE_HOURS: i64 = 72;

/// Event names GA4 reserves (the union of Google's list and the public validators' lists;
/// providers-sources.md §4).
pub const RESERVED_EVENT_NAMES: &[&str] = &[
    "ad_activeview",
    "ad_click",
    "ad_exposure",
    "ad_impression",
    "ad_query",
    "ad_reward",
    "adunit_exposure",
    "app_background",
    "app_clear_data",
    "app_exception",
    "app_install",
    "app_remove",
    "app_store_refund",
    "app_store_subscription_cancel",
    "app_store_subscription_convert",
    "app_store_subscription_renew",
    "app_update",
    "app_upgrade",
    "dynamic_link_app_open",
    "dynamic_link_app_update",
    "dynamic_link_first_open",
    "error",
    "firebase_campaign",
    "firebase_in_app_message_action",
    "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression",
    "first_open",
    "first_visit",
    "in_app_purchase",
    "notification_dismiss",
    "notification_foreground",
    "notification_open",
    "notification_receive",
    "notification_send",
    "os_update",
    "screen_view",
    "session_start",
    "session_start_with_rollout",
    "user_engagement",
];

/// Prefixes reserved for event, parameter and user-property names.
pub const RESERVED_PREFIXES: &[&str] = &["google_", "ga_", "firebase_"];

/// The prefix the gateway puts before a name GA4 reserves or that does not start with a letter:
/// `error` → `cg_error`, `ga_session` → `cg_ga_session`, `2fa_done` → `cg_2fa_done`.
pub const RENAME_PREFIX: &str = "cg_";

/// Whether GA4 takes `name` as an event (`event: true`) or parameter name as it is: 1–40
/// characters, ASCII letters, digits and `_`, starting with a letter, no reserved prefix, and for
/// events no reserved name.
pub fn is_valid_name(name: &str, event: bool) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= MAX_NAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !is_reserved(name, event)
}

fn is_reserved(name: &str, event: bool) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p)) || (event && RESERVED_EVENT_NAMES.contains(&name))
}

/// `name` made a valid GA4 name: every other character becomes `_`, a name that does not start
/// with a letter or is reserved gets [`RENAME_PREFIX`], and the result is cut to 40 characters.
/// Borrowed when it is valid already.
pub fn ga4_name(name: &str, event: bool) -> Cow<'_, str> {
    if is_valid_name(name, event) {
        return Cow::Borrowed(name);
    }
    let mut out: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic()) || is_reserved(&out, event) {
        out.insert_str(0, RENAME_PREFIX);
    }
    out.truncate(MAX_NAME_CHARS);
    Cow::Owned(out)
}

/// The most characters a parameter's value may have.
pub fn max_value_chars(param: &str) -> usize {
    match param {
        "page_location" => MAX_PAGE_LOCATION_CHARS,
        "page_referrer" => MAX_PAGE_REFERRER_CHARS,
        "page_title" => MAX_PAGE_TITLE_CHARS,
        _ => MAX_VALUE_CHARS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_valid_and_every_result_is_valid() {
        #[rustfmt::skip]
        let table: &[(&str, bool, &str)] = &[
            ("signup", true, "signup"),
            ("page_view", true, "page_view"),
            ("outbound-link-click", true, "outbound_link_click"),
            ("Sign up!", true, "Sign_up_"),
            ("error", true, "cg_error"),
            ("session_start", true, "cg_session_start"),
            ("error", false, "error"),
            ("ga_session", false, "cg_ga_session"),
            ("Google_Ads", true, "cg_Google_Ads"),
            ("firebase_conversion", false, "cg_firebase_conversion"),
            ("_private", false, "cg__private"),
            ("2fa_done", true, "cg_2fa_done"),
            ("köp", true, "k_p"),
            ("購入", true, "cg___"),
            ("a.b", false, "a_b"),
        ];
        for (raw, event, expected) in table {
            let got = ga4_name(raw, *event);
            assert_eq!(got, *expected, "{raw}");
            assert!(is_valid_name(&got, *event), "{got} is not valid");
            assert_eq!(matches!(got, Cow::Borrowed(_)), raw == expected, "borrowed only when unchanged: {raw}");
        }
        let long = "a".repeat(41);
        assert_eq!(ga4_name(&long, true).len(), MAX_NAME_CHARS);
        let long_reserved = format!("ga_{}", "x".repeat(50));
        let cut = ga4_name(&long_reserved, false);
        assert!(cut.len() == MAX_NAME_CHARS && cut.starts_with("cg_ga_"), "{cut}");
    }

    #[test]
    fn validity() {
        for ok in ["a", "page_view", "A1_b", &"x".repeat(40)] {
            assert!(is_valid_name(ok, true), "{ok}");
        }
        for bad in ["", "_a", "1a", "a-b", "a b", "é", &"x".repeat(41), "user_engagement", "GA_x", "firebase_x"] {
            assert!(!is_valid_name(bad, true), "{bad}");
        }
        assert!(is_valid_name("error", false), "reserved event names are fine as parameters");
    }

    #[test]
    fn page_parameters_have_their_own_limits() {
        assert_eq!(max_value_chars("page_location"), 1_000);
        assert_eq!(max_value_chars("page_referrer"), 420);
        assert_eq!(max_value_chars("page_title"), 300);
        assert_eq!(max_value_chars("plan"), 100);
    }
}
