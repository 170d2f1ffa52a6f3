//! The native entry: an Envoy dynamic module (`libsandgate_native.so`) that decides every
//! request in Envoy's worker, against the live stores of the resolver's own gateway, which
//! runs inside Envoy on a runtime the module owns. No VM, no callout, no decision cache.
//!
//! [`abi`] declares the part of Envoy 1.40's module ABI in use (nothing else may); `ffi`
//! exports the hooks, each behind a fail-closed panic guard, and implements [`host::Host`]
//! over Envoy's callbacks; [`filter`] is one request (the shared grammar and `Routing`, as
//! in the wasm filter and ext_proc); [`embedded`] starts and holds the gateway; [`config`]
//! reads the filter configuration; `logs` sends tracing into Envoy's log. Rules live in
//! `sandgate-core` and the resolver; this crate must not grow its own.

pub mod abi;
pub mod config;
pub mod embedded;
#[cfg(not(test))]
mod ffi;
pub mod filter;
pub mod host;
#[cfg(not(test))]
mod logs;
