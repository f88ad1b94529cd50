//! What a visitor does through the public consent routes: record a choice (or withdraw it) and
//! read their current state. The HTTP layer adds CORS, rate limits and the cookie.

use std::{collections::BTreeMap, net::IpAddr};

use chrono::{DateTime, Utc};
use entity::tenant;
use sea_orm::DatabaseConnection;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    Action, Choices, ConsentPolicy, ProviderChoices, Signals,
    config::{Published, spec::LanguageTag, store},
    effective, offer,
    records::{self, NewRecord, VisitorId},
};
use crate::error::{Error, Result};

/// A visitor's decision as submitted.
#[derive(Clone, Debug)]
pub struct Submission {
    pub visitor: Option<VisitorId>,
    pub action: Action,
    /// Needed for `custom` only; derived for the other actions.
    pub choices: Option<Choices>,
    /// The revision the visitor was shown. Needed except for `withdraw`.
    pub revision: Option<i32>,
    /// The config the visitor was shown (revision numbers are counted per config).
    pub config_id: Option<Uuid>,
    pub language: Option<String>,
    pub source: Option<String>,
    /// Per-provider switches the banner showed (config id → on), when the config offers them.
    pub providers: Option<BTreeMap<Uuid, bool>>,
}

/// What the request says about where a submission came from.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub dnt: bool,
    pub gpc: bool,
    pub country: Option<String>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// An `Origin` header was sent (a browser); decides the default `source`.
    pub from_browser: bool,
}

/// The answer to a submission.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Recorded {
    pub record_id: Uuid,
    pub visitor_id: String,
    #[schema(value_type = String)]
    pub action: Action,
    #[schema(value_type = Object)]
    pub choices: Choices,
    pub revision: i32,
    pub expires_at: DateTime<Utc>,
    /// The per-provider choices recorded, when the config offers them and the banner sent them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_choices: Option<ProviderChoices>,
    /// For the cookie's Max-Age.
    #[serde(skip)]
    pub expiry_days: u32,
}

/// Longest user agent kept in a record (longer ones are cut; they are not proof of anything
/// beyond the first few hundred characters).
const USER_AGENT_MAX: usize = 512;

fn truncate_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Records a decision under the tenant's active config and appends it to the chain.
///
/// Withdrawal is accepted whatever the revision and also while the config is paused: withdrawing
/// must be as easy as giving consent (GDPR Art. 7(3)), so it is never refused for a stale banner.
pub async fn submit(db: &DatabaseConnection, tenant: &tenant::Model, s: Submission, ctx: Context) -> Result<Recorded> {
    let withdraw = s.action == Action::Withdraw;
    let published = if withdraw { store::current(db, tenant.id).await? } else { store::active(db, tenant.id).await? };
    let Some(p) = published else {
        return Err(if store::current(db, tenant.id).await?.is_some() {
            Error::Conflict("consent collection is paused: the tenant's cookie consent config is not active".into())
        } else {
            Error::Conflict("the tenant has no active cookie consent config".into())
        });
    };
    let (revision, texts_hash) = shown_revision(db, &p, &s).await?;
    let enabled = p.policy().enabled;
    let choices = match s.action {
        Action::AcceptAll => enabled,
        Action::RejectAll | Action::Withdraw => Choices::none(),
        // A category the config does not offer cannot have been chosen.
        Action::Custom => {
            s.choices.ok_or_else(|| Error::validation("choices", "required for action custom"))?.and(enabled)
        }
    };
    let choices = offered(choices, &p.policy(), ctx.dnt, ctx.gpc);
    let language = shown_language(&p, s.language.as_deref())?;
    let source = match s.source {
        Some(src) => {
            let ok = (1..=32).contains(&src.len())
                && src.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
            if !ok {
                return Err(Error::validation("source", "must be 1-32 characters of a-z, 0-9, _ . -"));
            }
            // The labels an auditor reads as the gateway's own: a browser's write (it came with
            // an Origin) and the retention job's carry-over of a refusal.
            if src == "retention" || (src == "banner" && !ctx.from_browser) {
                return Err(Error::validation(
                    "source",
                    "is reserved: `banner` is recorded for a browser's write (with an Origin), `retention` for the gateway's own carry-over",
                ));
            }
            src
        }
        None if ctx.from_browser => "banner".into(),
        None => "api".into(),
    };
    // Per-provider choices only where the config offers them; elsewhere the category decides.
    let provider_choices = match &s.providers {
        Some(shown) if p.spec.per_provider_choices => {
            Some(offer::record(&offer::current(db, tenant.id).await?, shown, s.action, choices))
        }
        _ => None,
    };
    let visitor = s.visitor.unwrap_or_else(VisitorId::generate);
    let expiry_days = p.policy().expiry_days;
    let record = records::append(
        db,
        tenant,
        &NewRecord {
            visitor: visitor.clone(),
            config_id: p.config.id,
            revision,
            texts_hash,
            language,
            choices,
            action: s.action,
            source,
            dnt: ctx.dnt,
            gpc: ctx.gpc,
            country: ctx.country,
            ip_truncated: ctx.ip.map(crate::ip::truncate),
            user_agent: ctx.user_agent.map(|ua| truncate_chars(&ua, USER_AGENT_MAX)),
            expiry_days,
            provider_choices: provider_choices.clone(),
        },
    )
    .await?;
    Ok(Recorded {
        record_id: record.id,
        visitor_id: visitor.as_str().to_string(),
        action: s.action,
        choices,
        revision,
        expires_at: record.expires_at,
        provider_choices,
        expiry_days,
    })
}

