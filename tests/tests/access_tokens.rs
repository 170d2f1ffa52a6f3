//! Access tokens through Envoy, every entry: a token minted for one sandbox opens it with no
//! API key, from a header (passed on: it is the sandbox's own credential), the query parameter
//! (removed) or the cookie (removed); a browser navigation with the query token is redirected
//! into a cookie scoped to the sandbox's path. Every other token gets its deliberate answer:
//! another port or sandbox 403, expired 401 `expired_access_token`, tampered, unknown key,
//! revoked minting key or retired signing key 401 `invalid_access_token`; and a WebSocket
//! riding the cookie from a foreign origin 403. Signing keys rotate through the watched
//! Secret; tenants mint their own through the gateway's token endpoint.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sandgate_core::token;
use sandgate_tests::every_entry;
use sandgate_tests::fixtures::token_keys_secret;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::http::{self, Response};
use sandgate_tests::process::eventually;
use sandgate_tests::stack::{
    ACME_KEY, GLOBEX_KEY, KEYS_NAMESPACE, PROPAGATION, TOKEN_KEY, TOKEN_KEYS_SECRET,
};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A running sandbox of each tenant: (gateway, acme's port, globex's port).
async fn two_sandboxes(entry: Entry) -> (Gateway, u16, u16) {
    let mut gw = Gateway::start(entry).await;
    let a = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let b = gw.sandbox("globex", "pod-b", "sb-b", "127.0.0.12").await;
    (gw, a, b)
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    http::send(gw.envoy.addr, "GET", path, headers)
        .await
        .expect("request through Envoy")
}

/// The refusal's (status, code).
fn refusal(r: &Response) -> (u16, String) {
    (
        r.status,
        r.json()["code"].as_str().unwrap_or("").to_string(),
    )
}

