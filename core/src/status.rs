//! The status table: every way a request can be refused, and what each means on the wire.
//! Entries must never map one cause to two statuses, so this is the only place statuses live.

/// gRPC status codes used by sandgate (numbers from the gRPC spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum GrpcCode {
    InvalidArgument = 3,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// One variant per client-visible cause of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyCode {
    MissingSandboxId,
    InvalidSandboxId,
    MissingPort,
    InvalidPort,
    /// The `:path` is not text (a byte 0x80–0xFF that is not UTF-8), so no sandbox can be
    /// read from it. Envoy's path normalisation escapes such bytes first where it is on.
    InvalidPath,
    /// A header that names the sandbox, the port or the key comes twice with different values.
    AmbiguousRequest,
    MissingApiKey,
    InvalidApiKey,
    ExpiredApiKey,
    /// An access token that is malformed, tampered with, signed by a key this gateway does
    /// not hold, or minted by a tenant key that was revoked.
    InvalidAccessToken,
    /// An access token past its expiry (or whose minting tenant key expired).
    ExpiredAccessToken,
    /// A valid access token for another sandbox or port.
    AccessTokenOutOfScope,
    /// A WebSocket upgrade authenticated by the token cookie came from an origin not on the
    /// allow-list (cross-site WebSocket hijacking).
    OriginNotAllowed,
    /// This client address presented too many invalid keys lately; no key is checked from it
    /// until the window passes (a valid key must not tell a guesser it was right).
    TooManyKeyFailures,
    Forbidden,
    SandboxNotFound,
    /// The sandbox's Pod is in a phase that does not serve traffic (idle, starting, failed).
    SandboxNotReady,
    /// The sandbox is running but its post-start set-up has not armed it yet.
    SandboxNotArmed,
    /// The Pod exists and is in a serving phase but has no IP yet.
    SandboxNoIp,
    /// The sandbox's port refused or reset the connection: Envoy answers this one itself
    /// (`local_reply_config` on an upstream connection failure), in the same JSON shape.
    PortNotOpen,
    /// A route names a Pod the resolver cannot see (not created yet, or gone).
    SandboxPodMissing,
    /// The routed Pod now carries another sandbox id (it was released and reused).
    SandboxReassigned,
    /// The id names a cluster this gateway has no peer entry for.
    UnknownCluster,
    /// The peer cluster is known but cannot be reached now (no gateway URL, its host does
    /// not resolve).
    PeerUnavailable,
    /// A request that already crossed from another gateway names yet another cluster.
    ForwardLoop,
    ResolverUnavailable,
    /// A held request's sandbox did not become routable within the hold budget.
    SandboxStarting,
    /// Too many requests are held already (for this sandbox, or in all): not held at all.
    TooManyWaiting,
}

impl DenyCode {
    pub const ALL: [DenyCode; 28] = [
        DenyCode::MissingSandboxId,
        DenyCode::InvalidSandboxId,
        DenyCode::MissingPort,
        DenyCode::InvalidPort,
        DenyCode::InvalidPath,
        DenyCode::AmbiguousRequest,
        DenyCode::MissingApiKey,
        DenyCode::InvalidApiKey,
        DenyCode::ExpiredApiKey,
        DenyCode::InvalidAccessToken,
        DenyCode::ExpiredAccessToken,
        DenyCode::AccessTokenOutOfScope,
        DenyCode::OriginNotAllowed,
        DenyCode::TooManyKeyFailures,
        DenyCode::Forbidden,
        DenyCode::SandboxNotFound,
        DenyCode::SandboxNotReady,
        DenyCode::SandboxNotArmed,
        DenyCode::SandboxNoIp,
        DenyCode::PortNotOpen,
        DenyCode::SandboxPodMissing,
        DenyCode::SandboxReassigned,
        DenyCode::UnknownCluster,
        DenyCode::PeerUnavailable,
        DenyCode::ForwardLoop,
        DenyCode::ResolverUnavailable,
        DenyCode::SandboxStarting,
        DenyCode::TooManyWaiting,
    ];

