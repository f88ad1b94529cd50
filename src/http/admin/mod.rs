//! `/admin`: the webmaster's and auditor's pages, rendered on the server (tera, one stylesheet
//! served here; the CSP allows nothing inline; no script but the consent editor's, see
//! `consent`). Sign in with an admin or auditor API token (`session`); every change is a form
//! with the session's CSRF token that calls the same domain function as its API twin, so it lands
//! in the audit log alike. Auditors see no form that changes anything, and a forged one is
//! refused.

mod chart;
mod consent;
mod consent_form;
pub mod dashboard;
pub mod data;
mod records;
pub mod session;
mod sql;
mod visitors;

use std::{collections::HashMap, sync::OnceLock};

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequestParts, Path, RawQuery, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use chrono::Utc;
use entity::provider_config;
use serde_json::json;
use tera::{Context, Tera};
use uuid::Uuid;

use self::session::Session;
use super::extract::Visitor;
use crate::{
    app::AppState,
    consent::{ProviderStatus, config::store},
    crypto,
    error::Error,
    outbox::log::{self, DeliveryStatus, Filter},
    providers::{self, config as provider_configs},
    tokens::{self, Role, TokenHolder},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview))
        .route("/admin/sign-in", get(sign_in_form).post(sign_in))
        .route("/admin/sign-out", post(sign_out))
        .route("/admin/providers", get(providers_page))
        .route("/admin/providers/{provider}/{id}", get(provider_page))
        .route("/admin/providers/{provider}/{id}/{action}", post(provider_action))
        .route("/admin/deliveries/{id}/replay", post(replay_one))
        .route("/admin/records", get(records::search))
        .route("/admin/records/verify", get(records::verify))
        .route("/admin/records/export", get(records::export))
        .route("/admin/records/{id}", get(records::detail))
        .route("/admin/consent", get(consent::index))
        .route("/admin/consent/{id}", get(consent::editor).post(consent::save))
        .route("/admin/consent/{id}/publish", post(consent::publish))
        .route("/admin/consent/{id}/preview", get(consent::preview))
        .route("/admin/consent/{id}/revisions", get(consent::revisions))
        .route("/admin/consent/{id}/revisions/{revision}", get(consent::revision))
        .route("/admin/editor.js", get(consent::script))
        .route("/admin/dashboard", get(dashboard::page))
        .route("/admin/dashboard.csv", get(dashboard::csv_file))
        .route("/admin/visitors", get(visitors::find))
        .route("/admin/visitors/export", get(visitors::export))
        .route("/admin/visitors/erase", get(visitors::confirm).post(visitors::erase))
        .route("/admin/visitors/erased", get(visitors::erased))
        .route("/admin/admin.css", get(stylesheet))
        .layer(axum::middleware::from_fn(security_headers))
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    // A page that needs more (the consent editor, its framed preview) sets its own.
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(CSP));
    h.entry(header::X_FRAME_OPTIONS).or_insert(HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    res
}

fn templates() -> &'static Tera {
    static T: OnceLock<Tera> = OnceLock::new();
    T.get_or_init(|| {
        let mut t = Tera::default();
        t.add_raw_templates([
            ("base.html", include_str!("../../../templates/admin/base.html")),
            ("sign_in.html", include_str!("../../../templates/admin/sign_in.html")),
            ("message.html", include_str!("../../../templates/admin/message.html")),
            ("overview.html", include_str!("../../../templates/admin/overview.html")),
            ("providers.html", include_str!("../../../templates/admin/providers.html")),
            ("provider.html", include_str!("../../../templates/admin/provider.html")),
            ("dashboard.html", include_str!("../../../templates/admin/dashboard.html")),
            ("records.html", include_str!("../../../templates/admin/records.html")),
            ("record.html", include_str!("../../../templates/admin/record.html")),
            ("consent.html", include_str!("../../../templates/admin/consent.html")),
            ("consent_preview.html", include_str!("../../../templates/admin/consent_preview.html")),
            ("revisions.html", include_str!("../../../templates/admin/revisions.html")),
            ("revision.html", include_str!("../../../templates/admin/revision.html")),
            ("visitor.html", include_str!("../../../templates/admin/visitor.html")),
        ])
        .expect("the admin templates parse");
        t.autoescape_on(vec![".html"]);
        t
    })
}

