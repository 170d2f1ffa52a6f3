//! The API-server emulator speaks enough of the Kubernetes wire protocol for the unmodified
//! kube-rs client and `kube::runtime::watcher`: lists with selectors and pagination, watches
//! with resume / bookmarks / 410 re-list, patches, deletes, and fault injection.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, ResourceExt, WatchEvent,
    WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher, watcher::Event};
use sandgate_tests::emulator::{Emulator, Kind, Options, pod};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Upper bound for any single expected step; a hang fails the test instead of blocking.
const STEP: Duration = Duration::from_secs(5);

struct Env {
    emu: Emulator,
    client: kube::Client,
    _dir: tempfile::TempDir,
}

async fn env_with(opts: Options) -> Env {
    let emu = Emulator::start_with(opts).await;
    let dir = tempfile::tempdir().unwrap();
    let path = emu.write_kubeconfig(dir.path());
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    Env {
        emu,
        client,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with(Options::default()).await
}

/// A watcher polled on its own task so the test can change the emulator while the watcher
/// sleeps in backoff; aborted on drop so nothing outlives the test.
struct Watch<K> {
    rx: mpsc::UnboundedReceiver<Result<Event<K>, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Drop for Watch<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K: ResourceExt + Send + 'static> Watch<K> {
    fn spawn<S>(stream: S) -> Self
    where
        S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if tx.send(item.map_err(|e| e.to_string())).is_err() {
                    return;
                }
            }
        });
        Watch { rx, task }
    }

    async fn next(&mut self) -> Result<Event<K>, String> {
        timeout(STEP, self.rx.recv())
            .await
            .expect("timed out waiting for a watcher event")
            .expect("watcher ended")
    }

    /// The next successful event, skipping (but returning) errors seen on the way.
    async fn next_ok(&mut self) -> (Event<K>, Vec<String>) {
        let mut errors = Vec::new();
        loop {
            match self.next().await {
                Ok(ev) => return (ev, errors),
                Err(e) => errors.push(e),
            }
        }
    }

    /// Consumes `Init`, `InitApply`*, `InitDone` and returns the initial names.
    async fn init(&mut self) -> BTreeSet<String> {
        let (ev, _) = self.next_ok().await;
        assert!(
            matches!(ev, Event::Init),
            "expected Init, got {}",
            describe(&ev)
        );
        let mut names = BTreeSet::new();
        loop {
            match self.next_ok().await.0 {
                Event::InitApply(o) => {
                    names.insert(o.name_any());
                }
                Event::InitDone => return names,
                other => panic!("unexpected {} during init", describe(&other)),
            }
        }
    }
}

fn describe<K: ResourceExt>(ev: &Event<K>) -> String {
    match ev {
        Event::Init => "Init".into(),
        Event::InitApply(o) => format!("InitApply({})", o.name_any()),
        Event::InitDone => "InitDone".into(),
        Event::Apply(o) => format!("Apply({})", o.name_any()),
        Event::Delete(o) => format!("Delete({})", o.name_any()),
    }
}

fn expect_apply<K: ResourceExt>(ev: Event<K>, name: &str) -> K {
    match ev {
        Event::Apply(o) if o.name_any() == name => o,
        other => panic!("expected Apply({name}), got {}", describe(&other)),
    }
}

fn expect_delete<K: ResourceExt>(ev: Event<K>, name: &str) -> K {
    match ev {
        Event::Delete(o) if o.name_any() == name => o,
        other => panic!("expected Delete({name}), got {}", describe(&other)),
    }
}

