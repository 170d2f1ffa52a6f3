//! Live Pod state: a compact projection of every sandbox Pod, indexed by name, by sandbox id and by IP.
//!
//! Owns the [`PodStore`] and the rule of what a Pod looks like to routing ([`PodView`]). Both Pod
//! sources — the Kubernetes informer ([`kube`]) and the static inventory file ([`inventory`]) —
//! feed it through the same projection, so the decision code cannot tell them apart. It may not
//! decide anything: whether a Pod is routable for a request is the decision module's rule.

pub mod annotate;
pub mod inventory;
pub mod kube;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::generation::Generations;

/// Label and annotation keys routing reads. Defaults match the agentbox controller.
#[derive(Debug, Clone)]
pub struct PodKeys {
    pub sandbox_id_label: String,
    pub phase_label: String,
    pub last_active_annotation: String,
    pub armed_annotation: String,
    /// The sandbox's idle timeout in whole seconds, as the agentbox API server writes it at
    /// claim time; it paces the last-active writes (see [`annotate`]).
    pub idle_timeout_annotation: String,
}

impl Default for PodKeys {
    fn default() -> Self {
        PodKeys {
            sandbox_id_label: "agentbox.navix.sh/sandbox-id".into(),
            phase_label: "agentbox.navix.sh/sandbox-phase".into(),
            last_active_annotation: "agentbox.navix.sh/last-active".into(),
            armed_annotation: "agentbox.navix.sh/sandbox-armed".into(),
            idle_timeout_annotation: "agentbox.navix.sh/idle-timeout".into(),
        }
    }
}

/// The sandbox lifecycle phase, from the phase label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    Starting,
    Running,
    Stopping,
    Failed,
    /// Missing or unrecognised label value: never routable.
    Unknown,
}

impl Phase {
    pub fn parse(value: Option<&str>) -> Phase {
        match value {
            Some("idle") => Phase::Idle,
            Some("starting") => Phase::Starting,
            Some("running") => Phase::Running,
            Some("stopping") => Phase::Stopping,
            Some("failed") => Phase::Failed,
            _ => Phase::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Stopping => "stopping",
            Phase::Failed => "failed",
            Phase::Unknown => "unknown",
        }
    }
}

/// What routing needs of a Pod, and nothing else (a whole Pod object costs ~100 KB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub uid: Box<str>,
    pub namespace: Box<str>,
    pub name: Box<str>,
    pub sandbox_id: Option<Box<str>>,
    pub phase: Phase,
    pub ip: Option<IpAddr>,
    /// Value of the armed annotation (the sandbox id the Pod was armed for).
    pub armed_for: Option<Box<str>>,
    /// What the last-active writer reads off the Pod; `None` when it carries neither annotation.
    pub last_active: Option<LastActive>,
    /// Parsed resourceVersion; 0 when the source has none (static inventory).
    pub resource_version: u64,
}

/// The Pod's last-active annotation and the idle timeout that paces its refresh: the two
/// annotations the last-active writer reads. Nothing routing reads.
///
/// Both at the annotations' own precision, whole seconds: 24 bytes, no more than the
/// `Option<Timestamp>` the last-active time alone used to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LastActive {
    /// The last-active annotation (RFC 3339), in seconds since the epoch (a finer time is cut
    /// to its second, which compares as the writer compares: at second precision).
    second: Option<i64>,
    /// The idle-timeout annotation: whole seconds, positive (larger values saturate).
    idle_timeout: Option<NonZeroU32>,
}

impl LastActive {
    /// `None` when there is nothing to keep.
    pub fn new(at: Option<Timestamp>, idle_timeout: Option<NonZeroU32>) -> Option<LastActive> {
        (at.is_some() || idle_timeout.is_some()).then_some(LastActive {
            second: at.map(|t| t.as_second()),
            idle_timeout,
        })
    }

    pub fn at(&self) -> Option<Timestamp> {
        Timestamp::from_second(self.second?).ok()
    }

    pub fn idle_timeout(&self) -> Option<NonZeroU32> {
        self.idle_timeout
    }

