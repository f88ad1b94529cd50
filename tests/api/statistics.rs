//! PostgreSQL's statistics for the tables ingest writes, while they are young
//! (`db::statistics`): a fresh deployment's plans are made again as its tables grow.

use consentgate::db::statistics;
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

use crate::helpers::*;

/// The app's background task analyzes `analytics_event` once it has grown from nothing to 3,000
/// rows (autovacuum would wait for its next round, a minute by default); afterwards the
/// idempotency lookup's generic plan — the one every connection keeps — goes through the unique
/// index instead of reading the tenant's every event. On SQLite there is nothing to do.
#[tokio::test]
async fn a_young_table_is_analyzed_as_it_grows_and_its_plans_follow() {
    let app = spawn_app().await;
    if app.db.get_database_backend() != DbBackend::Postgres {
        assert!(statistics::analyze_due(&app.db).await.unwrap().is_empty());
        let stat1 = app.db.query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'",
        ));
        assert!(stat1.await.unwrap().is_none(), "nothing was analyzed on SQLite");
        return;
    }
    let pg = |sql: &str, values: Vec<sea_orm::Value>| Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
    let tenant: uuid::Uuid = app
        .db
        .query_one_raw(pg("SELECT id FROM tenant WHERE slug = $1", vec![app.tenant.clone().into()]))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap();
    let last_analyze = || async {
        let row = app.db.query_one_raw(pg(
            "SELECT last_analyze IS NOT NULL AS analyzed, (SELECT reltuples FROM pg_class WHERE relname = 'analytics_event') AS rows \
             FROM pg_stat_user_tables WHERE relname = 'analytics_event'",
            vec![],
        ));
        let row = row.await.unwrap().unwrap();
        (row.try_get::<bool>("", "analyzed").unwrap(), row.try_get::<f32>("", "rows").unwrap())
    };
    assert!(!last_analyze().await.0, "a fresh database's table was never analyzed");

    app.db
        .execute_raw(pg(
            "INSERT INTO analytics_event (id, tenant_id, event_name, event_properties, anonymous_id, context, \
             occurred_at, received_at, dnt, gpc, idempotency_key, key_kind) \
             SELECT gen_random_uuid(), $1, 'pageview', '{}', 'visitor-' || (g % 100), '{}', now(), now(), false, \
             false, md5(g::text), 'secret' FROM generate_series(1, 3000) g",
            vec![tenant.into()],
        ))
        .await
        .unwrap();
    // Each backend reports its counters within a second or so; the app reads them every 2 s.
    let rows = eventually(30, || async {
        let (analyzed, rows) = last_analyze().await;
        analyzed.then_some(rows)
    })
    .await;
    assert!(rows >= 3000.0, "the statistics describe the table as it is: {rows} rows");

    let tx = app.db.begin().await.unwrap();
    tx.execute_unprepared("SET LOCAL plan_cache_mode = force_generic_plan").await.unwrap();
    tx.execute_unprepared(
        "PREPARE young_lookup(uuid, varchar, varchar) AS SELECT id FROM analytics_event \
         WHERE tenant_id IN ($1) AND idempotency_key IN ($2, $3)",
    )
    .await
    .unwrap();
    let plan = tx
        .query_all_raw(pg(&format!("EXPLAIN EXECUTE young_lookup('{tenant}', 'a', 'b')"), vec![]))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    tx.execute_unprepared("DEALLOCATE young_lookup").await.unwrap();
    tx.rollback().await.unwrap();
    assert!(plan.contains("ux_analytics_event_idempotency_kind"), "the lookup uses the unique index:\n{plan}");
}
