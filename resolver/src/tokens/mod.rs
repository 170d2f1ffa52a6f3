//! Access tokens on the resolver's side: the signing keys, minting and verification.
//!
//! Owns the keyring: signing keys from a file ([`file`]) and a Kubernetes Secret ([`secret`]),
//! several at once for rotation — the greatest id signs (name them by date), every one
//! verifies, so replicas that share the keys verify each other's tokens and a retired key's
//! tokens live on until it is removed. The token's form is `sandgate_core::token`; what a
//! verified token may reach (one sandbox's ports, in its namespace, while the tenant key that
//! minted it lives) is decided in `decide`, not here. Nothing here logs a token or a secret.
//!
//! HMAC-SHA256 rather than Ed25519: every verifier needs the keys anyway (any replica verifies
//! any replica's tokens, so there is no verifier to keep a private key from), a verification
//! costs about a microsecond where Ed25519 costs tens, and the MAC comes from `sha2`, already
//! here for API keys.

pub mod file;
pub mod issue;
pub mod secret;

use std::collections::BTreeMap;
use std::time::Duration;

use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sandgate_core::token::{self, Claims, MAC_LEN};
use sandgate_core::{Deny, DenyCode};
use sha2::Sha256;

use crate::generation::Generations;

type HmacSha256 = Hmac<Sha256>;

/// Shorter secrets are refused: an HMAC key below the hash's output size weakens it.
pub const MIN_SECRET_LEN: usize = 32;

/// One signing key. Its secret is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub id: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish()
    }
}

impl SigningKey {
    /// Checks the id (it goes into every token) and the secret's length.
    pub fn new(id: &str, secret: Vec<u8>) -> anyhow::Result<SigningKey> {
        let probe = Claims {
            key_id: id.to_string(),
            namespace: "n".into(),
            sandbox_id: "s".into(),
            ports: Vec::new(),
            expires_at: 0,
            minted_by: None,
        };
        if probe.check().is_err() {
            anyhow::bail!("signing key id {id:?} must be 1 to 32 of [A-Za-z0-9._-]");
        }
        if secret.len() < MIN_SECRET_LEN {
            anyhow::bail!("signing key {id:?} must have at least {MIN_SECRET_LEN} bytes");
        }
        Ok(SigningKey {
            id: id.to_string(),
            secret,
        })
    }
}

/// Where signing keys come from; each replaces only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    File,
    Secret,
}

/// How long minted tokens live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// When a mint request names none.
    pub default: Duration,
    /// No token is minted to live longer.
    pub max: Duration,
}

/// Keyed MACs by key id, ready to clone: keying HMAC costs two hash blocks a verification
/// need not repeat.
#[derive(Default)]
struct Keyring {
    macs: BTreeMap<String, HmacSha256>,
}

