//! What an entry does with a request: route it to a destination or refuse it.

use crate::{DenyCode, Forward};

/// A refusal with a message that is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub code: DenyCode,
    pub message: String,
}

impl Deny {
    pub fn new(code: DenyCode, message: impl Into<String>) -> Self {
        Deny {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.code.http_status()
    }

    /// The local-reply body every entry sends: `{"code":"...","message":"..."}`.
    pub fn json_body(&self) -> String {
        let mut out = String::with_capacity(32 + self.message.len());
        out.push_str("{\"code\":\"");
        out.push_str(self.code.as_str());
        out.push_str("\",\"message\":\"");
        push_json_escaped(&mut out, &self.message);
        out.push_str("\"}");
        out
    }
}

impl core::fmt::Display for Deny {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code.http_status(),
            self.code,
            self.message
        )
    }
}

/// The outcome of resolving one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the request to `destination` (`ip:port`, IPv6 bracketed); with
    /// `strip_authorization`, the request's `authorization` carries a gateway key other than
    /// the one that authenticated it, and is removed.
    Route {
        destination: String,
        strip_authorization: bool,
    },
    /// Send the request on to another cluster's gateway (boxed: it is the rare, large case).
    Forward(Box<Forward>),
    Deny(Deny),
}

fn push_json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(HEX[(c as usize) >> 4] as char);
                out.push(HEX[(c as usize) & 0xf] as char);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The same tests run natively and, under `just wasm-test`, as 32-bit wasm in Node.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn json_body_escapes_the_message() {
        let d = Deny::new(DenyCode::InvalidSandboxId, "bad \"id\"\n\u{1}\\ é");
        assert_eq!(
            d.json_body(),
            r#"{"code":"invalid_sandbox_id","message":"bad \"id\"\n\u0001\\ é"}"#
        );
        assert_eq!(d.status(), 400);
    }
}
