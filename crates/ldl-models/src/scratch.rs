//! Scratch buffers for the tasks of a parallel loop, one set per rayon worker.
//!
//! rayon's `for_each_init` and `fold` build their state once per split, and the CPU
//! kernels split down to single tasks (`with_max_len(1)`) so that every sample or band
//! is its own job: each task started with empty buffers and grew them again, zero-filling
//! megabytes per sample (about 5% of ThinAgeNet's inference in `memset`). A
//! [`PerThread`] keeps one set per worker for the whole loop instead.

use std::sync::{Mutex, TryLockError};

/// One `S` per rayon worker thread, lent to the task running on it.
pub(crate) struct PerThread<S> {
    slots: Vec<Mutex<S>>,
}

impl<S: Default> PerThread<S> {
    /// One empty `S` per thread of the current rayon pool.
    pub(crate) fn new() -> Self {
        let threads = rayon::current_num_threads().max(1);
        PerThread {
            slots: (0..threads).map(|_| Mutex::default()).collect(),
        }
    }

    /// Runs `f` on this thread's `S`.
    ///
    /// A worker waiting inside a task (a gemm that runs on rayon itself) may start another
    /// task of the same loop: that task finds the slot taken and gets a fresh `S`, rather
    /// than waiting for a lock its own thread holds.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        let index = rayon::current_thread_index().unwrap_or(0) % self.slots.len();
        match self.slots[index].try_lock() {
            Ok(mut slot) => f(&mut slot),
            // A task that panicked left buffers whose contents no task relies on.
            Err(TryLockError::Poisoned(poisoned)) => f(&mut poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => f(&mut S::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use rayon::prelude::*;

    use super::PerThread;

    #[test]
    fn tasks_reuse_their_threads_buffers() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let grown = std::sync::atomic::AtomicUsize::new(0);
        pool.install(|| {
            let scratch: PerThread<Vec<u8>> = PerThread::new();
            (0..64).into_par_iter().with_max_len(1).for_each(|_| {
                scratch.with(|buffer| {
                    if buffer.is_empty() {
                        grown.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        buffer.resize(1024, 0);
                    }
                })
            });
        });
        // At most one growth per thread (two), where per-task state grew 64 times.
        assert!(grown.into_inner() <= 2);
    }

    #[test]
    fn a_nested_task_on_a_busy_slot_gets_its_own_buffer() {
        let scratch: PerThread<Vec<u8>> = PerThread::new();
        scratch.with(|outer| {
            outer.push(1);
            scratch.with(|inner| assert!(inner.is_empty()));
        });
    }
}
