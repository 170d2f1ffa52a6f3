//! The resolver's Resolve entry: any bytes that decode as a ResolveRequest are decided, and a
//! decision that routes always names a Pod that carries the requested sandbox id.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sandgate_core::{Decision, split_cluster};
use sandgate_proto::resolver::v1::ResolveRequest;
use sandgate_resolver::decide::{Facts, Gateway};

static GATEWAY: LazyLock<Arc<Gateway>> = LazyLock::new(sandgate_fuzz::gateway);

fuzz_target!(|data: &[u8]| {
    let Ok(r) = ResolveRequest::decode(data) else {
        return;
    };
    let others: Vec<&str> = r.other_credentials.iter().map(String::as_str).collect();
    let decision = futures::executor::block_on(GATEWAY.decide(Facts {
        api_key: &r.api_key,
        sandbox_id: &r.sandbox_id,
        port: r.port,
        forwarded: r.forwarded,
        client: r.client_address.parse().ok(),
        other_credentials: &others,
        e2b: r.e2b,
        access_token: &r.access_token,
    }));
    if let Decision::Route { destination, .. } = decision {
        let ip = destination
            .rsplit_once(':')
            .map(|(ip, _)| ip.trim_matches(['[', ']']))
            .unwrap_or_default();
        // This cluster's own prefix is stripped; the Pod is found by the id it carries.
        let split = split_cluster(&r.sandbox_id);
        let local = if split.cluster == Some("c1") {
            split.id
        } else {
            r.sandbox_id.as_str()
        };
        let carries = GATEWAY
            .pods
            .by_sandbox(local)
            .iter()
            .any(|p| p.ip.is_some_and(|a| a.to_string() == ip));
        assert!(carries, "{:?} routed to {destination}", r.sandbox_id);
    }
});
