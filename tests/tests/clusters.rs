//! The peer-cluster configuration's sources, through the real resolver: agentbox's ConfigMap
//! (watched on the emulator), a file (hot reload), and the control plane; a bad version of any
//! of them keeps the last good configuration. A document whose top-level keys are all unknown
//! (`clusterz:` for `clusters:`) is a bad version too, while `clusters: []` still means "no
//! peers".

use std::time::Duration;

use sandgate_tests::emulator::{Kind, config_map};
use sandgate_tests::process::{Outcome, Resolver};
use sandgate_tests::stack::{ACME_KEY, ADMIN_KEY, KubeStack, PROPAGATION};

const U: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const NS: &str = "agentbox-system";
const NAME: &str = "agentbox-clusters-config";

/// What a typo in the one key that matters looks like: it must not read as "no peers".
fn misspelt(ip: &str) -> String {
    doc(ip).replace("clusters:", "clusterz:")
}

fn doc(ip: &str) -> String {
    format!(
        "clusters:\n- id: c2\n  gateway:\n    dataURL: http://{ip}:8092\n    apiURL: http://ignored\n"
    )
}

async fn forwards_to(resolver: &Resolver, want: &str) {
    let id = format!("c2.{U}");
    let want = Outcome::Forward(format!("{want}:8092"));
    let got = resolver
        .resolve_until(ACME_KEY, &id, 80, &want, PROPAGATION)
        .await;
    assert_eq!(got, want);
}

/// How many updates from `source` were `result`, from the resolver's metrics.
/// No peers at all: c2 is unknown.
async fn has_no_peers(resolver: &Resolver) {
    let id = format!("c2.{U}");
    let want = Outcome::deny(502, "unknown_cluster");
    let got = resolver
        .resolve_until(ACME_KEY, &id, 80, &want, PROPAGATION)
        .await;
    assert_eq!(got, want);
}

async fn updates(resolver: &Resolver, source: &str, result: &str) -> u64 {
    let series =
        format!("sandgate_cluster_config_updates_total{{source=\"{source}\",result=\"{result}\"}}");
    resolver.metric(&series).await
}

