//! Minting on behalf of a caller: who may have a token for which sandbox. The one path for
//! every way a token is asked for (ControlPlaneService.MintAccessToken with the admin key, the
//! tenant endpoint on the HTTP port, `sandgate-resolver ctl token`).
//!
//! An admin may mint for any sandbox, naming its namespace or taking the one of the Pod that
//! serves it now; a tenant only for a sandbox its own namespace serves now, and the token is
//! bound to the tenant's key (it dies when the key is revoked and never outlives it).

use std::time::Duration;

use jiff::Timestamp;
use sandgate_core::{Deny, DenyCode, check_port, validate_sandbox_id};

use super::{Mint, MintError, Minted};
use crate::decide::Gateway;
use crate::keys::{KeyStore, Principal};

/// What is asked for; `namespace` empty: the sandbox's own.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest<'a> {
    pub sandbox_id: &'a str,
    pub namespace: &'a str,
    pub ports: &'a [u32],
    pub ttl: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The caller may not have it, or asked for nonsense: answered as the table says.
    #[error("{0}")]
    Refused(Deny),
    /// This resolver cannot mint at all (no signing key).
    #[error("{0}")]
    Unavailable(MintError),
}

impl Gateway {
    /// A token for `request`, minted for the caller who presented `key` as `principal`.
    pub fn issue_token(
        &self,
        principal: &Principal,
        key: Option<&str>,
        request: &TokenRequest<'_>,
    ) -> Result<Minted, IssueError> {
        let refused = IssueError::Refused;
        let id = validate_sandbox_id(request.sandbox_id).map_err(refused)?;
        let mut ports = Vec::with_capacity(request.ports.len());
        for p in request.ports {
            ports.push(check_port(*p).map_err(refused)?);
        }
        let serving = self.sandbox_namespace(id);
        let namespace = match (principal, request.namespace) {
            (Principal::Admin, "") => serving.ok_or_else(|| {
                refused(Deny::new(
                    DenyCode::SandboxNotFound,
                    format!("sandbox {id} was not found; name its namespace to mint anyway"),
                ))
            })?,
            (Principal::Admin, named) => named.to_string(),
            (Principal::Tenant { namespace, .. }, named) => {
                let own = serving.filter(|s| s == &**namespace).ok_or_else(|| {
                    refused(Deny::new(
                        DenyCode::SandboxNotFound,
                        format!("sandbox {id} was not found among this key's sandboxes"),
                    ))
                })?;
                if !named.is_empty() && named != own {
                    return Err(refused(Deny::new(
                        DenyCode::Forbidden,
                        "a tenant key mints tokens for its own namespace only",
                    )));
                }
                own
            }
        };
        let minted_by = match principal {
            Principal::Admin => None,
            Principal::Tenant { expires_at, .. } => Some((
                KeyStore::prefix_of(key.unwrap_or_default()),
                expires_at.and_then(|t| u64::try_from(t.as_second()).ok()),
            )),
        };
        let now = u64::try_from(Timestamp::now().as_second()).unwrap_or(0);
        let mint = Mint {
            namespace: &namespace,
            sandbox_id: id,
            ports,
            ttl: request.ttl,
            minted_by,
        };
        self.tokens
            .mint(&mint, now)
            .map_err(|e| match e {
                MintError::NoSigningKey => IssueError::Unavailable(e),
                MintError::Invalid(why) => refused(Deny::new(
                    DenyCode::Forbidden,
                    format!("cannot mint: {why}"),
                )),
            })
            .inspect(|m| {
                tracing::info!(
                    sandbox_id = id,
                    namespace = %m.claims.namespace,
                    ports = ?m.claims.ports,
                    expires_at = m.claims.expires_at,
                    by_tenant = m.claims.minted_by.is_some(),
                    "access token minted"
                );
            })
    }

    /// The namespace of the Pod serving `id` now: its pushed route's, else the sandbox-id
    /// index's (a routable Pod first).
    fn sandbox_namespace(&self, id: &str) -> Option<String> {
        if let Some(route) = self.routes.get(id) {
            return Some(route.namespace.to_string());
        }
        let mut pods = self.pods.by_sandbox(id);
        pods.sort_by_key(|p| u8::from(p.ip.is_none()));
        pods.first().map(|p| p.namespace.to_string())
    }
}
