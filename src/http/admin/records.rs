//! The auditor's pages on consent records: search (the API's filters), a record with its chain
//! proof, the verification of the whole chain, and the export of a search's records (the API's
//! export, as a download).

use std::collections::BTreeMap;

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::Response,
};
use entity::consent_record;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use super::{Page, domain_error, message, render};
use crate::{
    app::AppState,
    consent::{
        chain,
        export::Format,
        records::{self, RecordFilter, RecordItem},
    },
    error::Error,
};

/// Records per page.
const PAGE: u64 = 50;

/// The search form's fields, empty ones dropped (a form sends every field), and the cursor.
fn parse(query: Option<&str>) -> Result<(BTreeMap<String, String>, RecordFilter, i64), String> {
    let fields: BTreeMap<String, String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| (k, v.trim().to_string()))
        .collect();
    let after = match fields.get("after") {
        None => 0,
        Some(a) => a.parse::<i64>().map_err(|_| "after: not a record position".to_string())?,
    };
    let filter_fields: Vec<_> = fields.iter().filter(|(k, _)| *k != "after").collect();
    let encoded = serde_urlencoded::to_string(&filter_fields).map_err(|e| e.to_string())?;
    let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(encoded.as_bytes()));
    let filter: RecordFilter =
        serde_path_to_error::deserialize(de).map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    Ok((fields, filter, after))
}

pub async fn search(State(state): State<AppState>, page: Page, RawQuery(query): RawQuery) -> Response {
    let (fields, filter, after) = match parse(query.as_deref()) {
        Ok(p) => p,
        Err(m) => return message(StatusCode::BAD_REQUEST, Some(&page), "Invalid search", &m),
    };
    let rows = match records::page(&state.db, &page.holder.tenant, &filter, after, PAGE).await {
        Ok(r) => r,
        Err(e) => return domain_error(&page, e),
    };
    let next = (rows.len() as u64 == PAGE).then(|| rows.last().map(|m| m.seq)).flatten();
    let next_query = next.map(|seq| {
        let mut f = fields.clone();
        f.insert("after".into(), seq.to_string());
        serde_urlencoded::to_string(&f).unwrap_or_default()
    });
    let mut ctx = page.context();
    ctx.insert("nav", "records");
    ctx.insert("q", &fields);
    ctx.insert("records", &rows.into_iter().map(RecordItem::from).collect::<Vec<_>>());
    ctx.insert("next_query", &next_query);
    let mut filters = fields.clone();
    filters.remove("after");
    ctx.insert("export_query", &serde_urlencoded::to_string(&filters).unwrap_or_default());
    render(StatusCode::OK, "records.html", &ctx)
}

/// `GET /admin/records/export?format=csv|ndjson&…`: every record matching the search's filters,
/// streamed as the API's export (`GET …/consent-records/export`) is.
pub async fn export(State(state): State<AppState>, page: Page, RawQuery(query): RawQuery) -> Response {
    let (mut fields, _, _) = match parse(query.as_deref()) {
        Ok(p) => p,
        Err(m) => return message(StatusCode::BAD_REQUEST, Some(&page), "Invalid export", &m),
    };
    let format = match fields.remove("format").as_deref() {
        Some("csv") => Format::Csv,
        Some("ndjson") => Format::Ndjson,
        _ => return message(StatusCode::BAD_REQUEST, Some(&page), "Invalid export", "format: must be csv or ndjson"),
    };
    fields.remove("after");
    let query = serde_urlencoded::to_string(&fields).unwrap_or_default();
    let filter = match parse(Some(&query)) {
        Ok((_, filter, _)) => filter,
        Err(m) => return message(StatusCode::BAD_REQUEST, Some(&page), "Invalid export", &m),
    };
    crate::http::consent_records::export_response(&state, page.holder.tenant.clone(), filter, format)
}

pub async fn verify(State(state): State<AppState>, page: Page) -> Response {
    let v = match chain::verify(&state.db, &page.holder.tenant).await {
        Ok(v) => v,
        Err(e) => return domain_error(&page, e),
    };
    let mut ctx = page.context();
    ctx.insert("nav", "records");
    ctx.insert("q", &BTreeMap::<String, String>::new());
    ctx.insert("records", &Vec::<RecordItem>::new());
    ctx.insert("next_query", &Option::<String>::None);
    ctx.insert("verification", &v);
    render(StatusCode::OK, "records.html", &ctx)
}

pub async fn detail(State(state): State<AppState>, page: Page, Path(id): Path<String>) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else { return domain_error(&page, Error::NotFound) };
    let found = consent_record::Entity::find_by_id(id)
        .filter(consent_record::Column::TenantId.eq(page.holder.tenant.id))
        .one(&state.db)
        .await;
    let m = match found {
        Ok(Some(m)) => m,
        Ok(None) => return domain_error(&page, Error::NotFound),
        Err(e) => return domain_error(&page, e.into()),
    };
    let recomputed = chain::link_hash(&m);
    let previous = if m.seq > 1 {
        consent_record::Entity::find()
            .filter(consent_record::Column::TenantId.eq(page.holder.tenant.id))
            .filter(consent_record::Column::Seq.eq(m.seq - 1))
            .one(&state.db)
            .await
            .ok()
            .flatten()
    } else {
        None
    };
    let mut ctx = page.context();
    ctx.insert("nav", "records");
    ctx.insert("hash_ok", &(recomputed == m.hash));
    ctx.insert("recomputed", &recomputed);
    ctx.insert("link_ok", &previous.as_ref().map(|p| p.hash == m.prev_hash));
    ctx.insert("previous_id", &previous.as_ref().map(|p| p.id));
    ctx.insert("chained", &serde_json::to_string_pretty(&chain::chained_fields(&m)).unwrap_or_default());
    ctx.insert("r", &RecordItem::from(m));
    render(StatusCode::OK, "record.html", &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_dropped_and_bad_ones_named() {
        let (fields, f, after) = parse(Some("visitor_id=&action=accept_all&analytics=true&from=&after=7")).unwrap();
        assert_eq!(fields.len(), 3);
        assert_eq!(
            (f.action.map(|a| a.as_str()), f.analytics, f.visitor_id.is_none(), after),
            (Some("accept_all"), Some(true), true, 7)
        );
        assert!(parse(Some("action=maybe")).unwrap_err().starts_with("action"));
        assert!(parse(Some("from=yesterday")).unwrap_err().starts_with("from"));
        assert!(parse(Some("after=x")).is_err());
    }
}
