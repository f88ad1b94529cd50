//! Credential references resolved: env and file through the delivery path and `check`, Azure
//! Key Vault through the real SDK against the fake Key Vault and token endpoint (HTTPS, the test
//! CA), rotation without restart, and values never shown anywhere.

use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use consentgate::{
    config::Settings,
    secrets::settings::{AzureCredential, KeyVaultSettings},
};
use reqwest::StatusCode;
use sea_orm::{FromQueryResult, JsonValue, Statement};
use serde_json::{Value, json};

use crate::{
    fakes::{FakeProviders, SITE},
    helpers::{TestApp, eventually, spawn_app_with},
    site::{self, configs_path, track, visitor},
};

const VAULT: &str = "gatewayvault";

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_else(|| panic!("no id in {v}")).to_string()
}

/// A file with `content`, mode 600, in `dir`.
fn secret_file(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_string_lossy().into_owned()
}

/// The HTTP client the gateway reaches Azure with in these tests: trusts the test CA and maps
/// the vault's and Entra's names to the fake — nothing else differs from production.
fn azure_client(fakes: &FakeProviders) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(include_bytes!("../fixtures/keyvault-test-ca.pem")).unwrap();
    let fake = SocketAddr::from(([127, 0, 0, 1], fakes.keyvault_port));
    reqwest::Client::builder()
        .no_proxy()
        .tls_certs_merge([ca])
        .resolve(&format!("{VAULT}.vault.azure.net"), fake)
        .resolve("login.microsoftonline.com", fake)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn keyvault_settings(fakes: &FakeProviders, credential: AzureCredential) -> KeyVaultSettings {
    KeyVaultSettings {
        credential,
        tenant_id: "fake-tenant".into(),
        max_retries: 1,
        http_client: Some(azure_client(fakes)),
        ..Default::default()
    }
}

async fn app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.delivery.auth_failures_before_error = 2;
        configure(s)
    })
    .await
}

/// The delivery of `event_id` to `config_id`, once the app's own delivery worker (these tests run
/// it, with its resolver cache and auth retries) has brought it to a state `reached` accepts.
async fn delivery_once(app: &TestApp, event_id: &str, config_id: &str, reached: impl Fn(&Value) -> bool) -> Value {
    eventually(10, || async {
        let (_, page) = app
            .get(&format!("/v1/tenants/{}/deliveries?event={event_id}&config={config_id}", app.tenant), &app.admin)
            .await;
        page["items"].as_array().and_then(|i| i.first()).filter(|d| reached(d)).cloned()
    })
    .await
}

/// The delivery of `event_id` to `config_id`, once delivered.
async fn delivered(app: &TestApp, event_id: &str, config_id: &str) -> Value {
    delivery_once(app, event_id, config_id, |d| d["status"] == "delivered").await
}

async fn check(app: &TestApp, provider: &str, config: &Value) -> (StatusCode, Value) {
    app.post(&format!("{}/{}/check", configs_path(app, provider), id(config)), &app.admin, json!({})).await
}

fn reference<'a>(report: &'a Value, field: &str) -> &'a Value {
    report["references"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["field"] == format!("credentials.{field}")))
        .unwrap_or_else(|| panic!("no {field} in {report}"))
}

/// A Key Vault app with a client-secret credential whose secret is in a file.
async fn client_secret_app(fakes: &FakeProviders, dir: &tempfile::TempDir, client_secret: &str) -> TestApp {
    let file = secret_file(dir, "azure-client-secret", &format!("{client_secret}\n"));
    let kv = KeyVaultSettings {
        client_id: "gateway-app".into(),
        client_secret_ref: format!("file:{file}"),
        ..keyvault_settings(fakes, AzureCredential::ClientSecret)
    };
    app_with(|s| s.secrets.keyvault = kv).await
}

