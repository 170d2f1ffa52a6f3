//! The emulated etcd: objects per kind, the global resourceVersion counter, the bounded event
//! history that watches resume from, and the list snapshots behind continue tokens.
//!
//! Every mutation goes through [`Store::commit`], so the invariants "one RV bump per write, one
//! history event per RV bump" live in one place (compaction is the only RV bump without an event).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use serde_json::{Map, Value, json};

/// The resource kinds the emulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// core/v1 Pod (`pods`).
    Pod,
    /// core/v1 Secret (`secrets`).
    Secret,
    /// core/v1 ConfigMap (`configmaps`).
    ConfigMap,
}

impl Kind {
    /// Every served kind, in index order.
    pub const ALL: [Kind; 3] = [Kind::Pod, Kind::Secret, Kind::ConfigMap];

    /// The `kind` field value, e.g. `Pod`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
        }
    }

    /// The URL resource name, e.g. `pods`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
        }
    }

    /// The list kind, e.g. `PodList`.
    pub fn list_kind(self) -> &'static str {
        match self {
            Kind::Pod => "PodList",
            Kind::Secret => "SecretList",
            Kind::ConfigMap => "ConfigMapList",
        }
    }

    /// Looks a kind up by its `kind` field value.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Looks a kind up by its URL resource name.
    pub fn from_plural(plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == plural)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A stored object version; its JSON encoding is computed once and shared by every list page and
/// watch stream that sends it, which is what keeps 100k-object lists cheap.
#[derive(Debug)]
pub(crate) struct Obj {
    pub value: Value,
    json: OnceLock<Bytes>,
}

impl Obj {
    pub fn new(value: Value) -> Arc<Obj> {
        Arc::new(Obj {
            value,
            json: OnceLock::new(),
        })
    }

    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.value).unwrap_or_default()))
    }

    pub fn namespace(&self) -> &str {
        self.value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn resource_version(&self) -> &str {
        self.value
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn uid(&self) -> &str {
        self.value
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One history entry. `prev` lets each watcher decide selector transitions (an object that
/// stops matching is a DELETED for that watcher) without consulting the store again.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub kind: Kind,
    pub etype: EventType,
    pub obj: Arc<Obj>,
    pub prev: Option<Arc<Obj>>,
}

/// An API error, rendered as a `Status` object by the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `(name, kind plural)` for `Status.details`, when the error concerns one object.
    pub details: Option<(String, &'static str)>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn not_found(kind: Kind, name: &str) -> Self {
        ApiError {
            details: Some((name.to_string(), kind.plural())),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", kind.plural()),
            )
        }
    }

    pub fn conflict(kind: Kind, name: &str, message: &str) -> Self {
        ApiError {
            details: Some((name.to_string(), kind.plural())),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {message}",
                    kind.plural()
                ),
            )
        }
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// The `Status` object as the apiserver would send it.
    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, kind)) = &self.details {
            v["details"] = json!({"name": name, "kind": kind});
        }
        v
    }
}

/// How a write treats an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Test-control apply: create or replace, always emits an event.
    Apply,
    /// HTTP POST: fails with AlreadyExists.
    Create,
    /// HTTP PUT: fails with NotFound; honours `metadata.resourceVersion` as a precondition.
    Update,
    /// HTTP PUT on `/status`: like Update but only `status` is taken from the input.
    UpdateStatus,
}

/// A consistent list result shared by every page fetched with its continue tokens.
pub(crate) struct Snapshot {
    pub kind: Kind,
    pub rv: u64,
    pub items: Vec<Arc<Obj>>,
}

pub(crate) struct Store {
    rv: u64,
    objects: Vec<BTreeMap<(String, String), Arc<Obj>>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Highest RV whose event has been dropped from history.
    dropped_upto: u64,
    /// New watches from an RV below this answer 410 (raised by [`Store::compact`]).
    compact_floor: u64,
    snapshots: HashMap<u64, Arc<Snapshot>>,
    snapshot_order: VecDeque<u64>,
    snapshot_limit: usize,
    next_snapshot: u64,
}

/// Outcome of positioning a watch against the retained history.
pub(crate) enum Drain {
    /// Events with RV greater than the cursor, in order (possibly empty).
    Events(Vec<Arc<Event>>),
    /// Some event the cursor still needs has been dropped.
    Gone { floor: u64 },
}

