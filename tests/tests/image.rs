//! The OCI image `just image` builds (target/image/sandgate.oci.tar), inspected rather than
//! trusted: its configuration, the files deploy/ uses, its size; then the resolver runs from
//! the image's root filesystem (chroot) against the Kubernetes API emulator until ready, under
//! both names, deploy/'s init containers copy the filter (deploy/base) and the native module
//! (deploy/native) with the image's own `cp`, and Envoy validates both Pods' configurations
//! (scripts/deploy-check) with what they copied.
//!
//! Needs the archive (`just image`; `just test` builds it first) and root (chroot, layers
//! unpacked with their owners). Missing either is a failure, never a skip.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use sandgate_tests::emulator::Emulator;
use sandgate_tests::process::{eventually, free_ports};
use serde_json::Value;

const USER: &str = "65532:65532";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Compressed layers, base included: a regression guard, well above today's size (about 27 MiB
/// with the dev build's resolver and module, each about 10 MiB compressed).
const MAX_COMPRESSED: u64 = 40 << 20;
/// Where the image carries the native module (Containerfile; deploy/native's init container).
const MODULE: &str = "usr/share/sandgate/libsandgate_native.so";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

fn archive() -> PathBuf {
    let path = repo().join("target/image/sandgate.oci.tar");
    assert!(
        path.is_file(),
        "{} is missing: build it with `just image` (`just test` does)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/image-tools installs the tools)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn require_root() {
    let uid = run(Command::new("id").arg("-u"));
    assert_eq!(
        uid.trim(),
        "0",
        "the image test needs root (chroot into the image's root filesystem)"
    );
}

/// The archive unpacked: its OCI layout in `dir/oci`, the layers applied in order in
/// `dir/rootfs`, and the manifest.
struct Unpacked {
    dir: tempfile::TempDir,
    manifest: Value,
}

impl Unpacked {
    fn new() -> Unpacked {
        let parent = repo().join("target/image");
        let dir = tempfile::Builder::new()
            .prefix("test-")
            .tempdir_in(&parent)
            .expect("tempdir");
        let oci = dir.path().join("oci");
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(&oci).unwrap();
        std::fs::create_dir_all(&rootfs).unwrap();
        run(Command::new("tar")
            .arg("-xf")
            .arg(archive())
            .arg("-C")
            .arg(&oci));
        let read = |p: &Path| -> Value {
            serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{p:?}: {e}")))
                .unwrap_or_else(|e| panic!("{p:?}: {e}"))
        };
        let blob = |digest: &str| {
            oci.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
        };
        let index = read(&oci.join("index.json"));
        let manifests = index["manifests"].as_array().expect("index.manifests");
        assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
        assert_eq!(
            manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
            format!("sandgate:{}", env!("CARGO_PKG_VERSION")),
            "the archive's reference"
        );
        let manifest = read(&blob(manifests[0]["digest"].as_str().unwrap()));
        for layer in manifest["layers"].as_array().expect("layers") {
            let path = blob(layer["digest"].as_str().unwrap());
            let list = run(Command::new("tar").arg("-tzf").arg(&path));
            assert!(
                !list
                    .lines()
                    .any(|l| l.rsplit('/').next().unwrap_or("").starts_with(".wh.")),
                "a layer deletes files (whiteouts): the image should only add"
            );
            run(Command::new("tar")
                .args(["--numeric-owner", "-xpzf"])
                .arg(&path)
                .arg("-C")
                .arg(&rootfs));
        }
        Unpacked { dir, manifest }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// A command run in the image: chrooted into its root filesystem as the image's user, with
    /// only the image's PATH in the environment.
    fn command(&self, argv0: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("chroot");
        c.arg(format!("--userspec={USER}"))
            .arg(self.rootfs())
            .arg(argv0)
            .env_clear()
            .env("PATH", PATH)
            .kill_on_drop(true);
        c
    }
}

#[test]
fn config_entrypoint_user_ports_labels() {
    let out = run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci-archive:{}", archive().display())));
    let config: Value = serde_json::from_str(&out).expect("skopeo's JSON");
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/sandgate-resolver"])
    );
    assert_eq!(c["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(
        c["User"], USER,
        "non-root, numeric (runAsNonRoot can check it)"
    );
    let ports: Vec<&str> = c["ExposedPorts"]
        .as_object()
        .expect("ExposedPorts")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(ports, ["50051/tcp", "50052/tcp", "9090/tcp"]);
    let labels = &c["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(labels["org.opencontainers.image.title"], "sandgate");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    for key in ["source", "revision", "description"] {
        let v = labels[format!("org.opencontainers.image.{key}")].as_str();
        assert!(v.is_some_and(|v| !v.is_empty()), "label {key}: {labels}");
    }
    assert_eq!(config["os"], "linux");

    // deploy/ pulls the tag the archive carries (kustomization.yaml `images:`), both variants.
    let tag = format!("newTag: \"{}\"", env!("CARGO_PKG_VERSION"));
    for variant in ["base", "native"] {
        let path = format!("deploy/{variant}/kustomization.yaml");
        let kustomization = std::fs::read_to_string(repo().join(&path)).unwrap();
        assert!(
            kustomization.contains(&tag),
            "{path} must set {tag} (the version `just image` tags)"
        );
    }
}

#[test]
fn files_deploy_uses_no_shell_and_the_size() {
    require_root();
    let image = Unpacked::new();
    let root = image.rootfs();
    let meta = |p: &str| std::fs::symlink_metadata(root.join(p.trim_start_matches('/')));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let resolver = meta("/usr/local/bin/sandgate-resolver").expect("the resolver");
    assert!(resolver.is_file());
    assert_eq!(resolver.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        (resolver.uid(), resolver.gid()),
        (0, 0),
        "owned by root, not the user"
    );
    let wasm = std::fs::read(root.join("usr/share/sandgate/sandgate_filter.wasm")).expect("filter");
    assert!(wasm.starts_with(b"\0asm"), "the filter is a wasm module");
    // The native module: a shared object (ELF, ET_DYN) exporting Envoy's dynamic-module entry
    // points, readable by every user (Envoy's container loads the copy the init container made).
    let module = meta(MODULE).expect("the native module");
    assert!(module.is_file());
    assert_eq!(module.permissions().mode() & 0o7777, 0o644);
    assert_eq!((module.uid(), module.gid()), (0, 0), "owned by root");
    let so = std::fs::read(root.join(MODULE)).unwrap();
    assert!(so.starts_with(b"\x7fELF"), "the module is an ELF file");
    assert_eq!(
        so.get(16..18),
        Some(&[3u8, 0][..]),
        "ET_DYN: a shared object"
    );
    for symbol in [
        "envoy_dynamic_module_on_program_init",
        "envoy_dynamic_module_on_http_filter_config_new",
    ] {
        assert!(
            so.windows(symbol.len()).any(|w| w == symbol.as_bytes()),
            "the module names {symbol}"
        );
    }
    let link = std::fs::read_link(root.join("envoyextproc")).expect("/envoyextproc is a symlink");
    assert_eq!(link, Path::new("/usr/local/bin/sandgate-resolver"));
    assert!(meta("/etc/ssl/certs/ca-certificates.crt").is_ok_and(|m| m.len() > 100_000));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("/etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("nonroot:x:65532:65532:")),
        "{passwd}"
    );

    for absent in [
        "/bin/sh",
        "/usr/bin/sh",
        "/bin/bash",
        "/bin/dash",
        "/bin/busybox",
        "/usr/bin/apt",
        "/usr/bin/apt-get",
        "/usr/bin/dpkg",
        "/usr/bin/perl",
    ] {
        assert!(meta(absent).is_err(), "{absent} is in the runtime image");
    }

    // The size: compressed (what a node pulls) and unpacked, and what dominates it.
    let compressed: u64 = image.manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let m = entry.metadata().unwrap();
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() {
                files.push((m.len(), entry.path()));
            }
        }
    }
    let total: u64 = files.iter().map(|f| f.0).sum();
    let mut by_top: BTreeMap<String, u64> = BTreeMap::new();
    for (len, path) in &files {
        let rel = path.strip_prefix(&root).unwrap();
        let dir = rel.parent().unwrap_or(rel);
        *by_top.entry(dir.display().to_string()).or_default() += len;
    }
    files.sort_unstable_by(|a, b| b.cmp(a));
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "image: {:.1} MiB compressed ({} layers), {:.1} MiB unpacked in {} files",
        mb(compressed),
        image.manifest["layers"].as_array().unwrap().len(),
        mb(total),
        files.len()
    );
    println!("largest files:");
    for (len, path) in files.iter().take(8) {
        println!(
            "  {:7.2} MiB  /{}",
            mb(*len),
            path.strip_prefix(&root).unwrap().display()
        );
    }
    let mut dirs: Vec<_> = by_top.into_iter().collect();
    dirs.sort_unstable_by_key(|d| std::cmp::Reverse(d.1));
    println!("by directory:");
    for (dir, len) in dirs.iter().take(6) {
        println!("  {:7.2} MiB  /{dir}", mb(*len));
    }
    assert!(
        compressed < MAX_COMPRESSED,
        "the image grew to {:.1} MiB compressed",
        mb(compressed)
    );
    let mut largest = [files[0].1.clone(), files[1].1.clone()];
    largest.sort();
    assert_eq!(
        largest,
        [
            root.join("usr/local/bin/sandgate-resolver"),
            root.join(MODULE)
        ],
        "the resolver and the module (each the gateway) should be the two largest files"
    );
}

