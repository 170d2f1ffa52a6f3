//! Whose address the gateway acts on, and what it answers before it has decided: the per-client
//! limit on invalid keys is keyed on Envoy's own view of the TCP peer (`use_remote_address`),
//! never on an `X-Forwarded-For` a client wrote, and `Expect: 100-continue` gets no interim
//! `100 Continue` ahead of a refusal (`proxy_100_continue`). Clients come from distinct loopback
//! source addresses (127.0.0.2, 127.0.0.3, …), as distinct hosts would. And what a client's
//! choice of port leaves in Envoy: the hosts of a port scan are gone within seconds.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::http::Response;
use sandgate_tests::stack::ACME_KEY;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The limit every test here runs with: three invalid keys per address, then 429.
const LIMIT: &[&str] = &["--key-failure-limit=3", "--key-failure-window=60s"];
const ATTACKER: &str = "127.0.0.2";
const VICTIM: &str = "127.0.0.3";
/// Bound on every exchange, so a hang fails the test instead of blocking it.
const EXCHANGE: Duration = Duration::from_secs(10);

/// A TCP connection to `to` whose source address is `from` (any port).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let from: IpAddr = from.parse().expect("source ip");
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let stream = socket
        .connect(to)
        .await
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
    assert_eq!(stream.local_addr().expect("local addr").ip(), from);
    stream
}

