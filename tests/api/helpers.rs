#![allow(dead_code)] // each test module uses a different subset of the fixtures
//! Test fixtures: the real app on a random 127.0.0.1 port against a fresh database — a SQLite
//! file in a temp dir by default, or a fresh PostgreSQL database on the server named by
//! `TEST_DATABASE_URL` (dropped again when the test ends).

use chrono::{DateTime, Utc};
use consentgate::{
    app::App,
    config::Settings,
    outbox::{Pass, Worker},
    tenants::{self, TenantSlug},
    tokens::{self, Role},
};
use reqwest::{Method, RequestBuilder, StatusCode};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

pub struct TestApp {
    pub app: App,
    pub base: String,
    pub http: reqwest::Client,
    pub db: DatabaseConnection,
    /// A tenant created for the test, with an admin and an auditor token.
    pub tenant: String,
    pub admin: String,
    pub auditor: String,
    /// The worker the drain helpers run, built on first use (one HTTP client for the test).
    outbox: std::sync::OnceLock<Worker>,
    _database: TestDatabase,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app with settings adjusted by `configure` (bind, database and delivery timing are
/// already set for tests).
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        consentgate::telemetry::init_logging(&Default::default());
    }
    let database = TestDatabase::create().await;
    let mut test = start_app(database, configure).await;
    let (tenant, admin, auditor) = test.create_tenant("acme").await;
    test.tenant = tenant;
    test.admin = admin;
    test.auditor = auditor;
    test
}

/// Starts the app on `database` as it is (e.g. a loaded fixture), with no tenant created: set
/// `tenant`, `admin` and `auditor` on the result.
pub async fn start_app(database: TestDatabase, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".parse().unwrap();
    settings.server.shutdown_grace_secs = 2;
    settings.database.url = database.url.clone();
    settings.database.max_connections = 5;
    settings.delivery.poll_interval_ms = 50;
    settings.delivery.backoff_base_ms = 50;
    settings.delivery.backoff_max_ms = 400;
    settings.delivery.request_timeout_ms = 2_000;
    // The fake providers listen on 127.0.0.1.
    settings.delivery.allow_private_destinations = true;
    // References anywhere (temporary files, plain variable names): the tests of other features
    // name secrets freely. The tenant scope, the default, is tested in secrets.rs.
    settings.secrets.scope = consentgate::secrets::scope::Scope::Gateway;
    configure(&mut settings);
    let app = App::start(settings).await.expect("app starts");
    let db = app.state.db.clone();
    let base = app.base_url();
    TestApp {
        app,
        base,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        db,
        tenant: String::new(),
        admin: String::new(),
        auditor: String::new(),
        outbox: Default::default(),
        _database: database,
    }
}

/// For a test that drives the outbox itself ([`TestApp::drain_outbox`]): the app starts without
/// its delivery worker, which would otherwise race the test's passes for the same deliveries.
pub fn manual_delivery(settings: &mut Settings) {
    settings.delivery.enabled = false;
}

/// Passes one drain may run before it is taken for a loop (retries end when the config's circuit
/// opens, or at the retry horizon).
const MAX_PASSES: usize = 200;

impl TestApp {
    /// One pass of the outbox — claim, send, record, exactly as the delivery worker does — taking
    /// `now` for the present: a delivery is due if its `next_attempt_at` is not after `now` and
    /// its lease, if any, ended before. Requires [`manual_delivery`].
    pub async fn run_outbox_at(&self, now: DateTime<Utc>) -> Pass {
        let settings = &self.app.state.settings.delivery;
        assert!(!settings.enabled, "start the app with `manual_delivery`: its worker would race the test's passes");
        let worker = self.outbox.get_or_init(|| {
            Worker::new(self.db.clone(), settings.clone(), self.app.state.outbox.secrets())
                .expect("the delivery worker builds")
        });
        let pass = worker.run_once(now).await;
        assert_eq!(pass.errors, 0, "a claim or attempt failed on the database (see the log with TEST_LOG=1): {pass:?}");
        pass
    }

    /// Runs the outbox until nothing is due: pass after pass at the instant of the call, until a
    /// pass claims nothing; returns what the passes did together. Everything that was due is
    /// sent and recorded when this returns — nothing is in flight — so a test can assert what
    /// did *not* happen right after. A delivery that fails waits for its backoff: it is due after
    /// the call's instant, so it is attempted once here however short the backoff.
    pub async fn drain_outbox(&self) -> Pass {
        let now = Utc::now();
        self.drain(|| now).await
    }

