//! What an entry does with a request: route it to a destination or refuse it.

use crate::{DenyCode, Forward};

/// A refusal with a message that is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub code: DenyCode,
    pub message: String,
    /// The table's status for `code`, or its one alternative ([`DenyCode::alternative_status`]).
    status: u16,
}

impl Deny {
    pub fn new(code: DenyCode, message: impl Into<String>) -> Self {
        Deny {
            code,
            message: message.into(),
            status: code.http_status(),
        }
    }

    /// The same refusal answered with `status`, when the table allows it for this code
    /// (`sandbox_not_found` as 502 for the E2B SDK); any other status leaves it as it is.
    pub fn with_status(mut self, status: u16) -> Self {
        if self.code.alternative_status() == Some(status) {
            self.status = status;
        }
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// The local reply's headers every entry sends with [`Deny::json_body`]: never cached, and
    /// when the refusal passes, when to try again.
    pub fn reply_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("content-type", "application/json".to_string()),
            ("cache-control", "no-store".to_string()),
        ];
        headers.extend(
            self.code
                .retry_after()
                .map(|s| ("retry-after", s.to_string())),
        );
        headers
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
    /// Send the request to `destination` (`ip:port`, IPv6 bracketed). Bit `i` of
    /// `strip_credentials`: the request's `i`-th other credential
    /// ([`crate::Target::other_credentials`]) is a gateway key, and its header is removed.
    Route {
        destination: String,
        strip_credentials: u32,
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
                out.push_str("\\u00");
                for digit in [c as u32 >> 4, c as u32 & 0xf] {
                    out.push(char::from_digit(digit, 16).unwrap_or('0'));
                }
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

    #[test]
    fn only_the_tables_alternative_status_is_taken() {
        let gone = Deny::new(DenyCode::SandboxNotFound, "x");
        assert_eq!(gone.status(), 404);
        assert_eq!(gone.clone().with_status(502).status(), 502);
        assert_eq!(gone.with_status(500).status(), 404);
        let bad = Deny::new(DenyCode::InvalidPort, "x").with_status(502);
        assert_eq!(bad.status(), 400);
    }
}
