//! The signing keys file (`--token-keys-file`): a YAML mapping of key id to secret, base64
//! (standard or URL-safe, padded or not), at least 32 bytes each:
//!
//! ```yaml
//! 2026-11-01: "3q2+7w…"   # retiring: still verifies
//! 2026-12-01: "yv66vg…"   # the greatest id signs
//! ```
//!
//! Owns parsing only; the file is watched by `reload` and applied as [`super::Source::File`].

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use super::SigningKey;

/// Parses the file. Errors name the key id, never a secret.
pub fn parse(yaml: &str) -> anyhow::Result<Vec<SigningKey>> {
    if yaml.trim().is_empty() {
        return Ok(Vec::new());
    }
    let map: BTreeMap<String, String> =
        serde_saphyr::from_str(yaml).map_err(|e| anyhow::anyhow!("token keys file: {e}"))?;
    map.into_iter()
        .map(|(id, secret)| {
            let secret = decode(&secret)
                .ok_or_else(|| anyhow::anyhow!("signing key {id:?}: the secret is not base64"))?;
            SigningKey::new(&id, secret)
        })
        .collect()
}

/// Base64 in either alphabet, padding optional.
fn decode(text: &str) -> Option<Vec<u8>> {
    let standard: String = text
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    STANDARD_NO_PAD.decode(standard).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_and_secrets_in_either_alphabet() {
        let secret = [0xfbu8; 32];
        let std = base64::engine::general_purpose::STANDARD.encode(secret);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let keys = parse(&format!("2026-11: \"{std}\"\n2026-12: {url}\n")).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.iter().all(|k| k.secret == secret));
        assert_eq!(keys[1].id, "2026-12");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn refuses_short_or_unreadable_secrets_without_quoting_them() {
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        let err = parse(&format!("k: {short}")).unwrap_err().to_string();
        assert!(err.contains("32") && !err.contains(&short), "{err}");
        let err = parse("k: \"not base64!\"").unwrap_err().to_string();
        assert!(
            err.contains("\"k\"") && !err.contains("not base64!"),
            "{err}"
        );
        assert!(parse("- a list").is_err());
    }
}
