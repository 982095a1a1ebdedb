//! `relu(batch_norm(x))` on CUDA in fused kernels, f32 or bf16 activations.
//!
//! candle's BatchNorm is a dozen tensor ops, each a pass over the activations: a transposed
//! copy, two row reductions with one block per channel (32 blocks for ThinAgeNet's first
//! layers, on a GPU with 132 multiprocessors), broadcast arithmetic, then ReLU, and about
//! as many again backwards, every intermediate kept for the gradient. Measured on an H200
//! at ThinAgeNet 224×224 batch 32, that made a training step 6× slower than PyTorch's and
//! its memory 9× larger. Here a block is four kernels forwards and three backwards,
//! keeping only its input and output:
//!
//! | pass | kernels |
//! |---|---|
//! | statistics (training) | per-channel partial sums of x and x² by chunks; their totals → mean, 1/σ, σ² |
//! | forward | `y = max(0, (x − μ)·γ/σ + β)` |
//! | backward | partial sums of g and g·x̂ (g = dy where y > 0); totals; `dx = γ/σ·(g − Σg/M − x̂·Σgx̂/M)` |
//!
//! `dγ = Σ g·x̂` and `dβ = Σ g` are the totals themselves. Sums are taken in f64, block by
//! block in a fixed order, so results do not change from run to run. The running
//! statistics are updated as PyTorch does (momentum, unbiased variance), on the device.
//!
//! SyncBN (data-parallel training, see [`crate::sync_batch_norm`]): the statistics' and
//! the backward sums' `C`-value rows come to the host, are summed over the ranks, and go
//! back, so that every rank normalises with the whole batch's statistics; a few numbers
//! per channel, against the activations that stay on the GPU.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, CudaDevice, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor};
use candle_nn::BatchNorm;
use half::bf16;

use crate::cuda_kernels::{self, chunks, elementwise, function, suffix, with_f32, BLOCK};
use crate::error::Result;
use crate::sync_batch_norm::{sum_gradient_sums, sum_statistics, RankCounts, SharedSum};

/// Whether the fused kernels take `x` (CUDA, f32 or bf16, 4-D, not empty) with f32 `γ`.
pub(crate) fn supported(x: &Tensor, gamma: &Tensor) -> bool {
    x.device().is_cuda()
        && matches!(x.dtype(), DType::F32 | DType::BF16)
        && gamma.dtype() == DType::F32
        && x.rank() == 4
        && x.elem_count() > 0
}

/// `relu(bn(x))`; in training mode with the batch's statistics (summed over the ranks by
/// `sync`: SyncBN), which also update the running ones. The result has the dtype of `x`.
pub(crate) fn batch_norm_relu(
    bn: &BatchNorm,
    gamma: &Tensor,
    beta: &Tensor,
    x: &Tensor,
    train: bool,
    sync: Option<&SharedSum>,
) -> Result<Tensor> {
    let x = x.contiguous()?;
    let mut synced = None;
    let stats = if train {
        let stats = x.apply_op1_no_bwd(&ChannelStats { eps: bn.eps() })?;
        let (batch, _, height, width) = x.dims4()?;
        let local = batch * height * width;
        let (stats, count) = match sync {
            Some(sum) => {
                let (stats, global) = summed_over_ranks(&stats, local, sum, bn.eps())?;
                synced = Some(RankCounts {
                    sum: sum.clone(),
                    local,
                    global,
                });
                (stats, global)
            }
            None => (stats, local),
        };
        update_running_statistics(bn, &stats, count)?;
        stats
    } else {
        let inverse_std = (bn.running_var() + bn.eps())?.sqrt()?.recip()?;
        Tensor::stack(&[bn.running_mean(), &inverse_std], 0)?.contiguous()?
    };
    let op = NormRelu {
        stats,
        batch_statistics: train,
        sync: synced,
    };
    Ok(x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?)
}

