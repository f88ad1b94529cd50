//! The consent config editor: every field of a config as a form (`consent_form`), the regulator
//! warnings and validation errors beside their fields, a live preview of the banner rendered from
//! the draft, publish with the "requires re-consent" choice, and the revision history with a
//! field-by-field diff. Saving and publishing call the store functions the API's PATCH and
//! publish call (same validation, same audit-log entries, the signed-in token as the actor).
//!
//! The editor page alone may run a script (`/admin/editor.js`, served here: it reloads the
//! previews as the form changes) and frame the preview. The preview is its own page, framed
//! sandboxed (`allow-scripts` only: an opaque origin, no access to the admin pages or their
//! session; its CSP says the same, should it be opened on its own), with the banner inline under
//! a per-response nonce and no network access (`connect-src` is `'none'`), so it cannot record
//! consent.

use axum::{
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde_json::Value;
use tera::Context;
use uuid::Uuid;

use super::{Page, consent_form, domain_error, message, render, templates};
use crate::{
    app::AppState,
    consent::config::{
        ConfigSpec, ConsentConfigPatch, ConsentConfigView, Status, diff, guidance,
        store::{self, merge_patch},
    },
    crypto,
    error::Error,
};

/// The editor page: the admin pages' CSP with the editor's script and the framed preview.
const EDITOR_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; frame-src 'self'; \
                          form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

async fn config(state: &AppState, page: &Page, id: &str) -> Result<ConsentConfigView, Response> {
    let id = Uuid::parse_str(id).map_err(|_| domain_error(page, Error::NotFound))?;
    store::get(&state.db, page.holder.tenant.id, id).await.map_err(|e| domain_error(page, e))
}

/// `/admin/consent`: the editor of the active config, else of the newest one.
pub async fn index(State(state): State<AppState>, page: Page) -> Response {
    match store::list(&state.db, page.holder.tenant.id).await {
        Ok(list) => {
            let pick = list.iter().find(|c| c.status == Some(Status::Active)).or(list.last());
            match pick {
                Some(c) => Redirect::to(&format!("/admin/consent/{}", c.id)).into_response(),
                None => message(
                    StatusCode::NOT_FOUND,
                    Some(&page),
                    "No consent config yet",
                    "Create one with POST /v1/tenants/{tenant}/analytics/cookie-consent/configs (docs/api.md); then edit it here.",
                ),
            }
        }
        Err(e) => domain_error(&page, e),
    }
}

/// The editor of `view`, showing `shown` (the config as JSON, with a rejected edit merged in)
/// and `problems` beside their fields.
async fn editor_page(
    state: &AppState,
    page: &Page,
    status: StatusCode,
    view: &ConsentConfigView,
    shown: &Value,
    problems: &[(String, String)],
) -> Response {
    let warnings = if problems.is_empty() { guidance::warnings(&view.spec) } else { Vec::new() };
    let published = if view.revision > 0 {
        match store::revision(&state.db, page.holder.tenant.id, view.id, view.revision).await {
            Ok(r) => Some(r.snapshot),
            Err(e) => return domain_error(page, e),
        }
    } else {
        None
    };
    let saved = serde_json::to_value(&view.spec).unwrap_or_default();
    let unpublished = published.as_ref().map(|p| diff::diff(p, &saved));
    let mut ctx = page.context();
    ctx.insert("nav", "consent");
    ctx.insert("config", view);
    ctx.insert("editor", &consent_form::editor(shown, problems, &warnings));
    ctx.insert("unpublished", &unpublished);
    ctx.insert("may_publish", &(view.problem.is_none() && view.status != Some(Status::Decommissioned)));
    ctx.insert("next_revision", &(view.revision + 1));
    let mut res = render(status, "consent.html", &ctx);
    res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(EDITOR_CSP));
    res
}

pub async fn editor(State(state): State<AppState>, page: Page, Path(id): Path<String>) -> Response {
    let view = match config(&state, &page, &id).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let shown = serde_json::to_value(&view.spec).unwrap_or_default();
    editor_page(&state, &page, StatusCode::OK, &view, &shown, &[]).await
}

/// A form's edits of the draft.
struct Edit {
    /// The merge patch the form amounts to.
    patch: serde_json::Map<String, Value>,
    /// The draft with the patch merged in, as JSON (what the form shows again).
    shown: Value,
    /// The edited config, or every problem (the form's own and the config's) as
    /// `ConfigSpec::check` gives them.
    checked: Result<ConfigSpec, Vec<(String, String)>>,
}

fn merged(view: &ConsentConfigView, form: &[(String, String)]) -> Edit {
    let (patch, problems) = consent_form::patch_of(form);
    let mut shown = serde_json::to_value(&view.spec).unwrap_or_default();
    merge_patch(&mut shown, &Value::Object(patch.clone()));
    let checked = if problems.is_empty() { check_all(&view.spec, &shown) } else { Err(problems) };
    Edit { patch, shown, checked }
}

