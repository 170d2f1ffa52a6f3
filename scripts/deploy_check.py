"""The checks behind scripts/deploy-check (run inside its venv).

Two variants, checked alike: deploy/base (Envoy with the wasm filter beside the resolver) and
deploy/native (an overlay on the base: one container, Envoy with the native module and the
gateway inside it). Each is rendered with `kubectl kustomize`, every object it renders validates
strictly, and the Envoy configuration it ships is its entry's configuration (envoy.yaml,
envoy-native.yaml) rendered for a Pod and accepted by `envoy --mode validate`.
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "base"
NATIVE = ROOT / "deploy" / "native"
KUBERNETES = "1.33.0"

# What deployment.yaml's `envoy-config` init container replaces with the Secret's token.
TOKEN_PLACEHOLDER = "@internal-token@"
# The token the validated configurations carry, as the init container would write it.
VALIDATE_TOKEN = "validate-Token_0.~+/="

LISTENER = ("socket_address: { address: 127.0.0.1, port_value: 8092 }",
            "socket_address: { address: 0.0.0.0, port_value: 8092 }")
ACCESS_LOG_TOKEN = ('value: "Bearer demo-internal-token"',
                    f'value: "Bearer {TOKEN_PLACEHOLDER}"')

# envoy.yaml as shipped (demo addresses, demo token) → the same gateway inside a Pod. Each must
# match exactly once, so a change to envoy.yaml cannot silently skip one.
POD_RENDERING = [
    LISTENER,
    ("filename: target/wasm/sandgate_filter.wasm",
     "filename: /etc/sandgate/wasm/sandgate_filter.wasm"),
    # The internal token: the access log's gRPC metadata and the filter's configuration.
    ACCESS_LOG_TOKEN,
    ('"internal_token": "demo-internal-token"',
     f'"internal_token": "{TOKEN_PLACEHOLDER}"'),
]

# Where the native Pod's Envoy loads the module: deploy/native/deployment.yaml's init container
# `module` copies it there from the image (Containerfile: /usr/share/sandgate/).
NATIVE_MODULE = "/etc/sandgate/native/libsandgate_native.so"
IMAGE_MODULE = "/usr/share/sandgate/libsandgate_native.so"

# envoy-native.yaml as shipped → inside a Pod, likewise.
NATIVE_POD_RENDERING = [
    LISTENER,
    ("filename: target/native/libsandgate_native.so", f"filename: {NATIVE_MODULE}"),
    ACCESS_LOG_TOKEN,
]

# The demo stack's gateway flags in envoy-native.yaml's `args` (demo/'s files, the static
# inventory). In a Pod, the Deployment's environment says all of this (the kube source, the
# Secrets): each must be there exactly once and is dropped; every other flag is kept.
NATIVE_DEMO_FLAGS = [
    "--pod-source=inventory",
    "--inventory=demo/pods.yaml",
    "--keys-file=demo/keys.yaml",
    "--admin-key-file=demo/admin-keys",
    "--internal-token-file=demo/internal-token",
    "--token-keys-file=demo/token-keys",
]

# The base's resolver environment that the native Envoy container does not take over: the
# gateway inside Envoy logs into Envoy's log, in Envoy's format.
NOT_NATIVE_ENV = {"SANDGATE_LOG_FORMAT"}

WANTED_KINDS = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                "RoleBinding", "Secret", "ConfigMap", "Deployment", "Service",
                "PodDisruptionBudget"}


def as_configmap(config: str, header: str) -> str:
    body = "".join("    " + line if line else "" for line in config.splitlines(keepends=True))
    return (
        header
        + "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sandgate-envoy\n"
        "  namespace: sandgate-system\ndata:\n  envoy.yaml: |\n" + body
    )


def pod_rendering(source: str, rendering) -> str:
    config = (ROOT / source).read_text()
    for old, new in rendering:
        if config.count(old) != 1:
            sys.exit(f"{source} must contain {old!r} exactly once")
        config = config.replace(old, new)
    if "demo-internal-token" in config:
        sys.exit(f"{source} sends the demo internal token somewhere the Pod rendering misses")
    # deployment.yaml's init container sets this line from SANDGATE_XFF_TRUSTED_HOPS.
    if len(re.findall(r"^ *xff_num_trusted_hops: 0$", config, re.M)) != 1:
        sys.exit(f"{source} must contain the line 'xff_num_trusted_hops: 0' exactly once")
    return config


def render_envoy_configmap() -> str:
    config = pod_rendering("envoy.yaml", POD_RENDERING)
    return as_configmap(
        config,
        "# Generated from envoy.yaml by `scripts/deploy-check --write`: the gateway's Envoy\n"
        "# configuration inside a Pod (listener on 0.0.0.0, the filter from the init container,\n"
        f"# {TOKEN_PLACEHOLDER} replaced by the internal token from the Secret at Pod start).\n"
        "# Do not edit; `just test` fails when this drifts from envoy.yaml.\n",
    )


ARGS_LINE = re.compile(r"^( *args: )(\[.*\])$", re.M)


def native_args(config: str) -> list:
    lines = ARGS_LINE.findall(config)
    if len(lines) != 1:
        sys.exit("envoy-native.yaml must carry the gateway's flags on one `args: [...]` line")
    return json.loads(lines[0][1])


def render_native_configmap() -> str:
    config = pod_rendering("envoy-native.yaml", NATIVE_POD_RENDERING)
    args = native_args(config)
    for flag in NATIVE_DEMO_FLAGS:
        if args.count(flag) != 1:
            sys.exit(f"envoy-native.yaml's args must contain {flag!r} exactly once")
    kept = [a for a in args if a not in NATIVE_DEMO_FLAGS]
    if any("demo/" in a for a in kept):
        sys.exit(f"envoy-native.yaml's args name a demo/ file the Pod rendering misses: {kept}")
    config = ARGS_LINE.sub(lambda m: m.group(1) + json.dumps(kept), config)
    return as_configmap(
        config,
        "# Generated from envoy-native.yaml by `scripts/deploy-check --write`: the native\n"
        "# gateway's Envoy configuration inside a Pod (listener on 0.0.0.0, the module from the\n"
        f"# init container, {TOKEN_PLACEHOLDER} replaced by the internal token from the Secret at\n"
        "# Pod start, the demo stack's flags dropped: the Deployment's environment gives the\n"
        "# gateway its own). A patch on ../base's ConfigMap of the same name.\n"
        "# Do not edit; `just test` fails when this drifts from envoy-native.yaml.\n",
    )


def flag_env_twins() -> dict:
    """`sandgate-resolver serve` flag → its environment twin, from ServeArgs' clap attributes."""
    src = (ROOT / "resolver" / "src" / "config.rs").read_text()
    start = src.find("pub struct ServeArgs")
    end = src.find("\n}\n", start)
    twins = {}
    for m in re.finditer(r"#\[arg\((.*?)\)\]\s*pub (\w+):", src[start:end], re.S):
        attrs, field = m.groups()
        env = re.search(r'\benv\s*=\s*"([^"]+)"', attrs)
        if env:
            long = re.search(r'\blong\s*=\s*"([^"]+)"', attrs)
            twins[long.group(1) if long else field.replace("_", "-")] = env.group(1)
    if twins.get("http-listen") != "SANDGATE_HTTP_LISTEN" or len(twins) < 30:
        sys.exit("resolver/src/config.rs: ServeArgs' flags and env twins not found "
                 "(deploy_check.py reads its #[arg(long, env = ...)] attributes)")
    return twins


