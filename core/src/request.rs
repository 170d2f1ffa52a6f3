//! Reading a client request: which API key it carries, which sandbox and port it wants, the
//! path the sandbox should see, and which headers must not reach the sandbox.
//!
//! Owns the request grammar shared by the wasm filter and the ext_proc entry, so both accept
//! and refuse exactly the same requests. It sees headers only through a lookup closure and
//! never allocates unless the path is rewritten.

use crate::token::{self, http_date, looks_like_token};
use crate::{
    Decision, Deny, DenyCode, Forward, HOP_HEADER, PRIVATE_HEADER_PREFIX, UPSTREAM_HEADER,
};
use crate::{parse_port, validate_sandbox_id};

/// Header names and path shape an entry reads; every field is configuration with a default.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct RequestGrammar {
    /// Headers that may carry the API key, tried in order before `authorization: Bearer`.
    pub key_headers: Vec<String>,
    /// Whether `authorization: Bearer <key>` is accepted, after every header in `key_headers`.
    pub bearer: bool,
    pub id_header: String,
    pub port_header: String,
    /// The path segment before `{id}/{port}`, e.g. `sandboxes` in `/v1/sandboxes/a/8080/x`.
    pub path_marker: String,
    /// Port used when the request names none; `None` makes a missing port a 400.
    pub default_port: Option<u16>,
    /// Domains under which a Host `{port}-{id}.{domain}` names a sandbox, the E2B SDK's own
    /// addressing (e.g. `sandgate.test` in the demo). Empty: the Host names nothing.
    pub e2b_domains: Vec<String>,
    /// Where an access token ([`crate::token`]) may be presented.
    pub tokens: TokenGrammar,
}

/// Where a request may carry an access token, read when it carries no API key, in this
/// order: the headers, the query parameter, the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct TokenGrammar {
    /// Headers whose value is a token when it has a token's prefix (any other value is the
    /// app's own). They pass on to the sandbox: the E2B SDK's `X-Access-Token` is envd's own
    /// credential, which envd checks itself.
    pub headers: Vec<String>,
    /// The query parameter; removed before the request goes on.
    pub query: String,
    /// The cookie the gateway sets on a top-level navigation that carried the query
    /// parameter; removed from `cookie` before the request goes on.
    pub cookie: String,
    /// Origins (`scheme://host[:port]`) a WebSocket upgrade authenticated by the cookie may
    /// come from, besides the gateway's own (the request's scheme and `:authority`).
    pub allowed_origins: Vec<String>,
}

impl Default for TokenGrammar {
    fn default() -> Self {
        TokenGrammar {
            headers: vec!["x-access-token".into(), "e2b-traffic-access-token".into()],
            query: "sandgate_token".into(),
            cookie: "sandgate_token".into(),
            allowed_origins: Vec::new(),
        }
    }
}

/// Where the access token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource<'h> {
    Header(&'h str),
    Query,
    Cookie,
}

/// The answer to a top-level navigation that carried its token in the query, once the token
/// routes: a redirect to the same address without it, setting the cookie, so the token
/// leaves the address bar and the history and the page's own requests carry the cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The client's path without the token parameter (relative to the request's origin).
    pub location: String,
    pub set_cookie: String,
}

impl Redirect {
    pub const STATUS: u16 = 303;

    /// The reply's headers (it has no body), the same from every entry.
    pub fn reply_headers(&self) -> [(&'static str, &str); 3] {
        [
            ("location", self.location.as_str()),
            ("set-cookie", self.set_cookie.as_str()),
            ("cache-control", "no-store"),
        ]
    }
}

/// The headers the E2B SDK sends on every envd request: gateway headers, like `x-sandbox-*`.
pub const E2B_ID_HEADER: &str = "e2b-sandbox-id";
pub const E2B_PORT_HEADER: &str = "e2b-sandbox-port";

/// A sandbox and port named outside the path, and whether the E2B way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Named<'a> {
    sandbox_id: &'a str,
    port: u16,
    e2b: bool,
    /// Where it was named, for a refusal's message.
    source: &'a str,
}

impl Default for RequestGrammar {
    fn default() -> Self {
        RequestGrammar {
            key_headers: vec!["agentbox-api-key".into(), "x-api-key".into()],
            bearer: true,
            id_header: "x-sandbox-id".into(),
            port_header: "x-sandbox-port".into(),
            path_marker: "sandboxes".into(),
            default_port: None,
            e2b_domains: Vec::new(),
            tokens: TokenGrammar::default(),
        }
    }
}

/// Where the API key was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource<'h> {
    Header(&'h str),
    Bearer,
}

/// What a valid request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target<'a> {
    /// The API key, or `None` when the request carries none (the resolver answers 401).
    pub api_key: Option<(&'a str, KeySource<'a>)>,
    pub sandbox_id: &'a str,
    pub port: u16,
    /// The `:path` the sandbox must see, when it differs from the client's.
    pub rewritten_path: Option<String>,
    /// The client's `:path`, as it came.
    pub path: &'a str,
    /// The request already crossed from another cluster's gateway ([`HOP_HEADER`]).
    pub forwarded: bool,
    /// The client sent [`UPSTREAM_HEADER`] itself: Envoy matched its route on a header only
    /// gateways may set, so once the header is removed the route must be matched again.
    pub rematch: bool,
    /// Credentials beside the key (header, value): a later key header's value or a bearer
    /// token that is not the key — the sandbox app's own, or another gateway key. Only the
    /// resolver knows which, so it is asked ([`Decision::Route`]'s `strip_credentials`).
    pub other_credentials: Vec<(&'a str, &'a str)>,
    /// The sandbox was named the E2B way ([`E2B_ID_HEADER`] or a `{port}-{id}.{domain}` Host):
    /// a missing sandbox is then 502, the E2B SDK's "gone".
    pub e2b: bool,
    /// The access token to present, when the request carries no API key.
    pub token: Option<(&'a str, TokenSource<'a>)>,
    /// The `cookie` header the sandbox must see when the request carried the token cookie:
    /// the other cookies, or `""` when there are none (the header goes).
    pub cookie: Option<String>,
    /// Answer a local route with this redirect instead of sending the request on.
    pub redirect: Option<Redirect>,
    /// The path names the sandbox (`/{marker}/{id}/{port}/...`): a forward keeps it.
    pub by_path: bool,
}

impl<'a> Target<'a> {
    /// The values of [`Target::other_credentials`], in order: what the resolver is asked about.
    pub fn other_credential_values(&self) -> Vec<&'a str> {
        self.other_credentials.iter().map(|(_, v)| *v).collect()
    }
}

/// How an entry carries out a decision that sends the request on: the destination it pins,
/// the `:path` a local route rewrites, the header writes of a forward in order (each after
/// every gateway header is removed), and whether the route must be matched again. The wasm
/// filter and ext_proc both apply exactly this, so a local route and a forward leave a request
/// the same way through either entry. A local route allocates nothing: it is the cache hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing<'a> {
    pub destination: &'a str,
    pub path: Option<&'a str>,
    pub writes: Vec<(String, String)>,
    pub rematch: bool,
    /// Headers of [`Target::other_credentials`] that carry a gateway key that did not
    /// authenticate this request (the admin's, another tenant's): they are removed too.
    pub strip: Vec<&'a str>,
    /// The `cookie` header to write instead of the client's (`""`: remove it).
    pub cookie: Option<&'a str>,
    /// Answer with this redirect; nothing else of the routing applies.
    pub redirect: Option<&'a Redirect>,
}

