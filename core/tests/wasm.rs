//! sandgate-core compiled to 32-bit wasm (wasm32-unknown-unknown) and run under Node by
//! wasm-bindgen-test-runner (`just wasm-test`): the filter runs this code inside Envoy's wasm VM,
//! so every rule must behave exactly as it does natively when `usize` is 32 bits. Values sit on
//! the boundaries where a narrowing cast or a 32-bit length would change the answer.
#![cfg(target_arch = "wasm32")]

use sandgate_core::{
    Deny, DenyCode, GrpcCode, MAX_SANDBOX_ID_LEN, check_port, parse_port, split_cluster,
    validate_sandbox_id,
};
use wasm_bindgen_test::wasm_bindgen_test;

fn code<T: core::fmt::Debug>(r: Result<T, Deny>) -> DenyCode {
    r.unwrap_err().code
}

#[wasm_bindgen_test]
fn runs_on_32_bit_wasm() {
    assert_eq!(usize::BITS, 32);
    assert_eq!(core::mem::size_of::<&str>(), 8, "a 32-bit fat pointer");
}

#[wasm_bindgen_test]
fn sandbox_id_length_boundaries() {
    assert_eq!(MAX_SANDBOX_ID_LEN, 128);
    let max = "a".repeat(128);
    assert_eq!(validate_sandbox_id(&max), Ok(max.as_str()));
    let max_mixed = format!("A{}9", "b.c_d-".repeat(21));
    assert_eq!(max_mixed.len(), 128);
    assert!(validate_sandbox_id(&max_mixed).is_ok());
    // One past the limit, and lengths that are ≤ 128 only after truncation to u8 / u16.
    for len in [129, 256 + 1, 65_536 + 1, 65_536 + 128] {
        let id = "a".repeat(len);
        assert_eq!(
            code(validate_sandbox_id(&id)),
            DenyCode::InvalidSandboxId,
            "{len}"
        );
    }
    // The limit counts bytes, not characters: 64 two-byte characters are 128 bytes (and
    // refused for the charset), 65 are 130 bytes (refused for the length).
    assert_eq!("é".repeat(64).len(), 128);
    for id in [
        "é".repeat(64),
        "é".repeat(65),
        format!("{}é", "a".repeat(127)),
    ] {
        assert_eq!(code(validate_sandbox_id(&id)), DenyCode::InvalidSandboxId);
    }
}

#[wasm_bindgen_test]
fn sandbox_id_grammar() {
    for ok in [
        "a",
        "0",
        "demo-a",
        "A.b_c-9",
        "cluster2.0f8fad5b-d9cb-469f-a165-70867728950e",
    ] {
        assert_eq!(validate_sandbox_id(ok), Ok(ok));
    }
    assert_eq!(code(validate_sandbox_id("")), DenyCode::MissingSandboxId);
    for bad in [
        "-a", "a-", ".a", "a.", "_a", "..", "a/b", "a b", "a%2f", "a\0", "a:b", "é", "\u{ff}",
    ] {
        assert_eq!(
            code(validate_sandbox_id(bad)),
            DenyCode::InvalidSandboxId,
            "{bad:?}"
        );
    }
}

#[wasm_bindgen_test]
fn numeric_port_boundaries() {
    assert_eq!(code(check_port(0)), DenyCode::MissingPort);
    assert_eq!(check_port(1), Ok(1));
    assert_eq!(check_port(80), Ok(80));
    assert_eq!(check_port(65_535), Ok(65_535));
    // Each of these would become a valid port if narrowed to u16 (65_616 as u16 == 80).
    for bad in [
        65_536,
        65_537,
        65_536 + 80,
        131_071,
        i32::MAX as u32,
        u32::MAX,
    ] {
        assert_eq!(code(check_port(bad)), DenyCode::InvalidPort, "{bad}");
    }
}