impl Store {
    pub fn new(history_limit: usize, snapshot_limit: usize) -> Self {
        Store {
            // Start well above zero so RVs look like real ones and "0" stays special.
            rv: 1000,
            objects: Kind::ALL.iter().map(|_| BTreeMap::new()).collect(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            dropped_upto: 0,
            compact_floor: 0,
            snapshots: HashMap::new(),
            snapshot_order: VecDeque::new(),
            snapshot_limit: snapshot_limit.max(1),
            next_snapshot: 1,
        }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest RV a new watch may start from.
    pub fn watch_floor(&self) -> u64 {
        self.compact_floor.max(self.dropped_upto)
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Arc<Obj>> {
        self.objects[kind.index()].get(&(ns.to_string(), name.to_string()))
    }

    pub fn len(&self, kind: Kind) -> usize {
        self.objects[kind.index()].len()
    }

    /// Objects of `kind` (in one namespace, or all) in (namespace, name) order.
    pub fn iter(&self, kind: Kind, ns: Option<&str>) -> Box<dyn Iterator<Item = &Arc<Obj>> + '_> {
        let map = &self.objects[kind.index()];
        match ns {
            None => Box::new(map.values()),
            Some(ns) => {
                let ns_owned = ns.to_string();
                Box::new(
                    map.range((ns_owned.clone(), String::new())..)
                        .take_while(move |((n, _), _)| *n == ns_owned)
                        .map(|(_, v)| v),
                )
            }
        }
    }

    /// Drops every retained event and makes every RV issued so far too old to watch from.
    ///
    /// The RV is bumped (without an event) so that a list taken right after compaction returns
    /// an RV that is itself watchable; otherwise a re-listing watcher would loop on 410.
    pub fn compact(&mut self) {
        if let Some(last) = self.history.back() {
            self.dropped_upto = self.dropped_upto.max(last.rv);
        }
        self.history.clear();
        self.rv += 1;
        self.compact_floor = self.rv;
        self.snapshots.clear();
        self.snapshot_order.clear();
    }

    /// Events after `cursor`, at most `max`. `live` watches only fail if an event they still
    /// need was dropped; new watches also fail below the compaction floor.
    pub fn drain(&self, cursor: u64, max: usize, live: bool) -> Drain {
        let floor = if live {
            self.dropped_upto
        } else {
            self.watch_floor()
        };
        if cursor < floor {
            return Drain::Gone { floor };
        }
        let start = self.history.partition_point(|e| e.rv <= cursor);
        Drain::Events(self.history.range(start..).take(max).cloned().collect())
    }

    /// Creates or replaces an object. `value` must already carry `metadata.name` and
    /// `metadata.namespace`. Returns the stored version.
    pub fn write(
        &mut self,
        kind: Kind,
        mut value: Value,
        mode: WriteMode,
    ) -> Result<Arc<Obj>, ApiError> {
        let (ns, name) = object_key(&value)?;
        let prev = self.get(kind, &ns, &name).cloned();
        match (&prev, mode) {
            (Some(_), WriteMode::Create) => {
                return Err(ApiError {
                    details: Some((name.clone(), kind.plural())),
                    ..ApiError::new(
                        409,
                        "AlreadyExists",
                        format!("{} \"{name}\" already exists", kind.plural()),
                    )
                });
            }
            (None, WriteMode::Update | WriteMode::UpdateStatus) => {
                return Err(ApiError::not_found(kind, &name));
            }
            _ => {}
        }
        if let Some(prev) = &prev
            && matches!(mode, WriteMode::Update | WriteMode::UpdateStatus)
        {
            check_preconditions(kind, &name, prev, &value)?;
            // Like upstream's BeforeUpdate: omitted system fields are taken from the old object,
            // so an otherwise identical PUT is recognised as a no-op.
            for field in ["uid", "creationTimestamp"] {
                if let (Some(old), Some(meta)) = (
                    prev.value.pointer(&format!("/metadata/{field}")),
                    value.get_mut("metadata").and_then(Value::as_object_mut),
                ) {
                    meta.insert(field.to_string(), old.clone());
                }
            }
            value = if mode == WriteMode::UpdateStatus {
                with_status_from(&prev.value, &value)
            } else {
                without_status_change(kind, &prev.value, value)
            };
            if same_content(&prev.value, &value) {
                return Ok(prev.clone());
            }
        }
        Ok(self.commit(kind, &ns, &name, Some(value), prev))
    }

    /// Applies an already-computed new version of an existing object (PATCH / test update).
    /// Skips the write when nothing changed, as the apiserver does for no-op patches.
    pub fn replace_existing(
        &mut self,
        kind: Kind,
        prev: Arc<Obj>,
        value: Value,
        always: bool,
    ) -> Arc<Obj> {
        if !always && same_content(&prev.value, &value) {
            return prev;
        }
        let ns = prev.namespace().to_string();
        let name = name_of(&prev.value).to_string();
        self.commit(kind, &ns, &name, Some(value), Some(prev))
    }

    pub fn delete(&mut self, kind: Kind, ns: &str, name: &str) -> Option<Arc<Obj>> {
        let prev = self.get(kind, ns, name).cloned()?;
        Some(self.commit(kind, ns, name, None, Some(prev)))
    }

    /// The single place where the RV advances and history grows.
    fn commit(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        new: Option<Value>,
        prev: Option<Arc<Obj>>,
    ) -> Arc<Obj> {
        self.rv += 1;
        let rv = self.rv;
        let key = (ns.to_string(), name.to_string());
        let map = &mut self.objects[kind.index()];
        let (etype, obj) = match new {
            Some(mut value) => {
                stamp(kind, &mut value, prev.as_deref(), rv);
                let obj = Obj::new(value);
                map.insert(key, obj.clone());
                let etype = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (etype, obj)
            }
            None => {
                map.remove(&key);
                // The DELETED event carries the last state with the deletion's RV.
                let mut last = prev
                    .as_ref()
                    .map(|p| p.value.clone())
                    .unwrap_or(Value::Null);
                set_rv(&mut last, rv);
                (EventType::Deleted, Obj::new(last))
            }
        };
        self.history.push_back(Arc::new(Event {
            rv,
            kind,
            etype,
            obj: obj.clone(),
            prev,
        }));
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.dropped_upto = self.dropped_upto.max(old.rv);
            }
        }
        obj
    }