/// The whole batch's `(3, C)` statistics (mean, 1/√(σ² + ε), σ²) from this rank's, over
/// `count` values per channel, and the other ranks'; and the whole batch's count.
fn summed_over_ranks(
    stats: &Tensor,
    count: usize,
    sum: &SharedSum,
    eps: f64,
) -> Result<(Tensor, usize)> {
    let rows = stats.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let (mean, variance, total) = sum_statistics(&rows[0], &rows[2], count, sum.as_ref())?;
    let inverse_std: Vec<f64> = variance.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let rows = [mean, inverse_std, variance].concat();
    let channels = rows.len() / 3;
    let summed = Tensor::from_vec(rows, (3, channels), stats.device())?.to_dtype(DType::F32)?;
    Ok((summed, total))
}

/// `r ← (1 − m)·r + m·batch`, the unbiased batch variance (over `count` values per
/// channel) for the running variance.
fn update_running_statistics(bn: &BatchNorm, stats: &Tensor, count: usize) -> Result<()> {
    let count = count as f64;
    let momentum = bn.momentum();
    let unbiased = count / (count - 1.0).max(1.0);
    let update = |running: &Tensor, batch_values: Tensor, factor: f64| -> Result<()> {
        let new = ((running * (1.0 - momentum))? + (batch_values * (momentum * factor))?)?;
        // The running statistics are variables of the model's VarMap: `from_tensor` on a
        // variable shares its storage, so `set` updates the model in place.
        candle_core::Var::from_tensor(running)?.set(&new.to_dtype(running.dtype())?)?;
        Ok(())
    };
    update(bn.running_mean(), stats.get(0)?, 1.0)?;
    update(bn.running_var(), stats.get(2)?, unbiased)?;
    Ok(())
}

/// `(N, C, H, W)` as `(C, H·W, N·H·W)`.
fn channel_sizes(layout: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (batch, channels, height, width) = layout.shape().dims4()?;
    Ok((channels, height * width, batch * height * width))
}

fn cpu_refused(name: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{name} runs on CUDA tensors only"))
}

