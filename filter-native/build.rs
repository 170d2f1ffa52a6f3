//! Keeps libsandgate_native.so loadable on glibc 2.30, Envoy's floor, when built on a newer
//! glibc: glibc/compat.c says why and how. scripts/glibc-check (run by scripts/native-build)
//! is what enforces the floor; this only gets the module under it.
//!
//! Everything goes through `rustc-cdylib-link-arg`, so the crate's unit-test binary links
//! exactly as before: it runs on the build host, where the new versions are right.

use std::env;
use std::error::Error;
use std::fs;

const SOURCE: &str = "glibc/compat.c";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={SOURCE}");
    // Symbol versions, and this file's trampolines, are x86_64 glibc's; the floor matters
    // only where Envoy's glibc build runs. Other targets link as they always did.
    let target = |key: &str| env::var(format!("CARGO_CFG_TARGET_{key}")).unwrap_or_default();
    if target("OS") != "linux" || target("ARCH") != "x86_64" || target("ENV") != "gnu" {
        return Ok(());
    }

    let source = fs::read_to_string(SOURCE)?;
    let wrapped = wrapped_names(&source);
    if wrapped.is_empty() {
        return Err(format!("{SOURCE}: no WRAP lines found").into());
    }
    // A trampoline is only ever referenced through --wrap, after the archives are scanned:
    // objects on the command line are linked whole, so none can be left undefined.
    let objects = cc::Build::new()
        .file(SOURCE)
        .opt_level(2)
        .warnings_into_errors(true)
        .try_compile_intermediates()?;
    for object in &objects {
        println!("cargo:rustc-cdylib-link-arg={}", object.display());
    }
    for name in &wrapped {
        println!("cargo:rustc-cdylib-link-arg=-Wl,--wrap={name}");
    }
    // The old versions live in these on glibc < 2.34 (they are empty stubs after). Envoy
    // links both, but the module should not depend on its host's link line; and --as-needed
    // would drop them, since here every symbol resolves in libc.so.6.
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--push-state,--no-as-needed,-l:libpthread.so.0,-l:libdl.so.2,--pop-state"
    );
    Ok(())
}

/// The names of compat.c's `WRAP(name, ...)` and `WRAP_STAT(name, ...)` lines.
fn wrapped_names(source: &str) -> Vec<&str> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("WRAP(")
                .or_else(|| line.strip_prefix("WRAP_STAT("))?;
            let name = rest.split(',').next()?.trim();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}
