//! API keys: who is calling. Admin keys reach every sandbox and the control plane; a tenant key
//! reaches only sandboxes whose Pod lives in the tenant's namespace.
//!
//! Owns the key sets and authentication. Keys are held only as SHA-256 digests and compared in
//! constant time; nothing here logs a key or a digest. Sources ([`file`], [`secrets`], flags)
//! each replace their own set; readers see one merged, immutable view behind an atomic pointer.

pub mod file;
pub mod internal;
pub mod limit;
pub mod secrets;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use jiff::Timestamp;
use parking_lot::Mutex;
use sandgate_core::{Deny, DenyCode};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::generation::Generations;

pub type Digest = [u8; 32];

pub fn digest(key: &str) -> Digest {
    Sha256::digest(key.as_bytes()).into()
}

/// Parses 64 hex characters (either case) into a digest.
pub fn parse_digest(hex_text: &str) -> Option<Digest> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text.trim(), &mut out).ok()?;
    Some(out)
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Tenant {
        namespace: Arc<str>,
        /// When the key stops working; a kept answer must not outlive it.
        expires_at: Option<Timestamp>,
    },
}

impl Principal {
    pub fn expires_at(&self) -> Option<Timestamp> {
        match self {
            Principal::Admin => None,
            Principal::Tenant { expires_at, .. } => *expires_at,
        }
    }

    pub fn may_reach(&self, namespace: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant { namespace: own, .. } => **own == *namespace,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantKey {
    pub digest: Digest,
    pub namespace: Arc<str>,
    pub expires_at: Option<Timestamp>,
}

/// What one source contributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    pub admins: Vec<Digest>,
    pub tenants: Vec<TenantKey>,
}

/// Each source owns one slot; an update replaces only that source's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Flags,
    AdminFile,
    KeysFile,
    Secrets,
}

#[derive(Default)]
struct Merged {
    admins: Vec<Digest>,
    /// First 8 digest bytes → candidates; the full digest is compared in constant time.
    tenants: HashMap<[u8; 8], Vec<TenantKey>>,
}

impl Merged {
    fn tenant(&self, d: &Digest) -> Option<&TenantKey> {
        self.tenants
            .get(&prefix(d))
            .and_then(|c| c.iter().find(|t| bool::from(t.digest.ct_eq(d))))
    }
}

pub struct KeyStore {
    sources: Mutex<BTreeMap<Source, KeySet>>,
    merged: ArcSwap<Merged>,
    auth_disabled: bool,
    /// Bumped (all at once) by every change of the keys.
    pub generations: Generations,
}

impl KeyStore {
    /// `auth_disabled` lets every request through as admin: a development switch only.
    pub fn new(auth_disabled: bool) -> Self {
        KeyStore {
            sources: Mutex::new(BTreeMap::new()),
            merged: ArcSwap::from_pointee(Merged::default()),
            auth_disabled,
            generations: Generations::default(),
        }
    }

    pub fn set_source(&self, source: Source, keys: KeySet) {
        let mut sources = self.sources.lock();
        sources.insert(source, keys);
        let mut merged = Merged::default();
        for set in sources.values() {
            merged.admins.extend_from_slice(&set.admins);
            for t in &set.tenants {
                merged
                    .tenants
                    .entry(prefix(&t.digest))
                    .or_default()
                    .push(t.clone());
            }
        }
        self.merged.store(Arc::new(merged));
        self.generations.bump_all();
    }

    /// (admin keys, tenant keys) currently held, for metrics and logs.
    pub fn counts(&self) -> (usize, usize) {
        let m = self.merged.load();
        (m.admins.len(), m.tenants.values().map(Vec::len).sum())
    }

    /// Whether `presented` is any gateway key held now (admin or tenant, expired or not): such
    /// a value must never reach a sandbox, whoever sent it.
    pub fn is_known(&self, presented: &str) -> bool {
        if presented.is_empty() {
            return false;
        }
        let d = digest(presented);
        self.admin_match(&d) || self.merged.load().tenant(&d).is_some()
    }

    /// Whether every request passes as admin (the development switch).
    pub fn auth_disabled(&self) -> bool {
        self.auth_disabled
    }

    /// The tenant key of `namespace` whose digest starts with `prefix`: the key that minted an
    /// access token, if it is still held (expired or not).
    pub fn tenant_by_prefix(&self, prefix: &[u8; 8], namespace: &str) -> Option<TenantKey> {
        self.merged
            .load()
            .tenants
            .get(prefix)?
            .iter()
            .find(|t| &*t.namespace == namespace)
            .cloned()
    }

    /// The first 8 bytes of a key's digest: what a token it mints carries to name it.
    pub fn prefix_of(key: &str) -> [u8; 8] {
        prefix(&digest(key))
    }

    pub fn is_admin(&self, presented: &str) -> bool {
        !presented.is_empty() && self.admin_match(&digest(presented))
    }

