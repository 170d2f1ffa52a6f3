//! The decision: request facts in, [`Decision`] out. Every entry (the Resolve callout, ext_proc)
//! calls [`Gateway::decide`]; no entry carries a rule of its own.
//!
//! Order: validate facts → too many failed keys from this client? → authenticate (the API key,
//! else an access token: verified, scoped to this sandbox and port, alive with the tenant key
//! that minted it) → another
//! cluster's id? forward to its gateway → locate the sandbox's Pod (pushed route, else the
//! sandbox-id index when the fallback is on) → tenant check → routability → Touch → route.
//!
//! A forwarded request is authenticated here first (the peer's credential is added to it, so
//! an unauthenticated client must not get to borrow it) and decided again, tenant check
//! included, by the peer gateway. A request that already crossed once is never forwarded.
//! A Pod is routable only when it carries the requested sandbox id, is Running (armed, when the
//! gate is on) or Stopping, and has an IP. Anything else the resolver knows of is a 502; an id it
//! knows nothing of is a 404.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use sandgate_core::{
    Decision, Deny, DenyCode, Forward, SandboxRef, check_port, split_cluster, validate_sandbox_id,
};

use crate::activity::ActivityTracker;
use crate::cache::RouteCache;
use crate::clusters::ClusterStore;
use crate::clusters::dns::DnsCache;
use crate::generation;
use crate::hold::Holds;
use crate::keys::limit::FailureLimiter;
use crate::keys::{KeyStore, Principal};
use crate::metrics::Metrics;
use crate::pods::{Phase, PodStore, PodView};
use crate::tokens::TokenKeys;

/// Behaviour switches of the decision.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecideConfig {
    /// On a route-cache miss, look the sandbox up by its label (off: pure push model, miss = 404).
    pub index_fallback: bool,
    /// A Running Pod routes only once its armed annotation equals the sandbox id.
    pub armed_gate: bool,
    /// `sandbox_not_found` answered 502 for every request (the E2B SDK's "gone"), not only
    /// for requests addressed the E2B way; false keeps 404.
    pub not_found_502: bool,
    /// An id nobody knows may be woken (the controller asked to bring it up) and held.
    pub wake_unknown: bool,
}

/// What could still make a refused request's sandbox routable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// It comes by itself: the Pod is starting, being armed, getting its IP, or named by a
    /// pushed route before it exists.
    Starting,
    /// The controller must bring it back (released, or unknown with `wake_unknown`); the
    /// namespace is the released Pod's, or the caller's.
    Wake { namespace: String },
}

/// A refusal, and whether it may not be final.
#[derive(Debug)]
struct Refusal {
    deny: Deny,
    pending: Option<Pending>,
}

impl From<Deny> for Refusal {
    fn from(deny: Deny) -> Self {
        Refusal {
            deny,
            pending: None,
        }
    }
}

/// One look at a request ([`Gateway::look`]).
#[derive(Debug)]
pub struct Look {
    pub decision: Decision,
    pub keep: Option<Keep>,
    pub pending: Option<Pending>,
}

/// What an entry extracted from the request.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub api_key: &'a str,
    pub sandbox_id: &'a str,
    /// 0 when the request named none; validated here.
    pub port: u32,
    /// The request carries another gateway's hop marker.
    pub forwarded: bool,
    /// The client's address, when the entry knows it (limits failed key guesses).
    pub client: Option<IpAddr>,
    /// Credentials sent beside the key ([`sandgate_core::Target::other_credentials`]): a
    /// routed answer says which are gateway keys the sandbox must not see.
    pub other_credentials: &'a [&'a str],
    /// The request named its sandbox the E2B way (its headers or Host): a missing sandbox is
    /// 502, which the E2B SDK reads as "gone".
    pub e2b: bool,
    /// An access token, presented when `api_key` is empty.
    pub access_token: &'a str,
}

impl<'a> Facts<'a> {
    /// The facts of a request the shared grammar read (`others`: the values of its
    /// [`sandgate_core::Target::other_credentials`], in order), from `client`.
    pub fn of(
        target: &sandgate_core::Target<'a>,
        others: &'a [&'a str],
        client: Option<IpAddr>,
    ) -> Facts<'a> {
        Facts {
            api_key: target.api_key.map_or("", |(k, _)| k),
            sandbox_id: target.sandbox_id,
            port: u32::from(target.port),
            forwarded: target.forwarded,
            client,
            other_credentials: others,
            e2b: target.e2b,
            access_token: target.token.map_or("", |(t, _)| t),
        }
    }
}

/// Everything a decision reads, shared by all entries.
pub struct Gateway {
    pub keys: Arc<KeyStore>,
    pub routes: Arc<RouteCache>,
    pub pods: Arc<PodStore>,
    pub activity: Arc<ActivityTracker>,
    pub metrics: Arc<Metrics>,
    pub clusters: Arc<ClusterStore>,
    pub dns: Arc<DnsCache>,
    pub key_failures: Arc<FailureLimiter>,
    pub tokens: Arc<TokenKeys>,
    pub holds: Arc<Holds>,
    pub config: DecideConfig,
}