impl RequestGrammar {
    /// What `decision` asks of the request `target` came from: a [`Routing`], or the refusal
    /// to answer with.
    pub fn routing<'a>(
        &self,
        target: &'a Target<'_>,
        decision: &'a Decision,
    ) -> Result<Routing<'a>, &'a Deny> {
        match decision {
            Decision::Route {
                destination,
                strip_credentials,
            } => Ok(Routing {
                destination,
                path: target.rewritten_path.as_deref(),
                writes: Vec::new(),
                // Only a client's own upstream header moved the route; removing it must too.
                rematch: target.rematch,
                strip: (0..32)
                    .zip(&target.other_credentials)
                    .filter(|(bit, _)| strip_credentials & (1 << bit) != 0)
                    .map(|(_, (name, _))| *name)
                    .collect(),
                cookie: target.cookie.as_deref(),
                redirect: target.redirect.as_ref(),
            }),
            // The private upstream header picks the peer cluster's route.
            Decision::Forward(forward) => Ok(Routing {
                destination: &forward.destination,
                path: None,
                writes: self.forward_writes(target, forward),
                rematch: true,
                // The peer gateway decides again, and strips what it must: the token (query
                // and cookie included) crosses as it came.
                strip: Vec::new(),
                cookie: None,
                redirect: None,
            }),
            Decision::Deny(deny) => Err(deny),
        }
    }

    /// Refuses a grammar that could never match what Envoy hands over: header names are
    /// looked up exactly and Envoy stores them in lower case; the marker is one path segment.
    pub fn check(&self) -> Result<(), String> {
        if self.default_port == Some(0) {
            return Err("default_port must be 1..=65535".into());
        }
        for name in self
            .key_headers
            .iter()
            .chain(&self.tokens.headers)
            .chain([&self.id_header, &self.port_header])
        {
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase() || b == b':') {
                return Err(format!(
                    "header name {name:?} must be non-empty lower case (Envoy stores them so)"
                ));
            }
        }
        if self.path_marker.is_empty() || self.path_marker.contains(['/', '?']) {
            return Err("path_marker must be one path segment".into());
        }
        let t = &self.tokens;
        let plain = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !plain(&t.query) || !plain(&t.cookie) {
            return Err("tokens: query and cookie must be names of [A-Za-z0-9_-]".into());
        }
        Ok(())
    }

    /// [`parse`](Self::parse) over a request's headers as the proxy hands them over (lower-case
    /// names, values as bytes: HTTP allows any byte 0x80–0xFF in a value); the path is the
    /// first `:path`, `/` when there is none.
    pub fn parse_headers<'a, N, V>(&'a self, headers: &'a [(N, V)]) -> Result<Target<'a>, Deny>
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.as_ref() == name.as_bytes())
                .map(|(_, v)| v.as_ref())
        };
        self.refuse_disagreeing_copies(headers)?;
        self.parse(header, header(":path").unwrap_or(b"/"))
    }

    /// The API key a request carries, read as [`parse`](Self::parse) reads it: for endpoints
    /// that name no sandbox in the gateway's grammar (minting a token).
    pub fn api_key_of<'a, N, V>(&'a self, headers: &'a [(N, V)]) -> Result<Option<&'a str>, Deny>
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.as_ref() == name.as_bytes())
                .map(|(_, v)| v.as_ref())
        };
        self.refuse_disagreeing_copies(headers)?;
        Ok(self.credentials(&header)?.0.map(|(k, _)| k))
    }

    /// Two copies of a header that names the sandbox, the port or the key, with different
    /// values, are refused: which one "wins" would be a guess another hop might make the other
    /// way. Identical copies are harmless.
    fn refuse_disagreeing_copies<N, V>(&self, headers: &[(N, V)]) -> Result<(), Deny>
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let decisive = |name: &[u8]| {
            name == self.id_header.as_bytes()
                || name == self.port_header.as_bytes()
                || name == E2B_ID_HEADER.as_bytes()
                || name == E2B_PORT_HEADER.as_bytes()
                || name == b"authorization"
                || self.key_headers.iter().any(|k| k.as_bytes() == name)
                || self.tokens.headers.iter().any(|k| k.as_bytes() == name)
        };
        let mut rest = headers;
        while let Some(((name, value), later)) = rest.split_first() {
            let (name, value) = (name.as_ref(), value.as_ref());
            if decisive(name)
                && later
                    .iter()
                    .any(|(n, v)| n.as_ref() == name && v.as_ref() != value)
            {
                return Err(Deny::new(
                    DenyCode::AmbiguousRequest,
                    format!(
                        "{} is given more than once with different values",
                        String::from_utf8_lossy(name)
                    ),
                ));
            }
            rest = later;
        }
        Ok(())
    }

    /// Reads the key, sandbox id and port. `header` returns a request header's value by its
    /// lower-case name; `path` is the client's `:path` including the query string.
    ///
    /// Decided on bytes: a value this grammar reads must be text, and one that is not is the
    /// refusal its field would get for any other bad value (401 for a key, 400 for an id, a
    /// port or a path); headers it does not read are never looked at.
    ///
    /// The id header wins over the path: a request that names its sandbox by header keeps its
    /// path untouched even if it contains the marker.
    pub fn parse<'a, F>(&'a self, header: F, path: &'a [u8]) -> Result<Target<'a>, Deny>
    where
        F: Fn(&str) -> Option<&'a [u8]>,
    {
        let (api_key, other_credentials) = self.credentials(&header)?;
        let forwarded = header(HOP_HEADER).is_some();
        let rematch = header(UPSTREAM_HEADER).is_some();
        let path = text(path, DenyCode::InvalidPath, ":path")?;
        let (sandbox_id, port, e2b, found) = self.addressed(&header, path)?;
        let (path_only, query) = split_query(path);
        // The token parameter never reaches the sandbox, whoever authenticated the request.
        let query_token = query_param(query, &self.tokens.query);
        let kept_query = query_token.map(|_| without_param(query, &self.tokens.query));
        let rewritten_path = match &found {
            Some(f) => Some(f.rewritten(kept_query.as_deref().unwrap_or(query))),
            None => kept_query.as_ref().map(|q| format!("{path_only}{q}")),
        };
        let (cookie_token, cookie) = header("cookie")
            .and_then(|jar| core::str::from_utf8(jar).ok())
            .and_then(|jar| self.token_cookie(jar))
            .unzip();
        let token = match api_key {
            Some(_) => None,
            None => self.token(&header, query_token, cookie_token),
        };
        let mut redirect = None;
        match token {
            Some((_, TokenSource::Cookie)) => self.check_origin(&header)?,
            Some((t, TokenSource::Query)) if is_navigation(&header) => {
                let scope = found.as_ref().map_or("/", |f| f.scope);
                let location = format!("{path_only}{}", kept_query.as_deref().unwrap_or(query));
                redirect = self.redirect(t, location, scope, is_secure(&header));
            }
            _ => {}
        }
        Ok(Target {
            api_key,
            sandbox_id,
            port,
            rewritten_path,
            path,
            forwarded,
            rematch,
            other_credentials,
            e2b,
            token,
            cookie,
            redirect,
            by_path: found.is_some(),
        })
    }

    /// The sandbox and port a request asks for, whether the E2B way, and the path's own
    /// naming of them when the path names them (alone, or the same as the headers do).
    #[allow(clippy::type_complexity)]
    fn addressed<'a, F>(
        &'a self,
        header: &F,
        path: &'a str,
    ) -> Result<(&'a str, u16, bool, Option<PathTarget<'a>>), Deny>
    where
        F: Fn(&str) -> Option<&'a [u8]>,
    {
        if let Some(named) = self.named(header)? {
            // A path that names the same sandbox and port is the gateway's (the E2B SDK sends
            // its headers beside a `/sandboxes/{id}/{port}` path): it is rewritten as usual.
            let found = self.split_path(path).filter(|found| {
                found.id == named.sandbox_id
                    && found.port.and_then(|p| parse_port(p).ok()) == Some(named.port)
            });
            return Ok((named.sandbox_id, named.port, named.e2b, found));
        }
        let Some(found) = self.split_path(path) else {
            return Err(Deny::new(
                DenyCode::MissingSandboxId,
                format!(
                    "sandbox id is missing: send the {} and {} headers or use a path /{}/{{id}}/{{port}}/...",
                    self.id_header, self.port_header, self.path_marker
                ),
            ));
        };
        let sandbox_id = validate_sandbox_id(found.id).map_err(|d| in_field(d, "path"))?;
        let port = match found.port {
            Some(raw) => parse_port(raw).map_err(|d| in_field(d, "path"))?,
            None => self.missing_port("path")?,
        };
        Ok((sandbox_id, port, false, Some(found)))
    }

    /// The token a request without an API key presents: the first token header whose value
    /// has a token's prefix, else the query parameter, else the cookie. The parameter and the
    /// cookie are the gateway's by name, so any value in them is presented (and refused as
    /// an invalid token if it is none).
    fn token<'a, F>(
        &'a self,
        header: &F,
        query: Option<&'a str>,
        cookie: Option<&'a str>,
    ) -> Option<(&'a str, TokenSource<'a>)>
    where
        F: Fn(&str) -> Option<&'a [u8]>,
    {
        self.tokens
            .headers
            .iter()
            .find_map(|name| {
                let value = core::str::from_utf8(header(name)?).ok()?.trim();
                looks_like_token(value).then_some((value, TokenSource::Header(name.as_str())))
            })
            .or(query
                .filter(|q| !q.is_empty())
                .map(|q| (q, TokenSource::Query)))
            .or(cookie
                .filter(|c| !c.is_empty())
                .map(|c| (c, TokenSource::Cookie)))
    }

    /// The token cookie's first value in a `cookie` header, and the header without any copy
    /// of it; `None` (and nothing allocated) when the header has no such cookie.
    fn token_cookie<'c>(&self, jar: &'c str) -> Option<(&'c str, String)> {
        let name = self.tokens.cookie.as_str();
        let ours = |pair: &'c str| -> Option<&'c str> {
            pair.split_once('=')
                .filter(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim())
        };
        let value = jar.split(';').find_map(ours)?;
        let mut rest = String::with_capacity(jar.len());
        for pair in jar.split(';').map(str::trim) {
            if pair.is_empty() || ours(pair).is_some() {
                continue;
            }
            if !rest.is_empty() {
                rest.push_str("; ");
            }
            rest.push_str(pair);
        }
        Some((value, rest))
    }

    /// A WebSocket upgrade that only the token cookie authenticates must come from the
    /// gateway's own origin or an allowed one: a browser sends the cookie with any page's
    /// WebSocket to this site, and only `Origin` tells which page asked.
    fn check_origin<'a, F>(&self, header: &F) -> Result<(), Deny>
    where
        F: Fn(&str) -> Option<&'a [u8]>,
    {
        if header("upgrade").is_none() && header(":protocol").is_none() {
            return Ok(());
        }
        let origin = header("origin")
            .and_then(|o| core::str::from_utf8(o).ok())
            .map(str::trim);
        let authority = header(":authority").and_then(|a| core::str::from_utf8(a).ok());
        let own = |o: &str| {
            let host = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"));
            host.zip(authority)
                .is_some_and(|(h, a)| h.eq_ignore_ascii_case(a))
        };
        let allowed = origin.is_some_and(|o| {
            own(o)
                || self
                    .tokens
                    .allowed_origins
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(o))
        });
        if allowed {
            Ok(())
        } else {
            Err(Deny::new(
                DenyCode::OriginNotAllowed,
                "a WebSocket authenticated by the token cookie must come from the gateway's own or an allowed origin",
            ))
        }
    }

    /// The redirect that moves a query token into the cookie, scoped to the sandbox's path
    /// (`Path=/` when the Host or headers name the sandbox) and living as long as the token.
    /// None when the location or scope could be read as anything but a path on this origin
    /// (`//host`, `/\host`, characters that end a cookie attribute), or the token is no
    /// token: the request is then routed as it is.
    fn redirect(
        &self,
        token: &str,
        location: String,
        scope: &str,
        secure: bool,
    ) -> Option<Redirect> {
        let claims = token::parse(token).ok()?.claims;
        let on_this_origin =
            location.starts_with('/') && !matches!(location.as_bytes().get(1), Some(b'/' | b'\\'));
        let plain_scope = scope
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._~%-".contains(&b));
        if !on_this_origin || !plain_scope {
            return None;
        }
        let mut set_cookie = format!(
            "{}={token}; Path={scope}; Expires={}; HttpOnly; SameSite=Lax",
            self.tokens.cookie,
            http_date(claims.expires_at)
        );
        if secure {
            set_cookie.push_str("; Secure");
        }
        Some(Redirect {
            location,
            set_cookie,
        })
    }

    /// The sandbox a request names outside its path: the id header (with the port header),
    /// the E2B SDK's headers, or a Host `{port}-{id}.{domain}` under a configured domain. Any
    /// of them may come together only when they name the same sandbox and port.
    fn named<'a, F>(&'a self, header: &F) -> Result<Option<Named<'a>>, Deny>
    where
        F: Fn(&str) -> Option<&'a [u8]>,
    {
        let mut found = None;
        let headers = [
            (self.id_header.as_str(), self.port_header.as_str(), false),
            (E2B_ID_HEADER, E2B_PORT_HEADER, true),
        ];
        for (id_header, port_header, e2b) in headers {
            let Some(id) = header(id_header) else {
                continue;
            };
            let sandbox_id = text(id, DenyCode::InvalidSandboxId, id_header)
                .and_then(|id| validate_sandbox_id(id).map_err(|d| in_field(d, id_header)))?;
            let port = match header(port_header) {
                Some(raw) => text(raw, DenyCode::InvalidPort, port_header)
                    .and_then(|p| parse_port(p).map_err(|d| in_field(d, port_header)))?,
                None => self.missing_port(port_header)?,
            };
            let named = Named {
                sandbox_id,
                port,
                e2b,
                source: id_header,
            };
            found = agree(found, named)?;
        }
        if let Some(named) = self.named_by_host(header(":authority"))? {
            found = agree(found, named)?;
        }
        Ok(found)
    }

    /// `{port}-{id}.{domain}` (any `:port` after it ignored) under one of `e2b_domains`.
    fn named_by_host<'a>(&self, authority: Option<&'a [u8]>) -> Result<Option<Named<'a>>, Deny> {
        // A Host that is not text is no name of ours: Envoy's codec refuses such hosts anyway.
        let Some(host) = authority.and_then(|a| core::str::from_utf8(a).ok()) else {
            return Ok(None);
        };
        let host = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        let Some(label) = self.e2b_domains.iter().find_map(|domain| {
            let cut = host.len().checked_sub(domain.len() + 1)?;
            let (label, rest) = (host.get(..cut)?, host.get(cut..)?);
            (rest.starts_with('.') && rest.get(1..)?.eq_ignore_ascii_case(domain)).then_some(label)
        }) else {
            return Ok(None);
        };
        let (port, id) = label.split_once('-').ok_or_else(|| {
            Deny::new(
                DenyCode::MissingPort,
                "host: expected {port}-{sandbox id}.{domain}",
            )
        })?;
        let port = parse_port(port).map_err(|d| in_field(d, "host"))?;
        let sandbox_id = validate_sandbox_id(id).map_err(|d| in_field(d, "host"))?;
        Ok(Some(Named {
            sandbox_id,
            port,
            e2b: true,
            source: "host",
        }))
    }

    fn missing_port(&self, field: &str) -> Result<u16, Deny> {
        self.default_port.ok_or_else(|| {
            in_field(
                Deny::new(DenyCode::MissingPort, "sandbox port is missing"),
                field,
            )
        })
    }

    /// The API key (the first non-empty key header in order, then `authorization: Bearer`)
    /// and the other credentials beside it: the values of later key headers and of a bearer
    /// token, when they differ from the key — the sandbox app's own, or another gateway key.
    /// The key itself must be text (a key that is not is an invalid key, never skipped for the
    /// next header); another credential that is not text can be no gateway key, and passes.
    #[allow(clippy::type_complexity)]
    fn credentials<'a, F>(
        &'a self,
        header: &F,
    ) -> Result<(Option<(&'a str, KeySource<'a>)>, Vec<(&'a str, &'a str)>), Deny>
    where
        F: Fn(&str) -> Option<&'a [u8]>,
    {
        let mut key = None;
        let mut others = Vec::new();
        for name in &self.key_headers {
            let Some(raw) = header(name) else { continue };
            match key {
                None => {
                    let value = text(raw, DenyCode::InvalidApiKey, name)?.trim();
                    if !value.is_empty() {
                        key = Some((value, KeySource::Header(name)));
                    }
                }
                Some((k, _)) => others.extend(other(name, raw, k)),
            }
        }
        let bearer = header("authorization")
            .filter(|_| self.bearer)
            .and_then(bearer_bytes);
        match (key, bearer) {
            (None, Some(token)) => {
                let token = text(token, DenyCode::InvalidApiKey, "authorization")?;
                key = Some((token, KeySource::Bearer));
            }
            (Some((k, _)), Some(token)) => others.extend(other("authorization", token, k)),
            (_, None) => {}
        }
        Ok((key, others))
    }

    /// Whether a request header must be removed before the request reaches a sandbox: the key
    /// header that carried the key (every key header when there is none), every `x-sandbox-*`
    /// and `x-sandgate-*` header, the original-destination
    /// header a client could forge, the E2B SDK's `e2b-sandbox-*`, and `authorization` when it carries the caller's key
    /// (however it is spelled). Names and values are bytes: a value that is not text is
    /// judged by its name like any other.
    pub fn is_gateway_header(&self, name: &[u8], value: &[u8], api_key: Option<&str>) -> bool {
        let key_header = self
            .key_headers
            .iter()
            .any(|h| h.as_bytes().eq_ignore_ascii_case(name));
        // A key header that did not carry the key is the app's (e.g. its own `x-api-key`),
        // unless the resolver finds another gateway key in it. Without a key, all go.
        if key_header {
            return api_key.is_none_or(|k| value.trim_ascii() == k.as_bytes());
        }
        if name.eq_ignore_ascii_case(self.id_header.as_bytes())
            || name.eq_ignore_ascii_case(self.port_header.as_bytes())
            || starts_with_ignore_case(name, b"e2b-sandbox-")
            || starts_with_ignore_case(name, b"x-sandbox-")
            || starts_with_ignore_case(name, PRIVATE_HEADER_PREFIX.as_bytes())
            || name.eq_ignore_ascii_case(b"x-envoy-original-dst-host")
        {
            return true;
        }
        // An `authorization` header meant for the sandbox's own app stays; one that carries
        // the gateway key (however it was sent) must not leak.
        name.eq_ignore_ascii_case(b"authorization")
            && self.bearer
            && api_key.is_some_and(|k| bearer_bytes(value) == Some(k.as_bytes()))
    }

    /// The request headers a forwarded request gets, in write order (a later write of the same
    /// name replaces an earlier one). Entries first remove every gateway header, as for a
    /// local route, then write these: the peer's own headers, then where the request goes and
    /// what the peer gateway needs to decide it again — the key (in the first key header, so
    /// it cannot collide with an `authorization` the sandbox's app uses) and, when the client
    /// named the sandbox by header, the id and port headers. A path-style request keeps its
    /// path (under the peer's prefix), which names them already.
    fn forward_writes(&self, target: &Target<'_>, forward: &Forward) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = forward.headers.clone();
        let mut put = |name: &str, value: String| out.push((name.to_string(), value));
        put(":authority", forward.authority.clone());
        put(":path", format!("{}{}", forward.path_prefix, target.path));
        put("x-forwarded-proto", forward.upstream.scheme().to_string());
        put(UPSTREAM_HEADER, forward.upstream.as_str().to_string());
        put(HOP_HEADER, forward.from_cluster.clone());
        if let Some((key, _)) = target.api_key {
            match self.key_headers.first() {
                Some(name) => put(name, key.to_string()),
                None => put("authorization", format!("Bearer {key}")),
            }
        }
        if !target.by_path {
            // Named the E2B way, it crosses the E2B way: the peer answers a missing one 502 too.
            let (id, port) = if target.e2b {
                (E2B_ID_HEADER, E2B_PORT_HEADER)
            } else {
                (self.id_header.as_str(), self.port_header.as_str())
            };
            put(id, target.sandbox_id.to_string());
            put(port, target.port.to_string());
        }
        out
    }

    fn split_path<'p>(&self, path: &'p str) -> Option<PathTarget<'p>> {
        let (path_only, _) = split_query(path);
        // Walk segments: find `/{marker}/` then take id and optional port and rest.
        let mut offset = 0;
        for seg in path_only.split('/') {
            let after = offset + seg.len() + 1;
            offset = after;
            if seg != self.path_marker || after > path_only.len() {
                continue;
            }
            let tail = &path_only[after..];
            let (id, tail) = split_once_or_all(tail);
            if id.is_empty() {
                return None;
            }
            let (port, rest) = split_once_or_all(tail);
            let scope_len = after + id.len() + if port.is_empty() { 0 } else { 1 + port.len() };
            let port = (!port.is_empty()).then_some(port);
            return Some(PathTarget {
                id,
                port,
                rest,
                scope: path_only.get(..scope_len).unwrap_or(path_only),
            });
        }
        None
    }
}