    /// An idle-timeout annotation value as the agentbox controller reads it: a base-10 integer
    /// of seconds; zero, negative or unparseable is no timeout. Kept as a `u32` (136 years).
    pub fn parse_idle_timeout(value: &str) -> Option<NonZeroU32> {
        let secs = value.parse::<i64>().ok().filter(|&s| s > 0)?;
        NonZeroU32::new(u32::try_from(secs).unwrap_or(u32::MAX))
    }
}

impl PodView {
    /// The last-active annotation's time, if the Pod carries one.
    pub fn last_active_at(&self) -> Option<Timestamp> {
        self.last_active.and_then(|l| l.at())
    }

    /// The idle-timeout annotation, if the Pod carries a valid one.
    pub fn idle_timeout(&self) -> Option<NonZeroU32> {
        self.last_active.and_then(|l| l.idle_timeout())
    }

    /// Whether a decision could tell `self` from `other`: everything but the activity (and the
    /// idle timeout pacing it) and the resourceVersion. A last-active write changes neither
    /// routing nor any kept answer.
    pub fn routes_like(&self, other: &PodView) -> bool {
        (
            &self.uid,
            &self.sandbox_id,
            self.phase,
            self.ip,
            &self.armed_for,
        ) == (
            &other.uid,
            &other.sandbox_id,
            other.phase,
            other.ip,
            &other.armed_for,
        )
    }
}

/// The raw facts a source has about one Pod, borrowed from whatever it decoded.
pub struct PodFacts<'a> {
    pub uid: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub annotations: Option<&'a BTreeMap<String, String>>,
    pub ip: Option<&'a str>,
    pub resource_version: Option<&'a str>,
}

impl PodView {
    /// The one projection from source facts to routing state.
    pub fn project(facts: PodFacts<'_>, keys: &PodKeys) -> PodView {
        let label = |k: &str| facts.labels.and_then(|l| l.get(k)).map(String::as_str);
        let annotation = |k: &str| facts.annotations.and_then(|a| a.get(k)).map(String::as_str);
        PodView {
            uid: facts.uid.into(),
            namespace: facts.namespace.into(),
            name: facts.name.into(),
            sandbox_id: label(&keys.sandbox_id_label)
                .filter(|v| !v.is_empty())
                .map(Into::into),
            phase: Phase::parse(label(&keys.phase_label)),
            ip: facts.ip.and_then(|ip| ip.parse().ok()),
            armed_for: annotation(&keys.armed_annotation).map(Into::into),
            last_active: LastActive::new(
                annotation(&keys.last_active_annotation).and_then(|t| t.parse().ok()),
                annotation(&keys.idle_timeout_annotation).and_then(LastActive::parse_idle_timeout),
            ),
            resource_version: facts
                .resource_version
                .and_then(|rv| rv.parse().ok())
                .unwrap_or(0),
        }
    }
}

/// key → every Pod stored under it; a Pod is identified by (namespace, name).
#[derive(Clone)]
struct MultiIndex<K>(HashMap<K, Vec<Arc<PodView>>>);

impl<K> Default for MultiIndex<K> {
    fn default() -> Self {
        MultiIndex(HashMap::new())
    }
}

impl<K: std::hash::Hash + Eq> MultiIndex<K> {
    fn add(&mut self, key: K, pod: &Arc<PodView>) {
        self.0.entry(key).or_default().push(Arc::clone(pod));
    }

    fn remove(&mut self, key: &K, namespace: &str, name: &str) {
        if let Some(pods) = self.0.get_mut(key) {
            pods.retain(|p| !(*p.namespace == *namespace && *p.name == *name));
            if pods.is_empty() {
                self.0.remove(key);
            }
        }
    }

    fn get<Q>(&self, key: &Q) -> Vec<Arc<PodView>>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.0.get(key).cloned().unwrap_or_default()
    }
}

