//! Process settings for fast CPU training: the allocator and candle's thread pool.
//!
//! **The allocator.** A training step allocates and frees tensors of several megabytes each. glibc's malloc
//! serves such blocks with fresh `mmap`s and trims freed memory at the top of the heap, so
//! every step touches new pages and pays a page fault (and a zeroed page) per 4 KiB: on
//! TinyAgeNet at 64×64, batch 32, that doubled the step time. Raising the mmap and trim
//! thresholds lets the heap reuse those blocks. One arena for every thread keeps that
//! true where the step runs: a training step runs on a worker of rayon's pool
//! (`ldl_models::on_worker_thread`), and glibc gives other threads than the main one
//! arenas of 64 MiB heaps of their own, which do not keep freed blocks the same way
//! (ThinAgeNet at 112×112, batch 16, one thread: 290,720 and 479,791 page faults in two
//! bench runs, against 115,372 and 113,214 with the step on the main thread and 108,365
//! with one arena; see docs/performance.md). Other allocators (and other platforms) are
//! left alone.
//!
//! **candle's thread pool.** candle runs its element-wise CPU ops (autograd's gradient
//! sums, the optimiser's arithmetic) on its own pool, whose workers spin for 25,000 rounds
//! after each op before they sleep, about a millisecond. ldl's layers run on rayon's
//! threads right after, and the spinning worker takes a core from them: 10% of a
//! TinyAgeNet step on 2 cores. A spin limit of [`CANDLE_SPIN_LIMIT`] keeps the hand-off
//! fast and frees the core (TinyAgeNet 64×64, batch 32, 2 cores: 162 ms → 141 ms per
//! step; see docs/performance.md).

/// The spin limit ldl gives candle's pool (`CANDLE_BARRIER_POOL_SPIN_LIMIT`) unless that
/// variable is already set.
pub const CANDLE_SPIN_LIMIT: u32 = 2_000;

/// Tunes the process for training (see the module docs): glibc's malloc thresholds and
/// arenas, and candle's spin limit. Call it once at the start of `main`, before other threads start
/// (it sets an environment variable). `ldl` itself does.
pub fn tune_for_training() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        // Read once, when candle's pool starts with its first parallel op, after this.
        std::env::set_var(
            "CANDLE_BARRIER_POOL_SPIN_LIMIT",
            CANDLE_SPIN_LIMIT.to_string(),
        );
    }
    tune_allocator();
}

fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest accepted mmap threshold is 32 MiB on 64-bit targets.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;
        // The main arena's heap, the one the thresholds keep, for every thread.
        const ARENAS: libc::c_int = 1;
        // SAFETY: mallopt only adjusts allocator parameters; it is called before other
        // threads allocate. A rejected value leaves the default in place, which is safe.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}
