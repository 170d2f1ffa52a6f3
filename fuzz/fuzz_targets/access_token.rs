//! Access-token text as every entry reads it (a header, the query parameter, the cookie): any
//! text is read without a panic; a text that parses carries claims a minter could have signed,
//! and is the one spelling of its token — its claims encoded again with its MAC give back the
//! input byte for byte (a second spelling would be a second cache key for one token). The input
//! is tried as it is and as the base64url payload of a token, so mutations reach the claims'
//! bytes without having to keep the base64 intact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandgate_core::token::{MAX_TOKEN_LEN, TOKEN_PREFIX, TokenError, looks_like_token, parse};

fuzz_target!(|data: &[u8]| {
    check(&String::from_utf8_lossy(data));
    check(&as_token(data));
});

fn check(text: &str) {
    let looks = looks_like_token(text);
    match parse(text) {
        Ok(p) => {
            assert_eq!(p.claims.check(), Ok(()), "{text:?}");
            assert_eq!(p.claims.encode(&p.mac), text, "a token has one spelling");
            assert_eq!(p.signed, p.claims.signed_bytes(), "{text:?}");
            assert!(looks, "a token that parses looks like one: {text:?}");
            assert!(text.len() <= MAX_TOKEN_LEN, "{}", text.len());
        }
        Err(TokenError::NotAToken) => {
            assert!(!text.starts_with(TOKEN_PREFIX), "{text:?}");
            assert!(!looks, "{text:?}");
        }
        Err(TokenError::Malformed(_)) => assert!(text.starts_with(TOKEN_PREFIX), "{text:?}"),
    }
}

/// `sgt1.` and `data` in unpadded base64url.
fn as_token(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::from(TOKEN_PREFIX);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}
