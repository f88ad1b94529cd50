//! The few SQL expressions the admin pages' grouped queries need that SQLite and PostgreSQL
//! spell differently. Column names are the callers' constants, never input.

use sea_orm::DbBackend;

/// The UTC day of a timestamp column as `YYYY-MM-DD` text. SQLite stores timestamps as RFC 3339
/// text with their offset (`date()` reads it and answers in UTC); PostgreSQL's `timestamptz` is
/// converted at UTC explicitly, whatever the session's time zone.
pub fn utc_day(backend: DbBackend, column: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
        _ => format!("date({column})"),
    }
}

/// Milliseconds from `from` to `to` (two timestamp columns), rounded, as an integer.
pub fn millis_between(backend: DbBackend, from: &str, to: &str) -> String {
    match backend {
        DbBackend::Postgres => format!("CAST(ROUND(EXTRACT(EPOCH FROM ({to} - {from})) * 1000) AS BIGINT)"),
        _ => format!("CAST(ROUND((julianday({to}) - julianday({from})) * 86400000.0) AS INTEGER)"),
    }
}

/// True when the JSON column's stored choice grants `category`: the field is JSON `true` (not
/// the string `"true"`, which PostgreSQL's `->>` would not tell apart; the column is `jsonb`) and
/// `necessary` is not refused (a choice refusing it is unreadable, and an unreadable choice
/// grants nothing, as the decision engine reads it).
pub fn grants(backend: DbBackend, column: &str, category: &str) -> String {
    match backend {
        DbBackend::Postgres => {
            format!(
                "(({column} -> '{category}') = 'true'::jsonb AND COALESCE({column} -> 'necessary', 'true'::jsonb) = 'true'::jsonb)"
            )
        }
        _ => format!(
            "(json_type({column}, '$.{category}') = 'true' AND COALESCE(json_type({column}, '$.necessary'), 'true') = 'true')"
        ),
    }
}

/// `SUM(CASE WHEN condition THEN 1 ELSE 0 END)`: how many rows of the group meet it.
pub fn count_where(condition: &str) -> String {
    format!("SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)")
}
