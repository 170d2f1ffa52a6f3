//! HTTP side of the emulator: the accept loop (which owns connection lifetimes so the emulator can
//! drop them to simulate an unreachable apiserver), request routing, and the list / get / create /
//! update / patch / delete handlers. Watch streams live in `watch.rs`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use super::selector::{FieldSelector, LabelSelector};
use super::store::{ApiError, Kind, Obj, Snapshot, Store, WriteMode, merge_patch, name_suffix};
use super::watch::{WatchSpec, start_watch};
use super::{Options, RequestRecord, Stats};

pub(crate) const UP: u8 = 0;
pub(crate) const UNAVAILABLE: u8 = 1;
pub(crate) const UNREACHABLE: u8 = 2;

/// Generation counters broadcast to connection and watch tasks.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Control {
    pub bookmark_gen: u64,
    pub kill_gen: u64,
    pub shutdown: bool,
}

#[derive(Default)]
struct WatchRegistry {
    next_id: u64,
    open: HashMap<u64, (Kind, oneshot::Sender<()>)>,
}

/// State shared by the test-control handle, the accept loop and every request / watch task.
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// Latest committed RV; watch tasks wait on it for new history.
    pub rv_tx: watch::Sender<u64>,
    pub ctrl: watch::Sender<Control>,
    pub stats: watch::Sender<Stats>,
    pub down: AtomicU8,
    pub opts: Options,
    log: Mutex<VecDeque<RequestRecord>>,
    watches: Mutex<WatchRegistry>,
}

impl Shared {
    pub fn new(opts: Options) -> Self {
        let store = Store::new(opts.history_limit, opts.continue_snapshots);
        let rv = store.rv();
        Shared {
            store: Mutex::new(store),
            rv_tx: watch::Sender::new(rv),
            ctrl: watch::Sender::new(Control::default()),
            stats: watch::Sender::new(Stats::default()),
            down: AtomicU8::new(UP),
            opts,
            log: Mutex::new(VecDeque::new()),
            watches: Mutex::new(WatchRegistry::default()),
        }
    }

    /// Runs a mutation and wakes watchers; notifying under the store lock keeps `rv_tx`
    /// monotonic when writers race.
    pub fn mutate<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.store.lock();
        let before = store.rv();
        let out = f(&mut store);
        if store.rv() != before {
            self.rv_tx.send_replace(store.rv());
        }
        out
    }

    pub fn register_watch(&self, kind: Kind) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut reg = self.watches.lock();
        reg.next_id += 1;
        let id = reg.next_id;
        reg.open.insert(id, (kind, tx));
        self.publish_open(&reg);
        (id, rx)
    }

    pub fn unregister_watch(&self, id: u64) {
        let mut reg = self.watches.lock();
        if reg.open.remove(&id).is_some() {
            self.publish_open(&reg);
        }
    }

    /// Signals every open watch to abort; counts drop immediately so a test can wait for the
    /// reconnect without racing the old streams' teardown.
    pub fn cut_watches(&self) {
        let mut reg = self.watches.lock();
        for (_, (_, tx)) in reg.open.drain() {
            let _ = tx.send(());
        }
        self.publish_open(&reg);
    }

    fn publish_open(&self, reg: &WatchRegistry) {
        let mut counts = [0usize; Kind::ALL.len()];
        for (kind, _) in reg.open.values() {
            counts[kind.index()] += 1;
        }
        self.stats.send_if_modified(|s| {
            let mut changed = false;
            for k in Kind::ALL {
                let ks = s.kind_mut(k);
                if ks.open_watches != counts[k.index()] {
                    ks.open_watches = counts[k.index()];
                    changed = true;
                }
            }
            changed
        });
    }

    pub fn kill_connections(&self) {
        self.ctrl.send_modify(|c| c.kill_gen += 1);
    }

    pub fn shutdown(&self) {
        self.ctrl.send_modify(|c| c.shutdown = true);
        self.cut_watches();
    }

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.lock().iter().cloned().collect()
    }

    pub fn clear_requests(&self) {
        self.log.lock().clear();
    }

    fn record(&self, rec: RequestRecord) {
        let mut log = self.log.lock();
        log.push_back(rec);
        while log.len() > self.opts.request_log_limit {
            log.pop_front();
        }
    }
}

