//! A test controller: receives the resolver's wake requests — as a real tonic client of
//! `ControlPlaneService.WatchWakeRequests`, or as the HTTP server `--wake-webhook` posts to —
//! records every one, and answers each the way the agentbox controller does: by claiming a Pod
//! for the sandbox (a running Pod with the sandbox label and an IP whose echo server is already
//! up). What to claim for which sandbox is the test's plan ([`Controller::plan`]); a wake for a
//! sandbox without a plan is recorded and ignored, as a controller may.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use parking_lot::Mutex;
use sandgate_proto::ctrlplane::v1::{WakeRequest, WatchWakeRequestsRequest};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::emulator::Emulator;
use crate::fixtures::pod;
use crate::process::Resolver;
use crate::stack::ADMIN_KEY;

/// One wake as the controller received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wake {
    pub sandbox_id: String,
    pub namespace: String,
    pub port: u32,
}

/// The Pod a controller claims for a sandbox when it is asked to wake it: `namespace/pod`,
/// running, labelled with the sandbox, at `ip` (where the test's echo for it listens).
#[derive(Debug, Clone)]
pub struct Claim {
    pub namespace: String,
    pub pod: String,
    pub ip: String,
}

impl Claim {
    pub fn new(namespace: &str, pod: &str, ip: &str) -> Claim {
        Claim {
            namespace: namespace.into(),
            pod: pod.into(),
            ip: ip.into(),
        }
    }
}

#[derive(Default)]
struct Book {
    wakes: Vec<Wake>,
    plans: HashMap<String, (Emulator, Claim)>,
}

struct State {
    /// Wakes and plans under one lock, so a wake and the plan for it never miss each other.
    book: Mutex<Book>,
    /// Claims made so far (Pods applied), by sandbox.
    claimed: Mutex<Vec<String>>,
    /// Whether claims go ahead; while closed, wakes are recorded and their claims wait.
    gate: watch::Sender<bool>,
    /// Why the wake stream ended, once it has.
    ended: Mutex<Option<String>>,
    /// Webhook requests whose body was not a wake (kept for the failure message).
    malformed: Mutex<Vec<String>>,
}

impl State {
    fn new() -> Arc<State> {
        Arc::new(State {
            book: Mutex::default(),
            claimed: Mutex::default(),
            gate: watch::Sender::new(true),
            ended: Mutex::default(),
            malformed: Mutex::default(),
        })
    }

    /// Records `wake` and, when the sandbox has a plan, claims its Pod.
    fn received(self: &Arc<Self>, wake: Wake) {
        let plan = {
            let mut book = self.book.lock();
            book.wakes.push(wake.clone());
            book.plans.get(&wake.sandbox_id).cloned()
        };
        if let Some((emu, claim)) = plan {
            self.claim(emu, claim, wake.sandbox_id);
        }
    }

    /// Applies `claim`'s running Pod for `sandbox` once the gate is open, on a task of its own
    /// so that neither the stream nor the webhook's answer waits for it.
    fn claim(self: &Arc<Self>, emu: Emulator, claim: Claim, sandbox: String) {
        let state = Arc::clone(self);
        let mut gate = self.gate.subscribe();
        tokio::spawn(async move {
            if gate.wait_for(|open| *open).await.is_err() {
                return;
            }
            emu.apply(
                pod(&claim.namespace, &claim.pod)
                    .sandbox(&sandbox)
                    .phase("running")
                    .ip(&claim.ip)
                    .json(),
            );
            state.claimed.lock().push(sandbox);
        });
    }
}