fn api_code(err: kube::Error) -> u16 {
    match err {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn list_filters_by_label_and_paginates_over_a_consistent_snapshot() {
    let Env { emu, client, .. } = env().await;
    for (ns, name) in [
        ("a", "p1"),
        ("a", "p2"),
        ("b", "p3"),
        ("b", "p4"),
        ("b", "p5"),
    ] {
        emu.apply_pod(ns, name, &[("x", "y")]);
    }
    emu.apply_pod("a", "other", &[("x", "z")]);
    emu.apply_pod("b", "unlabelled", &[]);

    let api = Api::<Pod>::all(client.clone());
    let lp = ListParams::default().labels("x=y").limit(2);
    let first = api.list(&lp).await.unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let mut names: Vec<String> = first.items.iter().map(|p| p.name_any()).collect();

    // A write between pages must not leak into later pages.
    emu.apply_pod("b", "p6", &[("x", "y")]);
    emu.delete(Kind::Pod, "b", "p5");

    let mut token = first.metadata.continue_;
    let mut pages = 1;
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = api.list(&lp.clone().continue_token(&t)).await.unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
        assert!(page.items.len() <= 2);
        names.extend(page.items.iter().map(|p| p.name_any()));
        token = page.metadata.continue_;
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["p1", "p2", "p3", "p4", "p5"]);

    // Fresh list sees the writes.
    let all = api
        .list(&ListParams::default().labels("x==y"))
        .await
        .unwrap();
    let names: Vec<_> = all.items.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, ["p1", "p2", "p3", "p4", "p6"]);
    assert!(all.metadata.continue_.is_none_or(|c| c.is_empty()));

    // Namespaced path, other selector forms, and an ignored-but-accepted field selector.
    let in_a = Api::<Pod>::namespaced(client.clone(), "a");
    let names = |l: kube::core::ObjectList<Pod>| -> Vec<String> {
        l.items.iter().map(|p| p.name_any()).collect()
    };
    assert_eq!(
        names(in_a.list(&ListParams::default()).await.unwrap()),
        ["other", "p1", "p2"]
    );
    assert_eq!(
        names(
            in_a.list(&ListParams::default().labels("x!=y"))
                .await
                .unwrap()
        ),
        ["other"]
    );
    assert_eq!(
        names(api.list(&ListParams::default().labels("!x")).await.unwrap()),
        ["unlabelled"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("x in (z, q)"))
                .await
                .unwrap()
        ),
        ["other"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("x notin (y)"))
                .await
                .unwrap()
        ),
        ["other", "unlabelled"]
    );
    assert_eq!(
        names(
            in_a.list(&ListParams::default().fields("metadata.name=p2"))
                .await
                .unwrap()
        ),
        ["p2"]
    );
    // The "any" semantic: resourceVersion=0 with NotOlderThan.
    let any = api
        .list(&ListParams::default().match_any().labels("x=y"))
        .await
        .unwrap();
    assert_eq!(any.items.len(), 5);

    // Bad client input is a 400 Status, not a crash.
    assert_eq!(
        api_code(
            api.list(&ListParams::default().labels("x in (y"))
                .await
                .unwrap_err()
        ),
        400
    );
    assert_eq!(
        api_code(
            api.list(&ListParams::default().continue_token("garbage"))
                .await
                .unwrap_err()
        ),
        400
    );
    assert_eq!(
        api_code(
            api.list(&ListParams::default().at("notanumber"))
                .await
                .unwrap_err()
        ),
        400
    );
}

