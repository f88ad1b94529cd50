//! Ingest keys, who may post events from where (keys, origins, CORS, rate limits), and what a
//! posted event must look like.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, assert_error, send, spawn_app},
    site::{self, CHROME, ORIGIN, PAGE, create_key, pageview, track, visitor},
};

fn keys_path(app: &TestApp) -> String {
    format!("/v1/tenants/{}/ingest-keys", app.tenant)
}

#[tokio::test]
async fn an_admin_creates_lists_and_revokes_ingest_keys() {
    let app = spawn_app().await;
    let public = create_key(&app, json!({"kind": "public", "name": "site", "allowed_origins": ["https://Example.com"], "rate_limit_per_minute": 600})).await;
    let pk = public["key"].as_str().unwrap();
    assert!(pk.starts_with("pk_") && public["prefix"].as_str().is_some_and(|p| pk.starts_with(p)));
    assert_eq!(public["allowed_origins"], json!(["https://example.com"]));
    let secret = create_key(&app, json!({"kind": "secret", "name": "backend"})).await;
    let sk = secret["key"].as_str().unwrap();
    assert!(sk.starts_with("sk_"));

    // Public keys stay visible (they are in every page anyway); secret keys were shown once.
    let (s, list) = app.get(&keys_path(&app), &app.auditor).await;
    assert_eq!(s, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["key"], pk);
    assert!(list[1].get("key").is_none() && !Value::Array(list.clone()).to_string().contains(sk));
    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    assert!(!log.to_string().contains(sk), "no secret key in the audit log");

    // Revoked: refused at once.
    let (s, revoked) = app.delete(&format!("{}/{}", keys_path(&app), secret["id"].as_str().unwrap()), &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    assert!(revoked["revoked_at"].is_string());
    let got = send(
        app.http.post(app.tenant_url("/events")).bearer_auth(sk).json(&json!({"event_name": "x", "page_url": PAGE})),
    )
    .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized", None);

    assert_error(
        &app.post(&keys_path(&app), &app.auditor, json!({"kind": "secret", "name": "x"})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
}

#[tokio::test]
async fn ingest_key_input_names_the_field() {
    let app = spawn_app().await;
    let path = keys_path(&app);
    for (body, field) in [
        (json!({"kind": "public", "name": "x"}), "allowed_origins"),
        (json!({"kind": "public", "name": "x", "allowed_origins": ["example.com"]}), "allowed_origins[0]"),
        (json!({"kind": "public", "name": "x", "allowed_origins": ["https://example.com/path"]}), "allowed_origins[0]"),
        (json!({"kind": "secret", "name": "x", "allowed_origins": ["https://example.com"]}), "allowed_origins"),
        (json!({"kind": "master", "name": "x"}), "kind"),
        (json!({"kind": "secret", "name": ""}), "name"),
        (json!({"kind": "secret", "name": "x", "rate_limit_per_minute": 0}), "rate_limit_per_minute"),
        (json!({"kind": "secret", "name": "x", "scopes": []}), "scopes"),
    ] {
        assert_error(
            &app.post(&path, &app.admin, body.clone()).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some(field),
        );
    }
}

#[tokio::test]
async fn keys_are_checked_before_anything_else() {
    let app = spawn_app().await;
    let keys = site::site(&app).await;
    let (other, other_admin, _) = app.create_tenant("other-shop").await;
    let other_key = send(
        app.http
            .post(app.url(&format!("/v1/tenants/{other}/ingest-keys")))
            .bearer_auth(&other_admin)
            .json(&json!({"kind": "public", "name": "x", "allowed_origins": [ORIGIN]})),
    )
    .await
    .1["key"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |key: Option<&str>, origin: Option<&str>| {
        let mut req = app.http.post(app.tenant_url("/events")).json(&pageview(&visitor()));
        if let Some(k) = key {
            req = req.header("x-ingest-key", k);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        send(req)
    };
    assert_error(&post(None, Some(ORIGIN)).await, StatusCode::UNAUTHORIZED, "unauthorized", None);
    assert_error(&post(Some("pk_wrong"), Some(ORIGIN)).await, StatusCode::UNAUTHORIZED, "unauthorized", None);
    assert_error(&post(Some(&other_key), Some(ORIGIN)).await, StatusCode::UNAUTHORIZED, "unauthorized", None);
    let wrong = post(Some(&keys.public_key), Some("https://evil.example.net")).await;
    assert_error(&wrong, StatusCode::FORBIDDEN, "forbidden", None);
    assert_error(&post(Some(&keys.public_key), None).await, StatusCode::FORBIDDEN, "forbidden", None);
    // Wildcard origins match subdomains.
    assert_eq!(post(Some(&keys.public_key), Some("https://blog.example.org")).await.0, StatusCode::ACCEPTED);
    // A secret key never travels in a URL, and is not for pages.
    let got =
        send(app.http.post(app.tenant_url(&format!("/events?key={}", keys.secret_key))).json(&pageview(&visitor())))
            .await;
    assert_error(&got, StatusCode::UNAUTHORIZED, "unauthorized", None);
    let got = send(
        app.http
            .post(app.tenant_url("/events"))
            .bearer_auth(&keys.secret_key)
            .header("origin", ORIGIN)
            .json(&pageview(&visitor())),
    )
    .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden", None);
}

#[tokio::test]
async fn cors_answers_allowed_origins_only() {
    let app = spawn_app().await;
    let keys = site::site(&app).await;
    let preflight = |origin: &str, query: &str| {
        app.http
            .request(Method::OPTIONS, app.tenant_url(&format!("/events{query}")))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, x-ingest-key")
            .send()
    };
    let ok = preflight(ORIGIN, "").await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(ok.headers()["access-control-allow-origin"], ORIGIN);
    assert!(ok.headers()["access-control-allow-headers"].to_str().unwrap().contains("x-ingest-key"));
    assert!(ok.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let ok = preflight(ORIGIN, &format!("?key={}", keys.public_key)).await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    let no = preflight("https://evil.example.net", "").await.unwrap();
    assert_eq!(no.status(), StatusCode::FORBIDDEN);
    assert!(no.headers().get("access-control-allow-origin").is_none());
    let per_provider = app
        .http
        .request(Method::OPTIONS, app.tenant_url("/analytics/umami/events"))
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(per_provider.status(), StatusCode::NO_CONTENT);

    // The answers to the page itself — success or a mistake — are readable by it.
    let res = app
        .http
        .post(app.tenant_url(&format!("/events?key={}", keys.public_key)))
        .header("origin", ORIGIN)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(pageview(&visitor()).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::ACCEPTED, "sendBeacon's text/plain with ?key=");
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
    assert!(res.headers().get_all("vary").iter().any(|v| v.to_str().unwrap().contains("Origin")));
    let res = app
        .http
        .post(app.tenant_url(&format!("/events?key={}", keys.public_key)))
        .header("origin", ORIGIN)
        .json(&json!({"page_url": PAGE}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
}

#[tokio::test]
async fn a_keys_rate_limit_is_enforced() {
    let app = spawn_app().await;
    let key = create_key(
        &app,
        json!({"kind": "public", "name": "tight", "allowed_origins": [ORIGIN], "rate_limit_per_minute": 2}),
    )
    .await;
    let keys = site::Site { public_key: key["key"].as_str().unwrap().into(), secret_key: String::new() };
    assert_eq!(track(&app, &keys, pageview(&visitor())).await.0, StatusCode::ACCEPTED);
    assert_eq!(track(&app, &keys, pageview(&visitor())).await.0, StatusCode::ACCEPTED);
    let res = app
        .http
        .post(app.tenant_url("/events"))
        .header("x-ingest-key", &keys.public_key)
        .header("origin", ORIGIN)
        .json(&pageview(&visitor()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(res.headers()["access-control-allow-origin"], ORIGIN);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

/// An event as an array of its fields in `EventInput`'s order, which serde would read as the
/// event (a unit test checks that it does).
fn positional(name: &str) -> Value {
    let mut fields = vec![Value::Null; 19];
    fields[0] = json!(name);
    fields[6] = json!(PAGE);
    Value::Array(fields)
}

/// `body` as it is, with `content_type`, from the site's page (its public key and origin).
async fn post_raw(app: &TestApp, keys: &site::Site, content_type: &str, body: String) -> (StatusCode, Value) {
    send(
        app.http
            .post(app.tenant_url("/events"))
            .header("x-ingest-key", &keys.public_key)
            .header("origin", ORIGIN)
            .header("content-type", content_type)
            .body(body),
    )
    .await
}

#[tokio::test]
async fn bad_events_name_the_field() {
    let app = spawn_app().await;
    let keys = site::site(&app).await;
    for (body, field) in [
        (json!({"page_url": PAGE}), "event_name"),
        (json!({"event_name": "x".repeat(121), "page_url": PAGE}), "event_name"),
        (json!({"event_name": "pageview"}), "page_url"),
        (json!({"event_name": "pageview", "page_url": "not a url"}), "page_url"),
        (
            json!({"event_name": "e", "page_url": PAGE, "event_properties": {"big": "x".repeat(17_000)}}),
            "event_properties",
        ),
        (json!({"event_name": "e", "page_url": PAGE, "occurred_at": "2001-01-01T00:00:00Z"}), "occurred_at"),
        (json!({"event_name": "e", "page_url": PAGE, "revenue": {"amount": 5, "currency": "€"}}), "revenue.currency"),
        (json!({"event_name": "e", "page_url": PAGE, "ip": "1.2.3.4"}), "ip"),
        (json!({"event_name": "e", "page_url": PAGE, "screen": 1080}), "screen"),
        (json!({"event_name": "e", "page_url": PAGE, "unknown": 1}), "unknown"),
        // serde reads a struct from an array of its fields in order: an event is an object only.
        (positional("pageview"), "body"),
        (json!({"event_name": "e", "page_url": PAGE, "revenue": [5, "EUR"]}), "revenue"),
    ] {
        let got = track(&app, &keys, body.clone()).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some(field));
    }
    let got = post_raw(&app, &keys, "application/json", "{nope".into()).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
    let big = json!({"event_name": "e", "page_url": PAGE, "title": "t".repeat(70 * 1024)});
    assert_error(&track(&app, &keys, big).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    let got = post_raw(&app, &keys, "application/x-www-form-urlencoded", "a=1".into()).await;
    assert_eq!(got.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A repeated key is refused, naming it, never read as its last value: as one event and
    // inside a batch item.
    for (body, field) in [
        (format!(r#"{{"event_name": "a", "event_name": "b", "page_url": "{PAGE}"}}"#), "event_name"),
        (
            format!(r#"{{"batch": [{{"event_name": "a", "page_url": "{PAGE}", "title": "x", "title": "y"}}]}}"#),
            "batch[0].title",
        ),
    ] {
        let got = post_raw(&app, &keys, "application/json", body.clone()).await;
        assert_error(&got, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", Some(field));
        assert!(got.1["error"]["message"].as_str().unwrap().contains("duplicate field"), "{body}: {}", got.1);
    }
}

#[tokio::test]
async fn a_batch_stores_its_valid_items_and_reports_each() {
    let app = spawn_app().await;
    let keys = site::site(&app).await;
    let batch = json!({"batch": [
        pageview(&visitor()),
        {"event_name": "signup", "page_url": "ftp://example.com/"},
        {"event_name": "signup", "page_url": PAGE, "idempotency_key": "b-1"},
        {"event_name": "signup", "page_url": PAGE, "idempotency_key": "b-1"},
        positional("signup"),
    ]});
    let (s, res) = track(&app, &keys, batch).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{res}");
    let r = res["results"].as_array().unwrap();
    let statuses: Vec<u64> = r.iter().map(|i| i["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [202, 422, 202, 200, 422]);
    assert_eq!(r[1]["error"]["field"], "batch[1].page_url");
    assert_eq!(r[4]["error"]["field"], "batch[4]", "an array is not an event: {res}");
    assert_eq!(r[2]["id"], r[3]["id"]);
    for i in [0, 2] {
        let (s, _) =
            app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, r[i]["id"].as_str().unwrap()), &app.auditor).await;
        assert_eq!(s, StatusCode::OK, "item {i} was stored");
    }
    let too_many = json!({"batch": vec![pageview(&visitor()); 101]});
    assert_error(
        &track(&app, &keys, too_many).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        Some("batch"),
    );
    assert_error(
        &track(&app, &keys, json!({"batch": []})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        Some("batch"),
    );
}

#[tokio::test]
async fn the_stored_event_is_readable_by_its_tenant_only() {
    let app = spawn_app().await;
    let keys = site::site(&app).await;
    let (_, accepted) = send(
        app.http
            .post(app.tenant_url("/events"))
            .header("x-ingest-key", &keys.public_key)
            .header("origin", ORIGIN)
            .header("user-agent", CHROME)
            .header("dnt", "1")
            .json(&pageview("visitor-1")),
    )
    .await;
    let path = format!("/v1/tenants/{}/events/{}", app.tenant, accepted["id"].as_str().unwrap());
    let (s, event) = app.get(&path, &app.auditor).await;
    assert_eq!(s, StatusCode::OK, "{event}");
    assert_eq!((event["page_url"].as_str(), event["dnt"].as_bool()), (Some(PAGE), Some(true)));
    // No provider config granted full identity (there is none): stored without identifiers.
    assert!(event["anonymous_id"].is_null() && event["user_agent"].is_null(), "{event}");
    assert_eq!(event["context"]["agent"]["browser"], "Chrome", "the parsed agent stays");
    assert_eq!(event["ip_truncated"], "127.0.0.0");
    let (_, other_admin, _) = app.create_tenant("other-shop").await;
    assert_error(&app.get(&path, &other_admin).await, StatusCode::NOT_FOUND, "not_found", None);
    let missing = format!("/v1/tenants/{}/events/00000000-0000-0000-0000-000000000000", app.tenant);
    assert_error(&app.get(&missing, &app.admin).await, StatusCode::NOT_FOUND, "not_found", None);
}

/// The same event posted to two providers' own endpoints is two events (the seed's per-provider
/// API), and an explicit key reused for another target is refused, never silently swallowed.
#[tokio::test]
async fn idempotency_is_scoped_to_the_endpoints_target() {
    let (app, fakes, keys) = site::setup().await;
    // Keys derived from the session id are kept only on events stored with identifiers: both
    // providers have a config, and the visitor accepted.
    site::plausible(&app, &fakes, json!({})).await;
    site::umami(&app, &fakes, json!({})).await;
    app.publish_consent_config(json!({})).await;
    let v = visitor();
    app.consent(&v, "accept_all", 1).await;
    let at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let event =
        json!({"event_name": "pageview", "page_url": PAGE, "session_id": "s-1", "visitor_id": v, "occurred_at": at});
    let post = |path: &'static str, body: Value| {
        let req = app.http.post(app.tenant_url(path)).bearer_auth(&keys.secret_key).json(&body);
        send(req)
    };
    let (s1, umami) = post("/analytics/umami/events", event.clone()).await;
    let (s2, plausible) = post("/analytics/plausible/events", event.clone()).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED), "{umami} {plausible}");
    assert_ne!(umami["id"], plausible["id"]);
    // A real repeat to the same endpoint is still one event.
    let (s3, again) = post("/analytics/plausible/events", event.clone()).await;
    assert_eq!((s3, &again["id"]), (StatusCode::OK, &plausible["id"]));

    let mut keyed = event.clone();
    keyed["idempotency_key"] = json!("order-1001");
    assert_eq!(post("/analytics/umami/events", keyed.clone()).await.0, StatusCode::ACCEPTED);
    let got = post("/events", keyed).await;
    assert_error(&got, StatusCode::CONFLICT, "conflict", None);
}

/// A public key is published in every page, so anyone can post with it: its idempotency keys are
/// its own. A page posting `order-1001` first does not make the server's later `order-1001` a
/// "repeat" (the purchase would never be stored), and each kind still deduplicates its own.
#[tokio::test]
async fn idempotency_keys_are_scoped_by_key_kind() {
    let (app, _fakes, keys) = site::setup().await;
    let keyed = |k: &str| {
        let mut e = pageview(&visitor());
        e["idempotency_key"] = json!(k);
        e
    };
    let from_server =
        |body: Value| send(app.http.post(app.tenant_url("/events")).bearer_auth(&keys.secret_key).json(&body));

    let (s, page) = track(&app, &keys, keyed("order-1001")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{page}");
    let (s, server) = from_server(keyed("order-1001")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "the page's key must not pre-claim the server's: {server}");
    assert_ne!(server["id"], page["id"]);

    // Each kind still deduplicates its own repeats, answering with its own first event.
    let (s, again) = from_server(keyed("order-1001")).await;
    assert_eq!((s, &again["id"], &again["duplicate"]), (StatusCode::OK, &server["id"], &json!(true)), "{again}");
    let (s, again) = track(&app, &keys, keyed("order-1001")).await;
    assert_eq!((s, &again["id"], &again["duplicate"]), (StatusCode::OK, &page["id"], &json!(true)), "{again}");

    // The same order the other way round: the server first, then a page.
    let (s, server2) = from_server(keyed("order-1002")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{server2}");
    let (s, page2) = track(&app, &keys, keyed("order-1002")).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{page2}");
    assert_ne!(server2["id"], page2["id"]);

    // Each stored event says which kind of key posted it.
    for (id, kind) in [(&page["id"], "public"), (&server["id"], "secret")] {
        let (s, ev) =
            app.get(&format!("/v1/tenants/{}/events/{}", app.tenant, id.as_str().unwrap()), &app.auditor).await;
        assert_eq!((s, ev["key_kind"].as_str()), (StatusCode::OK, Some(kind)), "{ev}");
    }
}
