//! `sandgate-demo run|up [wasm|extproc]`: the demo stack on its fixed, documented addresses.
//!
//! Envoy on 127.0.0.1:8092 with envoy.yaml (the wasm filter), envoy-extproc.yaml (ext_proc) or
//! envoy-native.yaml (the native module, the resolver's gateway inside Envoy) as shipped, the
//! resolver reading demo/ (static
//! inventory, keys, admin key, the internal token Envoy sends it, access-token signing keys)
//! on its default ports, and two echo sandboxes: demo-a (tenant
//! acme) on 127.0.0.11:8080 and demo-b (tenant globex) on 127.0.0.12:8080. `run` sends a few
//! real requests, prints what happened and stops everything; `up` keeps it running until
//! Ctrl-C. Every child process dies with this one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures::{SinkExt, StreamExt};
use sandgate_tests::envoy::{Entry, repo_root};
use sandgate_tests::http;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ENVOY: &str = "127.0.0.1:8092";
const ENVOY_ADMIN: &str = "127.0.0.1:9901";
const RESOLVER_HTTP: &str = "127.0.0.1:9090";
const SANDBOXES: [(&str, &str); 2] = [("demo-a", "127.0.0.11:8080"), ("demo-b", "127.0.0.12:8080")];

#[derive(Parser)]
#[command(about = "The sandgate demo stack")]
struct Cli {
    /// The envoy binary (`just envoy` installs one and `just demo` passes it).
    #[arg(long, env = "SANDGATE_ENVOY")]
    envoy: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the stack, send a handful of requests, print what happened, stop.
    Run {
        #[arg(value_enum, default_value = "wasm")]
        entry: Entry,
    },
    /// Start the stack and keep it up until Ctrl-C.
    Up {
        #[arg(value_enum, default_value = "wasm")]
        entry: Entry,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = repo_root();
    let logs = root.join("target/demo");
    std::fs::create_dir_all(&logs)?;
    let (Cmd::Run { entry } | Cmd::Up { entry }) = cli.command;
    let _stack = Stack::start(&root, &cli.envoy, entry, &logs).await?;
    match cli.command {
        Cmd::Run { .. } => tour(entry).await,
        Cmd::Up { .. } => {
            println!(
                "\nthe demo stack is up (logs in {}); Ctrl-C stops it. Try:",
                logs.display()
            );
            println!(
                "  curl -s {ENVOY}/sandboxes/demo-a/8080/hello?x=1 -H 'x-api-key: demo-key-acme'"
            );
            tokio::signal::ctrl_c().await?;
            println!("stopping");
            Ok(())
        }
    }
}

struct Stack {
    _children: Vec<Child>,
    _echo: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    async fn start(root: &Path, envoy: &Path, entry: Entry, logs: &Path) -> anyhow::Result<Stack> {
        let mut echo = Vec::new();
        for (id, addr) in SANDBOXES {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("sandbox {id}: cannot listen on {addr}"))?;
            echo.push(tokio::spawn(async move {
                let _ = sandgate_tests::echo::serve(listener, id.to_string()).await;
            }));
            println!("sandbox  {id} (echo) on {addr}");
        }
        let mut children = Vec::new();
        // The native entry's gateway is inside Envoy, started with envoy-native.yaml's flags
        // (the same demo/ files, the same default ports).
        if entry != Entry::Native {
            children.push(start_resolver(root, logs)?);
        }
        let envoy = spawn(
            Command::new(envoy).current_dir(root).args([
                "-c",
                entry.config_file(),
                "--disable-hot-restart",
                "--concurrency",
                "2",
            ]),
            &logs.join("envoy.log"),
        )
        .with_context(|| format!("starting {}", envoy.display()))?;
        children.push(envoy);
        wait_ok(&mut children, RESOLVER_HTTP, "/readyz", "resolver", logs).await?;
        println!(
            "resolver ready: Resolve 127.0.0.1:50051, control 127.0.0.1:50052, http {RESOLVER_HTTP}{}",
            if entry == Entry::Native {
                " (inside Envoy)"
            } else {
                ""
            }
        );
        wait_ok(&mut children, ENVOY_ADMIN, "/ready", "envoy", logs).await?;
        println!(
            "envoy    ready on {ENVOY} (admin {ENVOY_ADMIN}), entry: {}",
            entry.config_file()
        );
        Ok(Stack {
            _children: children,
            _echo: echo,
        })
    }
}

/// The standalone resolver on demo/ and its default ports.
fn start_resolver(root: &Path, logs: &Path) -> anyhow::Result<Child> {
    let resolver_bin = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .join("sandgate-resolver");
    let demo = root.join("demo");
    spawn(
        Command::new(&resolver_bin)
            .arg("serve")
            .args(["--pod-source", "inventory"])
            .arg("--inventory")
            .arg(demo.join("pods.yaml"))
            .arg("--keys-file")
            .arg(demo.join("keys.yaml"))
            .arg("--admin-key-file")
            .arg(demo.join("admin-keys"))
            .arg("--internal-token-file")
            .arg(demo.join("internal-token"))
            .arg("--token-keys-file")
            .arg(demo.join("token-keys"))
            .arg(sandgate_tests::gateway::E2B_DOMAIN_FLAG),
        &logs.join("resolver.log"),
    )
    .with_context(|| format!("starting {}", resolver_bin.display()))
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log)?;
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()?)
}

