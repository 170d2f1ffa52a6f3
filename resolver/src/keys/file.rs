//! Key files for local use and for admin keys mounted from a Secret.
//!
//! Two formats: an admin key file (one key per line, `#` comments) and a keys file (YAML):
//!
//! ```yaml
//! admins:                      # optional
//!   - key: demo-admin-key      # a key in clear, or
//!   - sha256: 9f86d08...       # its SHA-256 in hex
//! tenants:
//!   - key: demo-key-acme
//!     namespace: acme
//!     expiresAt: "2027-01-01T00:00:00Z"   # optional
//! ```

use jiff::Timestamp;
use serde::Deserialize;

use super::{Digest, KeySet, TenantKey, digest, parse_digest};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRef {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    sha256: Option<String>,
}

impl KeyRef {
    fn digest(&self) -> anyhow::Result<Digest> {
        match (&self.key, &self.sha256) {
            (Some(k), None) if !k.is_empty() => Ok(digest(k)),
            (None, Some(h)) => {
                parse_digest(h).ok_or_else(|| anyhow::anyhow!("sha256 must be 64 hex characters"))
            }
            _ => anyhow::bail!("each key needs exactly one of `key` or `sha256`"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantEntry {
    #[serde(flatten)]
    key: KeyRef,
    namespace: String,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    admins: Vec<KeyRef>,
    #[serde(default)]
    tenants: Vec<TenantEntry>,
}

/// Parses a keys file. Errors never quote a key.
pub fn parse_keys_file(yaml: &str) -> anyhow::Result<KeySet> {
    let file: KeysFile = if yaml.trim().is_empty() {
        KeysFile::default()
    } else {
        serde_saphyr::from_str(yaml).map_err(|e| anyhow::anyhow!("keys file: {e}"))?
    };
    let admins = file
        .admins
        .iter()
        .enumerate()
        .map(|(i, k)| k.digest().map_err(|e| anyhow::anyhow!("admins[{i}]: {e}")))
        .collect::<anyhow::Result<_>>()?;
    let tenants = file
        .tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ctx = |e: anyhow::Error| anyhow::anyhow!("tenants[{i}]: {e}");
            if t.namespace.is_empty() {
                return Err(ctx(anyhow::anyhow!("namespace is required")));
            }
            let expires_at = t
                .expires_at
                .as_deref()
                .map(str::parse::<Timestamp>)
                .transpose()
                .map_err(|e| ctx(anyhow::anyhow!("expiresAt: {e}")))?;
            Ok(TenantKey {
                digest: t.key.digest().map_err(ctx)?,
                namespace: t.namespace.as_str().into(),
                expires_at,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(KeySet { admins, tenants })
}

/// Parses an admin key file: one key per line, blank lines and `#` comments ignored.
pub fn parse_admin_file(text: &str) -> KeySet {
    KeySet {
        admins: parse_key_lines(text),
        tenants: Vec::new(),
    }
}

/// The digests of a one-key-per-line file (admin keys, internal tokens): lines are trimmed,
/// blank lines and `#` comments ignored.
pub fn parse_key_lines(text: &str) -> Vec<Digest> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(digest)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_file() {
        let set = parse_keys_file(&format!(
            r#"
admins:
  - key: adm
  - sha256: {}
tenants:
  - key: k1
    namespace: acme
  - sha256: {}
    namespace: globex
    expiresAt: "2027-01-01T00:00:00Z"
"#,
            hex::encode(digest("adm2")),
            hex::encode(digest("k2"))
        ))
        .unwrap();
        assert_eq!(set.admins, vec![digest("adm"), digest("adm2")]);
        assert_eq!(set.tenants.len(), 2);
        assert_eq!(set.tenants[1].digest, digest("k2"));
        assert_eq!(&*set.tenants[1].namespace, "globex");
        assert!(set.tenants[1].expires_at.is_some());
        assert_eq!(parse_keys_file("").unwrap(), KeySet::default());
    }

    #[test]
    fn keys_file_errors_name_the_entry_not_the_key() {
        for (bad, want) in [
            (
                "tenants:\n  - key: secret-value\n    namespace: ''",
                "tenants[0]",
            ),
            ("tenants:\n  - namespace: a", "tenants[0]"),
            (
                "tenants:\n  - {key: a, sha256: b, namespace: c}",
                "tenants[0]",
            ),
            ("admins:\n  - sha256: zz", "admins[0]"),
            (
                "tenants:\n  - {key: a, namespace: b, expiresAt: soon}",
                "expiresAt",
            ),
        ] {
            let err = parse_keys_file(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
            assert!(!err.contains("secret-value"), "{err}");
        }
    }

    #[test]
    fn parses_admin_file() {
        let set = parse_admin_file("# rotated 2026-01\nnew-key\n\n  old-key  \n");
        assert_eq!(set.admins, vec![digest("new-key"), digest("old-key")]);
    }
}
