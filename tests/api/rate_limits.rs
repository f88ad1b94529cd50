//! Ingest rate limits (docs/rate-limits.md): per ingest key, per client address (public keys
//! only) and per tenant; in memory per instance, or shared by all instances through Redis (on
//! 127.0.0.1:6379 here and in CI), failing open to the instance's own count when Redis cannot
//! answer. (How fast a revoked key stops working on every instance: `caching.rs`.)

use std::time::Duration;

use consentgate::{
    app::App,
    config::{RateLimitSettings, Settings},
    rate_limit::{Check, IngestLimits, LimitKey},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, send, spawn_app_with},
    site::{self, ORIGIN, create_key, pageview, visitor},
};

const REDIS: &str = "redis://127.0.0.1:6379/0";

/// A second gateway instance on the test app's database, with `configure` applied to a copy of
/// its settings.
async fn second_instance(app: &TestApp, configure: impl FnOnce(&mut Settings)) -> App {
    let mut settings = (*app.app.state.settings).clone();
    configure(&mut settings);
    App::start(settings).await.expect("a second instance starts")
}

/// Posts one event with a secret key to the instance at `base`; returns the status, the body and
/// the `Retry-After` header.
async fn post_secret(app: &TestApp, base: &str, key: &str) -> (StatusCode, Value, Option<u64>) {
    let url = format!("{base}/v1/tenants/{}/events", app.tenant);
    let res = app.http.post(url).bearer_auth(key).json(&pageview(&visitor())).send().await.unwrap();
    let status = res.status();
    let retry = res.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (status, res.json().await.unwrap(), retry)
}

fn rand_octet() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0] % 200
}

async fn post_public(app: &TestApp, key: &str, from: &str) -> (StatusCode, Value) {
    let req = app
        .http
        .post(app.tenant_url("/events"))
        .header("x-ingest-key", key)
        .header("origin", ORIGIN)
        .header("x-forwarded-for", from)
        .json(&pageview(&visitor()));
    send(req).await
}

fn assert_limited(got: &(StatusCode, Value), scope: &str) {
    assert_eq!(got.0, StatusCode::TOO_MANY_REQUESTS, "{}", got.1);
    assert_eq!(got.1["error"]["code"], "rate_limited", "{}", got.1);
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(message.contains(scope), "{message} names the {scope} limit");
}

/// Per client address for public keys only, per tenant for everything; a refused request uses up
/// none of the limits it met.
#[tokio::test]
async fn client_address_and_tenant_limits() {
    let app = spawn_app_with(|s| {
        s.server.client_ip_header = "X-Forwarded-For".into();
        s.rate_limit.per_ip_per_minute = 2;
        s.rate_limit.per_tenant_per_minute = 6;
    })
    .await;
    let keys = site::site(&app).await;
    let v1 = "203.0.113.7";
    assert_eq!(post_public(&app, &keys.public_key, v1).await.0, StatusCode::ACCEPTED);
    assert_eq!(post_public(&app, &keys.public_key, v1).await.0, StatusCode::ACCEPTED);
    let refused = post_public(&app, &keys.public_key, v1).await;
    assert_limited(&refused, "client ip");
    // A client writing addresses of its own before the one the proxy appended gains nothing.
    let forged = format!("198.51.100.{}, {v1}", 1 + rand_octet());
    assert_limited(&post_public(&app, &keys.public_key, &forged).await, "client ip");
    // Another visitor (IPv6: counted per /64) has its own budget.
    assert_eq!(post_public(&app, &keys.public_key, "2001:db8:0:1::1").await.0, StatusCode::ACCEPTED);
    assert_eq!(post_public(&app, &keys.public_key, "2001:db8:0:1::2").await.0, StatusCode::ACCEPTED);
    assert_limited(&post_public(&app, &keys.public_key, "2001:db8:0:1:ffff::3").await, "client ip");

    // The site's server posts for many visitors from one address: no address limit. The tenant
    // has used 4 of 6 (the refused requests took nothing): two more, then the tenant's limit.
    for _ in 0..2 {
        let (s, body, _) = post_secret(&app, &app.base, &keys.secret_key).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    }
    let (s, body, retry) = post_secret(&app, &app.base, &keys.secret_key).await;
    assert_limited(&(s, body), "tenant");
    // 6 per minute: one back every 10 s.
    assert!(retry.is_some_and(|r| (1..=10).contains(&r)), "{retry:?}");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for scope in ["client_ip", "tenant"] {
        assert!(metrics.contains(&format!("consentgate_rate_limited_total{{scope=\"{scope}\"}}")), "{metrics}");
    }
}

