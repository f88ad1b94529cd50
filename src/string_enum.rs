//! Closed sets of values stored as text: statuses, categories, identities, actions, reasons.
//!
//! Why not sea-orm's `DeriveActiveEnum` on the entity columns: it is portable (with
//! `db_type = "String(..)"`) and refuses unknown values — but it refuses them for the whole
//! query. One corrupted `provider_config.status` would make every `SELECT` of the tenant's
//! configs fail, so every event of the tenant and every list page would answer 500. A consent
//! gateway must fail closed *per row*: the unreadable config is denied (`denied:config_invalid`)
//! and shown to its admin, the others keep working.
//!
//! So the entity columns stay `String`, and each value set is an enum declared with
//! `string_enum!`: the code writes only [`as_str`](#method.as_str) of a variant (a value outside
//! the enum cannot be written), and reads each row with `parse` / `read`, whose `None` / `Err`
//! the caller turns into the fail-closed outcome that fits (deny, show as invalid, dead-letter).
//! The string of each variant is written once, in the declaration; serde uses the same strings.

/// A value read from a row that is not one of its enum's strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The column, e.g. `status`.
    pub column: &'static str,
    /// What the row holds.
    pub value: String,
    /// The values it may hold, e.g. `draft, active or paused`.
    pub expected: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stored {} {:?} is not one of {}", self.column, self.value, self.expected)
    }
}

/// `a`, `a or b`, `a, b or c`.
pub fn one_of(values: &[&str]) -> String {
    match values {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Declares a `Copy` enum whose variants are stored and serialised as the given strings, with
/// `ALL`, `as_str`, `parse`, `read` (a row's value, or [`Unreadable`]), `Display` and serde.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:tt ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant ),+
        }

        #[allow(dead_code)]
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }

            /// The value of `column` as stored, or why it cannot be read.
            pub fn read(column: &'static str, s: &str) -> Result<Self, $crate::string_enum::Unreadable> {
                Self::parse(s).ok_or_else(|| $crate::string_enum::Unreadable {
                    column,
                    value: s.to_string(),
                    expected: Self::expected(),
                })
            }

            /// The accepted strings, for messages: `a, b or c`.
            pub fn expected() -> String {
                $crate::string_enum::one_of(&[$($text),+])
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

#[cfg(test)]
mod tests {
    use super::*;

    string_enum! {
        enum Colour { Red = "red", DarkBlue = "dark_blue" }
    }

    #[test]
    fn each_variant_has_one_string_both_ways() {
        for (c, s) in [(Colour::Red, "red"), (Colour::DarkBlue, "dark_blue")] {
            assert_eq!((c.as_str(), Colour::parse(s)), (s, Some(c)));
            assert_eq!(serde_json::to_value(c).unwrap(), s);
            assert_eq!(serde_json::from_value::<Colour>(serde_json::json!(s)).unwrap(), c);
        }
        assert_eq!(Colour::ALL.len(), 2);
        assert_eq!(Colour::parse("Red"), None, "exact strings only");
        let e = Colour::read("colour", "green").unwrap_err();
        assert_eq!(e.to_string(), r#"stored colour "green" is not one of red or dark_blue"#);
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
    }
}
