//! The initial schema: tenants and their tokens and keys, consent configuration and records,
//! provider configurations, events, forwarding decisions, the delivery outbox and the audit log.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tenant {
    Table,
    Id,
    Slug,
    Name,
    Salt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiToken {
    Table,
    Id,
    TenantId,
    Role,
    Name,
    TokenHash,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum IngestKey {
    Table,
    Id,
    TenantId,
    Kind,
    Name,
    Prefix,
    KeyHash,
    PublicKey,
    AllowedOrigins,
    RateLimitPerMinute,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum CookieConsentConfig {
    Table,
    Id,
    TenantId,
    DisplayName,
    Status,
    Banner,
    Categories,
    Texts,
    DefaultLanguage,
    PrivacyPolicyUrl,
    CookiePolicyUrl,
    ConsentExpiryDays,
    GeoTargetingEnabled,
    ConsentRequiredRegions,
    RespectDoNotTrack,
    AllowedOrigins,
    Revision,
    ReconsentRevision,
    PublishedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ConsentConfigRevision {
    Table,
    Id,
    TenantId,
    ConfigId,
    Revision,
    RequiresReconsent,
    Snapshot,
    TextsHash,
    PublishedAt,
    PublishedBy,
}

#[derive(DeriveIden)]
enum ConsentRecord {
    Table,
    Id,
    TenantId,
    Seq,
    VisitorId,
    VisitorHash,
    ConfigId,
    Revision,
    TextsHash,
    Language,
    Choices,
    Action,
    Source,
    Dnt,
    Gpc,
    Country,
    IpTruncated,
    UserAgent,
    CreatedAt,
    ExpiresAt,
    PrevHash,
    Hash,
}

#[derive(DeriveIden)]
enum ProviderConfig {
    Table,
    Id,
    TenantId,
    Provider,
    DisplayName,
    Status,
    StatusReason,
    RequiredCategory,
    Settings,
    Credentials,
    EventsSent,
    EventsFailed,
    EventsDeniedByConsent,
    EventsDropped,
    LastSentAt,
    LastErrorAt,
    LastError,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AnalyticsEvent {
    Table,
    Id,
    TenantId,
    Provider,
    EventName,
    EventProperties,
    UserId,
    AnonymousId,
    SessionId,
    PageUrl,
    Referrer,
    Title,
    UserAgent,
    Language,
    Screen,
    Revenue,
    Context,
    OccurredAt,
    ReceivedAt,
    IpTruncated,
    Country,
    Dnt,
    Gpc,
    IdempotencyKey,
}

#[derive(DeriveIden)]
enum ForwardingDecision {
    Table,
    Id,
    TenantId,
    EventId,
    ConfigId,
    Provider,
    Decision,
    Identity,
    Reason,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Delivery {
    Table,
    Id,
    TenantId,
    EventId,
    ConfigId,
    Provider,
    Identity,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseOwner,
    LeaseUntil,
    LastStatus,
    LastError,
    Warning,
    DeliveredAt,
    ClientIp,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuditLog {
    Table,
    Id,
    TenantId,
    Actor,
    Action,
    EntityType,
    EntityId,
    Before,
    After,
    CreatedAt,
}

fn tenant_fk(table: impl IntoIden + 'static, column: impl IntoIden + 'static) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(table, column)
        .to(Tenant::Table, Tenant::Id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Tenant::Table)
                .col(pk_uuid(Tenant::Id))
                .col(string_uniq(Tenant::Slug))
                .col(string(Tenant::Name))
                .col(string(Tenant::Salt))
                .col(timestamp_with_time_zone(Tenant::CreatedAt))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ApiToken::Table)
                .col(pk_uuid(ApiToken::Id))
                .col(uuid(ApiToken::TenantId))
                .col(string(ApiToken::Role))
                .col(string(ApiToken::Name))
                .col(string_uniq(ApiToken::TokenHash))
                .col(timestamp_with_time_zone(ApiToken::CreatedAt))
                .col(timestamp_with_time_zone_null(ApiToken::LastUsedAt))
                .col(timestamp_with_time_zone_null(ApiToken::RevokedAt))
                .foreign_key(&mut tenant_fk(ApiToken::Table, ApiToken::TenantId))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(IngestKey::Table)
                .col(pk_uuid(IngestKey::Id))
                .col(uuid(IngestKey::TenantId))
                .col(string(IngestKey::Kind))
                .col(string(IngestKey::Name))
                .col(string(IngestKey::Prefix))
                .col(string_uniq(IngestKey::KeyHash))
                .col(string_null(IngestKey::PublicKey))
                .col(json_binary(IngestKey::AllowedOrigins))
                .col(integer_null(IngestKey::RateLimitPerMinute))
                .col(timestamp_with_time_zone(IngestKey::CreatedAt))
                .col(timestamp_with_time_zone_null(IngestKey::LastUsedAt))
                .col(timestamp_with_time_zone_null(IngestKey::RevokedAt))
                .foreign_key(&mut tenant_fk(IngestKey::Table, IngestKey::TenantId))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(CookieConsentConfig::Table)
                .col(pk_uuid(CookieConsentConfig::Id))
                .col(uuid(CookieConsentConfig::TenantId))
                .col(string(CookieConsentConfig::DisplayName))
                .col(string(CookieConsentConfig::Status))
                .col(json_binary(CookieConsentConfig::Banner))
                .col(json_binary(CookieConsentConfig::Categories))
                .col(json_binary(CookieConsentConfig::Texts))
                .col(string(CookieConsentConfig::DefaultLanguage))
                .col(string_null(CookieConsentConfig::PrivacyPolicyUrl))
                .col(string_null(CookieConsentConfig::CookiePolicyUrl))
                .col(integer(CookieConsentConfig::ConsentExpiryDays))
                .col(boolean(CookieConsentConfig::GeoTargetingEnabled))
                .col(json_binary(CookieConsentConfig::ConsentRequiredRegions))
                .col(boolean(CookieConsentConfig::RespectDoNotTrack))
                .col(json_binary(CookieConsentConfig::AllowedOrigins))
                .col(integer(CookieConsentConfig::Revision))
                .col(integer(CookieConsentConfig::ReconsentRevision))
                .col(timestamp_with_time_zone_null(CookieConsentConfig::PublishedAt))
                .col(timestamp_with_time_zone(CookieConsentConfig::CreatedAt))
                .col(timestamp_with_time_zone(CookieConsentConfig::UpdatedAt))
                .foreign_key(&mut tenant_fk(CookieConsentConfig::Table, CookieConsentConfig::TenantId))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ConsentConfigRevision::Table)
                .col(pk_uuid(ConsentConfigRevision::Id))
                .col(uuid(ConsentConfigRevision::TenantId))
                .col(uuid(ConsentConfigRevision::ConfigId))
                .col(integer(ConsentConfigRevision::Revision))
                .col(boolean(ConsentConfigRevision::RequiresReconsent))
                .col(json_binary(ConsentConfigRevision::Snapshot))
                .col(string(ConsentConfigRevision::TextsHash))
                .col(timestamp_with_time_zone(ConsentConfigRevision::PublishedAt))
                .col(string_null(ConsentConfigRevision::PublishedBy))
                .foreign_key(&mut tenant_fk(ConsentConfigRevision::Table, ConsentConfigRevision::TenantId))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_consent_config_revision")
                .table(ConsentConfigRevision::Table)
                .col(ConsentConfigRevision::ConfigId)
                .col(ConsentConfigRevision::Revision)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ConsentRecord::Table)
                .col(pk_uuid(ConsentRecord::Id))
                .col(uuid(ConsentRecord::TenantId))
                .col(big_integer(ConsentRecord::Seq))
                .col(string_null(ConsentRecord::VisitorId))
                .col(string(ConsentRecord::VisitorHash))
                .col(uuid(ConsentRecord::ConfigId))
                .col(integer(ConsentRecord::Revision))
                .col(string(ConsentRecord::TextsHash))
                .col(string(ConsentRecord::Language))
                .col(json_binary(ConsentRecord::Choices))
                .col(string(ConsentRecord::Action))
                .col(string(ConsentRecord::Source))
                .col(boolean(ConsentRecord::Dnt))
                .col(boolean(ConsentRecord::Gpc))
                .col(string_null(ConsentRecord::Country))
                .col(string_null(ConsentRecord::IpTruncated))
                .col(text_null(ConsentRecord::UserAgent))
                .col(timestamp_with_time_zone(ConsentRecord::CreatedAt))
                .col(timestamp_with_time_zone(ConsentRecord::ExpiresAt))
                .col(string(ConsentRecord::PrevHash))
                .col(string(ConsentRecord::Hash))
                .foreign_key(&mut tenant_fk(ConsentRecord::Table, ConsentRecord::TenantId))
                .to_owned(),
        )
        .await?;
        // One position in the chain per tenant: two concurrent appends that read the same head
        // cannot both commit, so the chain can never fork.
        m.create_index(
            Index::create()
                .name("ux_consent_record_seq")
                .table(ConsentRecord::Table)
                .col(ConsentRecord::TenantId)
                .col(ConsentRecord::Seq)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_consent_record_visitor")
                .table(ConsentRecord::Table)
                .col(ConsentRecord::TenantId)
                .col(ConsentRecord::VisitorHash)
                .col(ConsentRecord::Seq)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ProviderConfig::Table)
                .col(pk_uuid(ProviderConfig::Id))
                .col(uuid(ProviderConfig::TenantId))
                .col(string(ProviderConfig::Provider))
                .col(string(ProviderConfig::DisplayName))
                .col(string(ProviderConfig::Status))
                .col(text_null(ProviderConfig::StatusReason))
                .col(string(ProviderConfig::RequiredCategory))
                .col(json_binary(ProviderConfig::Settings))
                .col(json_binary(ProviderConfig::Credentials))
                .col(big_integer(ProviderConfig::EventsSent).default(0))
                .col(big_integer(ProviderConfig::EventsFailed).default(0))
                .col(big_integer(ProviderConfig::EventsDeniedByConsent).default(0))
                .col(big_integer(ProviderConfig::EventsDropped).default(0))
                .col(timestamp_with_time_zone_null(ProviderConfig::LastSentAt))
                .col(timestamp_with_time_zone_null(ProviderConfig::LastErrorAt))
                .col(text_null(ProviderConfig::LastError))
                .col(timestamp_with_time_zone(ProviderConfig::CreatedAt))
                .col(timestamp_with_time_zone(ProviderConfig::UpdatedAt))
                .foreign_key(&mut tenant_fk(ProviderConfig::Table, ProviderConfig::TenantId))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(AnalyticsEvent::Table)
                .col(pk_uuid(AnalyticsEvent::Id))
                .col(uuid(AnalyticsEvent::TenantId))
                .col(string_null(AnalyticsEvent::Provider))
                .col(string(AnalyticsEvent::EventName))
                .col(json_binary(AnalyticsEvent::EventProperties))
                .col(string_null(AnalyticsEvent::UserId))
                .col(string_null(AnalyticsEvent::AnonymousId))
                .col(string_null(AnalyticsEvent::SessionId))
                .col(text_null(AnalyticsEvent::PageUrl))
                .col(text_null(AnalyticsEvent::Referrer))
                .col(text_null(AnalyticsEvent::Title))
                .col(text_null(AnalyticsEvent::UserAgent))
                .col(string_null(AnalyticsEvent::Language))
                .col(string_null(AnalyticsEvent::Screen))
                .col(json_binary_null(AnalyticsEvent::Revenue))
                .col(json_binary(AnalyticsEvent::Context))
                .col(timestamp_with_time_zone(AnalyticsEvent::OccurredAt))
                .col(timestamp_with_time_zone(AnalyticsEvent::ReceivedAt))
                .col(string_null(AnalyticsEvent::IpTruncated))
                .col(string_null(AnalyticsEvent::Country))
                .col(boolean(AnalyticsEvent::Dnt))
                .col(boolean(AnalyticsEvent::Gpc))
                .col(string_null(AnalyticsEvent::IdempotencyKey))
                .foreign_key(&mut tenant_fk(AnalyticsEvent::Table, AnalyticsEvent::TenantId))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_analytics_event_idempotency")
                .table(AnalyticsEvent::Table)
                .col(AnalyticsEvent::TenantId)
                .col(AnalyticsEvent::IdempotencyKey)
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(ForwardingDecision::Table)
                .col(pk_uuid(ForwardingDecision::Id))
                .col(uuid(ForwardingDecision::TenantId))
                .col(uuid(ForwardingDecision::EventId))
                .col(uuid(ForwardingDecision::ConfigId))
                .col(string(ForwardingDecision::Provider))
                .col(string(ForwardingDecision::Decision))
                .col(string_null(ForwardingDecision::Identity))
                .col(string(ForwardingDecision::Reason))
                .col(timestamp_with_time_zone(ForwardingDecision::CreatedAt))
                .foreign_key(&mut tenant_fk(ForwardingDecision::Table, ForwardingDecision::TenantId))
                .foreign_key(
                    ForeignKey::create()
                        .from(ForwardingDecision::Table, ForwardingDecision::EventId)
                        .to(AnalyticsEvent::Table, AnalyticsEvent::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_forwarding_decision_event")
                .table(ForwardingDecision::Table)
                .col(ForwardingDecision::EventId)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Delivery::Table)
                .col(pk_uuid(Delivery::Id))
                .col(uuid(Delivery::TenantId))
                .col(uuid(Delivery::EventId))
                .col(uuid(Delivery::ConfigId))
                .col(string(Delivery::Provider))
                .col(string(Delivery::Identity))
                .col(string(Delivery::Status))
                .col(integer(Delivery::Attempts).default(0))
                .col(timestamp_with_time_zone(Delivery::NextAttemptAt))
                .col(string_null(Delivery::LeaseOwner))
                .col(timestamp_with_time_zone_null(Delivery::LeaseUntil))
                .col(integer_null(Delivery::LastStatus))
                .col(text_null(Delivery::LastError))
                .col(text_null(Delivery::Warning))
                .col(timestamp_with_time_zone_null(Delivery::DeliveredAt))
                .col(string_null(Delivery::ClientIp))
                .col(timestamp_with_time_zone(Delivery::CreatedAt))
                .col(timestamp_with_time_zone(Delivery::UpdatedAt))
                .foreign_key(&mut tenant_fk(Delivery::Table, Delivery::TenantId))
                .foreign_key(
                    ForeignKey::create()
                        .from(Delivery::Table, Delivery::EventId)
                        .to(AnalyticsEvent::Table, AnalyticsEvent::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from(Delivery::Table, Delivery::ConfigId)
                        .to(ProviderConfig::Table, ProviderConfig::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_delivery_due")
                .table(Delivery::Table)
                .col(Delivery::Status)
                .col(Delivery::NextAttemptAt)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_delivery_config")
                .table(Delivery::Table)
                .col(Delivery::ConfigId)
                .col(Delivery::Status)
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(AuditLog::Table)
                .col(pk_uuid(AuditLog::Id))
                .col(uuid(AuditLog::TenantId))
                .col(string(AuditLog::Actor))
                .col(string(AuditLog::Action))
                .col(string(AuditLog::EntityType))
                .col(string_null(AuditLog::EntityId))
                .col(json_binary_null(AuditLog::Before))
                .col(json_binary_null(AuditLog::After))
                .col(timestamp_with_time_zone(AuditLog::CreatedAt))
                .foreign_key(&mut tenant_fk(AuditLog::Table, AuditLog::TenantId))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_audit_log_tenant")
                .table(AuditLog::Table)
                .col(AuditLog::TenantId)
                .col(AuditLog::CreatedAt)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditLog::Table.into_iden(),
            Delivery::Table.into_iden(),
            ForwardingDecision::Table.into_iden(),
            AnalyticsEvent::Table.into_iden(),
            ProviderConfig::Table.into_iden(),
            ConsentRecord::Table.into_iden(),
            ConsentConfigRevision::Table.into_iden(),
            CookieConsentConfig::Table.into_iden(),
            IngestKey::Table.into_iden(),
            ApiToken::Table.into_iden(),
            Tenant::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
