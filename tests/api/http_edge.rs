//! The HTTP edge as a client meets it: timeouts and the connection cap, one error shape for
//! malformed bodies on every write route, paging limits and unknown list parameters, 503 when the
//! database is gone, and an
//! OpenAPI document a generated client can use.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestApp, assert_error, eventually, send, spawn_app, spawn_app_with};

/// Reads until the server closes the connection (EOF or reset); what it sent before.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_after_the_header_read_timeout() {
    let app = spawn_app_with(|s| s.server.header_read_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(app.app.addr).await.unwrap();
    // A request head that never ends.
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a").await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut stream))
        .await
        .expect("the server closes a connection whose headers never complete");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "closed before the timeout: {waited:?}");
    assert!(waited < Duration::from_secs(5), "closed long after the 1 s timeout: {waited:?}");
    // hyper answers 408 or just closes; either way no handler ran.
    let text = String::from_utf8_lossy(&answer);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let app = spawn_app_with(|s| s.server.header_read_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(app.app.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut stream))
        .await
        .expect("an idle keep-alive connection is closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_stalled_body_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|s| s.server.idle_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(app.app.addr).await.unwrap();
    let head = format!(
        "POST /v1/tenants/{}/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":",
        app.tenant, app.admin
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), read_until_closed(&mut stream))
        .await
        .expect("a connection whose body stops arriving is closed");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "{waited:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_get_503_in_the_error_shape() {
    let app = spawn_app_with(|s| s.server.max_connections = 2).await;
    // Two connections take the two slots (the listener accepts in order).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.app.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        held.push(s);
    }
    let mut third = TcpStream::connect(app.app.addr).await.unwrap();
    third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = String::from_utf8(read_until_closed(&mut third).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "unavailable");

    // A slot freed is a slot served again.
    drop(held.pop());
    eventually(5, || async {
        let (s, _) = send(reqwest::Client::new().get(app.url("/healthz"))).await;
        (s == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn trailing_data_after_the_json_value_is_a_400() {
    let app = spawn_app().await;
    let path = format!("/v1/tenants/{}/tokens", app.tenant);
    for body in [r#"{"name":"t","role":"auditor"} xyz"#, r#"{"name":"t","role":"auditor"}{}"#] {
        let got =
            send(app.request(Method::POST, &path, &app.admin).header("content-type", "application/json").body(body))
                .await;
        assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
    }
    // Trailing whitespace is fine.
    let got = send(
        app.request(Method::POST, &path, &app.admin)
            .header("content-type", "application/json")
            .body("{\"name\":\"t\",\"role\":\"auditor\"} \n"),
    )
    .await;
    assert_eq!(got.0, StatusCode::CREATED, "{}", got.1);
}

#[tokio::test]
async fn publish_answers_413_and_415_in_the_error_shape() {
    let app = spawn_app().await;
    let (s, created) = app.post(&app.consent_configs_path(), &app.admin, crate::helpers::consent_config()).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let path = format!("{}/{}/publish", app.consent_configs_path(), created["id"].as_str().unwrap());
    let big = format!("{{\"requires_reconsent\": false, \"pad\": \"{}\"}}", "x".repeat(70 * 1024));
    let got =
        send(app.request(Method::POST, &path, &app.admin).header("content-type", "application/json").body(big)).await;
    assert_error(&got, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    let got = send(
        app.request(Method::POST, &path, &app.admin)
            .header("content-type", "application/xml")
            .body("<requires_reconsent>true</requires_reconsent>"),
    )
    .await;
    assert_error(&got, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None);
    let got = send(
        app.request(Method::POST, &path, &app.admin)
            .header("content-type", "application/json")
            .body(r#"{"requires_reconsent": true} xyz"#),
    )
    .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
    // No body at all still publishes.
    let (s, published) = send(app.request(Method::POST, &path, &app.admin)).await;
    assert_eq!(s, StatusCode::OK, "{published}");
}

#[tokio::test]
async fn an_out_of_range_limit_is_a_400_naming_limit_on_every_paged_route() {
    let app = spawn_app().await;
    for route in ["/deliveries", "/audit-log", "/consent-records"] {
        for limit in ["0", "501", "9223372036854775808", "18446744073709551616", "-1", "ten", ""] {
            let path = format!("/v1/tenants/{}{route}?limit={limit}", app.tenant);
            let got = send(app.request(Method::GET, &path, &app.auditor)).await;
            assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", Some("limit"));
        }
        let path = format!("/v1/tenants/{}{route}?limit=500", app.tenant);
        let (s, body) = send(app.request(Method::GET, &path, &app.auditor)).await;
        assert_eq!(s, StatusCode::OK, "{route}: {body}");
    }
}

/// Makes the running app's database unreachable. PostgreSQL: the database is dropped under the
/// app, its sessions terminated. SQLite: an embedded file does not go away under open handles;
/// closing the pool is what the request path then sees (every connection attempt fails).
async fn take_the_database_away(app: &TestApp) {
    match std::env::var("TEST_DATABASE_URL") {
        Ok(server) => {
            use sea_orm::ConnectionTrait;
            let name = url::Url::parse(&app.app.state.settings.database.url)
                .unwrap()
                .path()
                .trim_start_matches('/')
                .to_string();
            let admin = sea_orm::Database::connect(&server).await.unwrap();
            admin.execute_unprepared(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
            admin.close().await.ok();
        }
        Err(_) => app.app.state.db.clone().close().await.unwrap(),
    }
}

#[tokio::test]
async fn requests_answer_503_with_retry_after_when_the_database_is_gone() {
    let app = spawn_app().await;
    let tokens = format!("/v1/tenants/{}/tokens", app.tenant);
    let (s, _) = app.get(&tokens, &app.admin).await;
    assert_eq!(s, StatusCode::OK);
    take_the_database_away(&app).await;
    for (method, path, body) in [
        (Method::GET, tokens.clone(), None),
        (Method::POST, tokens.clone(), Some(json!({"name": "x", "role": "admin"}))),
        (Method::GET, "/readyz".to_string(), None),
    ] {
        let mut req = app.request(method.clone(), &path, &app.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "unavailable", "{body}");
        assert!(retry.is_some_and(|r| r.parse::<u32>().is_ok_and(|n| n >= 1)), "{method} {path}: Retry-After");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("cgtest_") && !message.contains("sqlx"), "no internals: {message}");
    }
    // The process is still serving.
    let (s, _) = send(reqwest::Client::new().get(app.url("/healthz"))).await;
    assert_eq!(s, StatusCode::OK);
}

#[test]
fn human_logs_have_no_colour_codes_when_not_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .env("RUST_LOG", "info")
        .env("CONSENTGATE__DATABASE__URL", format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display()))
        .env("CONSENTGATE__LOG__FORMAT", "human")
        .args(["migrate"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFO"), "migrations log at INFO: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI escape codes in a pipe: {err:?}");
}

/// Every `$ref` in the document, as `#/components/schemas/Name`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r.clone());
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_is_consistent() {
    let app = spawn_app().await;
    let (s, doc) = send(reqwest::Client::new().get(app.url("/v1/openapi.json"))).await;
    assert_eq!(s, StatusCode::OK);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in &all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(schemas.contains_key(name), "$ref {r} points to no component");
    }
    // Enums are documented with the strings the API reads and writes (a generated client sending
    // `status=Pending` would be refused).
    assert_eq!(schemas["DeliveryStatus"]["enum"], json!(["pending", "delivered", "dropped", "dead"]));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                assert_eq!(p["in"] == "path", in_path, "{method} {path}: parameter {name} is `in: {}`", p["in"]);
            }
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/tenants/") {
                for status in ["400", "404", "503"] {
                    assert!(responses.contains_key(status), "{method} {path} does not document {status}");
                }
            }
            if op.get("requestBody").is_some() {
                for status in ["413", "415", "422"] {
                    assert!(responses.contains_key(status), "{method} {path} does not document {status}");
                }
            }
            if op.get("security").is_some() {
                for status in ["401", "403"] {
                    assert!(responses.contains_key(status), "{method} {path} does not document {status}");
                }
            }
        }
    }
    // Two different types, two different names: provider configs are not documented with the
    // consent config schema.
    assert!(schemas.contains_key("ConsentConfigView") && schemas.contains_key("ProviderConfigView"));
    assert!(!schemas.contains_key("ConfigView"));
    let provider_list = &doc["paths"]["/v1/tenants/{tenant}/analytics/{provider}/configs"]["get"]["responses"]["200"];
    assert!(provider_list.to_string().contains("ProviderConfigView"), "{provider_list}");
    let tenant = doc["paths"]["/v1/tenants/{tenant}/tokens"]["get"]["parameters"][0]["schema"].clone();
    assert_eq!(tenant["pattern"], "^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", "{tenant}");
}