#[tokio::test]
async fn a_keyvault_reference_is_resolved_through_the_sdk_with_a_client_secret_and_used() {
    let fakes = FakeProviders::start().await;
    let dir = tempfile::tempdir().unwrap();
    fakes
        .keyvault(json!({"secrets": {"plausible-key": "kv-value-one"},
                         "clients": [{"tenant": "fake-tenant", "client_id": "gateway-app", "secret": "app-secret"}]}))
        .await;
    fakes.behaviour(json!({"plausible": {"api_keys": ["kv-value-one"]}})).await;
    let app = client_secret_app(&fakes, &dir, "app-secret").await;
    let reference_text = format!("keyvault://{VAULT}.vault.azure.net/secrets/plausible-key");
    let config = site::plausible(&app, &fakes, json!({"credentials": {"api_key_ref": reference_text}})).await;

    let (s, report) = check(&app, "plausible", &config).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let r = reference(&report, "api_key_ref");
    assert_eq!((r["status"].as_str(), r["resolved"].as_bool()), (Some("ok"), Some(true)), "{report}");
    assert_eq!(r["accepted_by_provider"], true, "{report}");
    assert_eq!(r["reference"], reference_text.as_str());

    // The SDK's own path: the unauthenticated probe, the challenge, the token, the GET.
    let asked = fakes.keyvault_requests().await;
    let summary: Vec<(String, u64, bool)> = asked
        .iter()
        .map(|a| (a["path"].as_str().unwrap().to_string(), a["status"].as_u64().unwrap(), a["authorized"] == true))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("/secrets/plausible-key/".into(), 401, false),
            ("/fake-tenant/oauth2/v2.0/token".into(), 200, false),
            ("/secrets/plausible-key/".into(), 200, true),
        ],
        "{asked:?}"
    );
    assert_eq!(asked[0]["host"], format!("{VAULT}.vault.azure.net"));

    // The delivery path resolves it too (from the cache: no new vault request).
    let keys = site::site(&app).await;
    let (s, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{accepted}");
    delivered(&app, &id(&accepted), &id(&config)).await;
    assert_eq!(fakes.keyvault_requests().await.len(), 3);

    // Rotated in the vault: `check` reads the new version at once, and the provider takes it.
    fakes.keyvault(json!({"secrets": {"plausible-key": "kv-value-two"}})).await;
    fakes.behaviour(json!({"plausible": {"api_keys": ["kv-value-two"]}})).await;
    let (_, report) = check(&app, "plausible", &config).await;
    assert_eq!(reference(&report, "api_key_ref")["accepted_by_provider"], true, "{report}");
    assert!(!report.to_string().contains("kv-value"), "{report}");
}

#[tokio::test]
async fn a_pinned_version_and_workload_identity_work_too() {
    let fakes = FakeProviders::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = secret_file(&dir, "federated-token", "federated-jwt-from-kubernetes");
    let made = fakes
        .keyvault(json!({"secrets": {"umami-key": "first-version"},
                         "federated": [{"tenant": "fake-tenant", "client_id": "gateway-wi", "token": "federated-jwt-from-kubernetes"}]}))
        .await;
    let first = made["versions"]["umami-key"][0].as_str().unwrap().to_string();
    fakes.keyvault(json!({"secrets": {"umami-key": "second-version"}})).await;
    fakes.behaviour(json!({"umami": {"api_keys": ["first-version"]}})).await;
    let kv = KeyVaultSettings {
        client_id: "gateway-wi".into(),
        token_file: token_file.clone(),
        ..keyvault_settings(&fakes, AzureCredential::WorkloadIdentity)
    };
    let app = app_with(|s| s.secrets.keyvault = kv).await;
    let pinned = format!("keyvault://{VAULT}.vault.azure.net/secrets/umami-key/{first}");
    let config = site::umami(&app, &fakes, json!({"credentials": {"api_key_ref": pinned}})).await;
    let (_, report) = check(&app, "umami", &config).await;
    let r = reference(&report, "api_key_ref");
    assert_eq!((r["status"].as_str(), r["accepted_by_provider"].as_bool()), (Some("ok"), Some(true)), "{report}");
    let asked = fakes.keyvault_requests().await;
    assert!(
        asked.iter().any(|a| a["path"] == format!("/secrets/umami-key/{first}") && a["status"] == 200),
        "{asked:?}"
    );
}