/// How long a filter's decision cache may keep an answer: until `bucket` moves past
/// `generation`, and no longer than `until` (the key's expiry) when set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    pub bucket: u32,
    pub generation: u64,
    pub until: Option<Timestamp>,
}

impl Gateway {
    pub async fn decide(&self, facts: Facts<'_>) -> Decision {
        self.decide_keeping(facts).await.0
    }

    /// [`Gateway::decide`], and whether (and how long) the answer may be kept by a cache.
    pub async fn decide_keeping(&self, facts: Facts<'_>) -> (Decision, Option<Keep>) {
        let started = Instant::now();
        let look = self.look(facts).await;
        self.record(&look.decision, started);
        (look.decision, look.keep)
    }

    /// Counts a decision made in `started`'s time, by outcome.
    pub fn record(&self, decision: &Decision, started: Instant) {
        let outcome = match decision {
            Decision::Route { .. } => "route",
            Decision::Forward(_) => "forward",
            Decision::Deny(d) => d.code.as_str(),
        };
        self.metrics.resolved(outcome, started.elapsed());
    }

    /// One look at a request, not counted: its decision, whether a cache may keep it, and for
    /// a refusal that may not be final, what could still make the sandbox routable.
    pub async fn look(&self, facts: Facts<'_>) -> Look {
        // Read before deciding: a change made while deciding then always moves the generation
        // past the one this answer carries.
        let bucket = generation::bucket(self.place(facts.sandbox_id).unwrap_or(facts.sandbox_id));
        let generation = self.generation(bucket);
        let mut until = None;
        let (decision, pending) = match self.decide_inner(facts, &mut until).await {
            Ok(decision) => (decision, None),
            Err(Refusal { deny, pending })
                if deny.code == DenyCode::SandboxNotFound
                    && (facts.e2b || self.config.not_found_502) =>
            {
                (Decision::Deny(deny.with_status(502)), pending)
            }
            Err(Refusal { deny, pending }) => (Decision::Deny(deny), pending),
        };
        let keep = keepable(&decision).then_some(Keep {
            bucket,
            generation,
            until,
        });
        Look {
            decision,
            keep,
            pending,
        }
    }

    /// The generation of a bucket: what every store a decision reads has seen change, plus
    /// this process's epoch, so a restarted resolver never repeats an earlier generation.
    pub fn generation(&self, bucket: u32) -> u64 {
        [
            generation::epoch(),
            self.keys.generations.get(bucket),
            self.tokens.generations.get(bucket),
            self.clusters.generations.get(bucket),
            self.routes.generations.get(bucket),
            self.pods.generations.get(bucket),
        ]
        .into_iter()
        .fold(0, u64::wrapping_add)
    }

    /// Requests a filter answered from its cache: they count as activity, as a resolved
    /// request does. Ids that could never have been routed are ignored.
    pub fn record_hits(&self, sandbox_id: &str, count: u64) {
        if count == 0 || validate_sandbox_id(sandbox_id).is_err() {
            return;
        }
        self.activity
            .touch(self.place(sandbox_id).unwrap_or(sandbox_id));
        self.metrics.cache_hits(count);
    }