/// Accepts connections until shutdown. Each connection task can be killed (socket closed
/// mid-response) via `Control::kill_gen`, which is how "unreachable" drops the client's
/// pooled keep-alive connections.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let router = Router::new().fallback(dispatch).with_state(shared.clone());
    let mut ctrl = shared.ctrl.subscribe();
    loop {
        tokio::select! {
            res = listener.accept() => {
                let Ok((stream, _)) = res else {
                    // Typically EMFILE; back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if shared.down.load(Ordering::SeqCst) == UNREACHABLE {
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, shared.clone(), router.clone()));
            }
            changed = ctrl.changed() => {
                if changed.is_err() || ctrl.borrow_and_update().shutdown {
                    return;
                }
            }
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>, router: Router) {
    let mut ctrl = shared.ctrl.subscribe();
    let start_gen = ctrl.borrow_and_update().kill_gen;
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(
        hyper_util::rt::TokioIo::new(stream),
        hyper_util::service::TowerToHyperService::new(router),
    );
    tokio::pin!(conn);
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = ctrl.changed() => {
                let c = *ctrl.borrow_and_update();
                if changed.is_err() || c.shutdown || c.kill_gen != start_gen {
                    // Dropping the connection future closes the socket without a graceful end.
                    return;
                }
            }
        }
    }
}

/// Query parameters in arrival order (duplicates kept; first wins on lookup).
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

async fn dispatch(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = match Query::<Vec<(String, String)>>::try_from_uri(&uri) {
        Ok(Query(p)) => Ok(Params(p)),
        Err(e) => Err(ApiError::bad_request(format!("invalid query string: {e}"))),
    };
    let query = params.as_ref().map(|p| p.0.clone()).unwrap_or_default();
    sh.stats.send_modify(|s| s.requests += 1);
    let resp = if sh.down.load(Ordering::SeqCst) != UP {
        sh.stats.send_modify(|s| s.rejected += 1);
        error_response(&ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request (emulated outage)",
        ))
    } else {
        match params {
            Ok(p) => route(&sh, &method, uri.path(), &p, &headers, body)
                .await
                .unwrap_or_else(|e| error_response(&e)),
            Err(e) => error_response(&e),
        }
    };
    sh.record(RequestRecord {
        method: method.to_string(),
        path: uri.path().to_string(),
        query,
        status: resp.status().as_u16(),
    });
    resp
}

async fn route(
    sh: &Arc<Shared>,
    method: &Method,
    path: &str,
    p: &Params,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let kind_of = |plural: &str| {
        Kind::from_plural(plural).ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
    };
    let meta_only = wants_partial_metadata(headers);
    match segs.as_slice() {
        ["version"] => Ok(ok_json(version_info())),
        ["healthz" | "readyz" | "livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["api"] => Ok(ok_json(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }))),
        ["apis"] => Ok(ok_json(
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        )),
        ["api", "v1"] => Ok(ok_json(api_resources())),
        ["api", "v1", plural] => {
            let kind = kind_of(plural)?;
            match *method {
                Method::GET => collection_get(sh, kind, None, p, meta_only).await,
                _ => Err(method_not_allowed(method)),
            }
        }
        ["api", "v1", "namespaces", ns, plural] => {
            let kind = kind_of(plural)?;
            match *method {
                Method::GET => collection_get(sh, kind, Some(ns), p, meta_only).await,
                Method::POST => create(sh, kind, ns, &body, meta_only),
                _ => Err(method_not_allowed(method)),
            }
        }
        ["api", "v1", "namespaces", ns, plural, name] => item(
            sh,
            kind_of(plural)?,
            ns,
            name,
            false,
            method,
            headers,
            &body,
            meta_only,
        ),
        ["api", "v1", "namespaces", ns, plural, name, "status"] => item(
            sh,
            kind_of(plural)?,
            ns,
            name,
            true,
            method,
            headers,
            &body,
            meta_only,
        ),
        _ => Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    }
}

fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource ({method})"),
    )
}

fn wants_partial_metadata(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=PartialObjectMetadata"))
}