/// What to mint. `minted_by`: the minting tenant key's digest prefix and expiry, so the token
/// dies with that key and never outlives it.
#[derive(Debug, Clone)]
pub struct Mint<'a> {
    pub namespace: &'a str,
    pub sandbox_id: &'a str,
    pub ports: Vec<u16>,
    pub ttl: Option<Duration>,
    pub minted_by: Option<([u8; 8], Option<u64>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Minted {
    pub token: String,
    pub claims: Claims,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MintError {
    #[error("no token signing key is configured")]
    NoSigningKey,
    #[error("{0}")]
    Invalid(&'static str),
}

pub struct TokenKeys {
    sources: Mutex<BTreeMap<Source, Vec<SigningKey>>>,
    ring: ArcSwap<Keyring>,
    lifetimes: Lifetimes,
    /// Bumped (all at once) by every change of the keys: a kept token answer is dropped when
    /// its signing key goes.
    pub generations: Generations,
}

impl TokenKeys {
    pub fn new(lifetimes: Lifetimes) -> Self {
        TokenKeys {
            sources: Mutex::new(BTreeMap::new()),
            ring: ArcSwap::from_pointee(Keyring::default()),
            lifetimes,
            generations: Generations::default(),
        }
    }

    /// Replaces `source`'s keys. An id held by both sources keeps the Secret's.
    pub fn set_source(&self, source: Source, keys: Vec<SigningKey>) {
        let mut sources = self.sources.lock();
        sources.insert(source, keys);
        let mut ring = Keyring::default();
        for key in sources.values().flatten() {
            // Any length is a valid HMAC key; SigningKey::new has enforced the minimum.
            if let Ok(mac) = HmacSha256::new_from_slice(&key.secret) {
                ring.macs.insert(key.id.clone(), mac);
            }
        }
        self.ring.store(std::sync::Arc::new(ring));
        self.generations.bump_all();
    }

    /// Signing keys held now.
    pub fn count(&self) -> usize {
        self.ring.load().macs.len()
    }

    /// The claims of a token whose MAC checks with a key held now and that has not expired at
    /// `now` (Unix seconds). Scope and revocation are the caller's.
    pub fn verify(&self, text: &str, now: u64) -> Result<Claims, Deny> {
        let invalid = || {
            Deny::new(
                DenyCode::InvalidAccessToken,
                "the access token is not valid",
            )
        };
        let presented = token::parse(text).map_err(|_| invalid())?;
        let ring = self.ring.load();
        let mac = ring.macs.get(&presented.claims.key_id).ok_or_else(|| {
            Deny::new(
                DenyCode::InvalidAccessToken,
                "the access token's signing key is not known to this gateway",
            )
        })?;
        let mut mac = mac.clone();
        mac.update(&presented.signed);
        // Constant time: the comparison does not tell how much of a forged MAC was right.
        mac.verify_slice(&presented.mac).map_err(|_| invalid())?;
        if presented.claims.expires_at <= now {
            return Err(Deny::new(
                DenyCode::ExpiredAccessToken,
                "the access token has expired",
            ));
        }
        Ok(presented.claims)
    }

    /// A token for `request`, signed with the newest key, living its requested lifetime (the
    /// default when none) capped by the maximum and by the minting key's expiry.
    pub fn mint(&self, request: &Mint<'_>, now: u64) -> Result<Minted, MintError> {
        let ring = self.ring.load();
        let (key_id, mac) = ring.macs.last_key_value().ok_or(MintError::NoSigningKey)?;
        let ttl = request
            .ttl
            .filter(|t| !t.is_zero())
            .unwrap_or(self.lifetimes.default)
            .min(self.lifetimes.max);
        let mut expires_at = now.saturating_add(ttl.as_secs().max(1));
        if let Some((_, Some(key_expiry))) = request.minted_by {
            expires_at = expires_at.min(key_expiry);
        }
        if expires_at <= now {
            return Err(MintError::Invalid("the minting key has expired"));
        }
        let mut ports = request.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        let claims = Claims {
            key_id: key_id.clone(),
            namespace: request.namespace.to_string(),
            sandbox_id: request.sandbox_id.to_string(),
            ports,
            expires_at,
            minted_by: request.minted_by.map(|(prefix, _)| prefix),
        };
        claims.check().map_err(MintError::Invalid)?;
        let mut mac = mac.clone();
        mac.update(&claims.signed_bytes());
        let mut tag = [0u8; MAC_LEN];
        tag.copy_from_slice(&mac.finalize().into_bytes());
        Ok(Minted {
            token: claims.encode(&tag),
            claims,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const NOW: u64 = 1_800_000_000;

    pub(crate) fn key(id: &str, fill: u8) -> SigningKey {
        SigningKey::new(id, vec![fill; MIN_SECRET_LEN]).unwrap()
    }

    pub(crate) fn keys(list: Vec<SigningKey>) -> TokenKeys {
        let t = TokenKeys::new(Lifetimes {
            default: Duration::from_secs(3600),
            max: Duration::from_secs(86_400),
        });
        t.set_source(Source::File, list);
        t
    }

    pub(crate) fn expiry(token: &str) -> u64 {
        token::parse(token).unwrap().claims.expires_at
    }

    pub(crate) fn mint(t: &TokenKeys, id: &str, ports: &[u16]) -> String {
        t.mint(
            &Mint {
                namespace: "acme",
                sandbox_id: id,
                ports: ports.to_vec(),
                ttl: None,
                minted_by: None,
            },
            NOW,
        )
        .unwrap()
        .token
    }

    #[test]
    fn the_newest_key_signs_and_every_key_verifies() {
        let t = keys(vec![key("2026-01", 1)]);
        let old = mint(&t, "sb", &[]);
        t.set_source(Source::Secret, vec![key("2026-12", 2)]);
        let new = mint(&t, "sb", &[]);
        assert_eq!(t.verify(&old, NOW).unwrap().key_id, "2026-01");
        assert_eq!(t.verify(&new, NOW).unwrap().key_id, "2026-12");
        // The old key retired: its tokens die, the new key's live on.
        t.set_source(Source::File, vec![]);
        let err = t.verify(&old, NOW).unwrap_err();
        assert_eq!(err.code, DenyCode::InvalidAccessToken);
        assert!(err.message.contains("signing key"), "{}", err.message);
        assert!(t.verify(&new, NOW).is_ok());
        assert_eq!(t.count(), 1);
    }

    #[test]
    fn a_tampered_token_or_one_from_another_keyring_is_invalid() {
        let t = keys(vec![key("k", 1)]);
        let other = keys(vec![key("k", 9)]);
        let token = mint(&t, "sb", &[8080]);
        assert_eq!(
            other.verify(&token, NOW).unwrap_err().code,
            DenyCode::InvalidAccessToken
        );
        // The claims rewritten (another sandbox), the MAC kept.
        let forged = {
            let mut p = token::parse(&token).unwrap();
            p.claims.sandbox_id = "sb-other".into();
            p.claims.encode(&p.mac)
        };
        assert_eq!(
            t.verify(&forged, NOW).unwrap_err().code,
            DenyCode::InvalidAccessToken
        );
        for junk in ["", "sgt1.", "sgt1.AAAA", "nope"] {
            assert_eq!(
                t.verify(junk, NOW).unwrap_err().code,
                DenyCode::InvalidAccessToken
            );
        }
    }

    #[test]
    fn lifetimes_are_capped_and_tokens_expire() {
        let t = keys(vec![key("k", 1)]);
        let long = t
            .mint(
                &Mint {
                    namespace: "acme",
                    sandbox_id: "sb",
                    ports: vec![80, 80, 22],
                    ttl: Some(Duration::from_secs(10 * 86_400)),
                    minted_by: Some(([1; 8], Some(NOW + 60))),
                },
                NOW,
            )
            .unwrap();
        // Capped by the minting key's expiry, before the 24 h maximum.
        assert_eq!(long.claims.expires_at, NOW + 60);
        assert_eq!(long.claims.ports, vec![22, 80]);
        assert!(t.verify(&long.token, NOW + 59).is_ok());
        assert_eq!(
            t.verify(&long.token, NOW + 60).unwrap_err().code,
            DenyCode::ExpiredAccessToken
        );
        let default = t.verify(&mint(&t, "sb", &[]), NOW).unwrap();
        assert_eq!(default.expires_at, NOW + 3600);
    }

    #[test]
    fn minting_needs_a_key_and_valid_claims() {
        let none = keys(vec![]);
        let request = Mint {
            namespace: "acme",
            sandbox_id: "sb",
            ports: vec![],
            ttl: None,
            minted_by: None,
        };
        assert_eq!(none.mint(&request, NOW), Err(MintError::NoSigningKey));
        let t = keys(vec![key("k", 1)]);
        let bad = Mint {
            sandbox_id: "a/b",
            ..request.clone()
        };
        assert!(matches!(t.mint(&bad, NOW), Err(MintError::Invalid(_))));
        let expired_key = Mint {
            minted_by: Some(([1; 8], Some(NOW))),
            ..request
        };
        assert!(matches!(
            t.mint(&expired_key, NOW),
            Err(MintError::Invalid(_))
        ));
    }

    #[test]
    fn signing_keys_are_checked() {
        assert!(SigningKey::new("2026-12", vec![0; MIN_SECRET_LEN]).is_ok());
        assert!(SigningKey::new("2026-12", vec![0; MIN_SECRET_LEN - 1]).is_err());
        assert!(SigningKey::new("a b", vec![0; MIN_SECRET_LEN]).is_err());
        assert!(!format!("{:?}", key("k", 0x41)).contains("AAAA"));
    }
}
