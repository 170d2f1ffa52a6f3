"""The checks behind scripts/deploy-check (run inside its venv)."""

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "base"
KUBERNETES = "1.33.0"

# What deployment.yaml's `envoy-config` init container replaces with the Secret's token.
TOKEN_PLACEHOLDER = "@internal-token@"

# envoy.yaml as shipped (demo addresses, demo token) → the same gateway inside a Pod. Each must
# match exactly once, so a change to envoy.yaml cannot silently skip one.
POD_RENDERING = [
    ("socket_address: { address: 127.0.0.1, port_value: 8092 }",
     "socket_address: { address: 0.0.0.0, port_value: 8092 }"),
    ("filename: target/wasm/sandgate_filter.wasm",
     "filename: /etc/sandgate/wasm/sandgate_filter.wasm"),
    # The internal token: the access log's gRPC metadata and the filter's configuration.
    ('value: "Bearer demo-internal-token"',
     f'value: "Bearer {TOKEN_PLACEHOLDER}"'),
    ('"internal_token": "demo-internal-token"',
     f'"internal_token": "{TOKEN_PLACEHOLDER}"'),
]


def render_envoy_configmap() -> str:
    config = (ROOT / "envoy.yaml").read_text()
    for old, new in POD_RENDERING:
        if config.count(old) != 1:
            sys.exit(f"envoy.yaml must contain {old!r} exactly once")
        config = config.replace(old, new)
    if "demo-internal-token" in config:
        sys.exit("envoy.yaml sends the demo internal token somewhere the Pod rendering misses")
    # deployment.yaml's init container sets this line from SANDGATE_XFF_TRUSTED_HOPS.
    if len(re.findall(r"^ *xff_num_trusted_hops: 0$", config, re.M)) != 1:
        sys.exit("envoy.yaml must contain the line 'xff_num_trusted_hops: 0' exactly once")
    body = "".join("    " + line if line else "" for line in config.splitlines(keepends=True))
    return (
        "# Generated from envoy.yaml by `scripts/deploy-check --write`: the gateway's Envoy\n"
        "# configuration inside a Pod (listener on 0.0.0.0, the filter from the init container,\n"
        f"# {TOKEN_PLACEHOLDER} replaced by the internal token from the Secret at Pod start).\n"
        "# Do not edit; `just test` fails when this drifts from envoy.yaml.\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sandgate-envoy\n"
        "  namespace: sandgate-system\ndata:\n  envoy.yaml: |\n" + body
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envoy", required=True)
    ap.add_argument("--write", action="store_true")
    # The filter Envoy loads when validating (tests/tests/image.rs: the one from the image).
    ap.add_argument("--wasm", default=str(ROOT / "target" / "wasm" / "sandgate_filter.wasm"))
    args = ap.parse_args()
    failures = []

    configmap = BASE / "configmap-envoy.yaml"
    rendered = render_envoy_configmap()
    if args.write:
        configmap.write_text(rendered)
    elif configmap.read_text() != rendered:
        failures.append(f"{configmap.relative_to(ROOT)} is stale: run scripts/deploy-check --write")

    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    on_disk = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    if sorted(listed) != on_disk:
        failures.append(f"kustomization.yaml lists {sorted(listed)}, the folder holds {on_disk}")

    # The image: one place (kustomization.yaml `images:`) sets its name and tag; every container
    # of deploy/'s own image must be one that entry rewrites.
    images = {i.get("name"): i for i in kustomization.get("images", [])}
    if set(images) != {"sandgate"} or not images["sandgate"].get("newTag"):
        failures.append("kustomization.yaml must have one `images:` entry, name sandgate, "
                        f"with a newTag; it has {kustomization.get('images')}")

    kinds = set()
    for name in listed:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            if doc is None:
                continue
            what = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            kinds.add(doc.get("kind"))
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("initContainers", []) + pod.get("containers", []):
                image = c.get("image", "")
                if not image.startswith("envoyproxy/") and image.split(":")[0] not in images:
                    failures.append(f"{what}: container {c.get('name')} image {image} is not "
                                    "set by kustomization.yaml `images:`")
            try:
                kubernetes_validate.validate(doc, KUBERNETES, strict=True)
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{what}: {e.message} at {list(e.path)}")
            except Exception as e:  # an unknown kind or version is a failure too
                failures.append(f"{what}: {e}")
    wanted = {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
              "RoleBinding", "Secret", "ConfigMap", "Deployment", "Service",
              "PodDisruptionBudget"}
    if not wanted <= kinds:
        failures.append(f"missing kinds: {sorted(wanted - kinds)}")

    # The rendered configuration must be one Envoy accepts (the filter from this checkout).
    config = yaml.safe_load(rendered)["data"]["envoy.yaml"]
    config = config.replace("/etc/sandgate/wasm/sandgate_filter.wasm", args.wasm)
    # As the init container does at Pod start.
    config = config.replace(TOKEN_PLACEHOLDER, "validate-Token_0.~+/=")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(config)
        f.flush()
        r = subprocess.run([args.envoy, "--mode", "validate", "-c", f.name],
                           capture_output=True, text=True)
        if r.returncode != 0:
            failures.append("envoy --mode validate refused the Pod configuration:\n"
                            + (r.stdout + r.stderr)[-2000:])

    if failures:
        sys.exit("deploy-check failed:\n  " + "\n  ".join(failures))
    print(f"deploy-check: {len(listed)} manifests valid for Kubernetes {KUBERNETES}; "
          "the Pod's Envoy configuration matches envoy.yaml and validates")


if __name__ == "__main__":
    main()