async fn a_token_opens_its_sandbox_from_a_header_the_query_or_the_cookie(entry: Entry) {
    let (gw, port, _) = two_sandboxes(entry).await;
    let token = gw.mint("sb-a", &[port]).await;
    let at = format!("/sandboxes/sb-a/{port}");

    // Header: passed on as it came, the sandbox's own credential.
    let r = get(&gw, &format!("{at}/h"), &[("x-access-token", &token)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["sandbox"], "sb-a");
    assert_eq!(seen["headers"]["x-access-token"], token.as_str());

    // Query: removed from the path the sandbox sees, the rest of the query kept.
    let r = get(&gw, &format!("{at}/q?a=1&sandgate_token={token}&b=2"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["path"], "/q?a=1&b=2");

    // Cookie: removed from the cookies the sandbox sees, the app's own kept.
    let cookie = format!("theme=dark; sandgate_token={token}");
    let r = get(&gw, &format!("{at}/c"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["cookie"], "theme=dark");
    let alone = format!("sandgate_token={token}");
    let r = get(&gw, &format!("{at}/c"), &[("cookie", &alone)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["headers"].get("cookie").is_none(), "{}", r.body);

    // E2B's own header, with the sandbox named the E2B way.
    let r = get(
        &gw,
        "/e2b",
        &[
            ("e2b-sandbox-id", "sb-a"),
            ("e2b-sandbox-port", &port.to_string()),
            ("e2b-traffic-access-token", &token),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["headers"]["e2b-traffic-access-token"],
        token.as_str()
    );

    // No credential at all is still a missing one.
    let r = get(&gw, &format!("{at}/none"), &[]).await;
    assert_eq!(refusal(&r), (401, "missing_api_key".into()));
}

async fn a_navigation_with_the_query_token_is_redirected_into_a_scoped_cookie(entry: Entry) {
    let (gw, port, _) = two_sandboxes(entry).await;
    let token = gw.mint("sb-a", &[]).await;
    let nav = [
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ];
    let r = get(
        &gw,
        &format!("/sandboxes/sb-a/{port}/app/?x=1&sandgate_token={token}"),
        &nav,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some(format!("/sandboxes/sb-a/{port}/app/?x=1").as_str())
    );
    let set = r.header("set-cookie").expect("set-cookie");
    let expires = token::http_date(token::parse(&token).unwrap().claims.expires_at);
    assert_eq!(
        set,
        format!(
            "sandgate_token={token}; Path=/sandboxes/sb-a/{port}; Expires={expires}; HttpOnly; SameSite=Lax"
        )
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // A token that does not route is refused, never redirected: the cookie is never set.
    let r = get(
        &gw,
        &format!("/sandboxes/sb-b/{port}/?sandgate_token={token}"),
        &nav,
    )
    .await;
    assert_eq!(refusal(&r), (403, "access_token_out_of_scope".into()));
    assert!(r.header("set-cookie").is_none());
}

async fn every_other_token_gets_its_own_answer(entry: Entry) {
    let (gw, port, other_port) = two_sandboxes(entry).await;
    let mut control = gw.kube.control().await;
    let token = control.mint("sb-a", "", &[port], 0).await.unwrap();
    let code = |r: Response| refusal(&r);
    let with = |t: String| vec![("x-access-token", t)];
    let send = |path: String, t: String| {
        let gw = &gw;
        async move {
            let h = with(t);
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            get(gw, &path, &h).await
        }
    };
    // Another port of the same sandbox, another tenant's sandbox.
    let r = send(format!("/sandboxes/sb-a/{}/", port + 1), token.clone()).await;
    assert_eq!(code(r), (403, "access_token_out_of_scope".into()));
    let r = send(format!("/sandboxes/sb-b/{other_port}/"), token.clone()).await;
    assert_eq!(code(r), (403, "access_token_out_of_scope".into()));
    // A token for sb-b minted into acme's namespace: the sandbox is not acme's.
    let wrong_tenant = control.mint("sb-b", "acme", &[], 0).await.unwrap();
    let r = send(format!("/sandboxes/sb-b/{other_port}/"), wrong_tenant).await;
    assert_eq!(code(r), (403, "forbidden".into()));
    // Tampered: the claims say another sandbox, the MAC stays.
    let mut p = token::parse(&token).unwrap();
    p.claims.sandbox_id = "sb-b".into();
    let forged = p.claims.encode(&p.mac);
    let r = send(format!("/sandboxes/sb-b/{other_port}/"), forged).await;
    assert_eq!(code(r), (401, "invalid_access_token".into()));
    // Signed by a key this gateway does not hold.
    let mut p = token::parse(&token).unwrap();
    p.claims.key_id = "someone-else".into();
    let unknown = p.claims.encode(&p.mac);
    let r = send(format!("/sandboxes/sb-a/{port}/"), unknown).await;
    assert_eq!(code(r), (401, "invalid_access_token".into()));
    // Expired: routed (and, through the wasm entry, kept) while it lives, refused after.
    let short = control.mint("sb-a", "", &[port], 1).await.unwrap();
    let expiry = token::parse(&short).unwrap().claims.expires_at;
    let r = send(format!("/sandboxes/sb-a/{port}/"), short.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    while now() < expiry {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = send(format!("/sandboxes/sb-a/{port}/"), short).await;
    assert_eq!(code(r), (401, "expired_access_token".into()));
    // The good token still opens its port.
    let r = send(format!("/sandboxes/sb-a/{port}/"), token).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn signing_keys_rotate_through_the_secret(entry: Entry) {
    let (gw, port, _) = two_sandboxes(entry).await;
    let mut control = gw.kube.control().await;
    let old = control.mint("sb-a", "", &[], 0).await.unwrap();
    assert_eq!(token::parse(&old).unwrap().claims.key_id, TOKEN_KEY.0);
    let path = format!("/sandboxes/sb-a/{port}/");
    let status = |t: String| {
        let (gw, path) = (&gw, path.clone());
        async move {
            let r = get(gw, &path, &[("x-access-token", &t)]).await;
            (r.status, r.body)
        }
    };
    assert_eq!(status(old.clone()).await.0, 200);
    // A newer key joins: it signs from now on, the old one still verifies.
    let newer: (&str, &[u8]) = ("2027-01-01", b"the next signing key, also 32 bytes long");
    gw.kube.emu.apply(token_keys_secret(
        KEYS_NAMESPACE,
        TOKEN_KEYS_SECRET,
        &[TOKEN_KEY, newer],
    ));
    let deadline = tokio::time::Instant::now() + PROPAGATION;
    let new = loop {
        let t = control.mint("sb-a", "", &[], 0).await.unwrap();
        if token::parse(&t).unwrap().claims.key_id == newer.0 {
            break t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the newer key never signed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status(new.clone()).await.0, 200);
    assert_eq!(status(old.clone()).await.0, 200);
    // The old key retired: its tokens die at once (kept answers included), the new live on.
    gw.kube.emu.apply(token_keys_secret(
        KEYS_NAMESPACE,
        TOKEN_KEYS_SECRET,
        &[newer],
    ));
    let refused = eventually(PROPAGATION, || {
        let check = status(old.clone());
        async move { check.await.0 == 401 }
    })
    .await;
    assert!(refused, "a retired key's token still opened the sandbox");
    let r = get(&gw, &path, &[("x-access-token", &old)]).await;
    assert_eq!(refusal(&r), (401, "invalid_access_token".into()));
    assert_eq!(status(new).await.0, 200);
}

async fn tenants_mint_their_own_tokens_which_die_with_their_key(entry: Entry) {
    let (gw, port, other_port) = two_sandboxes(entry).await;
    let mint = |key: Option<&'static str>, id: &'static str| {
        let gw = &gw;
        async move {
            let h: Vec<(&str, &str)> = key.iter().map(|k| ("x-api-key", *k)).collect();
            http::send(
                gw.envoy.addr,
                "POST",
                &format!("/sandgate/v1/sandboxes/{id}/tokens"),
                &h,
            )
            .await
            .expect("token endpoint through Envoy")
        }
    };
    let r = mint(Some(ACME_KEY), "sb-a").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let minted = r.json();
    let token = minted["token"].as_str().unwrap().to_string();
    assert_eq!(minted["sandbox_id"], "sb-a");
    assert!(minted["expires_at"].as_str().unwrap().ends_with('Z'));
    // Not another tenant's sandbox (it is not found among this key's), not without a key.
    let r = mint(Some(ACME_KEY), "sb-b").await;
    assert_eq!(refusal(&r), (404, "sandbox_not_found".into()));
    let r = mint(None, "sb-a").await;
    assert_eq!(refusal(&r), (401, "missing_api_key".into()));
    let r = mint(Some("nope"), "sb-a").await;
    assert_eq!(refusal(&r), (401, "invalid_api_key".into()));
    // Globex's key mints for globex's sandbox only.
    assert_eq!(mint(Some(GLOBEX_KEY), "sb-b").await.status, 201);

    let path = format!("/sandboxes/sb-a/{port}/");
    let r = get(&gw, &path, &[("x-access-token", &token)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(
        &gw,
        &format!("/sandboxes/sb-b/{other_port}/"),
        &[("x-access-token", &token)],
    )
    .await;
    assert_eq!(refusal(&r), (403, "access_token_out_of_scope".into()));
    // Acme's key revoked (its Secret deleted): the token it minted dies with it.
    assert!(gw.kube.emu.delete(
        sandgate_tests::emulator::Kind::Secret,
        KEYS_NAMESPACE,
        "key-acme"
    ));
    let refused = eventually(PROPAGATION, || {
        let gw = &gw;
        let (path, token) = (path.clone(), token.clone());
        async move { get(gw, &path, &[("x-access-token", &token)]).await.status == 401 }
    })
    .await;
    assert!(refused, "a revoked key's token still opened the sandbox");
    let r = get(&gw, &path, &[("x-access-token", &token)]).await;
    assert_eq!(refusal(&r), (401, "invalid_access_token".into()));
}

async fn a_websocket_rides_the_cookie_only_from_an_allowed_origin(entry: Entry) {
    let (gw, port, _) = two_sandboxes(entry).await;
    let token = gw.mint("sb-a", &[port]).await;
    let url = format!("ws://{}/sandboxes/sb-a/{port}/ws", gw.envoy.addr);
    let upgrade = |origin: Option<String>, cookie: bool, query: bool| {
        let url = if query {
            format!("{url}?sandgate_token={token}")
        } else {
            url.clone()
        };
        let mut req = url.into_client_request().unwrap();
        if cookie {
            let c = format!("sandgate_token={token}");
            req.headers_mut().insert("cookie", c.parse().unwrap());
        }
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        tokio_tungstenite::connect_async(req)
    };
    let own = format!("http://{}", gw.envoy.addr);
    // From the gateway's own origin: upgraded, and messages flow.
    let (mut ws, resp) = upgrade(Some(own), true, false).await.expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hi")).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo")
        .expect("open")
        .expect("frame");
    assert_eq!(reply, Message::text("hi"));
    // From a foreign origin, or none, the cookie opens nothing.
    for origin in [Some("http://evil.example".to_string()), None] {
        match upgrade(origin.clone(), true, false).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "{origin:?}");
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
                assert!(body.contains("origin_not_allowed"), "{body}");
            }
            other => panic!("{origin:?}: {:?}", other.map(|(_, r)| r.status())),
        }
    }
    // The query token is no ambient credential: any origin may use it.
    let (_ws, resp) = upgrade(Some("http://evil.example".into()), false, true)
        .await
        .expect("upgrade with the query token");
    assert_eq!(resp.status(), 101);
}

/// The filter's cache keeps a token's answer no longer than the token lives, and drops it
/// when the tenant key that minted it goes, however long its TTL.
#[tokio::test]
async fn a_kept_token_answer_ends_with_the_token_and_with_its_key() {
    let mut gw = Gateway::start_cached(Duration::from_secs(300)).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let path = format!("/sandboxes/sb-a/{port}/");
    let mut control = gw.kube.control().await;
    let short = control.mint("sb-a", "", &[port], 3).await.unwrap();
    let expiry = token::parse(&short).unwrap().claims.expires_at;
    let resolver = &gw.kube.resolver;
    let with = [("x-access-token", short.as_str())];
    resolver.warm_cache(|| gw.get(&path, &with)).await;
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    while unix() < expiry {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = get(&gw, &path, &[("x-access-token", &short)]).await;
    assert_eq!(refusal(&r), (401, "expired_access_token".into()));
    // Decided by the resolver: the kept answer ended with the token.
    let expired = r#"sandgate_resolves_total{outcome="expired_access_token"}"#;
    assert_eq!(resolver.metric(expired).await, 1);

    // A tenant's token, kept, then its key revoked.
    let r = http::send(
        gw.envoy.addr,
        "POST",
        "/sandgate/v1/sandboxes/sb-a/tokens",
        &[("x-api-key", ACME_KEY)],
    )
    .await
    .unwrap();
    let token = r.json()["token"].as_str().unwrap().to_string();
    let with = [("x-access-token", token.as_str())];
    resolver.warm_cache(|| gw.get(&path, &with)).await;
    gw.kube.emu.delete(
        sandgate_tests::emulator::Kind::Secret,
        KEYS_NAMESPACE,
        "key-acme",
    );
    let refused = eventually(PROPAGATION, || {
        let (gw, path, token) = (&gw, path.clone(), token.clone());
        async move { get(gw, &path, &[("x-access-token", &token)]).await.status == 401 }
    })
    .await;
    assert!(refused, "the cache kept a revoked key's token answer");
}

/// Every replica verifies every replica's tokens: they share the signing-key Secret.
#[tokio::test]
async fn a_token_minted_by_one_replica_opens_the_sandbox_through_another() {
    let mut gw = Gateway::start(Entry::Wasm).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let replica = gw.kube.start_replica(&[]).await;
    let mut other = sandgate_tests::stack::Control {
        client: replica.control_client().await,
        key: Some(sandgate_tests::stack::ADMIN_KEY.into()),
    };
    let token = other.mint("sb-a", "", &[port], 0).await.unwrap();
    let r = get(
        &gw,
        &format!("/sandboxes/sb-a/{port}/"),
        &[("x-access-token", &token)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

every_entry!(
    a_token_opens_its_sandbox_from_a_header_the_query_or_the_cookie,
    a_navigation_with_the_query_token_is_redirected_into_a_scoped_cookie,
    every_other_token_gets_its_own_answer,
    signing_keys_rotate_through_the_secret,
    tenants_mint_their_own_tokens_which_die_with_their_key,
    a_websocket_rides_the_cookie_only_from_an_allowed_origin,
);
