//! Keeps freed activation buffers in the process instead of returning them to the OS.
//!
//! A training step allocates and frees tensors of several megabytes each. glibc's malloc
//! serves such blocks with fresh `mmap`s and trims freed memory at the top of the heap, so
//! every step touches new pages and pays a page fault (and a zeroed page) per 4 KiB: on
//! TinyAgeNet at 64×64, batch 32, that doubled the step time. Raising the mmap and trim
//! thresholds lets the heap reuse those blocks. Other allocators (and other platforms)
//! are left alone.

/// Tunes glibc's malloc for training (see the module docs); a no-op elsewhere. Call it
/// once at the start of `main`, before threads start. `ldl` itself does.
pub fn tune_allocator_for_training() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest accepted mmap threshold is 32 MiB on 64-bit targets.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;
        // SAFETY: mallopt only adjusts allocator parameters; it is called before other
        // threads allocate. A rejected value leaves the default in place, which is safe.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}
