//! Running a whole training step on one of rayon's worker threads.
//!
//! Every CPU kernel of a step (the convolutions, BatchNorm, the pools, candle's
//! element-wise ops, Adam) is a parallel loop on rayon's global pool. Started from a
//! thread outside the pool, such as a program's main thread, each loop is handed to a
//! worker, and the calling thread sleeps until a worker wakes it: a futex wait and wake
//! per loop, with the calling thread's core idle while the pool warms up. Started from a worker, the same loop runs in place and splits
//! onto the other workers as it goes. With a hand-over per step instead of one per
//! loop, TinyAgeNet's training step (64×64, batch 32, one thread) took 169–183 ms
//! instead of 183–222 ms, and ThinAgeNet's (112×112, batch 16, two threads) 458–479 ms
//! instead of 485–537 ms (three interleaved rounds, `cargo bench --bench train_step`;
//! docs/performance.md). A step on a worker allocates there: see
//! `ldl_train::tune_for_training`, which gives every thread glibc's main arena.

use candle_core::Device;

/// Runs `step` on a worker thread of rayon's global pool when `device` is the CPU (on
/// the calling thread if it is one already), else on the calling thread; returns what it
/// returns.
///
/// `ldl train` and `Trainer::fit` run each step's forward pass, loss, backward pass and
/// optimiser update through it; a loop of one's own gains the same by doing likewise,
/// with `ldl::train::tune_for_training` called at the start of `main` (it keeps freed
/// activations in the allocator for every thread, the workers included).
/// The step must not wait for work that another thread of the same process runs on
/// rayon's pool (a pool of one worker would then wait forever): a step that exchanges
/// with other processes (MPI) is fine, ranks that are threads of one process are not.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::arange(0f32, 6., &Device::Cpu)?;
/// let total = ldl_models::on_worker_thread(&Device::Cpu, || x.sum_all()?.to_scalar::<f32>())?;
/// assert_eq!(total, 15.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn on_worker_thread<R: Send>(device: &Device, step: impl FnOnce() -> R + Send) -> R {
    if device.is_cpu() {
        // `scope` runs its closure on a worker (in place when called from one).
        rayon::scope(|_| step())
    } else {
        // A CUDA step's work runs on the GPU; it stays on the thread that made its
        // device (moving it was not measured).
        step()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cpu_step_runs_on_a_worker_and_a_worker_runs_it_in_place() {
        let outside = rayon::current_thread_index();
        assert_eq!(
            outside, None,
            "the test thread is not one of rayon's workers"
        );
        let index = on_worker_thread(&Device::Cpu, rayon::current_thread_index);
        assert!(index.is_some(), "the step ran on a worker");
        let nested = on_worker_thread(&Device::Cpu, || {
            let here = std::thread::current().id();
            let inner = on_worker_thread(&Device::Cpu, || std::thread::current().id());
            (here, inner)
        });
        assert_eq!(nested.0, nested.1, "from a worker, in place");
    }
}
