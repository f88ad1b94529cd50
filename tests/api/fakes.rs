//! The test side of the fake providers: spawns the `fake-providers` binary (a separate process,
//! so the gateway talks real HTTP to something outside itself), and reads and steers it through
//! its control API.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The Umami website id the fake knows (registered at start).
pub const WEBSITE_ID: &str = "5b4b1a52-2f46-4e4a-9a0c-2b7c5a0a1f11";
/// The Plausible site the fake knows (registered at start).
pub const SITE: &str = "example.com";
/// The PostHog project key the fake knows (registered at start); tests put it in `env:`.
pub const POSTHOG_PROJECT_KEY: &str = "phc_consentgateTestProjectKey0123456789";

pub struct FakeProviders {
    _child: Child,
    pub base: String,
    /// The fake Key Vault and Entra token endpoint (HTTPS, the test certificate).
    pub keyvault_port: u16,
    http: reqwest::Client,
}

impl FakeProviders {
    /// Starts a fresh fake process with the test site and website registered. It is killed when
    /// this value is dropped.
    pub async fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fake-providers"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the fake-providers binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).await.expect("the fake prints its port");
        let port = serde_json::from_str::<Value>(&first).ok().and_then(|v| v["port"].as_u64()).unwrap_or_else(|| {
            panic!("the fake's first line is not {{\"port\": N}}: {first:?}");
        });
        let keyvault_port = serde_json::from_str::<Value>(&first).ok().and_then(|v| v["keyvault_port"].as_u64());
        let fakes = FakeProviders {
            _child: child,
            keyvault_port: keyvault_port.expect("the fake prints its Key Vault port") as u16,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        };
        fakes.behaviour(json!({"plausible": {"domains": [SITE]}, "umami": {"websites": [WEBSITE_ID]}})).await;
        fakes.posthog(json!({"projects": [POSTHOG_PROJECT_KEY]})).await;
        fakes
    }

    /// The `instance_url` of a Plausible config pointing at the fake.
    pub fn plausible_url(&self) -> String {
        format!("{}/plausible", self.base)
    }

    pub fn umami_url(&self) -> String {
        format!("{}/umami", self.base)
    }

    /// The `endpoint_url` of a GA4 config pointing at the fake (`/mp/collect`, `/debug/mp/collect`).
    pub fn ga4_url(&self) -> String {
        format!("{}/ga4", self.base)
    }

    /// Validation messages the fake GA4 validation server adds to its own from now on.
    pub async fn ga4_validation_messages(&self, messages: Value) {
        let res = self
            .http
            .post(format!("{}/_fake/ga4", self.base))
            .json(&json!({"validation_messages": messages}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success());
    }

    pub async fn behaviour(&self, body: Value) -> Value {
        let res = self.http.post(format!("{}/_fake/behaviour", self.base)).json(&body).send().await.unwrap();
        assert!(res.status().is_success());
        res.json().await.unwrap()
    }

    /// Every request the fake received, in order.
    pub async fn received(&self) -> Vec<Value> {
        self.http.get(format!("{}/_fake/received", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// The providers the fake stands in for.
    pub async fn providers(&self) -> Vec<String> {
        self.http.get(format!("{}/_fake/providers", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// Every batch request the fake received: `{"provider", "path", "size", "status"}`.
    pub async fn batches(&self) -> Vec<Value> {
        self.http.get(format!("{}/_fake/batches", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// The requests one provider received.
    pub async fn received_by(&self, provider: &str) -> Vec<Value> {
        self.received().await.into_iter().filter(|r| r["provider"] == provider).collect()
    }

    /// The events one provider stored (accepted and kept).
    pub async fn stored(&self, provider: &str) -> Vec<Value> {
        self.received_by(provider).await.into_iter().filter(|r| r["outcome"] == "stored").collect()
    }
}

impl FakeProviders {
    /// The `instance_url` of a PostHog config pointing at the fake.
    pub fn posthog_url(&self) -> String {
        format!("{}/posthog", self.base)
    }

    /// Steers the fake PostHog (`projects`, `flags`, `quota_exceeded`, `fail_next` + `status`,
    /// `delay_ms`); returns its behaviour.
    pub async fn posthog(&self, body: Value) -> Value {
        let res = self.http.post(format!("{}/_fake/posthog", self.base)).json(&body).send().await.unwrap();
        assert!(res.status().is_success());
        res.json().await.unwrap()
    }

    /// The events PostHog stored, one per (project, day, event, distinct id, uuid), with `copies`.
    pub async fn posthog_events(&self) -> Vec<Value> {
        self.http.get(format!("{}/_fake/posthog/events", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// Steers the fake Key Vault (`secrets`, `clients`, `federated`, `forbidden`, failures).
    pub async fn keyvault(&self, body: Value) -> Value {
        let res = self.http.post(format!("{}/_fake/keyvault", self.base)).json(&body).send().await.unwrap();
        assert!(res.status().is_success());
        res.json().await.unwrap()
    }

    /// Every request the fake Key Vault and token endpoint received, in order.
    pub async fn keyvault_requests(&self) -> Vec<Value> {
        self.http.get(format!("{}/_fake/keyvault/requests", self.base)).send().await.unwrap().json().await.unwrap()
    }
}

impl FakeProviders {
    /// What the fake saw of the traffic: requests in flight per provider, the most at once, and
    /// a timeline (`arrived_ms`, `answered_ms`, `concurrent`, `status`, `provider`).
    pub async fn traffic(&self) -> Value {
        self.http.get(format!("{}/_fake/traffic", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// Every provider request from now on is answered after `ms` milliseconds.
    pub async fn latency(&self, ms: u64) {
        let res = self.http.post(format!("{}/_fake/traffic", self.base)).json(&json!({"latency_ms": ms})).send().await;
        assert!(res.unwrap().status().is_success());
    }
}