/// `ConfigSpec::check`, which stops at the first value of the wrong type (`"blue"` for a
/// colour), made to find the others too: each field named is set back to its saved value and the
/// rest checked again, a few rounds at most, so a form shows every problem at once.
fn check_all(saved: &ConfigSpec, shown: &Value) -> Result<ConfigSpec, Vec<(String, String)>> {
    let saved = serde_json::to_value(saved).unwrap_or_default();
    let mut trial = shown.clone();
    let mut found: Vec<(String, String)> = Vec::new();
    for _ in 0..5 {
        match ConfigSpec::check(trial.clone()) {
            Ok(spec) if found.is_empty() => return Ok(spec),
            Ok(_) => break,
            Err(problems) => {
                let new: Vec<_> = problems.into_iter().filter(|p| !found.contains(p)).collect();
                if new.is_empty() {
                    break;
                }
                for (path, _) in &new {
                    let path = consent_form::strip_indices(path);
                    if path.is_empty() || !revert(&mut trial, &saved, &path) {
                        found.extend(new);
                        return Err(found);
                    }
                }
                found.extend(new);
            }
        }
    }
    Err(found)
}

/// Sets the field at the dotted `path` of `trial` back to its value in `saved` (removes it when
/// `saved` has none). `false` when `trial` has no such field.
fn revert(trial: &mut Value, saved: &Value, path: &str) -> bool {
    let keys: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = keys.split_last() else { return false };
    let Some(parent) = parents.iter().try_fold(trial, |v, k| v.get_mut(*k)).and_then(Value::as_object_mut) else {
        return false;
    };
    match keys.iter().try_fold(saved, |v, k| v.get(*k)) {
        Some(v) => parent.insert(last.to_string(), v.clone()),
        None => parent.remove(*last),
    };
    true
}

/// Save the draft: the form as a merge patch through the API's PATCH (`store::patch`). An
/// invalid form changes nothing and comes back with each problem beside its field (422).
pub async fn save(State(state): State<AppState>, page: Page, Path(id): Path<String>, body: Bytes) -> Response {
    let form = pairs(&body);
    if let Some(res) = page.refusal(&form.iter().cloned().collect()) {
        return res;
    }
    let view = match config(&state, &page, &id).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let Edit { patch, shown, checked } = merged(&view, &form);
    if let Err(problems) = checked {
        return editor_page(&state, &page, StatusCode::UNPROCESSABLE_ENTITY, &view, &shown, &problems).await;
    }
    let tenant_id = page.holder.tenant.id;
    // The form carries the `updated_at` it was made from: a save over someone else's later one
    // is refused (409), not written over it with this form's older values.
    let mut patch = ConsentConfigPatch::changes(patch);
    if let Some((_, at)) = form.iter().find(|(k, _)| k == "updated_at") {
        patch.echoed.insert("updated_at".into(), Value::String(at.clone()));
    }
    match store::patch(&state.db, tenant_id, view.id, &page.holder.actor(), patch).await {
        Ok(after) => {
            let flash = if after.updated_at == view.updated_at {
                "Nothing to save: the draft is unchanged.".to_string()
            } else {
                "Draft saved. Visitors see it once it is published.".to_string()
            };
            page.done(&state, flash, &format!("/admin/consent/{}", view.id))
        }
        // Changed in between by someone else: checked again by the store, and refused there.
        Err(Error::Validation { field, message }) => {
            let problems = [(field.unwrap_or_default(), message)];
            editor_page(&state, &page, StatusCode::UNPROCESSABLE_ENTITY, &view, &shown, &problems).await
        }
        // Saved by someone else since this form was opened: nothing saved, and the editor shows
        // the config as it is now, with this form's value beside each field where it differs —
        // the form cannot tell its own edits from the other save's, so the admin chooses again.
        Err(Error::Conflict(message)) => {
            let now = match config(&state, &page, &id).await {
                Ok(v) => v,
                Err(res) => return res,
            };
            let saved = serde_json::to_value(&now.spec).unwrap_or_default();
            let Edit { shown: yours, .. } = merged(&now, &form);
            let mut problems = vec![(String::new(), format!("Not saved: {message}"))];
            problems.extend(diff::diff(&saved, &yours).into_iter().map(|c| {
                (c.path, format!("not saved: this form had {}", c.after.unwrap_or_else(|| "nothing".into())))
            }));
            editor_page(&state, &page, StatusCode::CONFLICT, &now, &saved, &problems).await
        }
        Err(e) => domain_error(&page, e),
    }
}

/// Publish the saved draft as a new revision, as `POST …/publish` does.
pub async fn publish(State(state): State<AppState>, page: Page, Path(id): Path<String>, body: Bytes) -> Response {
    let form: std::collections::HashMap<String, String> = pairs(&body).into_iter().collect();
    if let Some(res) = page.refusal(&form) {
        return res;
    }
    let view = match config(&state, &page, &id).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let reconsent = form.get("requires_reconsent").is_some_and(|v| v == "true");
    match store::publish(&state.db, page.holder.tenant.id, view.id, &page.holder.actor(), reconsent).await {
        Ok(after) => {
            let how = if reconsent {
                "; visitors who decided under an earlier revision are asked again"
            } else {
                "; earlier choices stay valid"
            };
            page.done(
                &state,
                format!("Published revision {}{how}.", after.revision),
                &format!("/admin/consent/{}", view.id),
            )
        }
        Err(e) => domain_error(&page, e),
    }
}

