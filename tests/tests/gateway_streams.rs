//! Long-lived traffic through Envoy: WebSocket upgrades, SSE streams that outlive the default
//! route timeout, and activity reported for streams that stay open and busy.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway, TEST_ACTIVITY_INTERVAL};
use sandgate_tests::http;
use sandgate_tests::stack::ACME_KEY;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn websocket(gw: &Gateway, path: &str, key: &str) -> Ws {
    let mut req = format!("ws://{}{path}", gw.envoy.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_or_else(|e| panic!("websocket upgrade through envoy: {e}"));
    assert_eq!(resp.status(), 101);
    ws
}

async fn round_trip(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo within 5 s")
        .expect("stream open")
        .expect("frame");
    assert_eq!(reply, Message::text(text));
}

async fn websocket_round_trip(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let mut ws = websocket(&gw, &format!("/sandboxes/sb-a/{port}/ws"), ACME_KEY).await;
    for i in 0..5 {
        round_trip(&mut ws, &format!("hello {i}")).await;
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let reply = ws.next().await.unwrap().unwrap();
    assert_eq!(reply, Message::binary(vec![0u8, 1, 2, 255]));
    ws.close(None).await.unwrap();

    // The upgrade is refused like any request without a valid key: no 101.
    let mut req = format!("ws://{}/sandboxes/sb-a/{port}/ws", gw.envoy.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("x-api-key", "wrong".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401, got {:?}", other.map(|(_, r)| r.status())),
    }
}

/// Envoy cuts a response after the route timeout, 15 s by default; envoy.yaml disables it for
/// the sandbox route so event streams and long polls live as long as the sandbox sends.
async fn an_sse_stream_outlives_the_default_route_timeout(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let events = 17u32;
    let resp = http::open(
        gw.envoy.addr,
        "GET",
        &format!("/sandboxes/sb-a/{port}/events"),
        &[
            ("x-api-key", ACME_KEY),
            ("accept", "text/event-stream"),
            ("x-echo-events", &events.to_string()),
            ("x-echo-interval-ms", "1000"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let started = std::time::Instant::now();
    let mut body = resp.into_body();
    let mut text = String::new();
    while let Some(chunk) = http::next_chunk(&mut body).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let received = text.matches("data: ").count() as u32;
    assert_eq!(
        received,
        events,
        "stream cut after {:?}: {text}",
        started.elapsed()
    );
    assert!(started.elapsed() > Duration::from_secs(15));
    assert!(text.contains("\"sandbox\":\"sb-a\""));
}

/// A WebSocket kept busy for several activity periods keeps the sandbox's last-active moving,
/// although only its first request went through the resolver; an idle one does not.
async fn a_busy_websocket_keeps_last_active_fresh(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let mut ctl = gw.kube.control().await;
    let mut ws = websocket(&gw, &format!("/sandboxes/sb-a/{port}/ws"), ACME_KEY).await;
    let opened = jiff::Timestamp::now();

    // Busy for five activity periods.
    let busy_until = tokio::time::Instant::now() + TEST_ACTIVITY_INTERVAL * 5;
    while tokio::time::Instant::now() < busy_until {
        round_trip(&mut ws, "tick").await;
        tokio::time::sleep(TEST_ACTIVITY_INTERVAL / 5).await;
    }
    let last_active = |m: &std::collections::BTreeMap<String, String>| {
        m.get("sb-a")
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    // Seconds precision: the last report must be well after the upgrade request.
    let want_after = opened + jiff::SignedDuration::from_secs(3);
    let seen = ctl
        .last_active_until(Duration::from_secs(5), |m| {
            last_active(m).is_some_and(|t| t >= want_after)
        })
        .await;
    let seen = last_active(&seen).expect("sb-a has a last-active time");
    assert!(
        seen >= want_after,
        "last-active {seen} not refreshed after {opened}"
    );

    // Idle but open: reports stop moving the clock.
    tokio::time::sleep(TEST_ACTIVITY_INTERVAL * 2).await;
    let before = last_active(&ctl.last_active().await.unwrap()).unwrap();
    tokio::time::sleep(TEST_ACTIVITY_INTERVAL * 3).await;
    let after = last_active(&ctl.last_active().await.unwrap()).unwrap();
    assert_eq!(before, after, "an idle stream must not count as activity");
    round_trip(&mut ws, "still open").await;
}

every_entry!(
    websocket_round_trip,
    an_sse_stream_outlives_the_default_route_timeout,
    a_busy_websocket_keeps_last_active_fresh,
);
