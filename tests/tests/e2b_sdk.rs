//! The real E2B Python SDK (PyPI `e2b`, installed into target/e2b-venv by scripts/e2b-install)
//! drives the gateway, unmodified, through every entry and both ways the SDK addresses a
//! sandbox: the Go platform's path mode (`get_host` patched to
//! `{gateway}/sandboxes/{id}/{port}`) and E2B's own header mode (`sandbox_url` pointed at the
//! gateway, the sandbox named by `E2b-Sandbox-Id`/`E2b-Sandbox-Port`). The SDK sends those
//! headers in both modes, as it does on every envd request; the gateway key travels in the
//! SDK's `extra_sandbox_headers` (tests/e2b/drive.py explains the set-up).
//!
//! And the way a platform with an E2B-compatible API hands the SDK a credential: the SDK's own
//! `Sandbox.connect(id)` asks the platform's API (a stand-in, tests/src/e2b_api.rs), which
//! answers with access tokens the resolver minted; the SDK sends the envd token as
//! `X-Access-Token` on every envd request, with no gateway key anywhere. The gateway lets it
//! through to that sandbox's envd port and passes the header on (envd checks it itself), and
//! refuses the same set-up with another sandbox's token (403 `access_token_out_of_scope`,
//! which the SDK raises as `SandboxException("403: …")`, or `"Code.PERMISSION_DENIED: …"` for
//! an RPC such as `commands.run`).
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

use sandgate_proto::ctrlplane::v1::MintAccessTokenRequest;
use sandgate_tests::envd::{ENVD_PORT, EnvdSandbox};
use sandgate_tests::envoy::repo_root;
use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::stack::{ACME_KEY, ADMIN_KEY, GLOBEX_KEY};
use serde_json::{Value, json};

/// Longest one run of the driver may take (each SDK call has a 10 s request timeout); two runs
/// fit in nextest's 120 s limit (.config/nextest.toml).
const DRIVE_TIMEOUT: Duration = Duration::from_secs(50);

const LIVE: &str = "sb-e2b-live";
const MISSING: &str = "sb-e2b-gone";
const CLOSED: &str = "sb-e2b-closed";
/// The sandbox the SDK connects to through the platform's API, and its neighbour in the same
/// tenant, for which the API hands out the first one's tokens.
const TOKEN_LIVE: &str = "sb-e2b-token";
const NEIGHBOUR: &str = "sb-e2b-neighbour";
/// The platform's API key: the SDK sends it to the platform's API and nowhere else.
const PLATFORM_KEY: &str = "e2b_5a9d0c3f7e21b8464d0f6e9a1c2b3d4e";
/// What `commands.run` runs (the envd stand-in answers `echo` of plain words).
const COMMAND: &str = "echo hello from sandgate";

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

every_entry!(the_e2b_sdk_reaches_envd_through_the_gateway_in_both_modes);

/// The expectations of one test that failed, each with what was seen instead.
struct Failures {
    entry: Entry,
    list: Vec<String>,
}

impl Failures {
    fn expect(&mut self, what: &str, ok: bool, got: impl std::fmt::Display) {
        if !ok {
            self.list
                .push(format!("{:?}: {what}; got {got}", self.entry));
        }
    }
}