fn render(status: StatusCode, name: &str, ctx: &Context) -> Response {
    match templates().render(name, ctx) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = ?e, "admin template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

/// A page with one message, e.g. an error.
fn message(status: StatusCode, page: Option<&Page>, title: &str, text: &str) -> Response {
    let mut ctx = page.map(Page::context).unwrap_or_default();
    ctx.insert("title", title);
    ctx.insert("text", text);
    render(status, "message.html", &ctx)
}

fn domain_error(page: &Page, e: Error) -> Response {
    match e {
        Error::NotFound => message(StatusCode::NOT_FOUND, Some(page), "Not found", "There is nothing here."),
        Error::Conflict(m) => message(StatusCode::CONFLICT, Some(page), "Not possible now", &m),
        Error::Forbidden(m) => message(StatusCode::FORBIDDEN, Some(page), "Not allowed", &m),
        Error::Validation { message: m, .. } => message(StatusCode::BAD_REQUEST, Some(page), "Invalid input", &m),
        e => {
            tracing::error!(error = %e, "admin page failed");
            message(StatusCode::INTERNAL_SERVER_ERROR, Some(page), "Something went wrong", "Please try again.")
        }
    }
}

/// A signed-in visitor of the pages: the live token behind their session.
pub struct Page {
    holder: TokenHolder,
    key: String,
    session: Session,
}

impl Page {
    fn is_admin(&self) -> bool {
        self.holder.role == Role::Admin
    }

    fn context(&self) -> Context {
        let mut ctx = Context::new();
        ctx.insert("tenant", &self.holder.tenant.slug);
        ctx.insert("role", self.holder.role.as_str());
        ctx.insert("is_admin", &self.is_admin());
        ctx.insert("csrf", &self.session.csrf);
        ctx.insert("flash", &self.session.flash);
        ctx
    }

    /// The checks before any change: the form's CSRF token is the session's, and the token is
    /// an admin's. `Some` refusal (a 403 page) when either fails.
    fn refusal(&self, form: &HashMap<String, String>) -> Option<Response> {
        let sent = form.get("csrf").map(String::as_str).unwrap_or_default();
        if !crypto::constant_time_eq(sent, &self.session.csrf) {
            return Some(message(
                StatusCode::FORBIDDEN,
                Some(self),
                "Form refused",
                "This form did not come from your session (a missing or wrong CSRF token). Reload the page and try again.",
            ));
        }
        if !self.is_admin() {
            return Some(message(
                StatusCode::FORBIDDEN,
                Some(self),
                "Read-only",
                "Auditor tokens may only read; an admin token is required to change anything.",
            ));
        }
        None
    }

    fn done(&self, state: &AppState, flash: String, to: &str) -> Response {
        state.admin_sessions.flash(&self.key, flash);
        Redirect::to(to).into_response()
    }
}

impl FromRequestParts<AppState> for Page {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_sign_in = || Redirect::to("/admin/sign-in").into_response();
        let Some((key, session)) = state.admin_sessions.find(&parts.headers) else { return Err(to_sign_in()) };
        match tokens::holder(&state.db, session.token_id).await {
            Ok(Some(holder)) => Ok(Page { holder, key, session }),
            Ok(None) => {
                // The token was revoked: so is the session.
                state.admin_sessions.end(&key);
                Err(to_sign_in())
            }
            Err(e) => {
                tracing::error!(error = %e, "admin session check failed");
                Err(message(StatusCode::SERVICE_UNAVAILABLE, None, "Unavailable", "Please try again shortly."))
            }
        }
    }
}

fn form(body: &Bytes) -> HashMap<String, String> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")],
        include_str!("../../../templates/admin/admin.css"),
    )
        .into_response()
}

async fn sign_in_form() -> Response {
    render(StatusCode::OK, "sign_in.html", &Context::new())
}

/// A form posted from another site: its `Origin` (browsers send one with every POST) is neither
/// the gateway's public URL nor the request's host. No session exists yet at sign-in, so this
/// stands in for the CSRF token there (a forged sign-in would put the victim in the forger's
/// session).
fn cross_site(headers: &axum::http::HeaderMap, public_url: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    origin != public_url.trim_end_matches('/') && origin.split_once("://").map(|(_, authority)| authority) != Some(host)
}