#[derive(Default, Clone)]
struct Maps {
    /// namespace → name → Pod. Nested so a lookup by two borrowed strs needs no allocation.
    by_name: HashMap<Box<str>, HashMap<Box<str>, Arc<PodView>>>,
    /// sandbox id → every Pod currently labelled with it (usually one).
    by_sandbox: MultiIndex<Box<str>>,
    /// Pod IP → Pods with it (one, unless host-network Pods share a node's IP); lets traffic
    /// seen by address (access logs) be attributed to a sandbox.
    by_ip: MultiIndex<IpAddr>,
}

impl Maps {
    fn get(&self, namespace: &str, name: &str) -> Option<&Arc<PodView>> {
        self.by_name.get(namespace)?.get(name)
    }

    fn insert(&mut self, pod: Arc<PodView>) {
        self.remove_index(&pod.namespace, &pod.name);
        if let Some(id) = &pod.sandbox_id {
            self.by_sandbox.add(id.clone(), &pod);
        }
        if let Some(ip) = pod.ip {
            self.by_ip.add(ip, &pod);
        }
        self.by_name
            .entry(pod.namespace.clone())
            .or_default()
            .insert(pod.name.clone(), pod);
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        self.remove_index(namespace, name);
        if let Some(names) = self.by_name.get_mut(namespace) {
            names.remove(name);
            if names.is_empty() {
                self.by_name.remove(namespace);
            }
        }
    }

    /// Drops the index entries of the Pod currently stored under (namespace, name).
    fn remove_index(&mut self, namespace: &str, name: &str) {
        let Some(old) = self.get(namespace, name).cloned() else {
            return;
        };
        if let Some(id) = &old.sandbox_id {
            self.by_sandbox.remove(id, namespace, name);
        }
        if let Some(ip) = &old.ip {
            self.by_ip.remove(ip, namespace, name);
        }
    }

    fn len(&self) -> usize {
        self.by_name.values().map(HashMap::len).sum()
    }
}

/// What happened to an event offered to the store (for metrics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Stored,
    /// Older than (or the same as) what the store holds: events may arrive out of order across
    /// a re-list, and an old object must never overwrite a newer one.
    Stale,
    /// A delete for a Pod UID the store no longer holds (the name was re-created since).
    Fenced,
}

/// The Pod state every resolve reads. Readers take a shared lock for one hash lookup.
pub struct PodStore {
    maps: RwLock<Maps>,
    synced: AtomicBool,
    synced_tx: watch::Sender<bool>,
    /// When the source last lost its stream after having synced; `None` while in sync (or
    /// before the first sync).
    lost_at: parking_lot::Mutex<Option<std::time::Instant>>,
    /// Bumped per sandbox id a change touches (the old id and the new one).
    pub generations: Generations,
}

impl Default for PodStore {
    fn default() -> Self {
        PodStore {
            maps: RwLock::new(Maps::default()),
            synced: AtomicBool::new(false),
            synced_tx: watch::channel(false).0,
            lost_at: parking_lot::Mutex::new(None),
            generations: Generations::default(),
        }
    }
}

impl PodStore {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PodView>> {
        self.maps.read().get(namespace, name).cloned()
    }

    /// Every Pod labelled with `sandbox_id`.
    pub fn by_sandbox(&self, sandbox_id: &str) -> Vec<Arc<PodView>> {
        self.maps.read().by_sandbox.get(sandbox_id)
    }

    /// Every Pod with this IP.
    pub fn by_ip(&self, ip: IpAddr) -> Vec<Arc<PodView>> {
        self.maps.read().by_ip.get(&ip)
    }

    /// Applies an add/modify. Fenced by resourceVersion: resourceVersions are etcd revisions,
    /// global and increasing, so an object older than the stored one (same name, any UID) is
    /// stale and ignored. A newer object with another UID is a re-created Pod and replaces it.
    pub fn apply(&self, pod: PodView) -> Applied {
        let mut maps = self.maps.write();
        let old = maps.get(&pod.namespace, &pod.name).cloned();
        if let Some(old) = &old {
            let same = old.uid == pod.uid;
            if pod.resource_version != 0
                && (pod.resource_version < old.resource_version
                    || (same && pod.resource_version == old.resource_version))
            {
                return Applied::Stale;
            }
        }
        let pod = Arc::new(pod);
        maps.insert(Arc::clone(&pod));
        if !old.as_deref().is_some_and(|old| old.routes_like(&pod)) {
            let old_id = old.as_deref().and_then(|o| o.sandbox_id.as_deref());
            let new_id = pod.sandbox_id.as_deref().filter(|&id| Some(id) != old_id);
            for id in [old_id, new_id].into_iter().flatten() {
                self.generations.bump(id);
            }
        }
        Applied::Stored
    }

