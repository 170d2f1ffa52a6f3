//! The internal token: the credential of the resolver's gRPC port, which only the gateway's own
//! Envoy may call (Resolve, WatchGenerations, ReportHits, ext_proc, the activity access log).
//!
//! Tokens come from flags (`--internal-token`, fixed) and a file (`--internal-token-file`,
//! reloaded); several are accepted at once so a rotation never cuts Envoy off. Held as SHA-256
//! digests, compared in constant time, never logged. No token: every call is refused.

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::{Digest, any_match, digest};

pub struct InternalTokens {
    flags: Vec<Digest>,
    /// The file's tokens as last loaded; `merged` is rebuilt from both under this lock.
    file: Mutex<Vec<Digest>>,
    merged: ArcSwap<Vec<Digest>>,
}

impl InternalTokens {
    /// The tokens given as flags (empty ones ignored).
    pub fn new<S: AsRef<str>>(flags: &[S]) -> Self {
        let flags: Vec<Digest> = flags
            .iter()
            .map(|t| t.as_ref().trim())
            .filter(|t| !t.is_empty())
            .map(digest)
            .collect();
        InternalTokens {
            merged: ArcSwap::from_pointee(flags.clone()),
            flags,
            file: Mutex::new(Vec::new()),
        }
    }

    /// Replaces the file's tokens (the flags' stay).
    pub fn set_file(&self, tokens: Vec<Digest>) {
        let mut file = self.file.lock();
        *file = tokens;
        let merged = self.flags.iter().chain(file.iter()).copied().collect();
        self.merged.store(std::sync::Arc::new(merged));
    }

    /// Tokens currently accepted.
    pub fn count(&self) -> usize {
        self.merged.load().len()
    }

    /// Whether `presented` is an accepted token; with none configured, never.
    pub fn accepts(&self, presented: &str) -> bool {
        !presented.is_empty() && any_match(&self.merged.load(), &digest(presented))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_configured_refuses_everything() {
        let t = InternalTokens::new::<&str>(&[]);
        assert_eq!(t.count(), 0);
        assert!(!t.accepts(""));
        assert!(!t.accepts("anything"));
        let blank = InternalTokens::new(&["", "  "]);
        assert_eq!(blank.count(), 0, "empty flags are no token");
        assert!(!blank.accepts(""));
    }

    #[test]
    fn flags_and_file_are_both_accepted_and_the_file_reloads() {
        let t = InternalTokens::new(&["from-flag"]);
        assert!(t.accepts("from-flag"));
        assert!(!t.accepts("from-file"));
        t.set_file(vec![digest("from-file"), digest("next")]);
        assert!(t.accepts("from-flag") && t.accepts("from-file") && t.accepts("next"));
        assert_eq!(t.count(), 3);
        t.set_file(vec![digest("next")]);
        assert!(
            !t.accepts("from-file"),
            "a token removed from the file stops working"
        );
        assert!(t.accepts("from-flag") && t.accepts("next"));
        assert!(!t.accepts("from-fla"), "a near miss is a miss");
        assert!(!t.accepts("from-flag "), "no trimming of what is presented");
    }
}
