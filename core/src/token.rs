//! Access tokens: a credential that opens one sandbox (some or all of its ports) for a while,
//! for clients that must not hold a tenant key — browsers, shared links, the E2B SDK.
//!
//! Owns the token's text form and its claims: [`Claims::encode`] for the minter, [`parse`] for
//! every entry. It knows nothing of keys or crypto: the resolver computes and checks the MAC
//! (HMAC-SHA256 over [`Claims::signed_bytes`]) with its signing keys, so an entry can read a
//! token's claims (a cookie's lifetime) but never trust them unverified.
//!
//! Text: `sgt1.` then base64url (no padding) of `payload ‖ mac`, where payload is
//!
//! ```text
//! flags u8 (bit 0: minted by a tenant key) | expires u64 BE (Unix seconds)
//! | key id (u8 length, bytes) | namespace (u8 length, bytes) | sandbox id (u8 length, bytes)
//! | ports (u8 count, u16 BE each; 0 = every port) | [minter: 8 bytes, with flag bit 0]
//! ```
//!
//! and mac is 32 bytes. Only `[A-Za-z0-9._-]` appear, so a token goes in a header, a query
//! parameter or a cookie as it is.

use crate::{MAX_SANDBOX_ID_LEN, validate_sandbox_id};

/// Every token starts so; a value without it is not ours (an app's own `X-Access-Token`).
pub const TOKEN_PREFIX: &str = "sgt1.";
pub const MAC_LEN: usize = 32;
/// More ports than this is "every port" in all but name: mint that instead.
pub const MAX_TOKEN_PORTS: usize = 16;
/// Longest text [`parse`] reads: the largest token there is fits well below it.
pub const MAX_TOKEN_LEN: usize = 700;

const FLAG_MINTER: u8 = 1;

/// What a token says. `ports` empty: every port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The signing key's id: which key's MAC to check.
    pub key_id: String,
    /// The tenant: the sandbox's Pod must live in this namespace.
    pub namespace: String,
    pub sandbox_id: String,
    pub ports: Vec<u16>,
    /// Unix seconds; the token is refused from this second on.
    pub expires_at: u64,
    /// The first 8 bytes of the SHA-256 of the tenant key that minted it: the token dies with
    /// that key. `None`: minted by an admin, bound to its signing key only.
    pub minted_by: Option<[u8; 8]>,
}

/// Why a text is no usable token. Only the resolver tells a client which (a 401 either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// It does not start with [`TOKEN_PREFIX`].
    NotAToken,
    /// It does, but its bytes are no token of this version; the reason is for logs.
    Malformed(&'static str),
}

/// A token as presented: its claims, the bytes its MAC covers, and the MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub claims: Claims,
    pub signed: Vec<u8>,
    pub mac: [u8; MAC_LEN],
}

impl Claims {
    /// Whether the token opens `port`.
    pub fn opens(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }

    /// Refuses claims no token may carry, so a minter cannot sign what no entry would read.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.key_id.is_empty() || self.key_id.len() > 32 || !self.key_id.bytes().all(is_id_byte)
        {
            return Err("key id must be 1 to 32 of [A-Za-z0-9._-]");
        }
        let ns = self.namespace.as_bytes();
        let dns_label = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && ns.first() != Some(&b'-')
            && ns.last() != Some(&b'-');
        if !dns_label {
            return Err("namespace must be a Kubernetes namespace name");
        }
        if validate_sandbox_id(&self.sandbox_id).is_err() {
            return Err("sandbox id is not valid");
        }
        if self.ports.len() > MAX_TOKEN_PORTS || self.ports.contains(&0) {
            return Err("ports must be at most 16 ports from 1 to 65535");
        }
        Ok(())
    }

    /// The bytes the MAC covers: the prefix (so a later version's bytes never verify as
    /// this one's) and the payload.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TOKEN_PREFIX.len() + 32 + MAX_SANDBOX_ID_LEN);
        out.extend_from_slice(TOKEN_PREFIX.as_bytes());
        out.push(if self.minted_by.is_some() {
            FLAG_MINTER
        } else {
            0
        });
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        for field in [&self.key_id, &self.namespace, &self.sandbox_id] {
            // check() bounds every field below 256 bytes.
            out.push(field.len() as u8);
            out.extend_from_slice(field.as_bytes());
        }
        out.push(self.ports.len() as u8);
        for p in &self.ports {
            out.extend_from_slice(&p.to_be_bytes());
        }
        if let Some(m) = self.minted_by {
            out.extend_from_slice(&m);
        }
        out
    }

    /// The token's text, given the MAC over [`Claims::signed_bytes`]. Claims must pass
    /// [`Claims::check`].
    pub fn encode(&self, mac: &[u8; MAC_LEN]) -> String {
        let signed = self.signed_bytes();
        let mut raw = signed
            .get(TOKEN_PREFIX.len()..)
            .unwrap_or_default()
            .to_vec();
        raw.extend_from_slice(mac);
        let mut out = String::from(TOKEN_PREFIX);
        base64url_encode(&raw, &mut out);
        out
    }
}

