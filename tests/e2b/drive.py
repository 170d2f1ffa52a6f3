"""Drives sandgate with the real E2B Python SDK (PyPI `e2b`) and prints one JSON object of results.

Run with the venv's python (scripts/e2b-install prints it); tests/tests/e2b_sdk.rs does. The
configuration is one JSON object, as the first argument or in $SANDGATE_E2B_DRIVE:

    {"gateway": "127.0.0.1:8092",       # host:port of Envoy, the gateway
     "mode": "path" | "header",
     "sandbox": "sb-live",              # a running sandbox whose envd is the stand-in
     "missing": "sb-gone",              # a sandbox id that does not exist
     "closed": "sb-closed",             # a running sandbox whose envd port refuses connections
     "envd_port": 49983,                # optional, envd's port (the SDK's own default)
     "key": "...",                      # the gateway key, sent on every data-plane request
     "key_header": "X-API-Key",         # optional; `agentbox-api-key` works too
     "domain": "sandgate.test",         # optional, the sandbox domain
     "file": "/home/user/x.txt",        # optional, where write/read round-trip
     "content": "...",                  # optional, what is written
     "timeout": 10}                     # optional, the SDK's request_timeout in seconds

or, in connect mode (no gateway key anywhere, see below):

    {"gateway": "127.0.0.1:8092",
     "mode": "connect",
     "api_url": "http://127.0.0.1:3000", # the platform's E2B API (tests/src/e2b_api.rs)
     "api_key": "e2b_...",              # the platform's API key, for that API only
     "sandbox": "sb-live",              # a running sandbox the API hands a token for
     "denied": "sb-other",              # optional, one it hands another sandbox's token for
     "command": "echo hello",           # optional, what commands.run runs
     "envd_port", "domain", "file", "content", "timeout" as above}

How the SDK is set up in path and header modes, without E2B's control API (no
`Sandbox.create`/`Sandbox.connect`, which ask api.<domain> for the sandbox's envd version and
tokens; connect mode below does ask one): the Sandbox object is built the way
the SDK's own `Sandbox._cls_connect_sandbox` builds it after that API call — a `ConnectionConfig`
whose `extra_sandbox_headers` hold `E2b-Sandbox-Id` and `E2b-Sandbox-Port` (what the SDK sends on
every envd request), then `Sandbox(sandbox_id=…, sandbox_domain=…, envd_version=…,
envd_access_token=None, traffic_access_token=None, connection_config=…)`, with the envd version
the API would have reported. The gateway key goes into the same `extra_sandbox_headers`: the
SDK has no public option for a data-plane header (`headers`/`api_headers` go to its control API
only), and `extra_sandbox_headers` is the constructor argument the SDK itself uses for its
sandbox headers, so every envd request (HTTP and RPC) carries the key.

Modes:
* path: the Go platform's patch — `ConnectionConfig.get_host` returns
  `{gateway}/sandboxes/{id}/{port}`. The SDK builds envd's URL as `https://{get_host()}`, or
  `http://{get_host()}` in debug mode; the test gateway speaks plain HTTP on loopback, so this
  mode sets `debug=True`, which on the data plane changes nothing but that scheme (the control
  API, which debug mode would point at localhost, is never called). The SDK still sends its
  E2b-Sandbox-Id/Port headers, as it does behind the Go platform.
* header: E2B's own addressing, `sandbox_url` pointed at the gateway (`http://{gateway}`): every
  request goes to the gateway with E2b-Sandbox-Id/Port naming the sandbox.
* connect: how a platform with an E2B-compatible API hands the SDK a credential. The SDK calls
  `Sandbox.connect(sandbox_id, api_url=…, api_key=…, sandbox_url=http://{gateway},
  debug=False)`, all passed as arguments (the test strips E2B_* variables, and debug mode would
  skip the API call). The API answers with an `envdAccessToken` — a sandgate access token —
  which the SDK itself puts in `X-Access-Token` beside E2b-Sandbox-Id/Port on every envd
  request; there is no gateway key, and the API key goes to the API only. Then is_running, the
  file round-trip and one `commands.run`. With "denied", a second sandbox is connected the same
  way, for which the API hands out a token of another sandbox: every step there must fail.

Each step's outcome is recorded as {"ok": value} or {"error": <exception class>, "message"}, so
one failing step does not hide the others. Exit status 0 whenever the JSON was printed.
"""

import importlib.metadata
import json
import os
import sys
import traceback

from packaging.version import Version

from e2b import ConnectionConfig, Sandbox

# What E2B's control API would report for a current sandbox: envd >= 0.4.0 (no default-user
# query parameter) and >= 0.5.7 (octet-stream uploads available; `files.write` of a str still
# sends multipart/form-data by default).
ENVD_VERSION = Version("0.6.4")


def outcome(step):
    try:
        return {"ok": step()}
    except Exception as e:  # noqa: BLE001 - every failure is a result here
        return {
            "error": type(e).__name__,
            "module": type(e).__module__,
            "message": str(e)[:2000],
        }


