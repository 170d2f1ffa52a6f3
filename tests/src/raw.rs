//! Byte-exact clients for requests a well-behaved library refuses to send: header values and
//! request targets that are not UTF-8 (obs-text, 0x80–0xFF), tabs inside values, and requests
//! from a chosen loopback source address. HTTP/1.1 is written byte for byte; HTTP/2 (h2c, prior
//! knowledge) goes through hyper, whose `HeaderValue::from_bytes` takes obs-text, and a `:path`
//! hyper cannot carry is swapped into its HEADERS frame on the way out.
//!
//! Every call has a time limit; answers come back as [`crate::http::Response`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};

use crate::envoy::Envoy;
use crate::http::{Response, collect};

/// How long one request may take, connect to last byte.
pub const LIMIT: Duration = Duration::from_secs(10);

/// A header as bytes: the name is ASCII, the value anything.
pub type RawHeader<'a> = (&'a str, &'a [u8]);

/// A TCP connection to `addr` from `source` (any loopback address: 127.0.0.2, 127.0.0.3, ...),
/// so the gateway sees a client of that address without trusting any header.
pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

async fn connect(source: Option<IpAddr>, addr: SocketAddr) -> io::Result<TcpStream> {
    match source {
        Some(ip) => connect_from(ip, addr).await,
        None => TcpStream::connect(addr).await,
    }
}

async fn limited<T>(what: &str, work: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(LIMIT, work)
        .await
        .map_err(|_| io::Error::other(format!("{what} timed out after {LIMIT:?}")))?
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1, byte for byte

/// An HTTP/1.1 request: `{method} {target} HTTP/1.1`, `host`, `connection: close`, then
/// `headers` exactly as given (name, `": "`, value bytes), then the blank line. No body.
pub fn h1_request(method: &str, target: &[u8], headers: &[RawHeader<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `request` as it is and reads the answer to the end (the request says
/// `connection: close`): status, headers and a `content-length`, chunked or read-to-close
/// body.
pub async fn h1(addr: SocketAddr, request: &[u8]) -> io::Result<Response> {
    h1_from(None, addr, request).await
}

/// [`h1`] from a chosen source address.
pub async fn h1_from(
    source: Option<IpAddr>,
    addr: SocketAddr,
    request: &[u8],
) -> io::Result<Response> {
    limited("raw HTTP/1.1 request", async {
        let mut stream = connect(source, addr).await?;
        stream.write_all(request).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(n) => n,
                // A reset after a complete answer is still that answer.
                Err(e) if !buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(r) = parse_h1(&buf, false)? {
                return Ok(r);
            }
        }
        parse_h1(&buf, true)?.ok_or_else(|| {
            io::Error::other(format!(
                "connection closed before a whole answer: {:?}",
                String::from_utf8_lossy(&buf)
            ))
        })
    })
    .await
}

/// The response in `buf` when it is complete (`closed`: the server closed the connection, so
/// a body without length ends here).
fn parse_h1(buf: &[u8], closed: bool) -> io::Result<Option<Response>> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status line in {head:?}")))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(n, v);
        }
    }
    let rest = &buf[head_end + 4..];
    let chunked = headers
        .get("transfer-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let body = if chunked {
        match dechunk(rest) {
            Some(b) => b,
            None if closed => return Err(io::Error::other("chunked body cut short")),
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if rest.len() < n {
            return if closed {
                Err(io::Error::other("body shorter than content-length"))
            } else {
                Ok(None)
            };
        }
        rest[..n].to_vec()
    } else if closed || status == 204 || status == 304 || status / 100 == 1 {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }))
}

/// A whole chunked body, or `None` while its last chunk has not arrived.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if rest.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 through hyper from a chosen source address