class Variant:
    """One kustomize directory: its files, its rendered objects, its failures."""

    def __init__(self, name: str, folder: pathlib.Path, kubectl: str, failures: list):
        self.name = name
        self.folder = folder
        self.failures = failures
        self.kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        self.objects = []
        r = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
        if r.returncode != 0:
            self.fail(f"kubectl kustomize failed:\n{r.stderr[-2000:]}")
        else:
            self.objects = [d for d in yaml.safe_load_all(r.stdout) if d]

    def fail(self, message: str) -> None:
        self.failures.append(f"deploy/{self.name}: {message}")

    def find(self, kind: str, name: str) -> dict:
        for doc in self.objects:
            if doc.get("kind") == kind and doc.get("metadata", {}).get("name") == name:
                return doc
        self.fail(f"renders no {kind}/{name}")
        return {}

    def pod(self) -> dict:
        template = self.find("Deployment", "sandgate").get("spec", {}).get("template", {})
        return template.get("spec", {})

    def images(self) -> dict:
        return {i.get("name"): i for i in self.kustomization.get("images", [])}

    def check_rendered(self) -> None:
        """Every rendered object validates (strict); every kind the gateway needs is there; every
        container's image is an envoyproxy/ one or deploy/'s own, rewritten by `images:`."""
        images = self.images()
        if set(images) != {"sandgate"} or not images["sandgate"].get("newTag"):
            self.fail("kustomization.yaml must have one `images:` entry, name sandgate, with a "
                      f"newTag; it has {self.kustomization.get('images')}")
            return
        ours = f"{images['sandgate'].get('newName', 'sandgate')}:{images['sandgate']['newTag']}"
        kinds = set()
        for doc in self.objects:
            what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            kinds.add(doc.get("kind"))
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                image = c.get("image", "")
                if not image.startswith("envoyproxy/") and image != ours:
                    self.fail(f"{what}: container {c.get('name')} image {image} is not {ours} "
                              "(kustomization.yaml `images:`)")
            error = schema_error(doc)
            if error:
                self.fail(f"{what}: {error}")
        if not WANTED_KINDS <= kinds:
            self.fail(f"missing kinds: {sorted(WANTED_KINDS - kinds)}")
        # Each Service's named target port is a port of the Pod's containers.
        ports = {p.get("name") for c in self.pod().get("containers", [])
                 for p in c.get("ports", [])}
        for doc in self.objects:
            if doc.get("kind") == "Service":
                for p in doc.get("spec", {}).get("ports", []):
                    target = p.get("targetPort")
                    if isinstance(target, str) and target not in ports:
                        self.fail(f"Service/{doc['metadata']['name']}: targetPort {target} is "
                                  f"no container port of the Pod ({sorted(ports)})")

    def envoy_config(self) -> str:
        return self.find("ConfigMap", "sandgate-envoy").get("data", {}).get("envoy.yaml", "")


