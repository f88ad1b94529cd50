//! The real `consentgate` binary as a separate process, as an operator runs it, and a site set up
//! on it through the API: a published consent config, Plausible and PostHog configs on the fakes,
//! a secret ingest key.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{fakes::FakeProviders, helpers};

/// The environment variable the gateway reads the PostHog project key from (`env:` reference), in
/// the tenant `crash`'s namespace (`secrets.scope = "tenant"`, the default: docs/secrets.md).
const POSTHOG_KEY_VAR: &str = "CONSENTGATE_TENANT_CRASH__POSTHOG_KEY";

/// One `consentgate serve` process. Killed (SIGKILL) and reaped when dropped, so no test leaves
/// one behind, even when an assertion fails; its log is printed then.
pub struct Gateway {
    child: Option<Child>,
    pub name: String,
    pub base: String,
    log: PathBuf,
}

/// Settings every gateway of these tests runs with: the fakes on 127.0.0.1 are reachable, the
/// delivery worker polls often, and a claim's lease is short (3 s), so a killed instance's
/// leased deliveries are taken over within seconds.
fn command(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consentgate"));
    cmd.env_remove("RUST_LOG")
        .env_remove("CONSENTGATE_CONFIG")
        .env("CONSENTGATE__DATABASE__URL", db_url)
        .env("CONSENTGATE__DATABASE__MAX_CONNECTIONS", "8")
        .env("CONSENTGATE__LOG__LEVEL", "warn")
        .env("CONSENTGATE__SERVER__SHUTDOWN_GRACE_SECS", "1")
        .env("CONSENTGATE__DELIVERY__ALLOW_PRIVATE_DESTINATIONS", "true")
        .env("CONSENTGATE__DELIVERY__POLL_INTERVAL_MS", "50")
        .env("CONSENTGATE__DELIVERY__BACKOFF_BASE_MS", "50")
        .env("CONSENTGATE__DELIVERY__BACKOFF_MAX_MS", "400")
        .env("CONSENTGATE__DELIVERY__REQUEST_TIMEOUT_MS", "1000")
        .env("CONSENTGATE__DELIVERY__LEASE_SECS", "3")
        .env(POSTHOG_KEY_VAR, crate::fakes::POSTHOG_PROJECT_KEY)
        .current_dir(std::env::temp_dir());
    cmd
}

/// Creates the tenant `crash` with the CLI (which migrates the database); its admin token.
pub fn create_tenant(db_url: &str) -> String {
    let out = command(db_url).args(["tenant", "create", "crash"]).output().expect("the binary runs");
    assert!(out.status.success(), "tenant create: {}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    line["admin_token"].as_str().unwrap().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Gateway {
    /// Starts `consentgate serve` on `db_url` on a free 127.0.0.1 port, its log in `dir`, and
    /// waits until it is ready.
    pub async fn start(name: &str, db_url: &str, dir: &Path) -> Gateway {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = command(db_url)
            .env("CONSENTGATE__SERVER__BIND", format!("127.0.0.1:{port}"))
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the gateway starts");
        let gateway = Gateway { child: Some(child), name: name.into(), base: format!("http://127.0.0.1:{port}"), log };
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().unwrap();
        let ready = format!("{}/readyz", gateway.base);
        helpers::eventually(30, || async {
            http.get(&ready).send().await.ok().filter(|r| r.status() == StatusCode::OK).map(|_| ())
        })
        .await;
        gateway
    }

    /// `kill -9`: no shutdown, no flush, requests in flight cut.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
        }
    }

    /// The process's id (part of its delivery workers' lease owner names, `worker-…@host:pid`).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `/v1/tenants/crash` + `path`.
    pub fn tenant_url(&self, path: &str) -> String {
        format!("{}/v1/tenants/crash{path}", self.base)
    }

    /// Lines of the log that are errors or panics (the log level is `warn`).
    pub fn log_lines(&self) -> Vec<String> {
        let Ok(file) = std::fs::File::open(&self.log) else { return Vec::new() };
        BufReader::new(file).lines().map_while(Result::ok).collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let lines = self.log_lines();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- log of gateway {} (last {} lines) ---\n{}", self.name, tail.len(), tail.join("\n"));
        }
    }
}

/// The site the load posts to: its admin token and a secret ingest key.
pub struct Site {
    pub admin: String,
    pub secret_key: String,
}

/// Publishes a consent config that grants analytics by default (so PostHog is allowed), and
/// creates an active Plausible and an active PostHog config on the fakes and a secret key.
pub async fn set_up_site(gateway: &Gateway, admin: &str, fakes: &FakeProviders) -> Site {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |path: String, body: Value| {
        let req = http.post(gateway.tenant_url(&path)).bearer_auth(admin).json(&body);
        async move {
            let (s, v) = helpers::send(req).await;
            assert!(s.is_success(), "POST {path}: {s} {v}");
            v
        }
    };
    let config = helpers::merged(
        helpers::consent_config(),
        json!({"categories": {"analytics": {"default_accepted": true}}, "respect_do_not_track": false,
               "geo_targeting_enabled": false}),
    );
    let created = post("/analytics/cookie-consent/configs".into(), config).await;
    let id = created["id"].as_str().unwrap();
    post(format!("/analytics/cookie-consent/configs/{id}/publish"), json!({"requires_reconsent": false})).await;
    post(
        "/analytics/plausible/configs".into(),
        json!({"display_name": "Plausible", "site_id": crate::fakes::SITE, "instance_url": fakes.plausible_url(),
               "status": "active"}),
    )
    .await;
    post(
        "/analytics/posthog/configs".into(),
        json!({"display_name": "PostHog", "instance_url": fakes.posthog_url(), "status": "active",
               "credentials": {"project_api_key_ref": format!("env:{POSTHOG_KEY_VAR}")}}),
    )
    .await;
    let key = post("/ingest-keys".into(), json!({"kind": "secret", "name": "crash"})).await;
    Site { admin: admin.to_string(), secret_key: key["key"].as_str().unwrap().to_string() }
}