    pub fn put_snapshot(&mut self, snap: Arc<Snapshot>) -> u64 {
        let id = self.next_snapshot;
        self.next_snapshot += 1;
        self.snapshots.insert(id, snap);
        self.snapshot_order.push_back(id);
        while self.snapshot_order.len() > self.snapshot_limit {
            if let Some(old) = self.snapshot_order.pop_front() {
                self.snapshots.remove(&old);
            }
        }
        id
    }

    pub fn snapshot(&self, id: u64) -> Option<Arc<Snapshot>> {
        self.snapshots.get(&id).cloned()
    }
}

fn name_of(v: &Value) -> &str {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `(namespace, name)` of an object; both must be non-empty strings.
pub(crate) fn object_key(v: &Value) -> Result<(String, String), ApiError> {
    let meta = v
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::new(422, "Invalid", "metadata: Required value"))?;
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let ns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "metadata.name: Required value: name or generateName is required",
        ));
    }
    if ns.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            "metadata.namespace: Required value",
        ));
    }
    Ok((ns.to_string(), name.to_string()))
}

fn set_rv(v: &mut Value, rv: u64) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// Sets the server-owned fields: identity is kept from `prev` so replaces keep uid and
/// creationTimestamp, while a (re)creation always gets a fresh uid.
fn stamp(kind: Kind, v: &mut Value, prev: Option<&Obj>, rv: u64) {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v["apiVersion"] = Value::String("v1".into());
    v["kind"] = Value::String(kind.name().into());
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = Value::Object(Map::new());
    }
    let meta = &mut v["metadata"];
    match prev {
        Some(p) => {
            meta["uid"] = Value::String(p.uid().to_string());
            meta["creationTimestamp"] = p
                .value
                .pointer("/metadata/creationTimestamp")
                .cloned()
                .unwrap_or_else(|| Value::String(now_rfc3339()));
        }
        None => {
            meta["uid"] = Value::String(new_uid());
            meta["creationTimestamp"] = Value::String(now_rfc3339());
        }
    }
    meta["resourceVersion"] = Value::String(rv.to_string());
}

