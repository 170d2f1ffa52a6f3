//! A real browser for tests that need one (cookies a page cannot read, what a page may fetch or
//! open): Debian's headless `chromium` driven through `chromedriver` over W3C WebDriver, plus
//! [`serve_page`], a fixed HTML page on a fresh loopback origin to run scripts from.
//!
//! The binaries are `$SANDGATE_CHROMIUM` and `$SANDGATE_CHROMEDRIVER` when set, else whatever
//! `scripts/browser-install` installs (Debian's packages, on first use). Each [`Browser`] is its
//! own chromedriver with its own Chromium profile; dropping it kills both.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::response::Html;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

/// The page-load and script timeouts of every session, and (plus a margin) how long one
/// WebDriver command may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A Chromium session behind its own chromedriver on a loopback port.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    /// The Chromium profile (`--user-data-dir`) and chromedriver's log.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver, waits until it is ready and opens a headless session.
    pub async fn start() -> anyhow::Result<Browser> {
        let (chromium, chromedriver) = binaries().await?;
        let dir = tempfile::tempdir().context("browser tempdir")?;
        let profile = dir.path().join("profile");
        let log = dir.path().join("chromedriver.log");
        let addr = SocketAddr::from(([127, 0, 0, 1], crate::process::free_port()));
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, which Chromium and its helpers join: Drop kills the group,
            // so no browser outlives a failed test.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {}", chromedriver.display()))?;
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            dir,
        };
        browser.wait_ready().await?;
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            // Tests only ever talk to loopback; a proxy from the environment must not intercept.
            "--no-proxy-server".into(),
            // Loopback-to-loopback is one address space, which Private/Local Network Access
            // leaves alone; off anyway, so a page never waits on a permission prompt headless
            // Chromium cannot answer.
            "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,\
             PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults"
                .into(),
        ];
        let ms = TIMEOUT.as_millis() as u64;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The harness's TLS fronts have certificates from a throwaway CA.
            "acceptInsecureCerts": true,
            "timeouts": {"pageLoad": ms, "script": ms, "implicit": 0},
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = browser
            .call("POST", "/session", Some(caps))
            .await
            .with_context(|| format!("new session:\n{}", browser.log()))?;
        browser.session = created["sessionId"]
            .as_str()
            .context("new session: no sessionId")?
            .to_string();
        Ok(browser)
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command("POST", "url", json!({"url": url})).await?;
        Ok(())
    }

    pub async fn current_url(&self) -> anyhow::Result<String> {
        let url = self.command("GET", "url", Value::Null).await?;
        url.as_str()
            .map(str::to_string)
            .context("url is not a string")
    }

    /// Runs `script` as a function body (`arguments` are `args`) and returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        let body = json!({"script": script, "args": args});
        self.command("POST", "execute/sync", body).await
    }

    /// Like [`Browser::execute`], but the value is what the script passes to its callback, the
    /// last of `arguments` (within [`TIMEOUT`]).
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        let body = json!({"script": script, "args": args});
        self.command("POST", "execute/async", body).await
    }

    /// Every cookie of the current page's origin, HttpOnly ones included (which the page's own
    /// `document.cookie` cannot see).
    pub async fn cookies(&self) -> anyhow::Result<Vec<Value>> {
        match self.command("GET", "cookie", Value::Null).await? {
            Value::Array(cookies) => Ok(cookies),
            other => bail!("cookies: not a list: {other}"),
        }
    }

    pub async fn page_source(&self) -> anyhow::Result<String> {
        let source = self.command("GET", "source", Value::Null).await?;
        source
            .as_str()
            .map(str::to_string)
            .context("source is not a string")
    }

    /// chromedriver's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    /// A command of this session (`/session/{id}/{path}`).
    async fn command(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let body = (method == "POST").then_some(body);
        let path = format!("/session/{}/{path}", self.session);
        self.call(method, &path, body).await
    }

    /// One WebDriver request on a fresh connection; its `value`, or the WebDriver error.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let work = async {
            let stream = tokio::net::TcpStream::connect(self.addr).await?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(conn);
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", self.addr.to_string())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(TIMEOUT + Duration::from_secs(10), work)
            .await
            .with_context(|| format!("WebDriver {method} {path}: timed out"))??;
        let reply: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("WebDriver {method} {path}: {status}, not JSON: {bytes:?}"))?;
        let value = reply.get("value").cloned().unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "WebDriver {method} {path}: {status} {}: {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or_default()
            );
        }
        Ok(value)
    }

    /// Waits (10 s at most) until chromedriver's /status says ready.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.driver.try_wait()? {
                bail!("chromedriver exited early ({status}):\n{}", self.log());
            }
            if let Ok(status) = self.call("GET", "/status", None).await
                && status["ready"] == true
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("chromedriver not ready after 10 s:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Drop cannot await: end the session over a blocking socket so chromedriver closes
        // Chromium cleanly (best effort, bounded), then kill whatever of the group is left.
        if !self.session.is_empty() {
            let _ = delete_session(self.addr, &self.session);
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `DELETE /session/{id}`, waiting for the start of the answer: chromedriver answers once
/// Chromium has quit.
fn delete_session(addr: SocketAddr, session: &str) -> std::io::Result<()> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "DELETE /session/{session} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\
         connection: close\r\n\r\n"
    )?;
    stream.read(&mut [0u8; 512]).map(drop)
}