/// Reads a token's text. Nothing is verified: the claims are what the token *says*.
pub fn parse(text: &str) -> Result<Presented, TokenError> {
    let body = text
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(TokenError::NotAToken)?;
    if text.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("too long"));
    }
    let raw = base64url_decode(body).ok_or(TokenError::Malformed("not base64url"))?;
    let payload_len = raw
        .len()
        .checked_sub(MAC_LEN)
        .ok_or(TokenError::Malformed("too short"))?;
    let (payload, mac_bytes) = raw.split_at(payload_len);
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(mac_bytes);
    let mut r = Reader(payload);
    let flags = r.byte()?;
    if flags & !FLAG_MINTER != 0 {
        return Err(TokenError::Malformed("unknown flags"));
    }
    let expires_at = u64::from_be_bytes(r.array::<8>()?);
    let key_id = r.text()?;
    let namespace = r.text()?;
    let sandbox_id = r.text()?;
    let count = r.byte()?;
    let mut ports = Vec::with_capacity(usize::from(count).min(MAX_TOKEN_PORTS));
    for _ in 0..count {
        ports.push(u16::from_be_bytes(r.array::<2>()?));
    }
    let minted_by = if flags & FLAG_MINTER != 0 {
        Some(r.array::<8>()?)
    } else {
        None
    };
    if !r.0.is_empty() {
        return Err(TokenError::Malformed("trailing bytes"));
    }
    let claims = Claims {
        key_id,
        namespace,
        sandbox_id,
        ports,
        expires_at,
        minted_by,
    };
    claims.check().map_err(TokenError::Malformed)?;
    let mut signed = Vec::with_capacity(TOKEN_PREFIX.len() + payload.len());
    signed.extend_from_slice(TOKEN_PREFIX.as_bytes());
    signed.extend_from_slice(payload);
    Ok(Presented {
        claims,
        signed,
        mac,
    })
}