/// Per-channel reduction of `inputs` (and `stats`) by `partial_kernel`: the chunks'
/// partial sums, then `finish_partials` in `mode` (0: statistics, 1: backward sums) into
/// `rows` rows of `C` values.
#[allow(clippy::too_many_arguments)]
fn reduce_channels<T: CudaDType + DeviceRepr>(
    device: &CudaDevice,
    partial_kernel: &str,
    layout: &Layout,
    inputs: &[CudaView<'_, T>],
    stats: Option<&CudaView<'_, f32>>,
    rows: usize,
    eps: f32,
    mode: i32,
) -> candle_core::Result<CudaStorage> {
    let (channels, plane, per_channel) = channel_sizes(layout)?;
    let chunk_count = chunks(per_channel, channels);
    // SAFETY: every block writes its two partial sums.
    let mut partial =
        unsafe { cuda_kernels::output::<f64>(device, channels * chunk_count as usize * 2)? };
    let c = channels as i32;
    let func = function(device, partial_kernel)?;
    let mut builder = func.builder();
    for input in inputs {
        builder.arg(input);
    }
    if let Some(stats) = stats {
        builder.arg(stats);
    }
    builder.arg(&mut partial);
    builder.arg(&c);
    builder.arg(&plane);
    builder.arg(&per_channel);
    let config = LaunchConfig {
        grid_dim: (chunk_count, channels as u32, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's signature in cuda_kernels.cu.
    unsafe { builder.launch(config) }.w()?;

    // SAFETY: `finish_partials` writes every row of every channel.
    let mut out = unsafe { cuda_kernels::output::<f32>(device, rows * channels)? };
    let func = function(device, "finish_partials")?;
    let mut builder = func.builder();
    let chunk_count = chunk_count as i32;
    builder.arg(&partial);
    builder.arg(&mut out);
    builder.arg(&c);
    builder.arg(&chunk_count);
    builder.arg(&per_channel);
    builder.arg(&eps);
    builder.arg(&mode);
    let config = LaunchConfig {
        grid_dim: (channels as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: as above.
    unsafe { builder.launch(config) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, device.clone()))
}

/// `x → (3, C)`: each channel's mean, 1/√(σ² + ε) and biased variance σ².
struct ChannelStats {
    eps: f64,
}

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "ldl-cuda-channel-stats"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(cpu_refused(self.name()))
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = x.device();
        let kernel = format!("channel_partials_{}", suffix(x.dtype())?);
        let (channels, _, _) = channel_sizes(layout)?;
        let eps = self.eps as f32;
        let storage = match x.dtype() {
            DType::F32 => {
                let data = [cuda_kernels::view::<f32>(x, layout)?];
                reduce_channels(device, &kernel, layout, &data, None, 3, eps, 0)?
            }
            _ => {
                let data = [cuda_kernels::view::<bf16>(x, layout)?];
                reduce_channels(device, &kernel, layout, &data, None, 3, eps, 0)?
            }
        };
        Ok((storage, Shape::from((3, channels))))
    }
}

/// `(x, γ, β) → relu((x − μ)·γ/σ + β)` with `stats = [μ; 1/σ; …]`.
struct NormRelu {
    stats: Tensor,
    /// Whether `stats` are the batch's own (their gradient then flows through x̂).
    batch_statistics: bool,
    /// SyncBN: the statistics are the whole batch's over the ranks, and the backward
    /// pass sums its two gradient sums over the ranks too.
    sync: Option<RankCounts>,
}

impl CustomOp3 for NormRelu {
    fn name(&self) -> &'static str {
        "ldl-cuda-norm-relu"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(cpu_refused(self.name()))
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        gamma: &CudaStorage,
        gamma_layout: &Layout,
        beta: &CudaStorage,
        beta_layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = x.device();
        let (channels, plane, _) = channel_sizes(x_layout)?;
        let n = x_layout.shape().elem_count();
        let func = function(device, &format!("norm_relu_forward_{}", suffix(x.dtype())?))?;
        let gamma = cuda_kernels::view::<f32>(gamma, gamma_layout)?;
        let beta = cuda_kernels::view::<f32>(beta, beta_layout)?;
        let (c, plane) = (channels as i32, plane);
        let storage = with_f32(&self.stats, |stats| {
            macro_rules! launch {
                ($t:ty) => {{
                    let data = cuda_kernels::view::<$t>(x, x_layout)?;
                    // SAFETY: the kernel writes all `n` outputs.
                    let mut y = unsafe { cuda_kernels::output::<$t>(device, n)? };
                    let mut builder = func.builder();
                    builder.arg(&data);
                    builder.arg(&mut y);
                    builder.arg(stats);
                    builder.arg(&gamma);
                    builder.arg(&beta);
                    builder.arg(&c);
                    builder.arg(&plane);
                    builder.arg(&n);
                    // SAFETY: the arguments match norm_relu_forward's signature.
                    unsafe { builder.launch(elementwise(n)) }.w()?;
                    CudaStorage::wrap_cuda_slice(y, device.clone())
                }};
            }
            Ok(match x.dtype() {
                DType::F32 => launch!(f32),
                _ => launch!(bf16),
            })
        })?;
        Ok((storage, x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let sums = x.apply_op3_no_bwd(
            y,
            &dy,
            &BackwardSums {
                stats: self.stats.clone(),
            },
        )?;
        let dx = if x.track_op() {
            // SyncBN: dx depends on the whole batch's sums (dγ and dβ stay this rank's,
            // which the trainer averages over the ranks with the other gradients).
            let (whole, count) = match &self.sync {
                Some(counts) if self.batch_statistics => {
                    let mut values: Vec<f64> =
                        sums.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                    sum_gradient_sums(&mut values, counts)?;
                    let summed = Tensor::from_vec(values, sums.shape(), sums.device())?
                        .to_dtype(sums.dtype())?;
                    (summed, Some(counts.global))
                }
                _ => (sums.clone(), None),
            };
            Some(x.apply_op3_no_bwd(
                y,
                &dy,
                &BackwardInput {
                    stats: self.stats.clone(),
                    gamma: gamma.clone(),
                    sums: whole,
                    batch_statistics: self.batch_statistics,
                    count,
                },
            )?)
        } else {
            None
        };
        // sums = [Σg; Σg·x̂] = [dβ; dγ].
        Ok((dx, Some(sums.get(1)?), Some(sums.get(0)?)))
    }
}

/// `(x, y, dy) → (2, C)`: per channel Σg and Σg·x̂, g = dy where y > 0.
struct BackwardSums {
    stats: Tensor,
}

impl CustomOp3 for BackwardSums {
    fn name(&self) -> &'static str {
        "ldl-cuda-norm-relu-backward-sums"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(cpu_refused(self.name()))
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        y: &CudaStorage,
        y_layout: &Layout,
        dy: &CudaStorage,
        dy_layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = x.device();
        let kernel = format!("norm_relu_backward_partials_{}", suffix(x.dtype())?);
        let (channels, _, _) = channel_sizes(x_layout)?;
        let storage = with_f32(&self.stats, |stats| {
            macro_rules! reduce {
                ($t:ty) => {{
                    let data = [
                        cuda_kernels::view::<$t>(x, x_layout)?,
                        cuda_kernels::view::<$t>(y, y_layout)?,
                        cuda_kernels::view::<$t>(dy, dy_layout)?,
                    ];
                    reduce_channels(device, &kernel, x_layout, &data, Some(stats), 2, 0.0, 1)?
                }};
            }
            Ok(match x.dtype() {
                DType::F32 => reduce!(f32),
                _ => reduce!(bf16),
            })
        })?;
        Ok((storage, Shape::from((2, channels))))
    }
}

/// `(x, y, dy) → dx`.
struct BackwardInput {
    stats: Tensor,
    gamma: Tensor,
    sums: Tensor,
    batch_statistics: bool,
    /// The values per channel the sums are over, when not this tensor's (SyncBN).
    count: Option<usize>,
}

impl CustomOp3 for BackwardInput {
    fn name(&self) -> &'static str {
        "ldl-cuda-norm-relu-backward-input"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(cpu_refused(self.name()))
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        x_layout: &Layout,
        y: &CudaStorage,
        y_layout: &Layout,
        dy: &CudaStorage,
        dy_layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let device = x.device();
        let (channels, plane, own_count) = channel_sizes(x_layout)?;
        let per_channel = self.count.unwrap_or(own_count);
        let n = x_layout.shape().elem_count();
        let func = function(
            device,
            &format!("norm_relu_backward_input_{}", suffix(x.dtype())?),
        )?;
        let (c, batch_statistics) = (channels as i32, self.batch_statistics as i32);
        let storage = with_f32(&self.stats, |stats| {
            with_f32(&self.gamma, |gamma| {
                with_f32(&self.sums, |sums| {
                    macro_rules! launch {
                        ($t:ty) => {{
                            let (xv, yv, dyv) = (
                                cuda_kernels::view::<$t>(x, x_layout)?,
                                cuda_kernels::view::<$t>(y, y_layout)?,
                                cuda_kernels::view::<$t>(dy, dy_layout)?,
                            );
                            // SAFETY: the kernel writes all `n` outputs.
                            let mut dx = unsafe { cuda_kernels::output::<$t>(device, n)? };
                            let mut builder = func.builder();
                            builder.arg(&xv);
                            builder.arg(&yv);
                            builder.arg(&dyv);
                            builder.arg(stats);
                            builder.arg(gamma);
                            builder.arg(sums);
                            builder.arg(&mut dx);
                            builder.arg(&c);
                            builder.arg(&plane);
                            builder.arg(&per_channel);
                            builder.arg(&batch_statistics);
                            builder.arg(&n);
                            // SAFETY: the arguments match norm_relu_backward_input's signature.
                            unsafe { builder.launch(elementwise(n)) }.w()?;
                            CudaStorage::wrap_cuda_slice(dx, device.clone())
                        }};
                    }
                    Ok(match x.dtype() {
                        DType::F32 => launch!(f32),
                        _ => launch!(bf16),
                    })
                })
            })
        })?;
        Ok((storage, x_layout.shape().clone()))
    }
}