async fn until_updates(resolver: &Resolver, source: &str, result: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + PROPAGATION;
    while updates(resolver, source, result).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {result} update from {source}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_agentbox_configmap_is_watched_and_a_bad_version_keeps_the_last() {
    let s = KubeStack::start(&[
        "--cluster-id=c1",
        &format!("--clusters-configmap={NAME}"),
        &format!("--clusters-configmap-namespace={NS}"),
    ])
    .await;
    let id = format!("c2.{U}");
    // No ConfigMap yet: no peers.
    assert_eq!(
        s.resolver.resolve(ACME_KEY, &id, 80).await,
        Outcome::deny(502, "unknown_cluster")
    );
    s.emu
        .apply(config_map(NS, NAME, &[("config.yaml", &doc("127.0.0.9"))]));
    forwards_to(&s.resolver, "127.0.0.9").await;
    s.emu
        .apply(config_map(NS, NAME, &[("config.yaml", &doc("127.0.0.10"))]));
    forwards_to(&s.resolver, "127.0.0.10").await;

    s.emu
        .apply(config_map(NS, NAME, &[("config.yaml", "clusters: 3")]));
    until_updates(&s.resolver, "configmap", "rejected", 1).await;
    forwards_to(&s.resolver, "127.0.0.10").await;
    s.emu.apply(config_map(
        NS,
        NAME,
        &[("config.yaml", &misspelt("127.0.0.99"))],
    ));
    until_updates(&s.resolver, "configmap", "rejected", 2).await;
    forwards_to(&s.resolver, "127.0.0.10").await;
    // Another ConfigMap in the namespace is not ours.
    s.emu.apply(config_map(
        NS,
        "other",
        &[("config.yaml", &doc("127.0.0.11"))],
    ));
    // Deleting it keeps the peers too: a recreated object must not strand remote sandboxes.
    assert!(s.emu.delete(Kind::ConfigMap, NS, NAME));
    tokio::time::sleep(Duration::from_millis(200)).await;
    forwards_to(&s.resolver, "127.0.0.10").await;
    assert_eq!(updates(&s.resolver, "configmap", "applied").await, 2);

    // The control plane replaces it until the next ConfigMap change.
    let mut control = s.control().await;
    control
        .push_clusters(&doc("127.0.0.12"))
        .await
        .expect("push");
    forwards_to(&s.resolver, "127.0.0.12").await;
    let err = control
        .push_clusters(&misspelt("127.0.0.99"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("no known top-level key"),
        "{}",
        err.message()
    );
    forwards_to(&s.resolver, "127.0.0.12").await;
    control.key = Some("not-the-admin-key".into());
    let err = control.push_clusters(&doc("127.0.0.13")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    s.emu
        .apply(config_map(NS, NAME, &[("config.yaml", &doc("127.0.0.14"))]));
    forwards_to(&s.resolver, "127.0.0.14").await;
    // An empty list is a document that says "no peers", and is applied.
    s.emu
        .apply(config_map(NS, NAME, &[("config.yaml", "clusters: []\n")]));
    has_no_peers(&s.resolver).await;
    assert_eq!(updates(&s.resolver, "configmap", "rejected").await, 2);
}

#[tokio::test]
async fn a_clusters_file_is_reloaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("clusters.yaml");
    std::fs::write(&file, doc("127.0.0.9")).expect("write");
    let s = KubeStack::start(&[
        "--cluster-id=c1",
        &format!("--clusters-file={}", file.display()),
        "--reload-interval=100ms",
    ])
    .await;
    forwards_to(&s.resolver, "127.0.0.9").await;
    std::fs::write(&file, doc("127.0.0.10")).expect("rewrite");
    forwards_to(&s.resolver, "127.0.0.10").await;
    std::fs::write(&file, "clusters: [{id: c2, gateway: {dataURL: 'ftp://x'}}]").expect("bad");
    until_updates(&s.resolver, "file", "rejected", 1).await;
    forwards_to(&s.resolver, "127.0.0.10").await;
    std::fs::write(&file, misspelt("127.0.0.99")).expect("misspelt");
    until_updates(&s.resolver, "file", "rejected", 2).await;
    forwards_to(&s.resolver, "127.0.0.10").await;
    assert_eq!(updates(&s.resolver, "file", "applied").await, 2);
    // An empty file (comments only) still means "no peers", as it always did.
    std::fs::write(&file, "# no peers for now\n").expect("empty");
    has_no_peers(&s.resolver).await;
    assert_eq!(updates(&s.resolver, "file", "applied").await, 3);
}

#[tokio::test]
async fn a_bad_clusters_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("clusters.yaml");
    for (bad, says) in [
        ("clusters: [{id: ''}]".to_string(), "cluster id"),
        (misspelt("127.0.0.9"), "no known top-level key"),
    ] {
        std::fs::write(&file, &bad).expect("write");
        let out =
            std::process::Command::new(sandgate_tests::process::workspace_bin("sandgate-resolver"))
                .args(["serve", "--pod-source=inventory", "--admin-key", ADMIN_KEY])
                .arg(format!("--clusters-file={}", file.display()))
                .output()
                .expect("run resolver");
        assert!(!out.status.success(), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{bad}: {stderr}");
    }
}

/// The Go gateway's legacy key: `clusters.yaml` is read when the ConfigMap has no
/// `config.yaml` (the Go chart seeds `clusters.yaml: ""`); when both exist, `config.yaml` wins.
#[tokio::test]
async fn the_legacy_clusters_yaml_key_is_the_fallback_and_config_yaml_wins() {
    let s = KubeStack::start(&[
        "--cluster-id=c1",
        &format!("--clusters-configmap={NAME}"),
        &format!("--clusters-configmap-namespace={NS}"),
    ])
    .await;
    // The chart's seed: an empty legacy document, "no peers".
    s.emu.apply(config_map(NS, NAME, &[("clusters.yaml", "")]));
    until_updates(&s.resolver, "configmap", "applied", 1).await;
    has_no_peers(&s.resolver).await;
    s.emu.apply(config_map(
        NS,
        NAME,
        &[("clusters.yaml", &doc("127.0.0.21"))],
    ));
    forwards_to(&s.resolver, "127.0.0.21").await;
    s.emu.apply(config_map(
        NS,
        NAME,
        &[
            ("clusters.yaml", &doc("127.0.0.21")),
            ("config.yaml", &doc("127.0.0.22")),
        ],
    ));
    forwards_to(&s.resolver, "127.0.0.22").await;
    // A bad config.yaml is not skipped for the legacy key: the last good configuration stays.
    s.emu.apply(config_map(
        NS,
        NAME,
        &[
            ("clusters.yaml", &doc("127.0.0.23")),
            ("config.yaml", "clusters: 3"),
        ],
    ));
    until_updates(&s.resolver, "configmap", "rejected", 1).await;
    forwards_to(&s.resolver, "127.0.0.22").await;
    // Neither key: nothing applied, the last configuration stays.
    s.emu
        .apply(config_map(NS, NAME, &[("other.yaml", &doc("127.0.0.24"))]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    forwards_to(&s.resolver, "127.0.0.22").await;
    assert_eq!(updates(&s.resolver, "configmap", "applied").await, 3);
    assert_eq!(updates(&s.resolver, "configmap", "rejected").await, 1);
}