#[tokio::test]
async fn watcher_sees_init_then_apply_modify_delete_for_matching_pods_only() {
    let Env { emu, client, .. } = env().await;
    emu.apply_pod("default", "web-1", &[("app", "web")]);
    emu.apply_pod("default", "db-1", &[("app", "db")]);
    emu.apply_pod("elsewhere", "web-x", &[("app", "web")]);

    let api = Api::<Pod>::namespaced(client, "default");
    let mut w = Watch::spawn(watcher(api, watcher::Config::default().labels("app=web")));
    assert_eq!(w.init().await, BTreeSet::from(["web-1".to_string()]));
    assert!(emu.wait_for_watchers(Kind::Pod, 1, STEP).await);

    emu.apply_pod("default", "db-2", &[("app", "db")]);
    emu.apply_pod("elsewhere", "web-y", &[("app", "web")]);
    let rv = emu.apply_pod("default", "web-2", &[("app", "web")]);
    let p = expect_apply(w.next_ok().await.0, "web-2");
    assert_eq!(p.resource_version(), Some(rv));

    let rv = emu
        .update(Kind::Pod, "default", "web-2", |p| {
            p["metadata"]["annotations"] = json!({"touched": "yes"});
        })
        .unwrap();
    let p = expect_apply(w.next_ok().await.0, "web-2");
    assert_eq!(p.resource_version(), Some(rv));
    assert_eq!(
        p.annotations().get("touched").map(String::as_str),
        Some("yes")
    );

    assert!(emu.delete(Kind::Pod, "default", "web-2"));
    let gone = expect_delete(w.next_ok().await.0, "web-2");
    assert_eq!(
        gone.resource_version(),
        Some(emu.resource_version().to_string())
    );

    // Selector transitions: leaving the selector is a delete, entering it an apply.
    emu.update(Kind::Pod, "default", "web-1", |p| {
        p["metadata"]["labels"]["app"] = json!("db")
    });
    expect_delete(w.next_ok().await.0, "web-1");
    emu.update(Kind::Pod, "default", "db-1", |p| {
        p["metadata"]["labels"]["app"] = json!("web")
    });
    expect_apply(w.next_ok().await.0, "db-1");

    // Nothing else was delivered.
    assert!(
        timeout(Duration::from_millis(300), w.rx.recv())
            .await
            .is_err()
    );

    // kube-rs sent the query parameters we expect.
    let reqs = emu.requests();
    let list = reqs
        .iter()
        .find(|r| !r.is_watch() && r.path.ends_with("/pods"))
        .unwrap();
    assert_eq!(list.path, "/api/v1/namespaces/default/pods");
    assert_eq!(list.param("labelSelector"), Some("app=web"));
    assert_eq!(list.param("limit"), Some("500"));
    let watch = reqs.iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(watch.param("allowWatchBookmarks"), Some("true"));
    assert_eq!(watch.param("timeoutSeconds"), Some("290"));
    assert_eq!(watch.param("labelSelector"), Some("app=web"));
    assert!(
        watch
            .param("resourceVersion")
            .is_some_and(|rv| rv.parse::<u64>().is_ok())
    );
}

#[tokio::test]
async fn cut_watch_resumes_from_history_without_relisting() {
    let Env { emu, client, .. } = env().await;
    emu.apply_pod("default", "a", &[]);
    let mut w = Watch::spawn(watcher(Api::<Pod>::all(client), watcher::Config::default()));
    w.init().await;
    assert!(emu.wait_for_watchers(Kind::Pod, 1, STEP).await);
    let lists = emu.stats().kind(Kind::Pod).lists;

    emu.cut_watches();
    assert_eq!(emu.stats().kind(Kind::Pod).open_watches, 0);
    emu.apply_pod("default", "during-gap", &[]);
    emu.delete(Kind::Pod, "default", "a");

    let (ev, _) = w.next_ok().await;
    expect_apply(ev, "during-gap");
    expect_delete(w.next_ok().await.0, "a");
    assert!(emu.wait_for_watchers(Kind::Pod, 1, STEP).await);
    assert!(emu.wait_for_watch_requests(Kind::Pod, 2, STEP).await);
    emu.apply_pod("default", "after", &[]);
    expect_apply(w.next_ok().await.0, "after");
    assert_eq!(
        emu.stats().kind(Kind::Pod).lists,
        lists,
        "no re-list expected"
    );
}

#[tokio::test]
async fn compaction_forces_a_relist_that_includes_changes_made_while_disconnected() {
    let Env { emu, client, .. } = env().await;
    emu.apply_pod("default", "old", &[]);
    emu.apply_pod("default", "kept", &[]);
    let mut w = Watch::spawn(watcher(Api::<Pod>::all(client), watcher::Config::default()));
    w.init().await;
    assert!(emu.wait_for_watchers(Kind::Pod, 1, STEP).await);
    let lists = emu.stats().kind(Kind::Pod).lists;

    emu.compact();
    emu.cut_watches();
    emu.apply_pod("default", "new", &[]);
    emu.delete(Kind::Pod, "default", "old");

    // The resumed watch gets the 410 ERROR event, then the watcher re-lists.
    let (ev, errors) = w.next_ok().await;
    assert!(
        errors
            .iter()
            .any(|e| e.contains("410") || e.contains("too old resource version")),
        "expected a 410 error, got {errors:?}"
    );
    assert!(
        matches!(ev, Event::Init),
        "expected Init, got {}",
        describe(&ev)
    );
    let mut names = BTreeSet::new();
    loop {
        match w.next_ok().await.0 {
            Event::InitApply(p) => {
                names.insert(p.name_any());
            }
            Event::InitDone => break,
            other => panic!("unexpected {}", describe(&other)),
        }
    }
    assert_eq!(
        names,
        BTreeSet::from(["kept".to_string(), "new".to_string()])
    );
    assert_eq!(emu.stats().kind(Kind::Pod).lists, lists + 1);

    // And it keeps watching from the fresh list's RV.
    emu.apply_pod("default", "later", &[]);
    expect_apply(w.next_ok().await.0, "later");
}