    /// Where `id` lives: `Ok` with the id the stores know it by (this cluster's own prefix
    /// stripped), or `Err` with the other cluster that has it.
    pub(crate) fn place<'a>(&self, id: &'a str) -> Result<&'a str, &'a str> {
        match split_cluster(id) {
            SandboxRef { cluster: None, .. } => Ok(id),
            SandboxRef {
                cluster: Some(cluster),
                id: local,
            } if cluster == self.clusters.local() => Ok(local),
            SandboxRef {
                cluster: Some(cluster),
                ..
            } => Err(cluster),
        }
    }

    /// `until` learns the key's expiry once the key is known.
    async fn decide_inner(
        &self,
        facts: Facts<'_>,
        until: &mut Option<Timestamp>,
    ) -> Result<Decision, Refusal> {
        let id = validate_sandbox_id(facts.sandbox_id)?;
        let port = check_port(facts.port)?;
        self.key_failures.check(facts.client)?;
        let now = Timestamp::now();
        let principal = if facts.api_key.is_empty()
            && !facts.access_token.is_empty()
            && !self.keys.auth_disabled()
        {
            self.token_principal(facts.access_token, id, port, now)?
        } else {
            self.keys
                .authenticate(facts.api_key, now)
                .inspect_err(|deny| {
                    if deny.code == DenyCode::InvalidApiKey {
                        self.key_failures.failed(facts.client);
                    }
                })?
        };
        *until = principal.expires_at();
        let id = match self.place(id) {
            Ok(local) => local,
            Err(cluster) => {
                let forward = self.forward(cluster, facts.forwarded).await?;
                return Ok(Decision::Forward(Box::new(forward)));
            }
        };
        let pod = self.locate(id, &principal).map_err(|deny| {
            let pending = match deny.code {
                // A pushed route whose Pod is not created yet: it is on its way.
                DenyCode::SandboxPodMissing => Some(Pending::Starting),
                // A sandbox nobody knows may be one the controller can bring back.
                DenyCode::SandboxNotFound if self.config.wake_unknown => Some(Pending::Wake {
                    namespace: match &principal {
                        Principal::Admin => String::new(),
                        Principal::Tenant { namespace, .. } => namespace.to_string(),
                    },
                }),
                _ => None,
            };
            Refusal { deny, pending }
        })?;
        let ip = self.routable(&pod, id)?;
        self.activity.touch(id);
        Ok(Decision::Route {
            destination: SocketAddr::new(ip, port).to_string(),
            strip_credentials: (0..32)
                .zip(facts.other_credentials)
                .filter(|(_, c)| self.keys.is_known(c))
                .fold(0, |mask, (bit, _)| mask | 1 << bit),
        })
    }

    /// Who a verified access token speaks for: the tenant of its namespace, for this sandbox
    /// (as the request names it) and port only, while the tenant key that minted it is held
    /// and unexpired, and no longer than either lives.
    fn token_principal(
        &self,
        token: &str,
        id: &str,
        port: u16,
        now: Timestamp,
    ) -> Result<Principal, Deny> {
        let unix = u64::try_from(now.as_second()).unwrap_or(0);
        let claims = self.tokens.verify(token, unix)?;
        if claims.sandbox_id != id || !claims.opens(port) {
            return Err(Deny::new(
                DenyCode::AccessTokenOutOfScope,
                format!("the access token does not open port {port} of sandbox {id}"),
            ));
        }
        let mut expires_at = i64::try_from(claims.expires_at)
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok());
        if let Some(minter) = claims.minted_by {
            let key = self
                .keys
                .tenant_by_prefix(&minter, &claims.namespace)
                .ok_or_else(|| {
                    Deny::new(
                        DenyCode::InvalidAccessToken,
                        "the API key that minted the access token was revoked",
                    )
                })?;
            if let Some(key_expiry) = key.expires_at {
                if key_expiry <= now {
                    return Err(Deny::new(
                        DenyCode::ExpiredAccessToken,
                        "the API key that minted the access token has expired",
                    ));
                }
                expires_at = expires_at.map(|t| t.min(key_expiry));
            }
        }
        Ok(Principal::Tenant {
            namespace: claims.namespace.into(),
            expires_at,
        })
    }

    /// Where a request for `cluster`'s sandbox goes: that cluster's gateway.
    async fn forward(&self, cluster: &str, forwarded: bool) -> Result<Forward, Deny> {
        if forwarded {
            return Err(Deny::new(
                DenyCode::ForwardLoop,
                format!(
                    "request already crossed from another cluster; not forwarding it to cluster {cluster}"
                ),
            ));
        }
        let config = self.clusters.current();
        let peer = config.peers.get(cluster).ok_or_else(|| {
            Deny::new(
                DenyCode::UnknownCluster,
                format!("cluster {cluster} is not known to this gateway"),
            )
        })?;
        let gateway = peer.gateway.as_ref().ok_or_else(|| {
            Deny::new(
                DenyCode::PeerUnavailable,
                format!("cluster {cluster} has no gateway configured"),
            )
        })?;
        let ip = self
            .dns
            .resolve(&gateway.host, &config.host_aliases)
            .await
            .map_err(|why| {
                tracing::warn!(cluster, why, "peer gateway address unknown");
                Deny::new(
                    DenyCode::PeerUnavailable,
                    format!("the gateway of cluster {cluster} cannot be reached"),
                )
            })?;
        let local = self.clusters.local();
        Ok(Forward {
            destination: SocketAddr::new(ip, gateway.port).to_string(),
            authority: gateway.authority.clone(),
            path_prefix: gateway.path_prefix.clone(),
            upstream: gateway.upstream,
            headers: gateway.headers.clone(),
            from_cluster: if local.is_empty() {
                "unnamed".into()
            } else {
                local.into()
            },
        })
    }

    /// Finds the one Pod that should serve `id` and checks the caller may reach it.
    fn locate(&self, id: &str, principal: &Principal) -> Result<Arc<PodView>, Deny> {
        if let Some(route) = self.routes.get(id) {
            if !principal.may_reach(&route.namespace) {
                return Err(forbidden(id));
            }
            return self
                .pods
                .get(&route.namespace, &route.pod_name)
                .ok_or_else(|| {
                    Deny::new(
                        DenyCode::SandboxPodMissing,
                        format!("sandbox {id} has no running pod yet"),
                    )
                });
        }
        if !self.config.index_fallback {
            return Err(not_found(id));
        }
        let candidates = self.pods.by_sandbox(id);
        if candidates.is_empty() {
            return Err(not_found(id));
        }
        // Several Pods can briefly carry one id (a replacement starting while the old one stops).
        // Prefer one that routes, then the one whose refusal says the most.
        candidates
            .into_iter()
            .filter(|p| principal.may_reach(&p.namespace))
            .min_by_key(|p| preference(p))
            .ok_or_else(|| forbidden(id))
    }

    /// The Pod's IP when it may serve `id` now; else the refusal, with what could still make
    /// it routable: starting, arming and an IP come by themselves, a released (idle) sandbox
    /// needs a wake; a failed or re-assigned Pod is final.
    fn routable(&self, pod: &PodView, id: &str) -> Result<std::net::IpAddr, Refusal> {
        if pod.sandbox_id.as_deref() != Some(id) {
            return Err(Deny::new(
                DenyCode::SandboxReassigned,
                format!("sandbox {id} is not served by its pod any more"),
            )
            .into());
        }
        let soon = |deny| Refusal {
            deny,
            pending: Some(Pending::Starting),
        };
        match pod.phase {
            Phase::Running => {
                if self.config.armed_gate && pod.armed_for.as_deref() != Some(id) {
                    return Err(soon(Deny::new(
                        DenyCode::SandboxNotArmed,
                        format!("sandbox {id} is still being set up"),
                    )));
                }
            }
            // A stopping sandbox still finishes its work: clients may reach it until it is gone.
            Phase::Stopping => {}
            other => {
                let deny = Deny::new(
                    DenyCode::SandboxNotReady,
                    format!("sandbox {id} is {}", other.as_str()),
                );
                let pending = match other {
                    Phase::Starting => Some(Pending::Starting),
                    Phase::Idle => Some(Pending::Wake {
                        namespace: pod.namespace.to_string(),
                    }),
                    _ => None,
                };
                return Err(Refusal { deny, pending });
            }
        }
        pod.ip.ok_or_else(|| {
            soon(Deny::new(
                DenyCode::SandboxNoIp,
                format!("sandbox {id} has no address yet"),
            ))
        })
    }
}