#[wasm_bindgen_test]
fn port_text() {
    for (raw, port) in [
        ("1", 1),
        ("80", 80),
        ("00080", 80),
        ("8080", 8080),
        ("65535", 65_535),
    ] {
        assert_eq!(parse_port(raw), Ok(port), "{raw:?}");
    }
    assert_eq!(code(parse_port("")), DenyCode::MissingPort);
    // "0" is a port the client gave: invalid, not missing. The long ones overflow u16, u32
    // (4294967296) and u64, and would wrap to 80 or 1 if parsed into a narrower type.
    for bad in [
        "0",
        "00000",
        "65536",
        "65616",
        "99999",
        "123456",
        "4294967295",
        "4294967296",
        "4295032912",
        "18446744073709551617",
        "+80",
        "-1",
        " 80",
        "80 ",
        "8o",
        "0x50",
        "١٢",
    ] {
        assert_eq!(code(parse_port(bad)), DenyCode::InvalidPort, "{bad:?}");
    }
}

#[wasm_bindgen_test]
fn status_table() {
    use DenyCode::*;
    assert_eq!(DenyCode::ALL.len(), 28);
    let distinct: std::collections::HashSet<DenyCode> = DenyCode::ALL.into_iter().collect();
    assert_eq!(distinct.len(), DenyCode::ALL.len());
    for c in DenyCode::ALL {
        assert_eq!(DenyCode::parse(c.as_str()), Some(c));
        assert_eq!(c.to_string(), c.as_str());
        let grpc = c.grpc_code();
        let expected = match c.http_status() {
            400 => GrpcCode::InvalidArgument,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::NotFound,
            429 => GrpcCode::ResourceExhausted,
            502 => GrpcCode::FailedPrecondition,
            503 => GrpcCode::Unavailable,
            other => panic!("{c}: unexpected status {other}"),
        };
        assert_eq!(grpc, expected, "{c}");
    }
    assert_eq!(DenyCode::parse("nope"), None);
    assert_eq!(DenyCode::parse("Forbidden"), None);
    assert_eq!(
        (InvalidPort.http_status(), InvalidPort.as_str()),
        (400, "invalid_port")
    );
    assert_eq!(
        (ExpiredApiKey.http_status(), ExpiredApiKey.as_str()),
        (401, "expired_api_key")
    );
    assert_eq!(
        (SandboxReassigned.http_status(), SandboxReassigned.as_str()),
        (502, "sandbox_reassigned")
    );
    assert_eq!(ResolverUnavailable.http_status(), 503);
    assert_eq!(Forbidden.grpc_code() as i32, 7);
    assert_eq!(InvalidApiKey.grpc_code() as i32, 16);
}

#[wasm_bindgen_test]
fn deny_wire_forms() {
    let d = check_port(65_536).unwrap_err();
    assert_eq!(d.status(), 400);
    assert_eq!(
        d.json_body(),
        r#"{"code":"invalid_port","message":"sandbox port must be a number from 1 to 65535"}"#
    );
    assert_eq!(
        d.to_string(),
        "400 (invalid_port): sandbox port must be a number from 1 to 65535"
    );

    let d = Deny::new(DenyCode::InvalidSandboxId, "bad \"id\"\n\u{1}\\ é\u{1f}");
    assert_eq!(
        d.json_body(),
        r#"{"code":"invalid_sandbox_id","message":"bad \"id\"\n\u0001\\ é\u001f"}"#
    );
    // A message longer than 64 KiB survives intact (no u16 length anywhere on the way).
    let long = "x".repeat(70_000);
    let body = Deny::new(DenyCode::Forbidden, long.as_str()).json_body();
    assert_eq!(
        body.len(),
        r#"{"code":"forbidden","message":""}"#.len() + 70_000
    );
    assert!(body.ends_with(&format!("{long}\"}}")));
}

#[wasm_bindgen_test]
fn cluster_ids_split_at_the_uuid() {
    let uuid = "0F8FAD5B-D9CB-469F-A165-70867728950E";
    // Longest legal id: a 91-byte cluster id, the dot and the UUID (lengths near 2^7).
    let cluster = "c".repeat(MAX_SANDBOX_ID_LEN - 37);
    let id = format!("{cluster}.{uuid}");
    assert_eq!(validate_sandbox_id(&id), Ok(id.as_str()));
    let r = split_cluster(&id);
    assert_eq!((r.cluster, r.id), (Some(cluster.as_str()), uuid));
    // Exactly 37 bytes (".uuid"): no cluster.
    let bare = format!(".{uuid}");
    assert_eq!(split_cluster(&bare).cluster, None);
    assert_eq!(split_cluster(uuid).cluster, None);
}