#[tokio::test]
async fn raw_watch_from_a_compacted_rv_gets_a_410_error_event() {
    let Env { emu, client, .. } = env().await;
    let old = emu.apply_pod("default", "a", &[]);
    emu.compact();
    let api = Api::<Pod>::all(client);
    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match timeout(STEP, stream.try_next()).await.unwrap().unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    assert!(
        timeout(STEP, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );

    // A list after compaction yields a watchable RV.
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    emu.apply_pod("default", "b", &[]);
    match timeout(STEP, stream.try_next()).await.unwrap().unwrap() {
        Some(WatchEvent::Added(p)) => assert_eq!(p.name_any(), "b"),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_recovers_after_the_apiserver_answers_503_for_a_while() {
    let Env { emu, client, .. } = env().await;
    let mut w = Watch::spawn(
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    w.init().await;
    assert!(emu.wait_for_watchers(Kind::Pod, 1, STEP).await);

    emu.set_down(true);
    assert_eq!(emu.stats().kind(Kind::Pod).open_watches, 0);
    emu.apply_pod("default", "while-down", &[]);
    assert!(emu.wait_for(STEP, |s| s.rejected > 0).await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    emu.set_down(false);

    let (ev, _) = w.next_ok().await;
    expect_apply(ev, "while-down");
    assert!(emu.wait_for_watchers(Kind::Pod, 1, STEP).await);
}

#[tokio::test]
async fn watcher_recovers_after_the_apiserver_is_unreachable_for_a_while() {
    let Env { emu, client, .. } = env().await;
    let mut w = Watch::spawn(
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    w.init().await;
    assert!(emu.wait_for_watchers(Kind::Pod, 1, STEP).await);

    emu.set_unreachable(true);
    emu.apply_pod("default", "while-unreachable", &[]);
    // The resumed watch fails at the transport level; the watcher reports it and backs off.
    let err = w.next().await;
    assert!(err.is_err(), "expected a transport error, got an event");
    tokio::time::sleep(Duration::from_millis(300)).await;
    emu.set_unreachable(false);

    let (ev, _) = w.next_ok().await;
    expect_apply(ev, "while-unreachable");
}

#[tokio::test]
async fn patch_delete_and_recreate_through_the_api() {
    let Env { emu, client, .. } = env().await;
    emu.apply_pod("default", "p", &[("app", "web")]);
    let api = Api::<Pod>::default_namespaced(client);

    let before = api.get("p").await.unwrap();
    let uid = before.uid().unwrap();
    let rv0: u64 = before.resource_version().unwrap().parse().unwrap();

    let patched = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"sandgate/owner": "me"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        patched
            .annotations()
            .get("sandgate/owner")
            .map(String::as_str),
        Some("me")
    );
    let rv1: u64 = patched.resource_version().unwrap().parse().unwrap();
    assert!(rv1 > rv0);
    assert_eq!(patched.uid().as_deref(), Some(uid.as_str()));
    assert_eq!(patched.labels().get("app").map(String::as_str), Some("web"));

    // Strategic merge is treated as a merge patch; null removes a key.
    let patched = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"app": null, "tier": "fe"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.labels().len(), 1);
    assert_eq!(patched.labels().get("tier").map(String::as_str), Some("fe"));

    // A no-op patch does not bump the RV.
    let same = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "fe"}}})),
        )
        .await
        .unwrap();
    assert_eq!(same.resource_version(), patched.resource_version());

    // Optimistic concurrency, unsupported patch types, missing objects.
    let stale = json!({"metadata": {"resourceVersion": rv0.to_string(), "labels": {"x": "y"}}});
    assert_eq!(
        api_code(
            api.patch("p", &PatchParams::default(), &Patch::Merge(stale))
                .await
                .unwrap_err()
        ),
        409
    );
    assert_eq!(
        api_code(
            api.patch(
                "p",
                &PatchParams::apply("test"),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod"}))
            )
            .await
            .unwrap_err()
        ),
        415
    );
    assert_eq!(
        api_code(
            api.patch("missing", &PatchParams::default(), &Patch::Merge(json!({})))
                .await
                .unwrap_err()
        ),
        404
    );

    // Status only changes through /status.
    let with_status = api
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.0.0.7"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        with_status
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref()),
        Some("10.0.0.7")
    );
    let ignored = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"podIP": "1.2.3.4"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        ignored.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
        Some("10.0.0.7")
    );

    // Delete returns the object; a second delete is 404; the emulator agrees.
    let deleted = api.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_left());
    assert_eq!(
        api_code(api.delete("p", &DeleteParams::default()).await.unwrap_err()),
        404
    );
    assert_eq!(api_code(api.get("p").await.unwrap_err()), 404);
    assert!(emu.get(Kind::Pod, "default", "p").is_none());

    // Re-creating the name yields a new uid; creating it twice conflicts.
    let fresh: Pod = serde_json::from_value(pod("default", "p", &[("app", "web")])).unwrap();
    let created = api.create(&PostParams::default(), &fresh).await.unwrap();
    assert_ne!(created.uid(), Some(uid));
    assert_eq!(
        api_code(
            api.create(&PostParams::default(), &fresh)
                .await
                .unwrap_err()
        ),
        409
    );

    // generateName, and replace with a stale RV.
    let mut gen_pod = fresh.clone();
    gen_pod.metadata.name = None;
    gen_pod.metadata.generate_name = Some("sbx-".into());
    let generated = api.create(&PostParams::default(), &gen_pod).await.unwrap();
    assert!(generated.name_any().starts_with("sbx-") && generated.name_any().len() == 9);
    let mut stale = created.clone();
    stale.metadata.resource_version = Some(rv0.to_string());
    assert_eq!(
        api_code(
            api.replace("p", &PostParams::default(), &stale)
                .await
                .unwrap_err()
        ),
        409
    );
    let mut current = api.get("p").await.unwrap();
    current
        .labels_mut()
        .insert("replaced".into(), "true".into());
    let replaced = api
        .replace("p", &PostParams::default(), &current)
        .await
        .unwrap();
    assert_eq!(
        replaced.labels().get("replaced").map(String::as_str),
        Some("true")
    );
    assert_eq!(replaced.uid(), created.uid());
}

