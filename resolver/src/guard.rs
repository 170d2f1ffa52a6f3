//! The bearer guard in front of the resolver's gRPC listeners: a call passes only with
//! `authorization: Bearer <credential>` that the listener's [`Credential`] accepts — the admin
//! key on the control port, the internal token on the gRPC port (Resolve, the filter's cache
//! calls, ext_proc, the activity access log).
//!
//! Two variations, each chosen by the listener's wiring:
//! * the control port also accepts the admin key as the whole `authorization` value, without
//!   `Bearer ` ([`BearerGuard::accepting_raw`]): the Go gateway's control plane did, so a Go
//!   controller may send it so. The gRPC port stays Bearer-only: its only client is our own
//!   Envoy, which always sends `Bearer`, so a raw form there would widen what is accepted for
//!   no caller.
//! * `go-compat`'s gRPC port with no internal token configured admits every call
//!   ([`BearerGuard::open`]), as the Go gateway's did (its chart's Envoy sends no token).
//!
//! Owns the check and what a refusal looks like: UNAUTHENTICATED, counted in
//! `sandgate_unauthenticated_calls_total{listener, reason}`, logged at debug (a caller
//! hammering the port must not flood the log). Nothing here logs what was presented.

use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::keys::KeyStore;
use crate::keys::internal::InternalTokens;
use crate::metrics::Metrics;

/// What a guarded listener accepts.
pub trait Credential: Send + Sync {
    /// What it is called in refusals: "admin key", "internal token".
    fn name(&self) -> &'static str;
    /// Whether `presented` (the bearer token, non-empty) is accepted.
    fn accepts(&self, presented: &str) -> bool;
}

/// The control plane's credential: any admin key.
pub struct AdminKey(pub Arc<KeyStore>);

impl Credential for AdminKey {
    fn name(&self) -> &'static str {
        "admin key"
    }

    fn accepts(&self, presented: &str) -> bool {
        self.0.is_admin(presented)
    }
}

impl Credential for InternalTokens {
    fn name(&self) -> &'static str {
        "internal token"
    }

    fn accepts(&self, presented: &str) -> bool {
        InternalTokens::accepts(self, presented)
    }
}

/// Admits a call only with `authorization: Bearer <credential>`; a tonic interceptor, for one
/// service ([`tonic::service::interceptor::InterceptedService`]) or a whole listener
/// ([`tonic::service::InterceptorLayer`]).
#[derive(Clone)]
pub struct BearerGuard {
    /// `None`: an open listener, every call admitted ([`BearerGuard::open`]).
    credential: Option<Arc<dyn Credential>>,
    /// Whether the credential is also accepted as the whole `authorization` value.
    raw: bool,
    /// The `listener` label of the refusal counter.
    listener: &'static str,
    metrics: Arc<Metrics>,
}

impl BearerGuard {
    pub fn new(
        listener: &'static str,
        credential: Arc<dyn Credential>,
        metrics: Arc<Metrics>,
    ) -> Self {
        BearerGuard {
            credential: Some(credential),
            raw: false,
            listener,
            metrics,
        }
    }

    /// Also accepts the credential as the whole `authorization` value (trimmed), without
    /// `Bearer `, as the Go gateway's control plane did.
    pub fn accepting_raw(self) -> Self {
        BearerGuard { raw: true, ..self }
    }

    /// A guard that admits every call, whatever it carries: only `go-compat`'s gRPC port
    /// without an internal token (announced loudly at start-up).
    pub fn open(listener: &'static str, metrics: Arc<Metrics>) -> Self {
        BearerGuard {
            credential: None,
            raw: false,
            listener,
            metrics,
        }
    }

    /// The credential an `authorization` value presents: the bearer token, or (raw accepted)
    /// the whole value; a bare `Bearer` presents nothing.
    fn presented<'a>(&self, value: &'a str) -> Option<&'a str> {
        if let Some(token) = sandgate_core::bearer_token(value) {
            return Some(token);
        }
        let value = value.trim();
        (self.raw && !value.is_empty() && !value.eq_ignore_ascii_case("bearer")).then_some(value)
    }

    /// `Ok` when the call may pass; otherwise the refusal, already counted and logged.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(credential) = &self.credential else {
            return Ok(());
        };
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| self.presented(v));
        let name = credential.name();
        let (reason, status) = match presented {
            Some(k) if credential.accepts(k) => return Ok(()),
            Some(_) => (
                "invalid",
                Status::unauthenticated(format!("the {name} is not valid")),
            ),
            None => (
                "missing",
                Status::unauthenticated(format!(
                    "an {name} is required: authorization: Bearer <{name}>"
                )),
            ),
        };
        self.metrics.unauthenticated(self.listener, reason);
        tracing::debug!(
            listener = self.listener,
            reason,
            "gRPC call refused: no valid {name}"
        );
        Err(status)
    }
}