/// The object as sent on the wire; `PartialObjectMetadata` is what kube's metadata watcher asks
/// for via its Accept header.
pub(crate) fn render_obj(obj: &Obj, meta_only: bool) -> Bytes {
    if meta_only {
        let v = json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.value.get("metadata").cloned().unwrap_or(Value::Null),
        });
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    } else {
        obj.json().clone()
    }
}

fn ok_json(v: Value) -> Response {
    json_response(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
    )
}

fn json_response(code: StatusCode, body: Bytes) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(crate) fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(
        code,
        Bytes::from(serde_json::to_vec(&e.status()).unwrap_or_default()),
    )
}

fn parse_selectors(p: &Params) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(p.get("labelSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(p.get("fieldSelector").unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

async fn collection_get(
    sh: &Arc<Shared>,
    kind: Kind,
    ns: Option<&str>,
    p: &Params,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let (labels, fields) = parse_selectors(p)?;
    if p.flag("watch") {
        sh.stats.send_modify(|s| s.kind_mut(kind).watches += 1);
        let rv = match p.get("resourceVersion") {
            None | Some("") | Some("0") => None,
            Some(rv) => Some(parse_rv(rv)?),
        };
        let send_initial = match p.get("sendInitialEvents") {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        let timeout = match p.get("timeoutSeconds") {
            Some(t) => t
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
            None => 0,
        };
        let spec = WatchSpec {
            kind,
            ns: ns.map(str::to_string),
            labels,
            fields,
            start: rv,
            // Upstream: an unset/"0" RV without sendInitialEvents=false replays current state
            // as synthetic ADDED events ("get state and start at most recent").
            initial_events: send_initial.unwrap_or(rv.is_none()),
            initial_end_bookmark: send_initial == Some(true),
            bookmarks: p.flag("allowWatchBookmarks"),
            // Upstream picks a random 30-60 min timeout when none is given.
            timeout: Duration::from_secs(if timeout == 0 { 1800 } else { timeout }),
            meta_only,
        };
        return Ok(start_watch(sh.clone(), spec));
    }
    sh.stats.send_modify(|s| s.kind_mut(kind).lists += 1);
    list(sh, kind, ns, p, &labels, &fields, meta_only).await
}

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.";

async fn list(
    sh: &Arc<Shared>,
    kind: Kind,
    ns: Option<&str>,
    p: &Params,
    labels: &LabelSelector,
    fields: &FieldSelector,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let limit = match p.get("limit") {
        None | Some("") => None,
        Some(l) => match l.parse::<usize>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => return Err(ApiError::bad_request(format!("invalid limit: {l:?}"))),
        },
    };

    let (snapshot, offset) = if let Some(token) = p.get("continue").filter(|t| !t.is_empty()) {
        let (_rv, id, offset) = parse_continue(token)?;
        let snap = sh
            .store
            .lock()
            .snapshot(id)
            .ok_or_else(|| ApiError::gone(CONTINUE_EXPIRED))?;
        if snap.kind != kind {
            return Err(ApiError::bad_request(
                "continue token is for another resource",
            ));
        }
        (snap, offset)
    } else {
        let rv_param = p
            .get("resourceVersion")
            .filter(|r| !r.is_empty() && *r != "0");
        if let Some(rv) = rv_param {
            let want = parse_rv(rv)?;
            let exact = p.get("resourceVersionMatch") == Some("Exact");
            wait_for_rv(sh, want).await?;
            let store = sh.store.lock();
            // Only the current state is kept, so an exact read of an older RV cannot be served.
            if exact && want != store.rv() {
                return Err(ApiError::gone(format!(
                    "too old resource version: {want} ({})",
                    store.rv()
                )));
            }
        }
        let store = sh.store.lock();
        let items: Vec<Arc<Obj>> = store
            .iter(kind, ns)
            .filter(|o| labels.matches(&o.value) && fields.matches(&o.value))
            .cloned()
            .collect();
        (
            Arc::new(Snapshot {
                kind,
                rv: store.rv(),
                items,
            }),
            0,
        )
    };

    let total = snapshot.items.len();
    let offset = offset.min(total);
    let end = limit.map_or(total, |l| offset.saturating_add(l).min(total));
    let mut meta = json!({"resourceVersion": snapshot.rv.to_string()});
    if end < total {
        // Later pages are served from the same snapshot, so pages are mutually consistent.
        let id = {
            let mut store = sh.store.lock();
            match parse_continue(p.get("continue").unwrap_or("")) {
                Ok((_, id, _)) if store.snapshot(id).is_some() => id,
                _ => store.put_snapshot(snapshot.clone()),
            }
        };
        meta["continue"] = json!(format!("{}.{id}.{end}", snapshot.rv));
        meta["remainingItemCount"] = json!(total - end);
    }
    let page = &snapshot.items[offset..end];

    let mut buf = Vec::with_capacity(64 + page.iter().map(|o| o.json().len() + 1).sum::<usize>());
    let (list_kind, api_version) = if meta_only {
        ("PartialObjectMetadataList", "meta.k8s.io/v1")
    } else {
        (kind.list_kind(), "v1")
    };
    buf.extend_from_slice(
        format!("{{\"kind\":\"{list_kind}\",\"apiVersion\":\"{api_version}\",\"metadata\":")
            .as_bytes(),
    );
    buf.extend_from_slice(&serde_json::to_vec(&meta).unwrap_or_default());
    buf.extend_from_slice(b",\"items\":[");
    for (i, o) in page.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(&render_obj(o, meta_only));
    }
    buf.extend_from_slice(b"]}");
    Ok(json_response(StatusCode::OK, Bytes::from(buf)))
}

fn parse_continue(token: &str) -> Result<(u64, u64, usize), ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token: {token:?}"));
    let mut parts = token.split('.');
    let (Some(rv), Some(id), Some(off), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok((
        rv.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
        off.parse().map_err(|_| bad())?,
    ))
}

/// A read at an RV the store has not reached waits briefly, then fails like upstream's
/// "Too large resource version".
async fn wait_for_rv(sh: &Arc<Shared>, want: u64) -> Result<(), ApiError> {
    let mut rx = sh.rv_tx.subscribe();
    let reached = tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|rv| *rv >= want)).await;
    match reached {
        Ok(Ok(_)) => Ok(()),
        _ => {
            let cur = *sh.rv_tx.borrow();
            Err(ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {want}, current: {cur}"),
            ))
        }
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("request body must be a JSON object"));
    }
    Ok(v)
}