/// A client that reaches the gateway around its proxy (from a peer outside
/// `server.trusted_proxies`) cannot choose its address with the header: each post names a new
/// one, and all count as the peer's — and the peer is what the consent record keeps.
#[tokio::test]
async fn the_forwarding_header_is_believed_only_from_a_trusted_proxy() {
    let app = spawn_app_with(|s| {
        s.server.client_ip_header = "X-Forwarded-For".into();
        s.server.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()];
        s.rate_limit.per_ip_per_minute = 2;
    })
    .await;
    let keys = site::site(&app).await;
    for n in 1..=2 {
        let got = post_public(&app, &keys.public_key, &format!("203.0.113.{n}")).await;
        assert_eq!(got.0, StatusCode::ACCEPTED, "{}", got.1);
    }
    assert_limited(&post_public(&app, &keys.public_key, "203.0.113.3").await, "client ip");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("consentgate_client_ip_header_ignored_total 3"), "{metrics}");

    app.publish_consent_config(json!({})).await;
    let (s, _) = send(
        app.public(reqwest::Method::POST, &app.consent_path())
            .header("x-forwarded-for", "203.0.113.9")
            .json(&json!({"visitor_id": "v", "action": "reject_all", "revision": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, records) = app.get(&format!("/v1/tenants/{}/consent-records", app.tenant), &app.auditor).await;
    assert_eq!(records["items"][0]["ip_truncated"], "127.0.0.0", "{records}");
}

/// The configured per-key default applies to keys without a limit of their own; a key's own
/// limit wins.
#[tokio::test]
async fn the_default_key_limit_and_a_keys_own() {
    let app = spawn_app_with(|s| s.rate_limit.per_key_per_minute = 1).await;
    let keys = site::site(&app).await;
    let own = create_key(&app, json!({"kind": "secret", "name": "bulk", "rate_limit_per_minute": 3})).await;
    let own = own["key"].as_str().unwrap();
    assert_eq!(post_secret(&app, &app.base, &keys.secret_key).await.0, StatusCode::ACCEPTED);
    let (s, body, _) = post_secret(&app, &app.base, &keys.secret_key).await;
    assert_limited(&(s, body), "ingest key");
    for _ in 0..3 {
        assert_eq!(post_secret(&app, &app.base, own).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(post_secret(&app, &app.base, own).await.0, StatusCode::TOO_MANY_REQUESTS);
}

/// Two instances with a key allowing 3 a minute: through Redis they share the 3; in memory each
/// allows its own 3 (the documented N × limit).
#[tokio::test]
async fn instances_share_limits_through_redis_and_not_without() {
    for shared in [true, false] {
        let app = spawn_app_with(|s| {
            if shared {
                s.rate_limit.redis_url = REDIS.into();
            }
        })
        .await;
        let other = second_instance(&app, |_| {}).await;
        let b = other.base_url();
        let key = create_key(&app, json!({"kind": "secret", "name": "k", "rate_limit_per_minute": 3})).await;
        let key = key["key"].as_str().unwrap();
        let statuses = [
            post_secret(&app, &app.base, key).await.0,
            post_secret(&app, &b, key).await.0,
            post_secret(&app, &app.base, key).await.0,
            post_secret(&app, &b, key).await.0,
            post_secret(&app, &app.base, key).await.0,
        ];
        let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
        if shared {
            assert_eq!(accepted, 3, "one budget for both instances: {statuses:?}");
            let (s, _, retry) = post_secret(&app, &b, key).await;
            assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
            assert!(retry.is_some_and(|r| (1..=20).contains(&r)), "3 a minute: one back every 20 s: {retry:?}");
        } else {
            assert_eq!(accepted, 5, "each instance counts its own 3: {statuses:?}");
        }
        other.stop().await.unwrap();
    }
}

/// Redis refused (a closed port) or silent (accepts, never answers): requests are never refused
/// for it. Each instance counts on its own meanwhile, and the fallback is counted in /metrics.
#[tokio::test]
async fn an_unreachable_redis_fails_open_to_the_instances_own_count() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // A "Redis" that accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    for addr in [closed, silent_addr] {
        let app = spawn_app_with(|s| {
            s.rate_limit.redis_url = format!("redis://{addr}/0");
            s.rate_limit.redis_timeout_ms = 200;
        })
        .await;
        let key = create_key(&app, json!({"kind": "secret", "name": "k", "rate_limit_per_minute": 2})).await;
        let key = key["key"].as_str().unwrap();
        for _ in 0..2 {
            let (s, body, _) = post_secret(&app, &app.base, key).await;
            assert_eq!(s, StatusCode::ACCEPTED, "Redis at {addr} is down: the request goes through: {body}");
        }
        let (s, body, _) = post_secret(&app, &app.base, key).await;
        assert_limited(&(s, body), "ingest key");
        let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let fallbacks = metrics
            .lines()
            .find_map(|l| l.strip_prefix("consentgate_rate_limit_redis_fallbacks_total "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        assert!(fallbacks.is_some_and(|n| n >= 3.0), "{metrics}");
    }
    held.abort();
}

/// The Redis script itself: a limit's burst, then the wait; a request refused by one limit takes
/// nothing from the others.
#[tokio::test]
async fn the_redis_counter_takes_from_every_limit_or_none() {
    let limits = IngestLimits::new(&RateLimitSettings { redis_url: REDIS.into(), ..Default::default() }).unwrap();
    let (key, tenant) = (LimitKey::IngestKey(Uuid::new_v4()), LimitKey::Tenant(Uuid::new_v4()));
    let both = [Check { key: key.clone(), per_minute: 5 }, Check { key: tenant.clone(), per_minute: 2 }];
    assert_eq!(limits.check(&both).await, Ok(()));
    assert_eq!(limits.check(&both).await, Ok(()));
    let refused = limits.check(&both).await.unwrap_err();
    assert_eq!(refused.scope, "tenant");
    assert!(refused.wait > Duration::from_secs(29) && refused.wait <= Duration::from_secs(30), "{refused:?}");
    let key_only = [Check { key, per_minute: 5 }];
    for _ in 0..3 {
        assert_eq!(limits.check(&key_only).await, Ok(()), "the refused request took nothing from the key");
    }
    let refused = limits.check(&key_only).await.unwrap_err();
    assert!(refused.wait > Duration::from_secs(11) && refused.wait <= Duration::from_secs(12), "{refused:?}");
}
