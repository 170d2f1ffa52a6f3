//! A panic in the native module never takes Envoy down (issue 20): every exported hook runs
//! behind a fail-closed guard. Without it a panic crossing the C boundary aborts the whole
//! proxy, every connection with it (measured before the module was built).
//!
//! The module here is libsandgate_native_panics.so (`just native` builds it beside the shipped
//! one, feature `forced-panic`): a request header `x-sandgate-panic: <hook>` panics in that hook.
//! A WebSocket is opened first and must outlive every panic; each panicking request gets 503
//! `resolver_unavailable` (the response hook's too: its local reply replaces the sandbox's),
//! and the same Envoy goes on routing.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sandgate_tests::envoy::artefact;
use sandgate_tests::gateway::Gateway;
use sandgate_tests::process::eventually;
use sandgate_tests::stack::ACME_KEY;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn a_panic_in_a_hook_fails_its_request_closed_and_envoy_lives_on() {
    let module = artefact(
        "SANDGATE_NATIVE_PANICS",
        "target/native/libsandgate_native_panics.so",
        "run `just native dev`",
    );
    let mut gw = Gateway::start_native_module(&module).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let path = format!("/sandboxes/sb-a/{port}/");
    let key = ("x-api-key", ACME_KEY);

    let mut req = format!("ws://{}/sandboxes/sb-a/{port}/ws", gw.envoy.addr)
        .into_client_request()
        .expect("ws request");
    req.headers_mut()
        .insert("x-api-key", ACME_KEY.parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket through envoy");
    let echo = async |ws: &mut tokio_tungstenite::WebSocketStream<_>, text: String| {
        ws.send(Message::text(text.clone())).await.expect("send");
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo within 5 s")
            .expect("open")
            .expect("frame");
        assert_eq!(reply, Message::text(text));
    };
    echo(&mut ws, "before".into()).await;

    for round in 0..20 {
        for hook in ["request_headers", "response_headers"] {
            let r = gw.get(&path, &[key, ("x-sandgate-panic", hook)]).await;
            assert_eq!(
                (r.status, r.json()["code"].as_str()),
                (503, Some("resolver_unavailable")),
                "a panic in {hook} (round {round}): {}",
                r.body
            );
            assert!(
                r.json()["sandbox"].is_null(),
                "the sandbox's answer went out: {}",
                r.body
            );
        }
        let r = gw.get(&path, &[key]).await;
        assert_eq!(
            r.json()["sandbox"],
            "sb-a",
            "after round {round}: {}",
            r.body
        );
        echo(&mut ws, format!("round {round}")).await;
    }

    // Each panic is logged as caught (Envoy writes its log file out in its own time).
    let caught = |hook: &str| format!("panic in on_http_filter_{hook} (failed closed)");
    let all_logged = eventually(Duration::from_secs(15), || async {
        let log = gw.envoy.logs();
        ["request_headers", "response_headers"]
            .iter()
            .all(|hook| log.matches(&caught(hook)).count() == 20)
    })
    .await;
    assert!(
        all_logged,
        "20 caught panics per hook:\n{}",
        gw.envoy.logs()
    );
    // The control plane and metrics inside the same process answer too.
    let (status, _) = gw.kube.resolver.http_get("/readyz", None).await;
    assert_eq!(status, 200);
    ws.close(None).await.expect("close");
}