    /// (HTTP status, JSON code, gRPC code): the single source of truth for all three.
    const fn row(self) -> (u16, &'static str, GrpcCode) {
        use DenyCode::*;
        match self {
            MissingSandboxId => (400, "missing_sandbox_id", GrpcCode::InvalidArgument),
            InvalidSandboxId => (400, "invalid_sandbox_id", GrpcCode::InvalidArgument),
            MissingPort => (400, "missing_port", GrpcCode::InvalidArgument),
            InvalidPort => (400, "invalid_port", GrpcCode::InvalidArgument),
            InvalidPath => (400, "invalid_path", GrpcCode::InvalidArgument),
            AmbiguousRequest => (400, "ambiguous_request", GrpcCode::InvalidArgument),
            MissingApiKey => (401, "missing_api_key", GrpcCode::Unauthenticated),
            InvalidApiKey => (401, "invalid_api_key", GrpcCode::Unauthenticated),
            ExpiredApiKey => (401, "expired_api_key", GrpcCode::Unauthenticated),
            InvalidAccessToken => (401, "invalid_access_token", GrpcCode::Unauthenticated),
            ExpiredAccessToken => (401, "expired_access_token", GrpcCode::Unauthenticated),
            AccessTokenOutOfScope => (403, "access_token_out_of_scope", GrpcCode::PermissionDenied),
            OriginNotAllowed => (403, "origin_not_allowed", GrpcCode::PermissionDenied),
            TooManyKeyFailures => (429, "too_many_key_failures", GrpcCode::ResourceExhausted),
            Forbidden => (403, "forbidden", GrpcCode::PermissionDenied),
            SandboxNotFound => (404, "sandbox_not_found", GrpcCode::NotFound),
            SandboxNotReady => (502, "sandbox_not_ready", GrpcCode::FailedPrecondition),
            SandboxNotArmed => (502, "sandbox_not_armed", GrpcCode::FailedPrecondition),
            SandboxNoIp => (502, "sandbox_no_ip", GrpcCode::FailedPrecondition),
            PortNotOpen => (502, "port_not_open", GrpcCode::FailedPrecondition),
            SandboxPodMissing => (502, "sandbox_pod_missing", GrpcCode::FailedPrecondition),
            SandboxReassigned => (502, "sandbox_reassigned", GrpcCode::FailedPrecondition),
            UnknownCluster => (502, "unknown_cluster", GrpcCode::FailedPrecondition),
            PeerUnavailable => (502, "peer_unavailable", GrpcCode::FailedPrecondition),
            ForwardLoop => (502, "forward_loop", GrpcCode::FailedPrecondition),
            ResolverUnavailable => (503, "resolver_unavailable", GrpcCode::Unavailable),
            SandboxStarting => (503, "sandbox_starting", GrpcCode::Unavailable),
            TooManyWaiting => (503, "too_many_waiting", GrpcCode::Unavailable),
        }
    }

    /// Seconds a client should wait before trying again, sent as `Retry-After`: a sandbox
    /// still starting after the hold budget usually needs a moment more; a full waiting room
    /// empties within one.
    pub const fn retry_after(self) -> Option<u32> {
        match self {
            DenyCode::SandboxStarting => Some(5),
            DenyCode::TooManyWaiting => Some(1),
            _ => None,
        }
    }

    pub const fn http_status(self) -> u16 {
        self.row().0
    }

    /// The one other status a code may be answered with, by configuration or by the way a
    /// request was addressed: `sandbox_not_found` as 502, which the E2B SDK (and the Go
    /// gateway since) reads as "this sandbox is gone" where it raises on a 404.
    pub const fn alternative_status(self) -> Option<u16> {
        match self {
            DenyCode::SandboxNotFound => Some(502),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.row().1
    }

    pub const fn grpc_code(self) -> GrpcCode {
        self.row().2
    }

    /// Inverse of [`DenyCode::as_str`], for entries that receive the code over the wire.
    pub fn parse(code: &str) -> Option<DenyCode> {
        DenyCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl core::fmt::Display for DenyCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // The same tests run natively and, under `just wasm-test`, as 32-bit wasm in Node.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for (i, a) in DenyCode::ALL.iter().enumerate() {
            assert_eq!(DenyCode::parse(a.as_str()), Some(*a));
            for b in &DenyCode::ALL[i + 1..] {
                assert_ne!(a.as_str(), b.as_str());
            }
        }
        assert_eq!(DenyCode::parse("nope"), None);
    }

    #[test]
    fn statuses_follow_the_contract() {
        use DenyCode::*;
        let expect = [
            (
                400,
                &[
                    MissingSandboxId,
                    InvalidSandboxId,
                    MissingPort,
                    InvalidPort,
                    InvalidPath,
                    AmbiguousRequest,
                ][..],
            ),
            (
                401,
                &[
                    MissingApiKey,
                    InvalidApiKey,
                    ExpiredApiKey,
                    InvalidAccessToken,
                    ExpiredAccessToken,
                ][..],
            ),
            (
                403,
                &[Forbidden, AccessTokenOutOfScope, OriginNotAllowed][..],
            ),
            (429, &[TooManyKeyFailures][..]),
            (404, &[SandboxNotFound][..]),
            (
                502,
                &[
                    SandboxNotReady,
                    SandboxNotArmed,
                    SandboxNoIp,
                    PortNotOpen,
                    SandboxPodMissing,
                    SandboxReassigned,
                    UnknownCluster,
                    PeerUnavailable,
                    ForwardLoop,
                ][..],
            ),
            (
                503,
                &[ResolverUnavailable, SandboxStarting, TooManyWaiting][..],
            ),
        ];
        let mut seen = 0;
        for (status, codes) in expect {
            for c in codes {
                assert_eq!(c.http_status(), status, "{c}");
                seen += 1;
            }
        }
        assert_eq!(
            seen,
            DenyCode::ALL.len(),
            "every code has an expected status"
        );
        assert_eq!(Forbidden.grpc_code() as i32, 7);
        for c in DenyCode::ALL {
            assert_eq!(
                c.alternative_status().is_some(),
                c == SandboxNotFound,
                "{c}"
            );
        }
        assert_eq!(ResolverUnavailable.grpc_code() as i32, 14);
    }
}
