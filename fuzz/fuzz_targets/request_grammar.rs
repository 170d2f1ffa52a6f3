//! The request grammar both entries share: any header list either names a sandbox the way the
//! validators accept, or is refused with a code — and never panics. Also the id helpers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandgate_core::{
    Decision, Forward, PeerUpstream, RequestGrammar, parse_port, split_cluster, validate_sandbox_id,
};

fuzz_target!(|data: &[u8]| {
    let list = sandgate_fuzz::header_list(data);
    for grammar in [
        RequestGrammar::default(),
        RequestGrammar {
            default_port: Some(8080),
            key_headers: Vec::new(),
            ..RequestGrammar::default()
        },
    ] {
        match grammar.parse_headers(&list) {
            Ok(t) => {
                assert_eq!(validate_sandbox_id(t.sandbox_id), Ok(t.sandbox_id));
                assert_ne!(t.port, 0);
                if let Some(p) = &t.rewritten_path {
                    assert!(p.starts_with('/'), "{p:?}");
                }
                let forward = Forward {
                    destination: "10.0.0.1:80".into(),
                    authority: "gw".into(),
                    path_prefix: "/p".into(),
                    upstream: PeerUpstream::Plain,
                    headers: Vec::new(),
                    from_cluster: "c1".into(),
                };
                let forward = Decision::Forward(Box::new(forward));
                let r = grammar.routing(&t, &forward).expect("a forward routes");
                assert!(r.rematch);
                assert!(
                    r.writes
                        .iter()
                        .any(|(k, v)| k == ":path" && v.starts_with("/p"))
                );
                let route = Decision::Route {
                    destination: "10.0.0.2:80".into(),
                    strip_credentials: 0,
                };
                let r = grammar.routing(&t, &route).expect("a route routes");
                // A local route rewrites the path, and writes nothing else.
                assert_eq!(r.path, t.rewritten_path.as_deref());
                assert!(r.writes.is_empty());
                let key = t.api_key.map(|(k, _)| k);
                for (name, value) in &list {
                    let _ = grammar.is_gateway_header(name, value, key);
                }
            }
            Err(deny) => assert!((400..=599).contains(&deny.status())),
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = parse_port(&text);
    let r = split_cluster(&text);
    if let Some(cluster) = r.cluster {
        assert_eq!(format!("{cluster}.{}", r.id), text);
    }
});
