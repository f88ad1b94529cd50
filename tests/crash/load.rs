//! Concurrent clients posting events, each with its own idempotency key, and what each was
//! answered; the retries a site makes after a lost answer; and the check that every acknowledged
//! event is stored and delivered, and no key became two events.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{fakes::FakeProviders, gateway::Gateway, helpers};

const CHROME: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// The page an event with idempotency key `key` was on: how the fakes' requests are told apart
/// (Plausible has no event id).
pub fn page_of(key: &str) -> String {
    format!("https://www.example.com/crash/{key}")
}

/// What the clients were answered, by idempotency key.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Keys answered 2xx, with the event's id.
    pub acked: BTreeMap<String, Uuid>,
    /// Keys whose request got no answer (the connection was cut) or only 503s before the load
    /// ended: the site does not know whether they were stored, and sends them again.
    pub to_retry: BTreeSet<String>,
    /// 2xx answers during the load, 503s (each with `Retry-After`), and connections cut.
    pub acked_under_load: usize,
    /// When each of those was answered.
    pub acked_at: Vec<Instant>,
    pub unavailable: usize,
    pub cut: usize,
    /// Retries after the fault: answered 200 (a repeat: the first request had been stored) or
    /// 202 (it had not).
    pub retried_repeat: usize,
    pub retried_new: usize,
    /// Anything else a client was answered: a 500, a 503 without `Retry-After`, a decision
    /// other than the two allowed ones. Must stay empty.
    pub unexpected: Vec<String>,
}

enum Answer {
    Stored(Uuid, StatusCode),
    Unavailable,
    Cut,
}

struct Client {
    http: reqwest::Client,
    secret: String,
}