#[tokio::test]
async fn keyvault_failures_name_the_reference_and_the_reason_and_throttling_is_bounded() {
    let fakes = FakeProviders::start().await;
    let dir = tempfile::tempdir().unwrap();
    fakes
        .keyvault(json!({"secrets": {"present": "a-value"},
                         "clients": [{"tenant": "fake-tenant", "client_id": "gateway-app", "secret": "app-secret"}]}))
        .await;
    let app = client_secret_app(&fakes, &dir, "app-secret").await;
    let kv = |name: &str| format!("keyvault://{VAULT}.vault.azure.net/secrets/{name}");
    let config = site::umami(
        &app,
        &fakes,
        json!({"credentials": {"api_key_ref": kv("missing"),
                               "username_ref": kv("present/0123456789abcdef0123456789abcdef")}}),
    )
    .await;
    let (_, report) = check(&app, "umami", &config).await;
    let missing = reference(&report, "api_key_ref");
    assert_eq!(missing["status"], "failed");
    assert!(missing["detail"].as_str().unwrap().contains("has no secret missing (404 SecretNotFound)"), "{report}");
    let version = reference(&report, "username_ref");
    assert!(version["detail"].as_str().unwrap().contains("404"), "{report}");

    // The identity lacks the role.
    fakes.keyvault(json!({"forbidden": true})).await;
    let config = site::plausible(&app, &fakes, json!({"credentials": {"api_key_ref": kv("present")}})).await;
    let (_, report) = check(&app, "plausible", &config).await;
    let detail = reference(&report, "api_key_ref")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("403") && detail.contains("Key Vault Secrets User"), "{detail}");

    // Throttled: the SDK retries once (max_retries = 1), honouring Retry-After, then gives up.
    fakes.keyvault(json!({"forbidden": false, "fail_next": 5, "status": 429, "retry_after": "0"})).await;
    let before = fakes.keyvault_requests().await.len();
    let started = Instant::now();
    let (_, report) = check(&app, "plausible", &config).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let detail = reference(&report, "api_key_ref")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("throttling") && detail.contains("429"), "{detail}");
    let throttled = fakes.keyvault_requests().await[before..].iter().filter(|a| a["status"] == 429).count();
    assert_eq!(throttled, 2, "one try and one retry");
    // Once throttling ends, the next check succeeds.
    fakes.keyvault(json!({"fail_next": 0, "status": null})).await;
    let (_, report) = check(&app, "plausible", &config).await;
    assert_eq!(reference(&report, "api_key_ref")["resolved"], true, "{report}");
}

#[tokio::test]
async fn a_wrong_client_secret_is_reported_without_any_secret() {
    let fakes = FakeProviders::start().await;
    let dir = tempfile::tempdir().unwrap();
    fakes
        .keyvault(json!({"secrets": {"k": "v"},
                         "clients": [{"tenant": "fake-tenant", "client_id": "gateway-app", "secret": "the-right-one"}]}))
        .await;
    let app = client_secret_app(&fakes, &dir, "a-wrong-client-secret").await;
    let config = site::plausible(
        &app,
        &fakes,
        json!({"credentials": {"api_key_ref": format!("keyvault://{VAULT}.vault.azure.net/secrets/k")}}),
    )
    .await;
    let (_, report) = check(&app, "plausible", &config).await;
    let detail = reference(&report, "api_key_ref")["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("could not get an Azure token"), "{detail}");
    assert!(!report.to_string().contains("a-wrong-client-secret"), "{report}");
}

/// On a gateway shared by tenants (the default scope) a tenant's admin names only the tenant's own
/// secrets: a reference to the gateway's database URL (which `check` would send to the
/// admin's own instance_url) is refused on save, one stored anyway is never looked up, and a file
/// in the tenant's directory under `secrets.file_root` works.
#[tokio::test]
async fn a_tenant_names_only_its_own_secrets() {
    use std::os::unix::fs::PermissionsExt;

    use sea_orm::{ActiveModelTrait, Set};
    let fakes = FakeProviders::start().await;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("acme")).unwrap();
    let own = root.path().join("acme").join("plausible-key");
    std::fs::write(&own, "tenant-key\n").unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o600)).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let theirs = secret_file(&outside, "gateway-secret", "gateway-secret-value\n");
    let root_path = root.path().to_string_lossy().into_owned();
    let app = app_with(|s| {
        s.secrets.scope = consentgate::secrets::scope::Scope::Tenant;
        s.secrets.file_root = root_path;
    })
    .await;
    let keys = site::site(&app).await;

    for reference in ["env:CONSENTGATE__DATABASE__URL".to_string(), format!("file:{theirs}")] {
        let got = app
            .post(
                &configs_path(&app, "plausible"),
                &app.admin,
                json!({"display_name": "x", "site_id": SITE, "credentials": {"api_key_ref": reference}}),
            )
            .await;
        crate::helpers::assert_error(
            &got,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("credentials.api_key_ref"),
        );
        assert!(got.1["error"]["message"].as_str().unwrap().contains("not tenant acme's"), "{}", got.1);
    }

    // The tenant's own file: used.
    fakes.behaviour(json!({"plausible": {"api_keys": ["tenant-key"]}})).await;
    let config =
        site::plausible(&app, &fakes, json!({"credentials": {"api_key_ref": format!("file:{}", own.display())}})).await;
    let (_, event) = track(&app, &keys, site::pageview(&visitor())).await;
    delivered(&app, &id(&event), &id(&config)).await;

    // A reference stored behind the API's back is never looked up: check says why, deliveries wait.
    let row = entity::provider_config::ActiveModel {
        id: Set(id(&config).parse().unwrap()),
        credentials: Set(json!({"api_key_ref": format!("file:{theirs}")})),
        ..Default::default()
    };
    row.update(&app.db).await.unwrap();
    let (s, report) = check(&app, "plausible", &config).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let r = reference(&report, "api_key_ref");
    assert_eq!(r["resolved"], false, "{report}");
    assert!(r["detail"].as_str().unwrap().contains("not tenant acme's"), "{report}");
    assert!(!report.to_string().contains("gateway-secret-value"));
    let sent = fakes.received_by("plausible").await.len();
    let (_, waiting) = track(&app, &keys, site::pageview(&visitor())).await;
    let d = delivery_once(&app, &id(&waiting), &id(&config), |d| d["attempts"].as_i64() >= Some(1)).await;
    assert!(d["last_error"].as_str().unwrap_or_default().contains("not tenant acme's"), "{d}");
    assert_eq!(fakes.received_by("plausible").await.len(), sent, "nothing was sent with it");
}

