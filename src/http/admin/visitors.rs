//! One visitor's data from the pages: find by visitor id, see what is held (the DSAR export's
//! counts, and the provider configs that received their events), download the export, and —
//! admins only, after a confirm step — erase it through the same function as
//! `DELETE …/visitors/{id}`, so the audit log has the same `visitor.erase` entry.

use std::collections::HashMap;

use axum::{
    body::{Body, Bytes},
    extract::{RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};

use super::{Page, domain_error, form, message, render};
use crate::{
    app::AppState,
    audit,
    consent::records::VisitorId,
    privacy::{dsar, erase},
};

/// The `visitor_id` of a query or form: `Ok(None)` when absent or blank, else parsed.
fn visitor_id(fields: &HashMap<String, String>) -> Result<Option<VisitorId>, String> {
    match fields.get("visitor_id").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => VisitorId::parse(v).map(Some).map_err(|rule| format!("visitor_id: {rule}")),
    }
}

fn query(raw: Option<&str>) -> HashMap<String, String> {
    serde_urlencoded::from_str(raw.unwrap_or_default()).unwrap_or_default()
}

fn invalid(page: &Page, rule: &str) -> Response {
    message(StatusCode::BAD_REQUEST, Some(page), "Invalid visitor id", rule)
}

/// `/admin/visitors?visitor_id=…`: the lookup form, and what is held about the visitor.
pub async fn find(State(state): State<AppState>, page: Page, RawQuery(raw): RawQuery) -> Response {
    let visitor = match visitor_id(&query(raw.as_deref())) {
        Ok(v) => v,
        Err(rule) => return invalid(&page, &rule),
    };
    let mut ctx = page.context();
    ctx.insert("nav", "visitors");
    if let Some(v) = &visitor {
        match dsar::summary(&state.db, &page.holder.tenant, v).await {
            Ok(s) => {
                ctx.insert("only_hashes", &s.only_hashes());
                ctx.insert("held", &s);
            }
            Err(e) => return domain_error(&page, e),
        }
        ctx.insert("visitor_id", v.as_str());
        ctx.insert("query", &serde_urlencoded::to_string([("visitor_id", v.as_str())]).unwrap_or_default());
    }
    render(StatusCode::OK, "visitor.html", &ctx)
}

/// `/admin/visitors/export?visitor_id=…`: the DSAR export (`GET …/visitors/{id}/export`).
pub async fn export(State(state): State<AppState>, page: Page, RawQuery(raw): RawQuery) -> Response {
    let visitor = match visitor_id(&query(raw.as_deref())) {
        Ok(Some(v)) => v,
        Ok(None) => return invalid(&page, "visitor_id: required"),
        Err(rule) => return invalid(&page, &rule),
    };
    let mut res =
        Body::from_stream(dsar::stream(state.db.clone(), page.holder.tenant.clone(), visitor)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"visitor-export.json\""));
    res
}

/// `/admin/visitors/erase?visitor_id=…`: the confirm step (admins only).
pub async fn confirm(State(state): State<AppState>, page: Page, RawQuery(raw): RawQuery) -> Response {
    if !page.is_admin() {
        return message(
            StatusCode::FORBIDDEN,
            Some(&page),
            "Read-only",
            "Auditor tokens may only read; an admin token is required to erase a visitor.",
        );
    }
    let visitor = match visitor_id(&query(raw.as_deref())) {
        Ok(Some(v)) => v,
        Ok(None) => return invalid(&page, "visitor_id: required"),
        Err(rule) => return invalid(&page, &rule),
    };
    let held = match dsar::summary(&state.db, &page.holder.tenant, &visitor).await {
        Ok(s) => s,
        Err(e) => return domain_error(&page, e),
    };
    let mut ctx = page.context();
    ctx.insert("nav", "visitors");
    ctx.insert("visitor_id", visitor.as_str());
    ctx.insert("held", &held);
    ctx.insert("confirm", &true);
    ctx.insert("query", &serde_urlencoded::to_string([("visitor_id", visitor.as_str())]).unwrap_or_default());
    render(StatusCode::OK, "visitor.html", &ctx)
}