fn check_preconditions(kind: Kind, name: &str, prev: &Obj, new: &Value) -> Result<(), ApiError> {
    if let Some(rv) = new
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        && !rv.is_empty()
        && rv != prev.resource_version()
    {
        return Err(ApiError::conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    if let Some(uid) = new.pointer("/metadata/uid").and_then(Value::as_str)
        && !uid.is_empty()
        && uid != prev.uid()
    {
        return Err(ApiError::conflict(
            kind,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                prev.uid()
            ),
        ));
    }
    Ok(())
}

/// Writes to the main Pod resource cannot change `status` (only `/status` can), as upstream.
pub(crate) fn without_status_change(kind: Kind, prev: &Value, mut new: Value) -> Value {
    if kind == Kind::Pod
        && let Some(obj) = new.as_object_mut()
    {
        match prev.get("status") {
            Some(s) => {
                obj.insert("status".into(), s.clone());
            }
            None => {
                obj.remove("status");
            }
        }
    }
    new
}

/// Writes to `/status` change only `status`.
pub(crate) fn with_status_from(prev: &Value, new: &Value) -> Value {
    let mut out = prev.clone();
    if let Some(obj) = out.as_object_mut() {
        match new.get("status") {
            Some(s) => {
                obj.insert("status".into(), s.clone());
            }
            None => {
                obj.remove("status");
            }
        }
    }
    out
}

/// Equal apart from resourceVersion (the field every write rewrites).
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        v
    };
    let (mut a, mut b) = (strip(a), strip(b));
    // Server-set fields may be absent from the client's copy; compare what the client sent.
    for v in [&mut a, &mut b] {
        if let Some(o) = v.as_object_mut() {
            o.remove("apiVersion");
            o.remove("kind");
        }
    }
    a == b
}

/// RFC 7386 JSON merge patch. Strategic-merge directives (`$patch`, `$retainKeys`, ...) are
/// dropped rather than interpreted; lists are replaced wholesale.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if k.starts_with('$') {
                continue;
            }
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Process-unique random bits without a `rand` dependency: a per-process random seed (std's
/// hasher keys) mixed with a counter.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.finish()
    });
    splitmix(seed ^ splitmix(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

pub(crate) fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// The 5-character suffix `generateName` gets upstream (same alphabet, no vowels).
pub(crate) fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
            r /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "labels": {"a": "b"}}})
    }

    #[test]
    fn rv_uid_and_history() {
        let mut s = Store::new(3, 4);
        let a = s.write(Kind::Pod, pod("a"), WriteMode::Apply).unwrap();
        let a2 = s.write(Kind::Pod, pod("a"), WriteMode::Apply).unwrap();
        assert_eq!(a.uid(), a2.uid());
        assert!(
            a2.resource_version().parse::<u64>().unwrap()
                > a.resource_version().parse::<u64>().unwrap()
        );
        let d = s.delete(Kind::Pod, "ns", "a").unwrap();
        assert_eq!(d.resource_version(), s.rv().to_string());
        let a3 = s.write(Kind::Pod, pod("a"), WriteMode::Apply).unwrap();
        assert_ne!(a3.uid(), a.uid());
        // limit 3: the first event was dropped
        let first = a.resource_version().parse::<u64>().unwrap();
        assert!(matches!(s.drain(first - 1, 10, false), Drain::Gone { .. }));
        let Drain::Events(ev) = s.drain(first, 10, false) else {
            panic!()
        };
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[1].etype, EventType::Deleted);
        s.compact();
        assert!(matches!(s.drain(s.rv() - 1, 10, false), Drain::Gone { .. }));
        assert!(matches!(s.drain(s.rv() - 1, 10, true), Drain::Events(_)));
        assert!(matches!(s.drain(s.rv(), 10, false), Drain::Events(v) if v.is_empty()));
    }

    #[test]
    fn create_update_conflicts() {
        let mut s = Store::new(10, 4);
        s.write(Kind::Secret, pod("x"), WriteMode::Create).unwrap();
        assert_eq!(
            s.write(Kind::Secret, pod("x"), WriteMode::Create)
                .unwrap_err()
                .code,
            409
        );
        assert_eq!(
            s.write(Kind::Secret, pod("y"), WriteMode::Update)
                .unwrap_err()
                .code,
            404
        );
        let mut stale = pod("x");
        stale["metadata"]["resourceVersion"] = json!("1");
        assert_eq!(
            s.write(Kind::Secret, stale, WriteMode::Update)
                .unwrap_err()
                .code,
            409
        );
        let rv = s.rv();
        // no-op update does not bump
        s.write(Kind::Secret, pod("x"), WriteMode::Update).unwrap();
        assert_eq!(s.rv(), rv);
    }

    #[test]
    fn merge_patch_semantics() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge_patch(
            &mut t,
            &json!({"a": {"b": null, "d": 3}, "l": [3], "$patch": "x"}),
        );
        assert_eq!(t, json!({"a": {"c": 2, "d": 3}, "l": [3]}));
    }

    #[test]
    fn uids_are_unique_and_shaped() {
        let a = new_uid();
        assert_eq!(a.len(), 36);
        assert_ne!(a, new_uid());
        assert_eq!(name_suffix().len(), 5);
    }
}