def connected(cfg, sandbox_id):
    """Connects to `sandbox_id` through the platform's API, then runs every step on it; a step
    after a failed connect is recorded as skipped."""
    gateway = cfg["gateway"]
    timeout = float(cfg.get("timeout", 10))
    path = cfg.get("file", "/home/user/sandgate-e2b.txt")
    content = cfg.get("content", "written by the e2b sdk through sandgate\n")
    command = cfg.get("command", "echo hello")
    holder = {}

    def connect():
        sbx = Sandbox.connect(
            sandbox_id,
            api_key=cfg["api_key"],
            api_url=cfg["api_url"],
            domain=cfg.get("domain", "sandgate.test"),
            sandbox_url=f"http://{gateway}",
            debug=False,
            request_timeout=timeout,
        )
        holder["sandbox"] = sbx
        return {
            "sandbox_id": sbx.sandbox_id,
            "envd_url": sbx.envd_api_url,
            "envd_version": str(sbx._envd_version),
            # What the SDK sends on every envd request besides its User-Agent: the sandbox
            # headers and the envd access token it was handed.
            "sandbox_headers": {
                k: v for k, v in sbx.connection_config.sandbox_headers.items() if k != "User-Agent"
            },
            "traffic_access_token": sbx.traffic_access_token,
        }

    def on_sandbox(step):
        def run():
            if "sandbox" not in holder:
                raise RuntimeError("skipped: connect failed")
            return step(holder["sandbox"])

        return run

    def write(sbx):
        info = sbx.files.write(path, content)
        return {"name": info.name, "path": info.path, "type": getattr(info.type, "value", None)}

    def run(sbx):
        result = sbx.commands.run(command, timeout=timeout)
        return {
            "stdout": result.stdout,
            "stderr": result.stderr,
            "exit_code": result.exit_code,
            "error": result.error,
        }

    # In order: each step depends on the connect only, so one failure hides no other.
    return {
        "connect": outcome(connect),
        "is_running": outcome(on_sandbox(lambda sbx: sbx.is_running())),
        "write": outcome(on_sandbox(write)),
        "read": outcome(on_sandbox(lambda sbx: sbx.files.read(path))),
        "command": outcome(on_sandbox(run)),
    }


def main_connect(cfg):
    results = {
        "mode": "connect",
        "e2b": importlib.metadata.version("e2b"),
        "live": connected(cfg, cfg["sandbox"]),
    }
    if cfg.get("denied"):
        results["denied"] = connected(cfg, cfg["denied"])
    print(json.dumps(results))


def main():
    raw = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SANDGATE_E2B_DRIVE")
    if not raw:
        sys.exit("usage: drive.py '<json config>' (or $SANDGATE_E2B_DRIVE)")
    cfg = json.loads(raw)
    gateway = cfg["gateway"]
    mode = cfg["mode"]
    key_header = cfg.get("key_header", "X-API-Key")
    domain = cfg.get("domain", "sandgate.test")
    timeout = float(cfg.get("timeout", 10))
    path = cfg.get("file", "/home/user/sandgate-e2b.txt")
    content = cfg.get("content", "written by the e2b sdk through sandgate\n")

    envd_port = int(cfg.get("envd_port", ConnectionConfig.envd_port))
    if envd_port != ConnectionConfig.envd_port:
        # The SDK reads envd's port from this class attribute, for the URL and for
        # E2b-Sandbox-Port alike; only a stand-in on another port needs this.
        ConnectionConfig.envd_port = envd_port

    if mode == "connect":
        return main_connect(cfg)
    if mode == "path":

        def get_host(self, sandbox_id, sandbox_domain, port):
            return f"{gateway}/sandboxes/{sandbox_id}/{port}"

        ConnectionConfig.get_host = get_host
        url_options = {"debug": True}
    elif mode == "header":
        url_options = {"sandbox_url": f"http://{gateway}"}
    else:
        sys.exit(f"unknown mode {mode!r}: path, header or connect")

    def sandbox(sandbox_id):
        config = ConnectionConfig(
            domain=domain,
            api_key=None,
            request_timeout=timeout,
            extra_sandbox_headers={
                "E2b-Sandbox-Id": sandbox_id,
                "E2b-Sandbox-Port": str(ConnectionConfig.envd_port),
                key_header: cfg["key"],
            },
            **url_options,
        )
        return Sandbox(
            sandbox_id=sandbox_id,
            sandbox_domain=domain,
            envd_version=ENVD_VERSION,
            envd_access_token=None,
            traffic_access_token=None,
            connection_config=config,
        )

    live, missing, closed = (sandbox(cfg[k]) for k in ("sandbox", "missing", "closed"))

    def write():
        info = live.files.write(path, content)
        return {"name": info.name, "path": info.path, "type": getattr(info.type, "value", None)}

    results = {
        "mode": mode,
        "e2b": importlib.metadata.version("e2b"),
        "envd_url": live.envd_api_url,
        "sandbox_headers": sorted(
            k for k in live.connection_config.sandbox_headers if k != key_header
        ),
        "live": {
            "is_running": outcome(live.is_running),
            "write": outcome(write),
            "read": outcome(lambda: live.files.read(path)),
        },
        "missing": {
            "is_running": outcome(missing.is_running),
            "read": outcome(lambda: missing.files.read(path)),
        },
        "closed": {
            "is_running": outcome(closed.is_running),
            "read": outcome(lambda: closed.files.read(path)),
        },
    }
    print(json.dumps(results))


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        sys.exit(2)