async fn sign_in(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let mut ctx = Context::new();
    if cross_site(&headers, &state.public_url) {
        return message(StatusCode::FORBIDDEN, None, "Form refused", "Sign in from this gateway's own sign-in page.");
    }
    if let Err(wait) =
        state.admin_sessions.sign_ins.check(visitor.ip.map(crate::ip::client_key), session::SIGN_INS_PER_MINUTE)
    {
        ctx.insert(
            "error",
            &format!("Too many sign-in attempts from your address. Try again in {} seconds.", wait.as_secs() + 1),
        );
        let mut res = render(StatusCode::TOO_MANY_REQUESTS, "sign_in.html", &ctx);
        res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs() + 1));
        return res;
    }
    let token = form(&body).remove("token").unwrap_or_default();
    let holder = match tokens::authenticate(&state.db, &token.trim().to_string().into()).await {
        Ok(Some(holder)) => holder,
        Ok(None) => {
            ctx.insert(
                "error",
                "That token was not accepted: it is unknown, mistyped or revoked. Use an admin or auditor API token (it starts with cg_).",
            );
            return render(StatusCode::UNAUTHORIZED, "sign_in.html", &ctx);
        }
        Err(e) => {
            tracing::error!(error = %e, "admin sign-in failed");
            return message(StatusCode::SERVICE_UNAVAILABLE, None, "Unavailable", "Please try again shortly.");
        }
    };
    let id = state.admin_sessions.start(holder.token_id, holder.tenant.id);
    let cookie = session::set_cookie(&id, session::secure(&state.public_url));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/admin")).into_response()
}

async fn sign_out(State(state): State<AppState>, page: Page, body: Bytes) -> Response {
    let sent = form(&body).remove("csrf").unwrap_or_default();
    if !crypto::constant_time_eq(&sent, &page.session.csrf) {
        return message(
            StatusCode::FORBIDDEN,
            Some(&page),
            "Form refused",
            "This form did not come from your session.",
        );
    }
    state.admin_sessions.end(&page.key);
    let cookie = session::clear_cookie(session::secure(&state.public_url));
    ([(header::SET_COOKIE, cookie)], Redirect::to("/admin/sign-in")).into_response()
}

/// Every provider config of the tenant with its delivery counts.
async fn provider_rows(state: &AppState, tenant_id: Uuid) -> Result<Vec<serde_json::Value>, Error> {
    let counts = data::delivery_counts(&state.db, tenant_id).await?;
    let mut rows = Vec::new();
    for p in providers::all() {
        for c in provider_configs::list(&state.db, tenant_id, *p).await? {
            let mut n = counts.get(&c.id).cloned().unwrap_or_default();
            // The API's rule (`usage.events_retrying`): while the circuit is not closed, every
            // waiting delivery waits because of the provider's trouble.
            n.retrying = c.usage.events_retrying;
            rows.push(json!({"config": c, "counts": n}));
        }
    }
    Ok(rows)
}

async fn overview(State(state): State<AppState>, page: Page) -> Response {
    let tenant_id = page.holder.tenant.id;
    let result = async {
        let consent = store::list(&state.db, tenant_id).await?;
        let rows = provider_rows(&state, tenant_id).await?;
        let (depth, oldest) = data::outbox_depth(&state.db, tenant_id).await?;
        Ok::<_, Error>((consent, rows, depth, oldest))
    }
    .await;
    let (consent, rows, depth, oldest) = match result {
        Ok(r) => r,
        Err(e) => return domain_error(&page, e),
    };
    let mut ctx = page.context();
    ctx.insert("nav", "overview");
    ctx.insert("consent_configs", &consent);
    ctx.insert("providers", &rows);
    ctx.insert("outbox_depth", &depth);
    ctx.insert("oldest_age", &oldest.map(|t| age(Utc::now() - t)));
    render(StatusCode::OK, "overview.html", &ctx)
}

/// "4 min", "2 h 5 min", "3 d 1 h".
fn age(d: chrono::Duration) -> String {
    let m = d.num_minutes().max(0);
    match m {
        0 => "under a minute".into(),
        1..60 => format!("{m} min"),
        60..1440 => format!("{} h {} min", m / 60, m % 60),
        _ => format!("{} d {} h", m / 1440, (m % 1440) / 60),
    }
}

