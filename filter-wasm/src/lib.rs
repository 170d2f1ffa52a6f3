//! The proxy-wasm filter. Filled by the filter issue; until then it only proves the crate builds
//! in the workspace.
