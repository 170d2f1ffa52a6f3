//! Test harness for sandgate: a Kubernetes API emulator that the real kube-rs client talks to,
//! runners for the real binaries, and fixtures. Behaviour tests live in `tests/tests/`, one file
//! per behaviour.

pub mod browser;
pub mod controller;
pub mod e2b_api;
pub mod echo;
pub mod emulator;
pub mod envd;
pub mod envoy;
pub mod extproc;
pub mod fixtures;
pub mod gateway;
pub mod http;
pub mod process;
pub mod raw;
pub mod stack;
pub mod tls;