struct PathTarget<'p> {
    id: &'p str,
    port: Option<&'p str>,
    rest: &'p str,
    /// The path up to and including the port (the id, without one): a cookie's `Path`.
    scope: &'p str,
}

impl PathTarget<'_> {
    /// The path the sandbox sees: `/{rest}` then `query` (`?...` or empty).
    fn rewritten(&self, query: &str) -> String {
        let mut out = String::with_capacity(1 + self.rest.len() + query.len());
        out.push('/');
        out.push_str(self.rest);
        out.push_str(query);
        out
    }
}

/// `(path, query)`, the query with its `?` (empty when there is none).
fn split_query(path: &str) -> (&str, &str) {
    match path.find('?') {
        Some(i) => path.split_at(i),
        None => (path, ""),
    }
}

/// The raw value of `name`'s first occurrence in `query` (`?a=1&b=2`).
fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.strip_prefix('?')?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// `query` without any occurrence of `name`: `?rest`, or empty when nothing is left.
fn without_param(query: &str, name: &str) -> String {
    let mut out = String::with_capacity(query.len());
    let pairs = query.strip_prefix('?').unwrap_or(query).split('&');
    for pair in pairs.filter(|p| p.split_once('=').map_or(*p, |(k, _)| k) != name) {
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(pair);
    }
    out
}