/// The choices restricted to what the banner offered: under Global Privacy Control marketing is
/// shown refused and locked (CCPA/CPRA, Cal. Code Regs. tit. 11 § 7025), and with
/// `respect_do_not_track` DNT or GPC lock every optional category off. "Accept all" then accepts
/// what was on offer, and the record says so, with the signals beside it.
fn offered(choices: Choices, policy: &ConsentPolicy, dnt: bool, gpc: bool) -> Choices {
    if policy.respect_do_not_track && (dnt || gpc) {
        return Choices::none();
    }
    Choices { marketing: choices.marketing && !gpc, ..choices }
}

/// The revision (and its texts hash) the visitor decided under.
///
/// A refusal (withdraw, reject all, or custom granting nothing) is recorded whatever revision the
/// banner showed: banners are cached for a while after a publish, and refusing must never fail —
/// a visitor's "no" that the gateway did not store would let defaults apply later. A refusal
/// made under another config is recorded under the active config's revision.
///
/// Anything else must have been made under the active revision of the active config. Revision
/// numbers are counted per config (config A's revision 1 is not config B's), so the config the
/// banner showed decides too: another config's is refused; without one, a revision number that
/// another config of the tenant has as well is refused as ambiguous — a stale banner of the old
/// config must not record a grant under the new config's texts.
async fn shown_revision(db: &DatabaseConnection, p: &Published, s: &Submission) -> Result<(i32, String)> {
    let active = p.config.revision;
    let refusal = match s.action {
        Action::Withdraw | Action::RejectAll => true,
        Action::Custom => s.choices.is_some_and(|c| c == Choices::none()),
        Action::AcceptAll => false,
    };
    let other_config = s.config_id.filter(|c| *c != p.config.id);
    if refusal {
        return match s.revision {
            Some(r) if r != active && other_config.is_none() => match store::texts_hash_of(db, p.config.id, r).await? {
                Some(hash) => Ok((r, hash)),
                None => Ok((active, p.texts_hash.clone())),
            },
            _ => Ok((active, p.texts_hash.clone())),
        };
    }
    let reload = "reload the banner and ask again";
    let Some(r) = s.revision else {
        return Err(Error::validation("revision", "required: the config revision the visitor was shown"));
    };
    if let Some(shown) = other_config {
        return Err(Error::Conflict(format!(
            "config {shown} is not the tenant's active cookie consent config {}; {reload}",
            p.config.id
        )));
    }
    if r != active {
        return Err(Error::Conflict(format!(
            "revision {r} is not the active revision {active} of the cookie consent config; {reload}"
        )));
    }
    if s.config_id.is_none() && store::another_config_has_revision(db, p.config.tenant_id, p.config.id, r).await? {
        return Err(Error::Conflict(format!(
            "revision {r} is a revision of more than one of the tenant's cookie consent configs: send config_id, \
             the config the visitor was shown"
        )));
    }
    Ok((r, p.texts_hash.clone()))
}

