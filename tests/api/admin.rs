//! The admin pages (`/admin`): sign-in and sessions, CSRF, the auditor's read-only view, and
//! changes made from the pages (replay, pause) landing in the audit log like their API twins.

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode, header, redirect::Policy};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set};
use serde_json::{Value, json};

use crate::{
    fakes::FakeProviders,
    helpers::{TestApp, assert_error, manual_delivery, send, spawn_app, spawn_app_with},
    privacy::{TABLES, dump, scene},
    site,
};

/// A browser of the admin pages: no redirects followed, the session cookie kept by hand.
pub(crate) struct Browser<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Self {
        Browser { app, http: reqwest::Client::builder().redirect(Policy::none()).build().unwrap(), cookie: None }
    }

    pub(crate) async fn sign_in(&mut self, token: &str) -> reqwest::Response {
        let res = self
            .http
            .post(self.app.url("/admin/sign-in"))
            .header(header::CONTENT_TYPE, FORM)
            .body(encode(&[("token", token)]))
            .send()
            .await
            .unwrap();
        if let Some(c) = res.headers().get(header::SET_COOKIE) {
            self.cookie = Some(c.to_str().unwrap().split(';').next().unwrap().to_string());
        }
        res
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, String) {
        let mut req = self.http.get(self.app.url(path));
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c);
        }
        let res = req.send().await.unwrap();
        (res.status(), res.text().await.unwrap())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(self.app.url(path)).header(header::CONTENT_TYPE, FORM).body(encode(form));
        if let Some(c) = &self.cookie {
            req = req.header(header::COOKIE, c);
        }
        req.send().await.unwrap()
    }

    /// The CSRF token in the page's forms.
    async fn csrf(&self) -> String {
        let (_, html) = self.get("/admin").await;
        let at = html.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + 19;
        html[at..at + 64].to_string()
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

fn encode(form: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(form).unwrap()
}

fn location(res: &reqwest::Response) -> &str {
    res.headers().get(header::LOCATION).map(|v| v.to_str().unwrap()).unwrap_or_default()
}

async fn audit_actions(app: &TestApp) -> Vec<(String, String)> {
    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.admin).await;
    log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_string(), e["actor"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test]
async fn sign_in_gives_a_strict_session_and_sign_out_ends_it() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    let res = b.get("/admin").await;
    assert_eq!(res.0, StatusCode::SEE_OTHER, "not signed in: to the sign-in page");

    // A sign-in form posted from another site is refused, even with a right token.
    let forged = b.http.post(app.url("/admin/sign-in")).header(header::ORIGIN, "https://evil.example");
    let res = forged.header(header::CONTENT_TYPE, FORM).body(encode(&[("token", &app.admin)])).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.headers().get(header::SET_COOKIE).is_none());

    let res = b.sign_in(&app.admin).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/admin");
    let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=28800"] {
        assert!(cookie.contains(part), "{part} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http on 127.0.0.1 (tests): no Secure, else no browser sends it");

    let mut req = b.http.get(app.url("/admin"));
    req = req.header(header::COOKIE, b.cookie.clone().unwrap());
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    let html = res.text().await.unwrap();
    assert!(html.contains("Tenant <strong>acme</strong>") && html.contains("Deliveries waiting"), "{html}");

    // Sign-out is a form like any other: without the session's CSRF token it is refused.
    assert_eq!(b.post("/admin/sign-out", &[]).await.status(), StatusCode::FORBIDDEN);
    let csrf = b.csrf().await;
    let res = b.post("/admin/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(res.headers()[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(b.get("/admin").await.0, StatusCode::SEE_OTHER, "the old cookie no longer works");
}

#[tokio::test]
async fn a_wrong_token_gets_a_clear_message_and_is_rate_limited() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    for _ in 0..10 {
        let res = b.sign_in("cg_not_a_token").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().get(header::SET_COOKIE).is_none());
        assert!(res.text().await.unwrap().contains("That token was not accepted"));
    }
    let res = b.sign_in(&app.admin).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "even a right token waits once the brake is on");
    assert!(res.headers().contains_key(header::RETRY_AFTER));
    assert!(res.text().await.unwrap().contains("Too many sign-in attempts"));
}

#[tokio::test]
async fn revoking_the_token_ends_its_session() {
    let app = spawn_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.auditor).await;
    assert_eq!(b.get("/admin").await.0, StatusCode::OK);
    let (_, tokens) = app.get(&format!("/v1/tenants/{}/tokens", app.tenant), &app.admin).await;
    let auditor = tokens.as_array().unwrap().iter().find(|t| t["role"] == "auditor").unwrap();
    let (s, _) =
        app.delete(&format!("/v1/tenants/{}/tokens/{}", app.tenant, auditor["id"].as_str().unwrap()), &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.get("/admin").await.0, StatusCode::SEE_OTHER);
}

