//! Scratch buffers for the tasks of a parallel loop, one set per rayon worker, kept from
//! one loop to the next.
//!
//! rayon's `for_each_init` and `fold` build their state once per split, and the CPU
//! kernels split down to single tasks (`with_max_len(1)`) so that every sample or band
//! is its own job: each task started with empty buffers and grew them again, zero-filling
//! megabytes per sample (about 5% of ThinAgeNet's inference in `memset`). A
//! [`PerThread`] keeps one set per worker for the whole loop instead, and gives its sets
//! back when the loop ends, for the next loop of the same kind: otherwise every
//! convolution grew its workers' buffers from nothing again, and zero-filling them took
//! about 5% of the samples of TinyAgeNet's training step at two threads (`perf record`
//! of `tiny_age_net_64_b32/train_step`; see docs/performance.md). What a buffer holds is
//! never read before it is written, so a kept buffer changes no result.

use std::any::{Any, TypeId};
use std::sync::{Mutex, PoisonError, TryLockError};

/// One `S` per rayon worker thread, lent to the task running on it.
pub(crate) struct PerThread<S: Default + Send + 'static> {
    slots: Vec<Mutex<S>>,
}

/// Sets that loops have given back, by type: at most one per worker of the pool for each
/// type, so what is kept is bounded by what one loop of each kind grows.
static SPARE: Mutex<Vec<(TypeId, Box<dyn Any + Send>)>> = Mutex::new(Vec::new());

impl<S: Default + Send + 'static> PerThread<S> {
    /// One `S` per thread of the current rayon pool: those a finished loop of the same
    /// type gave back, else empty ones.
    pub(crate) fn new() -> Self {
        let threads = rayon::current_num_threads().max(1);
        let mut kept = {
            let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
            let mut kept = Vec::new();
            let mut i = 0;
            while i < spare.len() && kept.len() < threads {
                if spare[i].0 == TypeId::of::<S>() {
                    kept.push(spare.swap_remove(i).1);
                } else {
                    i += 1;
                }
            }
            kept
        };
        let mut next = || match kept.pop().map(|set| set.downcast::<S>()) {
            Some(Ok(set)) => *set,
            _ => S::default(),
        };
        PerThread {
            slots: (0..threads).map(|_| Mutex::new(next())).collect(),
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

impl<S: Default + Send + 'static> Drop for PerThread<S> {
    /// Gives the sets back for the next loop of this type, up to one per worker.
    fn drop(&mut self) {
        let threads = rayon::current_num_threads().max(1);
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        let held = spare
            .iter()
            .filter(|(id, _)| *id == TypeId::of::<S>())
            .count();
        let room = threads.saturating_sub(held);
        for slot in self.slots.drain(..).take(room) {
            let set = slot.into_inner().unwrap_or_else(PoisonError::into_inner);
            spare.push((TypeId::of::<S>(), Box::new(set)));
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

    #[test]
    fn the_next_loop_of_a_type_gets_the_sets_the_last_one_gave_back() {
        // A type of this test's own, so that no other test's loops share its sets.
        #[derive(Default)]
        struct Marked(Vec<u16>);
        let first: PerThread<Marked> = PerThread::new();
        first.with(|set| set.0.extend([7, 8, 9]));
        drop(first);
        let second: PerThread<Marked> = PerThread::new();
        let lengths: Vec<usize> = second
            .slots
            .iter()
            .map(|slot| slot.lock().unwrap().0.len())
            .collect();
        assert!(lengths.contains(&3), "{lengths:?}");
    }
}