/// The banner as visitors would see it, rendered from the draft with the query's form fields
/// (the editor's unsaved edits) merged in; from the saved draft when those are not valid.
pub async fn preview(
    State(state): State<AppState>,
    page: Page,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let view = match config(&state, &page, &id).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let form = pairs(query.unwrap_or_default().as_bytes());
    let edited = form.iter().any(|(k, _)| k != "view");
    let (spec, problem) = match merged(&view, &form).checked {
        Ok(spec) => (spec, None),
        Err(problems) => (
            view.spec.clone(),
            Some(format!("The unsaved edits have {} problem(s); this is the saved draft.", problems.len())),
        ),
    };
    let providers = match crate::providers::config::forwarding_targets(&state.db, page.holder.tenant.id, None).await {
        Ok(p) => p,
        Err(e) => return domain_error(&page, e),
    };
    let (config, variant) = store::banner_config(&spec, (view.id, view.revision, view.reconsent_revision), &providers);
    let script = match crate::banner::render_script(&config, variant) {
        Ok(s) => s.replace("</script", "<\\/script"),
        Err(e) => return domain_error(&page, Error::Internal(e.into())),
    };
    let nonce = crypto::random_hex(16);
    let mut ctx = Context::new();
    ctx.insert("nonce", &nonce);
    ctx.insert("script", &script);
    ctx.insert("edited", &edited);
    ctx.insert("problem", &problem);
    ctx.insert("view", if form.iter().any(|(k, v)| k == "view" && v == "mobile") { "mobile" } else { "desktop" });
    let html = match templates().render("consent_preview.html", &ctx) {
        Ok(h) => h,
        Err(e) => return domain_error(&page, Error::Internal(e.into())),
    };
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self'; \
         form-action 'none'; frame-ancestors 'self'; base-uri 'none'; sandbox allow-scripts"
    );
    let mut res = Html(html).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_str(&csp).expect("a hex nonce is a header value"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    res
}

pub async fn revisions(State(state): State<AppState>, page: Page, Path(id): Path<String>) -> Response {
    let view = match config(&state, &page, &id).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let list = match store::revisions(&state.db, page.holder.tenant.id, view.id).await {
        Ok(l) => l,
        Err(e) => return domain_error(&page, e),
    };
    let mut ctx = page.context();
    ctx.insert("nav", "consent");
    ctx.insert("config", &view);
    ctx.insert("revisions", &list);
    render(StatusCode::OK, "revisions.html", &ctx)
}

/// One revision and what changed from the one before (the first: everything, as added).
pub async fn revision(
    State(state): State<AppState>,
    page: Page,
    Path((id, number)): Path<(String, String)>,
) -> Response {
    let view = match config(&state, &page, &id).await {
        Ok(v) => v,
        Err(res) => return res,
    };
    let Ok(number) = number.parse::<i32>() else { return domain_error(&page, Error::NotFound) };
    let tenant_id = page.holder.tenant.id;
    let result = async {
        let this = store::revision(&state.db, tenant_id, view.id, number).await?;
        let before =
            if number > 1 { Some(store::revision(&state.db, tenant_id, view.id, number - 1).await?) } else { None };
        Ok::<_, Error>((this, before))
    }
    .await;
    let (this, before) = match result {
        Ok(r) => r,
        Err(e) => return domain_error(&page, e),
    };
    let changes = diff::diff(before.as_ref().map_or(&Value::Null, |b| &b.snapshot), &this.snapshot);
    let mut ctx = page.context();
    ctx.insert("nav", "consent");
    ctx.insert("config", &view);
    ctx.insert("r", &this);
    ctx.insert("previous", &before.map(|b| b.revision));
    ctx.insert("changes", &changes);
    render(StatusCode::OK, "revision.html", &ctx)
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../../../templates/admin/editor.js"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_problem_of_a_form_is_found_not_only_the_first_type_error() {
        let mut v: Value = serde_json::from_str(include_str!("../../../banner/sample-config.json")).unwrap();
        v.as_object_mut().unwrap().remove("id");
        let saved = ConfigSpec::parse(v.clone()).unwrap();
        let mut edited = v.clone();
        edited["banner"]["primary_color"] = json!("blue");
        edited["consent_expiry_days"] = json!("soon");
        edited["texts"]["en"]["title"] = Value::Null;
        let mut fields: Vec<String> = check_all(&saved, &edited).unwrap_err().into_iter().map(|(f, _)| f).collect();
        fields.sort();
        assert_eq!(fields, ["banner.primary_color", "consent_expiry_days", "texts.en.title"]);
        assert!(check_all(&saved, &v).is_ok());
    }
}