/// A dead letter: Plausible at a private address the gateway refuses to reach.
async fn dead_letter(app: &TestApp, fakes: &FakeProviders) -> (Value, String) {
    let keys = site::site(app).await;
    let config = site::plausible(app, fakes, json!({})).await;
    let (_, accepted) = site::track(app, &keys, site::pageview(&site::visitor())).await;
    app.drain_outbox_with_retries().await;
    let event = accepted["id"].as_str().unwrap();
    let d = site::delivery_in(app, event, config["id"].as_str().unwrap(), "dead").await;
    (config, d["id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn replay_from_the_page_needs_the_csrf_token_and_is_audited() {
    let app = spawn_app_with(|s| {
        manual_delivery(s);
        s.delivery.allow_private_destinations = false;
    })
    .await;
    let fakes = FakeProviders::start().await;
    let (config, delivery) = dead_letter(&app, &fakes).await;
    let page = format!("/admin/providers/plausible/{}", config["id"].as_str().unwrap());
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let (s, html) = b.get(&page).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains(&format!(r#"action="/admin/deliveries/{delivery}/replay""#)), "{html}");
    assert!(html.contains(r#"<td id="dead-count">1</td>"#), "{html}");

    let replay = format!("/admin/deliveries/{delivery}/replay");
    let res = b.post(&replay, &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no CSRF token");
    assert!(res.text().await.unwrap().contains("CSRF"));
    assert_eq!(b.post(&replay, &[("csrf", &"0".repeat(64))]).await.status(), StatusCode::FORBIDDEN);
    assert!(audit_actions(&app).await.iter().all(|(a, _)| a != "delivery.replay"));

    let csrf = b.csrf().await;
    let res = b.post(&replay, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), page);
    let (_, html) = b.get(&page).await;
    assert!(html.contains("set to be sent again"), "the flash message: {html}");
    let (_, d) = app.get(&format!("/v1/tenants/{}/deliveries?status=pending", app.tenant), &app.admin).await;
    assert_eq!(d["items"][0]["id"], delivery.as_str());
    let actions = audit_actions(&app).await;
    assert!(actions.iter().any(|(a, actor)| a == "delivery.replay" && actor.starts_with("token:")), "{actions:?}");

    // It dies again; "replay all" sets it pending again, audited as its API twin.
    app.drain_outbox_with_retries().await;
    let res = b.post(&format!("{page}/replay-dead-letters"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(b.get(&page).await.1.contains("1 dead letter(s) set to be sent again"));
    assert!(audit_actions(&app).await.iter().any(|(a, _)| a == "delivery.replay_dead_letters"));
}

#[tokio::test]
async fn an_auditor_sees_no_forms_and_a_forged_post_is_refused() {
    let app = spawn_app_with(|s| {
        manual_delivery(s);
        s.delivery.allow_private_destinations = false;
    })
    .await;
    let fakes = FakeProviders::start().await;
    let (config, delivery) = dead_letter(&app, &fakes).await;
    let page = format!("/admin/providers/plausible/{}", config["id"].as_str().unwrap());
    let mut b = Browser::new(&app);
    b.sign_in(&app.auditor).await;
    let visitor = format!("/admin/visitors?visitor_id={}", site::visitor());
    let pages = ["/admin", "/admin/providers", page.as_str(), "/admin/dashboard", "/admin/records", &visitor];
    for path in pages {
        let (s, html) = b.get(path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        let forms: Vec<_> = html.match_indices(r#"<form method="post""#).collect();
        assert_eq!(forms.len(), 1, "only sign-out on {path}: {html}");
        assert_eq!(
            html.matches("<form").count(),
            forms.len() + usize::from(path == "/admin/records" || path == visitor),
            "search forms are GET: {path}"
        );
        assert!(html.contains(r#"action="/admin/sign-out""#));
        assert!(!html.contains("/admin/visitors/erase"), "no way to erase on {path}");
    }
    assert!(b.get(&page).await.1.contains(&delivery), "the auditor sees the dead letter");
    let csrf = b.csrf().await;
    for path in
        [format!("/admin/deliveries/{delivery}/replay"), format!("{page}/pause"), format!("{page}/replay-dead-letters")]
    {
        let res = b.post(&path, &[("csrf", &csrf)]).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(res.text().await.unwrap().contains("Auditor tokens may only read"));
    }
    let (_, d) = app.get(&format!("/v1/tenants/{}/deliveries?status=dead", app.tenant), &app.admin).await;
    assert_eq!(d["items"][0]["id"], delivery.as_str(), "still dead");
    let (_, c) = app
        .get(
            &format!("/v1/tenants/{}/analytics/plausible/configs/{}", app.tenant, config["id"].as_str().unwrap()),
            &app.admin,
        )
        .await;
    assert_eq!(c["status"], "active");
}

#[tokio::test]
async fn pause_and_resume_from_the_page_are_audited_like_the_api() {
    let app = spawn_app_with(manual_delivery).await;
    let fakes = FakeProviders::start().await;
    let config = site::plausible(&app, &fakes, json!({})).await;
    let id = config["id"].as_str().unwrap();
    let page = format!("/admin/providers/plausible/{id}");
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let csrf = b.csrf().await;
    assert_eq!(b.post(&format!("{page}/pause"), &[]).await.status(), StatusCode::FORBIDDEN);
    let api = format!("/v1/tenants/{}/analytics/plausible/configs/{id}", app.tenant);
    assert_eq!(app.get(&api, &app.admin).await.1["status"], "active");
    assert_eq!(b.post(&format!("{page}/pause"), &[("csrf", &csrf)]).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.get(&api, &app.admin).await.1["status"], "paused");
    let html = b.get(&page).await.1;
    assert!(html.contains("is now paused") && html.contains("/resume"), "{html}");
    assert_eq!(b.post(&format!("{page}/resume"), &[("csrf", &csrf)]).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.get(&api, &app.admin).await.1["status"], "active");
    // The check button: the same report as `POST …/check`, shown as the page's message.
    let res = b.post(&format!("{page}/check"), &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, report) = app.post(&format!("{api}/check"), &app.admin, json!({})).await;
    let html = b.get(&page).await.1;
    assert!(html.contains(&format!("Check {}.", report["status"].as_str().unwrap())), "{report} {html}");
    let actions = audit_actions(&app).await;
    let updates = actions.iter().filter(|(a, actor)| a == "plausible_config.update" && actor.starts_with("token:"));
    assert_eq!(updates.count(), 2, "{actions:?}");
}

#[tokio::test]
async fn the_dashboard_counts_decisions_and_its_csv_says_the_same() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    app.consent("v1", "accept_all", 1).await;
    app.consent("v2", "reject_all", 1).await;
    app.consent("v3", "custom", 1).await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.auditor).await;
    let (s, html) = b.get("/admin/dashboard?days=30").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("3 decisions in the last 30 days") && html.contains("<svg"), "{html}");
    let today = chrono::Utc::now().date_naive();
    assert!(
        html.contains(&format!(r#"<th scope="row">{today}</th><td>1</td><td>1</td><td>1</td><td>0</td>"#)),
        "{html}"
    );
    // analytics: accept all and custom grant it, 2 of 3.
    assert!(html.contains(r#"<th scope="row">analytics</th><td>2</td><td>3</td><td>66 %</td>"#), "{html}");
    assert_eq!(b.get("/admin/dashboard?days=8").await.0, StatusCode::BAD_REQUEST);
    let (s, csv) = b.get("/admin/dashboard.csv?days=7").await;
    assert_eq!(s, StatusCode::OK);
    assert!(csv.contains(&format!("\n{today},1,1,1,0\n")) && csv.contains("\nanalytics,2,3,66\n"), "{csv}");
    assert_eq!(csv.lines().filter(|l| l.starts_with("20")).count(), 7);
}

#[tokio::test]
async fn records_search_detail_with_proof_and_chain_verification() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    app.consent("v1", "accept_all", 1).await;
    app.consent("v2", "reject_all", 1).await;
    let third = app.consent("v3", "custom", 1).await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.auditor).await;

    let (s, html) = b.get("/admin/records?visitor_id=&action=reject_all&analytics=&from=").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("(1 shown)") && html.contains("<td>v2</td>"), "{html}");
    let (s, html) = b.get("/admin/records?analytics=true").await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("(2 shown)"), "accept all and custom grant analytics: {html}");
    let (s, html) = b.get("/admin/records?action=maybe").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("action"), "{html}");

    // The search's export: every matching record, the same bytes as the API's export.
    let (_, html) = b.get("/admin/records?analytics=true&after=1").await;
    assert!(html.contains(r#"href="/admin/records/export?format=csv&amp;analytics=true""#), "{html}");
    for format in ["csv", "ndjson"] {
        let (s, page_export) = b.get(&format!("/admin/records/export?format={format}&analytics=true")).await;
        assert_eq!(s, StatusCode::OK);
        let api_export = app
            .http
            .get(app.tenant_url(&format!("/consent-records/export?format={format}&analytics=true")))
            .bearer_auth(&app.auditor)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(page_export, api_export, "{format}");
        let lines = page_export.lines().count();
        assert_eq!(lines, if format == "csv" { 3 } else { 2 }, "accept all and custom: {page_export}");
    }
    let (s, html) = b.get("/admin/records/export?format=xml").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("format: must be csv or ndjson"), "{html}");

    let (_, list) = app.get(&format!("/v1/tenants/{}/consent-records?visitor_id=v3", app.tenant), &app.auditor).await;
    let id = list["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list["items"][0]["action"], third["action"]);
    let (s, html) = b.get(&format!("/admin/records/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("the record is unaltered") && html.contains("matches"), "{html}");
    let (_, html) = b.get("/admin/records/verify").await;
    assert!(html.contains("The chain is intact: 3 record(s) checked"), "{html}");

    // Altered behind the gateway's back: the detail and the verification say so.
    use sea_orm::ConnectionTrait;
    app.db.execute_unprepared("UPDATE consent_record SET action = 'accept_all' WHERE seq = 3").await.unwrap();
    let (_, html) = b.get(&format!("/admin/records/{id}")).await;
    assert!(html.contains("the record was altered"), "{html}");
    let (_, html) = b.get("/admin/records/verify").await;
    assert!(html.contains("The chain is broken at record 3") && html.contains("hash_mismatch"), "{html}");
}

/// The fields a browser would send from the form posting to `action`: inputs (checkboxes only
/// when checked), textareas and each select's selected option, in page order.
fn form_fields(html: &str, action: &str) -> Vec<(String, String)> {
    let start = html.find(&format!(r#"action="{action}""#)).unwrap_or_else(|| panic!("a form to {action}: {html}"));
    let form = &html[start..start + html[start..].find("</form>").unwrap()];
    let attr = |tag: &str, name: &str| {
        let at = tag.find(&format!(r#" {name}=""#))? + name.len() + 3;
        Some(unescape(&tag[at..at + tag[at..].find('"')?]))
    };
    let mut out = Vec::new();
    let mut rest = form;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        let tag = &rest[..=rest.find('>').unwrap()];
        let after = &rest[tag.len()..];
        if tag.starts_with("<input") {
            let name = attr(tag, "name").unwrap();
            if attr(tag, "type").as_deref() != Some("checkbox") || tag.contains(" checked") {
                out.push((name, attr(tag, "value").unwrap_or_default()));
            }
        } else if tag.starts_with("<textarea") {
            out.push((attr(tag, "name").unwrap(), unescape(&after[..after.find("</textarea>").unwrap()])));
        } else if tag.starts_with("<select") {
            let options = &after[..after.find("</select>").unwrap()];
            let selected =
                options.split("<option").find(|o| o.contains(" selected")).unwrap_or_else(|| panic!("{tag}"));
            out.push((attr(tag, "name").unwrap(), attr(&format!(" {selected}"), "value").unwrap()));
        }
        rest = &rest[tag.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn with(mut fields: Vec<(String, String)>, changes: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in changes {
        let at = fields.iter().position(|(name, _)| name == k).unwrap_or_else(|| panic!("no field {k}"));
        fields[at].1 = v.to_string();
    }
    fields
}

impl Browser<'_> {
    async fn post_fields(&self, path: &str, fields: &[(String, String)]) -> reqwest::Response {
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.post(path, &pairs).await
    }
}

async fn served_banner(app: &TestApp) -> String {
    app.http.get(app.tenant_url("/banner.js")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn an_invalid_field_in_the_editor_is_shown_beside_it_and_changes_nothing() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    let editor = format!("/admin/consent/{id}");
    let api = format!("{}/{id}", app.consent_configs_path());
    let (_, before) = app.get(&api, &app.admin).await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;

    let res = b.http.get(app.url(&editor)).header(header::COOKIE, b.cookie.clone().unwrap()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_string();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    let fields = form_fields(&html, &editor);
    assert!(fields.contains(&("texts.sv.title".into(), "Kakor".into())), "{fields:?}");
    assert!(fields.contains(&("categories.marketing.cookie_names".into(), "_fbp".into())), "{fields:?}");

    let bad = with(fields.clone(), &[("banner.primary_color", "blue"), ("consent_expiry_days", "0")]);
    let res = b.post_fields(&editor, &bad).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = res.text().await.unwrap();
    assert!(html.contains("Not saved: 2 problem(s)"), "{html}");
    // Each error right under its own field, which points at it and shows what was sent.
    let colour = &html[html.find(r#"id="f-banner-primary_color""#).unwrap()..];
    let colour = &colour[..colour.find("</div>").unwrap()];
    assert!(
        colour.contains(r#"aria-describedby="f-banner-primary_color-e1""#) && colour.contains(r#"aria-invalid="true""#),
        "{colour}"
    );
    assert!(colour.contains(r#"<p class="field-error" id="f-banner-primary_color-e1">&quot;blue&quot; is not a colour of the form #rrggbb</p>"#), "{colour}");
    let days = &html[html.find(r#"id="f-consent_expiry_days""#).unwrap()..];
    let days = &days[..days.find("</div>").unwrap()];
    assert!(days.contains(r#"value="0""#) && days.contains(r#"id="f-consent_expiry_days-e1""#), "{days}");
    assert!(
        html.contains(r##"<a href="#f-banner-primary_color">Button colour (Banner look)"##),
        "the summary links to it: {html}"
    );

    let (_, after) = app.get(&api, &app.admin).await;
    assert_eq!(after, before, "nothing changed");
    // The form as it was: nothing to save, nothing in the audit log.
    let res = b.post_fields(&editor, &fields).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(b.get(&editor).await.1.contains("Nothing to save"));
    assert_eq!(app.get(&api, &app.admin).await.1, before, "the form round-trips the config unchanged");
    assert!(audit_actions(&app).await.iter().all(|(a, _)| a != "cookie_consent_config.update"));
}

/// Two admins at once: a form opened before someone else's save does not write its older values
/// over theirs. It is refused (409), nothing saved, and the editor shows the config as it is now
/// with the refused form's values beside the fields where they differ; saved from there, both
/// changes stand.
#[tokio::test]
async fn a_form_opened_before_someone_elses_save_does_not_undo_it() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    let editor = format!("/admin/consent/{id}");
    let api = format!("{}/{id}", app.consent_configs_path());
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let (_, html) = b.get(&editor).await;
    let stale = form_fields(&html, &editor);
    assert!(stale.iter().any(|(k, _)| k == "updated_at"), "{stale:?}");

    let (s, _) = app.call(Method::PATCH, &api, &app.admin, Some(json!({"banner": {"primary_color": "#0b57d0"}}))).await;
    assert_eq!(s, StatusCode::OK);
    let res = b.post_fields(&editor, &with(stale, &[("texts.sv.title", "Kakor här")])).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let html = res.text().await.unwrap();
    assert!(html.contains("Not saved") && html.contains("changed since it was read"), "{html}");
    let (_, now) = app.get(&api, &app.admin).await;
    assert_eq!(
        (now["banner"]["primary_color"].as_str(), now["texts"]["sv"]["title"].as_str()),
        (Some("#0b57d0"), Some("Kakor")),
        "{now}"
    );

    // The form shown again holds the config as it is now, the refused values beside their fields.
    let fresh = form_fields(&html, &editor);
    assert!(fresh.contains(&("banner.primary_color".into(), "#0b57d0".into())), "{fresh:?}");
    assert!(fresh.contains(&("texts.sv.title".into(), "Kakor".into())), "{fresh:?}");
    assert!(html.contains("not saved: this form had Kakor här"), "{html}");
    assert!(html.contains("not saved: this form had #1a73e8"), "{html}");
    let fresh = with(fresh, &[("texts.sv.title", "Kakor här")]);
    assert_eq!(b.post_fields(&editor, &fresh).await.status(), StatusCode::SEE_OTHER);
    let (_, now) = app.get(&api, &app.admin).await;
    assert_eq!(
        (now["banner"]["primary_color"].as_str(), now["texts"]["sv"]["title"].as_str()),
        (Some("#0b57d0"), Some("Kakor här")),
        "{now}"
    );

    // Over the API, an echoed `updated_at` that is no longer the config's is the same 409.
    let got = app
        .call(Method::PATCH, &api, &app.admin, Some(json!({"updated_at": "2020-01-01T00:00:00Z", "display_name": "x"})))
        .await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", None);
}

#[tokio::test]
async fn saving_and_publishing_from_the_editor_changes_the_preview_then_the_served_banner() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    let editor = format!("/admin/consent/{id}");
    let api = format!("{}/{id}", app.consent_configs_path());
    assert!(served_banner(&app).await.contains(r#""title":"Cookies""#));
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let fields = form_fields(&b.get(&editor).await.1, &editor);

    let edited = with(fields, &[("texts.en.title", "Your privacy choices"), ("banner.primary_color", "#0b57d0")]);
    let res = b.post_fields(&editor, &edited).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), editor);
    let (_, html) = b.get(&editor).await;
    assert!(html.contains("Draft saved") && html.contains(r#"<dd id="unpublished-changes">yes</dd>"#), "{html}");
    assert!(
        html.contains(
            "<th scope=\"row\"><code>texts.en.title</code></th><td>Cookies</td><td>Your privacy choices</td>"
        ),
        "the unpublished changes: {html}"
    );
    let (_, config) = app.get(&api, &app.admin).await;
    assert_eq!(
        (config["texts"]["en"]["title"].as_str(), config["revision"].as_i64()),
        (Some("Your privacy choices"), Some(1))
    );
    let actions = audit_actions(&app).await;
    assert!(
        actions.iter().any(|(a, actor)| a == "cookie_consent_config.update" && actor.starts_with("token:")),
        "{actions:?}"
    );

    // The preview renders the draft; visitors still get the published revision.
    let preview = app.url(&format!("{editor}/preview?view=mobile"));
    let res = b.http.get(&preview).header(header::COOKIE, b.cookie.clone().unwrap()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_string();
    assert!(
        csp.contains("script-src 'nonce-") && csp.contains("frame-ancestors 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(!csp.contains("connect-src") && csp.starts_with("default-src 'none'"), "no network for the banner: {csp}");
    assert_eq!(res.headers()[header::X_FRAME_OPTIONS], "SAMEORIGIN");
    let body = res.text().await.unwrap();
    assert!(body.contains(r#""title":"Your privacy choices""#) && body.contains("--cg-p:#0b57d0"), "{body}");
    assert!(served_banner(&app).await.contains(r#""title":"Cookies""#), "not published yet");
    // Unsaved edits (the editor's script sends the form's fields): shown when valid.
    let (_, body) = b.get(&format!("{editor}/preview?view=desktop&texts.en.title=Typed%20not%20saved")).await;
    assert!(body.contains(r#""title":"Typed not saved""#) && body.contains("edited draft"), "{body}");
    let (_, body) = b.get(&format!("{editor}/preview?banner.primary_color=blue")).await;
    assert!(body.contains("1 problem(s); this is the saved draft") && body.contains("--cg-p:#0b57d0"), "{body}");

    // Publish, asking everyone again.
    let csrf = b.csrf().await;
    let res = b.post(&format!("{editor}/publish"), &[("csrf", &csrf), ("requires_reconsent", "true")]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(
        b.get(&editor)
            .await
            .1
            .contains("Published revision 2; visitors who decided under an earlier revision are asked again")
    );
    let (_, config) = app.get(&api, &app.admin).await;
    assert_eq!((config["revision"].as_i64(), config["reconsent_revision"].as_i64()), (Some(2), Some(2)));
    let served = served_banner(&app).await;
    assert!(served.contains(r#""title":"Your privacy choices""#) && served.contains("--cg-p:#0b57d0"), "{served}");
    let actions = audit_actions(&app).await;
    assert!(
        actions.iter().any(|(a, actor)| a == "cookie_consent_config.publish" && actor.starts_with("token:")),
        "{actions:?}"
    );

    // The history and the diff of revision 2 against 1.
    let (s, html) = b.get(&format!("{editor}/revisions")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        html.contains(&format!(r#"href="{editor}/revisions/2">Revision 2</a>"#)) && html.contains("Revision 1</a>"),
        "{html}"
    );
    let (s, html) = b.get(&format!("{editor}/revisions/2")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("Changes from revision 1 (2 field(s))"), "{html}");
    assert!(html.contains(r#"<code>texts.en.title</code></th><td class="before">Cookies</td><td class="after">Your privacy choices</td>"#), "{html}");
    assert!(
        html.contains(
            r#"<code>banner.primary_color</code></th><td class="before">#1a73e8</td><td class="after">#0b57d0</td>"#
        ),
        "{html}"
    );
    assert_eq!(b.get(&format!("{editor}/revisions/3")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_auditor_sees_the_editor_read_only_and_a_forged_save_or_publish_is_refused() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    let editor = format!("/admin/consent/{id}");
    let api = format!("{}/{id}", app.consent_configs_path());
    let (_, before) = app.get(&api, &app.admin).await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.auditor).await;
    for path in [editor.clone(), format!("{editor}/revisions"), format!("{editor}/revisions/1")] {
        let (s, html) = b.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(html.matches("<form").count(), 1, "only sign-out on {path}: {html}");
        assert!(!html.contains("<input type=\"text\"") && !html.contains("editor.js"), "{path}");
    }
    assert!(b.get(&editor).await.1.contains(r#"<dd id="f-texts-en-title">Cookies"#), "the auditor reads the values");
    assert_eq!(b.get(&format!("{editor}/preview")).await.0, StatusCode::OK, "and sees the preview");
    let csrf = b.csrf().await;
    for (path, form) in [
        (editor.clone(), vec![("csrf", csrf.as_str()), ("texts.en.title", "Forged")]),
        (format!("{editor}/publish"), vec![("csrf", csrf.as_str()), ("requires_reconsent", "true")]),
    ] {
        let res = b.post(&path, &form).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        assert!(res.text().await.unwrap().contains("Auditor tokens may only read"));
    }
    assert_eq!(app.get(&api, &app.admin).await.1, before);
}

#[tokio::test]
async fn editor_forms_without_the_csrf_token_are_refused() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    let editor = format!("/admin/consent/{id}");
    let api = format!("{}/{id}", app.consent_configs_path());
    let (_, before) = app.get(&api, &app.admin).await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let forged = "0".repeat(64);
    for (path, form) in [
        (editor.clone(), vec![("texts.en.title", "Forged")]),
        (editor.clone(), vec![("csrf", forged.as_str()), ("texts.en.title", "Forged")]),
        (format!("{editor}/publish"), vec![]),
    ] {
        let res = b.post(&path, &form).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path} {form:?}");
        assert!(res.text().await.unwrap().contains("CSRF"));
    }
    assert_eq!(app.get(&api, &app.admin).await.1, before);
    let actions = audit_actions(&app).await;
    assert!(actions.iter().all(|(a, _)| a != "cookie_consent_config.update"), "{actions:?}");
    assert_eq!(actions.iter().filter(|(a, _)| a == "cookie_consent_config.publish").count(), 1, "{actions:?}");
}

#[tokio::test]
async fn the_editor_shows_the_apis_warnings_beside_their_fields() {
    let app = spawn_app().await;
    let id =
        app.publish_consent_config(json!({"banner": {"primary_color": "#eeeeee", "show_reject_all": false}})).await;
    let (_, view) = app.patch(&format!("{}/{id}", app.consent_configs_path()), &app.admin, json!({})).await;
    let warnings: Vec<&str> = view["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(warnings.len() >= 2, "{warnings:?}");
    let mut b = Browser::new(&app);
    b.sign_in(&app.admin).await;
    let (_, html) = b.get(&format!("/admin/consent/{id}")).await;
    assert!(html.contains(&format!("{} setting(s) against regulator guidance", warnings.len())), "{html}");
    for (field, w1) in [
        ("banner.primary_color", "f-banner-primary_color-w1"),
        ("banner.show_reject_all", "f-banner-show_reject_all-w1"),
    ] {
        let text = warnings.iter().find_map(|w| w.strip_prefix(&format!("{field}: "))).unwrap();
        let shown = format!(r#"<p class="field-warning" id="{w1}">{}</p>"#, text.replace('"', "&quot;"));
        let at = html.find(&format!(r#"id="f-{}""#, field.replace('.', "-"))).unwrap();
        let block = &html[at..at + html[at..].find("</div>").unwrap()];
        assert!(block.contains(&shown) && block.contains(w1), "{field}: {block}");
    }
}

/// The rows of one block of the dashboard's CSV (the one whose header starts with `head`), by
/// their first field.
fn csv_block(csv: &str, head: &str) -> BTreeMap<String, Vec<i64>> {
    let block =
        csv.split("\n\n").find(|b| b.starts_with(&format!("{head},"))).unwrap_or_else(|| panic!("{head} in {csv}"));
    block
        .lines()
        .skip(1)
        .map(|line| {
            let mut fields: Vec<&str> = line.rsplitn(9, ',').collect();
            fields.reverse();
            let label = fields[0].trim_matches('"').to_string();
            (label, fields[1..].iter().map(|n| n.parse().unwrap()).collect())
        })
        .collect()
}

#[tokio::test]
async fn the_dashboard_breaks_decisions_down_by_country_and_revision_as_the_api_records_them() {
    let app = spawn_app_with(|s| s.geo.country_header = "CF-IPCountry".into()).await;
    let config = app.publish_consent_config(json!({})).await;
    let decide = |visitor: &str, action: &str, revision: i64, country: Option<&str>| {
        let mut body = json!({"visitor_id": visitor, "action": action, "revision": revision, "language": "en"});
        if action == "custom" {
            body["choices"] = json!({"functional": false, "analytics": true, "marketing": false});
        }
        let mut req = app.public(Method::POST, &app.consent_path()).json(&body);
        if let Some(c) = country {
            req = req.header("cf-ipcountry", c);
        }
        async move {
            let (s, r) = send(req).await;
            assert_eq!(s, StatusCode::CREATED, "{r}");
        }
    };
    decide("v1", "accept_all", 1, Some("SE")).await;
    decide("v2", "accept_all", 1, Some("SE")).await;
    decide("v3", "reject_all", 1, Some("DE")).await;
    decide("v4", "custom", 1, None).await;
    app.publish(&config, true).await;
    decide("v5", "reject_all", 2, Some("SE")).await;
    decide("v6", "custom", 2, Some("DE")).await;
    decide("v1", "withdraw", 2, Some("SE")).await;

    let mut b = Browser::new(&app);
    b.sign_in(&app.auditor).await;
    let (s, csv) = b.get("/admin/dashboard.csv?days=7").await;
    assert_eq!(s, StatusCode::OK);
    let countries = csv_block(&csv, "country");
    let revisions = csv_block(&csv, "revision");

    // The same numbers from the API's records: accept all, reject all, custom, withdraw,
    // decisions, then decisions granting functional, analytics, marketing.
    let (_, list) = app.get(&format!("/v1/tenants/{}/consent-records?limit=500", app.tenant), &app.auditor).await;
    let mut want_countries: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut want_revisions: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in list["items"].as_array().unwrap() {
        let action = ["accept_all", "reject_all", "custom", "withdraw"].iter().position(|a| r["action"] == *a).unwrap();
        let country = r["country"].as_str().unwrap_or("unknown").to_string();
        let revision = format!("Shop, revision {}", r["revision"]);
        for row in
            [want_countries.entry(country).or_insert(vec![0; 8]), want_revisions.entry(revision).or_insert(vec![0; 8])]
        {
            row[action] += 1;
            row[4] += 1;
            for (i, c) in ["functional", "analytics", "marketing"].iter().enumerate() {
                row[5 + i] += i64::from(r["choices"][c] == true);
            }
        }
    }
    assert_eq!(countries, want_countries, "{csv}");
    assert_eq!(revisions, want_revisions, "{csv}");
    // And as seeded: Sweden 2 accept all, 1 reject all, 1 withdraw; the undetected country counted.
    assert_eq!(countries["SE"], [2, 1, 0, 1, 4, 2, 2, 2]);
    assert_eq!(countries["unknown"], [0, 0, 1, 0, 1, 0, 1, 0]);
    assert_eq!(revisions["Shop, revision 2"], [0, 1, 1, 1, 3, 0, 1, 0]);

    // The page shows them in tables beside the charts (most decisions first).
    let (s, html) = b.get("/admin/dashboard?days=7").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(html.matches("<svg").count(), 4, "per day, per category, by country, by revision: {html}");
    let se = r#"<th scope="row">SE</th><td>4</td><td>2</td><td>1</td><td>0</td><td>1</td><td>50 %</td><td>50 %</td><td>50 %</td>"#;
    assert!(html.contains(se), "{html}");
    assert!(html.find(">SE</th>").unwrap() < html.find(">DE</th>").unwrap(), "most decisions first");
    let rev1 = r#"<th scope="row">Shop, revision 1</th><td>4</td><td>2</td><td>1</td><td>1</td><td>0</td><td>50 %</td><td>75 %</td><td>50 %</td>"#;
    assert!(html.contains(rev1), "{html}");
}

/// Seeds a delivery of `config`'s event: `status`, `attempts`, arrived `ago` before now and
/// delivered `lag_ms` later (when delivered).
async fn seed(
    app: &TestApp,
    d: entity::delivery::Model,
    status: &str,
    attempts: i32,
    ago: Duration,
    lag_ms: Option<i64>,
) {
    let created = Utc::now() - ago;
    let mut m = d.into_active_model();
    m.status = Set(status.to_string());
    m.attempts = Set(attempts);
    m.created_at = Set(created);
    m.delivered_at = Set(lag_ms.map(|ms| created + Duration::milliseconds(ms)));
    m.update(&app.db).await.unwrap();
}

#[tokio::test]
async fn delivery_health_counts_per_day_of_arrival_and_lag_percentiles() {
    let (app, fakes, keys) = site::setup().await;
    let config = site::plausible(&app, &fakes, json!({})).await;
    let config_id: uuid::Uuid = config["id"].as_str().unwrap().parse().unwrap();
    for _ in 0..15 {
        let (s, e) = site::track(&app, &keys, site::pageview(&site::visitor())).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{e}");
    }
    let rows = entity::delivery::Entity::find()
        .filter(entity::delivery::Column::ConfigId.eq(config_id))
        .order_by_asc(entity::delivery::Column::Id)
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 15);
    let mut rows = rows.into_iter();
    let mut next = || rows.next().unwrap();
    let (today, yesterday) = (Duration::zero(), Duration::days(1));
    // Delivered, lags 100 ms … 900 ms and one minute; the first two arrived yesterday.
    for (i, lag) in [100, 200, 300, 400, 500, 600, 700, 800, 900, 60_000].into_iter().enumerate() {
        seed(&app, next(), "delivered", 1, if i < 2 { yesterday } else { today }, Some(lag)).await;
    }
    seed(&app, next(), "dropped", 1, today, None).await;
    seed(&app, next(), "pending", 2, today, None).await;
    seed(&app, next(), "pending", 0, today, None).await;
    seed(&app, next(), "dead", 9, today, None).await;
    // Outside the last 7 days, inside the last 30.
    seed(&app, next(), "delivered", 1, Duration::days(10), Some(5)).await;

    let page = format!("/admin/providers/plausible/{config_id}");
    let mut b = Browser::new(&app);
    b.sign_in(&app.auditor).await;
    let (s, html) = b.get(&page).await;
    assert_eq!(s, StatusCode::OK);
    let day = |ago: i64| (Utc::now() - Duration::days(ago)).date_naive();
    let row = |ago: i64, n: [i64; 5]| {
        format!(
            r#"<th scope="row">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"#,
            day(ago),
            n[0],
            n[1],
            n[2],
            n[3],
            n[4]
        )
    };
    // Delivered, dropped, waiting, retrying, dead.
    assert!(html.contains(&row(0, [8, 1, 1, 1, 1])), "{html}");
    assert!(html.contains(&row(1, [2, 0, 0, 0, 0])), "{html}");
    assert!(html.contains(&row(6, [0, 0, 0, 0, 0])) && !html.contains(&format!(">{}</th>", day(7))), "7 days: {html}");
    // Nearest rank over 10: p50 the 5th (500 ms), p90 the 9th (900 ms), p99 the 10th.
    assert!(html.contains("(10 delivered)"), "{html}");
    assert!(html.contains("<td>500 ms</td><td>900 ms</td><td>1 min 0 s</td>"), "{html}");
    assert!(html.contains(r#"class="chart""#), "the per-day chart");

    let (_, html) = b.get(&format!("{page}?days=30")).await;
    assert!(html.contains(&row(10, [1, 0, 0, 0, 0])) && html.contains("(11 delivered)"), "{html}");
    assert!(html.contains("<td>500 ms</td><td>900 ms</td><td>1 min 0 s</td>"), "{html}");
    assert_eq!(b.get(&format!("{page}?days=3")).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn erasure_from_the_page_leaves_nothing_but_hashes_and_is_audited_like_the_api() {
    let sc = scene().await;
    let app = &sc.app;
    let q = format!("visitor_id={}", sc.v);
    let mut b = Browser::new(app);
    b.sign_in(&app.admin).await;

    // What is held, as the export has it, and who received it.
    let (s, html) = b.get(&format!("/admin/visitors?{q}")).await;
    assert_eq!(s, StatusCode::OK);
    for held in ["<dd>1 (1 with the visitor id)</dd>", "<dt>Events</dt><dd>2</dd>", "<dd>2 delivered, 2 pending</dd>"] {
        assert!(html.contains(held), "{held} in {html}");
    }
    assert!(html.contains("PostHog") && html.contains(&format!("/admin/visitors/erase?{q}")), "{html}");
    assert!(html.contains(&format!("/admin/visitors/export?{q}")), "{html}");
    let (s, html) = b.get("/admin/visitors?visitor_id=not%20an%20id").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("visitor_id: must be a UUID"), "the field and the rule: {html}");

    // The confirm step, then the form: refused without the session's CSRF token.
    let (s, html) = b.get(&format!("/admin/visitors/erase?{q}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains(r#"action="/admin/visitors/erase""#) && html.contains("cannot be undone"), "{html}");
    let res = b.post("/admin/visitors/erase", &[("visitor_id", &sc.v)]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(dump(app, "analytics_event").await.contains(&sc.v), "nothing was erased");

    // An auditor: no erase link, no confirm page, and a forged form is refused.
    let mut auditor = Browser::new(app);
    auditor.sign_in(&app.auditor).await;
    let (_, html) = auditor.get(&format!("/admin/visitors?{q}")).await;
    assert!(html.contains("<dt>Events</dt><dd>2</dd>") && !html.contains("/admin/visitors/erase"), "{html}");
    assert_eq!(auditor.get(&format!("/admin/visitors/erase?{q}")).await.0, StatusCode::FORBIDDEN);
    let csrf = auditor.csrf().await;
    let res = auditor.post("/admin/visitors/erase", &[("csrf", &csrf), ("visitor_id", &sc.v)]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.unwrap().contains("Auditor tokens may only read"));
    assert!(dump(app, "analytics_event").await.contains(&sc.v), "nothing was erased");

    // The erasure answers with a redirect to its report (post, redirect, get): reloading the
    // report shows it again and erases nothing more.
    let csrf = b.csrf().await;
    let res = b.post("/admin/visitors/erase", &[("csrf", &csrf), ("visitor_id", &sc.v)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let report = res.headers()[header::LOCATION].to_str().unwrap().to_string();
    let hash = report.strip_prefix("/admin/visitors/erased?hash=").expect("the report's address");
    assert_eq!(hash.len(), 64, "the visitor's hash, never the id: {report}");
    let said = "2 event(s), 4 forwarding decision(s) and 4 deliveries (2 still waiting, never to be sent) deleted; the id removed from 1 consent record(s)";
    for _ in 0..2 {
        let (s, html) = b.get(&report).await;
        assert_eq!(s, StatusCode::OK);
        assert!(html.contains(said) && html.contains(hash), "{html}");
        assert!(
            html.contains(r#"id="received-by""#) && html.contains("PostHog") && html.contains("plausible"),
            "{html}"
        );
        assert!(!html.contains(&sc.v), "the report does not show the erased id: {html}");
    }
    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    let erasures = log["items"].as_array().unwrap().iter().filter(|e| e["action"] == "visitor.erase").count();
    assert_eq!(erasures, 1, "reloading the report erased nothing again: {log}");
    // Auditors read the report as they read the audit log; a hash that is not one, or that no
    // erasure was recorded under, is refused naming the field, or not found.
    assert_eq!(auditor.get(&report).await.0, StatusCode::OK);
    let (s, html) = b.get("/admin/visitors/erased?hash=abc").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(html.contains("hash: must be 64 lowercase hex digits"), "{html}");
    let (s, _) = b.get(&format!("/admin/visitors/erased?hash={}", "0".repeat(64))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // As the API's erasure: nothing about the visitor is left anywhere but hashes.
    for table in TABLES {
        let rows = dump(app, table).await;
        assert!(!rows.contains(&sc.v), "{table} still holds the visitor id: {rows}");
    }
    assert!(dump(app, "analytics_event").await.contains(&sc.other), "the other visitor stays");
    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    let entry = &log["items"][0];
    assert_eq!(entry["action"], "visitor.erase");
    assert!(entry["actor"].as_str().unwrap().starts_with("token:"), "{entry}");
    assert_eq!(entry["entity_id"].as_str().unwrap().len(), 64, "the hash, never the id: {entry}");
    let (_, html) = b.get(&format!("/admin/visitors?{q}")).await;
    assert!(html.contains(r#"id="only-hashes""#) && !html.contains("/admin/visitors/erase?"), "{html}");

    // The export from the page is the API's.
    let (s, page_export) = b.get(&format!("/admin/visitors/export?{q}")).await;
    assert_eq!(s, StatusCode::OK);
    let page_export: Value = serde_json::from_str(&page_export).unwrap();
    let (_, api_export) = app.get(&format!("/v1/tenants/{}/visitors/{}/export", app.tenant, sc.v), &app.auditor).await;
    for field in ["visitor_hash", "consent_records", "events", "chain"] {
        assert_eq!(page_export[field], api_export[field], "{field}");
    }
    assert_eq!(page_export["consent_records"].as_array().unwrap().len(), 1);
}

/// The grants are summed in SQL (per backend); a stored choice the decision engine cannot read
/// grants nothing there either.
#[tokio::test]
async fn the_dashboard_counts_an_unreadable_choice_as_granting_nothing() {
    use sea_orm::ConnectionTrait;
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    for v in ["v1", "v2", "v3", "v4"] {
        app.consent(v, "accept_all", 1).await;
    }
    for (seq, choices) in [
        (1, r#"{"necessary": false, "functional": true, "analytics": true, "marketing": true}"#),
        (2, r#""oops""#),
        (3, r#"{"functional": 1, "analytics": "true", "marketing": true}"#),
    ] {
        let sql = format!("UPDATE consent_record SET choices = '{choices}' WHERE seq = {seq}");
        app.db.execute_unprepared(&sql).await.unwrap();
    }
    let mut b = Browser::new(&app);
    b.sign_in(&app.auditor).await;
    let (_, csv) = b.get("/admin/dashboard.csv?days=7").await;
    // Functional: only v4; analytics: only v4; marketing: v3 (a real `true`) and v4.
    assert!(csv.contains("\nfunctional,1,4,25\nanalytics,1,4,25\nmarketing,2,4,50\n"), "{csv}");
}
