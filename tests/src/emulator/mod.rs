//! Kubernetes API-server emulator for core/v1 Pods, Secrets and ConfigMaps.
//!
//! This module owns a small in-process apiserver that speaks the real wire protocol (JSON over
//! HTTP/1.1, chunked watch streams, `Status` errors) closely enough that the unmodified kube-rs
//! client and `kube::runtime::watcher` run against it through a kubeconfig. It exists because
//! no real kube-apiserver can run on the test machines.
//!
//! What it models, and why each piece is there:
//! * one global resourceVersion counter (as etcd's revision) bumped by every write, with uid /
//!   creationTimestamp assigned on creation, so watchers can resume and detect re-creation;
//! * list with label/field selectors, `limit` + `continue` pagination served from a consistent
//!   snapshot, and `resourceVersion`/`resourceVersionMatch`;
//! * watch with history replay from a resourceVersion, live events, selector transitions
//!   (ADDED/DELETED when an object starts/stops matching), periodic BOOKMARKs, `timeoutSeconds`,
//!   streaming lists (`sendInitialEvents`), and the 410 "too old resource version" ERROR event
//!   after compaction, which is what drives kube-rs through a re-list;
//! * PATCH (JSON merge / strategic-as-merge), PUT, POST, DELETE with optimistic concurrency;
//! * fault injection for tests: cut every watch, compact history, answer 503, or drop every
//!   connection.
//!
//! Tests drive it through [`Emulator`]; see `tests/tests/emulator.rs` for usage.

mod selector;
mod server;
mod store;
mod watch;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

pub use selector::{FieldSelector, LabelSelector};
pub(crate) use store::random_u64;
pub use store::{ApiError, Kind};

use server::Shared;
use store::WriteMode;

/// Tunables; the defaults suit behaviour tests.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often open watches that allow bookmarks get a BOOKMARK; `None` sends them only on
    /// [`Emulator::send_bookmarks`].
    pub bookmark_interval: Option<Duration>,
    /// Events retained for resuming watches; older ones are dropped like etcd compaction.
    pub history_limit: usize,
    /// Request log entries kept for [`Emulator::requests`].
    pub request_log_limit: usize,
    /// Paginated list snapshots kept alive for their continue tokens; an evicted token gets 410.
    pub continue_snapshots: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bookmark_interval: Some(Duration::from_secs(1)),
            history_limit: 10_000,
            request_log_limit: 10_000,
            continue_snapshots: 256,
        }
    }
}

/// Per-kind request and watch counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindStats {
    /// List requests served (not counting 503s while down).
    pub lists: u64,
    /// Watch requests served.
    pub watches: u64,
    /// Watch streams open right now.
    pub open_watches: usize,
    /// Single-object GETs served.
    pub gets: u64,
    /// Successful HTTP writes (POST, PUT, PATCH, DELETE); test-control writes are not counted.
    pub writes: u64,
}

/// Counters observable by tests, e.g. through [`Emulator::wait_for`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every HTTP request received.
    pub requests: u64,
    /// Requests answered 503 because the emulator was down.
    pub rejected: u64,
    kinds: [KindStats; Kind::ALL.len()],
}

impl Stats {
    /// Counters for one kind.
    pub fn kind(&self, kind: Kind) -> &KindStats {
        &self.kinds[kind.index()]
    }

    pub(crate) fn kind_mut(&mut self, kind: Kind) -> &mut KindStats {
        &mut self.kinds[kind.index()]
    }
}

/// One served HTTP request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// URL path, e.g. `/api/v1/namespaces/default/pods`.
    pub path: String,
    /// Decoded query parameters in order.
    pub query: Vec<(String, String)>,
    /// Response status code (200 for watches, even those that end with an ERROR event).
    pub status: u16,
}

impl RequestRecord {
    /// First value of a query parameter.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this was a watch request.
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true" | "1"))
    }
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.shutdown();
    }
}

