//! Watch streams: one task per open watch that replays retained history after the requested
//! resourceVersion, then follows live writes, writing one JSON `WatchEvent` per line.
//!
//! The task reads history through a cursor rather than subscribing to a broadcast, so replay and
//! live delivery are the same code path and a watcher can never miss an event between the two.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::selector::{FieldSelector, LabelSelector};
use super::server::{Shared, render_obj, stream_response};
use super::store::{Drain, Event, EventType, Kind, Obj};

/// Events copied out of the history per lock acquisition, so one busy watcher cannot hold the
/// store lock for long.
const DRAIN_BATCH: usize = 512;

pub(crate) struct WatchSpec {
    pub kind: Kind,
    pub ns: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None` means "now" (resourceVersion unset or "0").
    pub start: Option<u64>,
    /// Send the current state as synthetic ADDED events first.
    pub initial_events: bool,
    /// Follow the initial events with the `k8s.io/initial-events-end` bookmark (streaming lists).
    pub initial_end_bookmark: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub meta_only: bool,
}

impl WatchSpec {
    fn matches(&self, v: &Value) -> bool {
        if let Some(ns) = &self.ns
            && v.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        self.labels.matches(v) && self.fields.matches(v)
    }

    fn line(&self, etype: &str, obj: &Obj) -> Bytes {
        let body = render_obj(obj, self.meta_only);
        let mut buf = Vec::with_capacity(body.len() + 32);
        buf.extend_from_slice(b"{\"type\":\"");
        buf.extend_from_slice(etype.as_bytes());
        buf.extend_from_slice(b"\",\"object\":");
        buf.extend_from_slice(&body);
        buf.extend_from_slice(b"}\n");
        Bytes::from(buf)
    }

    /// What this watcher sees for a history event. Selector transitions follow the apiserver's
    /// watch cache: starting to match is ADDED, ceasing to match is DELETED carrying the previous
    /// content at the event's RV.
    fn render(&self, ev: &Event) -> Option<Bytes> {
        if ev.kind != self.kind {
            return None;
        }
        let now = self.matches(&ev.obj.value);
        match ev.etype {
            EventType::Added => now.then(|| self.line("ADDED", &ev.obj)),
            EventType::Deleted => now.then(|| self.line("DELETED", &ev.obj)),
            EventType::Modified => {
                let before = ev.prev.as_ref().is_some_and(|p| self.matches(&p.value));
                match (before, now) {
                    (true, true) => Some(self.line("MODIFIED", &ev.obj)),
                    (false, true) => Some(self.line("ADDED", &ev.obj)),
                    (true, false) => {
                        let mut last = ev.prev.as_ref()?.value.clone();
                        last["metadata"]["resourceVersion"] = json!(ev.rv.to_string());
                        Some(self.line("DELETED", &Obj::new(last)))
                    }
                    (false, false) => None,
                }
            }
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let (kind, api_version) = if self.meta_only {
            ("PartialObjectMetadata", "meta.k8s.io/v1")
        } else {
            (self.kind.name(), "v1")
        };
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let ev = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}});
        let mut buf = serde_json::to_vec(&ev).unwrap_or_default();
        buf.push(b'\n');
        Bytes::from(buf)
    }
}

/// The ERROR event a real apiserver sends when a watch cannot resume (kube-rs re-lists on it).
fn gone_line(rv: u64, floor: u64) -> Bytes {
    let ev = json!({
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {rv} ({floor})"),
            "reason": "Expired",
            "code": 410,
        }
    });
    let mut buf = serde_json::to_vec(&ev).unwrap_or_default();
    buf.push(b'\n');
    Bytes::from(buf)
}

/// Registers the watch and returns the streaming response; the stream is fed by a task.
pub(crate) fn start_watch(sh: Arc<Shared>, spec: WatchSpec) -> Response {
    let (id, cut) = sh.register_watch(spec.kind);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let _guard = Registered { sh: sh.clone(), id };
        run(&sh, &spec, cut, tx).await;
    });
    stream_response(rx)
}

struct Registered {
    sh: Arc<Shared>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.sh.unregister_watch(self.id);
    }
}

type Tx = mpsc::Sender<Result<Bytes, io::Error>>;

async fn run(sh: &Shared, spec: &WatchSpec, mut cut: tokio::sync::oneshot::Receiver<()>, tx: Tx) {
    // Subscribe before reading the store so no write between the two goes unnoticed.
    let mut rv_rx = sh.rv_tx.subscribe();
    rv_rx.borrow_and_update();
    let mut ctrl = sh.ctrl.subscribe();
    let mut bookmark_gen = ctrl.borrow_and_update().bookmark_gen;
    let deadline = Instant::now() + spec.timeout;

    // The store guard must not live across an await, hence the two-step start.
    let start = {
        let store = sh.store.lock();
        match spec.start {
            Some(rv) if !spec.initial_events => {
                let floor = store.watch_floor();
                if rv < floor {
                    Err((rv, floor))
                } else {
                    Ok((rv, Vec::new()))
                }
            }
            _ => {
                let initial: Vec<Arc<Obj>> = if spec.initial_events {
                    store
                        .iter(spec.kind, spec.ns.as_deref())
                        .filter(|o| spec.matches(&o.value))
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                };
                Ok((store.rv(), initial))
            }
        }
    };
    let (mut cursor, initial) = match start {
        Ok(start) => start,
        Err((rv, floor)) => {
            let _ = tx.send(Ok(gone_line(rv, floor))).await;
            return;
        }
    };
    for obj in &initial {
        if tx.send(Ok(spec.line("ADDED", obj))).await.is_err() {
            return;
        }
    }
    drop(initial);
    if spec.initial_end_bookmark && tx.send(Ok(spec.bookmark(cursor, true))).await.is_err() {
        return;
    }

    let interval = sh.opts.bookmark_interval.filter(|_| spec.bookmarks);
    let mut next_bookmark = interval.map(|i| Instant::now() + i);

    loop {
        // A cut requested before a write must win over delivering that write, or a test that
        // cuts and then writes could see the event on the dying stream.
        if cut.try_recv().is_ok() {
            let _ = tx
                .send(Err(io::Error::other("watch cut by emulator")))
                .await;
            return;
        }
        let drained = sh.store.lock().drain(cursor, DRAIN_BATCH, true);
        match drained {
            Drain::Gone { floor } => {
                let _ = tx.send(Ok(gone_line(cursor, floor))).await;
                return;
            }
            Drain::Events(events) if !events.is_empty() => {
                for ev in &events {
                    cursor = ev.rv;
                    if let Some(line) = spec.render(ev)
                        && tx.send(Ok(line)).await.is_err()
                    {
                        return;
                    }
                }
                continue;
            }
            Drain::Events(_) => {}
        }

        let bookmark_at = next_bookmark.unwrap_or(deadline);
        tokio::select! {
            biased;
            _ = &mut cut => {
                // An Err body frame makes hyper abort the connection mid-chunk, as a dying
                // apiserver would; kube-rs treats that as a resumable end of stream.
                let _ = tx.send(Err(io::Error::other("watch cut by emulator"))).await;
                return;
            }
            _ = tx.closed() => return,
            _ = tokio::time::sleep_until(deadline) => return,
            changed = ctrl.changed() => {
                let c = *ctrl.borrow_and_update();
                if changed.is_err() || c.shutdown {
                    return;
                }
                if c.bookmark_gen != bookmark_gen {
                    bookmark_gen = c.bookmark_gen;
                    if spec.bookmarks && tx.send(Ok(spec.bookmark(cursor, false))).await.is_err() {
                        return;
                    }
                }
            }
            _ = tokio::time::sleep_until(bookmark_at), if next_bookmark.is_some() => {
                next_bookmark = interval.map(|i| Instant::now() + i);
                if tx.send(Ok(spec.bookmark(cursor, false))).await.is_err() {
                    return;
                }
            }
            changed = rv_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                rv_rx.borrow_and_update();
            }
        }
    }
}
