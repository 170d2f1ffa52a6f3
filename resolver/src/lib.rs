//! The sandgate resolver: owns every routing decision.
//!
//! Capabilities, one module each: [`cache`] (pushed routes), [`pods`] (live Pod state from
//! Kubernetes or a static inventory), [`activity`] (last-active per sandbox), [`keys`] (who is
//! calling), [`clusters`] (peer clusters and their gateways), [`decide`] (the one decision path). Entries are thin shells over `decide`:
//! [`callout`] (Resolve gRPC), [`control`] (ControlPlaneService), [`http`] (health, metrics,
//! last-active); [`guard`] admits gRPC calls by bearer credential (the internal token on the
//! gRPC port, the admin key on the control port). [`serve`] wires them together; [`config`]
//! is the typed CLI.

// The decision path runs inside Envoy in the native entry, where a panic fails a request (and
// would abort Envoy without the module's guard): the wasm filter's no-panic rules, outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod accesslog;
pub mod activity;
pub mod cache;
pub mod callout;
pub mod clusters;
pub mod compat;
pub mod config;
pub mod control;
pub mod ctl;
pub mod decide;
pub mod extproc;
pub mod generation;
pub mod guard;
pub mod hold;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod pods;
pub mod reload;
pub mod serve;
pub mod tokens;
