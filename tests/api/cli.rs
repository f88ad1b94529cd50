//! The `consentgate` command as an operator runs it.

use std::process::Command;

use migration::{Migrator, MigratorTrait};
use sea_orm::Database;

use crate::helpers::TestDatabase;

fn consentgate(db_url: &str) -> Command {
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
