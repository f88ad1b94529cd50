//! Connecting to the database and migrating it. SQLite is the embedded default (a file in WAL
//! mode, created on first start); PostgreSQL is for scale-out. Both run the same migrations.

use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use crate::config::{DatabaseSettings, redact_url};

pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<DatabaseConnection> {
    let mut opts = ConnectOptions::new(settings.url.clone());
    opts.max_connections(settings.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        // sqlx logs every statement at INFO; statements are not what an operator wants to read.
        .sqlx_logging(false);
    let db = Database::connect(opts)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", redact_url(&settings.url)))?;
    if db.get_database_backend() == DbBackend::Sqlite {
        // WAL lets readers proceed while the single writer commits; the busy timeout makes a
        // writer wait for the lock instead of failing with SQLITE_BUSY under concurrent requests.
        for pragma in [
            "PRAGMA journal_mode=WAL",
            "PRAGMA busy_timeout=10000",
            "PRAGMA foreign_keys=ON",
            "PRAGMA synchronous=NORMAL",
        ] {
            db.execute_unprepared(pragma).await?;
        }
    }
    Ok(db)
}

pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    Migrator::up(db, None).await?;
    Ok(())
}

/// True when every known migration has been applied (for `/readyz`).
pub async fn is_migrated(db: &DatabaseConnection) -> Result<bool, sea_orm::DbErr> {
    Ok(Migrator::get_pending_migrations(db).await?.is_empty())
}

/// Starts a transaction that no other `begin_tenant_write` of the same tenant runs alongside:
/// for read-then-write sequences whose outcome depends on what was read (appending to the
/// tenant's consent hash chain, switching its active config).
///
/// PostgreSQL: `SELECT … FOR NO KEY UPDATE` on the tenant row, so other tenants are not held up
/// (and, unlike `FOR UPDATE`, foreign-key checks of rows inserted for the tenant elsewhere —
/// events, audit entries — are not blocked either).
/// SQLite: `BEGIN IMMEDIATE`, which takes the database's single write lock up front (SQLite
/// serialises all writers anyway; a deferred transaction that read first would instead fail
/// with `SQLITE_BUSY` when it tries to write after another writer committed).
pub async fn begin_tenant_write(
    db: &DatabaseConnection,
    tenant_id: Uuid,
) -> Result<DatabaseTransaction, sea_orm::DbErr> {
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            db.begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
        }
        backend => {
            let txn = db.begin().await?;
            txn.execute_raw(Statement::from_sql_and_values(
                backend,
                "SELECT id FROM tenant WHERE id = $1 FOR NO KEY UPDATE",
                [tenant_id.into()],
            ))
            .await?;
            Ok(txn)
        }
    }
}

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`, taking the write lock
/// up front: a deferred transaction that reads and then writes fails with `SQLITE_BUSY` (which the
/// busy timeout cannot wait out) when another connection wrote in between. PostgreSQL ignores
/// the option.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, sea_orm::DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}