/// (chromium, chromedriver): the environment's, else what scripts/browser-install reports.
async fn binaries() -> anyhow::Result<(PathBuf, PathBuf)> {
    let from_env = |var| std::env::var_os(var).map(PathBuf::from);
    if let (Some(chromium), Some(driver)) = (
        from_env("SANDGATE_CHROMIUM"),
        from_env("SANDGATE_CHROMEDRIVER"),
    ) {
        return Ok((chromium, driver));
    }
    let script = crate::envoy::repo_root().join("scripts/browser-install");
    let out = tokio::process::Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("run {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines().map(PathBuf::from);
    match (out.status.success(), lines.next(), lines.next()) {
        (true, Some(chromium), Some(driver)) => Ok((
            from_env("SANDGATE_CHROMIUM").unwrap_or(chromium),
            from_env("SANDGATE_CHROMEDRIVER").unwrap_or(driver),
        )),
        _ => bail!("{} failed ({}): {stdout}", script.display(), out.status),
    }
}

/// A page being served by [`serve_page`]; the server stops when this drops.
pub struct ServedPage {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServedPage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `html` (as `text/html`) for every GET on a fresh loopback port; returns its origin,
/// `http://127.0.0.1:PORT` — a page of "some origin" for a browser to run scripts from.
pub async fn serve_page(html: impl Into<String>) -> anyhow::Result<(String, ServedPage)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().fallback(axum::routing::get(Html(html.into())));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((origin, ServedPage { task }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_a_pages_script() {
        let page = "<!doctype html><script>document.title = 'set by ' + location.port;</script>";
        let (origin, _page) = serve_page(page).await.expect("serve page");
        let browser = Browser::start().await.expect("start browser");
        browser.goto(&format!("{origin}/x")).await.expect("goto");
        let title = browser.execute("return document.title;", vec![]).await;
        let port = origin.rsplit(':').next().expect("port");
        assert_eq!(title.expect("title"), json!(format!("set by {port}")));
        assert_eq!(
            browser.current_url().await.expect("url"),
            format!("{origin}/x")
        );
        assert!(
            browser
                .page_source()
                .await
                .expect("source")
                .contains("set by")
        );
        assert_eq!(
            browser.cookies().await.expect("cookies"),
            Vec::<Value>::new()
        );
    }

    /// A page on one loopback port talks to a WebSocket on another: what tests of the gateway
    /// from a browser rely on.
    #[tokio::test]
    async fn websocket_to_another_loopback_port() {
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let ws = format!("ws://{}/", echo.local_addr().expect("addr"));
        let echo = tokio::spawn(crate::echo::serve(echo, "sb-browser".into()));
        let (origin, _page) = serve_page("<!doctype html><p>hi</p>")
            .await
            .expect("serve page");
        let browser = Browser::start().await.expect("start browser");
        browser.goto(&origin).await.expect("goto");
        let script = "const [url, done] = arguments;
            const ws = new WebSocket(url);
            ws.onopen = () => ws.send('ping from the page');
            ws.onmessage = (e) => { done({data: e.data}); ws.close(); };
            ws.onerror = () => done({error: 'websocket error'});";
        let got = browser.execute_async(script, vec![json!(ws)]).await;
        assert_eq!(
            got.expect("execute_async"),
            json!({"data": "ping from the page"})
        );
        echo.abort();
    }
}
