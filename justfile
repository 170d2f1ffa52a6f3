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

# Run the resolver against a static inventory (see README); extra flags are passed through.
resolver *ARGS: build
    ./target/debug/sandgate-resolver serve {{ARGS}}
