//! Stopping a run from outside: Ctrl-C in `ldl train`, or a test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Asks a run to stop at its next batch boundary, from any thread. The epoch in progress
/// is dropped; the last completed one stays saved, and [`crate::resume`] continues from it.
/// Clones share one flag: give the run one clone and keep another to stop it.
///
/// ```
/// let stop = ldl_train::StopToken::new();
/// let handle = stop.clone();
/// assert!(!stop.is_stopped());
/// handle.stop();
/// assert!(stop.is_stopped());
/// ```
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    /// A token nobody has stopped yet.
    pub fn new() -> StopToken {
        StopToken::default()
    }

    /// Asks every run holding a clone of this token to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`StopToken::stop`] was called on this token or a clone.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
