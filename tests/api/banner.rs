//! The banner script as a site's page loads it, and the demo.

use reqwest::{StatusCode, header};
use serde_json::json;

use crate::helpers::{assert_error, send, spawn_app};

#[tokio::test]
async fn banner_js_embeds_the_active_config_with_caching_headers() {
    let app = spawn_app().await;
    let url = app.tenant_url("/banner.js");
    assert_error(&send(app.http.get(&url)).await, StatusCode::NOT_FOUND, "not_found", None);

    let id = app.publish_consent_config(json!({})).await;
    let res = app.http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/javascript; charset=utf-8");
    assert!(res.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("stale-while-revalidate"));
    let etag = res.headers()[header::ETAG].to_str().unwrap().to_string();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    let body = res.text().await.unwrap();
    assert!(body.contains(&format!("\"config_id\":\"{id}\"")), "the active config is embedded");
    assert!(body.contains("\"revision\":1"));

    // Revalidation: 304 without a body.
    let res = app.http.get(&url).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(res.headers()[header::ETAG].to_str().unwrap(), etag);
    assert!(res.text().await.unwrap().is_empty());

    // A new revision is a new script.
    app.publish(&id, false).await;
    let res = app.http.get(&url).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_ne!(res.headers()[header::ETAG].to_str().unwrap(), etag);
    assert!(res.text().await.unwrap().contains("\"revision\":2"));
}

#[tokio::test]
async fn banner_js_is_served_compressed() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let res = raw.get(app.tenant_url("/banner.js")).header(header::ACCEPT_ENCODING, "gzip").send().await.unwrap();
    assert_eq!(res.headers()[header::CONTENT_ENCODING], "gzip");
    let compressed = res.bytes().await.unwrap().len();
    assert!(compressed < 6144, "{compressed} B gzip");
}

#[tokio::test]
async fn texts_holding_markup_cannot_end_the_script() {
    let app = spawn_app().await;
    let hostile = "</script><img src=x onerror=alert(1)> \u{2028} <!--";
    app.publish_consent_config(json!({"texts": {"en": {"title": hostile}}})).await;
    let body = app.http.get(app.tenant_url("/banner.js")).send().await.unwrap().text().await.unwrap();
    for bad in ["</script>", "<img", "<!--", "\u{2028}"] {
        assert!(!body.contains(bad), "{bad:?} reached the script verbatim");
    }
    assert!(body.contains("\\u003c/script\\u003e\\u003cimg src=x onerror=alert(1)\\u003e \\u2028 \\u003c!--"));
}

#[tokio::test]
async fn the_demo_seed_is_idempotent_and_serves_a_page() {
    let app = spawn_app().await;
    assert_error(&send(app.http.get(app.url("/demo"))).await, StatusCode::NOT_FOUND, "not_found", None);
    let first = consentgate::demo::seed(&app.db, &app.base).await.unwrap();
    let second = consentgate::demo::seed(&app.db, &app.base).await.unwrap();
    assert_eq!(first.tenant.id, second.tenant.id);
    use secrecy::ExposeSecret;
    let (old, new) = (first.admin_token.expose_secret(), second.admin_token.expose_secret());
    assert_eq!(
        app.get("/v1/tenants/demo/tokens", old).await.0,
        StatusCode::UNAUTHORIZED,
        "the old demo token is revoked"
    );
    let (s, configs) = app.get("/v1/tenants/demo/analytics/cookie-consent/configs", new).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(configs["items"].as_array().map(Vec::len).unwrap_or_else(|| configs.as_array().unwrap().len()), 1);

    let res = app.http.get(app.url("/demo")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = res.text().await.unwrap();
    assert!(page.contains("/v1/tenants/demo/banner.js"));
    assert!(page.contains("data-consent-category=\"analytics\""));
    assert!(page.contains("data-key=\"pk_"), "the tracker gets the demo's public key");
    let (_, keys) = app.get("/v1/tenants/demo/ingest-keys", new).await;
    assert_eq!(keys.as_array().map(Vec::len).unwrap_or_else(|| keys["items"].as_array().unwrap().len()), 1, "{keys}");
    let banner = app.http.get(app.url("/v1/tenants/demo/banner.js")).send().await.unwrap();
    assert_eq!(banner.status(), StatusCode::OK, "the demo tenant has an active config");
}
