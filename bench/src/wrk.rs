//! HTTP load through Envoy with wrk (Debian's, LuaJIT inside): a Lua `done` hook prints the
//! summary as one JSON line, so nothing parses wrk's human-readable text.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

const REPORT_LUA: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nSANDGATE {"requests":%d,"duration_us":%d,"socket_errors":%d,"status_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"#;

#[derive(Debug, Deserialize)]
struct Summary {
    requests: u64,
    duration_us: u64,
    socket_errors: u64,
    status_errors: u64,
    p50_us: u64,
    p99_us: u64,
}

/// One measured run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Run {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub struct Wrk<'a> {
    pub binary: &'a Path,
    pub script: &'a Path,
    pub connections: u32,
    /// Run under `taskset -c <cpus>` (a CPU list), or wherever the kernel puts it.
    pub cpus: Option<String>,
}

impl Wrk<'_> {
    pub fn write_script(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join("report.lua");
        std::fs::write(&path, REPORT_LUA)?;
        Ok(path)
    }

    /// `wrk -t1 -c<connections> -d<duration>` against `addr` + `path` with `headers`. Any socket
    /// error or non-2xx/3xx answer fails the run: a bench must not time refusals.
    pub async fn run(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        duration: Duration,
    ) -> anyhow::Result<Run> {
        let mut cmd = crate::drive::on_cpus(self.binary, self.cpus.as_deref());
        cmd.args(["-t1", &format!("-c{}", self.connections)])
            .arg(format!("-d{}s", duration.as_secs().max(1)))
            .arg("-s")
            .arg(self.script);
        for (k, v) in headers {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
        cmd.arg(format!("http://{addr}{path}"));
        let out = cmd.output().await.context("running wrk")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("SANDGATE ")) else {
            bail!(
                "wrk printed no summary ({}):\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let s: Summary = serde_json::from_str(line).context("wrk summary")?;
        if s.socket_errors > 0 || s.status_errors > 0 || s.requests == 0 {
            bail!("wrk against {addr}{path}: {s:?}");
        }
        Ok(Run {
            requests: s.requests,
            rps: s.requests as f64 / (s.duration_us as f64 / 1e6),
            p50_ms: s.p50_us as f64 / 1e3,
            p99_ms: s.p99_us as f64 / 1e3,
        })
    }
}