    /// Applies a delete: only the Pod with the same UID is removed, so a late delete of an old
    /// Pod cannot remove its re-created namesake.
    pub fn delete(&self, namespace: &str, name: &str, uid: &str) -> Applied {
        let mut maps = self.maps.write();
        match maps.get(namespace, name) {
            Some(old) if *old.uid == *uid => {
                let id = old.sandbox_id.clone();
                maps.remove(namespace, name);
                if let Some(id) = id {
                    self.generations.bump(&id);
                }
                Applied::Stored
            }
            _ => Applied::Fenced,
        }
    }

    /// Replaces the whole state (a full list from the source) and marks the store synced.
    pub fn replace_all(&self, pods: impl IntoIterator<Item = PodView>) {
        let mut next = Maps::default();
        for p in pods {
            // Within one list a name appears once; keep the newest if a source repeats it.
            let newer = next
                .get(&p.namespace, &p.name)
                .is_none_or(|old| p.resource_version >= old.resource_version);
            if newer {
                next.insert(Arc::new(p));
            }
        }
        *self.maps.write() = next;
        self.generations.bump_all();
        self.mark_synced();
    }

    pub fn len(&self) -> usize {
        self.maps.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A snapshot of every Pod (for seeding and GC; not for the request path).
    pub fn all(&self) -> Vec<Arc<PodView>> {
        self.maps
            .read()
            .by_name
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// In sync (again): a full list was applied, or the source's stream flows after a loss.
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
        self.synced_tx.send_replace(true);
        *self.lost_at.lock() = None;
    }

    /// Marks the store out of sync (the source lost its stream); it stays readable.
    pub fn mark_unsynced(&self) {
        let mut lost = self.lost_at.lock();
        if self.synced.swap(false, Ordering::AcqRel) {
            *lost = Some(std::time::Instant::now());
        }
        self.synced_tx.send_replace(false);
    }

    /// Synced once, out of sync now.
    pub fn lost(&self) -> bool {
        self.lost_at.lock().is_some()
    }

    /// Whether the store has synced once and has not been out of sync for `grace` or longer.
    /// Serving from the last state through a short API outage beats taking every replica out
    /// of its Service at once; a long one (or a partition of this replica) shows.
    pub fn ready(&self, grace: std::time::Duration) -> bool {
        if self.is_synced() {
            return true;
        }
        self.lost_at.lock().is_some_and(|at| at.elapsed() < grace)
    }

    /// Resolves once the store has completed a full sync.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced_tx.subscribe();
        // The sender lives as long as the store, so this cannot fail while we borrow it.
        let _ = rx.wait_for(|s| *s).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(uid: &str, name: &str, id: Option<&str>, rv: u64) -> PodView {
        PodView {
            uid: uid.into(),
            namespace: "ns".into(),
            name: name.into(),
            sandbox_id: id.map(Into::into),
            phase: Phase::Running,
            ip: Some("10.0.0.1".parse().unwrap()),
            armed_for: None,
            last_active: None,
            resource_version: rv,
        }
    }

    #[test]
    fn projection_reads_configured_keys() {
        let keys = PodKeys::default();
        let labels = BTreeMap::from([
            (keys.sandbox_id_label.clone(), "sb-1".to_string()),
            (keys.phase_label.clone(), "stopping".to_string()),
        ]);
        let annotations = BTreeMap::from([
            (
                keys.last_active_annotation.clone(),
                "2026-01-02T03:04:05Z".to_string(),
            ),
            (keys.armed_annotation.clone(), "sb-1".to_string()),
            (keys.idle_timeout_annotation.clone(), "600".to_string()),
        ]);
        let v = PodView::project(
            PodFacts {
                uid: "u",
                namespace: "ns",
                name: "p",
                labels: Some(&labels),
                annotations: Some(&annotations),
                ip: Some("fd00::1"),
                resource_version: Some("42"),
            },
            &keys,
        );
        assert_eq!(v.sandbox_id.as_deref(), Some("sb-1"));
        assert_eq!(v.phase, Phase::Stopping);
        assert_eq!(v.ip, Some("fd00::1".parse().unwrap()));
        assert_eq!(v.armed_for.as_deref(), Some("sb-1"));
        assert_eq!(
            v.last_active_at(),
            Some("2026-01-02T03:04:05Z".parse().unwrap())
        );
        assert_eq!(v.idle_timeout(), NonZeroU32::new(600));
        assert_eq!(v.resource_version, 42);

        let bare = PodView::project(
            PodFacts {
                uid: "u",
                namespace: "ns",
                name: "p",
                labels: None,
                annotations: None,
                ip: Some("not-an-ip"),
                resource_version: Some("x"),
            },
            &keys,
        );
        assert_eq!(
            (bare.sandbox_id, bare.phase, bare.ip, bare.last_active),
            (None, Phase::Unknown, None, None)
        );
    }

    #[test]
    fn idle_timeout_is_read_as_the_controller_reads_it() {
        let parse = LastActive::parse_idle_timeout;
        assert_eq!(parse("9"), NonZeroU32::new(9));
        assert_eq!(
            parse("+30"),
            NonZeroU32::new(30),
            "Go's ParseInt takes a sign"
        );
        assert_eq!(parse("99999999999"), NonZeroU32::new(u32::MAX), "saturates");
        for none in ["", "0", "-5", "10s", "1.5", " 9", "x"] {
            assert_eq!(parse(none), None, "{none:?}");
        }
        // Only the idle timeout: the Pod keeps it, with no last-active time.
        let keys = PodKeys::default();
        let annotations = BTreeMap::from([(keys.idle_timeout_annotation.clone(), "6".into())]);
        let v = PodView::project(
            PodFacts {
                uid: "u",
                namespace: "ns",
                name: "p",
                labels: None,
                annotations: Some(&annotations),
                ip: None,
                resource_version: None,
            },
            &keys,
        );
        assert_eq!(
            (v.last_active_at(), v.idle_timeout()),
            (None, NonZeroU32::new(6))
        );
    }

    #[test]
    fn the_idle_timeout_costs_no_memory() {
        // The pair takes no more than the last-active time alone did.
        use std::mem::size_of;
        assert!(
            size_of::<Option<LastActive>>() <= size_of::<Option<Timestamp>>(),
            "{} > {}",
            size_of::<Option<LastActive>>(),
            size_of::<Option<Timestamp>>()
        );
        // Sub-second precision is cut, as the writer compares at second precision anyway.
        let at = "2026-01-02T03:04:05.750Z".parse::<Timestamp>().unwrap();
        assert_eq!(
            LastActive::new(Some(at), None).unwrap().at(),
            Some("2026-01-02T03:04:05Z".parse().unwrap())
        );
    }

    #[test]
    fn index_follows_relabel_and_delete() {
        let s = PodStore::default();
        assert_eq!(s.apply(view("u1", "p1", Some("a"), 1)), Applied::Stored);
        assert_eq!(s.by_sandbox("a").len(), 1);
        assert_eq!(s.apply(view("u1", "p1", Some("b"), 2)), Applied::Stored);
        assert!(
            s.by_sandbox("a").is_empty(),
            "relabelled pod leaves the old id"
        );
        assert_eq!(&*s.by_sandbox("b")[0].name, "p1");
        assert_eq!(s.delete("ns", "p1", "u1"), Applied::Stored);
        assert!(s.by_sandbox("b").is_empty());
        assert!(s.is_empty());
    }

    #[test]
    fn changes_move_the_generations_of_the_ids_they_touch() {
        use crate::generation::bucket;
        let s = PodStore::default();
        let g = |id| s.generations.get(bucket(id));
        assert_ne!(
            bucket("a"),
            bucket("b"),
            "test ids must fall in different buckets"
        );
        s.apply(view("u1", "p1", Some("a"), 1));
        assert_eq!((g("a"), g("b")), (1, 0));
        // Activity and resourceVersion alone: no decision changes, no kept answer is dropped.
        s.apply(PodView {
            last_active: LastActive::new(Some(Timestamp::now()), NonZeroU32::new(9)),
            ..view("u1", "p1", Some("a"), 2)
        });
        assert_eq!((g("a"), g("b")), (1, 0));
        s.apply(view("u1", "p1", Some("b"), 3));
        assert_eq!(
            (g("a"), g("b")),
            (2, 1),
            "relabel: the old id and the new one"
        );
        s.apply(PodView {
            phase: Phase::Stopping,
            ..view("u1", "p1", Some("b"), 4)
        });
        assert_eq!(g("b"), 2, "one bump for one id");
        s.delete("ns", "p1", "u1");
        assert_eq!((g("a"), g("b")), (2, 3));
        s.replace_all([]);
        assert_eq!((g("a"), g("b")), (3, 4), "a full list may change anything");
    }

    #[test]
    fn ip_index_follows_ip_changes_and_delete() {
        let s = PodStore::default();
        let ip = |v: &str| -> IpAddr { v.parse().unwrap() };
        s.apply(view("u1", "p1", Some("a"), 1));
        assert_eq!(&*s.by_ip(ip("10.0.0.1"))[0].name, "p1");
        s.apply(PodView {
            ip: Some(ip("10.0.0.2")),
            ..view("u1", "p1", Some("a"), 2)
        });
        assert!(s.by_ip(ip("10.0.0.1")).is_empty(), "old IP unindexed");
        assert_eq!(s.by_ip(ip("10.0.0.2")).len(), 1);
        s.apply(PodView {
            ip: None,
            ..view("u1", "p1", Some("a"), 3)
        });
        assert!(s.by_ip(ip("10.0.0.2")).is_empty());
        s.apply(view("u1", "p1", Some("a"), 4));
        s.delete("ns", "p1", "u1");
        assert!(s.by_ip(ip("10.0.0.1")).is_empty());
    }

    #[test]
    fn stale_events_and_old_uid_deletes_are_fenced() {
        let s = PodStore::default();
        s.apply(view("u1", "p1", Some("a"), 5));
        assert_eq!(s.apply(view("u1", "p1", Some("x"), 4)), Applied::Stale);
        assert_eq!(s.apply(view("u1", "p1", Some("x"), 5)), Applied::Stale);
        // Re-created under the same name: newer RV, new UID.
        assert_eq!(s.apply(view("u2", "p1", Some("b"), 9)), Applied::Stored);
        assert_eq!(s.delete("ns", "p1", "u1"), Applied::Fenced);
        assert_eq!(&*s.get("ns", "p1").unwrap().uid, "u2");
        // An old object of the previous incarnation must not come back.
        assert_eq!(s.apply(view("u1", "p1", Some("a"), 6)), Applied::Stale);
        assert!(s.by_sandbox("a").is_empty());
    }

    #[test]
    fn replace_all_swaps_state_and_syncs() {
        let s = PodStore::default();
        s.apply(view("u1", "gone", Some("a"), 1));
        assert!(!s.is_synced());
        assert!(!s.ready(std::time::Duration::from_secs(60)), "never synced");
        s.replace_all([
            view("u2", "p2", Some("b"), 3),
            view("u3", "p3", Some("b"), 4),
        ]);
        assert!(s.is_synced());
        assert!(s.get("ns", "gone").is_none());
        assert_eq!(s.by_sandbox("b").len(), 2);
        s.mark_unsynced();
        assert!(
            s.ready(std::time::Duration::from_secs(60)),
            "within the grace"
        );
        assert!(!s.ready(std::time::Duration::ZERO), "past the grace");
        assert!(!s.is_synced());
        assert_eq!(s.len(), 2, "unsynced stays readable");
    }
}