/// Validates the body's kind and namespace against the URL, filling the namespace in.
fn check_body_identity(kind: Kind, ns: &str, v: &mut Value) -> Result<(), ApiError> {
    if let Some(k) = v.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != kind.name()
    {
        return Err(ApiError::bad_request(format!(
            "the kind of the provided object ({k}) does not match the resource ({})",
            kind.plural()
        )));
    }
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    let meta = &mut v["metadata"];
    match meta.get("namespace").and_then(Value::as_str) {
        Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => meta["namespace"] = json!(ns),
    }
    Ok(())
}

fn create(
    sh: &Arc<Shared>,
    kind: Kind,
    ns: &str,
    body: &Bytes,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let mut v = parse_body(body)?;
    check_body_identity(kind, ns, &mut v)?;
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let generate = v
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    // Server-owned fields from the client are ignored on create.
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("uid");
        meta.remove("creationTimestamp");
    }
    let obj = sh.mutate(|store| {
        if !name.is_empty() || generate.is_empty() {
            return store.write(kind, v, WriteMode::Create);
        }
        // Retry the random suffix on collision like upstream's name generator does.
        let mut last_err = None;
        for _ in 0..8 {
            let mut candidate = v.clone();
            candidate["metadata"]["name"] = json!(format!("{generate}{}", name_suffix()));
            match store.write(kind, candidate, WriteMode::Create) {
                Ok(o) => return Ok(o),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err
            .unwrap_or_else(|| ApiError::new(500, "InternalError", "name generation failed")))
    })?;
    sh.stats.send_modify(|s| s.kind_mut(kind).writes += 1);
    Ok(json_response(
        StatusCode::CREATED,
        render_obj(&obj, meta_only),
    ))
}

