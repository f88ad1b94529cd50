//! The hash chain over a tenant's consent records — proof that no record was altered, removed
//! or slipped in afterwards (the controller must be able to demonstrate consent, GDPR Art. 7(1)).
//!
//! `hash = sha256_hex(prev_hash ‖ canonical_json(record))`, where `prev_hash` is the previous
//! record's `hash` (64 zeros for the first), `‖` is string concatenation, and `record` is the
//! record exactly as the auditor API and the NDJSON export show it, without `visitor_id`,
//! `prev_hash` and `hash` ([`chained_fields`]). So an auditor can recompute every hash from an
//! export alone. The chain covers `visitor_hash` (the tenant-salted hash of the visitor id)
//! instead of the id, so erasing the id (Art. 17) leaves it verifiable. Timestamps are RFC 3339
//! UTC with exactly six fractional digits, the precision both databases keep. `seq` numbers the
//! records of a tenant from 1 without gaps.
//!
//! **Canonical form versions.** `canonical_version` (a column) says which form a record hashes:
//! - **1** — records written before per-provider choices: the fields above, nothing else.
//! - **2** — every record written since: the same fields plus `"canonical_version": 2` and, when
//!   the visitor was offered per-provider choices, `provider_choices` (`{"offer", "providers"}`).
//!
//! In both, the hashed object is the auditor's view of the record without `visitor_id`,
//! `prev_hash` and `hash` (the view leaves `canonical_version` out for version 1 records, and
//! `provider_choices` out when there are none), so the recipe stays the same for auditors and
//! every record written by an earlier release still verifies unchanged.
//!
//! **Retention.** Purging removes records only from the *start* of the chain, in `seq` order,
//! and only after checking the purged stretch still links up. The `seq` and `hash` of the last
//! purged record are kept as the tenant's **checkpoint** (`consent_chain_checkpoint`); the first
//! remaining record links to it, so verification starts there instead of at [`GENESIS`].
//!
//! **The visitor id** is outside the hash (so it can be erased), but [`verify`] checks it against
//! the hashed `visitor_hash`: a record whose id was changed to another visitor's, or an erased id
//! put back, is `visitor_id_mismatch`.
//!
//! The chain shows tampering *within* the records; a truncated tail looks like a shorter valid
//! chain. Auditors who need that too record the `head` that `verify` reports and compare later.

use chrono::{DateTime, SecondsFormat, Utc};
use entity::{consent_chain_checkpoint, consent_record, tenant};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{canonical, records::VisitorId};
use crate::{crypto::sha256_hex, error::Result};

/// `prev_hash` of a tenant's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical form new records are written in (see the module docs).
pub const CANONICAL_VERSION: i32 = 2;

/// Records read per query when walking the chain.
const PAGE: u64 = 500;

pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `serialize_with` for timestamps that are hashed: always [`timestamp`]'s form.
pub fn serialize_timestamp<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timestamp(t))
}

/// The record as the chain covers it: the auditor's view of it minus `visitor_id`, `prev_hash`
/// and `hash`, in the form its `canonical_version` names.
pub fn chained_fields(m: &consent_record::Model) -> Value {
    let mut fields = version_1(m);
    // Any other version number hashes as version 2 with that number: a version changed
    // afterwards no longer matches the hash.
    if m.canonical_version != 1 {
        fields["canonical_version"] = m.canonical_version.into();
        if let Some(p) = &m.provider_choices {
            fields["provider_choices"] = p.clone();
        }
    }
    fields
}

/// Version 1: the fields every record has had from the start.
fn version_1(m: &consent_record::Model) -> Value {
    json!({
        "id": m.id,
        "seq": m.seq,
        "visitor_hash": m.visitor_hash,
        "config_id": m.config_id,
        "revision": m.revision,
        "texts_hash": m.texts_hash,
        "language": m.language,
        "choices": m.choices,
        "action": m.action,
        "source": m.source,
        "signals": {"dnt": m.dnt, "gpc": m.gpc},
        "country": m.country,
        "ip_truncated": m.ip_truncated,
        "user_agent": m.user_agent,
        "created_at": timestamp(&m.created_at),
        "expires_at": timestamp(&m.expires_at),
    })
}

