//! At most one active cookie consent config per tenant, enforced by the database: a partial
//! unique index (PostgreSQL and SQLite both support `CREATE UNIQUE INDEX … WHERE`), so two
//! concurrent publishes can never leave a tenant with two active configs.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared(
            "CREATE UNIQUE INDEX ux_cookie_consent_config_one_active ON cookie_consent_config (tenant_id) \
             WHERE status = 'active'",
        )
        .await?;
        // Auditors filter consent records by time; the chain index (tenant_id, seq) orders them.
        db.execute_unprepared("CREATE INDEX ix_consent_record_created ON consent_record (tenant_id, created_at)")
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let db = m.get_connection();
        db.execute_unprepared("DROP INDEX ix_consent_record_created").await?;
        db.execute_unprepared("DROP INDEX ux_cookie_consent_config_one_active").await?;
        Ok(())
    }
}
