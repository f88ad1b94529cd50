//! The malformed-input corpus against a real `consentgate serve` process: every write route of
//! the OpenAPI document gets truncated JSON, invalid UTF-8, NUL, 10,000-deep nesting, 1e400,
//! trailing data, a wrong Content-Type, a 10 MB body and 300 headers. Each answer is a 4xx in the
//! documented error shape (or, where hyper refuses a request before any handler runs, a bare
//! 4xx: see docs/http-edge.md); the process stays up and its memory stays flat.

use std::process::{Child, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    cli::consentgate,
    helpers::{TestDatabase, eventually},
};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Resident memory of the server process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// One malformed request body: a name, its Content-Type and bytes.
fn corpus() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(10 * 1024 * 1024));
    vec![
        ("truncated", "application/json", br#"{"name":"t","role":"adm"#.to_vec()),
        ("invalid UTF-8", "application/json", b"{\"name\":\"\xff\xfe\xfd\",\"role\":\"admin\"}".to_vec()),
        ("NUL escape", "application/json", br#"{"name":"a\u0000b","role":"admin","event_name":"\u0000"}"#.to_vec()),
        ("raw NUL", "application/json", b"{\"name\":\"a\x00b\"}".to_vec()),
        ("10,000-deep array", "application/json", deep_array.into_bytes()),
        ("10,000-deep object", "application/json", deep_object.into_bytes()),
        ("1e400", "application/json", br#"{"name":1e400,"revision":1e400,"event_name":1e400}"#.to_vec()),
        ("trailing data", "application/json", br#"{"name":"t","role":"admin"} xyz"#.to_vec()),
        ("not JSON", "application/json", b"name=t&role=admin".to_vec()),
        ("wrong Content-Type", "application/x-www-form-urlencoded", b"name=t&role=admin".to_vec()),
        ("10 MB", "application/json", big.into_bytes()),
    ]
}

/// Every write operation of the document, with its path filled in.
fn write_routes(doc: &Value, tenant: &str) -> Vec<(Method, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["post", "put", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let path = path
                .replace("{tenant}", tenant)
                .replace("{provider}", "plausible")
                .replace("{id}", "00000000-0000-0000-0000-000000000001")
                .replace("{revision}", "1")
                .replace("{visitor_id}", "corpus-visitor");
            assert!(!path.contains('{'), "a path parameter the corpus does not fill: {path}");
            out.push((method.to_uppercase().parse().unwrap(), path));
        }
    }
    assert!(out.len() >= 10, "write routes found: {out:?}");
    out
}

#[track_caller]
fn assert_shape(what: &str, status: StatusCode, body: &[u8]) {
    assert!(status.is_client_error(), "{what}: {status}: {}", String::from_utf8_lossy(body));
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("{what}: {status}: not the JSON error shape: {}", String::from_utf8_lossy(body)));
    let e = &v["error"];
    assert!(e["code"].is_string() && e["message"].is_string() && e.get("field").is_some(), "{what}: {v}");
}

#[tokio::test]
async fn malformed_input_on_every_write_route_is_a_4xx_in_the_error_shape() {
    let db = TestDatabase::create().await;
    let out = consentgate(&db.url).args(["tenant", "create", "corpus"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let admin = serde_json::from_slice::<Value>(&out.stdout).unwrap()["admin_token"].as_str().unwrap().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = consentgate(&db.url)
        .env("CONSENTGATE__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("CONSENTGATE__DELIVERY__ENABLED", "false")
        .env("CONSENTGATE__LOG__LEVEL", "warn")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server { child, base: format!("http://127.0.0.1:{port}") };
    // A fresh connection per request: a route that takes no body answers without reading it, and
    // hyper then closes the connection, which a pooled client would try to reuse.
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
    eventually(30, || async { http.get(format!("{}/healthz", server.base)).send().await.ok().map(|_| ()) }).await;
    let doc: Value = http.get(format!("{}/v1/openapi.json", server.base)).send().await.unwrap().json().await.unwrap();
    // A secret ingest key, so the events routes read their bodies instead of stopping at 401.
    let key: Value = http
        .post(format!("{}/v1/tenants/corpus/ingest-keys", server.base))
        .bearer_auth(&admin)
        .json(&json!({"kind": "secret", "name": "corpus"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = key["key"].as_str().or(key["secret"].as_str()).unwrap_or_else(|| panic!("{key}")).to_string();
    let routes = write_routes(&doc, "corpus");
    let corpus = corpus();
    let mut rss = Vec::new();
    for round in 0..3 {
        for (method, path) in &routes {
            let token = if path.contains("/events") { &secret } else { &admin };
            let url = format!("{}{path}", server.base);
            for (name, content_type, body) in &corpus {
                let what = format!("round {round}: {method} {path}: {name}");
                let res = http
                    .request(method.clone(), &url)
                    .bearer_auth(token)
                    .header("content-type", *content_type)
                    .body(body.clone())
                    .send()
                    .await;
                match res {
                    Ok(res) => {
                        let status = res.status();
                        match res.bytes().await {
                            Ok(bytes) => assert_shape(&what, status, &bytes),
                            // The answer's head (a 4xx: 413, or 404/401 from a route that refuses
                            // before reading the body) arrived, then the connection closed under the
                            // client still sending: the body (the JSON error) can be lost with it.
                            Err(e) if *name == "10 MB" && status.is_client_error() => {
                                assert!(e.is_body() || e.is_request() || e.is_decode(), "{what}: {e:?}")
                            }
                            Err(e) => panic!("{what}: {status}: the body did not arrive: {e:?}"),
                        }
                    }
                    // The 413 is written as soon as the limit is passed, and the connection closed
                    // while a client may still be sending the rest: it can see a reset instead.
                    Err(e) if *name == "10 MB" => assert!(e.is_request() || e.is_body(), "{what}: {e:?}"),
                    Err(e) => panic!("{what}: {e:?}"),
                }
            }
            // 300 headers: hyper refuses the request head itself (431), before any handler.
            let mut req = http.request(method.clone(), &url).bearer_auth(token).body("{}");
            for i in 0..300 {
                req = req.header(format!("x-h{i}"), "v");
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{method} {path}: 300 headers");
        }
        assert!(server.is_running(), "the server process died in round {round}");
        rss.push(server.rss_kib());
    }
    let (s, _) = crate::helpers::send(http.get(format!("{}/readyz", server.base))).await;
    assert_eq!(s, StatusCode::OK, "still serving");
    // Memory flat: the later rounds do not grow the process beyond the first round's high-water mark
    // by more than a few MiB (allocator noise), whatever was thrown at it.
    eprintln!(
        "corpus: {} write routes × {} inputs × 3 rounds; server RSS after each round (KiB): {rss:?}",
        routes.len(),
        corpus.len() + 1
    );
    let growth = rss[2].saturating_sub(rss[0]);
    assert!(growth < 16 * 1024, "resident memory grew by {growth} KiB over two rounds: {rss:?}");
}