/// `POST /admin/visitors/erase`: the erasure, then a redirect to its report (so that reloading
/// the page the browser shows does not post the erasure again).
pub async fn erase(State(state): State<AppState>, page: Page, body: Bytes) -> Response {
    let fields = form(&body);
    if let Some(res) = page.refusal(&fields) {
        return res;
    }
    let visitor = match visitor_id(&fields) {
        Ok(Some(v)) => v,
        Ok(None) => return invalid(&page, "visitor_id: required"),
        Err(rule) => return invalid(&page, &rule),
    };
    match erase::erase(&state.db, &page.holder.tenant, &visitor, &page.holder.actor()).await {
        Ok(report) => Redirect::to(&report_url(&report.visitor_hash)).into_response(),
        Err(e) => domain_error(&page, e),
    }
}

/// Where the report of the erasure of the visitor with `hash` is shown.
fn report_url(hash: &str) -> String {
    format!("/admin/visitors/erased?{}", serde_urlencoded::to_string([("hash", hash)]).unwrap_or_default())
}

/// `GET /admin/visitors/erased?hash=…`: the report of a visitor's erasure, as its audit entry
/// (`visitor.erase`, under the visitor's hash — the id itself is gone) keeps it. Readable by
/// auditors, like the audit log.
pub async fn erased(State(state): State<AppState>, page: Page, RawQuery(raw): RawQuery) -> Response {
    let fields = query(raw.as_deref());
    let hash = fields.get("hash").map(|h| h.trim()).unwrap_or_default();
    if !is_visitor_hash(hash) {
        let rule = if hash.is_empty() { "hash: required" } else { "hash: must be 64 lowercase hex digits" };
        return message(StatusCode::BAD_REQUEST, Some(&page), "Invalid visitor hash", rule);
    }
    let entry = match audit::latest(&state.db, page.holder.tenant.id, "visitor.erase", hash).await {
        Ok(Some(entry)) => entry,
        Ok(None) => {
            return message(StatusCode::NOT_FOUND, Some(&page), "Not found", "No visitor was erased under this hash.");
        }
        Err(e) => return domain_error(&page, e),
    };
    let mut ctx = page.context();
    ctx.insert("nav", "visitors");
    ctx.insert("erased", &entry.after);
    ctx.insert("erased_at", &entry.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    ctx.insert("erased_by", &entry.actor);
    render(StatusCode::OK, "visitor.html", &ctx)
}

/// A visitor's hash as `consent::records::visitor_hash` makes it: SHA-256 in lowercase hex.
fn is_visitor_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visitor_hash_is_64_lowercase_hex_digits() {
        let hash = crate::crypto::sha256_hex("salt:visitor");
        assert!(is_visitor_hash(&hash));
        assert!(!is_visitor_hash(&hash.to_uppercase()));
        assert!(!is_visitor_hash(&hash[1..]));
        assert!(!is_visitor_hash(&format!("{}g", &hash[1..])));
        assert!(!is_visitor_hash(""));
        assert_eq!(report_url(&hash), format!("/admin/visitors/erased?hash={hash}"));
    }

    #[test]
    fn the_visitor_id_is_optional_trimmed_and_checked() {
        let f = |v: &str| HashMap::from([("visitor_id".to_string(), v.to_string())]);
        assert_eq!(visitor_id(&HashMap::new()), Ok(None));
        assert_eq!(visitor_id(&f("  ")), Ok(None));
        assert_eq!(visitor_id(&f(" v-1 ")).unwrap().unwrap().as_str(), "v-1");
        let err = visitor_id(&f("a b")).unwrap_err();
        assert!(err.starts_with("visitor_id: must be"), "{err}");
    }
}
