//! The Resolve reply as the wasm filter decodes it: any bytes and any gRPC status become a
//! decision; whatever the filter cannot make sense of is the 503 "resolver unavailable".
#![no_main]

use libfuzzer_sys::fuzz_target;
use sandgate_core::{Decision, DenyCode};

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data.split_first() {
        Some((s, rest)) => (u32::from(*s % 20), rest),
        None => (0, data),
    };
    match sandgate_filter::wire::decision(status, Some(body)) {
        Decision::Route { destination } => assert!(status == 0 && !destination.is_empty()),
        Decision::Forward(f) => assert!(status == 0 && !f.destination.is_empty()),
        Decision::Deny(d) => {
            if status != 0 {
                assert_eq!(d.code, DenyCode::ResolverUnavailable);
            }
        }
    }
});