#[tokio::test]
async fn a_rotated_file_secret_is_used_after_a_401_without_restart() {
    let fakes = FakeProviders::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(&dir, "plausible-key", "first-key\n");
    let app = app_with(|s| s.delivery.auth_failures_before_error = 100).await;
    let keys = site::site(&app).await;
    let config = site::plausible(&app, &fakes, json!({"credentials": {"api_key_ref": format!("file:{file}")}})).await;
    let (_, first) = track(&app, &keys, site::pageview(&visitor())).await;
    delivered(&app, &id(&first), &id(&config)).await;

    // Unchanged value, provider refuses: each attempt is one request (nothing changed to send
    // again with), and the failures count.
    fakes.behaviour(json!({"plausible": {"status": 401}})).await;
    let (_, refused) = track(&app, &keys, site::pageview(&visitor())).await;
    let d = delivery_once(&app, &id(&refused), &id(&config), |d| d["attempts"].as_i64() >= Some(2)).await;
    assert!(d["last_error"].as_str().unwrap_or_default().contains("401"), "{d}");
    let attempts = d["attempts"].as_u64().unwrap() as usize;
    let sent = fakes.received_by("plausible").await.len() - 1;
    // One more may be in flight; resending each refusal would be twice the attempts.
    assert!(sent <= attempts + 1, "{sent} requests for {attempts} attempts");
    fakes.behaviour(json!({"plausible": {"status": null}})).await;
    delivered(&app, &id(&refused), &id(&config)).await;

    // Rotated file, provider refuses the old credential once: looked up again and sent again at once.
    std::fs::write(&file, "second-key\n").unwrap();
    let events_before = fakes.received_by("plausible").await.len();
    fakes.behaviour(json!({"plausible": {"fail_next": 1, "status": 401}})).await;
    let (_, rotated) = track(&app, &keys, site::pageview(&visitor())).await;
    let d = delivered(&app, &id(&rotated), &id(&config)).await;
    assert_eq!(d["attempts"], 1, "{d}");
    let got: Vec<_> =
        fakes.received_by("plausible").await[events_before..].iter().map(|r| r["status"].clone()).collect();
    assert!(got.starts_with(&[json!(401), json!(202)]), "{got:?}");
    let c = site::config(&app, "plausible", &id(&config)).await;
    assert_eq!(c["status"], "active", "{c}");
}

