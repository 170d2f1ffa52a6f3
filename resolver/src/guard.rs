//! The bearer guard in front of the resolver's gRPC listeners: a call passes only with
//! `authorization: Bearer <credential>` that the listener's [`Credential`] accepts — the admin
//! key on the control port, the internal token on the gRPC port (Resolve, the filter's cache
//! calls, ext_proc, the activity access log).
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
    credential: Arc<dyn Credential>,
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
            credential,
            listener,
            metrics,
        }
    }

    /// `Ok` when the call may pass; otherwise the refusal, already counted and logged.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(sandgate_core::bearer_token);
        let name = self.credential.name();
        let (reason, status) = match presented {
            Some(k) if self.credential.accepts(k) => return Ok(()),
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