    /// Every admin digest is compared, so the time taken does not tell which one matched.
    fn admin_match(&self, d: &Digest) -> bool {
        any_match(&self.merged.load().admins, d)
    }

    pub fn authenticate(&self, presented: &str, now: Timestamp) -> Result<Principal, Deny> {
        if self.auth_disabled {
            return Ok(Principal::Admin);
        }
        if presented.is_empty() {
            return Err(Deny::new(
                DenyCode::MissingApiKey,
                "an API key or access token is required",
            ));
        }
        let d = digest(presented);
        if self.admin_match(&d) {
            return Ok(Principal::Admin);
        }
        match self.merged.load().tenant(&d) {
            Some(t) if t.expires_at.is_some_and(|exp| exp <= now) => Err(Deny::new(
                DenyCode::ExpiredApiKey,
                "the API key has expired",
            )),
            Some(t) => Ok(Principal::Tenant {
                namespace: Arc::clone(&t.namespace),
                expires_at: t.expires_at,
            }),
            None => Err(Deny::new(
                DenyCode::InvalidApiKey,
                "the API key is not valid",
            )),
        }
    }
}

/// Whether `d` is in `set`. Every digest is compared, in constant time, so the time taken
/// tells neither whether nor which one matched.
pub(crate) fn any_match(set: &[Digest], d: &Digest) -> bool {
    set.iter()
        .fold(subtle::Choice::from(0), |acc, a| acc | a.ct_eq(d))
        .into()
}

fn prefix(d: &Digest) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&d[..8]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(key: &str, ns: &str, exp: Option<&str>) -> TenantKey {
        TenantKey {
            digest: digest(key),
            namespace: ns.into(),
            expires_at: exp.map(|e| e.parse().unwrap()),
        }
    }

    fn now() -> Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn authenticates_admins_and_tenants() {
        let s = KeyStore::new(false);
        s.set_source(
            Source::Flags,
            KeySet {
                admins: vec![digest("adm-old"), digest("adm-new")],
                tenants: vec![],
            },
        );
        s.set_source(
            Source::KeysFile,
            KeySet {
                admins: vec![],
                tenants: vec![
                    tenant("k-acme", "acme", None),
                    tenant("k-old", "acme", Some("2026-01-01T00:00:00Z")),
                    tenant("k-later", "globex", Some("2027-01-01T00:00:00Z")),
                ],
            },
        );
        assert_eq!(s.authenticate("adm-old", now()), Ok(Principal::Admin));
        assert_eq!(s.authenticate("adm-new", now()), Ok(Principal::Admin));
        assert!(s.is_admin("adm-new"));
        assert!(!s.is_admin("k-acme"));
        assert!(!s.is_admin(""));
        assert_eq!(
            s.authenticate("k-acme", now()),
            Ok(Principal::Tenant {
                namespace: "acme".into(),
                expires_at: None,
            })
        );
        assert_eq!(
            s.authenticate("k-later", now()),
            Ok(Principal::Tenant {
                namespace: "globex".into(),
                expires_at: Some("2027-01-01T00:00:00Z".parse().unwrap()),
            })
        );
        let code = |k| s.authenticate(k, now()).unwrap_err().code;
        assert_eq!(code("k-old"), DenyCode::ExpiredApiKey);
        assert_eq!(code("nope"), DenyCode::InvalidApiKey);
        assert_eq!(code(""), DenyCode::MissingApiKey);
        assert_eq!(s.counts(), (2, 3));
    }

    #[test]
    fn a_source_update_replaces_only_its_own_keys() {
        let s = KeyStore::new(false);
        let one = |k: &str, ns: &str| KeySet {
            admins: vec![],
            tenants: vec![tenant(k, ns, None)],
        };
        s.set_source(Source::Secrets, one("from-secret", "a"));
        s.set_source(Source::KeysFile, one("from-file", "b"));
        s.set_source(Source::Secrets, KeySet::default());
        assert!(s.authenticate("from-secret", now()).is_err(), "revoked");
        assert!(s.authenticate("from-file", now()).is_ok());
    }

    #[test]
    fn disabled_auth_admits_everyone_as_admin() {
        let s = KeyStore::new(true);
        assert_eq!(s.authenticate("", now()), Ok(Principal::Admin));
    }

    #[test]
    fn tenant_reach() {
        let t = Principal::Tenant {
            namespace: "acme".into(),
            expires_at: None,
        };
        assert!(t.may_reach("acme"));
        assert!(!t.may_reach("globex"));
        assert!(Principal::Admin.may_reach("anything"));
    }

    #[test]
    fn digests_parse_from_hex() {
        let d = digest("x");
        assert_eq!(parse_digest(&hex::encode(d)), Some(d));
        assert_eq!(parse_digest(&hex::encode_upper(d)), Some(d));
        assert_eq!(parse_digest("abc"), None);
    }
}