/// Whether a value has a token's shape on its face (the prefix, then the alphabet): what an
/// entry needs to tell a token from an app's own credential without decoding it.
pub fn looks_like_token(value: &str) -> bool {
    value.strip_prefix(TOKEN_PREFIX).is_some_and(|b| {
        !b.is_empty()
            && b.bytes()
                .all(|c| c == b'-' || c == b'_' || c.is_ascii_alphanumeric())
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, TokenError> {
        Ok(self.array::<1>()?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        if self.0.len() < N {
            return Err(TokenError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(N);
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        self.0 = rest;
        Ok(out)
    }

    fn text(&mut self) -> Result<String, TokenError> {
        let len = usize::from(self.byte()?);
        if self.0.len() < len {
            return Err(TokenError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        core::str::from_utf8(head)
            .map(str::to_string)
            .map_err(|_| TokenError::Malformed("not text"))
    }
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn base64url_encode(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..=chunk.len() {
            let sextet = (n >> (18 - 6 * i) & 63) as usize;
            out.extend(ALPHABET.get(sextet).map(|b| char::from(*b)));
        }
    }
}

/// Unpadded base64url; `None` for any other byte, a dangling character or non-zero spare bits
/// (one token has one text: a second spelling would be a second cache key).
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let sextet = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= sextet(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        let keep = chunk.len() - 1;
        if bytes.get(1 + keep..)?.iter().any(|b| *b != 0) {
            return None;
        }
        out.extend_from_slice(bytes.get(1..=keep)?);
    }
    Some(out)
}

/// An HTTP date (RFC 9110 IMF-fixdate) for Unix seconds: a cookie's `Expires`.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS.get((days % 7) as usize).unwrap_or(&"Thu"),
        day,
        MONTHS.get((month - 1) as usize).unwrap_or(&"Jan"),
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    // The same tests run natively and, under `just wasm-test`, as 32-bit wasm in Node.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn claims() -> Claims {
        Claims {
            key_id: "2026-12".into(),
            namespace: "acme".into(),
            sandbox_id: "demo-a".into(),
            ports: vec![8080, 49983],
            expires_at: 1_796_000_000,
            minted_by: Some(*b"\x01\x02\x03\x04\x05\x06\x07\x08"),
        }
    }

    #[test]
    fn a_token_round_trips_and_carries_only_url_safe_characters() {
        let mac = [7u8; MAC_LEN];
        for c in [
            claims(),
            Claims {
                ports: vec![],
                minted_by: None,
                ..claims()
            },
        ] {
            assert_eq!(c.check(), Ok(()));
            let text = c.encode(&mac);
            assert!(looks_like_token(&text), "{text}");
            let p = parse(&text).unwrap();
            assert_eq!(p.claims, c);
            assert_eq!(p.mac, mac);
            assert_eq!(p.signed, c.signed_bytes());
            assert!(text.len() < 200, "compact: {}", text.len());
        }
    }

    #[test]
    fn ports_open_what_they_name_and_none_means_all() {
        let c = claims();
        assert!(c.opens(8080) && c.opens(49983) && !c.opens(80));
        let all = Claims {
            ports: vec![],
            ..claims()
        };
        assert!(all.opens(1) && all.opens(65535));
    }

    #[test]
    fn anything_else_is_refused_without_a_panic() {
        let good = claims().encode(&[1; MAC_LEN]);
        assert_eq!(parse("Bearer x"), Err(TokenError::NotAToken));
        assert_eq!(parse("sgt2.AAAA"), Err(TokenError::NotAToken));
        for bad in [
            "sgt1.",
            "sgt1.A",
            "sgt1.AAAA",
            "sgt1.!!!!",
            "sgt1.AB==",
            // A changed last character sets spare bits or changes the MAC; one dropped
            // shortens it.
            &good[..good.len() - 1],
            &format!("{good}A"),
            &format!("sgt1.{}", "A".repeat(MAX_TOKEN_LEN)),
        ] {
            assert!(
                matches!(parse(bad), Err(TokenError::Malformed(_))),
                "{bad:?}: {:?}",
                parse(bad)
            );
        }
        // Every truncation of the payload is refused.
        let raw = base64url_decode(&good[TOKEN_PREFIX.len()..]).unwrap();
        for cut in 0..raw.len() {
            let mut s = String::from(TOKEN_PREFIX);
            base64url_encode(&raw[..cut], &mut s);
            assert!(parse(&s).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn claims_that_no_entry_would_read_are_refused() {
        let bad = |f: fn(&mut Claims)| {
            let mut c = claims();
            f(&mut c);
            c.check().is_err()
        };
        assert!(bad(|c| c.key_id.clear()));
        assert!(bad(|c| c.key_id = "a b".into()));
        assert!(bad(|c| c.key_id = "k".repeat(33)));
        assert!(bad(|c| c.namespace = "Acme".into()));
        assert!(bad(|c| c.namespace = "-acme".into()));
        assert!(bad(|c| c.namespace = "a".repeat(64)));
        assert!(bad(|c| c.sandbox_id = "a/b".into()));
        assert!(bad(|c| c.ports = vec![0]));
        assert!(bad(|c| c.ports = (1..=17).collect()));
    }

    #[test]
    fn base64url_is_canonical() {
        let mut s = String::new();
        base64url_encode(b"\xfb\xff\x00ab", &mut s);
        assert_eq!(s, "-_8AYWI");
        assert_eq!(base64url_decode(&s).unwrap(), b"\xfb\xff\x00ab");
        assert_eq!(base64url_decode(""), Some(vec![]));
        // "YWJ" is "ab" with its spare bits zero; "YWK" sets them.
        assert_eq!(base64url_decode("YWI").unwrap(), b"ab");
        assert_eq!(base64url_decode("YWJ"), None);
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    }
}
