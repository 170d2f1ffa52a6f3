//! The gateway inside Envoy: the resolver's own wiring ([`serve::run`]: stores, informer, keys,
//! activity, the control plane and HTTP listeners) on a runtime this module owns, started once
//! per process by the first filter configuration and shared by every worker.
//!
//! Owns the runtime, the handle to the running gateway and the one way a request is decided
//! here ([`Live::now`] on the worker, [`Live::later`] on the runtime). It may not decide
//! anything itself: every rule is `Gateway::answer`'s.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use clap::Parser;
use sandgate_core::{Decision, Deny, DenyCode, RequestGrammar};
use sandgate_resolver::config::ServeArgs;
use sandgate_resolver::decide::{Facts, Gateway};
use sandgate_resolver::hold::{Answer, unix_ms};
use sandgate_resolver::serve;

/// The running gateway, once its listeners are up.
pub struct Live {
    pub gateway: Arc<Gateway>,
    pub grammar: RequestGrammar,
}

/// What a worker gets for a request without waiting.
pub enum Now {
    Decided(Decision),
    /// The answer needs the runtime: I/O (a peer gateway's address) when `None`, else a hold
    /// until Unix ms.
    Later(Option<u64>),
}

impl Live {
    /// Decides on the calling thread when the decision needs no I/O, which is every decision
    /// but a peer's first DNS lookup: the future is polled once, inside the runtime's context
    /// (timers), and dropped if it would wait; [`Live::later`] then starts over.
    pub fn now(&self, runtime: &tokio::runtime::Handle, facts: Facts<'_>) -> Now {
        let _context = runtime.enter();
        let mut answer = pin!(self.gateway.answer(facts));
        match answer
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Answer::Decided(decision, _)) => Now::Decided(decision),
            Poll::Ready(Answer::Held { until }) => Now::Later(Some(until)),
            Poll::Pending => Now::Later(None),
        }
    }

    /// The rest of [`Live::now`]'s `Later`: decided, or held until routable or the hold's end.
    pub async fn later(&self, facts: Facts<'_>, held: Option<u64>) -> Decision {
        let mut answer = match held {
            Some(until) => Answer::Held { until },
            None => self.gateway.answer(facts).await,
        };
        if let Answer::Held { until } = answer {
            let left = Duration::from_millis(until.saturating_sub(unix_ms()));
            answer = self.gateway.wait(facts, until, left).await;
        }
        match answer {
            Answer::Decided(decision, _) => decision,
            Answer::Held { .. } => Decision::Deny(Deny::new(
                DenyCode::SandboxStarting,
                format!("sandbox {} did not become ready in time", facts.sandbox_id),
            )),
        }
    }
}

/// The process's gateway: the runtime and, once started, the live gateway.
pub struct Embedded {
    args: Vec<String>,
    pub runtime: tokio::runtime::Handle,
    live: OnceLock<Live>,
    stopped: AtomicBool,
}

impl Embedded {
    /// The gateway, while it runs.
    pub fn live(&self) -> Option<&Live> {
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        self.live.get()
    }

    /// Runs `work` on the module's runtime.
    pub fn spawn(
        &self,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::AbortHandle {
        self.runtime.spawn(work).abort_handle()
    }
}

static EMBEDDED: OnceLock<Embedded> = OnceLock::new();
static STARTING: Mutex<()> = Mutex::new(());

#[derive(Parser)]
#[command(name = "sandgate-native", no_binary_name = true)]
struct Flags {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The resolver's flags as `sandgate-resolver serve` reads them (environment twins included),
/// refused when the standalone resolver would refuse them.
pub fn parse_args(args: &[String]) -> Result<ServeArgs, String> {
    let flags = Flags::try_parse_from(args).map_err(|e| e.to_string())?;
    flags.serve.request_grammar()?;
    Ok(flags.serve)
}

/// Whether this process is Envoy checking a configuration (`envoy --mode validate`): it loads
/// the module and creates its configurations, then exits.
fn validating() -> bool {
    std::fs::read("/proc/self/cmdline").is_ok_and(|cmdline| {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.iter().any(|a| *a == b"--mode=validate")
            || args
                .windows(2)
                .any(|w| matches!(w, [flag, mode] if *flag == b"--mode" && *mode == b"validate"))
    })
}

/// The process's gateway, started by the first call; a later configuration must carry the
/// same flags (one gateway per Envoy process: its listeners and stores are the process's).
/// `None` when Envoy only validates: the flags are checked, nothing is started (no port bound,
/// no Kubernetes API called).
pub fn start(args: &[String], threads: usize) -> Result<Option<&'static Embedded>, String> {
    let _one_at_a_time = STARTING
        .lock()
        .map_err(|_| "an earlier start failed".to_string())?;
    if let Some(running) = EMBEDDED.get() {
        return if running.args == args {
            Ok(Some(running))
        } else {
            Err(format!(
                "this Envoy already runs a gateway with other flags ({:?}); one per process",
                running.args
            ))
        };
    }
    let serve_args = parse_args(args)?;
    if validating() {
        tracing::info!("envoy validates its configuration: the gateway's flags are valid");
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("sandgate-gateway")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the gateway's runtime: {e}"))?;
    let embedded = EMBEDDED.get_or_init(|| Embedded {
        args: args.to_vec(),
        runtime: runtime.handle().clone(),
        live: OnceLock::new(),
        stopped: AtomicBool::new(false),
    });
    std::thread::Builder::new()
        .name("sandgate-gateway".into())
        .spawn(move || {
            // Envoy owns the process's signals and its shutdown: the gateway never stops on its
            // own, and a server that fails takes its decisions with it (503, logged).
            let served =
                runtime.block_on(serve::run(serve_args, std::future::pending(), |started| {
                    let _ = embedded.live.set(Live {
                        gateway: started.gateway,
                        grammar: started.grammar,
                    });
                }));
            embedded.stopped.store(true, Ordering::Release);
            if let Err(error) = served {
                tracing::error!(%error, "the embedded gateway stopped: every request is refused");
            }
        })
        .map_err(|e| format!("starting the gateway's thread: {e}"))?;
    Ok(Some(embedded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_the_resolvers_and_bad_ones_are_refused() {
        let ok = parse_args(&["--pod-source=inventory".into(), "--admin-key=k".into()]);
        assert!(ok.is_ok(), "{ok:?}", ok = ok.err());
        assert!(parse_args(&["--no-such-flag".into()]).is_err());
        assert!(parse_args(&["--extproc-default-port=0".into()]).is_err());
    }
}
