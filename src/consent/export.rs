//! Exports of consent records for auditors, as CSV or NDJSON, streamed: records are read a
//! page at a time in chain order and written out as they come, so an export of millions of
//! records needs no more memory than one page.
//!
//! CSV follows RFC 4180 (quotes, commas and line breaks quoted; CRLF line ends) and neutralises
//! spreadsheet formulas: a cell starting with `=`, `+`, `-`, `@`, tab or carriage return gets a
//! leading `'` (OWASP "CSV injection"), since user agents and visitor ids come from the public.

use axum::body::Bytes;
use entity::tenant;
use futures_util::{Stream, StreamExt, stream};
use sea_orm::DatabaseConnection;

use super::records::{self, RecordFilter, RecordItem};

/// Records fetched per database round trip.
const PAGE: u64 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }
}

pub const CSV_COLUMNS: [&str; 25] = [
    "id",
    "seq",
    "visitor_id",
    "visitor_hash",
    "config_id",
    "revision",
    "texts_hash",
    "language",
    "necessary",
    "functional",
    "analytics",
    "marketing",
    "action",
    "source",
    "dnt",
    "gpc",
    "country",
    "ip_truncated",
    "user_agent",
    "created_at",
    "expires_at",
    "prev_hash",
    "hash",
    "canonical_version",
    "provider_choices",
];

/// One CSV cell: formula-neutralised, then quoted when needed.
pub fn csv_cell(value: &str) -> String {
    let neutral =
        if value.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{value}") } else { value.to_string() };
    if neutral.contains(['"', ',', '\n', '\r']) { format!("\"{}\"", neutral.replace('"', "\"\"")) } else { neutral }
}

fn csv_line<'a>(cells: impl IntoIterator<Item = &'a str>) -> String {
    let mut line = cells.into_iter().map(csv_cell).collect::<Vec<_>>().join(",");
    line.push_str("\r\n");
    line
}

pub fn csv_header() -> String {
    csv_line(CSV_COLUMNS)
}

pub fn csv_row(r: &RecordItem) -> String {
    let choice = |k: &str| r.choices.get(k).and_then(|v| v.as_bool()).unwrap_or(false).to_string();
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let cells = [
        r.id.to_string(),
        r.seq.to_string(),
        opt(&r.visitor_id),
        r.visitor_hash.clone(),
        r.config_id.to_string(),
        r.revision.to_string(),
        r.texts_hash.clone(),
        r.language.clone(),
        "true".to_string(),
        choice("functional"),
        choice("analytics"),
        choice("marketing"),
        r.action.clone(),
        r.source.clone(),
        r.signals.dnt.to_string(),
        r.signals.gpc.to_string(),
        opt(&r.country),
        opt(&r.ip_truncated),
        opt(&r.user_agent),
        super::chain::timestamp(&r.created_at),
        super::chain::timestamp(&r.expires_at),
        r.prev_hash.clone(),
        r.hash.clone(),
        r.canonical_version.to_string(),
        // Canonical JSON, as hashed; empty without per-provider choices.
        r.provider_choices.as_ref().map(super::canonical::to_string).unwrap_or_default(),
    ];
    csv_line(cells.iter().map(String::as_str))
}

pub fn ndjson_line(r: &RecordItem) -> String {
    let mut line = serde_json::to_string(r).unwrap_or_default();
    line.push('\n');
    line
}

struct Cursor {
    db: DatabaseConnection,
    tenant: tenant::Model,
    filter: RecordFilter,
    format: Format,
    after: i64,
    header_sent: bool,
    done: bool,
}

/// The export as a byte stream, for `Body::from_stream`.
pub fn stream(
    db: DatabaseConnection,
    tenant: tenant::Model,
    filter: RecordFilter,
    format: Format,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let start = Cursor { db, tenant, filter, format, after: 0, header_sent: false, done: false };
    stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        let mut chunk = String::new();
        if !c.header_sent && c.format == Format::Csv {
            chunk.push_str(&csv_header());
        }
        c.header_sent = true;
        match records::page(&c.db, &c.tenant, &c.filter, c.after, PAGE).await {
            Ok(page) => {
                c.done = (page.len() as u64) < PAGE;
                if let Some(last) = page.last() {
                    c.after = last.seq;
                }
                for m in page {
                    let item = RecordItem::from(m);
                    chunk.push_str(&match c.format {
                        Format::Csv => csv_row(&item),
                        Format::Ndjson => ndjson_line(&item),
                    });
                }
                Some((Ok(Bytes::from(chunk)), c))
            }
            Err(e) => {
                // Headers are out already; all that can be done is to cut the response short,
                // which the client sees as a broken transfer rather than a complete export.
                tracing::error!(error = %e, "consent record export failed");
                c.done = true;
                Some((Err(std::io::Error::other(e.to_string())), c))
            }
        }
    })
    // The compression layer polls its inner body once more after the end; `unfold` panics on
    // that, `fuse` answers "ended" again.
    .fuse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_escaped_and_formulas_neutralised() {
        let table = [
            ("plain", "plain"),
            ("", ""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("line\nbreak", "\"line\nbreak\""),
            ("=HYPERLINK(\"http://x\")", "\"'=HYPERLINK(\"\"http://x\"\")\""),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (X11; Linux x86_64)"),
            ("a=b", "a=b"),
        ];
        for (input, want) in table {
            assert_eq!(csv_cell(input), want, "{input:?}");
        }
    }

    #[test]
    fn the_header_names_every_column_once() {
        assert_eq!(csv_header().trim_end().split(',').count(), CSV_COLUMNS.len());
        assert!(csv_header().ends_with("\r\n"));
    }
}
