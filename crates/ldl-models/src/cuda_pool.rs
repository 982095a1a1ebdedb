//! The CUDA memory pool candle allocates from: kept between steps, and its peaks read.
//!
//! candle (through cudarc) allocates with `cuMemAllocAsync` from the device's default
//! memory pool. That pool's release threshold is 0 by default, so every synchronisation
//! (each step reads its loss back) hands all freed memory to the driver, and the next
//! step maps it again. PyTorch's caching allocator keeps freed blocks instead; setting the
//! threshold to "never" does the same here. The pool also counts its high-water marks,
//! which are what PyTorch reports as `max_memory_allocated` and `max_memory_reserved`.

use candle_core::Device;

use crate::error::Result;

/// The most memory the CUDA pool of a device has held since the last reset, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolPeaks {
    /// The most bytes in use by tensors at once (PyTorch's `max_memory_allocated`).
    pub used: u64,
    /// The most bytes the pool held from the driver at once (`max_memory_reserved`).
    pub reserved: u64,
}

#[cfg(feature = "cuda")]
mod driver {
    use candle_core::cuda_backend::cudarc::driver::sys;
    use candle_core::Device;

    use crate::error::{Error, Result};

    /// The default memory pool of `device`'s GPU; `None` on other devices.
    pub(super) fn default_pool(device: &Device) -> Result<Option<sys::CUmemoryPool>> {
        let Device::Cuda(cuda) = device else {
            return Ok(None);
        };
        let context = cuda.cuda_stream().context().clone();
        context
            .bind_to_thread()
            .map_err(|e| Error::Device(format!("cannot bind the CUDA context: {e}")))?;
        let mut pool = std::mem::MaybeUninit::<sys::CUmemoryPool>::uninit();
        // SAFETY: `pool` is a valid out-pointer and the device handle comes from a live context.
        let status =
            unsafe { sys::cuDeviceGetDefaultMemPool(pool.as_mut_ptr(), context.cu_device()) };
        check(status, "cuDeviceGetDefaultMemPool")?;
        // SAFETY: the call succeeded, so it wrote the pool handle.
        Ok(Some(unsafe { pool.assume_init() }))
    }

    fn check(status: sys::CUresult, call: &str) -> Result<()> {
        if status == sys::CUresult::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(Error::Device(format!("{call} failed: {status:?}")))
        }
    }

    pub(super) fn set_attribute(
        pool: sys::CUmemoryPool,
        attribute: sys::CUmemPool_attribute,
        value: u64,
    ) -> Result<()> {
        let mut value = value;
        // SAFETY: the three attributes used here take a `cuuint64_t`, which `value` is.
        let status =
            unsafe { sys::cuMemPoolSetAttribute(pool, attribute, (&mut value as *mut u64).cast()) };
        check(status, "cuMemPoolSetAttribute")
    }

    pub(super) fn attribute(
        pool: sys::CUmemoryPool,
        attribute: sys::CUmemPool_attribute,
    ) -> Result<u64> {
        let mut value = 0u64;
        // SAFETY: as in `set_attribute`.
        let status =
            unsafe { sys::cuMemPoolGetAttribute(pool, attribute, (&mut value as *mut u64).cast()) };
        check(status, "cuMemPoolGetAttribute")?;
        Ok(value)
    }
}

/// Keeps freed GPU memory in the pool for the next allocation instead of returning it
/// to the driver at every synchronisation. No-op on the CPU.
pub fn keep_freed_gpu_memory(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Some(pool) = driver::default_pool(device)? {
        use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute as A;
        driver::set_attribute(pool, A::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, u64::MAX)?;
    }
    let _ = device;
    Ok(())
}

/// The pool's high-water marks since the last [`reset_gpu_memory_peaks`]; `None` on the
/// CPU (and in builds without the `cuda` feature).
pub fn gpu_memory_peaks(device: &Device) -> Result<Option<PoolPeaks>> {
    #[cfg(feature = "cuda")]
    if let Some(pool) = driver::default_pool(device)? {
        use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute as A;
        return Ok(Some(PoolPeaks {
            used: driver::attribute(pool, A::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?,
            reserved: driver::attribute(pool, A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?,
        }));
    }
    let _ = device;
    Ok(None)
}

/// Starts the high-water marks afresh (the driver only accepts 0). No-op on the CPU.
pub fn reset_gpu_memory_peaks(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Some(pool) = driver::default_pool(device)? {
        use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute as A;
        driver::set_attribute(pool, A::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0)?;
        driver::set_attribute(pool, A::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, 0)?;
    }
    let _ = device;
    Ok(())
}