    /// Like [`drain_outbox`](Self::drain_outbox), but every backoff is waited out at once: each
    /// pass takes for the present the real clock plus `backoff_max_ms` (no retry waits longer, even
    /// with a `Retry-After`), so a retried delivery is due again at the next pass (and a lease
    /// ending within that time counts as passed, as it would after the wait). Returns when
    /// each delivery of an active config has ended (or its config left `active`, e.g. after
    /// repeated 401s).
    pub async fn drain_outbox_with_retries(&self) -> Pass {
        let longest = chrono::Duration::milliseconds(self.app.state.settings.delivery.backoff_max_ms as i64 + 1);
        self.drain(|| Utc::now() + longest).await
    }

    async fn drain(&self, now: impl Fn() -> DateTime<Utc>) -> Pass {
        let mut total = Pass::default();
        for _ in 0..MAX_PASSES {
            let pass = self.run_outbox_at(now()).await;
            if pass.claimed == 0 {
                return total;
            }
            total += pass;
        }
        panic!("the outbox still had due deliveries after {MAX_PASSES} passes: {total:?}");
    }

    /// Creates a tenant with an admin and an auditor token, as the CLI does.
    pub async fn create_tenant(&self, slug: &str) -> (String, String, String) {
        let tenant = tenants::create(&self.db, &TenantSlug::parse(slug).unwrap(), slug).await.unwrap();
        let (_, admin) = tokens::create(&self.db, tenant.id, Role::Admin, "test admin").await.unwrap();
        let (_, auditor) = tokens::create(&self.db, tenant.id, Role::Auditor, "test auditor").await.unwrap();
        (tenant.slug, admin.expose_secret().to_string(), auditor.expose_secret().to_string())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `path` below `/v1/tenants/{tenant}` of the test's tenant.
    pub fn tenant_url(&self, path: &str) -> String {
        format!("{}/v1/tenants/{}{}", self.base, self.tenant, path)
    }

    pub fn request(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(token)
    }

    /// Sends a JSON request with a bearer token and returns the status and the JSON body
    /// (`Value::Null` for an empty body).
    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.request(method, path, token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        send(req).await
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, token, Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, token, None).await
    }

