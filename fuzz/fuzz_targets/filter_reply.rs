//! The Resolve reply as the wasm filter decodes it: any bytes and any gRPC status become a
//! decision (or a hold); whatever the filter cannot make sense of is the 503 "resolver unavailable", which
//! its decision cache never keeps. The same bytes as a cache slot must not answer a key that
//! is not theirs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandgate_core::{Decision, DenyCode};

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (u32::from(*s % 20), rest),
        None => (0, data),
    };
    let (decision, keep) = match sandgate_filter::wire::answer(status, Some(body)) {
        sandgate_filter::wire::Answer::Decided(decision, keep) => (decision, keep),
        // A hold is a status-0 answer with nothing to keep.
        sandgate_filter::wire::Answer::Hold { .. } => {
            assert_eq!(status, 0);
            return;
        }
    };
    let key = sandgate_filter::cache::Key::of(&sandgate_core::Target {
        sandbox_id: "fuzz",
        port: 1,
        path: "/",
        ..Default::default()
    });
    let view = sandgate_filter::cache::View::default();
    assert!(sandgate_filter::cache::Entry::read(body, key, &view, 0).is_none());
    match decision {
        Decision::Route { destination, .. } => assert!(status == 0 && !destination.is_empty()),
        Decision::Forward(f) => assert!(status == 0 && !f.destination.is_empty()),
        Decision::Deny(d) => {
            if status != 0 {
                assert_eq!(d.code, DenyCode::ResolverUnavailable);
            }
            if d.code == DenyCode::ResolverUnavailable {
                assert!(keep.is_none(), "a 503 kept");
            }
        }
    }
});