/// One HTTP/1.1 request through hyper on a connection from `source`, collected.
pub async fn send_from(
    source: IpAddr,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<Response> {
    limited("HTTP/1.1 request", async {
        let stream = connect_from(source, addr).await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(io::Error::other)?;
        collect(sender.send_request(req).await.map_err(io::Error::other)?).await
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 (h2c, prior knowledge)

/// One GET over h2c with `headers` as bytes (obs-text allowed), collected. `path` is the
/// `:path`; the authority is `addr`.
pub async fn h2(addr: SocketAddr, path: &str, headers: &[RawHeader<'_>]) -> io::Result<Response> {
    limited("HTTP/2 request", async {
        let stream = TcpStream::connect(addr).await?;
        h2_on(stream, addr, path, headers).await
    })
    .await
}

/// One GET over h2c whose `:path` is `path` byte for byte — bytes `http::Uri` refuses
/// (0x80–0xFF) included. hyper runs the connection and reads the answer; its HEADERS frame is
/// replaced on the way out by one carrying `:method GET`, `:scheme http`, `:path` = `path`,
/// `:authority` = `addr` and `headers`, every field an HPACK literal that is never indexed,
/// so the server's table and hyper's decoder of the answer stay untouched.
pub async fn h2_raw_path(
    addr: SocketAddr,
    path: &[u8],
    headers: &[RawHeader<'_>],
) -> io::Result<Response> {
    limited("HTTP/2 request with a raw :path", async {
        let mut block = Vec::new();
        block.push(0x82); // :method GET (static index 2)
        block.push(0x86); // :scheme http (static index 6)
        hpack_literal(&mut block, Name::Static(4), path); // :path
        hpack_literal(&mut block, Name::Static(1), addr.to_string().as_bytes()); // :authority
        for (name, value) in headers {
            hpack_literal(&mut block, Name::New(name.as_bytes()), value);
        }
        let stream = TcpStream::connect(addr).await?;
        let swapped = SwapHeaders {
            inner: stream,
            block,
            seen: Vec::new(),
            out: Vec::new(),
            preface: PREFACE.len(),
        };
        h2_on(swapped, addr, "/placeholder", &[]).await
    })
    .await
}

async fn h2_on<S>(
    stream: S,
    addr: SocketAddr,
    path: &str,
    headers: &[RawHeader<'_>],
) -> io::Result<Response>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .map_err(io::Error::other)?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        let value = HeaderValue::from_bytes(value).map_err(io::Error::other)?;
        req = req.header(*name, value);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(io::Error::other)?;
    collect(sender.send_request(req).await.map_err(io::Error::other)?).await
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

enum Name<'a> {
    Static(u8),
    New(&'a [u8]),
}

/// An HPACK "literal header field never indexed" (RFC 7541 6.2.3), strings without Huffman.
fn hpack_literal(out: &mut Vec<u8>, name: Name<'_>, value: &[u8]) {
    match name {
        Name::Static(index) => hpack_int(out, 0x10, 4, usize::from(index)),
        Name::New(name) => {
            out.push(0x10);
            hpack_int(out, 0, 7, name.len());
            out.extend_from_slice(name);
        }
    }
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// An HPACK integer with an `n`-bit prefix, `flags` in the bits above it (RFC 7541 5.1).
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A client transport that passes everything through except HEADERS frames, whose header
/// block is replaced by `block` (same stream, END_STREAM and END_HEADERS kept). Only for one
/// request per connection.
struct SwapHeaders<S> {
    inner: S,
    block: Vec<u8>,
    /// Written by hyper, not yet a whole frame.
    seen: Vec<u8>,
    /// Ready for the socket.
    out: Vec<u8>,
    /// Preface bytes still to pass through unparsed.
    preface: usize,
}

impl<S> SwapHeaders<S> {
    fn absorb(&mut self, buf: &[u8]) {
        self.seen.extend_from_slice(buf);
        if self.preface > 0 {
            let n = self.preface.min(self.seen.len());
            self.out.extend(self.seen.drain(..n));
            self.preface -= n;
        }
        while self.seen.len() >= 9 {
            let len = (usize::from(self.seen[0]) << 16)
                | (usize::from(self.seen[1]) << 8)
                | usize::from(self.seen[2]);
            if self.seen.len() < 9 + len {
                break;
            }
            let frame: Vec<u8> = self.seen.drain(..9 + len).collect();
            if frame[3] == FRAME_HEADERS {
                let block_len = self.block.len();
                self.out.extend_from_slice(&[
                    (block_len >> 16) as u8,
                    (block_len >> 8) as u8,
                    block_len as u8,
                    FRAME_HEADERS,
                    frame[4] & (FLAG_END_STREAM | FLAG_END_HEADERS),
                ]);
                self.out.extend_from_slice(&frame[5..9]);
                self.out.extend_from_slice(&self.block);
            } else {
                self.out.extend_from_slice(&frame);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> SwapHeaders<S> {
    /// Writes what is ready; `Ready` once all of it is on the socket.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SwapHeaders<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SwapHeaders<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Keep what is buffered bounded: take more only once the last write went out.
        ready!(self.drain(cx))?;
        self.absorb(buf);
        // Start sending now; whatever is left goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = self.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Envoy's log

/// Envoy's log so far, as text (bytes that are not UTF-8 replaced, where
/// [`Envoy::logs`] would give up on the whole file). Envoy buffers its log file (flushed every
/// 10 s by default); the admin's `POST /reopen_logs` flushes it first, so this is complete up
/// to the call.
pub async fn envoy_log(envoy: &Envoy) -> String {
    let read = || {
        std::fs::read(&envoy.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let before = read();
    let flushed = crate::http::send(envoy.admin, "POST", "/reopen_logs", &[])
        .await
        .map(|r| r.status == 200)
        .unwrap_or(false);
    if !flushed {
        return before;
    }
    // The flush is handed to Envoy's file-writer thread: wait until the file stops growing.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut last = read();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = read();
        if (now.len() == last.len() && now.len() > before.len())
            || std::time::Instant::now() >= deadline
        {
            return now;
        }
        last = now;
    }
}

/// Lines of Envoy's log that say a wasm VM failed: a panic inside the filter (logged by the
/// SDK's panic hook), a `proxy_on_*` call that trapped, any critical or error line of Envoy's
/// wasm logger, any critical line at all.
pub fn vm_failures(log: &str) -> Vec<String> {
    const SIGNS: &[&str] = &[
        "panicked at",
        "Function: proxy_on",
        "RuntimeError",
        "[critical]",
        "[error][wasm]",
        "wasm_fail_stream",
    ];
    log.lines()
        .filter(|l| SIGNS.iter().any(|s| l.contains(s)))
        .map(str::to_string)
        .collect()
}

/// The value of one of Envoy's counters or gauges (`/stats`), 0 when absent.
pub async fn envoy_stat(envoy: &Envoy, name: &str) -> u64 {
    let Ok(r) = crate::http::send(envoy.admin, "GET", "/stats", &[]).await else {
        return 0;
    };
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers() {
        let mut out = Vec::new();
        hpack_int(&mut out, 0, 5, 10);
        assert_eq!(out, [10]);
        out.clear();
        hpack_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        hpack_int(&mut out, 0x10, 4, 4);
        assert_eq!(out, [0x14]);
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n0\r\n\r\n").as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(dechunk(b"3\r\nabc\r\n"), None);
    }

    #[test]
    fn h1_answers() {
        let r = parse_h1(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (401, "{}"));
        assert!(
            parse_h1(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab", false)
                .unwrap()
                .is_none()
        );
    }
}
