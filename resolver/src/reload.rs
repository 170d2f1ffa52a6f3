//! Hot reload of small local files (static Pod inventory, key files).
//!
//! Owns only the polling: a file is re-read on a short tick and handed to its loader when its
//! bytes change. Polling (rather than inotify) survives editors that replace files, ConfigMap
//! symlink swaps and files that appear later. A loader's error keeps the last good state.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Reads `path` now; the caller applies the first load itself so start-up fails on a bad file.
pub fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Calls `apply` with the file's new contents whenever they differ from `initial`.
/// Runs until the task is dropped.
pub async fn watch(
    path: PathBuf,
    every: Duration,
    initial: String,
    mut apply: impl FnMut(&str) -> anyhow::Result<()> + Send,
) {
    let mut last = initial;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = match tokio::fs::read_to_string(&path).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot re-read file; keeping last state");
                continue;
            }
        };
        if current == last {
            continue;
        }
        match apply(&current) {
            Ok(()) => tracing::info!(path = %path.display(), "reloaded"),
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "invalid file; keeping last good state")
            }
        }
        // Remember even a bad version so the error is logged once, not on every tick.
        last = current;
    }
}