async fn providers_page(State(state): State<AppState>, page: Page) -> Response {
    let rows = match provider_rows(&state, page.holder.tenant.id).await {
        Ok(r) => r,
        Err(e) => return domain_error(&page, e),
    };
    let mut ctx = page.context();
    ctx.insert("nav", "providers");
    ctx.insert("providers", &rows);
    render(StatusCode::OK, "providers.html", &ctx)
}

async fn find_config(
    state: &AppState,
    page: &Page,
    provider: &str,
    id: &str,
) -> Result<provider_config::Model, Response> {
    let id = Uuid::parse_str(id).map_err(|_| domain_error(page, Error::NotFound))?;
    provider_configs::find(&state.db, page.holder.tenant.id, provider, id).await.map_err(|e| domain_error(page, e))
}

async fn provider_page(
    State(state): State<AppState>,
    page: Page,
    Path((provider, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let days = match period(query.as_deref()) {
        Ok(d) => d,
        Err(m) => return message(StatusCode::BAD_REQUEST, Some(&page), "Invalid period", &m),
    };
    let model = match find_config(&state, &page, &provider, &id).await {
        Ok(m) => m,
        Err(res) => return res,
    };
    let tenant_id = page.holder.tenant.id;
    let now = Utc::now();
    let result = async {
        let per_day = data::delivery_days(&state.db, tenant_id, model.id, days, now).await?;
        let lag = data::delivery_lag(&state.db, tenant_id, model.id, days, now).await?;
        let view = provider_configs::counted(&state.db, model.clone()).await?;
        let mut counts = data::delivery_counts(&state.db, tenant_id).await?.remove(&model.id).unwrap_or_default();
        counts.retrying = view.usage.events_retrying;
        let horizon = state.settings.delivery.retry_horizon();
        let dead = log::list(
            &state.db,
            tenant_id,
            &Filter { status: Some(DeliveryStatus::Dead), config: Some(model.id), limit: 50, ..Filter::default() },
            horizon,
        )
        .await?;
        let recent = log::list(
            &state.db,
            tenant_id,
            &Filter { config: Some(model.id), limit: 200, ..Filter::default() },
            horizon,
        )
        .await?;
        let errors: Vec<_> = recent.into_iter().filter(|d| d.last_error.is_some()).take(10).collect();
        Ok::<_, Error>((view, counts, dead, errors, per_day, lag))
    }
    .await;
    let (view, counts, dead, errors, per_day, lag) = match result {
        Ok(r) => r,
        Err(e) => return domain_error(&page, e),
    };
    let status = model.status.clone();
    let mut ctx = page.context();
    ctx.insert("nav", "providers");
    ctx.insert("config", &view);
    ctx.insert("counts", &counts);
    ctx.insert("dead", &dead);
    ctx.insert("errors", &errors);
    ctx.insert("may_pause", &(status == ProviderStatus::Active.as_str()));
    ctx.insert("may_resume", &(status == ProviderStatus::Paused.as_str() || status == ProviderStatus::Error.as_str()));
    ctx.insert("may_replay", &(status != ProviderStatus::Decommissioned.as_str()));
    ctx.insert("period", &days);
    ctx.insert("days_chart", &chart::deliveries(&per_day, &format!("Deliveries per day of arrival, last {days} days")));
    ctx.insert("per_day", &per_day);
    let shown = |ms: Option<i64>| ms.map_or_else(|| "–".to_string(), data::duration);
    ctx.insert(
        "lag",
        &json!({"delivered": lag.delivered, "p50": shown(lag.p50), "p90": shown(lag.p90), "p99": shown(lag.p99)}),
    );
    render(StatusCode::OK, "provider.html", &ctx)
}

/// Pause, resume, check, replay every dead letter: the API handlers' domain calls.
async fn provider_action(
    State(state): State<AppState>,
    page: Page,
    Path((provider, id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    if let Some(res) = page.refusal(&form(&body)) {
        return res;
    }
    let Some(p) = providers::get(&provider) else { return domain_error(&page, Error::NotFound) };
    let model = match find_config(&state, &page, &provider, &id).await {
        Ok(m) => m,
        Err(res) => return res,
    };
    let back = format!("/admin/providers/{provider}/{}", model.id);
    let tenant_id = page.holder.tenant.id;
    let actor = page.holder.actor();
    let flash = match action.as_str() {
        "pause" | "resume" => {
            let to = if action == "pause" { ProviderStatus::Paused } else { ProviderStatus::Active };
            let patch = serde_json::from_value(json!({"status": to.as_str()})).expect("a status patch parses");
            match provider_configs::patch(&state.db, tenant_id, p, model.id, patch, &actor).await {
                Ok(view) => {
                    state.config_cache.forget(tenant_id);
                    if to == ProviderStatus::Active {
                        state.secrets.forget(&view.credentials);
                        state.outbox.wake();
                    }
                    format!("{} is now {}.", view.display_name, view.status)
                }
                Err(Error::Conflict(m)) => format!("Not changed: {m}"),
                Err(e) => return domain_error(&page, e),
            }
        }
        "replay-dead-letters" => {
            if model.status == ProviderStatus::Decommissioned.as_str() {
                "Not replayed: the config is decommissioned.".to_string()
            } else {
                match log::replay_dead_letters(
                    &state.db,
                    tenant_id,
                    model.id,
                    &actor,
                    state.settings.delivery.retry_horizon(),
                )
                .await
                {
                    Ok(n) => {
                        state.outbox.wake();
                        format!("{n} dead letter(s) set to be sent again.")
                    }
                    Err(e) => return domain_error(&page, e),
                }
            }
        }
        "check" => {
            let report = crate::secrets::check::check(
                &state.secrets,
                &page.holder.tenant.slug,
                p,
                &model,
                &state.settings.delivery,
            )
            .await;
            let lines: Vec<String> = report
                .references
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}{}",
                        r.field,
                        r.status,
                        r.detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
                    )
                })
                .collect();
            format!("Check {}. {}", report.status, lines.join("; "))
        }
        _ => return domain_error(&page, Error::NotFound),
    };
    page.done(&state, flash, &back)
}