/// The `code` of a gateway refusal's JSON body ("" when the body is no such JSON).
fn code(response: &sandgate_tests::http::Response) -> String {
    serde_json::from_str::<Value>(&response.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A header's value in a request the envd stand-in saw.
fn header<'r>(request: &'r sandgate_tests::envd::Seen, name: &str) -> Option<&'r str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// The SDK set up by its own `Sandbox.connect` against the platform's API, holding nothing but
/// the access token that API minted: the file round-trip and a command reach envd with that
/// token and no key; another sandbox's token opens nothing.
async fn the_e2b_sdk_connects_with_a_minted_token_and_no_key(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let live = gw.envd_sandbox("acme", "pod-e2b-token", TOKEN_LIVE).await;
    let neighbour = gw
        .envd_sandbox("acme", "pod-e2b-neighbour", NEIGHBOUR)
        .await;
    let api = gw.e2b_api(PLATFORM_KEY).await;
    api.add_sandbox(TOKEN_LIVE, "acme");
    // A valid token of the same tenant, for the wrong sandbox: a platform that mixes its
    // sandboxes up, or a client reusing the token it holds on a sandbox it was not given.
    api.add_sandbox_with_tokens_of(NEIGHBOUR, "acme", TOKEN_LIVE);

    let file = "/home/user/connect-mode.txt";
    let content = "written by the e2b sdk with an access token\nthrough sandgate ✓\n";
    let config = json!({
        "gateway": gw.envoy.addr.to_string(),
        "mode": "connect",
        "api_url": api.url(),
        "api_key": PLATFORM_KEY,
        "sandbox": TOKEN_LIVE,
        "denied": NEIGHBOUR,
        "envd_port": ENVD_PORT,
        "domain": "sandgate.test",
        "file": file,
        "content": content,
        "command": COMMAND,
        "timeout": 10,
    });
    let results = drive(&config).await;
    let calls = api.calls();
    let (Some(minted), Some(foreign)) = (api.tokens(TOKEN_LIVE), api.tokens(NEIGHBOUR)) else {
        panic!(
            "{entry:?}: the platform's API handed out no tokens\ncalls: {calls:#?}\n\ndriver \
             results:\n{}",
            serde_json::to_string_pretty(&results).unwrap_or_default()
        );
    };
    let mut f = Failures {
        entry,
        list: Vec::new(),
    };

    // The platform's side: one connect per sandbox, with its key; the envd token opens envd's
    // port, the traffic token every port, both for the sandbox asked about (or, for the
    // neighbour, the one the test made the platform confuse it with).
    let connects: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {} {:?}", c.method, c.path, c.status))
        .collect();
    f.expect(
        "the SDK called POST /v2/sandboxes/{id}/connect once per sandbox, answered 200",
        connects
            == [
                format!("POST /v2/sandboxes/{TOKEN_LIVE}/connect 200"),
                format!("POST /v2/sandboxes/{NEIGHBOUR}/connect 200"),
            ],
        format!("{connects:?}"),
    );
    let keys: Vec<Option<&str>> = calls.iter().map(|c| c.api_key.as_deref()).collect();
    f.expect(
        "every connect carried the platform's key in X-API-Key",
        keys.iter().all(|k| *k == Some(PLATFORM_KEY)),
        format!("{keys:?}"),
    );
    let asked = |ports: Vec<u32>| MintAccessTokenRequest {
        sandbox_id: TOKEN_LIVE.into(),
        namespace: "acme".into(),
        ports,
        ttl_seconds: 0,
    };
    let want = vec![asked(vec![u32::from(ENVD_PORT)]), asked(Vec::new())];
    for call in &calls {
        let mints: Vec<_> = call.mints.iter().map(|m| m.request.clone()).collect();
        f.expect(
            &format!(
                "{} minted an envd-port token and an every-port token",
                call.path
            ),
            mints == want && call.mints.iter().all(|m| m.answer.is_ok()),
            format!("{:?}", call.mints),
        );
    }

    // The SDK's side, through the gateway with the token alone.
    let live_run = &results["live"];
    let connect = &live_run["connect"]["ok"];
    f.expect(
        "connect() returns the sandbox",
        connect["sandbox_id"] == TOKEN_LIVE,
        &live_run["connect"],
    );
    f.expect(
        "the SDK's envd headers are the sandbox's and the minted envd token, no key",
        connect["sandbox_headers"]
            == json!({
                "E2b-Sandbox-Id": TOKEN_LIVE,
                "E2b-Sandbox-Port": ENVD_PORT.to_string(),
                "X-Access-Token": minted.envd,
            }),
        &connect["sandbox_headers"],
    );
    f.expect(
        "sandbox.traffic_access_token is the minted traffic token",
        connect["traffic_access_token"] == minted.traffic,
        &connect["traffic_access_token"],
    );
    f.expect(
        "is_running() is True",
        ok_with(&live_run["is_running"], &json!(true)),
        &live_run["is_running"],
    );
    f.expect(
        "files.write succeeds",
        live_run["write"]["ok"]["path"] == file,
        &live_run["write"],
    );
    f.expect(
        "files.read returns what files.write wrote",
        ok_with(&live_run["read"], &json!(content)),
        &live_run["read"],
    );
    f.expect(
        "commands.run(\"echo …\") returns its stdout and exit code 0",
        ok_with(
            &live_run["command"],
            &json!({"stdout": "hello from sandgate\n", "stderr": "", "exit_code": 0,
                    "error": null}),
        ),
        &live_run["command"],
    );
    let stored = live.envd.file(file);
    f.expect(
        "the write reached envd",
        stored.as_deref() == Some(content.as_bytes()),
        format!("{stored:?}"),
    );
    f.expect(
        "envd ran the command",
        live.envd.commands() == [COMMAND],
        format!("{:?}", live.envd.commands()),
    );

    // What envd saw: every request with the envd token as minted (the gateway passes it on),
    // and no other credential.
    let seen = live.envd.requests();
    let paths: Vec<String> = seen
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    f.expect(
        "envd saw the health check, the upload, the download and Process.Start",
        [
            "GET /health",
            "POST /files",
            "GET /files",
            "POST /process.Process/Start",
        ]
        .iter()
        .all(|want| paths.iter().any(|p| p.starts_with(want))),
        format!("{paths:?}"),
    );
    let tokens: Vec<Option<&str>> = seen.iter().map(|r| header(r, "x-access-token")).collect();
    f.expect(
        "every request reached envd with X-Access-Token equal to the minted envd token",
        tokens.iter().all(|t| *t == Some(minted.envd.as_str())),
        format!("{tokens:?}"),
    );
    for key in [
        ACME_KEY,
        ADMIN_KEY,
        GLOBEX_KEY,
        PLATFORM_KEY,
        "agentbox-api-key",
        "x-api-key",
        "authorization",
    ] {
        let leaks = live.envd.headers_containing(key);
        f.expect(
            &format!("envd never saw {key:?}"),
            leaks.is_empty(),
            format!("(request, header) {leaks:?}"),
        );
    }
    // The envd token is envd's only: the same sandbox on another port is out of its scope.
    let other_port = gw
        .get(
            "/health",
            &[
                ("e2b-sandbox-id", TOKEN_LIVE),
                ("e2b-sandbox-port", "8080"),
                ("x-access-token", &minted.envd),
            ],
        )
        .await;
    f.expect(
        "the envd token opens no other port (403 access_token_out_of_scope)",
        other_port.status == 403 && code(&other_port) == "access_token_out_of_scope",
        format!("{} {}", other_port.status, other_port.body),
    );

    // The neighbour, with the live sandbox's token: the gateway refuses every request before
    // it reaches the neighbour, and the SDK raises what it makes of a 403.
    let denied = &results["denied"];
    f.expect(
        "the neighbour's connect hands the SDK the live sandbox's envd token",
        denied["connect"]["ok"]["sandbox_headers"]["X-Access-Token"] == foreign.envd,
        &denied["connect"],
    );
    let refusal = gw
        .get(
            "/health",
            &[
                ("e2b-sandbox-id", NEIGHBOUR),
                ("e2b-sandbox-port", &ENVD_PORT.to_string()),
                ("x-access-token", &foreign.envd),
            ],
        )
        .await;
    let reason: Value = serde_json::from_str(&refusal.body).unwrap_or_default();
    f.expect(
        "the gateway answers the SDK's request with the wrong token 403 access_token_out_of_scope",
        refusal.status == 403 && reason["code"] == "access_token_out_of_scope",
        format!("{} {}", refusal.status, refusal.body),
    );
    let message = reason["message"].as_str().unwrap_or_default();
    for step in ["is_running", "write", "read"] {
        f.expect(
            &format!(
                "{step} with the wrong token raises SandboxException(\"403: <the gateway's \
                 message>\")"
            ),
            denied[step]["error"] == "SandboxException"
                && denied[step]["message"] == format!("403: {message}"),
            &denied[step],
        );
    }
    f.expect(
        "commands.run with the wrong token raises SandboxException(\"Code.PERMISSION_DENIED: <the \
         gateway's message>\")",
        denied["command"]["error"] == "SandboxException"
            && denied["command"]["message"] == format!("Code.PERMISSION_DENIED: {message}"),
        &denied["command"],
    );
    let reached = neighbour.envd.requests();
    f.expect(
        "nothing reached the neighbour's envd",
        reached.is_empty(),
        format!("{:?}", reached.iter().map(|r| &r.path).collect::<Vec<_>>()),
    );

    assert!(
        f.list.is_empty(),
        "{} expectation(s) failed:\n  {}\n\ndriver results:\n{}\n\nminted: {minted:?}\n\
         neighbour's: {foreign:?}\n\nrequests the envd stand-in saw:\n  {}",
        f.list.len(),
        f.list.join("\n  "),
        serde_json::to_string_pretty(&results).unwrap_or_default(),
        paths.join("\n  "),
    );
}

every_entry!(the_e2b_sdk_connects_with_a_minted_token_and_no_key);
