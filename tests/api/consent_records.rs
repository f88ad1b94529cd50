//! Consent records as an auditor sees them: filters, paging, exports, chain verification,
//! erasure — and the chain under concurrent writes.

use consentgate::consent::{
    Action, Choices,
    records::{self, NewRecord, VisitorId},
};
use reqwest::{Method, StatusCode, header};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, send, spawn_app};

fn records_path(app: &TestApp, query: &str) -> String {
    format!("/v1/tenants/{}/consent-records{query}", app.tenant)
}

async fn list(app: &TestApp, query: &str) -> Value {
    let (s, body) = app.get(&records_path(app, query), &app.auditor).await;
    assert_eq!(s, StatusCode::OK, "{query}: {body}");
    body
}

fn seqs(page: &Value) -> Vec<i64> {
    page["items"].as_array().unwrap().iter().map(|r| r["seq"].as_i64().unwrap()).collect()
}

async fn verify(app: &TestApp) -> Value {
    let (s, body) = app.get(&records_path(app, "/verify"), &app.auditor).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn an_auditor_sees_every_proof_field() {
    let app = spawn_app().await;
    // DNT not honoured: GPC then refuses marketing only, and analytics is the visitor's to give.
    let config_id = app.publish_consent_config(json!({"respect_do_not_track": false})).await;
    let (s, _) = send(
        app.public(Method::POST, &app.consent_path())
            .header("user-agent", "Mozilla/5.0 (X11)")
            .header("sec-gpc", "1")
            .json(&json!({"visitor_id": "visitor-1", "action": "custom", "revision": 1, "language": "SV",
                          "choices": {"functional": false, "analytics": true, "marketing": false}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let page = list(&app, "").await;
    assert!(page["next_cursor"].is_null());
    let r = &page["items"][0];
    let (_, revs) = app.get(&format!("{}/{config_id}/revisions", app.consent_configs_path()), &app.auditor).await;
    assert_eq!(r["seq"], 1);
    assert_eq!(r["visitor_id"], "visitor-1");
    assert_eq!(r["visitor_hash"].as_str().unwrap().len(), 64);
    assert_eq!(r["config_id"], json!(config_id));
    assert_eq!(r["revision"], 1);
    assert_eq!(r["texts_hash"], revs[0]["texts_hash"]);
    assert_eq!(r["language"], "sv", "the config's language tag");
    assert_eq!(r["choices"], json!({"necessary": true, "functional": false, "analytics": true, "marketing": false}));
    assert_eq!((r["action"].as_str(), r["source"].as_str()), (Some("custom"), Some("api")));
    assert_eq!(r["signals"], json!({"dnt": false, "gpc": true}));
    assert!(r["country"].is_null());
    assert_eq!(r["ip_truncated"], "127.0.0.0");
    assert_eq!(r["user_agent"], "Mozilla/5.0 (X11)");
    assert!(r["created_at"].is_string() && r["expires_at"].is_string());
    assert_eq!(r["prev_hash"], "0".repeat(64));
    assert_eq!(r["hash"].as_str().unwrap().len(), 64);
    for key in [
        "id",
        "seq",
        "visitor_id",
        "visitor_hash",
        "config_id",
        "revision",
        "texts_hash",
        "language",
        "choices",
        "action",
        "source",
        "signals",
        "country",
        "ip_truncated",
        "user_agent",
        "created_at",
        "expires_at",
        "prev_hash",
        "hash",
    ] {
        assert!(r.get(key).is_some(), "{key} missing");
    }
}

/// Filters by category match JSON booleans only: a stored choice the gateway cannot read as one
/// (the string "true", the number 1) is neither granted nor refused — on both backends alike.
#[tokio::test]
async fn a_category_filter_matches_json_booleans_only() {
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    app.consent("alice", "accept_all", 1).await; // 1
    app.consent("bob", "accept_all", 1).await; // 2
    app.consent("carol", "accept_all", 1).await; // 3
    let rows = entity::consent_record::Entity::find().all(&app.db).await.unwrap();
    for row in rows {
        let odd = match row.seq {
            2 => json!("true"),
            3 => json!(1),
            _ => continue,
        };
        let mut choices = row.choices.clone();
        choices["analytics"] = odd;
        let mut m: entity::consent_record::ActiveModel = row.into();
        m.choices = Set(choices);
        m.update(&app.db).await.unwrap();
    }
    assert_eq!(seqs(&list(&app, "?analytics=true").await), [1]);
    assert!(seqs(&list(&app, "?analytics=false").await).is_empty());
}

#[tokio::test]
async fn records_are_filtered_and_paged_in_chain_order() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    app.consent("alice", "accept_all", 1).await; // 1
    app.consent("bob", "reject_all", 1).await; // 2
    app.consent("carol", "custom", 1).await; // 3 (analytics only)
    app.publish(&id, true).await;
    app.consent("alice", "reject_all", 2).await; // 4
    app.consent("dave", "accept_all", 2).await; // 5
    let (s, _) = send(app.public(Method::DELETE, &format!("/v1/tenants/{}/consent/bob", app.tenant))).await; // 6
    assert_eq!(s, StatusCode::CREATED);

    assert_eq!(seqs(&list(&app, "").await), [1, 2, 3, 4, 5, 6]);
    assert_eq!(seqs(&list(&app, "?visitor_id=alice").await), [1, 4]);
    assert_eq!(seqs(&list(&app, "?action=accept_all").await), [1, 5]);
    assert_eq!(seqs(&list(&app, "?action=withdraw").await), [6]);
    assert_eq!(seqs(&list(&app, "?analytics=true").await), [1, 3, 5]);
    assert_eq!(seqs(&list(&app, "?marketing=false&revision=1").await), [2, 3]);
    assert_eq!(seqs(&list(&app, "?revision=2&visitor_id=dave").await), [5]);
    // `from` and `to` make a half-open range: the instant of record 4 splits the list there.
    let fourth = &list(&app, "?visitor_id=alice").await["items"][1];
    assert_eq!(fourth["seq"], 4);
    let middle = chrono::DateTime::parse_from_rfc3339(fourth["created_at"].as_str().unwrap()).unwrap();
    let middle = middle.to_utc().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert_eq!(seqs(&list(&app, &format!("?to={middle}")).await), [1, 2, 3]);
    assert_eq!(seqs(&list(&app, &format!("?from={middle}")).await), [4, 5, 6]);
    assert_eq!(seqs(&list(&app, &format!("?config_id={id}&functional=true")).await), [1, 5]);
    let hash = list(&app, "?visitor_id=bob").await["items"][0]["visitor_hash"].clone();
    assert_eq!(seqs(&list(&app, &format!("?visitor_hash={}", hash.as_str().unwrap())).await), [2, 6]);

    // Pages of two, by cursor, with a stable order.
    let mut all = Vec::new();
    let mut query = "?limit=2".to_string();
    loop {
        let page = list(&app, &query).await;
        all.extend(seqs(&page));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(all, [1, 2, 3, 4, 5, 6]);

    // A misspelt or malformed filter is an error, not a silently wider result.
    for bad in ["?analytic=true", "?analytics=maybe", "?from=yesterday", "?action=nope", "?cursor=abc"] {
        let got = app.get(&records_path(&app, bad), &app.auditor).await;
        assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
    }
}

async fn tenant_model(app: &TestApp) -> entity::tenant::Model {
    consentgate::tenants::find(&app.db, &app.tenant).await.unwrap().unwrap()
}

/// Appends `n` records directly (faster than HTTP for volume).
async fn append_many(app: &TestApp, config_id: &str, n: usize, user_agent: &str) {
    let tenant = tenant_model(app).await;
    let (_, revs) = app.get(&format!("{}/{config_id}/revisions", app.consent_configs_path()), &app.admin).await;
    let texts_hash = revs[0]["texts_hash"].as_str().unwrap().to_string();
    for i in 0..n {
        let new = NewRecord {
            visitor: VisitorId::parse(&format!("bulk-{i}")).unwrap(),
            config_id: config_id.parse().unwrap(),
            revision: 1,
            texts_hash: texts_hash.clone(),
            language: "en".into(),
            choices: if i % 2 == 0 { Choices::all() } else { Choices::none() },
            action: if i % 2 == 0 { Action::AcceptAll } else { Action::RejectAll },
            source: "import".into(),
            dnt: false,
            gpc: false,
            country: Some("SE".into()),
            ip_truncated: Some("203.0.113.0".into()),
            user_agent: Some(user_agent.into()),
            expiry_days: 180,
            provider_choices: None,
        };
        records::append(&app.db, &tenant, &new).await.unwrap();
    }
}

#[tokio::test]
async fn exports_stream_every_matching_record_as_csv_and_ndjson() {
    let app = spawn_app().await;
    let id = app.publish_consent_config(json!({})).await;
    // More than two export pages (500 each), with a user agent that needs escaping.
    let nasty = "=HYPERLINK(\"http://evil\"), \"quoted\"\nnext line";
    append_many(&app, &id, 1_050, nasty).await;

    let res = app.request(Method::GET, &records_path(&app, "/export?format=csv"), &app.auditor).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert!(
        res.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"consent-records-acme-")
    );
    let csv = res.text().await.unwrap();
    let lines: Vec<&str> = csv.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert!(lines[0].starts_with("id,seq,visitor_id,visitor_hash,config_id,revision,texts_hash,language,necessary,functional,analytics,marketing,action"));
    // The user agent's quoted line break continues a record, so count records by their ids.
    assert_eq!(csv.matches(",bulk-").count(), 1_050);
    assert!(csv.contains("\"'=HYPERLINK(\"\"http://evil\"\"), \"\"quoted\"\"\nnext line\""), "escaped and neutralised");
    assert!(!csv.contains(",=HYPERLINK"));

    let res = app
        .request(Method::GET, &records_path(&app, "/export?format=ndjson&action=accept_all"), &app.auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()[header::CONTENT_TYPE], "application/x-ndjson");
    let text = res.text().await.unwrap();
    let rows: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 525);
    assert!(rows.iter().all(|r| r["action"] == "accept_all" && r["user_agent"] == nasty));
    let seqs: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "chain order");

    let got = app.get(&records_path(&app, "/export?format=xml"), &app.auditor).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
    let got = app.get(&records_path(&app, "/export"), &app.auditor).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);

    // The whole chain verifies across pages.
    let v = verify(&app).await;
    assert_eq!((v["ok"].as_bool(), v["checked"].as_u64()), (Some(true), Some(1_050)));
    assert_eq!(v["head"]["seq"], 1_050);
}

#[tokio::test]
async fn an_auditor_can_recompute_every_hash_from_the_export_alone() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    app.consent("a", "accept_all", 1).await;
    let (s, _) = send(
        app.public(Method::POST, &app.consent_path())
            .header("user-agent", r#"Mozilla/5.0 "quoted" back\slash"#)
            .header("dnt", "1")
            .json(&json!({"visitor_id": "b", "action": "custom", "revision": 1, "choices": {"marketing": true}})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    app.consent("a", "reject_all", 1).await;
    app.delete(&records_path(&app, "?visitor_id=a"), &app.admin).await;
    assert_eq!(list(&app, "?visitor_id=b").await["items"][0]["user_agent"], r#"Mozilla/5.0 "quoted" back\slash"#);

    let res =
        app.request(Method::GET, &records_path(&app, "/export?format=ndjson"), &app.auditor).send().await.unwrap();
    let mut prev = "0".repeat(64);
    for line in res.text().await.unwrap().lines() {
        // The documented recipe: drop visitor_id, prev_hash and hash; canonical JSON; chain.
        let mut r: Value = serde_json::from_str(line).unwrap();
        let o = r.as_object_mut().unwrap();
        let hash = o.remove("hash").unwrap();
        assert_eq!(o.remove("prev_hash").unwrap(), json!(prev));
        o.remove("visitor_id");
        let canonical = consentgate::consent::canonical::to_string(&r);
        let recomputed = consentgate::crypto::sha256_hex(format!("{prev}{canonical}"));
        assert_eq!(json!(recomputed), hash, "{line}");
        prev = recomputed;
    }
    assert_eq!(verify(&app).await["head"]["hash"], json!(prev));
}

#[tokio::test]
async fn an_edited_record_breaks_the_chain_and_verify_says_where() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    for v in ["a", "b", "c", "d"] {
        app.consent(v, "reject_all", 1).await;
    }
    let v = verify(&app).await;
    assert_eq!(v["ok"], true);
    assert_eq!(v["checked"], 4);
    assert!(v["first_broken"].is_null());
    let last = list(&app, "?visitor_id=d").await;
    assert_eq!(v["head"], json!({"seq": 4, "hash": last["items"][0]["hash"]}));

    // Someone with database access turns a rejection into consent.
    let choices = r#"{"necessary":true,"functional":true,"analytics":true,"marketing":true}"#;
    app.db
        .execute_unprepared(&format!(
            "UPDATE consent_record SET choices = '{choices}', action = 'accept_all' WHERE seq = 2"
        ))
        .await
        .unwrap();
    let v = verify(&app).await;
    assert_eq!((v["ok"].as_bool(), v["checked"].as_u64()), (Some(false), Some(2)));
    let broken = &v["first_broken"];
    assert_eq!((broken["seq"].as_i64(), broken["reason"].as_str()), (Some(2), Some("hash_mismatch")));
    assert_eq!(broken["id"], list(&app, "?visitor_id=b").await["items"][0]["id"]);
    assert!(v["head"].is_null());
}

/// The visitor id is outside the hash (so it can be erased), yet it cannot be swapped: a record
/// given another visitor's id, or an erased id put back, no longer matches its hashed
/// `visitor_hash`.
#[tokio::test]
async fn a_visitor_id_swapped_in_a_record_breaks_the_chain() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    for v in ["a", "b", "c"] {
        app.consent(v, "accept_all", 1).await;
    }
    app.db.execute_unprepared("UPDATE consent_record SET visitor_id = 'c' WHERE seq = 2").await.unwrap();
    let v = verify(&app).await;
    assert_eq!((v["ok"].as_bool(), v["checked"].as_u64()), (Some(false), Some(2)), "{v}");
    assert_eq!(
        (v["first_broken"]["seq"].as_i64(), v["first_broken"]["reason"].as_str()),
        (Some(2), Some("visitor_id_mismatch"))
    );
    // An erased id (null) is no mismatch; putting it back as it was makes the chain whole again.
    app.db.execute_unprepared("UPDATE consent_record SET visitor_id = NULL WHERE seq = 2").await.unwrap();
    assert_eq!(verify(&app).await["ok"], true);
    app.db.execute_unprepared("UPDATE consent_record SET visitor_id = 'b' WHERE seq = 2").await.unwrap();
    assert_eq!(verify(&app).await["ok"], true);
}

#[tokio::test]
async fn a_deleted_record_breaks_the_chain() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    for v in ["a", "b", "c"] {
        app.consent(v, "accept_all", 1).await;
    }
    app.db.execute_unprepared("DELETE FROM consent_record WHERE seq = 2").await.unwrap();
    let v = verify(&app).await;
    assert_eq!(v["first_broken"]["seq"], 3);
    assert_eq!(v["first_broken"]["reason"], "seq_gap");
}

#[tokio::test]
async fn erasing_a_visitor_keeps_the_proof_verifiable() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    app.consent("erase-me", "accept_all", 1).await;
    app.consent("keep-me", "accept_all", 1).await;
    app.consent("erase-me", "custom", 1).await;
    let hash = list(&app, "?visitor_id=erase-me").await["items"][0]["visitor_hash"].as_str().unwrap().to_string();

    let path = records_path(&app, "?visitor_id=erase-me");
    assert_error(&app.delete(&path, &app.auditor).await, StatusCode::FORBIDDEN, "forbidden", None);
    let (s, erased) = app.delete(&path, &app.admin).await;
    assert_eq!(s, StatusCode::OK, "{erased}");
    assert_eq!(erased, json!({"erased": 2, "visitor_hash": hash}));

    assert_eq!(list(&app, "?visitor_id=erase-me").await["items"], json!([]));
    let pseudonymous = list(&app, &format!("?visitor_hash={hash}")).await;
    assert_eq!(seqs(&pseudonymous), [1, 3]);
    assert!(pseudonymous["items"].as_array().unwrap().iter().all(|r| r["visitor_id"].is_null()));
    assert_eq!(list(&app, "?visitor_id=keep-me").await["items"][0]["visitor_id"], "keep-me");
    assert_eq!(verify(&app).await["ok"], true);

    // The visitor is forgotten: asked afresh.
    let (_, st) = send(app.public(Method::GET, &format!("/v1/tenants/{}/consent/erase-me", app.tenant))).await;
    assert_eq!(st["reason"], "no_record");

    // The audit log names the pseudonym, never the erased id.
    let (_, log) = app.get(&format!("/v1/tenants/{}/audit-log", app.tenant), &app.auditor).await;
    let entry = &log["items"][0];
    assert_eq!(
        (entry["action"].as_str(), entry["entity_id"].as_str()),
        (Some("consent_record.erase"), Some(hash.as_str()))
    );
    assert!(!log.to_string().contains("erase-me"));

    let got = app.delete(&records_path(&app, ""), &app.admin).await;
    assert_error(&got, StatusCode::BAD_REQUEST, "bad_request", None);
    let (s, none) = app.delete(&records_path(&app, "?visitor_id=nobody"), &app.admin).await;
    assert_eq!((s, none["erased"].as_u64()), (StatusCode::OK, Some(0)));
}

