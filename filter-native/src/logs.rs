//! The gateway's logs (tracing, as the resolver writes them) into Envoy's log, under its
//! `[dynamic_modules]` logger: one place for an operator to read, at Envoy's levels.
//!
//! Owns the subscriber only; `RUST_LOG` in Envoy's environment filters as for the resolver.

use std::io::Write;

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

use crate::abi::{
    LOG_LEVEL_DEBUG, LOG_LEVEL_ERROR, LOG_LEVEL_INFO, LOG_LEVEL_TRACE, LOG_LEVEL_WARN,
};

/// Installs the subscriber once per process (later calls keep the first).
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        // Envoy stamps its own time.
        .without_time()
        .with_writer(EnvoyLog)
        .try_init();
}

struct EnvoyLog;

/// One event's line, handed to Envoy when it is complete.
struct Line {
    level: crate::abi::LogLevel,
    text: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.text);
        crate::ffi::log(self.level, text.trim_end());
    }
}

impl<'a> MakeWriter<'a> for EnvoyLog {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        self.line(LOG_LEVEL_INFO)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        self.line(match *meta.level() {
            Level::ERROR => LOG_LEVEL_ERROR,
            Level::WARN => LOG_LEVEL_WARN,
            Level::INFO => LOG_LEVEL_INFO,
            Level::DEBUG => LOG_LEVEL_DEBUG,
            Level::TRACE => LOG_LEVEL_TRACE,
        })
    }
}

impl EnvoyLog {
    fn line(&self, level: crate::abi::LogLevel) -> Line {
        Line {
            level,
            text: Vec::with_capacity(128),
        }
    }
}
