//! Per-provider choices (issue 10): a visitor may allow one provider and refuse another within a
//! category, when the consent config offers it.
//!
//! - `cookie_consent_config.per_provider_choices`: the config flag (off by default).
//! - `provider_config.privacy_policy_url`: the link the banner shows for the provider.
//! - `consent_record.provider_choices`: the visitor's per-provider choices and the offer they
//!   were made on (JSON, null without them).
//! - `consent_record.canonical_version`: the form of the record the hash chain covers. Records
//!   written before this migration are version 1 (they hash as they always did); the gateway
//!   writes version 2, which also covers `provider_choices` (docs/consent-model.md).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CookieConsentConfig {
    Table,
    PerProviderChoices,
}

#[derive(DeriveIden)]
enum ProviderConfig {
    Table,
    PrivacyPolicyUrl,
}

#[derive(DeriveIden)]
enum ConsentRecord {
    Table,
    ProviderChoices,
    CanonicalVersion,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        m.alter_table(
            Table::alter()
                .table(CookieConsentConfig::Table)
                .add_column(boolean(CookieConsentConfig::PerProviderChoices).default(false))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(ProviderConfig::Table)
                .add_column(string_null(ProviderConfig::PrivacyPolicyUrl))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(ConsentRecord::Table)
                .add_column(json_binary_null(ConsentRecord::ProviderChoices))
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(ConsentRecord::Table)
                .add_column(integer(ConsentRecord::CanonicalVersion).default(1))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in [ConsentRecord::CanonicalVersion, ConsentRecord::ProviderChoices] {
            m.alter_table(Table::alter().table(ConsentRecord::Table).drop_column(col).to_owned()).await?;
        }
        m.alter_table(
            Table::alter().table(ProviderConfig::Table).drop_column(ProviderConfig::PrivacyPolicyUrl).to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(CookieConsentConfig::Table)
                .drop_column(CookieConsentConfig::PerProviderChoices)
                .to_owned(),
        )
        .await?;
        Ok(())
    }
}