/// Whether an answer may be kept for other requests with the same key, id and port. Not a
/// forward (the peer gateway decides again, and a peer's address has its own lifetime), not an
/// unavailable resolver, and not a refusal that depends on the client rather than the request.
fn keepable(decision: &Decision) -> bool {
    match decision {
        Decision::Route { .. } => true,
        Decision::Forward(_) => false,
        Decision::Deny(d) => !matches!(
            d.code,
            DenyCode::ResolverUnavailable
                | DenyCode::TooManyKeyFailures
                | DenyCode::SandboxStarting
                | DenyCode::TooManyWaiting
        ),
    }
}

/// Lower is better: Running with an IP, then Stopping with an IP, then the rest.
fn preference(p: &PodView) -> u8 {
    match (p.phase, p.ip.is_some()) {
        (Phase::Running, true) => 0,
        (Phase::Stopping, true) => 1,
        (Phase::Running | Phase::Stopping, false) => 2,
        (Phase::Starting, _) => 3,
        _ => 4,
    }
}

fn not_found(id: &str) -> Deny {
    // "was not found": the E2B SDK maps a 502 whose message says so to SandboxNotRunning.
    Deny::new(
        DenyCode::SandboxNotFound,
        format!("sandbox {id} was not found"),
    )
}

fn forbidden(id: &str) -> Deny {
    Deny::new(
        DenyCode::Forbidden,
        format!("this credential may not reach sandbox {id}"),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::{KeySet, Source, TenantKey, digest};
    use std::time::Duration;

    pub(crate) struct Fixture {
        pub(crate) gw: Gateway,
    }

    pub(crate) fn pod(
        ns: &str,
        name: &str,
        id: Option<&str>,
        phase: Phase,
        ip: Option<&str>,
    ) -> PodView {
        PodView {
            uid: format!("uid-{name}").into(),
            namespace: ns.into(),
            name: name.into(),
            sandbox_id: id.map(Into::into),
            phase,
            ip: ip.map(|i| i.parse().unwrap()),
            armed_for: None,
            last_active: None,
            resource_version: 0,
        }
    }

    pub(crate) fn fixture(config: DecideConfig) -> Fixture {
        let keys = KeyStore::new(false);
        keys.set_source(
            Source::Flags,
            KeySet {
                admins: vec![digest("admin")],
                tenants: vec![
                    TenantKey {
                        digest: digest("acme-key"),
                        namespace: "acme".into(),
                        expires_at: None,
                    },
                    TenantKey {
                        digest: digest("globex-key"),
                        namespace: "globex".into(),
                        expires_at: None,
                    },
                ],
            },
        );
        Fixture {
            gw: Gateway {
                keys: Arc::new(keys),
                routes: Arc::new(RouteCache::new(Duration::from_secs(60), 4)),
                pods: Arc::new(PodStore::default()),
                activity: Arc::new(ActivityTracker::default()),
                metrics: Arc::new(Metrics::default()),
                clusters: Arc::new(ClusterStore::new("home", Arc::new(Metrics::default()))),
                dns: Arc::new(DnsCache::system(
                    Duration::from_secs(30),
                    Duration::from_secs(1),
                )),
                key_failures: Arc::new(FailureLimiter::new(3, Duration::from_secs(60))),
                tokens: Arc::new(crate::tokens::tests::keys(vec![crate::tokens::tests::key(
                    "k1", 1,
                )])),
                holds: Arc::new(crate::hold::Holds::new(
                    crate::hold::HoldConfig::OFF,
                    None,
                    Arc::new(Metrics::default()),
                )),
                config,
            },
        }
    }

    impl Fixture {
        pub(crate) fn decision(&self, key: &str, id: &str, port: u32, forwarded: bool) -> Decision {
            self.keeping(key, id, port, forwarded).0
        }

        /// A running Pod `acme/name` serving `id` at `ip`.
        fn running(&self, name: &str, id: &str, ip: &str) {
            self.gw
                .pods
                .apply(pod("acme", name, Some(id), Phase::Running, Some(ip)));
        }

        fn keeping(
            &self,
            key: &str,
            id: &str,
            port: u32,
            forwarded: bool,
        ) -> (Decision, Option<Keep>) {
            // Nothing below awaits unless a peer's host needs DNS, which these tests avoid.
            futures::executor::block_on(self.gw.decide_keeping(Facts {
                api_key: key,
                sandbox_id: id,
                port,
                forwarded,
                client: Some(IpAddr::from([192, 0, 2, 1])),
                other_credentials: &[],
                e2b: false,
                access_token: "",
            }))
        }

        fn decide(&self, key: &str, id: &str, port: u32) -> Result<String, DenyCode> {
            match self.decision(key, id, port, false) {
                Decision::Route { destination, .. } => Ok(destination),
                Decision::Forward(f) => Ok(format!("forward {}", f.destination)),
                Decision::Deny(d) => Err(d.code),
            }
        }
    }

    const U: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn unix_now() -> u64 {
        u64::try_from(Timestamp::now().as_second()).unwrap()
    }

    impl Fixture {
        /// A token for `id`'s `ports` in `namespace`, minted now (by the tenant key `minter`).
        fn token(&self, namespace: &str, id: &str, ports: &[u16], minter: Option<&str>) -> String {
            let minted_by = minter.map(|k| (KeyStore::prefix_of(k), None));
            let mint = crate::tokens::Mint {
                namespace,
                sandbox_id: id,
                ports: ports.to_vec(),
                ttl: None,
                minted_by,
            };
            self.gw.tokens.mint(&mint, unix_now()).unwrap().token
        }

        fn with_token(&self, token: &str, id: &str, port: u32) -> (Decision, Option<Keep>) {
            futures::executor::block_on(self.gw.decide_keeping(Facts {
                api_key: "",
                sandbox_id: id,
                port,
                forwarded: false,
                client: Some(IpAddr::from([192, 0, 2, 1])),
                other_credentials: &[],
                e2b: false,
                access_token: token,
            }))
        }

        fn by_token(&self, token: &str, id: &str, port: u32) -> Result<String, DenyCode> {
            match self.with_token(token, id, port).0 {
                Decision::Route { destination, .. } => Ok(destination),
                Decision::Forward(f) => Ok(format!("forward {}", f.destination)),
                Decision::Deny(d) => Err(d.code),
            }
        }
    }

    #[test]
    fn a_token_opens_its_sandbox_and_ports_only_in_its_namespace() {
        let f = fixture(FALLBACK);
        f.running("p1", "sb", "10.0.0.7");
        f.running("p2", "sb-other", "10.0.0.8");
        let t = f.token("acme", "sb", &[8080, 49983], None);
        assert_eq!(f.by_token(&t, "sb", 8080), Ok("10.0.0.7:8080".into()));
        assert_eq!(f.by_token(&t, "sb", 49983), Ok("10.0.0.7:49983".into()));
        assert_eq!(
            f.by_token(&t, "sb", 80),
            Err(DenyCode::AccessTokenOutOfScope)
        );
        assert_eq!(
            f.by_token(&t, "sb-other", 8080),
            Err(DenyCode::AccessTokenOutOfScope)
        );
        // A token for every port, but of another tenant than the sandbox's Pod.
        let globex = f.token("globex", "sb", &[], None);
        assert_eq!(f.by_token(&globex, "sb", 1), Err(DenyCode::Forbidden));
        let all = f.token("acme", "sb", &[], None);
        assert_eq!(f.by_token(&all, "sb", 1), Ok("10.0.0.7:1".into()));
        // A key wins over a token; no credential at all is a missing one.
        assert_eq!(
            f.by_token("sgt1.junk", "sb", 80),
            Err(DenyCode::InvalidAccessToken)
        );
        assert_eq!(f.by_token("", "sb", 80), Err(DenyCode::MissingApiKey));
        // Bad tokens are no key guesses: the limiter (3 per window here) never hears of them.
        for _ in 0..5 {
            f.by_token("sgt1.junk", "sb", 80).unwrap_err();
        }
        assert_eq!(f.by_token(&t, "sb", 8080), Ok("10.0.0.7:8080".into()));
    }

    #[test]
    fn a_token_dies_with_the_tenant_key_that_minted_it() {
        let f = fixture(FALLBACK);
        f.running("p1", "sb", "10.0.0.7");
        let t = f.token("acme", "sb", &[], Some("acme-key"));
        assert_eq!(f.by_token(&t, "sb", 80), Ok("10.0.0.7:80".into()));
        // Another namespace's key of the same prefix cannot keep it alive: the namespace counts.
        let foreign = f.token("globex", "sb", &[], Some("acme-key"));
        assert_eq!(
            f.by_token(&foreign, "sb", 80),
            Err(DenyCode::InvalidAccessToken)
        );
        // The key revoked (the fixture's keys replaced without it).
        f.gw.keys.set_source(
            crate::keys::Source::Flags,
            KeySet {
                admins: vec![digest("admin")],
                tenants: vec![],
            },
        );
        assert_eq!(f.by_token(&t, "sb", 80), Err(DenyCode::InvalidAccessToken));
    }

    #[test]
    fn a_kept_token_answer_ends_with_the_token_and_its_keys_change_the_generation() {
        let f = fixture(FALLBACK);
        f.running("p1", "sb", "10.0.0.7");
        let t = f.token("acme", "sb", &[], None);
        let (d, keep) = f.with_token(&t, "sb", 80);
        assert!(matches!(d, Decision::Route { .. }));
        let keep = keep.unwrap();
        let expires = crate::tokens::tests::expiry(&t);
        assert_eq!(keep.until.map(|u| u.as_second()), Some(expires as i64));
        let before = f.gw.generation(keep.bucket);
        f.gw.tokens.set_source(crate::tokens::Source::File, vec![]);
        assert_ne!(f.gw.generation(keep.bucket), before);
        assert_eq!(f.by_token(&t, "sb", 80), Err(DenyCode::InvalidAccessToken));
    }

    #[test]
    fn other_clusters_ids_are_forwarded_after_authentication() {
        let f = fixture(FALLBACK);
        f.gw.clusters
            .apply(
                crate::clusters::Source::File,
                "clusters:\n- {id: c2, gateway: {dataURL: 'https://gw2.test:8443/edge', headers: {x-peer: p}}}\n- {id: nogw}\nhostAliases: [{ip: 127.0.0.5, hostnames: [gw2.test]}]",
            )
            .unwrap();
        let id = format!("c2.{U}");
        assert_eq!(f.decide("", &id, 80), Err(DenyCode::MissingApiKey));
        assert_eq!(f.decide("wrong", &id, 80), Err(DenyCode::InvalidApiKey));
        let Decision::Forward(fwd) = f.decision("acme-key", &id, 80, false) else {
            panic!("not forwarded");
        };
        assert_eq!(fwd.destination, "127.0.0.5:8443");
        assert_eq!(fwd.authority, "gw2.test:8443");
        assert_eq!(fwd.path_prefix, "/edge");
        assert_eq!(fwd.upstream, sandgate_core::PeerUpstream::Tls);
        assert_eq!(fwd.headers, vec![("x-peer".to_string(), "p".to_string())]);
        assert_eq!(fwd.from_cluster, "home");
        assert!(
            f.gw.activity.is_empty(),
            "the peer gateway touches its own sandbox"
        );
        // Once crossed, never again.
        let Decision::Deny(d) = f.decision("acme-key", &id, 80, true) else {
            panic!("forwarded twice");
        };
        assert_eq!(d.code, DenyCode::ForwardLoop);
        assert!(d.message.contains("c2"), "{}", d.message);
        let unknown = f.decision("acme-key", &format!("c9.{U}"), 80, false);
        assert!(
            matches!(unknown, Decision::Deny(d) if d.code == DenyCode::UnknownCluster && d.message.contains("c9"))
        );
        assert_eq!(
            f.decide("acme-key", &format!("nogw.{U}"), 80),
            Err(DenyCode::PeerUnavailable)
        );
    }

    #[test]
    fn answers_say_how_a_cache_may_keep_them() {
        let f = fixture(FALLBACK);
        f.running("p1", "sb", "10.0.0.1");
        let (d, keep) = f.keeping("acme-key", "sb", 80, false);
        assert!(matches!(d, Decision::Route { .. }));
        let keep = keep.expect("a route is kept");
        assert_eq!(keep.bucket, generation::bucket("sb"));
        assert_eq!(keep.generation, f.gw.generation(keep.bucket));
        assert_eq!(keep.until, None);
        let local = f.keeping("acme-key", &format!("home.{U}"), 80, false).1;
        assert_eq!(local.map(|k| k.bucket), Some(generation::bucket(U)));
        // A change to the sandbox's Pod moves the generation the next answer carries.
        f.gw.pods
            .apply(pod("acme", "p1", Some("sb"), Phase::Stopping, None));
        let (_, later) = f.keeping("acme-key", "sb", 80, false);
        assert_ne!(later.map(|k| k.generation), Some(keep.generation));
        // Refusals about the request are kept; one about this client is not.
        assert!(f.keeping("acme-key", "nope", 80, false).1.is_some());
        assert!(f.keeping("wrong", "sb", 80, false).1.is_some());
        for _ in 0..3 {
            f.keeping("wrong", "sb", 80, false);
        }
        let (d, keep) = f.keeping("acme-key", "sb", 80, false);
        assert!(matches!(d, Decision::Deny(d) if d.code == DenyCode::TooManyKeyFailures));
        assert_eq!(keep, None);
    }

    #[test]
    fn a_kept_answer_ends_with_its_key() {
        let f = fixture(FALLBACK);
        let expires: Timestamp = "2099-01-01T00:00:00Z".parse().unwrap();
        f.gw.keys.set_source(
            Source::KeysFile,
            KeySet {
                admins: vec![],
                tenants: vec![TenantKey {
                    digest: digest("short-key"),
                    namespace: "acme".into(),
                    expires_at: Some(expires),
                }],
            },
        );
        f.running("p1", "sb", "10.0.0.1");
        let keep = f.keeping("short-key", "sb", 80, false).1;
        assert_eq!(keep.and_then(|k| k.until), Some(expires));
        let forward_cfg = "clusters:\n- {id: c2, gateway: {dataURL: 'http://127.0.0.5:80'}}";
        f.gw.clusters
            .apply(crate::clusters::Source::File, forward_cfg)
            .unwrap();
        let (d, keep) = f.keeping("short-key", &format!("c2.{U}"), 80, false);
        assert!(matches!(d, Decision::Forward(_)));
        assert_eq!(keep, None, "a forward is decided again by the peer");
    }

    #[test]
    fn invalid_keys_are_limited_per_client_and_then_valid_ones_too() {
        let f = fixture(FALLBACK);
        f.running("p1", "sb", "10.0.0.7");
        for _ in 0..3 {
            assert_eq!(f.decide("guess", "sb", 80), Err(DenyCode::InvalidApiKey));
        }
        // Missing and expired keys are no guesses; a bad request is refused before any of it.
        assert_eq!(f.decide("", "sb", 80), Err(DenyCode::TooManyKeyFailures));
        assert_eq!(
            f.decide("acme-key", "sb", 80),
            Err(DenyCode::TooManyKeyFailures)
        );
        assert_eq!(
            f.decide("acme-key", "bad/id", 80),
            Err(DenyCode::InvalidSandboxId)
        );
        // Another client is not affected.
        let other = futures::executor::block_on(f.gw.decide(Facts {
            api_key: "acme-key",
            sandbox_id: "sb",
            port: 80,
            forwarded: false,
            client: Some(IpAddr::from([192, 0, 2, 2])),
            other_credentials: &[],
            e2b: false,
            access_token: "",
        }));
        assert!(matches!(other, Decision::Route { .. }));
    }

    #[test]
    fn a_gateway_key_beside_the_one_that_authenticated_is_stripped_an_app_token_is_not() {
        let f = fixture(FALLBACK);
        f.running("p1", "sb", "10.0.0.7");
        let strip = |other: &str| {
            let d = futures::executor::block_on(f.gw.decide(Facts {
                api_key: "acme-key",
                sandbox_id: "sb",
                port: 80,
                forwarded: false,
                client: Some(IpAddr::from([192, 0, 2, 1])),
                other_credentials: &[other],
                e2b: false,
                access_token: "",
            }));
            match d {
                Decision::Route {
                    strip_credentials, ..
                } => strip_credentials == 1,
                other => panic!("not routed: {other:?}"),
            }
        };
        assert!(strip("admin"), "the admin key");
        assert!(strip("globex-key"), "another tenant's key");
        assert!(!strip("app-token"), "the sandbox app's own credential");
        // Checking it is no key guess: the limiter never hears of it.
        for _ in 0..5 {
            strip("app-token");
        }
        assert_eq!(f.decide("acme-key", "sb", 80), Ok("10.0.0.7:80".into()));
    }

    #[test]
    fn the_local_prefix_is_stripped_before_lookup() {
        let f = fixture(FALLBACK);
        f.running("p1", U, "10.0.0.7");
        assert_eq!(
            f.decide("acme-key", &format!("home.{U}"), 80),
            Ok("10.0.0.7:80".into())
        );
        assert_eq!(f.decide("acme-key", U, 80), Ok("10.0.0.7:80".into()));
        // A request that crossed may still reach a local sandbox.
        assert!(matches!(
            f.decision("acme-key", &format!("home.{U}"), 80, true),
            Decision::Route { .. }
        ));
        assert!(f.gw.activity.get(U).is_some());
        // Uppercase UUID: a different id, the same cluster rule.
        assert_eq!(
            f.decide("acme-key", &format!("home.{}", U.to_ascii_uppercase()), 80),
            Err(DenyCode::SandboxNotFound)
        );
    }

    pub(crate) const FALLBACK: DecideConfig = DecideConfig {
        index_fallback: true,
        armed_gate: false,
        not_found_502: false,
        wake_unknown: false,
    };

    #[test]
    fn routes_by_push_and_by_index() {
        let f = fixture(DecideConfig::default());
        f.running("p1", "sb", "10.0.0.7");
        assert_eq!(
            f.decide("acme-key", "sb", 8080),
            Err(DenyCode::SandboxNotFound)
        );
        f.gw.routes.push("sb", "acme", "p1");
        assert_eq!(f.decide("acme-key", "sb", 8080), Ok("10.0.0.7:8080".into()));
        assert!(
            f.gw.activity.get("sb").is_some(),
            "a routed request touches"
        );

        let f = fixture(FALLBACK);
        f.running("p1", "sb", "fd00::7");
        assert_eq!(f.decide("admin", "sb", 80), Ok("[fd00::7]:80".into()));
        assert_eq!(
            f.decide("admin", "other", 80),
            Err(DenyCode::SandboxNotFound)
        );
    }

    #[test]
    fn refuses_in_contract_order() {
        let f = fixture(FALLBACK);
        f.gw.pods.apply(pod(
            "globex",
            "p1",
            Some("sb"),
            Phase::Running,
            Some("10.0.0.7"),
        ));
        assert_eq!(f.decide("", "bad/id", 80), Err(DenyCode::InvalidSandboxId));
        assert_eq!(f.decide("", "sb", 70000), Err(DenyCode::InvalidPort));
        assert_eq!(f.decide("", "sb", 0), Err(DenyCode::MissingPort));
        assert_eq!(f.decide("", "sb", 80), Err(DenyCode::MissingApiKey));
        assert_eq!(f.decide("wrong", "sb", 80), Err(DenyCode::InvalidApiKey));
        assert_eq!(f.decide("acme-key", "sb", 80), Err(DenyCode::Forbidden));
        assert_eq!(f.decide("globex-key", "sb", 80), Ok("10.0.0.7:80".into()));
        assert!(f.gw.activity.get("sb").is_some());
        f.gw.activity.retain(|_| false);
        assert_eq!(f.decide("acme-key", "sb", 80), Err(DenyCode::Forbidden));
        assert!(f.gw.activity.is_empty(), "a refused request never touches");
    }

    #[test]
    fn not_routable_is_502() {
        let f = fixture(FALLBACK);
        for (id, phase, ip, want) in [
            (
                "starting",
                Phase::Starting,
                Some("10.0.0.1"),
                DenyCode::SandboxNotReady,
            ),
            (
                "idle",
                Phase::Idle,
                Some("10.0.0.1"),
                DenyCode::SandboxNotReady,
            ),
            (
                "failed",
                Phase::Failed,
                Some("10.0.0.1"),
                DenyCode::SandboxNotReady,
            ),
            (
                "unknown",
                Phase::Unknown,
                Some("10.0.0.1"),
                DenyCode::SandboxNotReady,
            ),
            ("noip", Phase::Running, None, DenyCode::SandboxNoIp),
        ] {
            f.gw.pods.apply(pod("acme", id, Some(id), phase, ip));
            assert_eq!(f.decide("admin", id, 80), Err(want), "{id}");
        }
        f.gw.pods.apply(pod(
            "acme",
            "stopping",
            Some("stopping"),
            Phase::Stopping,
            Some("10.0.0.2"),
        ));
        assert_eq!(f.decide("admin", "stopping", 80), Ok("10.0.0.2:80".into()));
    }

    #[test]
    fn pushed_route_never_reaches_a_reused_pod() {
        let f = fixture(DecideConfig::default());
        f.gw.routes.push("sb", "acme", "p1");
        assert_eq!(
            f.decide("admin", "sb", 80),
            Err(DenyCode::SandboxPodMissing)
        );
        f.running("p1", "other", "10.0.0.9");
        assert_eq!(
            f.decide("admin", "sb", 80),
            Err(DenyCode::SandboxReassigned)
        );
        f.gw.pods
            .apply(pod("acme", "p1", None, Phase::Idle, Some("10.0.0.9")));
        assert_eq!(
            f.decide("admin", "sb", 80),
            Err(DenyCode::SandboxReassigned)
        );
    }

    #[test]
    fn tenant_is_checked_against_the_pushed_namespace() {
        let f = fixture(DecideConfig::default());
        f.gw.routes.push("sb", "globex", "p1");
        assert_eq!(f.decide("acme-key", "sb", 80), Err(DenyCode::Forbidden));
        assert_eq!(
            f.decide("globex-key", "sb", 80),
            Err(DenyCode::SandboxPodMissing)
        );
    }

    #[test]
    fn armed_gate() {
        let f = fixture(DecideConfig {
            armed_gate: true,
            ..FALLBACK
        });
        let mut p = pod("acme", "p1", Some("sb"), Phase::Running, Some("10.0.0.1"));
        f.gw.pods.apply(p.clone());
        assert_eq!(f.decide("admin", "sb", 80), Err(DenyCode::SandboxNotArmed));
        p.armed_for = Some("previous-sandbox".into());
        p.resource_version = 2;
        f.gw.pods.apply(p.clone());
        assert_eq!(f.decide("admin", "sb", 80), Err(DenyCode::SandboxNotArmed));
        p.armed_for = Some("sb".into());
        p.resource_version = 3;
        f.gw.pods.apply(p.clone());
        assert_eq!(f.decide("admin", "sb", 80), Ok("10.0.0.1:80".into()));
        p.phase = Phase::Stopping;
        p.armed_for = None;
        p.resource_version = 4;
        f.gw.pods.apply(p);
        assert_eq!(
            f.decide("admin", "sb", 80),
            Ok("10.0.0.1:80".into()),
            "stopping is exempt"
        );
    }

    #[test]
    fn index_prefers_a_routable_pod_and_the_callers_namespace() {
        let f = fixture(FALLBACK);
        f.gw.pods.apply(pod(
            "acme",
            "old",
            Some("sb"),
            Phase::Failed,
            Some("10.0.0.1"),
        ));
        f.running("new", "sb", "10.0.0.2");
        assert_eq!(f.decide("acme-key", "sb", 80), Ok("10.0.0.2:80".into()));
        f.gw.pods.apply(pod(
            "globex",
            "dup",
            Some("sb2"),
            Phase::Running,
            Some("10.0.0.3"),
        ));
        f.gw.pods.apply(pod(
            "acme",
            "mine",
            Some("sb2"),
            Phase::Starting,
            Some("10.0.0.4"),
        ));
        assert_eq!(
            f.decide("acme-key", "sb2", 80),
            Err(DenyCode::SandboxNotReady)
        );
    }
}