/// A browser's top-level navigation (Fetch Metadata), which may be redirected.
fn is_navigation<'a, F>(header: &F) -> bool
where
    F: Fn(&str) -> Option<&'a [u8]>,
{
    header("sec-fetch-mode") == Some(b"navigate")
        && header("sec-fetch-dest") == Some(b"document")
        && matches!(header(":method"), Some(b"GET" | b"HEAD"))
}

/// The client came over TLS (to Envoy, or to a proxy in front that says so).
fn is_secure<'a, F>(header: &F) -> bool
where
    F: Fn(&str) -> Option<&'a [u8]>,
{
    header(":scheme") == Some(b"https") || header("x-forwarded-proto") == Some(b"https")
}

fn split_once_or_all(s: &str) -> (&str, &str) {
    s.split_once('/').unwrap_or((s, ""))
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

/// The token of an `authorization: Bearer <token>` value: the scheme in any case, then any
/// run of spaces and tabs (RFC 9110's `1*SP`, and the tab some clients send), then the token.
pub fn bearer_token(value: &str) -> Option<&str> {
    // The token is a sub-slice of a `str`, cut at ASCII bytes: it is text too.
    bearer_bytes(value.as_bytes()).and_then(|t| core::str::from_utf8(t).ok())
}

/// [`bearer_token`] on bytes: the token is returned whatever its bytes.
pub fn bearer_bytes(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let scheme = value.get(..6)?;
    let rest = value.get(6..)?;
    let token = rest.trim_ascii_start();
    let separated = rest.len() > token.len();
    (scheme.eq_ignore_ascii_case(b"bearer") && separated && !token.is_empty()).then_some(token)
}

/// A value the grammar reads, as text; bytes that are not UTF-8 are `code` in `field`.
fn text<'a>(value: &'a [u8], code: DenyCode, field: &str) -> Result<&'a str, Deny> {
    core::str::from_utf8(value)
        .map_err(|_| Deny::new(code, format!("{field}: the value is not valid UTF-8 text")))
}

/// A credential beside the key: its header and value, when it is text, not empty and not the
/// key itself (which is stripped by name).
fn other<'a>(name: &'a str, raw: &'a [u8], key: &str) -> Option<(&'a str, &'a str)> {
    let value = core::str::from_utf8(raw).ok()?.trim();
    (!value.is_empty() && value != key).then_some((name, value))
}

/// Two places that name the sandbox must name the same one (and port): which would "win" is
/// a guess another hop might make the other way.
fn agree<'a>(found: Option<Named<'a>>, next: Named<'a>) -> Result<Option<Named<'a>>, Deny> {
    match found {
        None => Ok(Some(next)),
        Some(f) if (f.sandbox_id, f.port) == (next.sandbox_id, next.port) => Ok(Some(Named {
            e2b: f.e2b || next.e2b,
            ..f
        })),
        Some(f) => Err(Deny::new(
            DenyCode::AmbiguousRequest,
            format!(
                "{} and {} name different sandboxes or ports",
                f.source, next.source
            ),
        )),
    }
}

fn in_field(deny: Deny, field: &str) -> Deny {
    Deny::new(deny.code, format!("{field}: {}", deny.message))
}