impl Client {
    /// Posts the event for `key` as a site's server does.
    async fn post(&self, base: &str, key: &str, ledger: &Mutex<Ledger>) -> Answer {
        let body = json!({"event_name": "pageview", "page_url": page_of(key), "visitor_id": format!("visitor-{key}"),
                          "user_agent": CHROME, "ip": "203.0.113.9", "idempotency_key": key});
        let res = match self
            .http
            .post(format!("{base}/v1/tenants/crash/events"))
            .bearer_auth(&self.secret)
            .json(&body)
            .send()
            .await
        {
            Ok(res) => res,
            Err(_) => return Answer::Cut,
        };
        let status = res.status();
        let retry_after = res.headers().contains_key("retry-after");
        let Ok(text) = res.text().await else { return Answer::Cut };
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let note = |why: &str| ledger.lock().unwrap().unexpected.push(format!("{key}: {why}: {status} {text}"));
        match status {
            StatusCode::OK | StatusCode::ACCEPTED => {
                let decisions = value["decisions"].as_array().cloned().unwrap_or_default();
                if status == StatusCode::ACCEPTED
                    && (decisions.len() != 2 || decisions.iter().any(|d| d["decision"] != "allow"))
                {
                    note("not forwarded to both providers");
                }
                match value["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()) {
                    Some(id) => Answer::Stored(id, status),
                    None => {
                        note("no id");
                        Answer::Unavailable
                    }
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                if !retry_after || value["error"]["code"] != "unavailable" {
                    note("503 without Retry-After or the error shape");
                }
                Answer::Unavailable
            }
            _ => {
                note("unexpected status");
                Answer::Unavailable
            }
        }
    }
}

/// Runs `clients` clients until `stop` is set: client `i` posts to `bases[i % n]` one event after
/// another, each with a new idempotency key; after a 503 it sends the same event again; when its
/// connection is cut it notes the key for a later retry and moves to the next base (it stops
/// once every base has cut it).
pub async fn run(bases: Vec<String>, secret: String, clients: usize, stop: Arc<AtomicBool>) -> Ledger {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = Client { http: http.clone(), secret: secret.clone() };
        let (ledger, stop, bases) = (ledger.clone(), stop.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            let mut at = c % bases.len();
            let mut cut_by = BTreeSet::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("c{c}-{n}");
                n += 1;
                loop {
                    match client.post(&bases[at], &key, &ledger).await {
                        Answer::Stored(id, _) => {
                            let mut l = ledger.lock().unwrap();
                            l.acked.insert(key, id);
                            l.acked_under_load += 1;
                            l.acked_at.push(Instant::now());
                            break;
                        }
                        Answer::Unavailable => {
                            ledger.lock().unwrap().unavailable += 1;
                            if stop.load(Ordering::Relaxed) {
                                ledger.lock().unwrap().to_retry.insert(key);
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Answer::Cut => {
                            let mut l = ledger.lock().unwrap();
                            l.cut += 1;
                            l.to_retry.insert(key);
                            cut_by.insert(at);
                            at = (at + 1) % bases.len();
                            break;
                        }
                    }
                }
                if cut_by.len() == bases.len() {
                    break;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(ledger).unwrap().into_inner().unwrap()
}

/// Sends every event the clients do not know the fate of again, with the same key, to `base`:
/// each is answered 200 (it had been stored; the first event's id) or 202 (stored now).
pub async fn retry(ledger: &mut Ledger, base: &str, secret: &str) {
    let client = Client {
        http: reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap(),
        secret: secret.to_string(),
    };
    let shared = Mutex::new(Ledger::default());
    for key in std::mem::take(&mut ledger.to_retry) {
        let mut answered = false;
        for _ in 0..100 {
            match client.post(base, &key, &shared).await {
                Answer::Stored(id, status) => {
                    if status == StatusCode::OK {
                        ledger.retried_repeat += 1;
                    } else {
                        ledger.retried_new += 1;
                    }
                    assert!(ledger.acked.insert(key.clone(), id).is_none(), "{key} was acknowledged before");
                    answered = true;
                    break;
                }
                Answer::Unavailable | Answer::Cut => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(answered, "the retry of {key} was never answered 2xx");
    }
    ledger.unexpected.extend(shared.into_inner().unwrap().unexpected);
}

/// What reached the fakes, for the report.
#[derive(Debug)]
pub struct Delivered {
    pub plausible_requests: usize,
    pub plausible_duplicates: usize,
    pub posthog_events: usize,
    pub posthog_repeated: usize,
}

/// Every acknowledged event is stored (`GET …/events/{id}`, with its key) and — once the outbox
/// has drained — delivered to both fakes: PostHog stored each event id once (its uuid; a repeated
/// request is collapsed) and nothing else, Plausible got each page at least once and no other.
/// Plausible has no idempotency key: a request whose answer was lost to the kill is sent again,
/// and those duplicates are counted, not refused.
pub async fn assert_all_delivered(ledger: &Ledger, gateway: &Gateway, admin: &str, fakes: &FakeProviders) -> Delivered {
    assert!(ledger.unexpected.is_empty(), "unexpected answers: {:#?}", ledger.unexpected);
    assert!(ledger.to_retry.is_empty(), "every unanswered event was sent again");
    let ids: BTreeSet<String> = ledger.acked.values().map(Uuid::to_string).collect();
    let pages: BTreeSet<String> = ledger.acked.keys().map(|k| page_of(k)).collect();
    assert_eq!(ids.len(), ledger.acked.len(), "each key is its own event");

    // Drained: every acknowledged event reached both fakes.
    helpers::eventually(60, || async {
        let posthog: BTreeSet<String> = posthog_uuids(fakes).await.into_keys().collect();
        let plausible: BTreeSet<String> = plausible_pages(fakes).await.into_keys().collect();
        (posthog.is_superset(&ids) && plausible.is_superset(&pages)).then_some(())
    })
    .await;

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    // A fake may have its request from before the kill while the restarted gateway is still
    // sending it again (that answer was lost): wait until every delivery is recorded as ended.
    helpers::eventually(60, || async {
        for id in ledger.acked.values() {
            let (_, event) =
                helpers::send(http.get(gateway.tenant_url(&format!("/events/{id}"))).bearer_auth(admin)).await;
            let pending =
                event["decisions"].as_array().is_none_or(|ds| ds.iter().any(|d| d["delivery"]["status"] == "pending"));
            if pending {
                return None;
            }
        }
        Some(())
    })
    .await;
    for (key, id) in &ledger.acked {
        let (s, event) = helpers::send(http.get(gateway.tenant_url(&format!("/events/{id}"))).bearer_auth(admin)).await;
        assert_eq!(s, StatusCode::OK, "acknowledged event {key} ({id}) is stored: {event}");
        assert_eq!(event["idempotency_key"], key.as_str(), "{event}");
        let decisions = event["decisions"].as_array().unwrap();
        for d in decisions {
            assert_eq!(d["delivery"]["status"], "delivered", "{key}: {event}");
        }
    }

    let posthog = posthog_uuids(fakes).await;
    let plausible = plausible_pages(fakes).await;
    let extra_posthog: Vec<_> = posthog.keys().filter(|u| !ids.contains(*u)).collect();
    assert!(extra_posthog.is_empty(), "events no client was acknowledged for (a key stored twice?): {extra_posthog:?}");
    let extra_pages: Vec<_> = plausible.keys().filter(|p| !pages.contains(*p)).collect();
    assert!(extra_pages.is_empty(), "pages no client was acknowledged for: {extra_pages:?}");
    Delivered {
        plausible_requests: plausible.values().sum(),
        plausible_duplicates: plausible.values().map(|n| n - 1).sum(),
        posthog_events: posthog.len(),
        posthog_repeated: posthog.values().filter(|c| **c > 1).count(),
    }
}

/// PostHog's stored events: uuid → copies (it collapses repeats of one uuid).
async fn posthog_uuids(fakes: &FakeProviders) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in fakes.posthog_events().await {
        *out.entry(e["uuid"].as_str().unwrap_or_default().to_string()).or_default() += e["copies"].as_u64().unwrap();
    }
    out
}

/// Plausible's stored events: page → requests.
async fn plausible_pages(fakes: &FakeProviders) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in fakes.stored("plausible").await {
        let url = r["body"]["url"].as_str().or(r["body"]["u"].as_str()).unwrap_or_default().to_string();
        *out.entry(url).or_default() += 1;
    }
    out
}

impl Ledger {
    /// One line for the test's output.
    pub fn report(&self, backend: &str, delivered: &Delivered) -> String {
        format!(
            "crash report ({backend}): {acked} events acknowledged ({load} under load, {cut} connections cut, \
             {unavailable} answered 503; retried after the fault: {repeat} answered 200 as repeats, {new} stored \
             anew); Plausible (no idempotency key): {preq} requests for {events} events, {dup} duplicates; \
             PostHog: {ph} events, {phr} of them received more than once and collapsed by uuid",
            acked = self.acked.len(),
            load = self.acked_under_load,
            cut = self.cut,
            unavailable = self.unavailable,
            repeat = self.retried_repeat,
            new = self.retried_new,
            preq = delivered.plausible_requests,
            events = self.acked.len(),
            dup = delivered.plausible_duplicates,
            ph = delivered.posthog_events,
            phr = delivered.posthog_repeated,
        )
    }
}