/// The hash `m` must carry, given its `prev_hash`.
pub fn link_hash(m: &consent_record::Model) -> String {
    let mut input = m.prev_hash.clone();
    input.push_str(&canonical::to_string(&chained_fields(m)));
    sha256_hex(input)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Broken {
    pub seq: i64,
    pub id: Uuid,
    /// `seq_gap` (a record is missing or out of place), `prev_hash_mismatch` (the link to the
    /// previous record is broken), `hash_mismatch` (the record was altered) or
    /// `visitor_id_mismatch` (its visitor id is not the one its `visitor_hash` was made from).
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct Verification {
    pub ok: bool,
    /// Records checked (all of them when `ok`; up to and including the first broken one else).
    pub checked: u64,
    pub first_broken: Option<Broken>,
    /// The last record of an intact chain: keep it to detect a truncated tail later.
    pub head: Option<Head>,
    /// Where the chain starts after retention purged its oldest records: the last purged
    /// record, which the first remaining one links to. Absent while nothing was purged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Head>,
}

/// Checks records one after the other, in `seq` order.
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    checked: u64,
    checkpoint: Option<Head>,
    /// The records' tenant, to check each visitor id against its hash ([`Verifier::with_visitor_ids`]).
    tenant: Option<tenant::Model>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier { expected_seq: 1, prev_hash: GENESIS.to_string(), checked: 0, checkpoint: None, tenant: None }
    }
}

impl Verifier {
    /// A verifier for a chain whose records up to `checkpoint` were purged.
    pub fn from_checkpoint(checkpoint: Option<Head>) -> Self {
        match checkpoint {
            None => Verifier::default(),
            Some(c) => Verifier {
                expected_seq: c.seq + 1,
                prev_hash: c.hash.clone(),
                checkpoint: Some(c),
                ..Default::default()
            },
        }
    }

    /// Also checks that each record's visitor id (when not erased) is the one its `visitor_hash`
    /// was made from, with `tenant`'s salt.
    pub fn with_visitor_ids(self, tenant: tenant::Model) -> Self {
        Verifier { tenant: Some(tenant), ..self }
    }

    pub fn check(&mut self, m: &consent_record::Model) -> Result<(), Broken> {
        self.checked += 1;
        let broken = |reason: &str| Broken { seq: m.seq, id: m.id, reason: reason.into() };
        if m.seq != self.expected_seq {
            return Err(broken("seq_gap"));
        }
        if m.prev_hash != self.prev_hash {
            return Err(broken("prev_hash_mismatch"));
        }
        if link_hash(m) != m.hash {
            return Err(broken("hash_mismatch"));
        }
        if let (Some(tenant), Some(id)) = (&self.tenant, &m.visitor_id) {
            let hashed = VisitorId::parse(id).is_ok_and(|v| super::records::visitor_hash(tenant, &v) == m.visitor_hash);
            if !hashed {
                return Err(broken("visitor_id_mismatch"));
            }
        }
        self.expected_seq += 1;
        self.prev_hash = m.hash.clone();
        Ok(())
    }

    pub fn finish(self, first_broken: Option<Broken>) -> Verification {
        let head = (first_broken.is_none() && self.checked > 0)
            .then(|| Head { seq: self.expected_seq - 1, hash: self.prev_hash.clone() });
        Verification {
            ok: first_broken.is_none(),
            checked: self.checked,
            first_broken,
            head,
            checkpoint: self.checkpoint,
        }
    }
}

/// The tenant's checkpoint: the last record retention purged, if any.
pub async fn checkpoint(db: &impl ConnectionTrait, tenant_id: Uuid) -> Result<Option<Head>> {
    Ok(consent_chain_checkpoint::Entity::find_by_id(tenant_id)
        .one(db)
        .await?
        .map(|c| Head { seq: c.seq, hash: c.hash }))
}

