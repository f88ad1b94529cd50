//! The `consentgate` command as an operator runs it.

use std::process::Command;

use migration::{Migrator, MigratorTrait};
use sea_orm::Database;

use crate::helpers::TestDatabase;

/// The gateway binary on `db_url`, with a clean environment, as an operator would start it.
pub(crate) fn consentgate(db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consentgate"));
    cmd.env_remove("RUST_LOG").env("CONSENTGATE__DATABASE__URL", db_url).current_dir(std::env::temp_dir());
    cmd
}

#[tokio::test]
async fn tenant_and_token_creation_print_the_token_once() {
    let db = TestDatabase::create().await;
    let out = consentgate(&db.url).args(["tenant", "create", "shop-one", "--name", "Shop One"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["tenant"], "shop-one");
    assert!(line["admin_token"].as_str().unwrap().starts_with("cg_"));

    let out =
        consentgate(&db.url).args(["token", "create", "--tenant", "shop-one", "--role", "auditor"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["role"], "auditor");

    // The same slug twice is refused, with a message and a failing exit code.
    let out = consentgate(&db.url).args(["tenant", "create", "shop-one"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
}

#[tokio::test]
async fn an_invalid_slug_is_refused() {
    let db = TestDatabase::create().await;
    let out = consentgate(&db.url).args(["tenant", "create", "Not_Valid"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lowercase letters"));
}

#[test]
fn a_bad_config_value_stops_start_up_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .env("CONSENTGATE__SERVER__MAX_BODY_BYTES", "lots")
        .args(["migrate"])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("server.max_body_bytes"), "{err}");
}

#[test]
fn a_bad_config_file_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[delivery]\nmax_atempts = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_consentgate"))
        .args(["--config", file.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_atempts"));
}

#[tokio::test]
async fn migrate_applies_everything_from_empty_and_rolls_back() {
    let db = TestDatabase::create().await;
    let out = consentgate(&db.url).arg("migrate").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let conn = Database::connect(&db.url).await.unwrap();
    assert!(Migrator::get_pending_migrations(&conn).await.unwrap().is_empty());
    Migrator::down(&conn, None).await.unwrap();
    assert_eq!(Migrator::get_applied_migrations(&conn).await.unwrap().len(), 0);
    Migrator::up(&conn, None).await.unwrap();
    assert!(Migrator::get_pending_migrations(&conn).await.unwrap().is_empty());
    conn.close().await.unwrap();
}

/// Tokens are secrets: the running server must never write one to its log, even at the most
/// verbose level, whether the token is valid, revoked or wrong.
#[tokio::test]
async fn secrets_never_reach_the_log() {
    use std::{io::BufRead, process::Stdio};

    let db = TestDatabase::create().await;
    let out = consentgate(&db.url).args(["tenant", "create", "log-check"]).output().unwrap();
    let token =
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["admin_token"].as_str().unwrap().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = consentgate(&db.url)
        .env("RUST_LOG", "trace")
        .env("CONSENTGATE__SERVER__BIND", format!("127.0.0.1:{port}"))
        .env("CONSENTGATE__LOG__FORMAT", "json")
        .arg("serve")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Read the log while the server runs: at trace level it fills a pipe's buffer within seconds,
    // and a server blocked writing its log answers nothing.
    let stderr = server.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        std::io::BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<String>>()
    });
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let tokens = format!("{base}/v1/tenants/log-check/tokens");
    crate::helpers::eventually(20, || async { http.get(format!("{base}/healthz")).send().await.ok().map(|_| ()) })
        .await;
    let wrong = "cg_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let created: serde_json::Value = http
        .post(&tokens)
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "n", "role": "auditor"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = created["secret"].as_str().unwrap().to_string();
    for t in [token.as_str(), wrong, new_secret.as_str()] {
        let _ = http.get(&tokens).bearer_auth(t).send().await.unwrap();
    }
    let _ = http.get(format!("{base}/v1/tenants/other/tokens")).bearer_auth(&token).send().await.unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(log.len() > 5, "the server logged: {log:?}");
    let log = log.join("\n");
    assert!(log.contains("/v1/tenants/log-check/tokens"), "requests were logged");
    for secret in [&token[3..], &wrong[3..], &new_secret[3..]] {
        assert!(!log.contains(secret), "a token reached the log");
    }
}