#[tokio::test]
async fn bookmarks_are_sent_periodically_and_on_demand() {
    let Env { emu, client, .. } = env_with(Options {
        bookmark_interval: Some(Duration::from_millis(200)),
        ..Options::default()
    })
    .await;
    let api = Api::<Secret>::all(client.clone());
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    emu.apply_secret("default", "s", &[], &[("k", b"v")]);
    match timeout(STEP, stream.try_next()).await.unwrap().unwrap() {
        Some(WatchEvent::Added(s)) => assert_eq!(s.name_any(), "s"),
        other => panic!("expected ADDED, got {other:?}"),
    }
    let bookmark_rv = match timeout(STEP, stream.try_next()).await.unwrap().unwrap() {
        Some(WatchEvent::Bookmark(b)) => b.metadata.resource_version,
        other => panic!("expected BOOKMARK, got {other:?}"),
    };
    assert_eq!(bookmark_rv, emu.resource_version().to_string());

    // Pod writes advance a Secret watcher's bookmark too (one global RV).
    emu.apply_pod("default", "p", &[]);
    let bookmark_rv = loop {
        match timeout(STEP, stream.try_next()).await.unwrap().unwrap() {
            Some(WatchEvent::Bookmark(b)) if b.metadata.resource_version != bookmark_rv => {
                break b.metadata.resource_version;
            }
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("expected BOOKMARK, got {other:?}"),
        }
    };
    assert_eq!(bookmark_rv, emu.resource_version().to_string());

    // Without a period, bookmarks come only on demand, and only if allowed.
    let Env { emu, client, .. } = env_with(Options {
        bookmark_interval: None,
        ..Options::default()
    })
    .await;
    let api = Api::<Secret>::all(client);
    let rv = emu.resource_version().to_string();
    let mut with = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let mut without = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(emu.wait_for_watchers(Kind::Secret, 2, STEP).await);
    assert!(
        timeout(Duration::from_millis(300), with.try_next())
            .await
            .is_err()
    );
    emu.send_bookmarks();
    assert!(matches!(
        timeout(STEP, with.try_next()).await.unwrap().unwrap(),
        Some(WatchEvent::Bookmark(_))
    ));
    assert!(
        timeout(Duration::from_millis(300), without.try_next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn secrets_list_and_watch_like_pods() {
    let Env { emu, client, .. } = env().await;
    emu.apply_secret(
        "default",
        "s1",
        &[("role", "token")],
        &[("token", b"hunter2")],
    );
    emu.apply_secret("default", "s2", &[("role", "other")], &[]);
    let api = Api::<Secret>::default_namespaced(client);

    let list = api
        .list(&ListParams::default().labels("role=token"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let data = list.items[0].data.as_ref().unwrap();
    assert_eq!(data["token"].0, b"hunter2");

    let mut w = Watch::spawn(watcher(
        api.clone(),
        watcher::Config::default().labels("role=token"),
    ));
    assert_eq!(w.init().await, BTreeSet::from(["s1".to_string()]));
    emu.apply_secret("default", "s3", &[("role", "token")], &[("token", b"x")]);
    let s = expect_apply(w.next_ok().await.0, "s3");
    assert_eq!(s.data.unwrap()["token"].0, b"x");
    api.delete("s1", &DeleteParams::default()).await.unwrap();
    expect_delete(w.next_ok().await.0, "s1");
    assert_eq!(emu.stats().kind(Kind::Secret).watches, 1);
    assert_eq!(emu.stats().kind(Kind::Pod).watches, 0);
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let Env { emu, client, .. } = env().await;
    let api = Api::<Pod>::all(client);
    let rv = emu.resource_version().to_string();
    let started = tokio::time::Instant::now();
    let mut stream = api
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(
        timeout(STEP, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .is_none()
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        emu.wait_for(STEP, |s| s.kind(Kind::Pod).open_watches == 0)
            .await
    );
}

#[tokio::test]
async fn streaming_list_and_metadata_watchers_work() {
    let Env { emu, client, .. } = env().await;
    emu.apply_pod("default", "a", &[("app", "web")]);
    emu.apply_pod("default", "b", &[("app", "db")]);

    let mut streaming = Watch::spawn(watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default()
            .labels("app=web")
            .streaming_lists(),
    ));
    assert_eq!(streaming.init().await, BTreeSet::from(["a".to_string()]));

    let mut meta = Watch::spawn(watcher(
        Api::<PartialObjectMeta<Pod>>::all(client.clone()),
        watcher::Config::default().page_size(1),
    ));
    assert_eq!(
        meta.init().await,
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
    // page_size(1) → two pages plus a final empty-continue page boundary.
    assert!(emu.stats().kind(Kind::Pod).lists >= 2);

    emu.apply_pod("default", "c", &[("app", "web")]);
    expect_apply(streaming.next_ok().await.0, "c");
    let m = expect_apply(meta.next_ok().await.0, "c");
    assert_eq!(m.labels().get("app").map(String::as_str), Some("web"));
    assert_eq!(
        emu.requests()
            .iter()
            .filter(|r| r.param("sendInitialEvents") == Some("true"))
            .count(),
        1
    );
}

#[tokio::test]
async fn shutdown_stops_serving() {
    let Env { emu, client, .. } = env().await;
    let api = Api::<Pod>::all(client);
    api.list(&ListParams::default()).await.unwrap();
    let other = emu.clone();
    drop(other);
    api.list(&ListParams::default()).await.unwrap();
    emu.shutdown();
    assert!(
        timeout(STEP, api.list(&ListParams::default()))
            .await
            .unwrap()
            .is_err()
    );
}

#[tokio::test]
async fn dropping_a_watch_on_the_client_closes_it_on_the_server() {
    let Env { emu, client, .. } = env_with(Options {
        bookmark_interval: None,
        ..Options::default()
    })
    .await;
    let api = Api::<Pod>::all(client);
    let rv = emu.resource_version().to_string();
    let stream = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    assert!(emu.wait_for_watchers(Kind::Pod, 1, STEP).await);
    drop(stream);
    assert!(
        emu.wait_for(STEP, |s| s.kind(Kind::Pod).open_watches == 0)
            .await
    );
}