    /// A request without a token (public routes), to add headers to before `send`.
    pub fn public(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// `/v1/tenants/{tenant}/analytics/cookie-consent/configs` of the test's tenant.
    pub fn consent_configs_path(&self) -> String {
        format!("/v1/tenants/{}/analytics/cookie-consent/configs", self.tenant)
    }

    /// `/v1/tenants/{tenant}/consent` of the test's tenant: the public consent routes.
    pub fn consent_path(&self) -> String {
        format!("/v1/tenants/{}/consent", self.tenant)
    }

    /// Creates a cookie consent config — [`consent_config`] with `changes` merged in (JSON merge
    /// patch) — and publishes it, so it is the tenant's active config. Returns its id.
    pub async fn publish_consent_config(&self, changes: Value) -> String {
        let (s, created) =
            self.post(&self.consent_configs_path(), &self.admin, merged(consent_config(), changes)).await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_string();
        self.publish(&id, false).await;
        id
    }

    /// Publishes a config; returns the published config.
    pub async fn publish(&self, config_id: &str, requires_reconsent: bool) -> Value {
        let path = format!("{}/{config_id}/publish", self.consent_configs_path());
        let (s, published) = self.post(&path, &self.admin, json!({"requires_reconsent": requires_reconsent})).await;
        assert_eq!(s, StatusCode::OK, "{published}");
        published
    }

    /// Records a visitor's decision through the public route, as a server-side caller (no
    /// `Origin`). `body` is the contract's body, e.g. `{"visitor_id", "action", "revision"}`.
    pub async fn record_consent(&self, body: Value) -> (StatusCode, Value) {
        send(self.public(Method::POST, &self.consent_path()).json(&body)).await
    }

    /// Records `action` for `visitor` under the active revision; panics unless it is stored.
    pub async fn consent(&self, visitor: &str, action: &str, revision: i64) -> Value {
        let mut body = json!({"visitor_id": visitor, "action": action, "revision": revision, "language": "en"});
        if action == "custom" {
            body["choices"] = json!({"functional": false, "analytics": true, "marketing": false});
        }
        let (s, recorded) = self.record_consent(body).await;
        assert_eq!(s, StatusCode::CREATED, "{recorded}");
        recorded
    }
}

/// The origin [`consent_config`] allows (plus any subdomain of it).
pub const SITE: &str = "https://shop.example";

/// A complete, guidance-conforming cookie consent config body (no warnings): all four
/// categories enabled, English and Swedish texts, allowed origins [`SITE`] and `https://*.shop.example`.
pub fn consent_config() -> Value {
    json!({
        "display_name": "Shop",
        "banner": {"position": "bottom", "style": "bar", "primary_color": "#1a73e8",
                   "background_color": "#ffffff", "text_color": "#202124",
                   "show_reject_all": true, "show_preferences": true},
        "categories": {
            "necessary": {"enabled": true, "required": true, "default_accepted": true,
                          "display_name": "Strictly necessary", "description": "Needed for the site to work.",
                          "cookie_names": ["cg_vid"]},
            "functional": {"enabled": true, "required": false, "default_accepted": false,
                           "display_name": "Functional", "description": "Preferences.", "cookie_names": []},
            "analytics": {"enabled": true, "required": false, "default_accepted": false,
                          "display_name": "Analytics", "description": "Usage statistics.", "cookie_names": ["_ga"]},
            "marketing": {"enabled": true, "required": false, "default_accepted": false,
                          "display_name": "Marketing", "description": "Ads.", "cookie_names": ["_fbp"]}
        },
        "texts": {
            "en": {"title": "Cookies", "body": "We use cookies.", "accept_all": "Accept all",
                   "reject_all": "Reject all", "preferences": "Preferences", "save": "Save choices",
                   "settings": "Cookie settings",
                   "categories": {"analytics": {"label": "Analytics", "description": "Counts visits."}}},
            "sv": {"title": "Kakor", "body": "Vi använder kakor.", "accept_all": "Godkänn alla",
                   "reject_all": "Avvisa alla"}
        },
        "default_language": "en",
        "privacy_policy_url": "https://shop.example/privacy",
        "cookie_policy_url": "https://shop.example/cookies",
        "consent_expiry_days": 180,
        "geo_targeting_enabled": true,
        "respect_do_not_track": true,
        "allowed_origins": [SITE, "https://*.shop.example"]
    })
}

/// `base` with `changes` merged in (JSON merge patch, RFC 7396: `null` removes a field).
pub fn merged(mut base: Value, changes: Value) -> Value {
    consentgate::consent::config::store::merge_patch(&mut base, &changes);
    base
}

pub async fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("request reaches the app");
    let status = res.status();
    let text = res.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text}"))
    };
    (status, body)
}

/// Asserts a JSON error response: status, code and (when given) the field it names.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    if let Some(f) = field {
        assert_eq!(got.1["error"]["field"], f, "body: {}", got.1);
    }
    assert!(got.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "body: {}", got.1);
}

/// Polls `check` until it returns `Some`, for at most `secs` seconds. Only for what another
/// process or a background task does (a child process coming up, the delivery workers of running
/// instances) and only to wait for something to happen — never to show that something did not:
/// drive the outbox with [`TestApp::drain_outbox`] instead.
pub async fn eventually<T, F, Fut>(secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "condition not met within {secs}s");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Which backend the suite runs on, for messages.
pub fn backend() -> &'static str {
    if std::env::var("TEST_DATABASE_URL").is_ok() { "postgres" } else { "sqlite" }
}

/// A database that exists for one test.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDatabase {
    pub async fn create() -> Self {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(server) => {
                let name = format!("cgtest_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&server)
                    .await
                    .unwrap_or_else(|e| panic!("TEST_DATABASE_URL is set but PostgreSQL is unreachable: {e}"));
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
                admin.close().await.ok();
                let mut url = url::Url::parse(&server).unwrap();
                url.set_path(&name);
                TestDatabase { url: url.to_string(), _dir: None, pg: Some((server, name)) }
            }
            Err(_) => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                TestDatabase { url, _dir: Some(dir), pg: None }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((server, name)) = self.pg.take() {
            // Drop runs inside the test's runtime; use a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    if let Ok(db) = Database::connect(&server).await {
                        let _ = db.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                        db.close().await.ok();
                    }
                });
            })
            .join();
        }
    }
}