async fn replay_one(State(state): State<AppState>, page: Page, Path(id): Path<String>, body: Bytes) -> Response {
    if let Some(res) = page.refusal(&form(&body)) {
        return res;
    }
    let Ok(id) = Uuid::parse_str(&id) else { return domain_error(&page, Error::NotFound) };
    match log::replay(
        &state.db,
        page.holder.tenant.id,
        id,
        &page.holder.actor(),
        state.settings.delivery.retry_horizon(),
    )
    .await
    {
        Ok(view) => {
            state.outbox.wake();
            let back = format!("/admin/providers/{}/{}", view.provider, view.config_id);
            page.done(&state, format!("Delivery {} set to be sent again.", view.id), &back)
        }
        Err(e) => domain_error(&page, e),
    }
}

/// `days`: 7, 30 or 90 (default 7).
fn period(query: Option<&str>) -> Result<i64, String> {
    let q: HashMap<String, String> = serde_urlencoded::from_str(query.unwrap_or_default()).unwrap_or_default();
    match q.get("days").map(String::as_str) {
        None => Ok(7),
        Some("7") => Ok(7),
        Some("30") => Ok(30),
        Some("90") => Ok(90),
        Some(_) => Err("days must be 7, 30 or 90".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        let m = chrono::Duration::minutes;
        assert_eq!(age(chrono::Duration::seconds(30)), "under a minute");
        assert_eq!(age(m(4)), "4 min");
        assert_eq!(age(m(125)), "2 h 5 min");
        assert_eq!(age(m(3 * 1440 + 61)), "3 d 1 h");
    }

    #[test]
    fn periods() {
        assert_eq!(period(None), Ok(7));
        assert_eq!(period(Some("days=30")), Ok(30));
        assert_eq!(period(Some("days=90")), Ok(90));
        assert!(period(Some("days=8")).is_err());
    }

    #[test]
    fn sign_in_from_another_site_is_refused() {
        let headers = |origin: Option<&str>| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("gw.example:8080"));
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            h
        };
        let public = "https://admin.example/";
        assert!(!cross_site(&headers(None), public), "no Origin (not a browser's cross-site form)");
        assert!(!cross_site(&headers(Some("https://gw.example:8080")), public));
        assert!(!cross_site(&headers(Some("https://admin.example")), public), "behind a proxy that rewrites Host");
        assert!(cross_site(&headers(Some("https://evil.example")), public));
        assert!(cross_site(&headers(Some("https://gw.example")), public), "another port is another origin");
        assert!(cross_site(&headers(Some("null")), public));
    }

    #[test]
    fn the_templates_parse() {
        let _ = templates();
    }
}
