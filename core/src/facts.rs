//! Validation of the request facts every entry extracts: sandbox id and port.

use crate::{Deny, DenyCode};

/// Longer ids are refused before any lookup: they cannot be Kubernetes label values
/// (63 characters), and cross-cluster ids (`cluster.uuid`) stay well below this.
pub const MAX_SANDBOX_ID_LEN: usize = 128;

/// Accepts `[A-Za-z0-9._-]`, starting and ending with an alphanumeric, 1..=128 bytes.
pub fn validate_sandbox_id(id: &str) -> Result<&str, Deny> {
    if id.is_empty() {
        return Err(Deny::new(
            DenyCode::MissingSandboxId,
            "sandbox id is missing",
        ));
    }
    if id.len() > MAX_SANDBOX_ID_LEN {
        return Err(Deny::new(
            DenyCode::InvalidSandboxId,
            "sandbox id is longer than 128 characters",
        ));
    }
    let bytes = id.as_bytes();
    let charset_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    let ends_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if charset_ok && ends_ok {
        Ok(id)
    } else {
        Err(Deny::new(
            DenyCode::InvalidSandboxId,
            "sandbox id must be letters, digits, '.', '_' or '-', starting and ending with a letter or digit",
        ))
    }
}

/// Parses a port: 1 to 5 ASCII digits, value 1..=65535. No sign, space or other digit forms.
pub fn parse_port(raw: &str) -> Result<u16, Deny> {
    if raw.is_empty() {
        return Err(Deny::new(DenyCode::MissingPort, "sandbox port is missing"));
    }
    if raw.len() > 5 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return check_port(u32::MAX);
    }
    // At most five ASCII digits: always fits, and "0"/"00000" is a port 0 the client *gave*.
    match raw.parse::<u32>() {
        Ok(0) | Err(_) => check_port(u32::MAX),
        Ok(p) => check_port(p),
    }
}

/// The client's IP from Envoy's `source.address` (`ip:port`, `[v6]:port`, or a bare IP).
pub fn client_ip(address: &str) -> Option<core::net::IpAddr> {
    address
        .parse::<core::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| address.parse())
        .ok()
}

/// Validates a port received as a number (0 = not given), e.g. from the Resolve message.
pub fn check_port(port: u32) -> Result<u16, Deny> {
    match port {
        0 => Err(Deny::new(DenyCode::MissingPort, "sandbox port is missing")),
        1..=65535 => Ok(port as u16),
        _ => Err(Deny::new(
            DenyCode::InvalidPort,
            "sandbox port must be a number from 1 to 65535",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The same tests run natively and, under `just wasm-test`, as 32-bit wasm in Node.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn sandbox_ids() {
        for ok in [
            "a",
            "demo-a",
            "A.b_c-9",
            "cluster2.0f8fad5b-d9cb-469f-a165-70867728950e",
        ] {
            assert_eq!(validate_sandbox_id(ok), Ok(ok));
        }
        assert_eq!(
            validate_sandbox_id("").unwrap_err().code,
            DenyCode::MissingSandboxId
        );
        let long = "a".repeat(MAX_SANDBOX_ID_LEN + 1);
        assert!(validate_sandbox_id(&"a".repeat(MAX_SANDBOX_ID_LEN)).is_ok());
        for bad in [
            long.as_str(),
            "-a",
            "a-",
            ".a",
            "a/b",
            "a b",
            "a%2f",
            "é",
            "a\0",
            "..",
            "a:b",
        ] {
            assert_eq!(
                validate_sandbox_id(bad).unwrap_err().code,
                DenyCode::InvalidSandboxId,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn client_addresses() {
        let ip = |s: &str| client_ip(s).map(|a| a.to_string());
        assert_eq!(ip("10.0.0.1:5555").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("[fd00::1]:80").as_deref(), Some("fd00::1"));
        assert_eq!(ip("fd00::1").as_deref(), Some("fd00::1"));
        assert_eq!(ip("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip(""), None);
        assert_eq!(ip("envoy://internal"), None);
    }

    #[test]
    fn numeric_ports() {
        assert_eq!(check_port(0).unwrap_err().code, DenyCode::MissingPort);
        assert_eq!(check_port(1), Ok(1));
        assert_eq!(check_port(65535), Ok(65535));
        assert_eq!(check_port(65536).unwrap_err().code, DenyCode::InvalidPort);
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("1"), Ok(1));
        assert_eq!(parse_port("8080"), Ok(8080));
        assert_eq!(parse_port("65535"), Ok(65535));
        assert_eq!(parse_port("00080"), Ok(80));
        assert_eq!(parse_port("").unwrap_err().code, DenyCode::MissingPort);
        for bad in [
            "0", "65536", "99999", "+80", " 80", "80 ", "-1", "8o", "١٢", "123456", "0x50",
        ] {
            assert_eq!(
                parse_port(bad).unwrap_err().code,
                DenyCode::InvalidPort,
                "{bad:?}"
            );
        }
    }
}