/// The copying init container's command, as `deployment` (deploy/base's `filter`, deploy/native's
/// `module`) writes it (one flow sequence).
fn init_container_copy(deployment: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join(deployment)).expect("deployment");
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("command: [cp,"))
        .unwrap_or_else(|| panic!("{deployment}: the init container's `command: [cp, …]`"));
    line.trim_start_matches("command: [")
        .trim_end_matches(']')
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

/// Runs a copying init container's command in the image, as the image's user, into the
/// directory of an empty volume it owns (as the kubelet makes it); checks that the copy is the
/// image's file, and returns the copy's path.
async fn copy_as_init_container(image: &Unpacked, deployment: &str) -> PathBuf {
    let root = image.rootfs();
    let copy = init_container_copy(deployment);
    assert_eq!(copy.len(), 3, "{deployment}: `cp SOURCE DEST`: {copy:?}");
    let target = root.join(copy[2].trim_start_matches('/'));
    let volume = target.parent().expect("DEST is in a volume");
    std::fs::create_dir_all(volume).unwrap();
    run(Command::new("chown").arg(USER).arg(volume));
    let status = image
        .command(&copy[0])
        .args(&copy[1..])
        .stdin(Stdio::null())
        .status()
        .await
        .expect("run the init container's command");
    assert!(status.success(), "{copy:?} in the image: {status}");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        std::fs::read(root.join(copy[1].trim_start_matches('/'))).unwrap(),
        "{deployment}: {copy:?}"
    );
    target
}