/// Walks the tenant's whole chain, a page at a time (never all records in memory), the visitor
/// ids checked against their hashes.
pub async fn verify(db: &impl ConnectionTrait, tenant: &tenant::Model) -> Result<Verification> {
    let tenant_id = tenant.id;
    let mut v = Verifier::from_checkpoint(checkpoint(db, tenant_id).await?).with_visitor_ids(tenant.clone());
    let mut after = 0i64;
    loop {
        let page = consent_record::Entity::find()
            .filter(consent_record::Column::TenantId.eq(tenant_id))
            .filter(consent_record::Column::Seq.gt(after))
            .order_by_asc(consent_record::Column::Seq)
            .limit(PAGE)
            .all(db)
            .await?;
        for m in &page {
            if let Err(b) = v.check(m) {
                return Ok(v.finish(Some(b)));
            }
        }
        match page.last() {
            Some(last) if page.len() as u64 == PAGE => after = last.seq,
            _ => return Ok(v.finish(None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::Action;

    fn record(seq: i64, prev: &str) -> consent_record::Model {
        let mut m = consent_record::Model {
            id: Uuid::now_v7(),
            tenant_id: Uuid::nil(),
            seq,
            visitor_id: Some("v1".into()),
            visitor_hash: "ab".repeat(32),
            config_id: Uuid::nil(),
            revision: 1,
            texts_hash: "cd".repeat(32),
            language: "en".into(),
            choices: json!({"necessary": true, "functional": false, "analytics": true, "marketing": false}),
            action: Action::Custom.as_str().into(),
            source: "banner".into(),
            dnt: false,
            gpc: true,
            country: Some("SE".into()),
            ip_truncated: Some("203.0.113.0".into()),
            user_agent: Some("Mozilla/5.0".into()),
            created_at: "2026-06-01T12:00:00.123456Z".parse().unwrap(),
            expires_at: "2026-11-28T12:00:00.123456Z".parse().unwrap(),
            prev_hash: prev.into(),
            hash: String::new(),
            provider_choices: None,
            canonical_version: CANONICAL_VERSION,
        };
        m.hash = link_hash(&m);
        m
    }

    fn chain(n: i64) -> Vec<consent_record::Model> {
        let mut out: Vec<consent_record::Model> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map_or(GENESIS.to_string(), |m| m.hash.clone());
            out.push(record(seq, &prev));
        }
        out
    }

    fn verify_all(records: &[consent_record::Model]) -> Verification {
        let mut v = Verifier::default();
        for m in records {
            if let Err(b) = v.check(m) {
                return v.finish(Some(b));
            }
        }
        v.finish(None)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        let r = verify_all(&c);
        assert!(r.ok);
        assert_eq!(r.checked, 5);
        assert_eq!(r.head, Some(Head { seq: 5, hash: c[4].hash.clone() }));
        assert_eq!(
            verify_all(&[]),
            Verification { ok: true, checked: 0, first_broken: None, head: None, checkpoint: None }
        );
    }

    #[test]
    fn a_chain_purged_up_to_a_checkpoint_verifies_from_it_and_only_from_it() {
        let c = chain(5);
        let from = |seq: i64, hash: &str, rest: &[consent_record::Model]| {
            let mut v = Verifier::from_checkpoint(Some(Head { seq, hash: hash.into() }));
            let broken = rest.iter().find_map(|m| v.check(m).err());
            v.finish(broken)
        };
        let r = from(2, &c[1].hash, &c[2..]);
        assert!(r.ok, "{r:?}");
        assert_eq!((r.checked, r.head.map(|h| h.seq)), (3, Some(5)));
        assert_eq!(r.checkpoint.map(|h| h.seq), Some(2));
        // A checkpoint that does not fit the first remaining record, or a gap after it, is found.
        assert_eq!(from(2, &"1".repeat(64), &c[2..]).first_broken.unwrap().reason, "prev_hash_mismatch");
        assert_eq!(from(1, &c[0].hash, &c[2..]).first_broken.unwrap().reason, "seq_gap");
        // Without a checkpoint, a purged prefix is a gap.
        assert!(!verify_all(&c[2..]).ok);
    }

    #[test]
    fn erasing_the_visitor_id_keeps_the_chain_valid() {
        let mut c = chain(3);
        c[1].visitor_id = None;
        assert!(verify_all(&c).ok);
    }

    #[test]
    fn every_kind_of_tampering_is_found() {
        type Tamper = fn(&mut Vec<consent_record::Model>);
        let table: [(&str, Tamper, i64, &str); 6] = [
            ("a choice changed", |c| c[2].choices["marketing"] = json!(true), 3, "hash_mismatch"),
            ("the time changed", |c| c[1].created_at += chrono::Duration::seconds(1), 2, "hash_mismatch"),
            ("a record removed", |c| drop(c.remove(2)), 4, "seq_gap"),
            ("records swapped", |c| c.swap(1, 2), 3, "seq_gap"),
            (
                "a record re-hashed after editing",
                |c| {
                    c[1].action = Action::AcceptAll.as_str().into();
                    c[1].hash = link_hash(&c[1]);
                },
                3,
                "prev_hash_mismatch",
            ),
            ("the first record's link", |c| c[0].prev_hash = "1".repeat(64), 1, "prev_hash_mismatch"),
        ];
        for (what, tamper, seq, reason) in table {
            let mut c = chain(5);
            tamper(&mut c);
            let r = verify_all(&c);
            assert!(!r.ok, "{what}");
            let b = r.first_broken.unwrap();
            assert_eq!((b.seq, b.reason.as_str()), (seq, reason), "{what}");
            assert_eq!(r.head, None);
        }
    }

    #[test]
    fn the_hash_is_reproducible_from_the_documented_recipe() {
        let m = RecordedAs { canonical_version: 1, provider_choices: None }.apply(record(1, GENESIS));
        let canonical = canonical::to_string(&chained_fields(&m));
        assert!(canonical.starts_with(r#"{"action":"custom","choices":{"analytics":true,"#), "{canonical}");
        assert!(canonical.contains(r#""signals":{"dnt":false,"gpc":true}"#), "{canonical}");
        assert!(canonical.contains(r#""created_at":"2026-06-01T12:00:00.123456Z""#));
        assert!(!canonical.contains("visitor_id"));
        assert_eq!(m.hash, sha256_hex(format!("{GENESIS}{canonical}")));
    }

    #[test]
    fn the_chained_record_is_the_auditors_view_without_id_and_links() {
        let v1 = RecordedAs { canonical_version: 1, provider_choices: None };
        let v2 = RecordedAs { canonical_version: 2, provider_choices: None };
        let v2_providers = RecordedAs {
            canonical_version: 2,
            provider_choices: Some(json!({"offer": "0123456789abcdef", "providers": {Uuid::nil().to_string(): false}})),
        };
        for form in [v1, v2, v2_providers] {
            let m = form.apply(record(1, GENESIS));
            let mut view = serde_json::to_value(crate::consent::records::RecordItem::from(m.clone())).unwrap();
            for key in ["visitor_id", "prev_hash", "hash"] {
                view.as_object_mut().unwrap().remove(key);
            }
            assert_eq!(view, chained_fields(&m), "{form:?}");
        }
    }

    #[derive(Clone, Debug)]
    struct RecordedAs {
        canonical_version: i32,
        provider_choices: Option<Value>,
    }

    impl RecordedAs {
        fn apply(&self, mut m: consent_record::Model) -> consent_record::Model {
            m.canonical_version = self.canonical_version;
            m.provider_choices = self.provider_choices.clone();
            m.hash = link_hash(&m);
            m
        }
    }

    /// A version 1 record hashes exactly as before canonical versions existed (the recipe of the
    /// first release, written out here), and a chain mixing both forms verifies.
    #[test]
    fn version_1_records_hash_as_they_always_did_and_mix_with_version_2() {
        let old = RecordedAs { canonical_version: 1, provider_choices: None }.apply(record(1, GENESIS));
        let first_release = json!({
            "id": old.id, "seq": 1, "visitor_hash": old.visitor_hash, "config_id": old.config_id,
            "revision": 1, "texts_hash": old.texts_hash, "language": "en", "choices": old.choices,
            "action": "custom", "source": "banner", "signals": {"dnt": false, "gpc": true},
            "country": "SE", "ip_truncated": "203.0.113.0", "user_agent": "Mozilla/5.0",
            "created_at": "2026-06-01T12:00:00.123456Z", "expires_at": "2026-11-28T12:00:00.123456Z",
        });
        assert_eq!(old.hash, sha256_hex(format!("{GENESIS}{}", canonical::to_string(&first_release))));
        let mut new = record(2, &old.hash);
        new.provider_choices = Some(json!({"offer": "0123456789abcdef", "providers": {Uuid::nil().to_string(): true}}));
        new.hash = link_hash(&new);
        let canonical = canonical::to_string(&chained_fields(&new));
        assert!(canonical.contains(r#""canonical_version":2"#), "{canonical}");
        assert!(canonical.contains(r#""provider_choices":{"offer":"0123456789abcdef","providers":{"#), "{canonical}");
        let chain = [old.clone(), new.clone()];
        assert!(verify_all(&chain).ok);
        // Each tampering is found: a choice, the version (down to 1, dropping the choices from
        // the hash, or up), the choices removed.
        type Tamper = fn(&mut consent_record::Model);
        let table: [(&str, Tamper); 4] = [
            ("a provider choice flipped", |m| {
                m.provider_choices.as_mut().unwrap()["providers"][Uuid::nil().to_string()] = json!(false)
            }),
            ("version lowered to 1", |m| m.canonical_version = 1),
            ("version raised", |m| m.canonical_version = 3),
            ("choices removed", |m| m.provider_choices = None),
        ];
        for (what, tamper) in table {
            let mut c = chain.clone();
            tamper(&mut c[1]);
            let r = verify_all(&c);
            assert_eq!(r.first_broken.map(|b| (b.seq, b.reason)), Some((2, "hash_mismatch".into())), "{what}");
        }
        let mut c = chain.clone();
        c[0].canonical_version = 2;
        assert!(!verify_all(&c).ok, "an old record read as version 2");
    }
}
