//! ldl-models' CUDA kernels (`cuda_kernels.cu`, loaded with `ldl_core::cuda`) and the
//! helpers their ops share: launch shapes and access to device data.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr};
use candle_core::cuda_backend::CudaDevice;
use candle_core::{DType, Storage, Tensor};
pub(crate) use ldl_core::cuda::{elementwise, view, BLOCK};

/// The kernel `name` (with its dtype suffix where it has one) on `device`.
pub(crate) fn function(
    device: &CudaDevice,
    name: &str,
) -> candle_core::Result<ldl_core::cuda::Kernel> {
    ldl_core::cuda::kernel(
        device,
        "ldl_models_kernels",
        include_str!("cuda_kernels.cu"),
        name,
    )
}

/// The suffix of the kernels for `dtype`: the elementwise kernels exist in f32 and bf16.
pub(crate) fn suffix(dtype: DType) -> candle_core::Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        other => candle_core::bail!("ldl's CUDA kernels take f32 or bf16, not {other:?}"),
    }
}

/// How many chunks each channel's `per_channel` values are cut into for a reduction:
/// about 16 values per thread, and at most ~2048 blocks over all `channels`.
pub(crate) fn chunks(per_channel: usize, channels: usize) -> u32 {
    let wanted = per_channel.div_ceil(BLOCK as usize * 16);
    let cap = (2048 / channels.max(1)).max(1);
    wanted.clamp(1, cap) as u32
}

/// Runs `f` with the device data of an f32 tensor kept by an op (statistics, weights).
pub(crate) fn with_f32<R>(
    tensor: &Tensor,
    f: impl FnOnce(&CudaView<'_, f32>) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let (storage, layout) = tensor.storage_and_layout();
    let Storage::Cuda(storage) = &*storage else {
        candle_core::bail!("expected a CUDA tensor");
    };
    if tensor.dtype() != DType::F32 {
        candle_core::bail!("expected an f32 tensor, got {:?}", tensor.dtype());
    }
    f(&view::<f32>(storage, layout)?)
}

/// Uninitialised device memory for `n` values of `T`.
///
/// # Safety
/// The caller's kernel writes every element before anything reads it.
pub(crate) unsafe fn output<T: DeviceRepr>(
    device: &CudaDevice,
    n: usize,
) -> candle_core::Result<CudaSlice<T>> {
    device.alloc::<T>(n)
}
