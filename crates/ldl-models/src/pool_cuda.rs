//! 2×2 max-pooling with stride 2 on CUDA, one kernel each way, f32 or bf16.
//!
//! The composed version in `layers::max_pool_2x2` (windows side by side, `argmax`, a
//! mask, `where_cond`, a sum) is correct everywhere but makes six passes and keeps four
//! tensors of the input's size for the gradient. Here the forward pass writes each
//! window's maximum, and the backward pass finds each window's first maximum again from
//! the input (cheaper than storing its position) and writes the upstream gradient there,
//! zero elsewhere: the gradient of PyTorch's `MaxPool2d(2, 2)` and of ldl's CPU op.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use half::bf16;

use crate::cuda_kernels::{self, elementwise, function, suffix};

/// Whether the kernels take `x`: CUDA, f32 or bf16, 4-D, at least 2×2, not empty.
pub(crate) fn supported(x: &Tensor) -> bool {
    x.device().is_cuda()
        && matches!(x.dtype(), DType::F32 | DType::BF16)
        && matches!(x.dims(), &[n, c, h, w] if n * c > 0 && h >= 2 && w >= 2)
}

/// `(N, C, H, W)` and the pooled `(H/2, W/2)`.
fn sizes(layout: &Layout) -> candle_core::Result<(usize, usize, usize, usize, usize)> {
    let (batch, channels, height, width) = layout.shape().dims4()?;
    Ok((batch * channels, height, width, height / 2, width / 2))
}

/// The forward op: `x → y`.
pub(crate) struct MaxPool2x2;

impl CustomOp1 for MaxPool2x2 {
    fn name(&self) -> &'static str {
        "ldl-cuda-max-pool-2x2"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{} runs on CUDA tensors only", self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = x.device();
        let (planes, height, width, out_h, out_w) = sizes(layout)?;
        let n = planes * out_h * out_w;
        let func = function(device, &format!("max_pool_forward_{}", suffix(x.dtype())?))?;
        macro_rules! launch {
            ($t:ty) => {{
                let data = cuda_kernels::view::<$t>(x, layout)?;
                // SAFETY: the kernel writes all `n` outputs.
                let mut y = unsafe { cuda_kernels::output::<$t>(device, n)? };
                let mut builder = func.builder();
                builder.arg(&data);
                builder.arg(&mut y);
                builder.arg(&height);
                builder.arg(&width);
                builder.arg(&out_h);
                builder.arg(&out_w);
                builder.arg(&n);
                // SAFETY: the arguments match max_pool_forward's signature.
                unsafe { builder.launch(elementwise(n)) }.w()?;
                CudaStorage::wrap_cuda_slice(y, device.clone())
            }};
        }
        let storage = match x.dtype() {
            DType::F32 => launch!(f32),
            _ => launch!(bf16),
        };
        let (batch, channels, _, _) = layout.shape().dims4()?;
        Ok((storage, Shape::from((batch, channels, out_h, out_w))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolBackward)?,
        ))
    }
}

/// `(x, dy) → dx`.
struct MaxPoolBackward;

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "ldl-cuda-max-pool-2x2-backward"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{} runs on CUDA tensors only", self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        dy: &CudaStorage,
        dy_layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = x.device();
        let (planes, height, width, out_h, out_w) = sizes(x_layout)?;
        let n = planes * height * width;
        let func = function(device, &format!("max_pool_backward_{}", suffix(x.dtype())?))?;
        macro_rules! launch {
            ($t:ty) => {{
                let data = cuda_kernels::view::<$t>(x, x_layout)?;
                let upstream = cuda_kernels::view::<$t>(dy, dy_layout)?;
                // SAFETY: the kernel writes all `n` outputs.
                let mut dx = unsafe { cuda_kernels::output::<$t>(device, n)? };
                let mut builder = func.builder();
                builder.arg(&data);
                builder.arg(&upstream);
                builder.arg(&mut dx);
                builder.arg(&height);
                builder.arg(&width);
                builder.arg(&out_h);
                builder.arg(&out_w);
                builder.arg(&n);
                // SAFETY: the arguments match max_pool_backward's signature.
                unsafe { builder.launch(elementwise(n)) }.w()?;
                CudaStorage::wrap_cuda_slice(dx, device.clone())
            }};
        }
        let storage = match x.dtype() {
            DType::F32 => launch!(f32),
            _ => launch!(bf16),
        };
        Ok((storage, x_layout.shape().clone()))
    }
}