#[allow(clippy::too_many_arguments)]
fn item(
    sh: &Arc<Shared>,
    kind: Kind,
    ns: &str,
    name: &str,
    status: bool,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let obj = match *method {
        Method::GET => {
            sh.stats.send_modify(|s| s.kind_mut(kind).gets += 1);
            sh.store
                .lock()
                .get(kind, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(kind, name))?
        }
        Method::PATCH => {
            let obj = patch(sh, kind, ns, name, status, headers, body)?;
            sh.stats.send_modify(|s| s.kind_mut(kind).writes += 1);
            obj
        }
        Method::PUT => {
            let mut v = parse_body(body)?;
            check_body_identity(kind, ns, &mut v)?;
            match v.pointer("/metadata/name").and_then(Value::as_str) {
                Some(n) if n == name => {}
                Some("") | None => v["metadata"]["name"] = json!(name),
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the name of the object does not match the name on the URL",
                    ));
                }
            }
            let mode = if status {
                WriteMode::UpdateStatus
            } else {
                WriteMode::Update
            };
            let obj = sh.mutate(|store| store.write(kind, v, mode))?;
            sh.stats.send_modify(|s| s.kind_mut(kind).writes += 1);
            obj
        }
        Method::DELETE if !status => {
            let obj = delete(sh, kind, ns, name, body)?;
            sh.stats.send_modify(|s| s.kind_mut(kind).writes += 1);
            obj
        }
        _ => return Err(method_not_allowed(method)),
    };
    Ok(json_response(StatusCode::OK, render_obj(&obj, meta_only)))
}

fn patch(
    sh: &Arc<Shared>,
    kind: Kind,
    ns: &str,
    name: &str,
    status: bool,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Arc<Obj>, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ctype.as_str() {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {}
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format ({other}); the emulator accepts application/merge-patch+json and application/strategic-merge-patch+json"
                ),
            ));
        }
    }
    let patch = parse_body(body)?;
    sh.mutate(|store| {
        let prev = store
            .get(kind, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        for (field, current) in [
            ("resourceVersion", prev.resource_version()),
            ("uid", prev.uid()),
        ] {
            if let Some(want) = patch
                .get("metadata")
                .and_then(|m| m.get(field))
                .and_then(Value::as_str)
                && !want.is_empty()
                && want != current
            {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        let mut next = prev.value.clone();
        merge_patch(&mut next, &patch);
        // Identity is immutable through PATCH.
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            if let Some(v) = prev.value.pointer(&format!("/metadata/{field}")) {
                next["metadata"][field] = v.clone();
            }
        }
        let next = if status {
            super::store::with_status_from(&prev.value, &next)
        } else {
            super::store::without_status_change(kind, &prev.value, next)
        };
        Ok(store.replace_existing(kind, prev, next, false))
    })
}

fn delete(
    sh: &Arc<Shared>,
    kind: Kind,
    ns: &str,
    name: &str,
    body: &Bytes,
) -> Result<Arc<Obj>, ApiError> {
    // DeleteOptions is optional; only preconditions matter here.
    let opts: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    sh.mutate(|store| {
        let prev = store
            .get(kind, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind, name))?;
        if let Some(pre) = opts.get("preconditions") {
            for (field, current) in [
                ("uid", prev.uid()),
                ("resourceVersion", prev.resource_version()),
            ] {
                if let Some(want) = pre.get(field).and_then(Value::as_str)
                    && want != current
                {
                    return Err(ApiError::conflict(
                        kind,
                        name,
                        &format!(
                            "Precondition failed: {field} in precondition: {want}, {field} in object meta: {current}"
                        ),
                    ));
                }
            }
        }
        store
            .delete(kind, ns, name)
            .ok_or_else(|| ApiError::not_found(kind, name))
    })
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-sandgate-emulator",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_resources() -> Value {
    let resources: Vec<Value> = Kind::ALL
        .iter()
        .flat_map(|k| {
            [
                json!({
                    "name": k.plural(),
                    "singularName": k.name().to_ascii_lowercase(),
                    "namespaced": true,
                    "kind": k.name(),
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }),
                json!({
                    "name": format!("{}/status", k.plural()),
                    "singularName": "",
                    "namespaced": true,
                    "kind": k.name(),
                    "verbs": ["get", "patch", "update"],
                }),
            ]
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": resources})
}

/// Builds a streaming 200 response whose body is fed by `rx`; an `Err` item aborts the
/// connection mid-body, which is how watches are cut "abruptly".
pub(crate) fn stream_response(
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> Response {
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache, private"),
        ],
        body,
    )
        .into_response()
}