#[tokio::test]
async fn concurrent_consent_writes_never_fork_the_chain() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    let writes = (0..20).map(|i| {
        let req = app
            .public(Method::POST, &app.consent_path())
            .json(&json!({"visitor_id": format!("concurrent-{i}"), "action": "accept_all", "revision": 1}));
        async move { send(req).await }
    });
    let results = futures_util::future::join_all(writes).await;
    for (s, body) in &results {
        assert_eq!(*s, StatusCode::CREATED, "{body}");
    }
    let v = verify(&app).await;
    assert_eq!((v["ok"].as_bool(), v["checked"].as_u64()), (Some(true), Some(20)), "{v}");
    let page = list(&app, "").await;
    assert_eq!(seqs(&page), (1..=20).collect::<Vec<_>>());
    let prevs: std::collections::HashSet<&str> =
        page["items"].as_array().unwrap().iter().map(|r| r["prev_hash"].as_str().unwrap()).collect();
    assert_eq!(prevs.len(), 20, "every record links to a different predecessor: no fork");
}

#[tokio::test]
async fn chains_are_per_tenant() {
    let app = spawn_app().await;
    app.publish_consent_config(json!({})).await;
    app.consent("same-visitor", "accept_all", 1).await;
    let (other, other_admin, other_auditor) = app.create_tenant("other-shop").await;
    let mut body = crate::helpers::consent_config();
    body["display_name"] = json!("Other");
    let (_, created) =
        app.post(&format!("/v1/tenants/{other}/analytics/cookie-consent/configs"), &other_admin, body).await;
    let (s, _) = app
        .post(
            &format!(
                "/v1/tenants/{other}/analytics/cookie-consent/configs/{}/publish",
                created["id"].as_str().unwrap()
            ),
            &other_admin,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = send(
        app.public(Method::POST, &format!("/v1/tenants/{other}/consent"))
            .json(&json!({"visitor_id": "same-visitor", "action": "reject_all", "revision": 1})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, theirs) = app.get(&format!("/v1/tenants/{other}/consent-records"), &other_auditor).await;
    let ours = list(&app, "").await;
    assert_eq!((seqs(&theirs), seqs(&ours)), (vec![1], vec![1]));
    assert_ne!(theirs["items"][0]["visitor_hash"], ours["items"][0]["visitor_hash"], "salted per tenant");
    assert_eq!(theirs["items"][0]["action"], "reject_all");
}