/// A file secret read while it was being rewritten (`cp` truncates, then writes) is one failed
/// lookup, however many rounds the cache hands that failure to before it expires: the config
/// stays `active`, and once the file is whole again every waiting event goes out.
#[tokio::test]
async fn a_file_caught_mid_rewrite_counts_once_and_the_config_stays_active() {
    let fakes = FakeProviders::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(&dir, "plausible-key", "the-key\n");
    let app = app_with(|s| {
        crate::helpers::manual_delivery(s);
        s.delivery.auth_failures_before_error = 3;
        s.secrets.failure_ttl_secs = 3;
    })
    .await;
    let keys = site::site(&app).await;
    let config = site::plausible(&app, &fakes, json!({"credentials": {"api_key_ref": format!("file:{file}")}})).await;
    std::fs::write(&file, "").unwrap();
    // Five rounds, each with a new event to send, within the failure's 3 s in the cache.
    let mut events = Vec::new();
    for _ in 0..5 {
        let (s, e) = track(&app, &keys, site::pageview(&visitor())).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{e}");
        events.push(id(&e));
        let pass = app.drain_outbox().await;
        assert_eq!(pass.delivered, 0, "{pass:?}");
    }
    let c = site::config(&app, "plausible", &id(&config)).await;
    assert_eq!(c["status"], "active", "one empty read counted once per round: {c}");
    let d = site::delivery_in(&app, &events[4], &id(&config), "pending").await;
    assert!(d["last_error"].as_str().unwrap_or_default().contains("the file is empty"), "{d}");
    assert!(fakes.received_by("plausible").await.is_empty(), "nothing is sent without the credential");

    std::fs::write(&file, "the-key\n").unwrap();
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    app.drain_outbox_with_retries().await;
    for e in &events {
        site::delivery_in(&app, e, &id(&config), "delivered").await;
    }
    assert_eq!(fakes.stored("plausible").await.len(), 5);
    assert_eq!(site::config(&app, "plausible", &id(&config)).await["status"], "active");
}

