//! The real E2B Python SDK (PyPI `e2b`, installed into target/e2b-venv by scripts/e2b-install)
//! drives the gateway, unmodified, through both entries and both ways the SDK addresses a
//! sandbox: the Go platform's path mode (`get_host` patched to
//! `{gateway}/sandboxes/{id}/{port}`) and E2B's own header mode (`sandbox_url` pointed at the
//! gateway, the sandbox named by `E2b-Sandbox-Id`/`E2b-Sandbox-Port`). The SDK sends those
//! headers in both modes, as it does on every envd request; the gateway key travels in the
//! SDK's `extra_sandbox_headers` (tests/e2b/drive.py explains the set-up).
//!
//! What the SDK must see (its `envd/api.py` and `exceptions.py` read the 502's message):
//! `is_running()` True for a live sandbox and False for a missing one; `files.write` then
//! `files.read` round-trip through an envd stand-in (tests/src/envd.rs); `files.read` on a
//! missing sandbox raises `SandboxNotRunningException` (502 "… was not found"), on a sandbox
//! whose envd port refuses connections `SandboxUnreachableException` (502 "… port is not
//! open …"). And the stand-in never sees a gateway key.
//!
//! Every expectation is checked and all that fail are reported together, with the driver's
//! JSON, so one run shows the whole picture.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sandgate_tests::both_entries;
use sandgate_tests::envd::{ENVD_PORT, EnvdSandbox};
use sandgate_tests::envoy::repo_root;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::stack::{ACME_KEY, ADMIN_KEY, GLOBEX_KEY};
use serde_json::{Value, json};

/// Longest one run of the driver may take (each SDK call has a 10 s request timeout); two runs
/// fit in nextest's 120 s limit (.config/nextest.toml).
const DRIVE_TIMEOUT: Duration = Duration::from_secs(50);

const LIVE: &str = "sb-e2b-live";
const MISSING: &str = "sb-e2b-gone";
const CLOSED: &str = "sb-e2b-closed";

/// The venv's python: `$SANDGATE_E2B_PYTHON`, else target/e2b-venv's, installed by
/// scripts/e2b-install when missing (`just test` installs it beforehand; the script is
/// idempotent and serialises concurrent installs).
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SANDGATE_E2B_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join("target/e2b-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    let out = std::process::Command::new(repo_root().join("scripts/e2b-install"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/e2b-install");
    assert!(out.status.success(), "scripts/e2b-install failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs tests/e2b/drive.py with `config`; returns its JSON.
async fn drive(config: &Value) -> Value {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(repo_root().join("tests/e2b/drive.py"))
        .arg(config.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Nothing from the environment may steer the SDK (its E2B_* settings) or its transport
    // (proxies): everything it does is in `config`.
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy().to_ascii_uppercase();
        if name.starts_with("E2B_") || name.ends_with("_PROXY") || name == "SANDGATE_E2B_DRIVE" {
            cmd.env_remove(&var);
        }
    }
    let child = cmd.spawn().expect("spawn the e2b driver");
    let out = tokio::time::timeout(DRIVE_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the e2b driver ran past {DRIVE_TIMEOUT:?}: {config}"))
        .expect("the e2b driver");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the e2b driver failed ({}): {config}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("the e2b driver printed no JSON ({e}): {config}\n{stdout}\n{stderr}")
    })
}

/// Whether a step of the driver (`{"ok": value}` or `{"error": class, "message"}`) succeeded
/// with `value`.
fn ok_with(outcome: &Value, value: &Value) -> bool {
    outcome.get("ok") == Some(value)
}

/// Whether a step raised `class` with a message containing `text`: the SDK puts the gateway's
/// 502 message first in its own, and picks its exception by that message.
fn raised(outcome: &Value, class: &str, text: &str) -> bool {
    outcome["error"] == class
        && outcome["message"]
            .as_str()
            .is_some_and(|m| m.contains(text))
}