impl Interceptor for BearerGuard {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        self.check(req.metadata()).map(|()| req)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::keys::{KeySet, Source, digest};

    fn metadata(authorization: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(a) = authorization {
            m.insert("authorization", a.parse().unwrap());
        }
        m
    }

    #[test]
    fn the_internal_token_guard_admits_only_its_token_and_counts_the_rest() {
        let metrics = Arc::new(Metrics::default());
        let guard = BearerGuard::new(
            "grpc",
            Arc::new(InternalTokens::new(&["tok-1"])),
            Arc::clone(&metrics),
        );
        assert!(guard.check(&metadata(Some("Bearer tok-1"))).is_ok());
        assert!(guard.check(&metadata(Some("bearer  tok-1 "))).is_ok());
        // Four without a bearer token at all, two with a wrong one.
        for auth in [
            None,
            Some("Bearer"),
            Some("Basic tok-1"),
            Some("tok-1"),
            Some("Bearer tok-2"),
            Some("Bearer tok-1x"),
        ] {
            let refused = guard.check(&metadata(auth)).unwrap_err();
            assert_eq!(refused.code(), Code::Unauthenticated, "{auth:?}");
            assert!(refused.message().contains("internal token"), "{auth:?}");
            assert!(
                !refused.message().contains("tok-"),
                "never echoes what was sent"
            );
        }
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"sandgate_unauthenticated_calls_total{listener="grpc",reason="missing"} 4"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"sandgate_unauthenticated_calls_total{listener="grpc",reason="invalid"} 2"#
        ));
    }

    #[test]
    fn without_a_token_every_call_is_refused() {
        let guard = BearerGuard::new(
            "grpc",
            Arc::new(InternalTokens::new::<&str>(&[])),
            Arc::new(Metrics::default()),
        );
        for auth in [
            None,
            Some("Bearer "),
            Some("Bearer x"),
            Some("Bearer tok-1"),
        ] {
            let refused = guard.check(&metadata(auth)).unwrap_err();
            assert_eq!(refused.code(), Code::Unauthenticated, "{auth:?}");
        }
    }

    #[test]
    fn the_admin_guard_accepts_the_raw_key_too_and_only_when_asked() {
        let keys = Arc::new(KeyStore::new(false));
        keys.set_source(
            Source::Flags,
            KeySet {
                admins: vec![digest("adm")],
                tenants: vec![],
            },
        );
        let admin = Arc::new(AdminKey(keys));
        let bearer_only = BearerGuard::new("control", admin.clone(), Arc::new(Metrics::default()));
        assert!(bearer_only.check(&metadata(Some("adm"))).is_err());
        let metrics = Arc::new(Metrics::default());
        let raw = BearerGuard::new("control", admin, Arc::clone(&metrics)).accepting_raw();
        for ok in ["Bearer adm", "bearer  adm", "adm", " adm "] {
            assert!(raw.check(&metadata(Some(ok))).is_ok(), "{ok:?}");
        }
        // Three without a credential, five with a wrong one.
        for auth in [
            None,
            Some("Bearer"),
            Some(" "),
            Some("adm2"),
            Some("Bearer adm2"),
            Some("Basic adm"),
            Some("admx"),
            Some("Bearer adm adm"),
        ] {
            let refused = raw.check(&metadata(auth)).unwrap_err();
            assert_eq!(refused.code(), Code::Unauthenticated, "{auth:?}");
            assert!(!refused.message().contains("adm2"), "never echoes");
        }
        let text = metrics.encode();
        assert!(text.contains(
            r#"sandgate_unauthenticated_calls_total{listener="control",reason="missing"} 3"#
        ));
        assert!(text.contains(
            r#"sandgate_unauthenticated_calls_total{listener="control",reason="invalid"} 5"#
        ));
    }

    #[test]
    fn an_open_guard_admits_everything() {
        let guard = BearerGuard::open("grpc", Arc::new(Metrics::default()));
        for auth in [None, Some("Bearer x"), Some("x")] {
            assert!(guard.check(&metadata(auth)).is_ok(), "{auth:?}");
        }
    }

    #[test]
    fn the_admin_guard_keeps_its_messages() {
        let keys = Arc::new(KeyStore::new(false));
        keys.set_source(
            Source::Flags,
            KeySet {
                admins: vec![digest("adm")],
                tenants: vec![],
            },
        );
        let guard = BearerGuard::new(
            "control",
            Arc::new(AdminKey(keys)),
            Arc::new(Metrics::default()),
        );
        assert!(guard.check(&metadata(Some("Bearer adm"))).is_ok());
        assert_eq!(
            guard
                .check(&metadata(Some("Bearer no")))
                .unwrap_err()
                .message(),
            "the admin key is not valid"
        );
        assert_eq!(
            guard.check(&metadata(None)).unwrap_err().message(),
            "an admin key is required: authorization: Bearer <admin key>"
        );
    }
}
