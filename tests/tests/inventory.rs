//! The static inventory Pod source and key files (local use and the demo), hot reload of both,
//! and the `ctl` command line against a running resolver.

use std::path::Path;

use sandgate_tests::process::{Outcome, Resolver, eventually, workspace_bin};
use sandgate_tests::stack::PROPAGATION;

fn write(path: &Path, text: &str) {
    // Write-then-rename so the reloader never reads a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const INVENTORY: &str = r#"
- name: demo-a
  namespace: acme
  ip: 127.0.0.11
  sandboxId: demo-a
  phase: running
- name: demo-b
  namespace: globex
  ip: 127.0.0.12
  sandboxId: demo-b
  phase: running
"#;

const KEYS: &str = r#"
tenants:
  - key: key-acme
    namespace: acme
  - key: key-globex
    namespace: globex
"#;

async fn start(dir: &Path) -> Resolver {
    write(&dir.join("pods.yaml"), INVENTORY);
    write(&dir.join("keys.yaml"), KEYS);
    std::fs::write(dir.join("admin-keys"), "# rotated\nadmin-new\nadmin-old\n").unwrap();
    let r = Resolver::start([
        "--pod-source=inventory".to_string(),
        format!("--inventory={}", dir.join("pods.yaml").display()),
        format!("--keys-file={}", dir.join("keys.yaml").display()),
        format!("--admin-key-file={}", dir.join("admin-keys").display()),
        "--reload-interval=100ms".to_string(),
    ])
    .await;
    r.wait_ready().await;
    r
}

#[tokio::test]
async fn routes_from_the_inventory_and_follows_edits() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path()).await;
    assert_eq!(
        r.resolve("key-acme", "demo-a", 8080).await,
        Outcome::Route("127.0.0.11:8080".into())
    );
    assert_eq!(
        r.resolve("key-globex", "demo-b", 8080).await,
        Outcome::Route("127.0.0.12:8080".into())
    );
    assert_eq!(
        r.resolve("key-acme", "demo-b", 8080).await,
        Outcome::deny(403, "forbidden")
    );
    assert_eq!(
        r.resolve("admin-old", "demo-b", 8080).await,
        Outcome::Route("127.0.0.12:8080".into())
    );

    // The Pod moves: the next resolve follows the new IP.
    write(
        &dir.path().join("pods.yaml"),
        &INVENTORY.replace("127.0.0.11", "127.0.0.21"),
    );
    let moved = Outcome::Route("127.0.0.21:8080".into());
    assert_eq!(
        r.resolve_until("key-acme", "demo-a", 8080, &moved, PROPAGATION)
            .await,
        moved
    );

    // A broken edit keeps the last good inventory.
    write(&dir.path().join("pods.yaml"), "- name: [unclosed");
    let rejected = eventually(PROPAGATION, || async {
        r.logs().contains("invalid file; keeping last good state")
    })
    .await;
    assert!(rejected, "the broken edit was noticed:\n{}", r.logs());
    assert_eq!(r.resolve("key-acme", "demo-a", 8080).await, moved);
}

#[tokio::test]
async fn key_files_reload_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path()).await;
    let ok = Outcome::Route("127.0.0.11:8080".into());
    // Revoke key-acme, add key-acme-2.
    write(
        &dir.path().join("keys.yaml"),
        &KEYS.replace("key: key-acme", "key: key-acme-2"),
    );
    let refused = Outcome::deny(401, "invalid_api_key");
    assert_eq!(
        r.resolve_until("key-acme", "demo-a", 8080, &refused, PROPAGATION)
            .await,
        refused
    );
    assert_eq!(r.resolve("key-acme-2", "demo-a", 8080).await, ok);
    // Admin rotation: drop the old admin key.
    write(&dir.path().join("admin-keys"), "admin-new\n");
    assert_eq!(
        r.resolve_until("admin-old", "demo-a", 8080, &refused, PROPAGATION)
            .await,
        refused
    );
    assert_eq!(r.resolve("admin-new", "demo-a", 8080).await, ok);
}

#[tokio::test]
async fn ctl_pushes_evicts_and_reads_last_active() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path()).await;
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(workspace_bin("sandgate-resolver"))
            .arg("ctl")
            .arg(format!("--addr=http://{}", r.control))
            .arg("--admin-key=admin-new")
            .args(args)
            .env_remove("AGENTBOX_ADMIN_KEY")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    assert_eq!(
        ctl(&["push", "alias", "acme", "demo-a"]),
        (true, "pushed".into())
    );
    // The pushed route names demo-a's Pod, which carries another sandbox id: refused, not routed.
    assert_eq!(
        r.resolve("admin-new", "alias", 80).await,
        Outcome::deny(502, "sandbox_reassigned")
    );
    assert_eq!(ctl(&["evict", "alias"]), (true, "evicted".into()));
    assert_eq!(ctl(&["evict", "alias"]), (true, "no route".into()));
    assert_eq!(
        r.resolve("admin-new", "demo-a", 80).await,
        Outcome::Route("127.0.0.11:80".into())
    );
    let (ok, json) = ctl(&["last-active"]);
    assert!(ok);
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(&json).unwrap();
    assert_eq!(map.keys().collect::<Vec<_>>(), ["demo-a"]);

    let clusters = dir.path().join("clusters.yaml");
    std::fs::write(
        &clusters,
        "clusters:\n- id: c2\n  gateway: {dataURL: 'http://127.0.0.9:8092'}\n",
    )
    .unwrap();
    let clusters = clusters.display().to_string();
    assert_eq!(
        ctl(&["clusters", &clusters]),
        (true, "1 peer cluster(s)".into())
    );
    assert_eq!(
        r.resolve("admin-new", "c2.0f8fad5b-d9cb-469f-a165-70867728950e", 80)
            .await,
        Outcome::Forward("127.0.0.9:8092".into())
    );

    let bad = std::process::Command::new(workspace_bin("sandgate-resolver"))
        .args([
            "ctl",
            &format!("--addr=http://{}", r.control),
            "--admin-key=nope",
            "last-active",
        ])
        .env_remove("AGENTBOX_ADMIN_KEY")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("admin key is not valid"));
}

#[tokio::test]
async fn start_up_fails_clearly_on_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("pods.yaml"),
        "- {name: a, namespace: b, ip: not-an-ip}",
    );
    let out = tokio::process::Command::new(workspace_bin("sandgate-resolver"))
        .args([
            "serve",
            "--pod-source=inventory",
            "--http-listen=127.0.0.1:0",
            "--grpc-listen=127.0.0.1:0",
            "--control-listen=127.0.0.1:0",
        ])
        .arg(format!(
            "--inventory={}",
            dir.path().join("pods.yaml").display()
        ))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad ip"), "{err}");
}