/// The language the visitor read: the submitted one when the config has texts for it (tags
/// compare case-insensitively), else the default language — which is what the banner shows then.
fn shown_language(p: &Published, submitted: Option<&str>) -> Result<String> {
    let default = p.spec.default_language.to_string();
    let Some(lang) = submitted else { return Ok(default) };
    LanguageTag::parse(lang).map_err(|e| Error::validation("language", e))?;
    Ok(p.spec.texts.keys().find(|k| k.as_str().eq_ignore_ascii_case(lang)).map_or(default, |k| k.to_string()))
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SignalsView {
    pub dnt: bool,
    pub gpc: bool,
}

/// What the banner needs to know about a visitor.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct VisitorState {
    pub visitor_id: String,
    /// The banner must ask: no valid decision exists, or the per-provider offer changed.
    pub decision_needed: bool,
    /// `no_record`, `expired`, `reconsent` (undecided), `offer_changed` (decided, but the
    /// provider configs on offer are not those the visitor chose on: configs they were not offered
    /// are refused until they choose again), `withdrawn` (decided: nothing granted), or null.
    pub reason: Option<&'static str>,
    /// The visitor is in a region where consent is required (unknown region counts as one).
    pub consent_required: bool,
    pub country: Option<String>,
    pub signals: SignalsView,
    /// The visitor's choices after DNT/GPC, while their decision is valid; else null.
    #[schema(value_type = Option<Object>)]
    pub choices: Option<Choices>,
    /// What may be used right now: the choices, or the defaults before a decision outside
    /// consent-required regions.
    #[schema(value_type = Object)]
    pub granted: Choices,
    /// The action of the visitor's latest record.
    #[schema(value_type = Option<String>)]
    pub action: Option<Action>,
    /// The revision the latest record was made under; the active revision when there is none.
    pub revision: Option<i32>,
    /// The tenant's active cookie consent config: a choice is made under it (send it back as
    /// `config_id`, with the active revision).
    pub config_id: Option<Uuid>,
    /// When the latest record was made.
    pub decided_at: Option<DateTime<Utc>>,
    /// When the latest record stops counting: its own expiry or, if sooner, its time plus the
    /// active config's `consent_expiry_days` (a shortened lifetime applies to choices made).
    pub expires_at: Option<DateTime<Utc>>,
    /// The per-provider choices of the visitor's latest record, while their decision is valid;
    /// absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_choices: Option<ProviderChoices>,
}

/// The visitor's current state under the tenant's active config, computed by the decision
/// engine from their latest record and the request's signals.
pub async fn state(
    db: &DatabaseConnection,
    tenant: &tenant::Model,
    visitor: &VisitorId,
    signals: &Signals,
    now: DateTime<Utc>,
) -> Result<VisitorState> {
    // The active config, once: its policy decides, its id is what a choice is made under.
    let active = store::active(db, tenant.id).await?;
    let policy = active.as_ref().map(|p| p.policy());
    let view = records::latest_for_visitor(db, tenant, visitor.as_str()).await?;
    let e = effective(policy.as_ref(), view.as_ref(), signals, now);
    let decided = e.undecided.is_none();
    let offer_changed = decided && offer_changed(db, tenant, view.as_ref()).await?;
    let reason = match (e.undecided, &view) {
        (Some(u), _) => Some(u.as_str()),
        (None, _) if offer_changed => Some("offer_changed"),
        (None, Some(r)) if r.action == Action::Withdraw => Some("withdrawn"),
        _ => None,
    };
    Ok(VisitorState {
        visitor_id: visitor.as_str().to_string(),
        decision_needed: !decided || offer_changed,
        reason,
        consent_required: e.consent_required,
        country: signals.country.clone(),
        signals: SignalsView { dnt: signals.dnt, gpc: signals.gpc },
        choices: decided.then_some(e.choices),
        granted: e.choices,
        action: view.as_ref().map(|r| r.action),
        revision: view.as_ref().map(|r| r.revision).or(policy.as_ref().map(|p| p.revision)),
        config_id: active.map(|p| p.config.id),
        decided_at: view.as_ref().map(|r| r.created_at),
        expires_at: view.as_ref().map(|r| match &policy {
            Some(p) => r.expires_at.min(r.created_at + chrono::Duration::days(i64::from(p.expiry_days))),
            None => r.expires_at,
        }),
        provider_choices: if decided { view.and_then(|r| r.providers) } else { None },
    })
}

/// Whether the banner must ask again because the offer changed: the active config offers
/// per-provider choices and the visitor's record holds none or holds them on another offer — or
/// it no longer offers them and the record holds some. A visitor whose record grants nothing (a
/// refusal, a withdrawal) is not asked again for this: every provider is refused for them anyway.
async fn offer_changed(
    db: &DatabaseConnection,
    tenant: &tenant::Model,
    record: Option<&super::RecordedChoice>,
) -> Result<bool> {
    let Some(record) = record.filter(|r| r.choices != Choices::none()) else { return Ok(false) };
    let recorded = record.providers.as_ref();
    let Some(p) = store::active(db, tenant.id).await? else { return Ok(false) };
    let current = match p.spec.per_provider_choices {
        true => Some(offer::offer_fingerprint(&offer::current(db, tenant.id).await?)),
        false => None,
    };
    Ok(current.as_deref() != recorded.map(|r| r.offer.as_str()))
}