/// Handle to a running emulator. Cheap to clone; the server stops when the last clone is
/// dropped or [`Emulator::shutdown`] is called.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl Emulator {
    /// Starts an emulator with default [`Options`] on 127.0.0.1 with a random port, serving on
    /// the current tokio runtime.
    ///
    /// # Panics
    /// If no local port can be bound.
    pub async fn start() -> Emulator {
        Self::start_with(Options::default()).await
    }

    /// Starts an emulator with the given options.
    ///
    /// # Panics
    /// If no local port can be bound.
    pub async fn start_with(opts: Options) -> Emulator {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("emulator: bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("emulator: local address of bound listener");
        let shared = Arc::new(Shared::new(opts));
        tokio::spawn(server::serve(listener, shared.clone()));
        Emulator {
            inner: Arc::new(Inner { shared, addr }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// A kubeconfig pointing at this emulator: context `emulator`, namespace `default`, and a
    /// dummy bearer token (the emulator does not authenticate).
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: emulator
  cluster:
    server: {url}
contexts:
- name: emulator
  context:
    cluster: emulator
    user: emulator
    namespace: default
current-context: emulator
users:
- name: emulator
  user:
    token: emulator-dummy-token
preferences: {{}}
",
            url = self.url()
        )
    }

    /// Writes [`Self::kubeconfig_yaml`] to `dir/kubeconfig` and returns the path.
    ///
    /// # Panics
    /// If the file cannot be written.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(&path, self.kubeconfig_yaml())
            .unwrap_or_else(|e| panic!("emulator: write {}: {e}", path.display()));
        path
    }

    /// A real kube client configured from this emulator's kubeconfig.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig_yaml())?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Stops accepting connections, closes open ones and ends every watch.
    pub fn shutdown(&self) {
        self.shared().shutdown();
    }

    // ---- objects -------------------------------------------------------------------------

    /// Creates or replaces the object named by its `kind`, `metadata.namespace` (default
    /// `default`) and `metadata.name`; returns the new resourceVersion. A replace keeps uid and
    /// creationTimestamp and emits MODIFIED (even if nothing changed); a create emits ADDED.
    ///
    /// # Panics
    /// On an unsupported kind or a missing name; use [`Self::try_apply`] to get the error.
    pub fn apply(&self, obj: Value) -> String {
        self.try_apply(obj)
            .unwrap_or_else(|e| panic!("emulator: apply: {}", e.message))
    }

    /// Like [`Self::apply`] but returns the error instead of panicking.
    pub fn try_apply(&self, mut obj: Value) -> Result<String, ApiError> {
        let kind_name = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let kind = Kind::from_name(kind_name)
            .ok_or_else(|| ApiError::bad_request(format!("unsupported kind {kind_name:?}")))?;
        if !obj.is_object() || !obj.get("metadata").is_some_and(Value::is_object) {
            return Err(ApiError::bad_request("object needs a metadata map"));
        }
        if obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            obj["metadata"]["namespace"] = json!("default");
        }
        let stored = self
            .shared()
            .mutate(|s| s.write(kind, obj, WriteMode::Apply))?;
        Ok(stored.resource_version().to_string())
    }

    /// Applies any serialisable object (e.g. a `k8s_openapi` `Pod`).
    ///
    /// # Panics
    /// As [`Self::apply`], or if `obj` does not serialise.
    pub fn apply_object<K: serde::Serialize>(&self, obj: &K) -> String {
        self.apply(serde_json::to_value(obj).expect("emulator: serialise object"))
    }

    /// Applies [`pod`]`(ns, name, labels)`.
    pub fn apply_pod(&self, ns: &str, name: &str, labels: &[(&str, &str)]) -> String {
        self.apply(pod(ns, name, labels))
    }

    /// Applies [`secret`]`(ns, name, labels, data)`.
    pub fn apply_secret(
        &self,
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        data: &[(&str, &[u8])],
    ) -> String {
        self.apply(secret(ns, name, labels, data))
    }

    /// Edits a stored object in place; returns the new resourceVersion, or `None` if absent.
    /// Always emits MODIFIED. Identity fields (`metadata.name/namespace/uid`) are restored
    /// after `f` runs.
    pub fn update(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Option<String> {
        self.shared().mutate(|s| {
            let prev = s.get(kind, ns, name)?.clone();
            let mut next = prev.value.clone();
            f(&mut next);
            for field in ["name", "namespace", "uid"] {
                if let Some(v) = prev.value.pointer(&format!("/metadata/{field}")) {
                    next["metadata"][field] = v.clone();
                }
            }
            Some(
                s.replace_existing(kind, prev, next, true)
                    .resource_version()
                    .to_string(),
            )
        })
    }

    /// Deletes an object (emitting DELETED); `false` if it did not exist.
    pub fn delete(&self, kind: Kind, ns: &str, name: &str) -> bool {
        self.shared().mutate(|s| s.delete(kind, ns, name).is_some())
    }

    /// The stored object.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        self.shared()
            .store
            .lock()
            .get(kind, ns, name)
            .map(|o| o.value.clone())
    }

    /// Every stored object of `kind`, ordered by (namespace, name).
    pub fn list(&self, kind: Kind) -> Vec<Value> {
        self.shared()
            .store
            .lock()
            .iter(kind, None)
            .map(|o| o.value.clone())
            .collect()
    }

    /// Number of stored objects of `kind`.
    pub fn count(&self, kind: Kind) -> usize {
        self.shared().store.lock().len(kind)
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared().store.lock().rv()
    }

    // ---- fault injection -----------------------------------------------------------------

    /// Abruptly ends every open watch stream (the connection is aborted mid-body, as when an
    /// apiserver dies). Clients resume from their last resourceVersion.
    pub fn cut_watches(&self) {
        self.shared().cut_watches();
    }

    /// Drops all retained history and makes every resourceVersion issued so far too old to
    /// watch from: a watch (re)started from one gets a 410 ERROR event. Open watches keep
    /// streaming; combine with [`Self::cut_watches`] to force clients through a re-list.
    pub fn compact(&self) {
        self.shared().mutate(|s| s.compact());
    }

    /// While down, every request is answered 503 (Status reason `ServiceUnavailable`) and open
    /// watches are cut when going down. Note kube's client retries 503s internally with backoff.
    pub fn set_down(&self, down: bool) {
        self.set_mode(if down {
            server::UNAVAILABLE
        } else {
            server::UP
        });
    }

    /// While unreachable, every connection (including pooled keep-alive ones and open watches)
    /// is closed and new ones are closed right after accept, so clients see transport errors.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.set_mode(if unreachable {
            server::UNREACHABLE
        } else {
            server::UP
        });
    }

    fn set_mode(&self, mode: u8) {
        let sh = self.shared();
        sh.down.store(mode, Ordering::SeqCst);
        match mode {
            server::UNAVAILABLE => sh.cut_watches(),
            server::UNREACHABLE => {
                sh.cut_watches();
                sh.kill_connections();
            }
            _ => {}
        }
    }

    /// Sends a BOOKMARK now on every open watch that allows bookmarks.
    pub fn send_bookmarks(&self) {
        self.shared().ctrl.send_modify(|c| c.bookmark_gen += 1);
    }

    // ---- observability -------------------------------------------------------------------

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.shared().stats.borrow().clone()
    }

    /// Waits until `pred` holds for the counters; `false` on timeout.
    pub async fn wait_for(&self, timeout: Duration, pred: impl FnMut(&Stats) -> bool) -> bool {
        let mut rx = self.shared().stats.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(pred)).await,
            Ok(Ok(_))
        )
    }

    /// Waits until at least `n` watches of `kind` are open; `false` on timeout.
    pub async fn wait_for_watchers(&self, kind: Kind, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.kind(kind).open_watches >= n)
            .await
    }

    /// Waits until at least `n` watch requests of `kind` have been served in total.
    pub async fn wait_for_watch_requests(&self, kind: Kind, n: u64, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.kind(kind).watches >= n).await
    }

    /// Waits until at least `n` list requests of `kind` have been served in total.
    pub async fn wait_for_list_requests(&self, kind: Kind, n: u64, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.kind(kind).lists >= n).await
    }

    /// The most recent requests (bounded by [`Options::request_log_limit`]), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared().requests()
    }

    /// Empties the request log (counters are kept).
    pub fn clear_requests(&self) {
        self.shared().clear_requests();
    }
}

fn labels_map(labels: &[(&str, &str)]) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

/// A minimal Pod manifest with one container.
pub fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels_map(labels)},
        "spec": {"containers": [{"name": "main", "image": "sandbox:latest"}]},
    })
}

/// A ConfigMap manifest with string `data`.
pub fn config_map(ns: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    })
}

/// A minimal Opaque Secret manifest; `data` values are base64-encoded as on the wire.
pub fn secret(ns: &str, name: &str, labels: &[(&str, &str)], data: &[(&str, &[u8])]) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let encoded =
                serde_json::to_value(k8s_openapi::ByteString(v.to_vec())).unwrap_or(Value::Null);
            (k.to_string(), encoded)
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": ns, "labels": labels_map(labels)},
        "data": data,
    })
}