/// One GET through the gateway from the source address `from`, collected.
async fn get_from(gw: &Gateway, from: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let work = async {
        let stream = connect_from(from, gw.envoy.addr).await;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", gw.envoy.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::<Bytes>::new()).expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(EXCHANGE, work)
        .await
        .unwrap_or_else(|_| panic!("GET {path} from {from} timed out\n{}", gw.envoy.logs()))
}

fn assert_code(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{code}: {}", r.body);
    assert_eq!(r.json()["code"], code, "{}", r.body);
    assert!(
        r.json().get("sandbox").is_none(),
        "reached a sandbox: {}",
        r.body
    );
}

async fn start(entry: Entry) -> (Gateway, String) {
    let mut gw = Gateway::start_args(entry, LIMIT).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    (gw, format!("/sandboxes/sb-a/{port}/"))
}

/// A guesser that writes a new `X-Forwarded-For` with every guess is still one client: its
/// guesses are counted against the address it really connects from, end in 429, and the valid
/// key is 429 for it too. Another address is unaffected, whatever it claims to forward for,
/// and the sandbox learns the real peer (Envoy appends it to the client's list).
async fn rotating_forwarded_for_cannot_escape_the_key_limit(entry: Entry) {
    let (gw, path) = start(entry).await;
    for i in 1..=3 {
        let guess = format!("guess-{i}");
        let xff = format!("198.51.100.{i}, 203.0.113.{i}");
        let r = get_from(
            &gw,
            ATTACKER,
            &path,
            &[("x-api-key", &guess), ("x-forwarded-for", &xff)],
        )
        .await;
        assert_code(&r, 401, "invalid_api_key");
    }
    for (i, key) in [(4, "guess-4"), (5, "guess-5"), (6, ACME_KEY)] {
        let xff = format!("203.0.113.{i}");
        let r = get_from(
            &gw,
            ATTACKER,
            &path,
            &[("x-api-key", key), ("x-forwarded-for", &xff)],
        )
        .await;
        assert_code(&r, 429, "too_many_key_failures");
    }
    // A different peer: not limited, even when it names the guesser as the client it forwards.
    let r = get_from(
        &gw,
        VICTIM,
        &path,
        &[("x-api-key", ACME_KEY), ("x-forwarded-for", ATTACKER)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["sandbox"], "sb-a");
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        format!("{ATTACKER},{VICTIM}"),
        "Envoy appends the real peer: {}",
        r.body
    );
}

/// An attacker that claims to forward for its victim (`X-Forwarded-For: <victim address>`)
/// locks out only itself: its invalid keys count against its own address, and the victim's
/// valid key keeps working (one invalid key of the victim's own is still a 401, not a 429).
async fn a_spoofed_forwarded_for_cannot_lock_out_its_victim(entry: Entry) {
    let (gw, path) = start(entry).await;
    let spoof = [("x-forwarded-for", VICTIM)];
    for i in 1..=3 {
        let guess = format!("guess-{i}");
        let r = get_from(&gw, ATTACKER, &path, &[("x-api-key", &guess), spoof[0]]).await;
        assert_code(&r, 401, "invalid_api_key");
    }
    let r = get_from(&gw, ATTACKER, &path, &[("x-api-key", "guess-4"), spoof[0]]).await;
    assert_code(&r, 429, "too_many_key_failures");
    // No route was decided for this key before (a kept one would answer without the limiter).
    let r = get_from(&gw, ATTACKER, &path, &[("x-api-key", ACME_KEY), spoof[0]]).await;
    assert_code(&r, 429, "too_many_key_failures");

    let r = get_from(&gw, VICTIM, &path, &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(r.status, 200, "the victim is locked out: {}", r.body);
    assert_eq!(r.json()["sandbox"], "sb-a");
    let r = get_from(&gw, VICTIM, &path, &[("x-api-key", "victim-typo")]).await;
    assert_code(&r, 401, "invalid_api_key");
}

/// A raw HTTP/1.1 exchange: what a client that waits for `100 Continue` before sending its
/// body sees, byte for byte.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn open(to: SocketAddr, head: &str) -> Raw {
        let mut stream = connect_from("127.0.0.1", to).await;
        stream.write_all(head.as_bytes()).await.expect("write head");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next response head (status line and headers), read within [`EXCHANGE`].
    async fn head(&mut self) -> String {
        let work = async {
            loop {
                if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                    let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                    return String::from_utf8_lossy(&head).into_owned();
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.expect("read");
                assert!(
                    n > 0,
                    "closed before a response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(EXCHANGE, work)
            .await
            .expect("no response head in time")
    }

    /// The body that follows `head` (its `content-length`).
    async fn body(&mut self, head: &str) -> String {
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            })
            .unwrap_or_else(|| panic!("no content-length in {head:?}"));
        let work = async {
            while self.buf.len() < length {
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.expect("read body");
                assert!(n > 0, "closed inside the body");
                self.buf.extend_from_slice(&chunk[..n]);
            }
            let body: Vec<u8> = self.buf.drain(..length).collect();
            String::from_utf8_lossy(&body).into_owned()
        };
        tokio::time::timeout(EXCHANGE, work)
            .await
            .expect("no body in time")
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

/// `Expect: 100-continue` without a valid key: the first thing the client reads is the 401 —
/// no `100 Continue` invites a body the gateway refuses. With the tenant's key the request is
/// routed as usual: the sandbox (not the gateway) decides whether to ask for the body.
async fn expect_continue_gets_its_refusal_first(entry: Entry) {
    let (gw, path) = start(entry).await;
    let body = "hello";
    let head = |key: Option<&str>| {
        let key = key.map_or(String::new(), |k| format!("x-api-key: {k}\r\n"));
        format!(
            "POST {path}upload HTTP/1.1\r\nhost: sandgate\r\n{key}content-type: text/plain\r\n\
             content-length: {}\r\nexpect: 100-continue\r\n\r\n",
            body.len()
        )
    };
    for (key, code) in [
        (None, "missing_api_key"),
        (Some("not-a-key"), "invalid_api_key"),
    ] {
        let mut raw = Raw::open(gw.envoy.addr, &head(key)).await;
        let first = raw.head().await;
        assert!(
            first.starts_with("HTTP/1.1 401 "),
            "{code}: the first answer must be the refusal, got {first:?}"
        );
        let refusal = Response {
            status: status_of(&first),
            headers: Default::default(),
            body: raw.body(&first).await,
        };
        assert_code(&refusal, 401, code);
    }

    let mut raw = Raw::open(gw.envoy.addr, &head(Some(ACME_KEY))).await;
    let mut answer = raw.head().await;
    if status_of(&answer) == 100 {
        // The sandbox asked for the body (through Envoy): send it, then the answer follows.
        raw.stream.write_all(body.as_bytes()).await.expect("body");
        answer = raw.head().await;
    }
    assert_eq!(status_of(&answer), 200, "{answer}");
    let echo: serde_json::Value =
        serde_json::from_str(&raw.body(&answer).await).expect("echo JSON");
    assert_eq!(echo["sandbox"], "sb-a");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/upload");
    // The expectation went to the sandbox with the request: Envoy did not answer it itself.
    assert_eq!(echo["headers"]["expect"], "100-continue", "{echo}");
}

/// The hosts of Envoy's `sandboxes` cluster right now (one per destination ip:port in use).
async fn sandbox_hosts(gw: &Gateway) -> u64 {
    let stat = "cluster.sandboxes.membership_total";
    let (status, body) =
        sandgate_tests::http::get(gw.envoy.admin, &format!("/stats?filter=^{stat}$"), None)
            .await
            .expect("envoy admin");
    assert_eq!(status, 200, "{body}");
    body.trim()
        .strip_prefix(&format!("{stat}: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {stat} in {body:?}"))
}

/// A tenant may name any port of its own sandbox, and every distinct one becomes a host of
/// Envoy's ORIGINAL_DST cluster. A scan of ports nobody listens on leaves no host behind for
/// long: hosts without a connection are dropped within two cleanup intervals (5 s each).
async fn a_port_scan_leaves_no_hosts_behind(entry: Entry) {
    const PORTS: u16 = 400;
    const FIRST: u16 = 20000; // below the ephemeral range the harness's listeners come from
    let (gw, _) = start(entry).await;
    let gw = std::sync::Arc::new(gw);
    let scans: Vec<_> = (0..4)
        .map(|lane| {
            let gw = std::sync::Arc::clone(&gw);
            tokio::spawn(async move {
                for port in (FIRST + lane..FIRST + PORTS).step_by(4) {
                    let path = format!("/sandboxes/sb-a/{port}/");
                    let r = gw.get(&path, &[("x-api-key", ACME_KEY)]).await;
                    // Routed, refused by the sandbox: 502 port_not_open (Envoy's local reply).
                    assert_eq!(r.status, 502, "port {port} answered: {}", r.body);
                    assert!(r.body.contains("port_not_open"), "port {port}: {}", r.body);
                }
            })
        })
        .collect();
    for scan in scans {
        scan.await.expect("scan");
    }
    let after = sandbox_hosts(&gw).await;
    assert!(
        after >= u64::from(PORTS),
        "only {after} hosts after the scan"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = sandbox_hosts(&gw).await;
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} of {after} hosts still there 15 s after the scan"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

every_entry!(
    rotating_forwarded_for_cannot_escape_the_key_limit,
    a_spoofed_forwarded_for_cannot_lock_out_its_victim,
    expect_continue_gets_its_refusal_first,
    a_port_scan_leaves_no_hosts_behind,
);