async fn the_e2b_sdk_reaches_envd_through_the_gateway_in_both_modes(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let live: EnvdSandbox = gw.envd_sandbox("acme", "pod-e2b-live", LIVE).await;
    gw.closed_envd_sandbox("acme", "pod-e2b-closed", CLOSED)
        .await;

    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for mode in ["path", "header"] {
        let file = format!("/home/user/{mode}-mode.txt");
        let content = format!("written by the e2b sdk in {mode} mode\nthrough sandgate ✓\n");
        let config = json!({
            "gateway": gw.envoy.addr.to_string(),
            "mode": mode,
            "sandbox": LIVE,
            "missing": MISSING,
            "closed": CLOSED,
            "envd_port": ENVD_PORT,
            "key": ACME_KEY,
            "key_header": "X-API-Key",
            "domain": "sandgate.test",
            "file": file,
            "content": content,
            "timeout": 10,
        });
        let results = drive(&config).await;
        // Each expectation on one step of the driver: what must hold, and the step's raw
        // outcome (exception class and message) when it does not.
        let mut expect = |scenario: &str, name: &str, what: &str, ok: bool| {
            if !ok {
                failures.push(format!(
                    "{entry:?} {mode} mode: {what}; got {}",
                    results[scenario][name]
                ));
            }
        };
        let running = &results["live"];
        expect(
            "live",
            "is_running",
            "is_running() is True for a live sandbox",
            ok_with(&running["is_running"], &json!(true)),
        );
        expect(
            "live",
            "write",
            "files.write succeeds",
            running["write"]["ok"]["path"] == json!(file),
        );
        expect(
            "live",
            "read",
            "files.read returns what files.write wrote",
            ok_with(&running["read"], &json!(content)),
        );
        let missing = &results["missing"];
        expect(
            "missing",
            "is_running",
            "is_running() is False for a missing sandbox",
            ok_with(&missing["is_running"], &json!(false)),
        );
        expect(
            "missing",
            "read",
            "files.read on a missing sandbox raises SandboxNotRunningException (502 \"… was not \
             found\")",
            raised(
                &missing["read"],
                "SandboxNotRunningException",
                "was not found",
            ),
        );
        expect(
            "closed",
            "read",
            "files.read on a closed envd port raises SandboxUnreachableException (502 \"… port is \
             not open …\")",
            raised(
                &results["closed"]["read"],
                "SandboxUnreachableException",
                "port is not open",
            ),
        );
        let stored = live.envd.file(&file);
        if stored.as_deref() != Some(content.as_bytes()) {
            failures.push(format!(
                "{entry:?} {mode} mode: the write reached the envd stand-in; it holds {:?}",
                stored.map(|b| String::from_utf8_lossy(&b).into_owned())
            ));
        }
        reports.push(results);
    }

    let seen = live.envd.requests();
    if seen.is_empty() {
        failures.push(format!("{entry:?}: no request reached the envd stand-in"));
    }
    for key in [
        ACME_KEY,
        ADMIN_KEY,
        GLOBEX_KEY,
        "agentbox-api-key",
        "x-api-key",
    ] {
        let leaks = live.envd.headers_containing(key);
        if !leaks.is_empty() {
            failures.push(format!(
                "{entry:?}: the envd stand-in saw {key:?} in (request, header) {leaks:?}"
            ));
        }
    }

    let seen: Vec<String> = seen
        .iter()
        .map(|r| {
            let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
            format!("{} {}  [{}]", r.method, r.path, names.join(", "))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} expectation(s) failed:\n  {}\n\ndriver results:\n{}\n\nrequests the envd stand-in \
         saw (header names):\n  {}",
        failures.len(),
        failures.join("\n  "),
        serde_json::to_string_pretty(&reports).unwrap_or_default(),
        seen.join("\n  "),
    );
}

both_entries!(the_e2b_sdk_reaches_envd_through_the_gateway_in_both_modes);