#[cfg(test)]
mod tests {
    use super::*;
    // The same tests run natively and, under `just wasm-test`, as 32-bit wasm in Node.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse<'a>(
        g: &'a RequestGrammar,
        headers: &'a [(&'a str, &'a str)],
        path: &'a str,
    ) -> Result<Target<'a>, Deny> {
        g.parse(
            |name| {
                headers
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.as_bytes())
            },
            path.as_bytes(),
        )
    }

    /// Owned header pairs, as an entry hands them to `parse_headers`.
    fn list(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    fn peer() -> Forward {
        Forward {
            destination: "10.1.0.9:443".into(),
            authority: "gw2.example".into(),
            path_prefix: "/c2".into(),
            upstream: crate::PeerUpstream::Tls,
            headers: vec![
                ("x-peer-token".into(), "t".into()),
                (HOP_HEADER.into(), "forged by config".into()),
            ],
            from_cluster: "c1".into(),
        }
    }

    fn last<'w>(writes: &'w [(String, String)], name: &str) -> Option<&'w str> {
        writes
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_forward_by_path_keeps_the_path_under_the_prefix() {
        let g = RequestGrammar::default();
        let h = [("authorization", "Bearer k"), (HOP_HEADER, "x")];
        let t = parse(&g, &h, "/sandboxes/c2.id/8080/a?q=1").unwrap();
        assert!(t.forwarded);
        let w = g.forward_writes(&t, &peer());
        assert_eq!(last(&w, ":path"), Some("/c2/sandboxes/c2.id/8080/a?q=1"));
        assert_eq!(last(&w, ":authority"), Some("gw2.example"));
        assert_eq!(last(&w, "x-forwarded-proto"), Some("https"));
        assert_eq!(last(&w, UPSTREAM_HEADER), Some("peer-tls"));
        // The peer's headers come first: its config cannot replace the hop marker.
        assert_eq!(last(&w, HOP_HEADER), Some("c1"));
        assert_eq!(last(&w, "x-peer-token"), Some("t"));
        // The key moves to the first key header; id and port stay in the path.
        assert_eq!(last(&w, "agentbox-api-key"), Some("k"));
        assert_eq!(last(&w, "authorization"), None);
        assert_eq!(last(&w, "x-sandbox-id"), None);
    }

    #[test]
    fn a_forward_by_header_writes_id_and_port_again() {
        let g = RequestGrammar {
            key_headers: Vec::new(),
            default_port: Some(80),
            ..Default::default()
        };
        let h = [("x-sandbox-id", "c2.id"), ("authorization", "Bearer k")];
        let t = parse(&g, &h, "/app").unwrap();
        assert!(!t.forwarded);
        let w = g.forward_writes(&t, &peer());
        assert_eq!(last(&w, ":path"), Some("/c2/app"));
        assert_eq!(last(&w, "x-sandbox-id"), Some("c2.id"));
        assert_eq!(last(&w, "x-sandbox-port"), Some("80"));
        // No key headers configured: the key goes back as a bearer token.
        assert_eq!(last(&w, "authorization"), Some("Bearer k"));
    }

    #[test]
    fn routing_pins_the_destination_and_writes_what_the_sandbox_or_peer_must_see() {
        let g = RequestGrammar::default();
        let route = Decision::Route {
            destination: "10.0.0.7:8080".into(),
            strip_credentials: 0,
        };
        // By path: the path without the gateway's part; the route stays.
        let t = parse(&g, &[("x-api-key", "k")], "/sandboxes/sb/8080/a?q=1").unwrap();
        let r = g.routing(&t, &route).unwrap();
        assert_eq!(r.destination, "10.0.0.7:8080");
        assert_eq!(r.path, Some("/a?q=1"));
        assert!(r.writes.is_empty() && !r.rematch);
        // By header: nothing to write.
        let h = [("x-sandbox-id", "sb"), ("x-sandbox-port", "80")];
        let t = parse(&g, &h, "/app").unwrap();
        let r = g.routing(&t, &route).unwrap();
        assert!(r.path.is_none() && r.writes.is_empty());
        // A client's own upstream header: the route is matched again once it is gone.
        let h = [
            ("x-sandbox-id", "sb"),
            ("x-sandbox-port", "80"),
            (UPSTREAM_HEADER, "peer"),
        ];
        let t = parse(&g, &h, "/app").unwrap();
        assert!(g.routing(&t, &route).unwrap().rematch);
        // A forward: the peer's destination, the forward writes, always matched again.
        let forward = Decision::Forward(Box::new(peer()));
        let r = g.routing(&t, &forward).unwrap();
        assert_eq!(r.destination, "10.1.0.9:443");
        assert_eq!(r.path, None);
        assert_eq!(r.writes, g.forward_writes(&t, &peer()));
        assert!(r.rematch);
        // A refusal is handed back as it is.
        let deny = Decision::Deny(Deny::new(DenyCode::Forbidden, "no"));
        assert_eq!(g.routing(&t, &deny).unwrap_err().code, DenyCode::Forbidden);
    }

    #[test]
    fn private_headers_are_gateway_headers() {
        let g = RequestGrammar::default();
        for name in [HOP_HEADER, UPSTREAM_HEADER, "X-Sandgate-Anything"] {
            assert!(g.is_gateway_header(name.as_bytes(), b"v", None), "{name}");
        }
    }

    #[test]
    fn disagreeing_copies_of_decisive_headers_are_refused() {
        let g = RequestGrammar::default();
        for (name, a, b) in [
            ("x-sandbox-id", "sb-a", "sb-b"),
            ("x-sandbox-port", "80", "81"),
            ("x-api-key", "k1", "k2"),
            ("agentbox-api-key", "k1", "k2"),
            ("authorization", "Bearer k1", "Bearer k2"),
        ] {
            let h = list(&[
                (":path", "/"),
                ("x-sandbox-id", "sb"),
                ("x-sandbox-port", "80"),
                (name, a),
                ("accept", "*/*"),
                (name, b),
            ]);
            let err = g.parse_headers(&h).unwrap_err();
            assert_eq!(err.code, DenyCode::AmbiguousRequest, "{name}");
            assert!(err.message.contains(name), "{}", err.message);
        }
        // Identical copies, and copies of headers that decide nothing, are fine.
        let h = list(&[
            (":path", "/"),
            ("x-sandbox-id", "sb"),
            ("x-sandbox-id", "sb"),
            ("x-sandbox-port", "80"),
            ("accept", "a"),
            ("accept", "b"),
        ]);
        assert_eq!(g.parse_headers(&h).unwrap().sandbox_id, "sb");
    }

    #[test]
    fn a_header_list_is_read_with_its_first_path() {
        let g = RequestGrammar::default();
        let h = list(&[
            (":path", "/sandboxes/first/80/a"),
            (":path", "/sandboxes/second/80/b"),
            ("x-api-key", "k"),
        ]);
        let t = g.parse_headers(&h).unwrap();
        assert_eq!(
            (t.sandbox_id, t.rewritten_path.as_deref()),
            ("first", Some("/a"))
        );
        assert_eq!(t.api_key, Some(("k", KeySource::Header("x-api-key"))));
        // No :path at all: "/", which names no sandbox.
        let none = g.parse_headers(&list(&[("x-api-key", "k")])).unwrap_err();
        assert_eq!(none.code, DenyCode::MissingSandboxId);
    }

    #[test]
    fn a_grammar_that_cannot_match_is_refused() {
        assert_eq!(RequestGrammar::default().check(), Ok(()));
        let bad = [
            RequestGrammar {
                default_port: Some(0),
                ..Default::default()
            },
            RequestGrammar {
                id_header: "X-Sandbox".into(),
                ..Default::default()
            },
            RequestGrammar {
                key_headers: vec![String::new()],
                ..Default::default()
            },
            RequestGrammar {
                port_header: ":port".into(),
                ..Default::default()
            },
            RequestGrammar {
                path_marker: "a/b".into(),
                ..Default::default()
            },
            RequestGrammar {
                path_marker: String::new(),
                ..Default::default()
            },
        ];
        for g in bad {
            assert!(g.check().is_err(), "{g:?}");
        }
    }

    #[test]
    fn routes_by_header_and_keeps_the_path() {
        let g = RequestGrammar::default();
        let h = [
            ("x-sandbox-id", "demo-a"),
            ("x-sandbox-port", "8080"),
            ("x-api-key", "k"),
        ];
        let t = parse(&g, &h, "/sandboxes/other/1/x?q=1").unwrap();
        assert_eq!(t.sandbox_id, "demo-a");
        assert_eq!(t.port, 8080);
        assert_eq!(t.rewritten_path, None);
        assert_eq!(t.api_key, Some(("k", KeySource::Header("x-api-key"))));
    }

    #[test]
    fn routes_by_path_and_rewrites_it_keeping_the_query() {
        let g = RequestGrammar::default();
        for (path, id, port, want) in [
            (
                "/sandboxes/demo-a/8080/api/v1?x=1&y=2",
                "demo-a",
                8080,
                "/api/v1?x=1&y=2",
            ),
            ("/v1/sandboxes/b/3000/", "b", 3000, "/"),
            ("/sandboxes/b/3000", "b", 3000, "/"),
            ("/sandboxes/b/3000?q", "b", 3000, "/?q"),
            (
                "/a/b/sandboxes/s.1/1/deep/er/path",
                "s.1",
                1,
                "/deep/er/path",
            ),
            (
                "/sandboxes/b/65535/x?sandboxes/c/1",
                "b",
                65535,
                "/x?sandboxes/c/1",
            ),
        ] {
            let t = parse(&g, &[], path).unwrap();
            assert_eq!(
                (t.sandbox_id, t.port, t.rewritten_path.as_deref()),
                (id, port, Some(want)),
                "{path}"
            );
        }
    }

    #[test]
    fn refuses_with_a_code_and_a_message_naming_the_field() {
        let g = RequestGrammar::default();
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, DenyCode, &'a str);
        let cases: [Case; 9] = [
            (
                &[],
                "/",
                DenyCode::MissingSandboxId,
                "sandbox id is missing",
            ),
            (&[], "/sandboxes/", DenyCode::MissingSandboxId, "missing"),
            (
                &[],
                "/sandboxes//80/x",
                DenyCode::MissingSandboxId,
                "missing",
            ),
            (&[], "/sandboxes/a", DenyCode::MissingPort, "path:"),
            (&[], "/sandboxes/a/0/x", DenyCode::InvalidPort, "path:"),
            (&[], "/sandboxes/a/65536", DenyCode::InvalidPort, "path:"),
            (&[], "/sandboxes/-a/80", DenyCode::InvalidSandboxId, "path:"),
            (
                &[("x-sandbox-id", "a")],
                "/",
                DenyCode::MissingPort,
                "x-sandbox-port:",
            ),
            (
                &[("x-sandbox-id", "a b"), ("x-sandbox-port", "1")],
                "/",
                DenyCode::InvalidSandboxId,
                "x-sandbox-id:",
            ),
        ];
        for (headers, path, code, msg) in cases {
            let d = parse(&g, headers, path).unwrap_err();
            assert_eq!(d.code, code, "{headers:?} {path}");
            assert!(d.message.contains(msg), "{d}");
        }
        let h = [("x-sandbox-id", "a"), ("x-sandbox-port", "http")];
        assert_eq!(parse(&g, &h, "/").unwrap_err().code, DenyCode::InvalidPort);
    }

    #[test]
    fn default_port_fills_a_missing_port_only() {
        let g = RequestGrammar {
            default_port: Some(8080),
            ..Default::default()
        };
        assert_eq!(parse(&g, &[("x-sandbox-id", "a")], "/").unwrap().port, 8080);
        let t = parse(&g, &[], "/sandboxes/a").unwrap();
        assert_eq!((t.port, t.rewritten_path.as_deref()), (8080, Some("/")));
        let bad = [("x-sandbox-id", "a"), ("x-sandbox-port", "")];
        assert_eq!(
            parse(&g, &bad, "/").unwrap_err().code,
            DenyCode::MissingPort
        );
    }

    #[test]
    fn key_order_is_agentbox_then_x_api_key_then_bearer() {
        let g = RequestGrammar::default();
        let id = ("x-sandbox-id", "a");
        let port = ("x-sandbox-port", "1");
        fn key_of(g: &RequestGrammar, h: &[(&str, &str)]) -> Option<String> {
            parse(g, h, "/")
                .unwrap()
                .api_key
                .map(|(k, _)| k.to_string())
        }
        let key = |h: &[(&str, &str)]| key_of(&g, h);
        let all = [
            id,
            port,
            ("authorization", "Bearer c"),
            ("x-api-key", "b"),
            ("agentbox-api-key", "a"),
        ];
        assert_eq!(key(&all), Some("a".into()));
        assert_eq!(key(&all[..4]), Some("b".into()));
        assert_eq!(key(&all[..3]), Some("c".into()));
        assert_eq!(
            key(&[id, port, ("agentbox-api-key", ""), ("x-api-key", "b")]),
            Some("b".into())
        );
        assert_eq!(key(&[id, port, ("authorization", "Basic Zm9v")]), None);
        assert_eq!(
            key(&[id, port, ("authorization", "bearer  t ")]),
            Some("t".into())
        );
        assert_eq!(key(&[id, port]), None);
    }

    #[test]
    fn gateway_headers_are_stripped_and_app_authorization_kept() {
        let g = RequestGrammar::default();
        for name in [
            "x-sandbox-id",
            "x-sandbox-port",
            "x-sandbox-anything",
            "x-envoy-original-dst-host",
        ] {
            assert!(
                g.is_gateway_header(name.as_bytes(), b"v", Some("k")),
                "{name}"
            );
        }
        // A key header goes when it carries the key (or there is none); another value in it
        // is the app's, and the resolver is asked whether it is another gateway key.
        for name in ["agentbox-api-key", "X-API-Key"] {
            assert!(
                g.is_gateway_header(name.as_bytes(), b"k", Some("k")),
                "{name}"
            );
            assert!(g.is_gateway_header(name.as_bytes(), b"v", None), "{name}");
            assert!(
                !g.is_gateway_header(name.as_bytes(), b"v", Some("k")),
                "{name}"
            );
        }
        assert!(g.is_gateway_header(b"authorization", b"Bearer k", Some("k")));
        assert!(!g.is_gateway_header(b"authorization", b"Bearer app-token", Some("k")));
        assert!(!g.is_gateway_header(b"authorization", b"Bearer k", None));
        assert!(!g.is_gateway_header(b"content-type", b"text/plain", Some("k")));
        assert!(!g.is_gateway_header(b"x-sandbox", b"v", Some("k")));
    }

    /// Header pairs as bytes, as the filter reads them from Envoy.
    fn bytes(pairs: &[(&str, &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn values_that_are_not_text_get_their_fields_refusal_and_others_pass() {
        let g = RequestGrammar::default();
        let path: (&str, &[u8]) = (":path", b"/sandboxes/sb/80/x");
        let key: (&str, &[u8]) = ("x-api-key", b"k");
        let bad: &[u8] = b"\xff\xfe";
        for (headers, code) in [
            (vec![path, ("x-api-key", bad)], DenyCode::InvalidApiKey),
            (
                vec![path, ("agentbox-api-key", bad)],
                DenyCode::InvalidApiKey,
            ),
            (
                vec![path, ("authorization", b"Bearer \xff".as_slice())],
                DenyCode::InvalidApiKey,
            ),
            (
                vec![path, key, ("x-sandbox-id", bad)],
                DenyCode::InvalidSandboxId,
            ),
            (
                vec![
                    path,
                    key,
                    ("x-sandbox-id", b"sb".as_slice()),
                    ("x-sandbox-port", bad),
                ],
                DenyCode::InvalidPort,
            ),
            (
                vec![(":path", b"/sandboxes/sb/80/caf\xe9".as_slice()), key],
                DenyCode::InvalidPath,
            ),
        ] {
            let err = g.parse_headers(&bytes(&headers)).unwrap_err();
            assert_eq!(err.code, code, "{headers:?}");
            assert!(err.message.contains("UTF-8"), "{}", err.message);
        }
        // Headers the grammar does not read pass whatever their bytes: an ordinary header, an
        // app's own non-bearer credential, a private header that is stripped anyway.
        let h = bytes(&[
            path,
            key,
            ("x-note", bad),
            ("authorization", b"Basic \xff".as_slice()),
            ("x-sandbox-extra", bad),
        ]);
        let t = g.parse_headers(&h).unwrap();
        assert_eq!((t.sandbox_id, t.api_key.map(|k| k.0)), ("sb", Some("k")));
        assert!(t.other_credentials.is_empty());
        assert!(!g.is_gateway_header(b"x-note", bad, Some("k")));
        assert!(!g.is_gateway_header(b"authorization", b"Basic \xff", Some("k")));
        assert!(g.is_gateway_header(b"x-sandbox-extra", bad, Some("k")));
        assert!(g.is_gateway_header(b"agentbox-api-key", bad, None));
        // Beside a key, a later key header that is not text is the app's: it passes.
        assert!(!g.is_gateway_header(b"x-api-key", bad, Some("k")));
        // A key that is not text is refused, not skipped for the next key header.
        let h = bytes(&[path, ("agentbox-api-key", bad), key]);
        assert_eq!(
            g.parse_headers(&h).unwrap_err().code,
            DenyCode::InvalidApiKey
        );
    }

    #[test]
    fn credentials_beside_the_key_are_handed_to_the_resolver() {
        let g = RequestGrammar::default();
        let others = |h: &[(&str, &str)]| {
            let mut all = vec![(":path", "/sandboxes/sb/80/")];
            all.extend_from_slice(h);
            let h = list(&all);
            let t = g.parse_headers(&h).unwrap();
            let out: Vec<(String, String)> = t
                .other_credentials
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            out
        };
        let pair = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let key = ("x-api-key", "k");
        assert_eq!(
            others(&[key, ("authorization", "Bearer admin")]),
            pair("authorization", "admin")
        );
        assert_eq!(
            others(&[key, ("authorization", "bearer\tother")]),
            pair("authorization", "other")
        );
        // The caller's own key is stripped by name; a non-bearer value is the app's.
        assert!(others(&[key, ("authorization", "Bearer k")]).is_empty());
        assert!(others(&[key, ("authorization", "Basic Zm9v")]).is_empty());
        // With the key in agentbox-api-key, x-api-key is the app's own, or another key.
        assert_eq!(
            others(&[("agentbox-api-key", "k"), ("x-api-key", "app-key")]),
            pair("x-api-key", "app-key")
        );
        assert!(!g.is_gateway_header(b"x-api-key", b"app-key", Some("k")));
        assert!(g.is_gateway_header(b"agentbox-api-key", b" k ", Some("k")));
        assert!(g.is_gateway_header(b"x-api-key", b"k", Some("k")));
        // With the key in authorization itself, there is no other credential.
        assert!(others(&[("authorization", "Bearer k")]).is_empty());
    }

    #[test]
    fn a_route_names_the_credential_headers_to_strip() {
        let g = RequestGrammar::default();
        let h = list(&[
            (":path", "/sandboxes/sb/80/"),
            ("agentbox-api-key", "k"),
            ("x-api-key", "other-key"),
            ("authorization", "Bearer app"),
        ]);
        let t = g.parse_headers(&h).unwrap();
        let route = |mask| Decision::Route {
            destination: "10.0.0.7:80".into(),
            strip_credentials: mask,
        };
        assert_eq!(g.routing(&t, &route(0b01)).unwrap().strip, ["x-api-key"]);
        assert_eq!(
            g.routing(&t, &route(0b10)).unwrap().strip,
            ["authorization"]
        );
        assert!(g.routing(&t, &route(0)).unwrap().strip.is_empty());
    }

    #[test]
    fn e2b_headers_and_hosts_name_a_sandbox_and_must_agree_with_the_others() {
        let g = RequestGrammar {
            e2b_domains: vec!["sandgate.test".into()],
            ..Default::default()
        };
        let parse_list = |h: &[(&str, &str)]| {
            let h = list(h);
            g.parse_headers(&h)
                .map(|t| (t.sandbox_id.to_string(), t.port, t.e2b, t.rewritten_path))
        };
        let e2b = |id: &str, port, path: Option<&str>| {
            Ok((id.to_string(), port, true, path.map(str::to_string)))
        };
        // The SDK's headers, alone: the path is the app's.
        assert_eq!(
            parse_list(&[
                (":path", "/files?path=a"),
                ("e2b-sandbox-id", "sb"),
                ("e2b-sandbox-port", "49983")
            ]),
            e2b("sb", 49983, None)
        );
        // Beside a gateway path naming the same sandbox and port (the Go platform's patch),
        // the path is rewritten.
        assert_eq!(
            parse_list(&[
                (":path", "/sandboxes/sb/49983/health"),
                ("e2b-sandbox-id", "sb"),
                ("e2b-sandbox-port", "49983")
            ]),
            e2b("sb", 49983, Some("/health"))
        );
        // The Host, any case, with a port after it; with the SDK's headers agreeing.
        assert_eq!(
            parse_list(&[
                (":path", "/x"),
                (":authority", "8080-demo-a.SandGate.test:8092")
            ]),
            e2b("demo-a", 8080, None)
        );
        assert_eq!(
            parse_list(&[
                (":path", "/x"),
                (":authority", "49983-sb.sandgate.test"),
                ("e2b-sandbox-id", "sb"),
                ("e2b-sandbox-port", "49983"),
                ("x-sandbox-id", "sb"),
                ("x-sandbox-port", "49983"),
            ]),
            e2b("sb", 49983, None)
        );
        // Other hosts name nothing.
        for host in [
            "sandgate.test",
            "8080-demo-a.other.test",
            "x8080-demo-a.notsandgate.test",
        ] {
            assert_eq!(
                parse_list(&[(":path", "/"), (":authority", host)])
                    .unwrap_err()
                    .code,
                DenyCode::MissingSandboxId,
                "{host}"
            );
        }
        // Disagreement is refused, whichever two disagree.
        for extra in [
            [("x-sandbox-id", "sb-b"), ("x-sandbox-port", "49983")],
            [("x-sandbox-id", "sb"), ("x-sandbox-port", "80")],
            [
                (":authority", "49983-other.sandgate.test"),
                ("accept", "*/*"),
            ],
        ] {
            let mut h = vec![
                (":path", "/"),
                ("e2b-sandbox-id", "sb"),
                ("e2b-sandbox-port", "49983"),
            ];
            h.extend_from_slice(&extra);
            assert_eq!(
                parse_list(&h).unwrap_err().code,
                DenyCode::AmbiguousRequest,
                "{extra:?}"
            );
        }
        // A malformed name under the domain is refused, not ignored.
        let bad = parse_list(&[(":path", "/"), (":authority", "x-sb.sandgate.test")]);
        assert_eq!(bad.unwrap_err().code, DenyCode::InvalidPort);
        // The SDK's headers are the gateway's: stripped.
        assert!(g.is_gateway_header(b"E2b-Sandbox-Id", b"sb", None));
    }

    #[test]
    fn the_callers_key_in_authorization_is_stripped_in_every_spelling() {
        let g = RequestGrammar::default();
        for value in [
            "Bearer k",
            "bearer k",
            "BEARER k",
            "Bearer\tk",
            "Bearer \t  k",
            " Bearer k ",
        ] {
            assert!(
                g.is_gateway_header(b"Authorization", value.as_bytes(), Some("k")),
                "{value:?}"
            );
        }
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Token abc"), None);
        assert_eq!(bearer_token("Bearer\tabc"), Some("abc"));
        assert_eq!(bearer_token("bEaReR \t abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer\t"), None);
        assert_eq!(bearer_bytes(b"Bearer \xff"), Some(b"\xff".as_slice()));
        assert_eq!(bearer_bytes(b"\xffearer abc"), None);
    }

    /// A token-shaped value (its claims readable: a cookie's lifetime comes from them).
    fn a_token(id: &str) -> String {
        crate::token::Claims {
            key_id: "k".into(),
            namespace: "acme".into(),
            sandbox_id: id.into(),
            ports: vec![],
            expires_at: 784_111_777,
            minted_by: None,
        }
        .encode(&[0; 32])
    }

    #[test]
    fn a_token_is_read_from_its_headers_then_the_query_then_the_cookie_without_a_key() {
        let g = RequestGrammar::default();
        let t = a_token("sb");
        let q = format!("/sandboxes/sb/80/a?x=1&sandgate_token={t}&y=2");
        let c = format!("theme=dark; sandgate_token={t}; lang=en");
        // The query parameter: presented, and gone from the path the sandbox sees.
        let got = parse(&g, &[], &q).unwrap();
        assert_eq!(got.token, Some((t.as_str(), TokenSource::Query)));
        assert_eq!(got.rewritten_path.as_deref(), Some("/a?x=1&y=2"));
        assert!(got.by_path && got.redirect.is_none() && got.cookie.is_none());
        // The cookie: presented, and gone from the cookie header, the app's cookies kept.
        let h = [("cookie", c.as_str())];
        let got = parse(&g, &h, "/sandboxes/sb/80/a").unwrap();
        assert_eq!(got.token, Some((t.as_str(), TokenSource::Cookie)));
        assert_eq!(got.cookie.as_deref(), Some("theme=dark; lang=en"));
        let alone = format!("sandgate_token={t}");
        let h = [("cookie", alone.as_str())];
        let got = parse(&g, &h, "/sandboxes/sb/80/a").unwrap();
        assert_eq!(got.cookie.as_deref(), Some(""));
        // A header wins over both, when its value is a token; an app's own value is skipped.
        let h = [
            ("x-access-token", "envd-own"),
            ("e2b-traffic-access-token", t.as_str()),
            ("cookie", c.as_str()),
        ];
        let got = parse(&g, &h, &q).unwrap();
        assert_eq!(
            got.token,
            Some((t.as_str(), TokenSource::Header("e2b-traffic-access-token")))
        );
        // Both are still removed on the way to the sandbox.
        assert_eq!(got.rewritten_path.as_deref(), Some("/a?x=1&y=2"));
        assert_eq!(got.cookie.as_deref(), Some("theme=dark; lang=en"));
        // With a key, no token is presented, but the gateway's parameter and cookie still go.
        let h = [("x-api-key", "k"), ("cookie", c.as_str())];
        let got = parse(&g, &h, &q).unwrap();
        assert_eq!(got.token, None);
        assert_eq!(got.rewritten_path.as_deref(), Some("/a?x=1&y=2"));
        assert_eq!(got.cookie.as_deref(), Some("theme=dark; lang=en"));
        // A header-named request keeps its path, less the parameter.
        let h = [("x-sandbox-id", "sb"), ("x-sandbox-port", "80")];
        let app = format!("/app?sandgate_token={t}");
        let got = parse(&g, &h, &app).unwrap();
        assert_eq!(got.rewritten_path.as_deref(), Some("/app"));
        assert!(!got.by_path);
        // Whatever the parameter or cookie holds is presented: they are the gateway's by name.
        let got = parse(&g, &[], "/sandboxes/sb/80/?sandgate_token=junk").unwrap();
        assert_eq!(got.token, Some(("junk", TokenSource::Query)));
        // Nothing of ours: no token, nothing rewritten that was not before.
        let got = parse(
            &g,
            &[("cookie", "a=b"), ("x-access-token", "app")],
            "/sandboxes/sb/80/a?x",
        )
        .unwrap();
        assert_eq!((got.token, got.cookie), (None, None));
        assert_eq!(got.rewritten_path.as_deref(), Some("/a?x"));
    }

    #[test]
    fn query_parameters_are_removed_wherever_they_stand() {
        assert_eq!(without_param("?t=1", "t"), "");
        assert_eq!(without_param("?t=1&t=2", "t"), "");
        assert_eq!(without_param("?a&t=1&b=2", "t"), "?a&b=2");
        assert_eq!(without_param("?at=1&t", "t"), "?at=1");
        assert_eq!(query_param("?a=1&t=x&t=y", "t"), Some("x"));
        assert_eq!(query_param("?ta=1", "t"), None);
        assert_eq!(query_param("", "t"), None);
    }

    #[test]
    fn a_navigation_with_a_query_token_is_redirected_into_a_scoped_cookie() {
        let g = RequestGrammar::default();
        let t = a_token("sb");
        let nav = [
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
            (":method", "GET"),
        ];
        let path = format!("/v1/sandboxes/sb/8080/app/page?x=1&sandgate_token={t}");
        let got = parse(&g, &nav, &path).unwrap();
        let r = got.redirect.clone().unwrap();
        assert_eq!(r.location, "/v1/sandboxes/sb/8080/app/page?x=1");
        assert_eq!(
            r.set_cookie,
            format!(
                "sandgate_token={t}; Path=/v1/sandboxes/sb/8080; Expires=Sun, 06 Nov 1994 08:49:37 GMT; HttpOnly; SameSite=Lax"
            )
        );
        // Only a routed request is redirected.
        let route = Decision::Route {
            destination: "10.0.0.7:8080".into(),
            strip_credentials: 0,
        };
        assert_eq!(g.routing(&got, &route).unwrap().redirect, Some(&r));
        let forward = Decision::Forward(Box::new(peer()));
        assert_eq!(g.routing(&got, &forward).unwrap().redirect, None);
        // Over TLS the cookie is Secure; a Host-named sandbox's cookie is the whole host's.
        let tls = [
            nav[0],
            nav[1],
            nav[2],
            (":scheme", "https"),
            (":authority", "8080-sb.sandgate.test"),
        ];
        let e2b = RequestGrammar {
            e2b_domains: vec!["sandgate.test".into()],
            ..Default::default()
        };
        let root = format!("/?sandgate_token={t}");
        let got = parse(&e2b, &tls, &root).unwrap();
        let r = got.redirect.unwrap();
        assert_eq!(r.location, "/");
        assert!(r.set_cookie.contains("; Path=/;") && r.set_cookie.ends_with("; Secure"));
        // Not a top-level navigation, a header token, or a location that could leave the
        // origin: routed as it is.
        let sub = [
            ("sec-fetch-mode", "cors"),
            ("sec-fetch-dest", "empty"),
            (":method", "GET"),
        ];
        assert!(parse(&g, &sub, &path).unwrap().redirect.is_none());
        let post = [nav[0], nav[1], (":method", "POST")];
        assert!(parse(&g, &post, &path).unwrap().redirect.is_none());
        for escape in [
            "//evil.test/sandboxes/sb/80/",
            "/\\evil.test/sandboxes/sb/80/",
        ] {
            let path = format!("{escape}?sandgate_token={t}");
            let got = parse(&g, &nav, &path).unwrap();
            assert!(got.redirect.is_none(), "{escape}");
        }
        let odd = format!("/a;Domain=evil/sandboxes/sb/80/?sandgate_token={t}");
        assert!(parse(&g, &nav, &odd).unwrap().redirect.is_none());
        // A value that is no token cannot say how long a cookie lives: routed (and refused).
        assert!(
            parse(&g, &nav, "/sandboxes/sb/80/?sandgate_token=junk")
                .unwrap()
                .redirect
                .is_none()
        );
    }

    #[test]
    fn a_cookie_authenticated_websocket_must_come_from_an_allowed_origin() {
        let t = a_token("sb");
        let cookie = format!("sandgate_token={t}");
        let g = RequestGrammar {
            tokens: TokenGrammar {
                allowed_origins: vec!["https://app.example".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let ws = |origin: Option<&'static str>| {
            let mut h = vec![
                ("cookie", cookie.clone()),
                ("upgrade", "websocket".to_string()),
                (":authority", "gw.example:8092".to_string()),
                (":path", "/sandboxes/sb/80/ws".to_string()),
            ];
            if let Some(o) = origin {
                h.push(("origin", o.to_string()));
            }
            g.parse_headers(&h).map(|t| t.sandbox_id.to_string())
        };
        assert_eq!(ws(Some("http://gw.example:8092")), Ok("sb".into()));
        assert_eq!(ws(Some("https://GW.example:8092")), Ok("sb".into()));
        assert_eq!(ws(Some("https://app.example")), Ok("sb".into()));
        for bad in [
            Some("http://evil.example"),
            Some("http://gw.example:8093"),
            Some("null"),
            None,
        ] {
            assert_eq!(
                ws(bad).unwrap_err().code,
                DenyCode::OriginNotAllowed,
                "{bad:?}"
            );
        }
        // A plain request with the cookie, and an upgrade with the token in the query, are not
        // checked: neither is something a foreign page can make a browser send with our token.
        let plain = [
            ("cookie", cookie.as_str()),
            ("origin", "http://evil.example"),
        ];
        assert!(parse(&g, &plain, "/sandboxes/sb/80/").is_ok());
        let query_ws = [("upgrade", "websocket"), ("origin", "http://evil.example")];
        assert!(
            parse(
                &g,
                &query_ws,
                &format!("/sandboxes/sb/80/?sandgate_token={t}")
            )
            .is_ok()
        );
    }

    #[test]
    fn token_headers_that_disagree_are_ambiguous() {
        let g = RequestGrammar::default();
        let (a, b) = (a_token("a"), a_token("b"));
        let h = list(&[
            (":path", "/sandboxes/a/80/"),
            ("x-access-token", &a),
            ("x-access-token", &b),
        ]);
        assert_eq!(
            g.parse_headers(&h).unwrap_err().code,
            DenyCode::AmbiguousRequest
        );
    }
}
