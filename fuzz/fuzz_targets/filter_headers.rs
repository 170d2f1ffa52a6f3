//! The wasm filter's header handling on arbitrary bytes: the header map as the host serialises
//! it (any bytes, malformed included) is read without panicking, and any header list, names
//! and values of any bytes, gets a target or a refusal, with every gateway header marked for
//! removal whatever its value — the F1/F5 findings of the security review.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sandgate_core::RequestGrammar;
use sandgate_filter::cache::Key;
use sandgate_filter::{host, wire};
use sandgate_proto::resolver::v1::ResolveRequest;

fuzz_target!(|data: &[u8]| {
    // What the host hands over, taken as it is: a malformed map is an error, never a panic.
    if let Some(map) = host::parse_map(data) {
        let _ = RequestGrammar::default().parse_headers(&map);
    }

    let list = sandgate_fuzz::header_list(data);
    let grammar = RequestGrammar::default();
    let parsed = grammar.parse_headers(&list);
    let api_key = parsed.as_ref().ok().and_then(|t| t.api_key.map(|(k, _)| k));
    for (name, value) in &list {
        let private = [b"x-sandbox-".as_slice(), b"x-sandgate-", b"e2b-sandbox-"]
            .iter()
            .any(|p| name.starts_with(p));
        if private {
            assert!(
                grammar.is_gateway_header(name, value, api_key),
                "{name:?} must be stripped whatever its value"
            );
        }
    }
    match parsed {
        Ok(t) => {
            // Nothing is invented: the id and key come from the input's bytes.
            let found = |s: &str| data.windows(s.len().max(1)).any(|w| w == s.as_bytes());
            assert!(found(t.sandbox_id));
            if let Some((key, _)) = t.api_key {
                assert!(key.is_empty() || found(key));
            }
            let _ = Key::of(&t);
            let request = ResolveRequest::decode(wire::resolve_request(&t, None).as_slice())
                .expect("the filter's own Resolve request decodes");
            assert_eq!(request.sandbox_id, t.sandbox_id);
            assert_eq!(request.other_credentials.len(), t.other_credentials.len());
            assert_eq!(request.e2b, t.e2b);
        }
        Err(deny) => assert!((400..=499).contains(&deny.status()), "{deny}"),
    }
});