def schema_error(doc: dict):
    """Why `doc` is not valid for KUBERNETES (strict), or None."""
    try:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{e.message} at {list(e.path)}"
    except Exception as e:  # an unknown kind or version is a failure too
        return str(e)
    return None


def by_name(items: list) -> dict:
    return {i.get("name"): i for i in items}


def env_map(container: dict) -> dict:
    return {e["name"]: {k: v for k, v in e.items() if k != "name"}
            for e in container.get("env", [])}


def listen_port(env: dict, name: str):
    value = env.get(name, {}).get("value", "")
    m = re.fullmatch(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d+)", value)
    return int(m.group(2)) if m else None


def check_native(base: Variant, native: Variant, rendered: str) -> None:
    """The native Pod is the base's gateway in one container: the checks that keep the overlay's
    whole Pod spec from drifting away from the base's."""
    fail = native.fail
    if native.kustomization.get("resources") != ["../base"]:
        fail(f"kustomization.yaml must have resources [../base]; it has "
             f"{native.kustomization.get('resources')}")
    patches = [p.get("path") for p in native.kustomization.get("patches", [])]
    on_disk = sorted(p.name for p in NATIVE.glob("*.yaml") if p.name != "kustomization.yaml")
    if sorted(patches) != on_disk:
        fail(f"kustomization.yaml patches {sorted(patches)}, the folder holds {on_disk}")
    if native.images() != base.images():
        fail(f"kustomization.yaml `images:` {native.kustomization.get('images')} differs from "
             f"deploy/base's {base.kustomization.get('images')}")

    # The overlay's ConfigMap patch took: the rendered configuration is envoy-native.yaml's.
    if native.envoy_config() != yaml.safe_load(rendered)["data"]["envoy.yaml"]:
        fail("the rendered ConfigMap sandgate-envoy is not configmap-envoy.yaml's")

    bpod, npod = base.pod(), native.pod()
    if not bpod or not npod:
        return
    for key in ("serviceAccountName", "securityContext", "topologySpreadConstraints",
                "terminationGracePeriodSeconds"):
        if npod.get(key) != bpod.get(key):
            fail(f"the Pod's {key} differs from deploy/base's")
    containers = by_name(npod.get("containers", []))
    if list(containers) != ["envoy"]:
        fail(f"the Pod must have one container, envoy; it has {list(containers)}")
        return
    envoy = containers["envoy"]
    bcontainers = by_name(bpod.get("containers", []))
    benvoy, resolver = bcontainers.get("envoy", {}), bcontainers.get("resolver", {})
    for key in ("image", "args", "lifecycle", "securityContext"):
        if envoy.get(key) != benvoy.get(key):
            fail(f"container envoy's {key} differs from deploy/base's")
    inits = by_name(npod.get("initContainers", []))
    if inits.get("envoy-config") != by_name(bpod.get("initContainers", [])).get("envoy-config"):
        fail("init container envoy-config differs from deploy/base's")
    for c in list(inits.values()) + [envoy]:
        if any("sandgate-resolver" in str(x) for x in c.get("command", []) + c.get("args", [])):
            fail(f"container {c.get('name')} runs the resolver: the native Pod has no sidecar")

    # The gateway's flags: the base resolver's environment, on Envoy's container (Secret values
    # from the Secrets, as there).
    env = env_map(envoy)
    wanted = {k: v for k, v in env_map(resolver).items() if k not in NOT_NATIVE_ENV}
    if env != wanted:
        differ = sorted(k for k in env.keys() | wanted.keys() if env.get(k) != wanted.get(k))
        fail("container envoy's env must be deploy/base's resolver env (less "
             f"{sorted(NOT_NATIVE_ENV)}); these differ: "
             + ", ".join(f"{k} {env.get(k)} (base: {wanted.get(k)})" for k in differ))
    for name in ("AGENTBOX_ADMIN_KEY", "SANDGATE_INTERNAL_TOKEN"):
        if "secretKeyRef" not in env.get(name, {}).get("valueFrom", {}):
            fail(f"container envoy's {name} must come from a Secret")
    # A flag in the ConfigMap's args wins over its twin in the environment: none may shadow one.
    twins = flag_env_twins()
    for arg in native_args(native.envoy_config()):
        flag = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        if flag not in twins:
            fail(f"the ConfigMap's args: {arg!r} is no `sandgate-resolver serve` flag")
        elif twins[flag] in env:
            fail(f"the ConfigMap's args: {arg!r} would override container envoy's "
                 f"{twins[flag]}")

    # Ports and probes: the gateway's listeners are the container's ports.
    ports = {p.get("name"): p.get("containerPort") for p in envoy.get("ports", [])}
    for name, var in (("http-metrics", "SANDGATE_HTTP_LISTEN"),
                      ("grpc-control", "SANDGATE_CONTROL_LISTEN")):
        if ports.get(name) is None or ports.get(name) != listen_port(env, var):
            fail(f"container envoy's port {name} ({ports.get(name)}) is not {var}'s")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        get = envoy.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != "http-metrics":
            fail(f"container envoy's {probe} must GET {path} on http-metrics; it is "
                 f"{envoy.get(probe)}")

    # The module: copied from the image into a volume Envoy mounts, where the config loads it.
    module = inits.get("module", {})
    wanted_copy = ["cp", IMAGE_MODULE, NATIVE_MODULE]
    if module.get("command") != wanted_copy:
        fail(f"init container module must run {wanted_copy}; it runs {module.get('command')}")
    folder = str(pathlib.PurePosixPath(NATIVE_MODULE).parent)
    mounts = [{m.get("name") for m in c.get("volumeMounts", []) if m.get("mountPath") == folder}
              for c in (module, envoy)]
    if not mounts[0] or mounts[0] != mounts[1]:
        fail(f"init container module and container envoy must mount one volume at {folder}")
    if f"filename: {NATIVE_MODULE}" not in native.envoy_config():
        fail(f"the ConfigMap does not load the module from {NATIVE_MODULE}")


