//! Tenants, tokens, roles, isolation, errors, health and the OpenAPI document.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{assert_error, send, spawn_app};

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let (s, body) = send(app.http.get(app.url("/healthz"))).await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (s, body) = send(app.http.get(app.url("/readyz"))).await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("ready")));
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    let id = res.headers().get("x-request-id").expect("x-request-id header");
    assert!(uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok());
    let res = app.http.get(app.url("/healthz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn an_admin_creates_lists_and_revokes_tokens() {
    let app = spawn_app().await;
    let path = format!("/v1/tenants/{}/tokens", app.tenant);
    let (s, created) = app.post(&path, &app.admin, json!({"name": "ci", "role": "auditor"})).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("cg_"));

    // The new token works, and the list never shows a secret.
    let (s, list) = app.get(&path, &secret).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert!(!list.to_string().contains(&secret[3..]));
    assert!(list.as_array().unwrap().iter().all(|t| t.get("secret").is_none() && t.get("token_hash").is_none()));

    // Revoked: refused at once.
    let id = created["id"].as_str().unwrap();
    let (s, revoked) = app.delete(&format!("{path}/{id}"), &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    assert_error(&app.get(&path, &secret).await, StatusCode::UNAUTHORIZED, "unauthorized", None);

    // last_used_at is kept.
    let (_, list) = app.get(&path, &app.admin).await;
    let me = list.as_array().unwrap().iter().find(|t| t["name"] == "test admin").unwrap();
    assert!(me["last_used_at"].is_string());
}

#[tokio::test]
async fn an_auditor_reads_but_cannot_change() {
    let app = spawn_app().await;
    let path = format!("/v1/tenants/{}/tokens", app.tenant);
    let (s, _) = app.get(&path, &app.auditor).await;
    assert_eq!(s, StatusCode::OK);
    let got = app.post(&path, &app.auditor, json!({"name": "x", "role": "admin"})).await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden", None);
    let (_, list) = app.get(&path, &app.admin).await;
    let id = list[0]["id"].as_str().unwrap();
    assert_error(&app.delete(&format!("{path}/{id}"), &app.auditor).await, StatusCode::FORBIDDEN, "forbidden", None);
    let (s, _) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn missing_or_bad_tokens_are_unauthorized() {
    let app = spawn_app().await;
    let path = format!("/v1/tenants/{}/tokens", app.tenant);
    let (s, body) = send(app.http.get(app.url(&path))).await;
    assert_error(&(s, body), StatusCode::UNAUTHORIZED, "unauthorized", None);
    assert_error(&app.get(&path, "cg_nope").await, StatusCode::UNAUTHORIZED, "unauthorized", None);
    assert_error(&app.get(&path, "").await, StatusCode::UNAUTHORIZED, "unauthorized", None);
}

/// Every tenant-scoped route family, as (method, path below /v1/tenants/{t}, body).
/// Later route families are added here so isolation is checked for each of them.
pub fn tenant_routes() -> Vec<(Method, &'static str, Option<serde_json::Value>)> {
    vec![
        (Method::GET, "/tokens", None),
        (Method::POST, "/tokens", Some(json!({"name": "x", "role": "admin"}))),
        (Method::DELETE, "/tokens/00000000-0000-0000-0000-000000000000", None),
        (Method::GET, "/audit-log", None),
        (Method::GET, "/analytics/cookie-consent/configs", None),
        (Method::POST, "/analytics/cookie-consent/configs", Some(crate::helpers::consent_config())),
        (Method::GET, "/analytics/cookie-consent/configs/00000000-0000-0000-0000-000000000000", None),
        (Method::PATCH, "/analytics/cookie-consent/configs/00000000-0000-0000-0000-000000000000", Some(json!({}))),
        (Method::DELETE, "/analytics/cookie-consent/configs/00000000-0000-0000-0000-000000000000", None),
        (
            Method::POST,
            "/analytics/cookie-consent/configs/00000000-0000-0000-0000-000000000000/publish",
            Some(json!({"requires_reconsent": false})),
        ),
        (Method::GET, "/analytics/cookie-consent/configs/00000000-0000-0000-0000-000000000000/revisions", None),
        (Method::GET, "/consent-records", None),
        (Method::DELETE, "/consent-records", None),
        (Method::GET, "/consent-records/export", None),
        (Method::GET, "/consent-records/verify", None),
        (Method::GET, "/ingest-keys", None),
        (Method::POST, "/ingest-keys", Some(json!({"kind": "secret", "name": "x"}))),
        (Method::DELETE, "/ingest-keys/00000000-0000-0000-0000-000000000000", None),
        (Method::GET, "/analytics/plausible/configs", None),
        (Method::POST, "/analytics/plausible/configs", Some(json!({"display_name": "x", "site_id": "a.org"}))),
        (Method::GET, "/analytics/umami/configs/00000000-0000-0000-0000-000000000000", None),
        (
            Method::PATCH,
            "/analytics/umami/configs/00000000-0000-0000-0000-000000000000",
            Some(json!({"status": "active"})),
        ),
        (Method::DELETE, "/analytics/plausible/configs/00000000-0000-0000-0000-000000000000", None),
        (Method::POST, "/analytics/umami/configs/00000000-0000-0000-0000-000000000000/replay-dead-letters", None),
        (Method::GET, "/deliveries", None),
        (Method::POST, "/deliveries/00000000-0000-0000-0000-000000000000/replay", None),
        (Method::GET, "/events/00000000-0000-0000-0000-000000000000", None),
    ]
}

#[tokio::test]
async fn a_token_of_another_tenant_sees_nothing() {
    let app = spawn_app().await;
    let (other, other_admin, other_auditor) = app.create_tenant("other-shop").await;
    for (method, path, body) in tenant_routes() {
        for token in [&other_admin, &other_auditor] {
            let got = app.call(method.clone(), &format!("/v1/tenants/{}{path}", app.tenant), token, body.clone()).await;
            assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
        }
        // Same answer as for a tenant that does not exist: no existence leak.
        let got =
            app.call(method.clone(), &format!("/v1/tenants/no-such-tenant{path}"), &other_admin, body.clone()).await;
        assert_error(&got, StatusCode::NOT_FOUND, "not_found", None);
    }
    // The other tenant's own tokens are unaffected.
    let (s, _) = app.get(&format!("/v1/tenants/{other}/tokens"), &other_admin).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn invalid_input_names_the_field() {
    let app = spawn_app().await;
    let path = format!("/v1/tenants/{}/tokens", app.tenant);
    let got = app.post(&path, &app.admin, json!({"name": "x", "role": "owner"})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("role"));
    let got = app.post(&path, &app.admin, json!({"name": "", "role": "admin"})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("name"));
    let got = app.post(&path, &app.admin, json!({"name": 5, "role": "admin"})).await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("name"));
    let got =
        send(app.request(Method::POST, &path, &app.admin).header("content-type", "application/json").body("{not json"))
            .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
    let got = send(app.request(Method::DELETE, &format!("{path}/not-a-uuid"), &app.admin)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
}

#[tokio::test]
async fn oversized_bodies_get_413_and_unknown_routes_404_json() {
    let app = spawn_app().await;
    let path = format!("/v1/tenants/{}/tokens", app.tenant);
    let big = json!({"name": "x".repeat(70 * 1024), "role": "admin"});
    assert_error(&app.post(&path, &app.admin, big).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    assert_error(&send(app.http.get(app.url("/nope"))).await, StatusCode::NOT_FOUND, "not_found", None);
    assert_error(
        &send(app.http.put(app.url("/healthz"))).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
}

#[tokio::test]
async fn changes_are_in_the_audit_log() {
    let app = spawn_app().await;
    let (_, created) = app
        .post(&format!("/v1/tenants/{}/tokens", app.tenant), &app.admin, json!({"name": "ci", "role": "admin"}))
        .await;
    let (s, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    assert_eq!(s, StatusCode::OK);
    let entry = &log["items"][0];
    assert_eq!(entry["action"], "token.create");
    assert_eq!(entry["entity_id"], created["id"]);
    assert!(entry["actor"].as_str().unwrap().starts_with("token:"));
    assert!(!log.to_string().contains(created["secret"].as_str().unwrap()), "no secret in the audit log");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let app = spawn_app().await;
    let (s, doc) = send(app.http.get(app.url("/v1/openapi.json"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
        "/v1/tenants/{tenant}/tokens",
        "/v1/tenants/{tenant}/tokens/{id}",
        "/v1/tenants/{tenant}/audit-log",
        "/v1/tenants/{tenant}/analytics/cookie-consent/configs/{id}/revisions/{revision}",
        "/v1/tenants/{tenant}/consent",
        "/v1/tenants/{tenant}/consent/{visitor_id}",
        "/v1/tenants/{tenant}/banner.js",
        "/demo",
        "/v1/tenants/{tenant}/ingest-keys",
        "/v1/tenants/{tenant}/ingest-keys/{id}",
        "/v1/tenants/{tenant}/events",
        "/v1/tenants/{tenant}/events/{id}",
        "/v1/tenants/{tenant}/analytics/{provider}/events",
        "/v1/tenants/{tenant}/analytics/{provider}/configs",
        "/v1/tenants/{tenant}/analytics/{provider}/configs/{id}",
        "/v1/tenants/{tenant}/analytics/{provider}/configs/{id}/replay-dead-letters",
        "/v1/tenants/{tenant}/deliveries",
        "/v1/tenants/{tenant}/deliveries/{id}/replay",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
    }
    for (_, path, _) in tenant_routes() {
        // Provider route families are one set of routes with a `{provider}` segment.
        let path = path
            .replace("/analytics/plausible/", "/analytics/{provider}/")
            .replace("/analytics/umami/", "/analytics/{provider}/");
        let templ = format!("/v1/tenants/{{tenant}}{}", path.replace("00000000-0000-0000-0000-000000000000", "{id}"));
        assert!(paths.contains_key(&templ), "{templ} missing from the OpenAPI document");
    }
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting() {
    let app = spawn_app().await;
    let url = app.url("/healthz");
    let http = app.http.clone();
    let (s, _) = send(http.get(&url)).await;
    assert_eq!(s, StatusCode::OK);
    app.app.stop().await.unwrap();
    assert!(reqwest::Client::new().get(&url).send().await.is_err(), "no longer accepting");
}

/// U+0000 is valid JSON but no database stores it; it is refused with the field named, never a 500
/// (PostgreSQL would fail the insert).
#[tokio::test]
async fn nul_characters_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let path = format!("/v1/tenants/{}/tokens", app.tenant);
    let got = send(
        app.request(Method::POST, &path, &app.admin)
            .header("content-type", "application/json")
            .body(r#"{"name": "a\u0000b", "role": "admin"}"#),
    )
    .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("name"));
    // An escaped backslash followed by "u0000" is an ordinary string.
    let got = send(
        app.request(Method::POST, &path, &app.admin)
            .header("content-type", "application/json")
            .body(r#"{"name": "a\\u0000b", "role": "admin"}"#),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
    assert_eq!(got.1["name"], "a\\u0000b");
    let got =
        send(app.request(Method::GET, &format!("/v1/tenants/{}/audit-log?cursor=%00", app.tenant), &app.admin)).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
    let keys = crate::site::site(&app).await;
    let events = format!("/v1/tenants/{}/events", app.tenant);
    let got =
        send(app.http.post(app.url(&events)).bearer_auth(&keys.secret_key).header("content-type", "text/plain").body(
            r#"{"event_name": "x", "page_url": "https://e.com/", "event_properties": {"deep": [1, {"a": "\u0000"}]}}"#,
        ))
        .await;
    assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some("event_properties.deep[1].a"));
}