async fn wait_ok(
    children: &mut [Child],
    addr: &str,
    path: &str,
    what: &str,
    logs: &Path,
) -> anyhow::Result<()> {
    let addr: SocketAddr = addr.parse()?;
    for _ in 0..300 {
        for c in children.iter_mut() {
            if let Some(status) = c.try_wait()? {
                bail!(
                    "a process of the stack exited ({status}); see {}",
                    logs.display()
                );
            }
        }
        if let Ok((200, _)) = http::get(addr, path, None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "{what} not ready on {addr} after 30 s; see {}",
        logs.display()
    )
}

/// The requests the demo makes, and what came back.
async fn tour(entry: Entry) -> anyhow::Result<()> {
    let envoy: SocketAddr = ENVOY.parse()?;
    let show = |what: &str, r: &http::Response| {
        println!("\n▶ {what}\n  {} {}", r.status, r.body);
    };
    let r = http::send(
        envoy,
        "GET",
        "/hello?who=world",
        &[
            ("x-sandbox-id", "demo-a"),
            ("x-sandbox-port", "8080"),
            ("x-api-key", "demo-key-acme"),
        ],
    )
    .await?;
    show("by header: x-sandbox-id demo-a, port 8080, acme's key", &r);
    expect(
        r.status == 200 && r.json()["sandbox"] == "demo-a",
        "demo-a answered",
    )?;

    let r = http::send(
        envoy,
        "POST",
        "/sandboxes/demo-b/8080/api/run?lang=py",
        &[("authorization", "Bearer demo-key-globex")],
    )
    .await?;
    show(
        "by path: /sandboxes/demo-b/8080/api/run?lang=py, globex's key as Bearer",
        &r,
    );
    expect(
        r.status == 200 && r.json()["path"] == "/api/run?lang=py",
        "demo-b saw the rewritten path",
    )?;

    let r = http::send(
        envoy,
        "GET",
        "/files?path=a",
        &[
            ("host", "8080-demo-a.sandgate.test"),
            ("x-api-key", "demo-key-acme"),
        ],
    )
    .await?;
    show(
        "the E2B way: Host 8080-demo-a.sandgate.test, acme's key",
        &r,
    );
    expect(
        r.status == 200 && r.json()["sandbox"] == "demo-a",
        "demo-a answered",
    )?;

    let r = http::send(
        envoy,
        "GET",
        "/sandboxes/demo-b/8080/",
        &[("x-api-key", "demo-key-acme")],
    )
    .await?;
    show("denied: acme's key on globex's sandbox", &r);
    expect(r.status == 403, "403 forbidden")?;

    let r = http::send(
        envoy,
        "GET",
        "/sandboxes/nope/8080/",
        &[("x-api-key", "demo-key-acme")],
    )
    .await?;
    show("denied: a sandbox nobody has", &r);
    expect(r.status == 404, "404 sandbox_not_found")?;

    let r = http::send(
        envoy,
        "POST",
        "/sandgate/v1/sandboxes/demo-a/tokens",
        &[("x-api-key", "demo-key-acme")],
    )
    .await?;
    show(
        "an access token: POST /sandgate/v1/sandboxes/demo-a/tokens, acme's key",
        &r,
    );
    expect(r.status == 201, "201 with a token")?;
    let token = r.json()["token"].as_str().unwrap_or_default().to_string();
    let r = http::send(
        envoy,
        "GET",
        &format!("/sandboxes/demo-a/8080/shared?sandgate_token={token}"),
        &[],
    )
    .await?;
    show(
        "with the token alone, in the query (a shareable link; no key)",
        &r,
    );
    expect(
        r.status == 200 && r.json()["path"] == "/shared",
        "demo-a answered, the token gone from its path",
    )?;

    println!("\n▶ websocket: ws://{ENVOY}/sandboxes/demo-a/8080/ws, acme's key");
    let mut req = format!("ws://{ENVOY}/sandboxes/demo-a/8080/ws").into_client_request()?;
    req.headers_mut()
        .insert("x-api-key", "demo-key-acme".parse()?);
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await?;
    println!("  {} upgraded", resp.status());
    for text in ["hello sandbox", "still there?"] {
        ws.send(Message::text(text)).await?;
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await?
            .context("websocket closed")??;
        println!(
            "  sent {text:?} → echoed {:?}",
            reply.to_text().unwrap_or("<binary>")
        );
        expect(reply == Message::text(text), "websocket echo")?;
    }
    ws.close(None).await?;

    let (_, last) = http::get(
        RESOLVER_HTTP.parse()?,
        "/v1/last-active",
        Some("demo-admin-key"),
    )
    .await?;
    println!("\n▶ last activity (resolver /v1/last-active, admin key)\n  {last}");
    let via = match entry {
        Entry::Wasm => "Envoy, the wasm filter and the resolver",
        Entry::ExtProc => "Envoy, ext_proc and the resolver",
        Entry::Native => "Envoy and the native module's gateway inside it",
    };
    println!("\ndemo ok: every request went through {via}");
    Ok(())
}

fn expect(ok: bool, what: &str) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        bail!("demo check failed: {what}")
    }
}