def validate_envoy(envoy: str, config: str, what: str, failures: list, env=None) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(config)
        f.flush()
        r = subprocess.run([envoy, "--mode", "validate", "-c", f.name],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            failures.append(f"envoy --mode validate refused {what}:\n"
                            + (r.stdout + r.stderr)[-2000:])


def native_validate_env(native: Variant, scratch: str) -> dict:
    """Envoy's environment in the native Pod, for `envoy --mode validate`: the module parses the
    gateway's flags from it (a bad value refuses the configuration). Secret values are test
    values; the listeners move to ephemeral loopback ports and the kubeconfig to a missing file,
    so the gateway the module starts meanwhile binds nothing fixed and reaches no cluster."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    containers = by_name(native.pod().get("containers", []))
    for name, spec in env_map(containers.get("envoy", {})).items():
        ref = spec.get("valueFrom", {}).get("secretKeyRef")
        if ref == {"name": "sandgate-internal", "key": "token"}:
            env[name] = VALIDATE_TOKEN
        elif ref:
            env[name] = f"validate-{ref.get('name')}-{ref.get('key')}"
        else:
            env[name] = spec.get("value", "")
    for name in ("SANDGATE_GRPC_LISTEN", "SANDGATE_CONTROL_LISTEN", "SANDGATE_HTTP_LISTEN"):
        env[name] = "127.0.0.1:0"
    env["SANDGATE_KUBECONFIG"] = os.path.join(scratch, "no-kubeconfig")
    return env


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--write", action="store_true")
    # The filter Envoy loads when validating (tests/tests/image.rs: the one from the image).
    ap.add_argument("--wasm", default=str(ROOT / "target" / "wasm" / "sandgate_filter.wasm"))
    # Likewise the native module (`just native`, scripts/native-build).
    ap.add_argument("--native",
                    default=str(ROOT / "target" / "native" / "libsandgate_native.so"))
    args = ap.parse_args()
    failures = []

    rendered = {}
    for folder, render in ((BASE, render_envoy_configmap), (NATIVE, render_native_configmap)):
        configmap = folder / "configmap-envoy.yaml"
        rendered[folder] = render()
        if args.write:
            configmap.write_text(rendered[folder])
        elif not configmap.is_file() or configmap.read_text() != rendered[folder]:
            failures.append(f"{configmap.relative_to(ROOT)} is stale: "
                            "run scripts/deploy-check --write")

    # The base's own files, each a whole manifest: listed, and valid on its own.
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    on_disk = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    if sorted(listed) != on_disk:
        failures.append(f"kustomization.yaml lists {sorted(listed)}, the folder holds {on_disk}")
    for name in listed:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            if doc is None:
                continue
            what = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            error = schema_error(doc)
            if error:
                failures.append(f"{what}: {error}")

    # Both variants as kustomize renders them.
    base = Variant("base", BASE, args.kubectl, failures)
    native = Variant("native", NATIVE, args.kubectl, failures)
    rendered_both = base.objects and native.objects  # else kustomize's error says it all
    if rendered_both:
        base.check_rendered()
        native.check_rendered()
        check_native(base, native, rendered[NATIVE])

    # The rendered configurations must be ones Envoy accepts, as the init container writes
    # them at Pod start: the base's with the filter from this checkout...
    config = yaml.safe_load(rendered[BASE])["data"]["envoy.yaml"]
    config = config.replace("/etc/sandgate/wasm/sandgate_filter.wasm", args.wasm)
    validate_envoy(args.envoy, config.replace(TOKEN_PLACEHOLDER, VALIDATE_TOKEN),
                   "deploy/base's Pod configuration", failures)
    # ...and the native one with this checkout's module, which Envoy loads: it parses the
    # gateway's flags, the Deployment's environment included.
    if not rendered_both:
        pass
    elif not pathlib.Path(args.native).is_file():
        failures.append(f"{args.native} is missing: run `just native` "
                        "(or scripts/native-build dev)")
    else:
        config = native.envoy_config().replace(NATIVE_MODULE, args.native)
        with tempfile.TemporaryDirectory() as scratch:
            validate_envoy(args.envoy, config.replace(TOKEN_PLACEHOLDER, VALIDATE_TOKEN),
                           "deploy/native's Pod configuration", failures,
                           env=native_validate_env(native, scratch))

    if failures:
        sys.exit("deploy-check failed:\n  " + "\n  ".join(failures))
    print(f"deploy-check: deploy/base ({len(base.objects)} objects) and deploy/native "
          f"({len(native.objects)} objects) valid for Kubernetes {KUBERNETES}; their Envoy "
          "configurations match envoy.yaml and envoy-native.yaml and validate")


if __name__ == "__main__":
    main()