/// A running test controller; its tasks end when it drops.
pub struct Controller {
    state: Arc<State>,
    url: Option<String>,
    task: JoinHandle<()>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Controller {
    /// Subscribes to `resolver`'s `WatchWakeRequests` with the admin key and returns once the
    /// stream is open (the resolver answered the call); wakes are then read on a task.
    pub async fn stream(resolver: &Resolver) -> Controller {
        let mut client = resolver.control_client().await;
        let mut req = tonic::Request::new(WatchWakeRequestsRequest {});
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {ADMIN_KEY}").parse().expect("ascii key"),
        );
        let mut stream = client
            .watch_wake_requests(req)
            .await
            .unwrap_or_else(|e| panic!("WatchWakeRequests refused: {e}"))
            .into_inner();
        let state = State::new();
        let reader = Arc::clone(&state);
        let task = tokio::spawn(async move {
            let why = loop {
                match stream.message().await {
                    Ok(Some(WakeRequest {
                        sandbox_id,
                        namespace,
                        port,
                    })) => reader.received(Wake {
                        sandbox_id,
                        namespace,
                        port,
                    }),
                    Ok(None) => break "the resolver ended the stream".to_string(),
                    Err(e) => break format!("the stream failed: {e}"),
                }
            };
            *reader.ended.lock() = Some(why);
        });
        Controller {
            state,
            url: None,
            task,
        }
    }

    /// An HTTP server on loopback that takes the webhook's POSTs (JSON `{"sandbox_id",
    /// "namespace", "port"}`) on `/wake`; pass [`Controller::webhook_flag`] to the resolver.
    pub async fn webhook() -> Controller {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the webhook");
        let addr = listener.local_addr().expect("webhook address");
        let state = State::new();
        let app = Router::new()
            .route("/wake", post(webhook_post))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Controller {
            state,
            url: Some(format!("http://{addr}/wake")),
            task,
        }
    }

    /// `--wake-webhook=<this controller's URL>` (a webhook controller only).
    pub fn webhook_flag(&self) -> String {
        let url = self.url.as_deref().expect("not a webhook controller");
        format!("--wake-webhook={url}")
    }

    /// What to claim when `sandbox` is to be woken: `claim`'s Pod, written to `emu`. A wake
    /// that came before its plan is answered now.
    pub fn plan(&self, emu: &Emulator, sandbox: &str, claim: Claim) {
        let woken = {
            let mut book = self.state.book.lock();
            book.plans
                .insert(sandbox.to_string(), (emu.clone(), claim.clone()));
            book.wakes.iter().any(|w| w.sandbox_id == sandbox)
        };
        if woken {
            self.state.claim(emu.clone(), claim, sandbox.to_string());
        }
    }

    /// Claims wait until [`Controller::resume`]; wakes are still recorded.
    pub fn pause(&self) {
        self.state.gate.send_replace(false);
    }

    /// Claims go ahead, those waiting first.
    pub fn resume(&self) {
        self.state.gate.send_replace(true);
    }

    /// Every wake received, in order.
    pub fn wakes(&self) -> Vec<Wake> {
        self.state.book.lock().wakes.clone()
    }

    /// The wakes received for `sandbox`.
    pub fn wakes_for(&self, sandbox: &str) -> Vec<Wake> {
        self.state
            .book
            .lock()
            .wakes
            .iter()
            .filter(|w| w.sandbox_id == sandbox)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` wakes for `sandbox` arrived or `within` passes; returns them.
    pub async fn wakes_for_until(&self, sandbox: &str, n: usize, within: Duration) -> Vec<Wake> {
        crate::process::eventually(within, || async { self.wakes_for(sandbox).len() >= n }).await;
        self.wakes_for(sandbox)
    }

    /// The sandboxes a Pod was claimed for, in order.
    pub fn claimed(&self) -> Vec<String> {
        self.state.claimed.lock().clone()
    }

    /// Why the wake stream ended (a stream controller), `None` while it is open.
    pub fn ended(&self) -> Option<String> {
        self.state.ended.lock().clone()
    }

    /// Webhook requests that were not a wake.
    pub fn malformed(&self) -> Vec<String> {
        self.state.malformed.lock().clone()
    }
}

async fn webhook_post(
    AxumState(state): AxumState<Arc<State>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            Some(Wake {
                sandbox_id: v["sandbox_id"].as_str()?.to_string(),
                namespace: v["namespace"].as_str()?.to_string(),
                port: u32::try_from(v["port"].as_u64()?).ok()?,
            })
        });
    match parsed {
        Some(wake) if json => {
            state.received(wake);
            StatusCode::NO_CONTENT
        }
        _ => {
            state.malformed.lock().push(format!("{headers:?} {body}"));
            StatusCode::BAD_REQUEST
        }
    }
}