async fn wait_ready(what: &str, http: SocketAddr, child: &mut tokio::process::Child, log: &Path) {
    let ready = eventually(Duration::from_secs(20), || async {
        matches!(
            sandgate_tests::http::get(http, "/readyz", None).await,
            Ok((200, _))
        )
    })
    .await;
    let logs = || std::fs::read_to_string(log).unwrap_or_default();
    if let Ok(Some(status)) = child.try_wait() {
        panic!("{what} exited ({status}):\n{}", logs());
    }
    assert!(ready, "{what}: /readyz not 200 within 20 s:\n{}", logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn resolver_runs_from_the_image_and_envoy_loads_its_filter_and_module() {
    require_root();
    let image = Unpacked::new();
    let root = image.rootfs();

    // deploy/'s init containers: the image's `cp` copies the filter (deploy/base) and the
    // module (deploy/native) into Envoy's volume.
    let copied = copy_as_init_container(&image, "deploy/base/deployment.yaml").await;
    assert_eq!(
        copied,
        root.join("etc/sandgate/wasm/sandgate_filter.wasm"),
        "deploy/base copies the filter"
    );
    let module = copy_as_init_container(&image, "deploy/native/deployment.yaml").await;
    assert_eq!(
        module,
        root.join("etc/sandgate/native/libsandgate_native.so"),
        "deploy/native copies the module"
    );

    // The resolver, configured as deploy/ configures it, against the emulator on loopback.
    let emu = Emulator::start().await;
    let tmp = root.join("tmp");
    let kubeconfig = emu.write_kubeconfig(&tmp);
    assert_eq!(kubeconfig, tmp.join("kubeconfig"));
    let [grpc, control, http] = free_ports().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let log = image.dir.path().join("resolver.log");
    let mut serve = image
        .command("/usr/local/bin/sandgate-resolver")
        .arg("serve")
        .env("SANDGATE_GRPC_LISTEN", grpc.to_string())
        .env("SANDGATE_CONTROL_LISTEN", control.to_string())
        .env("SANDGATE_HTTP_LISTEN", http.to_string())
        .env("SANDGATE_POD_SOURCE", "kube")
        .env("SANDGATE_KUBECONFIG", "/tmp/kubeconfig")
        .env("SANDGATE_KEY_SECRETS", "true")
        .env("SANDGATE_KEY_SECRET_NAMESPACE", "agentbox-system")
        .env("SANDGATE_CLUSTERS_CONFIGMAP", "agentbox-clusters-config")
        .env("SANDGATE_CLUSTERS_CONFIGMAP_NAMESPACE", "agentbox-system")
        .env("SANDGATE_LOG_FORMAT", "json")
        .env("AGENTBOX_ADMIN_KEY", "image-test-admin-key")
        .env("SANDGATE_INTERNAL_TOKEN", "image-test-internal-token")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("chroot the resolver");
    wait_ready(
        "sandgate-resolver serve (from the image)",
        http,
        &mut serve,
        &log,
    )
    .await;
    drop(serve);

    // The Go chart's command: /envoyextproc with its Go flags.
    let [extproc, internal, health] = free_ports().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let log = image.dir.path().join("envoyextproc.log");
    let mut go = image
        .command("/envoyextproc")
        .arg(format!("--health-probe-bind-address={health}"))
        .arg(format!("--extproc-bind-address={extproc}"))
        .arg(format!("--internal-api-bind-address={internal}"))
        .arg("--kubeconfig=/tmp/kubeconfig")
        .env("AGENTBOX_ADMIN_KEY", "image-test-admin-key")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("chroot /envoyextproc");
    wait_ready("/envoyextproc (from the image)", health, &mut go, &log).await;
    drop(go);

    // Envoy accepts both Pods' configurations with what their init containers copied: the
    // filter, and the module (which Envoy loads, with the native Pod's gateway flags).
    run(Command::new(repo().join("scripts/deploy-check"))
        .arg("--wasm")
        .arg(&copied)
        .arg("--native")
        .arg(&module)
        .current_dir(repo()));
}