/// Found by schemathesis: a compressed export panicked the stream (polled after its end) and the
/// client got a broken transfer.
#[tokio::test]
async fn a_compressed_export_is_complete() {
    let app = spawn_app().await;
    for encoding in ["gzip", "br"] {
        let path = format!("/v1/tenants/{}/consent-records/export?format=csv", app.tenant);
        // A client that leaves the body compressed (the test client otherwise decompresses gzip
        // itself and drops the header), as a browser's network layer reports it.
        let raw = reqwest::Client::builder().no_proxy().no_gzip().build().unwrap();
        let res = raw
            .get(format!("{}{path}", app.base))
            .bearer_auth(&app.auditor)
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-encoding"], encoding);
        let body = res.bytes().await.expect("the whole export arrives");
        assert!(!body.is_empty());
    }
}

/// Log lines written while a test runs on the current thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// While the database is gone, fifty failing requests are a line or two in the log, not fifty
/// ERRORs (nor a hundred, with the trace layer's own).
#[tokio::test(flavor = "current_thread")]
async fn an_outage_is_logged_once_not_per_request() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // current_thread: the app's tasks run on this thread and see this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = spawn_app().await;
    let tokens = format!("/v1/tenants/{}/tokens", app.tenant);
    take_the_database_away(&app).await;
    for _ in 0..50 {
        let (s, _) = app.get(&tokens, &app.admin).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    }
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    // Each background job (delivery worker, horizon sweep, retention purge) and the pool may say
    // once that the database is gone; none may repeat itself, and requests add nothing.
    let mut per_source = std::collections::BTreeMap::<&str, usize>::new();
    for line in log.lines().filter(|l| l.contains(" WARN ")) {
        let source = line.split(" WARN ").nth(1).and_then(|rest| rest.split(": ").next()).unwrap_or_default();
        *per_source.entry(source).or_default() += 1;
    }
    // sqlx's pool says it once per connection that was checked out when the server went away
    // (on PostgreSQL, the background jobs' connections): bounded by the pool, not by requests.
    let pool_size = app.app.state.settings.database.max_connections as usize;
    let repeated: Vec<_> = per_source
        .iter()
        .filter(|(source, n)| if source.starts_with("sqlx_core::pool") { **n > pool_size } else { **n > 1 })
        .collect();
    assert!(
        errors <= 1 && repeated.is_empty() && per_source.len() <= 5,
        "{errors} ERROR lines, WARN lines per source {per_source:?}, for 50 requests:\n{log}"
    );
}

/// The deliveries and the audit log refuse a parameter they do not know, naming it, rather than
/// answer with everything (`config_id=` is `/consent-records`' spelling; `/deliveries` says
/// `config=`).
#[tokio::test]
async fn an_unknown_list_parameter_is_refused_by_name() {
    let app = spawn_app().await;
    let tenant = format!("/v1/tenants/{}", app.tenant);
    let config = uuid::Uuid::new_v4();
    for (query, field) in [
        (format!("/deliveries?config_id={config}&status=dead"), "config_id"),
        ("/deliveries?stauts=dead".into(), "stauts"),
        ("/audit-log?action=token.create".into(), "action"),
    ] {
        let got = app.get(&format!("{tenant}{query}"), &app.auditor).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", Some(field));
    }
    for known in [format!("/deliveries?config={config}&status=dead&limit=500"), "/audit-log?limit=500".into()] {
        let (s, page) = app.get(&format!("{tenant}{known}"), &app.admin).await;
        assert_eq!(s, StatusCode::OK, "{known}: {page}");
    }
}
