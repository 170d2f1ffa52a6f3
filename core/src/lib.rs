//! Plain-Rust rules shared by every sandgate entry (resolver, wasm filter, ext_proc).
//!
//! Owns: the one table that maps every refusal to its HTTP status, JSON code and gRPC code
//! ([`DenyCode`]), the [`Decision`] an entry applies, and validation of the request facts
//! (sandbox id, port). It knows nothing of wasm, gRPC, Kubernetes or I/O and has no
//! dependencies, so it builds unchanged for native and wasm32 targets.

mod decision;
mod facts;
mod status;

pub use decision::{Decision, Deny};
pub use facts::{MAX_SANDBOX_ID_LEN, check_port, parse_port, validate_sandbox_id};
pub use status::{DenyCode, GrpcCode};