#[tokio::test]
async fn an_unresolvable_reference_keeps_deliveries_pending_and_puts_the_config_in_error() {
    let fakes = FakeProviders::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-yet-mounted").to_string_lossy().into_owned();
    // Each lookup's failure counts once (the cache's replays do not): lookups a second apart.
    let app = app_with(|s| s.secrets.failure_ttl_secs = 1).await;
    let keys = site::site(&app).await;
    let config = site::plausible(&app, &fakes, json!({"credentials": {"api_key_ref": format!("file:{file}")}})).await;
    let (_, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    let c = eventually(15, || async {
        let c = site::config(&app, "plausible", &id(&config)).await;
        (c["status"] == "error").then_some(c)
    })
    .await;
    let reason = c["status_reason"].as_str().unwrap();
    let expected = format!("credentials.api_key_ref (file:{file}) could not be resolved: cannot read the file: ");
    assert!(reason.contains(&expected) && reason.contains("No such file"), "{reason}");
    let (_, page) = app
        .get(
            &format!("/v1/tenants/{}/deliveries?event={}&config={}", app.tenant, id(&accepted), id(&config)),
            &app.admin,
        )
        .await;
    assert_eq!(page["items"][0]["status"], "pending", "{page}");
    assert!(fakes.received_by("plausible").await.is_empty(), "nothing is sent without the credentials");

    // Fixed, and set active again: the waiting delivery goes out (the cached failure is forgotten).
    secret_file(&dir, "not-yet-mounted", "the-key");
    let (s, body) = site::patch_config(&app, "plausible", &id(&config), json!({"status": "active"})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    delivered(&app, &id(&accepted), &id(&config)).await;
}

#[tokio::test]
async fn check_reports_per_reference_and_only_admins_may_call_it() {
    let fakes = FakeProviders::start().await;
    let dir = tempfile::tempdir().unwrap();
    let user = secret_file(&dir, "umami-user", "admin\n");
    let password = secret_file(&dir, "umami-password", "first-password\n");
    fakes.behaviour(json!({"umami": {"users": [{"username": "admin", "password": "first-password"}]}})).await;
    let app = app_with(|_| {}).await;
    let config = site::umami(
        &app,
        &fakes,
        json!({"credentials": {"username_ref": format!("file:{user}"), "password_ref": format!("file:{password}"),
                               "api_key_ref": "env:CONSENTGATE_TEST_NEVER_SET_7732"}}),
    )
    .await;
    let (s, report) = check(&app, "umami", &config).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["status"], "failed");
    for field in ["username_ref", "password_ref"] {
        let r = reference(&report, field);
        assert_eq!((r["status"].as_str(), r["accepted_by_provider"].as_bool()), (Some("ok"), Some(true)), "{report}");
    }
    let key = reference(&report, "api_key_ref");
    assert_eq!((key["resolved"].as_bool(), key["status"].as_str()), (Some(false), Some("failed")));
    assert!(key["detail"].as_str().unwrap().contains("is not set"), "{key}");

    // The password was changed at Umami but not in the file: the login refuses it.
    fakes.behaviour(json!({"umami": {"users": [{"username": "admin", "password": "second-password"}]}})).await;
    let (_, report) = check(&app, "umami", &config).await;
    let r = reference(&report, "password_ref");
    assert_eq!((r["resolved"].as_bool(), r["accepted_by_provider"].as_bool()), (Some(true), Some(false)), "{report}");
    assert!(r["detail"].as_str().unwrap().contains("Umami login refused it (401"), "{report}");
    // Rotated in the file: `check` sees it at once.
    std::fs::write(&password, "second-password").unwrap();
    let (_, report) = check(&app, "umami", &config).await;
    assert_eq!(reference(&report, "password_ref")["accepted_by_provider"], true, "{report}");

    let path = format!("{}/{}/check", configs_path(&app, "umami"), id(&config));
    let (s, body) = app.post(&path, &app.auditor, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn a_reference_to_a_switched_off_scheme_is_refused_on_save_and_loose_files_are_warned_about() {
    let fakes = FakeProviders::start().await;
    let app = app_with(|s| s.secrets.allow_file = false).await;
    let body = json!({"display_name": "P", "site_id": SITE, "instance_url": fakes.plausible_url(),
                      "credentials": {"api_key_ref": "file:/run/secrets/plausible"}});
    let got = app.post(&configs_path(&app, "plausible"), &app.admin, body).await;
    crate::helpers::assert_error(
        &got,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        Some("credentials.api_key_ref"),
    );
    assert!(got.1["error"]["message"].as_str().unwrap().contains("secrets.allow_file = false"), "{}", got.1);
    let config = site::plausible(&app, &fakes, json!({"credentials": {"api_key_ref": "env:K"}})).await;
    let got =
        site::patch_config(&app, "plausible", &id(&config), json!({"credentials": {"api_key_ref": "file:/x"}})).await;
    assert_eq!(got.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", got.1);

    let app = app_with(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(&dir, "loose", "v");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let body = json!({"display_name": "P", "site_id": SITE, "instance_url": fakes.plausible_url(),
                      "credentials": {"api_key_ref": format!("file:{file}")}});
    let (s, saved) = app.post(&configs_path(&app, "plausible"), &app.admin, body).await;
    assert_eq!(s, StatusCode::CREATED, "{saved}");
    let warning = saved["warnings"][0].as_str().unwrap_or_else(|| panic!("no warning in {saved}"));
    assert!(warning.contains("credentials.api_key_ref") && warning.contains("every user"), "{warning}");
    let (_, report) = check(&app, "plausible", &saved).await;
    assert!(reference(&report, "api_key_ref")["warnings"][0].as_str().unwrap().contains("chmod 600"), "{report}");
}

/// Log lines captured by a subscriber scoped to this test (the app runs on the test's own
/// current-thread runtime, so its tasks log here), in both formats.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_secret_value_appears_in_no_response_log_line_error_or_database_column() {
    use tracing_subscriber::prelude::*;
    const SECRET: &str = "Kx9-known-secret-value-5517";
    let (json_log, human_log) = (Captured::default(), Captured::default());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("trace"))
        .with(tracing_subscriber::fmt::layer().json().with_writer(json_log.clone()))
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(human_log.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let fakes = FakeProviders::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(&dir, "plausible-key", &format!("{SECRET}\n"));
    fakes
        .keyvault(json!({"secrets": {"umami-password": SECRET},
                         "clients": [{"tenant": "fake-tenant", "client_id": "gateway-app", "secret": "app-secret"}]}))
        .await;
    let app = client_secret_app(&fakes, &dir, "app-secret").await;
    let mut bodies: Vec<String> = Vec::new();
    let keys = site::site(&app).await;

    // Configs with references to the secret, in a file and in Key Vault.
    let p = site::plausible(&app, &fakes, json!({"credentials": {"api_key_ref": format!("file:{file}")}})).await;
    let u = site::umami(
        &app,
        &fakes,
        json!({"credentials": {"username_ref": format!("file:{file}"),
                               "password_ref": format!("keyvault://{VAULT}.vault.azure.net/secrets/umami-password")}}),
    )
    .await;
    bodies.push(p.to_string());
    bodies.push(u.to_string());
    // Events delivered, then the providers refuse everything: 401s until the configs are in error.
    let (_, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    bodies.push(accepted.to_string());
    delivered(&app, &id(&accepted), &id(&p)).await;
    fakes.behaviour(json!({"plausible": {"status": 401}, "umami": {"status": 401}})).await;
    for _ in 0..2 {
        let (_, a) = track(&app, &keys, site::pageview(&visitor())).await;
        bodies.push(a.to_string());
    }
    for (provider, config) in [("plausible", &p), ("umami", &u)] {
        let c = eventually(15, || async {
            let c = site::config(&app, provider, &id(config)).await;
            (c["status"] == "error").then_some(c)
        })
        .await;
        bodies.push(c.to_string());
        // `check` with the provider refusing (the Stats API and login answer 401: no key).
        let (_, report) = check(&app, provider, config).await;
        bodies.push(report.to_string());
    }
    for path in
        ["/deliveries?limit=500", "/audit-log?limit=500", "/analytics/plausible/configs", "/analytics/umami/configs"]
    {
        let (_, body) = app.get(&format!("/v1/tenants/{}{path}", app.tenant), &app.admin).await;
        bodies.push(body.to_string());
    }
    let (_, spec) = app.get("/v1/openapi.json", &app.admin).await;
    bodies.push(spec.to_string());

    for body in &bodies {
        assert!(!body.contains(SECRET), "a response body shows the secret: {body}");
    }
    let db = &app.db;
    let backend = db.get_database_backend();
    let tables_sql = match backend {
        sea_orm::DbBackend::Postgres => "SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema()",
        _ => "SELECT name FROM sqlite_master WHERE type = 'table'",
    };
    let tables = JsonValue::find_by_statement(Statement::from_string(backend, tables_sql)).all(db).await.unwrap();
    assert!(tables.len() > 5, "{tables:?}");
    for t in tables {
        let name = t["name"].as_str().unwrap().to_string();
        let rows = JsonValue::find_by_statement(Statement::from_string(backend, format!("SELECT * FROM \"{name}\"")))
            .all(db)
            .await
            .unwrap();
        let text = serde_json::to_string(&rows).unwrap();
        assert!(!text.contains(SECRET), "table {name} holds the secret");
    }
    for (format, log) in [("json", &json_log), ("human", &human_log)] {
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        assert!(text.lines().count() > 10, "{format}: the capture saw the app's logs:\n{text}");
        assert!(!text.contains(SECRET), "a {format} log line shows the secret");
    }
}

#[tokio::test]
async fn a_failed_request_is_stored_without_its_url() {
    let app = app_with(|_| {}).await;
    let keys = site::site(&app).await;
    // Nothing listens there: the connection fails, and reqwest's error text would name the URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let instance = format!("http://127.0.0.1:{port}/private-path-segment");
    let config = site::create_config(
        &app,
        "plausible",
        json!({"display_name": "P", "site_id": SITE, "instance_url": instance, "status": "active"}),
    )
    .await;
    let (_, accepted) = track(&app, &keys, site::pageview(&visitor())).await;
    let d = delivery_once(&app, &id(&accepted), &id(&config), |d| !d["last_error"].is_null()).await;
    let error = d["last_error"].as_str().unwrap();
    assert!(error.contains("connection failed"), "{error}");
    assert!(!error.contains("private-path-segment") && !error.contains("/api/event"), "{error}");
}
