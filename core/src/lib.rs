//! Plain-Rust rules shared by every sandgate entry (resolver, wasm filter, ext_proc).
//!
//! Owns: the one table that maps every refusal to its HTTP status, JSON code and gRPC code
//! ([`DenyCode`]), the [`Decision`] an entry applies, validation of the sandbox id and port,
//! and the request grammar (key, id, port, path rewrite, gateway-only headers) that the wasm
//! filter, the ext_proc entry and the native module share, the cross-cluster id rule and forward shape, and the access token's form ([`token`]). It knows nothing of wasm, gRPC, Kubernetes or I/O and
//! has no dependencies (serde behind a feature), so it builds unchanged for native and wasm32 targets.

// Every entry runs these rules on its request path (inside a wasm VM, inside Envoy's worker):
// they never panic, tests excepted.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod cluster;
mod decision;
mod facts;
mod request;
mod status;
pub mod token;

pub use cluster::{
    Forward, HOP_HEADER, PRIVATE_HEADER_PREFIX, PeerUpstream, SandboxRef, UPSTREAM_HEADER, is_uuid,
    split_cluster,
};
pub use decision::{Decision, Deny};
pub use facts::{MAX_SANDBOX_ID_LEN, check_port, client_ip, parse_port, validate_sandbox_id};
pub use request::{
    E2B_ID_HEADER, E2B_PORT_HEADER, KeySource, Redirect, RequestGrammar, Routing, Target,
    TokenGrammar, TokenSource, bearer_bytes, bearer_token,
};
pub use status::{DenyCode, GrpcCode};
